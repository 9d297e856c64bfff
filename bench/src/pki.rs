//! The bench's own PKI for the TLS scenarios (P10–P12), made at run time with rcgen: a CA
//! and one leaf certificate for `localhost` and 127.0.0.1 signed by it, both ECDSA P-256
//! (SHA-256), written as PEM files into a private temporary directory. Every TLS server the
//! harness starts (ringman, nginx, the tokio-rustls peer) serves the same leaf with the same
//! key, and the load generator verifies it against the CA, so the handshakes carry the same
//! certificate bytes and the same signature algorithm whichever server answers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

use crate::error::ServerError;

/// The name the leaf is issued for and the generator sends as SNI and verifies.
pub const SERVER_NAME: &str = "localhost";

/// The files of one PKI.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes a CA and a leaf into `dir` (created; files `ca.pem`, `cert.pem`, `key.pem`).
    pub fn create(dir: &Path) -> Result<Pki, ServerError> {
        let io = |path: PathBuf| move |source| ServerError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let bad = |e: rcgen::Error| ServerError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!("rcgen: {e}")),
        };
        let ca_key = KeyPair::generate().map_err(bad)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        ca.distinguished_name.push(DnType::CommonName, "ringman-bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(bad)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(bad)?;
        let mut leaf = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(bad)?;
        leaf.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        leaf.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).map_err(bad)?;
        let pki = Pki { dir: dir.to_path_buf() };
        for (path, text) in [(pki.ca(), ca_cert.pem()), (pki.cert(), cert.pem()), (pki.key(), key.serialize_pem())] {
            std::fs::write(&path, text).map_err(io(path.clone()))?;
        }
        Ok(pki)
    }

    /// The CA certificate the generator trusts (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The leaf certificate every server sends (PEM; the CA is not sent, as a root is not).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The leaf's private key (PKCS#8 PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

static SHARED: OnceLock<Result<Pki, String>> = OnceLock::new();

fn shared_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ringman-bench-pki-{}", std::process::id()))
}

/// Removes the PKI directories of processes that are gone (a test binary, or a harness that
/// was killed, cannot remove its own).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("ringman-bench-pki-")) else { continue };
        if pid.parse::<u32>().is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The PKI of this process, made on first use (`$TMPDIR/ringman-bench-pki-<pid>`, after
/// removing those of processes that are gone); removed by [`remove_shared`].
pub fn shared() -> Result<&'static Pki, ServerError> {
    SHARED
        .get_or_init(|| {
            remove_stale();
            Pki::create(&shared_dir()).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ServerError::Io { path: shared_dir(), source: std::io::Error::other(e.clone()) })
}

/// Removes the directory of [`shared`] if it was made (at the end of `run` and `compare`).
pub fn remove_shared() {
    if let Some(Ok(p)) = SHARED.get() {
        let _ = std::fs::remove_dir_all(p.dir());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    #[test]
    fn the_leaf_verifies_against_the_ca_and_matches_its_key() {
        let dir = std::env::temp_dir().join(format!("ringman-bench-pki-test-{}", std::process::id()));
        let pki = Pki::create(&dir).unwrap();
        let ca = CertificateDer::from_pem_file(pki.ca()).unwrap();
        let leaf = CertificateDer::from_pem_file(pki.cert()).unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.key()).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signer = provider.key_provider.load_private_key(key).unwrap();
        let ck = rustls::sign::CertifiedKey::new(vec![leaf.clone()], signer);
        ck.keys_match().expect("the key belongs to the leaf");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(provider),
        )
        .build()
        .unwrap();
        for name in [SERVER_NAME, "127.0.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now()).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
