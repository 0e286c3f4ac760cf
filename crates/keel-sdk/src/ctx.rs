//! [`Ctx`]: what Keel tells a function about the invocation it is running, read from the
//! function contract's headers.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::de::DeserializeOwned;

use crate::egress::Dependency;
use crate::error::Error;
use crate::kv::{KvClient, Versioned};

/// The invocation being run.
///
/// ```
/// use http::HeaderMap;
/// use keel_sdk::Ctx;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("keel-invocation-id", "01J0000000000000000000000".parse().unwrap());
/// headers.insert("keel-attempt", "2".parse().unwrap());
/// headers.insert("idempotency-key", "order-42".parse().unwrap());
/// headers.insert("ce-id", "e1".parse().unwrap());
/// headers.insert("ce-type", "user.registered".parse().unwrap());
/// headers.insert("keel-subscription", "welcome-email".parse().unwrap());
/// let ctx = Ctx::from_headers(&headers);
/// assert_eq!((ctx.invocation_id(), ctx.attempt()), ("01J0000000000000000000000", 2));
/// assert_eq!(ctx.idempotency_key(), Some("order-42"));
/// assert_eq!(ctx.event().map(|e| e.kind.as_str()), Some("user.registered"));
/// assert_eq!(ctx.subscription(), Some("welcome-email"));
/// ```
#[derive(Debug, Clone)]
pub struct Ctx {
    invocation_id: String,
    attempt: u32,
    function: String,
    idempotency_key: Option<String>,
    deadline: Option<SystemTime>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    event: Option<EventAttributes>,
    subscription: Option<String>,
    kv: KvClient,
}

/// The CloudEvent an event delivery carries (CloudEvents HTTP binary mode: `ce-*` headers; the
/// body is the event's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAttributes {
    pub id: String,
    pub source: String,
    /// The CloudEvent `type`.
    pub kind: String,
    pub specversion: String,
    pub subject: Option<String>,
    /// RFC 3339, as sent.
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
}

impl Ctx {
    /// Reads the contract's headers; `KEEL_URL` from the environment is where KV is read and
    /// dependencies are called. A header that is missing reads as empty (useful when calling a
    /// function by hand).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let event = text("ce-id").map(|id| EventAttributes {
            id,
            source: text("ce-source").unwrap_or_default(),
            kind: text("ce-type").unwrap_or_default(),
            specversion: text("ce-specversion").unwrap_or_else(|| "1.0".to_owned()),
            subject: text("ce-subject"),
            time: text("ce-time"),
            datacontenttype: text("content-type"),
            dataschema: text("ce-dataschema"),
        });
        let bearer = text("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
        Ctx {
            invocation_id: text("keel-invocation-id").unwrap_or_default(),
            attempt: text("keel-attempt").and_then(|a| a.parse().ok()).unwrap_or(1),
            function: text("keel-function").unwrap_or_default(),
            idempotency_key: text("idempotency-key"),
            deadline: text("keel-deadline").and_then(|d| humantime::parse_rfc3339_weak(&d).ok()),
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
            event,
            subscription: text("keel-subscription"),
            kv: KvClient::from_env(bearer),
        }
    }

    /// The context of one item of a batch, whose request's headers gave `batch` (function,
    /// deadline, trace context, token): the item's own id, attempt, idempotency key and, for an
    /// event delivery, its CloudEvent and subscription.
    pub(crate) fn for_item(
        batch: &Ctx,
        id: String,
        attempt: u32,
        idempotency_key: String,
        event: Option<EventAttributes>,
        subscription: Option<String>,
    ) -> Self {
        Ctx { invocation_id: id, attempt, idempotency_key: Some(idempotency_key), event, subscription, ..batch.clone() }
    }

    pub fn invocation_id(&self) -> &str {
        &self.invocation_id
    }

    /// 1 for the first attempt, counted across retries and redrives.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// Stable for the invocation across attempts and redrives: pass it to downstream APIs so
    /// that a retried attempt does not charge a card twice.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// When Keel stops waiting for this attempt.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }

    /// Time left before [`Ctx::deadline`] (zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline?;
        Some(deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
    }

    /// W3C trace context of this attempt: pass it on to keep one trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The CloudEvent, when this invocation is an event delivery.
    pub fn event(&self) -> Option<&EventAttributes> {
        self.event.as_ref()
    }

    /// The subscription that delivered the event.
    pub fn subscription(&self) -> Option<&str> {
        self.subscription.as_deref()
    }

    /// The attempt's function token (`authorization: Bearer …` when Keel's auth is on): the SDK
    /// already sends it with its own calls to Keel ([`Ctx::kv_get`], [`Ctx::dependency`]); this is
    /// for calls to Keel's API it does not make for you. It expires at the attempt's deadline.
    pub fn token(&self) -> Option<&str> {
        self.kv.bearer()
    }

    /// Talks to the Keel at `keel_url` instead of `KEEL_URL` (tests standing in for Keel). A URL
    /// that does not parse leaves Keel unknown: KV reads and dependency calls then fail, retryably.
    pub fn with_keel_url(mut self, keel_url: &str) -> Self {
        self.kv = self.kv.with_base(url::Url::parse(keel_url).ok());
        self
    }

    /// Calls `name`, a dependency the function declares, through Keel's egress
    /// (`{KEEL_URL}/v1/egress/{name}{path}` with this attempt's function token, `keel-invocation-id`
    /// and trace context), so that Keel's breaker, bulkhead, rate limit, timeout and retries protect it.
    /// The dependency's answer comes back as it is, whatever its status; Keel's own refusals are
    /// an [`EgressError`](crate::EgressError) that `?` turns into the right retry:
    ///
    /// ```no_run
    /// use keel_sdk::{Error, Reply, Request};
    /// use serde_json::{json, Value};
    ///
    /// async fn purchase(req: Request) -> Result<Reply, Error> {
    ///     // breaker open / rate limited / bulkhead full → 503 + Retry-After: Keel retries the
    ///     // attempt after Keel's delay; a dependency's own 5xx is an answer like any other.
    ///     let charge = req.ctx.dependency("payments")
    ///         .post("/charges")
    ///         .query("currency", "eur")
    ///         .json(&json!({ "cents": 500 }))
    ///         .send()
    ///         .await?
    ///         .error_for_status()?; // its 5xx/429 retryable, its other 4xx permanent
    ///     Ok(Reply::json(charge.json::<Value>()?))
    /// }
    /// ```
    pub fn dependency(&self, name: &str) -> Dependency {
        Dependency::new(
            name,
            self.kv.base().cloned(),
            &self.invocation_id,
            self.kv.bearer(),
            self.traceparent.as_deref(),
            self.tracestate.as_deref(),
        )
    }

    /// Reads `key` in namespace `ns` from Keel's KV: `None` when absent. The version goes to
    /// [`Effects::put_if_version`](crate::Effects::put_if_version) for a write that only applies
    /// if nobody wrote in between. Errors are retryable (Keel unreachable) or permanent (the
    /// stored value is not a `T`).
    pub async fn kv_get<T: DeserializeOwned>(&self, ns: &str, key: &str) -> Result<Option<Versioned<T>>, Error> {
        self.kv.get(ns, key).await
    }
}
