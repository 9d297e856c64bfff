//! monoio echo peer (io_uring driver, single thread).
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

fn main() {
    let args = peer_common::parse(&["echo"], &[]);
    let buf_size = args.buf_size();
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(4096).build().expect("io_uring runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(args.addr).expect("bind");
        peer_common::announce(listener.local_addr().expect("local addr"));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            monoio::spawn(echo(stream, buf_size));
        }
    });
}

/// Echoes into one reserved (not zeroed) buffer of `buf_size` bytes per connection,
/// lent to the kernel for every read.
async fn echo(mut s: TcpStream, buf_size: usize) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(buf_size);
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
