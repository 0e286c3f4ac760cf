//! https function URLs: a function served with a certificate from a private CA made here is
//! called when its `ca_file` names that CA, and refused, saying why, when it does not.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{get_json, post_json, Keel};

/// A private CA, and a certificate it signed for `127.0.0.1` and `localhost`.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn private_ca() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Keel test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
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

/// An https function on `127.0.0.1:0` answering `{"tls": true, "function": NAME}`.
async fn https_function(pki: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
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
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let function = req.headers().get("keel-function").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let body = serde_json::json!({ "tls": true, "function": function }).to_string();
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_https_function_is_called_with_its_ca_file_and_refused_without_it() {
    let pki = private_ca();
    let addr = https_function(&pki).await;
    let certs = tempfile::tempdir().unwrap();
    let ca_file: PathBuf = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
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

/// An https dependency reached through egress: trusted with its `ca_file`; without it the call
/// is refused at the handshake (`502 dependency-unreachable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_dependency_is_reached_through_egress_with_its_ca_file() {
    let pki = private_ca();
    let addr = https_function(&pki).await;
    let certs = tempfile::tempdir().unwrap();
    let ca_file: PathBuf = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
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
