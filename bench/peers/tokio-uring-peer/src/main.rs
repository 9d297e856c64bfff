//! tokio-uring echo peer (single thread).
use tokio_uring::net::{TcpListener, TcpStream};

fn main() {
    let args = peer_common::parse(&["echo"], &[]);
    tokio_uring::start(async move {
        let listener = TcpListener::bind(args.addr).expect("bind");
        peer_common::announce(listener.local_addr().expect("local addr"));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio_uring::spawn(echo(stream));
        }
    });
}

async fn echo(s: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let (res, b) = s.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let (res, b) = s.write_all(buf).await;
        buf = b;
        res?;
        buf.clear();
    }
}
