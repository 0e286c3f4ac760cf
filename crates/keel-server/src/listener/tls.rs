//! https for the API (`server.tls`): the certificate chain and key, read from their PEM files at
//! start and again on [`Tls::reload`] (SIGHUP). A reload swaps the rustls config that the next
//! handshakes use; connections already open keep the one they were accepted with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use keel_core::config::TlsConfig;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {}: {source}", path.display())]
    ReadCert { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key {} (PKCS#8, PKCS#1 or SEC1 PEM): {source}", path.display())]
    ReadKey { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("cannot use the certificate and key of server.tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The files of `server.tls` and the config built from them.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsConfig,
    /// Read once per accepted connection, written once per reload: a std lock, since nothing
    /// awaits while it is held, around an `Arc` so a handshake holds the config, not the lock.
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate chain and key of `files`.
    pub(crate) fn load(files: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self { current: RwLock::new(server_config(&files.cert, &files.key)?), files: files.clone() })
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files.cert, &self.files.key)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// What the next accepted connection handshakes with.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

/// rustls on `ring`, TLS 1.2 and 1.3, HTTP/1.1 by ALPN, no client certificates.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert { path: cert.to_owned(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey { path: key.to_owned(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_self_signed(files: &TlsConfig) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
    }

    fn in_use(tls: &Tls) -> Arc<ServerConfig> {
        tls.current.read().unwrap().clone()
    }

    #[test]
    fn a_reload_swaps_the_config_and_a_failed_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsConfig { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        write_self_signed(&files);
        let tls = Tls::load(&files).unwrap();
        let first = in_use(&tls);
        assert_eq!(first.alpn_protocols, [b"http/1.1".to_vec()]);

        std::fs::write(&files.cert, "not a certificate\n").unwrap();
        let error = tls.reload().unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        assert!(Arc::ptr_eq(&first, &in_use(&tls)), "a failed reload keeps the certificate in use");
        std::fs::remove_file(&files.key).unwrap();
        let error = Tls::load(&files).unwrap_err();
        assert!(error.to_string().contains("cert.pem holds no PEM certificate"), "{error}");

        write_self_signed(&files);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &in_use(&tls)));
    }
}
