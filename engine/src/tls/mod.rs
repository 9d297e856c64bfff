//! TLS for accepted and outgoing connections: the settings a worker or a client is given
//! ([`TlsConfig`], [`ClientTls`]), their loading with errors that name the file and the
//! mistake ([`TlsSetupError`]), and the per-connection session the state machines drive
//! ([`session`]).
//!
//! The reactor knows a session only through [`session::TlsSession`]: ciphertext in,
//! plaintext out to the framer; plaintext in, records out to the send queue. rustls (0.23,
//! its unbuffered connection API) sits behind that trait alone, so moving to another rustls
//! API changes `session.rs` only. The crypto provider is aws-lc-rs (see ARCHITECTURE.md,
//! "TLS").

pub(crate) mod session;
pub(crate) mod tickets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

use crate::error::TlsSetupError;
pub use tickets::TicketKeyInfo;
use tickets::TicketKeys;

/// A worker's TLS settings (Workerman's `transport = 'ssl'` with `local_cert` and
/// `local_pk`): a certificate chain and its private key in PEM files, read when the worker
/// starts. Any scheme runs over it: `websocket://` becomes wss, `http://` https, `text://`
/// TLS text.
///
/// ```no_run
/// use ringman_engine::{TlsConfig, Worker};
/// let mut w = Worker::<()>::new("http://0.0.0.0:8443").unwrap();
/// w.tls = Some(TlsConfig::new("/etc/ringman/cert.pem", "/etc/ringman/key.pem"));
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The certificate chain, leaf first, then the intermediates (PEM).
    pub cert: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A peer that has not completed its handshake this long after connecting is cut off
    /// with `on_error` ([`TlsFailure::HandshakeTimeout`](crate::TlsFailure)). Default 10 s.
    pub handshake_timeout: Duration,
    /// Mutual TLS (Workerman's `verify_peer`): clients are asked for a certificate issued
    /// by a CA in this PEM file. A certificate that does not verify fails the handshake
    /// (`on_error` with the reason). Default none (no certificate asked for).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client that presents no certificate is refused (true, the
    /// default) or served anyway (false; one that presents a certificate must still
    /// present a valid one).
    pub client_cert_required: bool,
    /// More certificates, each served to clients that ask for its name through SNI:
    /// (name, chain file, key file). The main certificate serves every other name, and
    /// clients that send none. Each must be valid for its name (checked at start).
    pub sni: Vec<(String, PathBuf, PathBuf)>,
    /// How long a session-ticket key encrypts new tickets before the next one takes over;
    /// it still decrypts for one more period, so a ticket resumes for one to two periods
    /// after it was issued (and clients are told two). Default 6 h (tickets good for up to
    /// 12 h, as with rustls's own ticketer); at most 84 h (TLS 1.3 caps a ticket at 7
    /// days). The keys are shared by the worker's rings and handed to the successor of a
    /// process `reload`, so sessions resume across it.
    pub ticket_key_rotation: Duration,
}

impl TlsConfig {
    /// TLS with the chain in `cert` and the key in `key` (both PEM files).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert: cert.into(),
            key: key.into(),
            handshake_timeout: Duration::from_secs(10),
            client_ca: None,
            client_cert_required: true,
            sni: Vec::new(),
            ticket_key_rotation: Duration::from_secs(6 * 3600),
        }
    }

    /// Reads and checks the files now, as starting the worker does: the same errors, for
    /// an application that wants them before it builds anything else.
    pub fn check(&self) -> Result<(), TlsSetupError> {
        load_server(self).map(drop)
    }
}

/// TLS settings of an outgoing connection (`wss://`, `ssl://`, or `tls(...)` on a
/// connection builder). The server is verified by default: against the Mozilla roots
/// compiled into the program, or against the CA certificates of a given file, with the
/// host name of the URL as the name to match and to send as SNI.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Trust the CA certificates in this PEM file instead of the built-in roots.
    pub ca: Option<PathBuf>,
    /// The name to verify and to send as SNI instead of the URL's host (for a URL that
    /// names the server by address).
    pub server_name: Option<String>,
    /// A client certificate for servers that ask for one (mutual TLS): the chain file
    /// (leaf first) and its key file, checked like a server's. Default none.
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Verification against the built-in roots.
    pub fn new() -> ClientTls {
        ClientTls::default()
    }

    /// Verification against the CA certificates in `file` (PEM).
    pub fn with_ca(file: impl Into<PathBuf>) -> ClientTls {
        ClientTls { ca: Some(file.into()), ..ClientTls::default() }
    }
}

/// Whether this kernel offers TLS offload (kTLS): `Ok` when a connected TCP socket accepts
/// the `tls` upper-layer protocol, else the kernel's answer (`ENOENT` where the `tls`
/// module is absent). Probed once per process, on a loopback connection. ringman encrypts
/// in userspace either way; the result is shown by `status` and logged when a TLS worker
/// starts, for the day a kTLS hand-off after the handshake is added.
pub fn ktls_probe() -> Result<(), String> {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe listener: {e}"))?;
            let s = std::net::TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
                .map_err(|e| format!("probe connection: {e}"))?;
            crate::sys::set_tcp_ulp_tls(std::os::fd::AsFd::as_fd(&s)).map_err(|e| format!("TCP_ULP \"tls\": {e}"))
        })
        .clone()
}

/// The crypto provider every configuration uses (aws-lc-rs; see ARCHITECTURE.md, "TLS").
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read { path: path.to_path_buf(), source })
}

/// A worker's loaded TLS settings, shared by its rings.
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) handshake_timeout: Duration,
    /// Reads the certificates again and swaps them in (`WorkerHandle::reload_tls`).
    pub(crate) reload: Arc<CertReload>,
    /// The session-ticket keys (the configuration's ticketer).
    pub(crate) tickets: Arc<TicketKeys>,
}

/// The certificates a worker serves, swappable while it runs.
#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// What a certificate reload needs: the files, and the set the resolver reads.
#[derive(Debug)]
pub(crate) struct CertReload {
    cfg: TlsConfig,
    current: Arc<RwLock<Arc<CertSet>>>,
}

impl CertReload {
    /// Reads the certificate files again and, if they are all usable, serves them to new
    /// handshakes; connections in flight keep their sessions. On an error the certificates
    /// served so far stay.
    pub(crate) fn reload(&self) -> Result<(), TlsSetupError> {
        let set = load_certs(&self.cfg, &provider())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }
}

/// The main certificate and the SNI ones of `cfg`, each checked.
fn load_certs(cfg: &TlsConfig, provider: &CryptoProvider) -> Result<CertSet, TlsSetupError> {
    let default = Arc::new(load_certified(&cfg.cert, &cfg.key, provider)?);
    let mut by_name = HashMap::new();
    for (name, cert, key) in &cfg.sni {
        let ck = load_certified(cert, key, provider)?;
        // (rustls's own SNI resolver checks that the certificate is valid for the name.)
        rustls::server::ResolvesServerCertUsingSni::new()
            .add(name, ck.clone())
            .map_err(|e| TlsSetupError::SniName { name: name.clone(), cert: cert.clone(), reason: e.to_string() })?;
        by_name.insert(name.to_ascii_lowercase(), Arc::new(ck));
    }
    Ok(CertSet { default, by_name })
}

/// Reads the chain and key of `cfg` and builds the server configuration: TLS 1.2 and 1.3,
/// stateless session tickets (one ticket key set shared by every ring of the worker),
/// ALPN `http/1.1` when `alpn_http1` (HTTP and WebSocket). `worker` is the worker's
/// identity in a reload hand-off (`name@address`): its ticket keys are the ones the
/// predecessor handed over under it, if any; without one (a check) the keys are fresh.
pub(crate) fn load_server_with(
    cfg: &TlsConfig,
    alpn_http1: bool,
    worker: Option<&str>,
) -> Result<ServerTls, TlsSetupError> {
    if cfg.ticket_key_rotation.is_zero() || cfg.ticket_key_rotation > tickets::MAX_ROTATION {
        return Err(TlsSetupError::TicketKeyRotation(cfg.ticket_key_rotation));
    }
    let provider = provider();
    let current = Arc::new(RwLock::new(Arc::new(load_certs(cfg, &provider)?)));
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = ca_roots(path)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if cfg.client_cert_required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsSetupError::Config(e.to_string()))?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Certs(current.clone())));
    let tickets = TicketKeys::new(worker.unwrap_or("check").to_string(), cfg.ticket_key_rotation, worker.is_some())
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    let tickets = Arc::new(tickets);
    config.ticketer = tickets.clone();
    // The server's preference (rustls's order: AES-256-GCM, AES-128-GCM, ChaCha20) decides,
    // not the client's: a scanner rates a server that lets clients pick as weaker.
    config.ignore_client_order = true;
    if alpn_http1 {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let reload = Arc::new(CertReload { cfg: cfg.clone(), current });
    Ok(ServerTls { config: Arc::new(config), handshake_timeout: cfg.handshake_timeout, reload, tickets })
}

/// Reads a chain and its key and checks that they belong together (the key matches the
/// first certificate; a key matching a later one means the chain is upside down).
fn load_certified(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsSetupError> {
    let pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsSetupError::NoCertificate { path: cert.to_path_buf() });
    }
    let key_pem = read(key)?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsSetupError::NoKey { path: key.to_path_buf() })?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsSetupError::BadKey { path: key.to_path_buf(), reason: e.to_string() })?;
    let certified = CertifiedKey::new(chain.clone(), signer.clone());
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) = certified.keys_match() {
        let found =
            (1..chain.len()).find(|&i| CertifiedKey::new(vec![chain[i].clone()], signer.clone()).keys_match().is_ok());
        return Err(match found {
            Some(i) => TlsSetupError::ChainOrder { cert: cert.to_path_buf(), index: i + 1, count: chain.len() },
            None => TlsSetupError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() },
        });
    }
    Ok(certified)
}

/// The server's certificates: one per name the client may ask for (SNI), and the default
/// for any other name or none; the set is swapped by a reload (a read lock per handshake).
#[derive(Debug)]
struct Certs(Arc<RwLock<Arc<CertSet>>>);

impl rustls::server::ResolvesServerCert for Certs {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        let named = hello.server_name().and_then(|n| set.by_name.get(&n.to_ascii_lowercase()));
        Some(named.unwrap_or(&set.default).clone())
    }
}

fn load_server(cfg: &TlsConfig) -> Result<ServerTls, TlsSetupError> {
    load_server_with(cfg, false, None)
}

/// The CA certificates of a PEM file, as trust anchors.
fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, TlsSetupError> {
    let pem = read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    if added == 0 {
        return Err(TlsSetupError::NoCa { path: path.to_path_buf() });
    }
    Ok(roots)
}

/// A loaded client configuration and the name the server is verified against.
pub(crate) struct ClientSetup {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) name: ServerName<'static>,
}

/// The client's one certificate, for any server that asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Builds the client configuration of `tls` for a connection to `host`.
pub(crate) fn load_client(tls: &ClientTls, host: &str, alpn_http1: bool) -> Result<ClientSetup, TlsSetupError> {
    let roots = match &tls.ca {
        Some(path) => ca_roots(path)?,
        None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let ck = load_certified(cert, key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::new(ck))))
        }
    };
    if alpn_http1 {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let name = tls.server_name.as_deref().unwrap_or(host);
    let name = ServerName::try_from(name.to_string()).map_err(|_| TlsSetupError::ServerName(name.to_string()))?;
    Ok(ClientSetup { config: Arc::new(config), name })
}
