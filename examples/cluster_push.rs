//! Workerman's GatewayWorker patterns on ringman: group sends and pushes to any connection
//! of the cluster, across processes and machines.
//!
//! ```text
//! cargo run --release --example cluster_push -- websocket://0.0.0.0:8700 [--channel redis://HOST:PORT]
//! ```
//!
//! Each client is told its cluster-wide id (`id <node>-<conn>`), then speaks lines:
//!
//! | line | effect |
//! |------|--------|
//! | `join <group>` / `leave <group>` | membership (of this connection) |
//! | `group <group> <text>` | `<text>` to every member of the group, in every process |
//! | `to <id> <text>` | `<text>` to one connection, wherever it lives |
//! | `all <text>` | `<text>` to every connection of every process |
//!
//! Without `--channel` the groups live in this process; with it, start several processes
//! (on one machine or many) against the same Redis and they form one cluster.

use std::process::ExitCode;

use ringman::cluster::{Channel, Cluster, NodeId};
use ringman::{run_all_then, Server, Worker};

fn main() -> ExitCode {
    ringman::ops::logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().cloned() else {
        eprintln!("usage: cluster_push websocket://<ip>:<port> [--channel redis://<host>:<port>]");
        return ExitCode::from(2);
    };
    let channel = match args.iter().position(|a| a == "--channel").and_then(|i| args.get(i + 1)) {
        Some(url) => Channel::redis(url),
        None => Channel::local(),
    };
    let cluster = Cluster::new(channel, NodeId::random());
    let mut w = match Worker::<()>::new(&addr) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cluster_push: {e}");
            return ExitCode::FAILURE;
        }
    };
    w.name = "gateway".into();
    let c = cluster.clone();
    w.on_worker_start(move |info, _| {
        // The node's and the all-topic subscriptions: once per process.
        if info.id == 0 {
            if let Err(e) = c.start() {
                eprintln!("cluster_push: {e}");
            }
        }
    });
    let c = cluster.clone();
    w.on_connect(move |conn, _| {
        let id = c.register(conn);
        conn.send(format!("id {id}"));
    });
    let c = cluster.clone();
    w.on_message(move |conn, m, _| {
        let text = String::from_utf8_lossy(m).to_string();
        let (verb, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let usage = |text: &str| {
            conn.send(text);
            Ok(())
        };
        let r = match verb {
            "join" => c.join_group(conn, rest).map(|()| {
                conn.send(format!("joined {rest}"));
            }),
            "leave" => {
                c.leave_group(conn, rest);
                Ok(())
            }
            "group" => match rest.split_once(' ') {
                Some((g, msg)) => c.send_to_group(g, msg.to_string()),
                None => usage("usage: group <group> <text>"),
            },
            "to" => match rest.split_once(' ').map(|(id, msg)| (id.parse(), msg)) {
                Some((Ok(id), msg)) => c.send_to_id(id, msg.to_string()),
                _ => usage("usage: to <id> <text>"),
            },
            "all" => c.send_to_all(rest.to_string()),
            _ => usage("commands: join, leave, group, to, all"),
        };
        if let Err(e) = r {
            conn.send(format!("error: {e}"));
        }
    });
    let c = cluster.clone();
    w.on_close(move |conn, _| c.unregister(conn));
    let node = cluster.node();
    let result = run_all_then(Server::new().add(w), |_| println!("cluster_push on {addr}, node {node}"));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster_push: {e}");
            ExitCode::FAILURE
        }
    }
}
