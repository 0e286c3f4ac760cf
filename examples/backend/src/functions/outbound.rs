//! Calling a third-party provider: a JSON POST carrying the invocation's idempotency key, so
//! that a retried attempt is not sent or charged twice. A provider's 429/5xx or an unreachable
//! provider is retryable; its other refusals are permanent.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keel_sdk::{Ctx, Error};
use serde_json::Value;

/// POSTs `body` to `path` of the provider whose base URL is in the environment variable `var`.
pub(crate) async fn post(ctx: &Ctx, var: &str, path: &str, body: &Value) -> Result<Value, Error> {
    let base = std::env::var(var).map_err(|_| Error::permanent(format!("{var} is not set")))?;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = hyper::Request::post(format!("{base}{path}")).header("content-type", "application/json");
    if let Some(key) = ctx.idempotency_key() {
        request = request.header("idempotency-key", format!("{key}:{path}"));
    }
    let request =
        request.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| Error::permanent(e.to_string()))?;
    let call = client.request(request);
    let response = match ctx.remaining() {
        Some(left) => {
            tokio::time::timeout(left, call).await.map_err(|_| Error::retryable(format!("{var}: timed out")))?
        }
        None => call.await,
    }
    .map_err(|e| Error::retryable(format!("{var} unreachable: {e}")))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| Error::retryable(e.to_string()))?.to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    match status {
        200..=299 => Ok(answer),
        429 | 500..=599 => Err(Error::retryable(format!("{var} answered {status}: {answer}"))),
        _ => Err(Error::permanent(format!("{var} refused the call ({status}): {answer}"))),
    }
}
