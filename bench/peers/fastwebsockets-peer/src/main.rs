//! fastwebsockets peer on a tokio current_thread runtime: the HTTP/1.1 upgrade goes through
//! hyper 1 (`fastwebsockets::upgrade`), then every text and binary message is echoed back
//! (fragments collected into one message, text checked as UTF-8, pings answered and close
//! frames returned by the crate). Mode `ws` only.
use std::convert::Infallible;

use bytes::Bytes;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

fn main() {
    let args = peer_common::parse(&["ws"], &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(args.addr).await.expect("bind");
        peer_common::announce(listener.local_addr().expect("local addr"));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, hyper::service::service_fn(handshake))
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    });
}

/// Answers the upgrade request with 101 and hands the upgraded connection to [`echo`];
/// anything else gets 400.
async fn handshake(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    if !upgrade::is_upgrade_request(&req) {
        return Ok(bad_request());
    }
    match upgrade::upgrade(&mut req) {
        Ok((resp, fut)) => {
            tokio::spawn(async move {
                let _ = echo(fut).await;
            });
            Ok(resp)
        }
        Err(_) => Ok(bad_request()),
    }
}

fn bad_request() -> Response<Empty<Bytes>> {
    let mut r = Response::new(Empty::new());
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

async fn echo(fut: UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
