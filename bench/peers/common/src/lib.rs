//! What the benchmark peers share: `--addr IP:PORT [--mode MODE] [--buf-size B] [--root DIR]`
//! parsing, the readiness line, TCP_NODELAY.
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Parsed command line of a peer.
#[derive(Debug, Clone)]
pub struct Args {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Protocol mode (peers that only echo ignore it, but reject anything but `echo`).
    pub mode: String,
    /// `--upstream IP:PORT`: where a proxy mode forwards its connections.
    pub upstream: Option<SocketAddr>,
    /// `--cert FILE --key FILE`: the certificate chain and key (PEM) of a TLS mode.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--buf-size B`: the receive buffer of an echo connection (the peers that keep one per
    /// connection), or each provided buffer of the floor's ring. Default [`DEFAULT_BUF_SIZE`]
    /// (the floor: its own default). The harness sets it to ringman's default receive buffer
    /// size for the idle-memory cell (P5) and leaves every peer at its best for the bulk cells.
    pub buf_size: Option<usize>,
    /// `--root DIR`: the directory a file-serving mode (`files`) serves.
    pub root: Option<PathBuf>,
}

/// Receive buffer of an echo connection without `--buf-size`: 64 KiB.
pub const DEFAULT_BUF_SIZE: usize = 64 * 1024;

impl Args {
    /// `--buf-size`, else [`DEFAULT_BUF_SIZE`].
    pub fn buf_size(&self) -> usize {
        self.buf_size.unwrap_or(DEFAULT_BUF_SIZE)
    }
}

/// Parses `--addr IP:PORT [--mode MODE] [--upstream IP:PORT] [--cert FILE --key FILE]
/// [--buf-size B] [--root DIR]`, exiting with status 2 on bad input. `--upstream` is required
/// with mode `proxy` and refused otherwise; `--cert` and `--key` are required with the modes in
/// `tls_modes` and refused otherwise; `--root` is required with mode `files` and refused
/// otherwise; `--buf-size` must be at least 512 bytes.
pub fn parse(modes: &[&str], tls_modes: &[&str]) -> Args {
    let mut addr = None;
    let mut upstream = None;
    let mut buf_size = None;
    let mut root = None;
    let (mut cert, mut key) = (None, None);
    let mut mode = "echo".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => addr = it.next(),
            "--mode" => mode = it.next().unwrap_or_default(),
            "--upstream" => match it.next().as_deref().map(str::parse) {
                Some(Ok(a)) => upstream = Some(a),
                _ => die("--upstream takes IP:PORT"),
            },
            "--cert" => cert = Some(it.next().map(PathBuf::from).unwrap_or_else(|| die("--cert takes a file"))),
            "--key" => key = Some(it.next().map(PathBuf::from).unwrap_or_else(|| die("--key takes a file"))),
            "--buf-size" => match it.next().as_deref().map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 512 => buf_size = Some(n),
                _ => die("--buf-size takes a size in bytes, at least 512"),
            },
            "--root" => root = Some(it.next().map(PathBuf::from).unwrap_or_else(|| die("--root takes a directory"))),
            _ => die(&format!("unknown argument {a:?}")),
        }
    }
    let addr: SocketAddr = match addr.as_deref().map(str::parse) {
        Some(Ok(a)) => a,
        _ => die("--addr IP:PORT is required"),
    };
    if !modes.contains(&mode.as_str()) {
        die(&format!("mode {mode:?} not supported; supported: {modes:?}"));
    }
    if (mode == "proxy") != upstream.is_some() {
        die("--upstream IP:PORT goes with --mode proxy (and only with it)");
    }
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => die("--cert and --key go together"),
    };
    if tls_modes.contains(&mode.as_str()) != tls.is_some() {
        die(&format!("--cert FILE --key FILE go with the TLS modes {tls_modes:?} (and only with them)"));
    }
    if (mode == "files") != root.is_some() {
        die("--root DIR goes with --mode files (and only with it)");
    }
    Args { addr, mode, upstream, tls, buf_size, root }
}

/// Sets TCP_NODELAY on a socket (a listener passes it on to the sockets it accepts).
pub fn set_nodelay(fd: std::os::fd::RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket descriptor the caller owns; the option value is a valid
    // c_int that outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Prints the readiness line the harness waits for.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

fn die(msg: &str) -> ! {
    eprintln!(
        "error: {msg}\nusage: PEER --addr IP:PORT [--mode MODE] [--upstream IP:PORT] [--cert FILE --key FILE] \
         [--buf-size B] [--root DIR]"
    );
    std::process::exit(2)
}
