//! Batch functions (a function with `batch = { max_size, max_wait }` in `keel.toml`): Keel sends
//! up to `max_size` of its async invocations and event deliveries in one request, and the
//! function answers for each. [`serve_batch`] reads the batch into one [`Request`] per item —
//! each with its own [`Ctx`]: id, attempt, idempotency key, event — and turns the
//! handler's [`BatchReply`] into the answer Keel reads: the items that failed (each retried, or
//! dead-lettered, on its own), and per-item results and effects. Sync calls still come one per
//! request: they reach the same handler as a batch of one.

use std::collections::BTreeMap;
use std::future::Future;

use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::ctx::{Ctx, EventAttributes};
use crate::effects::Effects;
use crate::error::Error;
use crate::reply::Reply;
use crate::server::Request;

/// The content type of a batch request.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.keel.batch+json";

/// What a batch handler answers: which items failed (and how), and what the others produced.
/// An item not failed succeeded.
///
/// ```
/// use keel_sdk::{BatchReply, Effects, Error};
/// use serde_json::json;
///
/// let reply = BatchReply::new()
///     .result("01A", json!({"indexed": true}))
///     .fail("01B", Error::retryable("the index is busy"))
///     .fail("01C", Error::permanent("no such document"))
///     .effects("01D", Effects::new().put("docs", "d", json!(1)));
/// assert_eq!(
///     reply.to_json()["failed"],
///     json!([{"id": "01B", "error": "the index is busy"},
///            {"id": "01C", "error": "no such document", "permanent": true}])
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatchReply {
    failed: Vec<(String, Error)>,
    results: Vec<(String, Value)>,
    effects: Vec<(String, Effects)>,
}

impl BatchReply {
    /// Every item succeeded, with no result.
    pub fn new() -> Self {
        Self::default()
    }

    /// Item `id` failed: retried after Keel's backoff (no sooner than the error's retry-after)
    /// when the error is retryable, else dead-lettered.
    pub fn fail(mut self, id: impl Into<String>, error: Error) -> Self {
        self.failed.push((id.into(), error));
        self
    }

    /// Item `id` succeeded with `result` (stored as its result, JSON). Panics, like
    /// `serde_json::json!`, on a value JSON cannot represent.
    pub fn result(mut self, id: impl Into<String>, result: impl Serialize) -> Self {
        let value = serde_json::to_value(result).expect("a value JSON can represent (maps need string keys)");
        self.results.push((id.into(), value));
        self
    }

    /// Item `id` succeeded with `effects`, committed with its completion (its result is the
    /// envelope's).
    pub fn effects(mut self, id: impl Into<String>, effects: Effects) -> Self {
        self.effects.push((id.into(), effects));
        self
    }

    /// The answer as Keel reads it: `{"failed": [...], "results": {...}, "effects": {...}}`.
    pub fn to_json(&self) -> Value {
        let failed: Vec<Value> = self
            .failed
            .iter()
            .map(|(id, error)| {
                let mut item = json!({ "id": id, "error": error.message() });
                if !error.is_retryable() {
                    item["permanent"] = Value::Bool(true);
                } else if let Some(secs) = error.retry_after_secs() {
                    item["retry_after"] = json!(secs);
                }
                item
            })
            .collect();
        let mut answer = json!({ "failed": failed });
        if !self.results.is_empty() {
            answer["results"] = Value::Object(self.results.iter().cloned().collect::<Map<_, _>>());
        }
        if !self.effects.is_empty() {
            answer["effects"] = Value::Object(self.effects.iter().map(|(id, e)| (id.clone(), e.to_json())).collect());
        }
        answer
    }

    /// The answer to a sync call (a batch of one): the item's error, effects, result, or 204.
    fn into_single(mut self, id: &str) -> Result<Reply, Error> {
        if let Some(at) = self.failed.iter().position(|(item, _)| item == id) {
            return Err(self.failed.swap_remove(at).1);
        }
        if let Some(at) = self.effects.iter().position(|(item, _)| item == id) {
            return Ok(self.effects.swap_remove(at).1.into());
        }
        Ok(match self.results.iter().position(|(item, _)| item == id) {
            Some(at) => Reply::json(self.results.swap_remove(at).1),
            None => Reply::empty(),
        })
    }
}

/// Whether a content type names a batch (parameters and case aside).
fn is_batch(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case(BATCH_CONTENT_TYPE))
}

/// One item as Keel sends it.
#[derive(Deserialize)]
struct WireItem<'a> {
    id: String,
    attempt: u32,
    idempotency_key: String,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    event: Option<BTreeMap<String, String>>,
}

/// The items of a batch request, each as a [`Request`] with its own context.
pub(crate) fn read_items(headers: &HeaderMap, body: &Bytes) -> Result<Vec<Request>, Error> {
    let batch = Ctx::from_headers(headers);
    let wire: Vec<WireItem<'_>> =
        serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("malformed batch: {e}")))?;
    wire.into_iter()
        .map(|item| {
            let payload = match (item.payload, &item.payload_base64) {
                (Some(raw), _) => body.slice_ref(raw.get().as_bytes()),
                (None, Some(b64)) => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| Error::bad_request(format!("item {}: payload_base64: {e}", item.id)))?,
                ),
                (None, None) => Bytes::new(),
            };
            let event = item.event.map(|mut attributes| EventAttributes {
                id: attributes.remove("id").unwrap_or_default(),
                source: attributes.remove("source").unwrap_or_default(),
                kind: attributes.remove("type").unwrap_or_default(),
                specversion: attributes.remove("specversion").unwrap_or_else(|| "1.0".to_owned()),
                subject: attributes.remove("subject"),
                time: attributes.remove("time"),
                datacontenttype: item.content_type.clone(),
                dataschema: attributes.remove("dataschema"),
            });
            let ctx = Ctx::for_item(&batch, item.id, item.attempt, item.idempotency_key, event, item.subscription);
            Ok(Request::new(ctx, payload, item.content_type))
        })
        .collect()
}

/// Answers a batch request (`batch`: its content type was a batch) or a single call with
/// `handler`.
pub(crate) async fn answer<H, F>(handler: H, batch: bool, headers: &HeaderMap, body: Bytes) -> Result<Reply, Error>
where
    H: Fn(Vec<Request>) -> F,
    F: Future<Output = Result<BatchReply, Error>> + Send + 'static,
{
    if !batch {
        let one = Request::new(Ctx::from_headers(headers), body, crate::server::content_type(headers));
        let id = one.ctx.invocation_id().to_owned();
        return spawned(handler(vec![one])).await?.into_single(&id);
    }
    let items = read_items(headers, &body)?;
    let reply = spawned(handler(items)).await?;
    Ok(Reply::json(reply.to_json()))
}

/// Runs the handler apart, so that a panic becomes a 500 (every item retried) instead of a reset.
async fn spawned<F>(handler: F) -> Result<BatchReply, Error>
where
    F: Future<Output = Result<BatchReply, Error>> + Send + 'static,
{
    tokio::spawn(handler).await.unwrap_or_else(|_| Err(Error::retryable("the handler panicked").with_status(500)))
}

/// Serves the batch `handler` on `127.0.0.1:$PORT` until SIGTERM or Ctrl-C: the [`crate::serve`]
/// of a batch function.
///
/// ```no_run
/// use keel_sdk::{BatchReply, Error, Request};
///
/// async fn index(items: Vec<Request>) -> Result<BatchReply, Error> {
///     let mut reply = BatchReply::new();
///     for item in &items {
///         match item.json::<serde_json::Value>() {
///             Ok(doc) => reply = reply.result(item.ctx.invocation_id(), doc),
///             Err(e) => reply = reply.fail(item.ctx.invocation_id(), e),
///         }
///     }
///     Ok(reply)
/// }
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     keel_sdk::serve_batch(index).await
/// }
/// ```
pub async fn serve_batch<H, F>(handler: H) -> std::io::Result<()>
where
    H: Fn(Vec<Request>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<BatchReply, Error>> + Send + 'static,
{
    let listener = crate::server::bind_port().await?;
    serve_batch_on(listener, handler, crate::server::stop_signal()).await
}

/// [`serve_batch`] on a listener of your own, until `shutdown` completes.
pub async fn serve_batch_on<H, F>(
    listener: tokio::net::TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    H: Fn(Vec<Request>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<BatchReply, Error>> + Send + 'static,
{
    let respond = move |headers: HeaderMap, body: Bytes| {
        let handler = handler.clone();
        async move {
            let batch = crate::server::content_type(&headers).is_some_and(|ct| is_batch(&ct));
            answer(handler, batch, &headers, body).await
        }
    };
    crate::server::serve_with(listener, respond, shutdown).await
}

#[cfg(test)]
mod tests;
