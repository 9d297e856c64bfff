//! `run_all` blocks until `stop_all`. Alone in its binary: `stop_all` stops every ring thread
//! of the process, so it would stop the servers of tests running beside it.

mod common;

use std::net::{SocketAddr, TcpStream};

use common::*;
use ringman::{run_all, stop_all, Server};

#[test]
fn run_all_returns_after_stop_all() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let w = echo_worker(&format!("text://{addr}"), 2);
    let runner = std::thread::spawn(move || run_all(Server::new().add(w)));
    wait_until("run_all listens", || TcpStream::connect(addr).is_ok());
    let mut s = connect(addr);
    write_all(&mut s, b"up\n");
    assert_eq!(read_exact(&mut s, 3), b"up\n");
    assert!(!runner.is_finished(), "run_all blocks while serving");
    stop_all();
    wait_until("run_all returns after stop_all", || runner.is_finished());
    runner.join().unwrap().expect("run_all ends without error");
    assert!(read_to_eof(&mut s).is_empty(), "the open connection is closed");
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}
