//! Keel's outgoing HTTP clients: http and https (rustls on `ring`, HTTP/1.1), trusting the
//! system's root certificates plus any CA files a function (or a dependency) names. Every call
//! Keel makes goes through a connector built here: HTTP/1.1 attempts at functions through the
//! pool of `runtime/h1.rs` over [`https_connector`], HTTP/2 attempts, dependencies and the
//! embedding API through the pooled client of [`build_client`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A pooled keep-alive client for http:// and https:// URLs; cheap to clone (clones share the
/// pool).
pub type HttpClient<B = Full<Bytes>> = Client<HttpsConnector<HttpConnector>, B>;

/// How long a TCP connect may take before the attempt is told "connect error".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a client could not be built: a CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCa { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("the CA file {} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the CA file {} holds a certificate that cannot be a root: {source}", path.display())]
    BadCertificate { path: PathBuf, source: rustls::Error },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A client for http:// and https:// that trusts the system's roots and every certificate in
/// `extra_cas` (PEM files). The pool and keep-alive settings are those of every Keel client:
/// `TCP_NODELAY`, a 5 s connect timeout, idle connections kept 60 s. Generic over the request
/// body, so a proxy can stream one.
pub fn build_client<B>(extra_cas: &[PathBuf]) -> Result<HttpClient<B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Ok(pooled(https_connector(extra_cas)?, false))
}

/// [`build_client`] speaking HTTP/2 only, for functions with `http2 = true`: with prior
/// knowledge (h2c) on http://, offering only `h2` by ALPN on https://. One connection per host
/// (per instance, for a `command` function) carries the calls as concurrent streams.
pub(crate) fn build_h2_client<B>(extra_cas: &[PathBuf]) -> Result<HttpClient<B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(extra_cas)?)
        .https_or_http()
        .enable_http2()
        .wrap_connector(tcp_connector());
    Ok(pooled(connector, true))
}

/// The pool over `connector` that every client has (idle connections kept 60 s), speaking
/// HTTP/2 only when `http2_only`.
fn pooled<B>(connector: HttpsConnector<HttpConnector>, http2_only: bool) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).http2_only(http2_only).build(connector)
}

/// The connector under [`build_client`]: plain TCP for http://, TLS over it for https://.
pub(crate) fn https_connector(extra_cas: &[PathBuf]) -> Result<HttpsConnector<HttpConnector>, ClientError> {
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(extra_cas)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp_connector()))
}

/// TCP under every client: `TCP_NODELAY`, the connect timeout, and https:// URLs let through
/// to the TLS layer above.
fn tcp_connector() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.enforce_http(false);
    tcp
}

/// rustls settings: `ring`, TLS 1.2 and 1.3, the system's roots plus `extra_cas`, no client
/// certificate.
pub(crate) fn tls_config(extra_cas: &[PathBuf]) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = system_roots().clone();
    for path in extra_cas {
        add_ca_file(&mut roots, path)?;
    }
    // The provider is given explicitly rather than installed process-wide, so nothing depends
    // on which crate's feature flags won.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Adds every certificate of the PEM file at `path` to `roots`; at least one is required.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), ClientError> {
    let read = |source| ClientError::ReadCa { path: path.to_owned(), source };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(read)? {
        let cert = cert.map_err(read)?;
        roots.add(cert).map_err(|source| ClientError::BadCertificate { path: path.to_owned(), source })?;
        added += 1;
    }
    if added == 0 {
        return Err(ClientError::NoCertificate { path: path.to_owned() });
    }
    Ok(())
}

/// The operating system's trusted roots (on Linux the usual bundle files, `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`), read once per process: a client per dependency must not reparse them.
/// rustls-native-certs rather than a compiled-in list (webpki-roots) so that a host's own
/// additions and removals are honoured, as every other program on it does. Unreadable entries
/// are logged and skipped; a host without any leaves https to public servers failing with an
/// unknown-issuer error, which the attempt's error says.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "a system root certificate could not be loaded");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "system root certificates ignored: not parsable as trust anchors");
        }
        if added == 0 {
            tracing::warn!("no system root certificates found: https works only with a configured ca_file");
        }
        roots
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::Uri;
    use hyper::service::service_fn;
    use hyper_util::client::legacy::connect::Connect;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// Per-request latencies of `n` sequential POSTs to `uri` on one keep-alive connection.
    async fn latencies<C>(client: &Client<C, Full<Bytes>>, uri: &Uri, n: usize) -> Vec<Duration>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let mut taken = Vec::with_capacity(n);
        for _ in 0..n {
            let start = std::time::Instant::now();
            let request = http::Request::post(uri.clone()).body(Full::new(Bytes::from_static(b"{}"))).unwrap();
            let response = client.request(request).await.unwrap();
            http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
            taken.push(start.elapsed());
        }
        taken.sort();
        taken
    }

    /// The hot path of an http:// function through the https-capable client against the plain
    /// HTTP client it replaced (same pool settings), at concurrency 1, in alternating rounds.
    /// A measurement, run by hand:
    /// `cargo test --release -p keel-server --lib -- --ignored --nocapture plain_http`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, run by hand"]
    async fn plain_http_through_the_https_client_costs_what_it_did() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}"))))
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let plain: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(tcp);
        let https: HttpClient = build_client(&[]).unwrap();
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        latencies(&plain, &uri, 500).await;
        latencies(&https, &uri, 500).await;
        let (mut plain_all, mut https_all) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            plain_all.extend(latencies(&plain, &uri, 2_000).await);
            https_all.extend(latencies(&https, &uri, 2_000).await);
        }
        plain_all.sort();
        https_all.sort();
        let at = |all: &[Duration], q: f64| all[((all.len() - 1) as f64 * q) as usize];
        for (name, all) in [("plain http client", &plain_all), ("https-capable client", &https_all)] {
            println!("{name}: p50 {:?} p99 {:?} over {} requests", at(all, 0.5), at(all, 0.99), all.len());
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = tls_config(std::slice::from_ref(&path)).unwrap_err();
        assert!(matches!(error, ClientError::NoCertificate { .. }), "{error}");
        let missing = dir.path().join("missing.pem");
        let error = tls_config(std::slice::from_ref(&missing)).unwrap_err();
        assert!(error.to_string().starts_with("cannot read the CA file"), "{error}");
    }
}
