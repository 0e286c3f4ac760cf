//! The client of Keel's own API behind every `keel` client command and every chaos experiment:
//! requests to a Keel server (http, or https trusting the system's roots plus `--ca-file`), with
//! the `--api-key` on every request, and Keel's RFC 9457 problems and an unreachable server
//! turned into [`ClientError`]s. Cheap to clone: clones share one connection pool.

use std::path::{Path, PathBuf};

use crate::HttpsClient;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// What can go wrong talking to Keel, each worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--url must be an http:// or https:// URL, got `{0}`")]
    BadUrl(String),
    #[error("--ca-file is for an https:// --url; {0} is plain http")]
    CaFileWithoutHttps(String),
    #[error("--api-key cannot be sent: it is not a valid header value")]
    BadApiKey,
    #[error(transparent)]
    Tls(#[from] crate::HttpsSetupError),
    #[error("cannot reach keel at {url} (is `keel serve` running?)")]
    Unreachable { url: String },
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("TLS with {url} failed: {message} (for a private CA, pass --ca-file or set KEEL_CA_FILE)")]
    TlsHandshake { url: String, message: String },
    /// A non-2xx answer; from Keel's `application/problem+json` when it sent one. A 401 says
    /// how to get and pass a key.
    #[error(
        "{title}{}{}",
        detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default(),
        if *status == StatusCode::UNAUTHORIZED { UNAUTHORIZED_HINT } else { "" }
    )]
    Problem { status: StatusCode, title: String, detail: Option<String> },
    #[error("keel answered {status} with a body that is not JSON: {message}")]
    NotJson { status: StatusCode, message: String },
}

/// What a 401 adds to its problem.
const UNAUTHORIZED_HINT: &str = "\nhint: set KEEL_API_KEY or pass --api-key; create a key with \
     `keel keys create --name NAME --scope admin -c keel.toml` on the server's host";

/// One answer from the server, its body read in full.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value as text, when present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// Whether the server (rather than a function) said what went wrong.
    pub fn is_problem(&self) -> bool {
        self.header(CONTENT_TYPE.as_str()).is_some_and(|t| t.starts_with("application/problem+json"))
    }

    /// The problem this non-2xx answer describes; a body that is not a problem becomes its detail.
    pub fn problem(&self) -> ClientError {
        let parsed: Option<Value> = serde_json::from_slice(&self.body).ok();
        let text = |key: &str| parsed.as_ref().and_then(|v| v.get(key)).and_then(Value::as_str).map(str::to_owned);
        let reason = self.status.canonical_reason().unwrap_or("error");
        let title = text("title").unwrap_or_else(|| format!("HTTP {} {reason}", self.status.as_u16()));
        let detail = match parsed {
            Some(_) => text("detail"),
            None => Some(String::from_utf8_lossy(&self.body).trim().to_owned()).filter(|d| !d.is_empty()),
        };
        ClientError::Problem { status: self.status, title, detail }
    }

    /// The body as JSON (`null` when empty), or the problem when the status is not 2xx.
    pub fn into_json(self) -> Result<Value, ClientError> {
        if !self.status.is_success() {
            return Err(self.problem());
        }
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::NotJson { status: self.status, message: e.to_string() })
    }
}

/// A connection to one Keel server, by base URL.
#[derive(Debug, Clone)]
pub struct KeelClient {
    /// `http(s)://host:port` without a trailing slash; paths are appended to it.
    base: String,
    http: Transport,
    /// `Bearer KEY`, sent with every request.
    authorization: Option<HeaderValue>,
}

/// Plain http, or the https-capable client (whose trust store is read only when needed).
#[derive(Debug, Clone)]
enum Transport {
    Http(Client<HttpConnector, Full<Bytes>>),
    Https(HttpsClient),
}

/// Where the server is and how to talk to it: the global `--url`, `--api-key` and `--ca-file`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub url: String,
    pub api_key: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl KeelClient {
    /// A client for a plain http:// server without a key (what `keel bench` talks to).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Self::connect(&Access { url: url.to_owned(), ..Access::default() })
    }

    /// A client for `access.url`, http:// or https://, sending `access.api_key` as a bearer token.
    pub fn connect(access: &Access) -> Result<Self, ClientError> {
        let url = &access.url;
        let base = url.trim_end_matches('/');
        let https = base.starts_with("https://");
        if !(https || base.starts_with("http://")) || base.parse::<http::Uri>().is_err() {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        let http = match (https, access.ca_file.as_deref()) {
            (true, ca_file) => Transport::Https(https_client(ca_file)?),
            (false, Some(_)) => return Err(ClientError::CaFileWithoutHttps(url.to_owned())),
            (false, None) => Transport::Http(Client::builder(TokioExecutor::new()).build_http()),
        };
        let authorization = match &access.api_key {
            Some(key) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| ClientError::BadApiKey)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(KeelClient { base: base.to_owned(), http, authorization })
    }

    /// Sends one request to `path` (which starts with `/` and may carry a query) and reads the
    /// whole answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| ClientError::Transport {
                url: url.clone(),
                message: format!("the {name} header cannot hold `{value}`"),
            })?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport { url: url.clone(), message: e.to_string() })?;
        let response = match &self.http {
            Transport::Http(client) => client.request(request).await,
            Transport::Https(client) => client.request(request).await,
        };
        let response = response.map_err(|e| {
            if let Some(message) = tls_failure(&e) {
                ClientError::TlsHandshake { url: self.base.clone(), message }
            } else if e.is_connect() {
                ClientError::Unreachable { url: self.base.clone() }
            } else {
                ClientError::Transport { url: url.clone(), message: error_chain(&e) }
            }
        })?;
        let (parts, body) = response.into_parts();
        let body =
            body.collect().await.map_err(|e| ClientError::Transport { url, message: error_chain(&e) })?.to_bytes();
        Ok(Response { status: parts.status, headers: parts.headers, body })
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, &[], Bytes::new()).await?.into_json()
    }

    /// POSTs `body` as JSON (no body when `None`), with an `Idempotency-Key` when given, and
    /// reads a JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut headers: Vec<_> = idempotency_key.map(idempotency_header).into_iter().collect();
        let body = match body {
            Some(value) => {
                headers.push((CONTENT_TYPE, "application/json".to_owned()));
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        self.send(Method::POST, path, &headers, body).await?.into_json()
    }

    pub async fn delete_json(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::DELETE, path, &[], Bytes::new()).await?.into_json()
    }
}

/// The https client: the system's roots and `ca_file`.
fn https_client(ca_file: Option<&Path>) -> Result<HttpsClient, ClientError> {
    let extra: Vec<PathBuf> = ca_file.map(Path::to_owned).into_iter().collect();
    Ok(crate::build_https_client(&extra)?)
}

/// The `Idempotency-Key` header for `key`, sent as a structured-field string so that any key
/// the server accepts (spaces and quotes included) arrives as typed.
pub fn idempotency_header(key: &str) -> (HeaderName, String) {
    let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
    (HeaderName::from_static("idempotency-key"), format!("\"{escaped}\""))
}

/// What rustls said, when `error` is (or was caused by) a failed TLS handshake. tokio-rustls
/// hands it up inside an `io::Error`, which hyper-rustls wraps in another, and an `io::Error`'s
/// `source()` skips what it wraps: so each one is opened with `get_ref` as well.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// An error and its sources, `outer: inner: …`, since hyper's top-level messages are terse.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `value` percent-encoded for a path segment or a query value.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, NOT_UNRESERVED).to_string()
}

/// `path?k=v&…` with the parameters that are set, encoded.
pub fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut url = path.to_owned();
    let mut separator = '?';
    for (key, value) in params {
        if let Some(value) = value {
            url.push(separator);
            url.push_str(key);
            url.push('=');
            url.push_str(&encode(value));
            separator = '&';
        }
    }
    url
}

/// `value` as indented JSON, the way `--json` prints every answer.
pub fn print_json(value: &Value) {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, content_type: &str, body: &str) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        Response { status: StatusCode::from_u16(status).unwrap(), headers, body: Bytes::from(body.to_owned()) }
    }

    #[test]
    fn a_problem_reads_as_title_then_detail() {
        let r = response(
            404,
            "application/problem+json",
            r#"{"type":"about:blank","title":"not found","status":404,"detail":"no invocation 01J"}"#,
        );
        assert!(r.is_problem());
        assert_eq!(r.problem().to_string(), "not found: no invocation 01J");
    }

    #[test]
    fn a_problem_without_detail_is_its_title() {
        let r = response(409, "application/problem+json", r#"{"title":"conflict","status":409}"#);
        assert_eq!(r.problem().to_string(), "conflict");
    }

    #[test]
    fn a_plain_text_error_keeps_its_status_and_text() {
        let r = response(502, "text/plain", "bad gateway\n");
        assert!(!r.is_problem());
        assert_eq!(r.problem().to_string(), "HTTP 502 Bad Gateway: bad gateway");
    }

    #[test]
    fn an_empty_success_is_null() {
        assert_eq!(response(204, "text/plain", "").into_json().unwrap(), Value::Null);
    }

    #[test]
    fn query_values_and_path_segments_are_encoded() {
        assert_eq!(
            with_query(
                "/v1/invocations",
                &[("function", Some("a b&c".into())), ("status", None), ("limit", Some("5".into())),]
            ),
            "/v1/invocations?function=a%20b%26c&limit=5"
        );
        assert_eq!(encode("x/y?é"), "x%2Fy%3F%C3%A9");
        assert_eq!(with_query("/v1/dlq", &[("cursor", None)]), "/v1/dlq");
    }

    #[test]
    fn idempotency_keys_are_sent_as_quoted_strings_the_server_reads_back() {
        for key in ["order-42", "a b", r#"say "hi" \ bye"#] {
            let (name, value) = idempotency_header(key);
            assert_eq!(name.as_str(), "idempotency-key");
            assert_eq!(keel_core::idempotency::parse_key_header(value.as_bytes()).as_deref(), Ok(key), "{value}");
        }
        assert_eq!(idempotency_header("k1").1, r#""k1""#);
    }

    #[test]
    fn http_and_https_urls_are_accepted() {
        assert!(KeelClient::new("http://127.0.0.1:7733/").is_ok());
        let client = KeelClient::new("https://keel.example").unwrap();
        assert!(matches!(client.http, Transport::Https(_)));
        assert!(matches!(KeelClient::new("127.0.0.1:7733"), Err(ClientError::BadUrl(_))));
        assert!(matches!(KeelClient::new("ftp://keel.example"), Err(ClientError::BadUrl(_))));
        let with_ca = |url: &str, ca: &str| {
            KeelClient::connect(&Access { url: url.into(), ca_file: Some(ca.into()), ..Access::default() })
        };
        assert!(matches!(with_ca("http://127.0.0.1:7733", "ca.pem"), Err(ClientError::CaFileWithoutHttps(_))));
        let error = with_ca("https://127.0.0.1:7733", "/nonexistent/ca.pem").unwrap_err();
        assert!(error.to_string().starts_with("cannot read the CA file /nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn the_api_key_is_a_bearer_token_and_stays_out_of_debug_output() {
        let access = |key: &str| Access { url: DEFAULT.into(), api_key: Some(key.into()), ..Access::default() };
        let client = KeelClient::connect(&access("keel_sk_abc\n")).unwrap();
        let value = client.authorization.as_ref().unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer keel_sk_abc");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("keel_sk_abc"));
        assert!(matches!(KeelClient::connect(&access("a\u{7f}b")), Err(ClientError::BadApiKey)));
        assert!(KeelClient::new(DEFAULT).unwrap().authorization.is_none());
    }

    #[test]
    fn a_401_says_how_to_pass_a_key() {
        let r =
            response(401, "application/problem+json", r#"{"title":"Unauthorized","status":401,"detail":"no API key"}"#);
        let text = r.problem().to_string();
        assert!(text.starts_with("Unauthorized: no API key\nhint: set KEEL_API_KEY or pass --api-key"), "{text}");
        assert!(!response(403, "application/problem+json", r#"{"title":"Forbidden"}"#)
            .problem()
            .to_string()
            .contains("hint"));
    }

    const DEFAULT: &str = "http://127.0.0.1:7733";

    #[test]
    fn a_tls_failure_is_found_inside_the_io_errors_that_carry_it() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert_eq!(tls_failure(&wrapped).as_deref(), Some("invalid peer certificate: UnknownIssuer"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_failure(&refused), None);
    }
}
