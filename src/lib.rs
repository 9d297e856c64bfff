//! ringman: Workerman's programming model (Worker, Connection, protocols, Timer) on
//! thread-per-core io_uring rings.
//!
//! ```no_run
//! use ringman::{run_all, Server, Worker};
//! let mut worker = Worker::<()>::new("text://0.0.0.0:8000").unwrap();
//! worker.count = 4;
//! worker.on_connect(|conn, _| println!("new connection {}", conn.id()));
//! worker.on_message(|conn, data, _| {
//!     conn.send(data);
//! });
//! worker.on_close(|conn, _| println!("connection {} closed", conn.id()));
//! run_all(Server::new().add(worker)).unwrap();
//! ```
#![warn(missing_docs)]

pub use ringman_engine::*;
/// Operating a service: Workerman's command line (`start -d`, `stop`, `reload`, `status`, ...),
/// daemon mode, the control socket, zero-downtime reload, Prometheus metrics and the log file.
pub use ringman_ops as ops;
/// The sans-IO protocol layer (text, frame, raw tcp, and the traits for your own).
pub use ringman_protocols as protocols;
