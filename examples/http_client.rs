//! Fetches a list of URLs concurrently with the async HTTP client and prints status and size
//! per URL: `cargo run --release --example http_client -- http://127.0.0.1:8080/ http://...`
//! (or URLs one per line on stdin). Exits 1 if any request failed.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ringman::components::http_client::{ClientConfig, HttpClient};
use ringman::{spawn, stop_all, Server, Worker};

fn main() -> ExitCode {
    ringman::ops::logger::init();
    let mut urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        urls = std::io::stdin().lock().lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).collect();
    }
    if urls.is_empty() {
        eprintln!("usage: http_client URL... (or URLs on stdin)");
        return ExitCode::from(2);
    }
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.name = "http_client".into();
    w.on_worker_start(move |_, _| {
        let urls = urls.clone();
        let failed = f.clone();
        let started = spawn(async move {
            let client = HttpClient::new(ClientConfig { max_redirects: 5, ..Default::default() });
            // All at once; the pool keeps at most 16 connections per origin.
            let tasks: Vec<_> = urls
                .into_iter()
                .map(|url| {
                    let client = client.clone();
                    (url.clone(), spawn(async move { client.get(&url).await }).expect("on a ring"))
                })
                .collect();
            for (url, task) in tasks {
                match task.await {
                    Ok(Ok(r)) => println!("{} {} bytes  {url}", r.status(), r.body.len()),
                    Ok(Err(e)) => {
                        failed.store(true, Ordering::SeqCst);
                        println!("error {e}  {url}");
                    }
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        println!("error {e}  {url}");
                    }
                }
            }
            stop_all();
        });
        if let Err(e) = started {
            eprintln!("http_client: {e}");
        }
    });
    match Server::new().add(w).start() {
        Ok(running) => running.wait(),
        Err(e) => {
            eprintln!("http_client: {e}");
            return ExitCode::FAILURE;
        }
    }
    if failed.load(Ordering::SeqCst) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
