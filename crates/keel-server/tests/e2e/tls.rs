//! https function URLs: a function served with a certificate from a private CA made here is
//! called when its `ca_file` names that CA, and refused, saying why, when it does not. And https
//! for Keel's own API (`server.tls`), its certificate reloaded without dropping connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{eventually_or_why, fails_at_the_transport, get_json, post_json, Keel};

/// A private CA, and a certificate it signed for `127.0.0.1` and `localhost`.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn ca_issuer() -> CertifiedIssuer<'static, KeyPair> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Keel test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `127.0.0.1` and `localhost` named `name`, signed by `ca`: its DER, and
/// the PEM of it and of its key.
fn leaf_pem(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> (CertificateDer<'static>, String, String) {
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, name);
    let cert = leaf.signed_by(&key, ca).unwrap();
    (cert.der().clone(), cert.pem(), key.serialize_pem())
}

impl Pki {
    /// The CA's certificate written to `ca.pem` in a temporary directory (kept while the
    /// returned guard lives), for a `ca_file` key.
    fn ca_file(&self) -> (tempfile::TempDir, PathBuf) {
        let certs = tempfile::tempdir().unwrap();
        let ca_file = certs.path().join("ca.pem");
        std::fs::write(&ca_file, &self.ca_pem).unwrap();
        (certs, ca_file)
    }
}

fn private_ca() -> Pki {
    let ca = ca_issuer();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &*ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// An https function on `127.0.0.1:0` answering `{"tls": true, "function": NAME}` over HTTP/1.1.
async fn https_function(pki: &Pki) -> SocketAddr {
    https_function_speaking(pki, false).await
}

/// [`https_function`], or with `http2` one that offers only `h2` by ALPN and speaks only HTTP/2,
/// answering `{"tls": true, "function": NAME, "version": "HTTP/2.0"}`.
async fn https_function_speaking(pki: &Pki, http2: bool) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
    if http2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate aborts the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let function = req.headers().get("keel-function").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let mut body = serde_json::json!({ "tls": true, "function": function });
                    if http2 {
                        body["version"] = format!("{:?}", req.version()).into();
                    }
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                });
                let io = TokioIo::new(tls);
                let _ = if http2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await
                } else {
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
                };
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_https_function_is_called_with_its_ca_file_and_refused_without_it() {
    let pki = private_ca();
    let addr = https_function(&pki).await;
    let (_certs, ca_file) = pki.ca_file();
    let keel = Keel::start(&format!(
        "[functions.private]\nurl = \"https://127.0.0.1:{port}/run\"\nca_file = \"{ca}\"\n\
         [functions.untrusted]\nurl = \"https://localhost:{port}/run\"\nretry = {{ max_attempts = 1 }}\n\
         [functions.plain]\nurl = \"https://127.0.0.1:{port}/run\"\nretry = {{ max_attempts = 2, initial = \"10ms\", max = \"10ms\" }}\n",
        port = addr.port(),
        ca = ca_file.display(),
    ))
    .await;

    let (status, headers, body) = post_json(&format!("{}/v1/functions/private/invoke", keel.url), "{}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({ "tls": true, "function": "private" }));
    assert_eq!(headers["keel-attempts"], "1");

    // Without the CA, the system's roots do not vouch for the certificate: every attempt fails
    // at the handshake, and the invocation's error says so.
    for (function, attempts) in [("untrusted", 1), ("plain", 2)] {
        let (status, _, body) = post_json(&format!("{}/v1/functions/{function}/invoke", keel.url), "{}").await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["attempts"], attempts, "{body}");
        let id = body["invocation_id"].as_str().unwrap();
        let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
        assert_eq!(inv["status"], "failed", "{inv}");
        let last = &inv["attempts"][attempts - 1];
        assert_eq!(last["outcome"], "transient", "{inv}");
        let error = last["error"].as_str().unwrap();
        assert!(error.contains("invalid peer certificate: UnknownIssuer"), "{error}");
    }
}

/// `http2 = true` on an https URL: Keel offers `h2` by ALPN, and a function that speaks only
/// HTTP/2 is called over it. Without `http2`, Keel offers no protocol and speaks HTTP/1.1: the
/// attempt fails at the transport (what hyper says depends on which side reads first: an
/// answer that is not HTTP/1.1, a closed or reset connection).
#[tokio::test]
async fn an_https_function_with_http2_is_called_over_h2_by_alpn() {
    let pki = private_ca();
    let addr = https_function_speaking(&pki, true).await;
    let (_certs, ca_file) = pki.ca_file();
    let keel = Keel::start(&format!(
        "[functions.h2]\nurl = \"https://127.0.0.1:{port}/run\"\nca_file = \"{ca}\"\nhttp2 = true\n\
         [functions.h1]\nurl = \"https://127.0.0.1:{port}/run\"\nca_file = \"{ca}\"\nretry = {{ max_attempts = 1 }}\n",
        port = addr.port(),
        ca = ca_file.display(),
    ))
    .await;

    let (status, _, body) = post_json(&format!("{}/v1/functions/h2/invoke", keel.url), "{}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({ "tls": true, "function": "h2", "version": "HTTP/2.0" }));

    fails_at_the_transport(&keel.url, "h1").await;
}

/// An https dependency reached through egress: trusted with its `ca_file`; without it the call
/// is refused at the handshake (`502 dependency-unreachable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_dependency_is_reached_through_egress_with_its_ca_file() {
    let pki = private_ca();
    let addr = https_function(&pki).await;
    let (_certs, ca_file) = pki.ca_file();
    let (fns, fn_addr) = crate::support::Functions::start().await;
    let keel = Keel::start(&format!(
        "[dependencies.private]\nurl = \"https://127.0.0.1:{port}/api\"\nca_file = \"{ca}\"\n\
         [dependencies.untrusted]\nurl = \"https://127.0.0.1:{port}/api\"\nretry = {{ max_attempts = 1 }}\n\
         [functions.caller]\nurl = \"http://{fn_addr}/egress?dep=private&path=/x&calls=1\"\n\
         dependencies = [\"private\", \"untrusted\"]\n\
         [functions.doubter]\nurl = \"http://{fn_addr}/egress?dep=untrusted&path=/x&calls=1\"\n\
         dependencies = [\"untrusted\"]\n",
        port = addr.port(),
        ca = ca_file.display(),
    ))
    .await;
    fns.set_keel(&keel.url);
    let (status, _, body) = post_json(&format!("{}/v1/functions/caller/invoke", keel.url), "{}").await;
    assert_eq!(status, 200, "{body}");
    let call = &body["calls"][0];
    assert_eq!(call["status"], 200, "{body}");
    assert!(call["body"].as_str().unwrap().contains("\"tls\":true"), "{body}");
    let (status, _, body) = post_json(&format!("{}/v1/functions/doubter/invoke", keel.url), "{}").await;
    assert_eq!(status, 200, "{body}");
    let call = &body["calls"][0];
    assert_eq!(call["status"], 502, "{body}");
    assert!(call["body"].as_str().unwrap().contains("dependency-unreachable"), "{body}");
}

/// A client that trusts only `ca_pem` (ALPN http/1.1).
fn trusting(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A keep-alive https connection to `addr`: what to send on it, and the certificate it was shown.
async fn connect_https(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> (hyper::client::conn::http1::SendRequest<Full<Bytes>>, CertificateDer<'static>) {
    try_connect_https(connector, addr).await.unwrap_or_else(|e| panic!("https to {addr}: {e}"))
}

async fn try_connect_https(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, CertificateDer<'static>), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    let shown = session.peer_certificates().unwrap()[0].clone().into_owned();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok((sender, shown))
}

/// `GET /healthz` on `sender`'s connection: its status.
async fn healthz(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> u16 {
    sender.ready().await.unwrap();
    let request = hyper::Request::get("/healthz").header("host", "127.0.0.1").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_tls_and_its_certificate_reloads_without_dropping_connections() {
    let ca = ca_issuer();
    let certs = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (first_der, cert_pem, key_pem) = leaf_pem(&ca, "keel first");
    std::fs::write(&cert_file, cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    let keel = Keel::start(&format!(
        "[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert_file.display(),
        key_file.display()
    ))
    .await;
    let node = keel.node.as_ref().unwrap();
    let connector = trusting(&ca.pem());

    let (mut before, shown) = connect_https(&connector, node.addr()).await;
    assert_eq!(shown, first_der);
    assert_eq!(healthz(&mut before).await, 200);

    // Plain HTTP on the same port: the client gets an error, not an answer, and the server
    // carries on.
    let plain = crate::support::send(
        hyper::Request::get(format!("http://{}/healthz", node.addr())).body(Full::new(Bytes::new())).unwrap(),
    )
    .await;
    assert!(plain.is_err(), "plain http answered: {:?}", plain.map(|(status, _, _)| status));

    // The `keel` command trusts the CA it is given (besides the system's roots), and only then.
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = format!("https://127.0.0.1:{}", node.addr().port());
    let (ok, out, _) =
        keel_command(&["--ca-file", ca_file.to_str().unwrap(), "--url", &url, "functions", "ls", "--json"]).await;
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["items"], serde_json::json!([]), "{out}");
    let (ok, _, err) = keel_command(&["--url", &url, "functions", "ls"]).await;
    assert!(!ok && err.contains("UnknownIssuer"), "{err}");

    // A file that is no certificate: the reload fails and the certificate in use stays.
    std::fs::write(&cert_file, "not a certificate\n").unwrap();
    assert!(node.reload_tls().is_err());
    let (mut still, shown) = connect_https(&connector, node.addr()).await;
    assert_eq!((shown == first_der, healthz(&mut still).await), (true, 200));

    let (second_der, cert_pem, key_pem) = leaf_pem(&ca, "keel second");
    std::fs::write(&cert_file, cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    assert!(node.reload_tls().unwrap());
    let (mut after, shown) = connect_https(&connector, node.addr()).await;
    assert_eq!(shown, second_der, "a new connection sees the new certificate");
    assert_eq!(healthz(&mut after).await, 200);
    assert_eq!(healthz(&mut before).await, 200, "a connection opened before the reload is still served");

    // Both reloads are in the audit log, as the node's own, the failed one with why.
    let ca_arg = ca_file.to_str().unwrap().to_owned();
    let log = crate::support::eventually("two tls.reload audit entries", std::time::Duration::from_secs(10), || {
        let (ca_arg, url) = (ca_arg.clone(), url.clone());
        async move {
            let (ok, out, _) = keel_command(&["--ca-file", &ca_arg, "--url", &url, "audit", "ls", "--json"]).await;
            let log: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            (log["items"].as_array()?.len() == 2).then_some(log)
        }
    })
    .await;
    let items = log["items"].as_array().unwrap();
    assert!(items.iter().all(|e| e["action"] == "tls.reload" && e["actor"] == "local"), "{log}");
    assert_eq!(
        (items[0]["detail"]["ok"].as_bool(), items[1]["detail"]["ok"].as_bool()),
        (Some(true), Some(false)),
        "{log}"
    );
}

/// Runs the `keel` binary with `args` (without the environment's `KEEL_` settings): whether it
/// succeeded, its stdout and its stderr.
async fn keel_command(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(&args)
            .env_remove("KEEL_URL")
            .env_remove("KEEL_API_KEY")
            .env_remove("KEEL_CA_FILE")
            .output()
            .expect("running keel")
    })
    .await
    .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// A client that opens a connection and never starts the handshake is closed after
/// `server.header_timeout`, like one that never sends its headers.
#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_header_timeout() {
    let ca = ca_issuer();
    let certs = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (_, cert_pem, key_pem) = leaf_pem(&ca, "keel");
    std::fs::write(&cert_file, cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    let keel = Keel::start(&format!(
        "[server]\nheader_timeout = \"200ms\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert_file.display(),
        key_file.display()
    ))
    .await;
    let addr = keel.node.as_ref().unwrap().addr();
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut silent, &mut buf))
            .await
            .expect("the stalled connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200), "{:?}", started.elapsed());
}

/// `keel serve` as a user runs it: `kill -HUP` makes new connections see the renewed
/// certificate, while one opened before stays served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_keel_serve() {
    let ca = ca_issuer();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (first_der, cert_pem, key_pem) = leaf_pem(&ca, "keel first");
    std::fs::write(&cert_file, cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "[server]\ntls = { cert = \"cert.pem\", key = \"key.pem\" }\n").unwrap();
    let (port, log) = (crate::crash::free_port(), dir.path().join("keel.log"));
    let mut keel = crate::serve::serve_in(dir.path(), &config, port, &log);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let connector = trusting(&ca.pem());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let (mut before, shown) = eventually_or_why("keel serve up over https", Duration::from_secs(30), || async {
        try_connect_https(&connector, addr).await.map_err(|e| format!("{e}\n{}", log_text()))
    })
    .await;
    assert_eq!(shown, first_der);
    assert_eq!(healthz(&mut before).await, 200);

    let (second_der, cert_pem, key_pem) = leaf_pem(&ca, "keel second");
    std::fs::write(&cert_file, cert_pem).unwrap();
    std::fs::write(&key_file, key_pem).unwrap();
    let pid = rustix::process::Pid::from_raw(keel.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    // The signal is handled asynchronously: wait for a connection that sees the new certificate.
    let mut after = eventually_or_why("the new certificate after SIGHUP", Duration::from_secs(30), || async {
        let (after, shown) = connect_https(&connector, addr).await;
        if shown == second_der {
            Ok(after)
        } else {
            Err(format!("still the first certificate\n{}", log_text()))
        }
    })
    .await;
    assert_eq!(healthz(&mut after).await, 200);
    assert_eq!(healthz(&mut before).await, 200, "a connection opened before SIGHUP is still served");

    crate::serve::sigterm(&keel);
    let status = crate::serve::exit_within(&mut keel, std::time::Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("SIGHUP: reloaded the TLS certificate and key"), "{output}");
}
