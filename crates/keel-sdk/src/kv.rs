//! Reading Keel's KV: `GET {KEEL_URL}/v1/kv/{ns}/{key}` answers the value as the JSON body and
//! its version as `ETag: "7"`, or 404 when the key is absent.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{AUTHORIZATION, ETAG};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A value read from KV, and the version to write it back at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One keep-alive client per process, shared by every invocation.
fn http() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

#[derive(Debug, Clone)]
pub(crate) struct KvClient {
    base: Option<url::Url>,
    bearer: Option<String>,
}

impl KvClient {
    pub(crate) fn from_env(bearer: Option<String>) -> Self {
        let base = std::env::var("KEEL_URL").ok().and_then(|u| url::Url::parse(&u).ok());
        Self { base, bearer }
    }

    /// Reads and writes Keel at `base` instead of `KEEL_URL`.
    pub(crate) fn with_base(mut self, base: Option<url::Url>) -> Self {
        self.base = base;
        self
    }

    /// The attempt's function token, sent with every call to Keel.
    pub(crate) fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    /// Where Keel is: `KEEL_URL`.
    pub(crate) fn base(&self) -> Option<&url::Url> {
        self.base.as_ref()
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, ns: &str, key: &str) -> Result<Option<Versioned<T>>, Error> {
        let mut url = self.base.clone().ok_or_else(|| Error::retryable("KEEL_URL is not set: cannot read KV"))?;
        url.path_segments_mut()
            .map_err(|()| Error::retryable("KEEL_URL cannot be a base URL"))?
            .pop_if_empty()
            .extend(["v1", "kv", ns, key]);
        let mut request = http::Request::get(url.as_str());
        if let Some(token) = &self.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::new()).map_err(|e| Error::retryable(format!("kv {ns}/{key}: {e}")))?;
        let response = http()
            .request(request)
            .await
            .map_err(|e| Error::retryable(format!("kv {ns}/{key}: keel unreachable: {e}")))?;
        let status = response.status().as_u16();
        let version = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).and_then(parse_etag);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::retryable(format!("kv {ns}/{key}: reading the answer: {e}")))?
            .to_bytes();
        match status {
            404 => Ok(None),
            200 => {
                let version = version.ok_or_else(|| Error::retryable(format!("kv {ns}/{key}: no ETag version")))?;
                let value = serde_json::from_slice(&body)
                    .map_err(|e| Error::permanent(format!("kv {ns}/{key} does not hold the expected shape: {e}")))?;
                Ok(Some(Versioned { value, version }))
            }
            other => Err(Error::retryable(format!("kv {ns}/{key}: keel answered HTTP {other}"))),
        }
    }
}

/// `"7"` or `W/"7"` → 7.
fn parse_etag(value: &str) -> Option<u64> {
    value.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn etags_are_quoted_versions() {
        assert_eq!(super::parse_etag("\"7\""), Some(7));
        assert_eq!(super::parse_etag("W/\"12\""), Some(12));
        assert_eq!(super::parse_etag("\"x\""), None);
    }
}
