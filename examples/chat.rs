//! Broadcast chat room: `cargo run --release --example chat -- websocket://127.0.0.1:PORT
//! [--channel redis://HOST:PORT]`.
//!
//! Every WebSocket message goes to every connected client on every ring thread; `http://`
//! on PORT+1 serves a small page that connects to it. With `--channel`, several chat
//! processes (on one machine or many) form one room through Redis pub/sub: a message from a
//! client of one reaches the clients of all.

use std::process::ExitCode;

use ringman::cluster::{Channel, ChannelEvent};
use ringman::http::respond;
use ringman::protocols::http::Response;
use ringman::{run_all_then, Server, Worker, WorkerHandle};

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>ringman chat</title>
<ul id="log"></ul><form id="f"><input id="m" autocomplete="off"><button>send</button></form>
<script>
const ws = new WebSocket("ws://" + location.hostname + ":" + (Number(location.port) - 1) + "/");
ws.onmessage = e => { const li = document.createElement("li"); li.textContent = e.data; log.appendChild(li); };
f.onsubmit = e => { e.preventDefault(); ws.send(m.value); m.value = ""; };
</script>"#;

fn main() -> ExitCode {
    // Engine diagnostics (a ring restarted, accept backing off) go to stderr.
    ringman::ops::logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().cloned() else {
        eprintln!("usage: chat websocket://<ip>:<port> [--channel redis://<host>:<port>]");
        return ExitCode::from(2);
    };
    // The room: inside this process, or shared through Redis with every other chat process.
    let channel = match args.iter().position(|a| a == "--channel").map(|i| args.get(i + 1)) {
        None => Channel::local(),
        Some(Some(url)) if url.starts_with("redis://") => Channel::redis(url),
        Some(_) => {
            eprintln!("chat: --channel needs a redis://host:port URL");
            return ExitCode::from(2);
        }
    };
    let mut chat = match Worker::<Option<WorkerHandle>>::new(&addr) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    chat.name = "chat".into();
    // Browsers answer pings by themselves: a tab that vanished (sleep, lost network) is
    // noticed within a minute instead of whenever TCP gives up.
    chat.websocket_ping_interval = Some(std::time::Duration::from_secs(30));
    let room = channel.clone();
    chat.on_worker_start(move |info, handle| {
        *handle = Some(info.handle.clone());
        // One subscriber per process (on its first ring): it broadcasts to every ring.
        if info.id == 0 {
            let h = info.handle.clone();
            let sub = room.subscribe("chat", move |_, ev| match ev {
                ChannelEvent::Message(line) => h.broadcast(line.clone()),
                ChannelEvent::Gap { from, to } => {
                    let lost = to.duration_since(*from).unwrap_or_default();
                    h.broadcast(format!("(the room was cut off for {lost:.1?}: messages may be missing)").into_bytes());
                }
            });
            if let Err(e) = sub {
                eprintln!("chat: {e}");
            }
        }
    });
    let room = channel.clone();
    chat.on_message(move |conn, msg, _| {
        let line = format!("{}: {}", conn.id(), String::from_utf8_lossy(msg.data));
        if let Err(e) = room.publish("chat", line.into_bytes()) {
            eprintln!("chat: {e}");
        }
    });
    let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("chat: {addr}: no port");
        return ExitCode::FAILURE;
    };
    let host = addr.trim_start_matches("websocket://").rsplit_once(':').map_or("127.0.0.1", |(h, _)| h).to_string();
    let mut page = match Worker::<()>::new(&format!("http://{host}:{}", port + 1)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    page.name = "chat-page".into();
    page.count = 1;
    page.on_request(|conn, req, _| respond(conn, req, Response::html(PAGE)));
    let result = run_all_then(Server::new().add(chat).add(page), |running| {
        println!(
            "chat on {}, page on http://{}",
            addr,
            running.local_addr(1).map(|a| a.to_string()).unwrap_or_default()
        );
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}
