//! Batch delivery and bulk admission (DESIGN.md, "Batch delivery and bulk admission"), as pure
//! code: the body a batch function receives ([`request_body`]), and what its answer means for
//! each item ([`item_reports`]) — an [`AttemptReport`] per item, which then goes through the
//! same decision as any attempt ([`crate::lifecycle::after_attempt`]).
//!
//! The answer is SQS's partial batch response: `{"failed": [{"id", "retry_after"?, "permanent"?,
//! "error"?}], "results"?: {id: value}, "effects"?: {id: envelope}}`; an item not named in
//! `failed` succeeded. Any answer but a 2xx fails every item transiently.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::invocation::{truncate_error, Invocation, StoredResponse};
use crate::lifecycle::AttemptReport;
use crate::outcome::{Outcome, MAX_RETRY_AFTER};

/// The content type of a batch: the request a batch function receives, and a bulk admission.
pub const CONTENT_TYPE: &str = "application/vnd.keel.batch+json";

/// Most payloads one bulk admission (`POST /v1/functions/{name}/invocations` with a batch body)
/// may carry.
pub const MAX_BULK_ITEMS: usize = 1000;

/// Whether a `content-type` header value names a batch (parameters and case aside).
pub fn is_batch_content_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// Whether a payload of `content_type` goes into a batch as JSON: a JSON media type (or none)
/// and bytes that are JSON. Anything else travels as base64 under `payload_base64`.
fn is_json_payload(content_type: Option<&str>, payload: &[u8]) -> bool {
    let media = content_type.and_then(|ct| ct.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
    let json_type = media.as_deref().is_none_or(|m| m == "application/json" || m.ends_with("+json"));
    json_type && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// The body of a batch request: a JSON array of `{"id", "attempt", "idempotency_key", "payload"
/// | "payload_base64", "content_type"?, "subscription"?, "event"?}`, one per item in order. An
/// event delivery's `event` holds its CloudEvents attributes (the `ce-*` headers a single delivery
/// gets, without the prefix) and `subscription` its subscription.
pub fn request_body(items: &[&Invocation]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.payload.len() + 160).sum::<usize>() + 2);
    out.push(b'[');
    for (n, inv) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_item(&mut out, inv);
    }
    out.push(b']');
    out
}

fn write_item(out: &mut Vec<u8>, inv: &Invocation) {
    let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).expect("a string serializes");
    out.extend_from_slice(b"{\"id\":");
    string(out, &inv.id);
    out.extend_from_slice(format!(",\"attempt\":{},\"idempotency_key\":", inv.attempt_count + 1).as_bytes());
    string(out, inv.contract_key());
    if is_json_payload(inv.content_type.as_deref(), &inv.payload) {
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(inv.payload.trim_ascii());
    } else {
        out.extend_from_slice(b",\"payload_base64\":\"");
        out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&inv.payload).as_bytes());
        out.push(b'"');
    }
    if let Some(ct) = &inv.content_type {
        out.extend_from_slice(b",\"content_type\":");
        string(out, ct);
    }
    if let Some(delivery) = &inv.delivery {
        out.extend_from_slice(b",\"subscription\":");
        string(out, &delivery.subscription);
        let attributes: serde_json::Map<String, Value> = delivery
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.strip_prefix("ce-")?.to_owned(), Value::from(value.as_str()))))
            .collect();
        out.extend_from_slice(b",\"event\":");
        serde_json::to_writer(&mut *out, &attributes).expect("a map of strings serializes");
    }
    out.push(b'}');
}

/// One item of a batch call, as [`item_reports`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub id: &'a str,
    /// The number this attempt of the item has (1-based, counted across redrives).
    pub number: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    #[serde(default)]
    failed: Vec<RawFailed>,
    #[serde(default)]
    results: HashMap<String, Value>,
    #[serde(default)]
    effects: HashMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailed {
    id: String,
    #[serde(default)]
    retry_after: Option<Value>,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    error: Option<String>,
}

/// How an item named in `failed` failed.
struct Failed {
    permanent: bool,
    retry_after: Option<Duration>,
    error: Option<String>,
}

/// A batch answer, read: the failed items by id, and the per-item results and effects (raw).
struct Answer {
    failed: HashMap<String, Failed>,
    results: HashMap<String, Value>,
    effects: HashMap<String, Value>,
}

/// `retry_after`: seconds (a number, or a string of digits) or a duration (`"250ms"`, `"5s"`),
/// at most a day, like `Retry-After`.
fn read_retry_after(value: &Value) -> Result<Duration, String> {
    let delay = match value {
        Value::Number(n) => {
            n.as_f64().filter(|s| s.is_finite() && *s >= 0.0).map(|s| s.min(1e9)).map(Duration::from_secs_f64)
        }
        Value::String(s) => {
            s.trim().parse::<u64>().map(Duration::from_secs).ok().or_else(|| crate::duration::parse_duration(s).ok())
        }
        _ => None,
    };
    delay.map(|d| d.min(MAX_RETRY_AFTER)).ok_or_else(|| {
        format!("retry_after must be seconds (a number of at least 0) or a duration like \"5s\" (got {value})")
    })
}

/// Reads a 2xx answer to a batch of `items`; an empty body is "all succeeded". Every id it names
/// must be one of the batch's: an answer about other items is malformed (an item it meant to fail
/// must not pass for succeeded).
fn read_answer(body: &[u8], items: &[Item<'_>], max_json_depth: u32) -> Result<Answer, String> {
    if body.trim_ascii().is_empty() {
        return Ok(Answer { failed: HashMap::new(), results: HashMap::new(), effects: HashMap::new() });
    }
    crate::limits::check_json_depth(body, max_json_depth).map_err(|too_deep| format!("batch answer: {too_deep}"))?;
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|e| format!("malformed batch answer: {e}"))?;
    let known = |id: &str| items.iter().any(|item| item.id == id);
    let stranger = raw
        .failed
        .iter()
        .map(|f| f.id.as_str())
        .chain(raw.results.keys().map(String::as_str))
        .chain(raw.effects.keys().map(String::as_str))
        .find(|id| !known(id));
    if let Some(id) = stranger {
        return Err(format!("malformed batch answer: it names item {id:?}, which is not in the batch"));
    }
    let mut failed = HashMap::with_capacity(raw.failed.len());
    for f in raw.failed {
        let retry_after = match &f.retry_after {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(read_retry_after(value).map_err(|why| format!("malformed batch answer: item {:?}: {why}", f.id))?)
            }
        };
        failed.entry(f.id).or_insert(Failed { permanent: f.permanent, retry_after, error: f.error });
    }
    Ok(Answer { failed, results: raw.results, effects: raw.effects })
}

/// Each item's report of one batch call, whose own report (as the runtime classified the HTTP
/// exchange) is `batch`.
///
/// - Not a 2xx (or no answer: a timeout, a reset): every item fails transiently, with the call's
///   error and `Retry-After` (a timeout stays a timeout).
/// - A malformed 2xx answer: every item fails permanently, the error naming what is wrong (like a
///   malformed effects envelope).
/// - Else each item named in `failed` fails — permanently with `"permanent": true`, else
///   transiently, no sooner than its `retry_after` — and every other item succeeded, with its
///   effects envelope from `effects` (a malformed one fails that item permanently) or its result
///   from `results` as the stored response.
pub fn item_reports(batch: &AttemptReport, items: &[Item<'_>], max_json_depth: u32) -> Vec<AttemptReport> {
    let each = |outcome: Outcome, error: Option<String>| -> Vec<AttemptReport> {
        items
            .iter()
            .map(|item| {
                let mut report = batch.clone();
                report.attempt.number = item.number;
                report.attempt.outcome = outcome;
                report.attempt.error = error.clone();
                report.effects = None;
                if outcome == Outcome::Permanent {
                    report.retry_after = None;
                }
                report
            })
            .collect()
    };
    if batch.attempt.outcome != Outcome::Success {
        let outcome = if batch.attempt.outcome == Outcome::Timeout { Outcome::Timeout } else { Outcome::Transient };
        let error = truncate_error(format!("the batch failed: {}", batch.error_text()));
        return each(outcome, Some(error));
    }
    let body = batch.response.as_ref().map(|r| r.body.clone()).unwrap_or_default();
    let mut answer = match read_answer(&body, items, max_json_depth) {
        Ok(answer) => answer,
        Err(why) => return each(Outcome::Permanent, Some(truncate_error(why))),
    };
    items.iter().map(|item| item_report(batch, item, &mut answer, max_json_depth)).collect()
}

fn item_report(batch: &AttemptReport, item: &Item<'_>, answer: &mut Answer, max_json_depth: u32) -> AttemptReport {
    let mut report = AttemptReport {
        attempt: crate::invocation::Attempt { number: item.number, error: None, ..batch.attempt.clone() },
        response: None,
        retry_after: None,
        effects: None,
    };
    if let Some(failed) = answer.failed.remove(item.id) {
        let kind = if failed.permanent { "permanently" } else { "transiently" };
        let why = failed.error.filter(|e| !e.trim().is_empty()).unwrap_or_else(|| "no error given".to_owned());
        report.attempt.outcome = if failed.permanent { Outcome::Permanent } else { Outcome::Transient };
        report.attempt.error = Some(truncate_error(format!("failed {kind} in its batch: {why}")));
        report.retry_after = failed.retry_after.filter(|_| !failed.permanent);
        return report;
    }
    if let Some(envelope) = answer.effects.remove(item.id) {
        return match crate::effects::parse(envelope.to_string().as_bytes(), max_json_depth) {
            Ok(effects) => {
                report.response = Some(StoredResponse {
                    status: effects.status,
                    content_type: Some("application/json".into()),
                    body: effects.result.clone(),
                });
                report.effects = Some(effects);
                report
            }
            Err(why) => {
                report.attempt.outcome = Outcome::Permanent;
                report.attempt.error = Some(truncate_error(why));
                report
            }
        };
    }
    report.response = Some(match answer.results.remove(item.id) {
        Some(result) => StoredResponse {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from(result.to_string()),
        },
        None => StoredResponse { status: 200, content_type: None, body: Bytes::new() },
    });
    report
}

#[cfg(test)]
mod tests;
