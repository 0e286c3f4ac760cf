//! The span of each attempt, child of the trace its invocation carries (`invocation.traceparent`),
//! so that one trace follows the work through queue, retries, fan-out and subscribers; and the
//! span of each event an attempt emits, whose context the event's deliveries continue.

use std::sync::atomic::{AtomicBool, Ordering};

use keel_core::invocation::{Attempt, Invocation, Transition};
use keel_core::outcome::Outcome;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported: set by [`super::init`] when it installs the OpenTelemetry layer.
/// Without that layer a span has no OpenTelemetry context to set or read, so making one (hex
/// parsing, a `Context`, a lookup of the layer through the subscriber) is skipped at every
/// request and attempt.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Spans are exported from now on ([`super::init`]).
pub(super) fn exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported.
pub(super) fn exporting_now() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The trace id of a W3C `traceparent` (`00-TRACEID-PARENTID-FLAGS`).
pub(crate) fn trace_id_of(traceparent: Option<&str>) -> Option<&str> {
    crate::trace::fields(traceparent?).map(|(_, trace_id, _, _)| trace_id)
}

/// The span of one attempt of `inv`, with the ids every log line about it carries.
pub(crate) fn attempt_span(inv: &Invocation) -> Span {
    let delivery = inv.delivery.as_ref();
    let span = tracing::info_span!(
        "attempt",
        otel.name = %format_args!("attempt {}", inv.function),
        otel.kind = "client",
        invocation_id = inv.id.as_str(),
        function = inv.function.as_str(),
        attempt = inv.attempt_count + 1,
        trace_id = trace_id_of(inv.traceparent.as_deref()),
        subscription = delivery.map(|d| d.subscription.as_str()),
        event_id = delivery.map(|d| d.event_id.as_str()),
        outcome = Empty,
        status = Empty,
        retry_delay_ms = Empty,
        otel.status_code = Empty,
    );
    set_remote_parent(&span, inv.traceparent.as_deref());
    span
}

/// The span of one batch call of `function` carrying `items` attempts (each item's own trace is
/// in its invocation; the batch starts a trace of its own).
pub(crate) fn batch_span(function: &str, items: usize) -> Span {
    tracing::info_span!(
        "batch",
        otel.name = %format_args!("batch {function}"),
        otel.kind = "client",
        function = %function,
        items,
    )
}

/// Records an attempt's outcome, status and (async) the retry delay on the current span, for the
/// trace exporter. Without it nothing is recorded: an async attempt's `attempt finished` line
/// says them (a sync call's answer does), and the records, each formatted into the span's JSON
/// for lines that mostly never come, were about 4% of a sync call's instructions (BENCHMARKS.md).
pub(crate) fn record_attempt(attempt: &Attempt, next: Option<&Transition>) {
    if !exporting_now() {
        return;
    }
    let span = Span::current();
    span.record("outcome", attempt.outcome.as_str());
    if let Some(status) = attempt.http_status {
        span.record("status", status);
    }
    if let Some(Transition::Retry { delay_ms, .. }) = next {
        span.record("retry_delay_ms", delay_ms);
    }
    span.record("otel.status_code", if attempt.outcome == Outcome::Success { "ok" } else { "error" });
}

/// The span of one event emitted by the current attempt, to topic `topic`.
pub(crate) fn emit_span(topic: &str) -> Span {
    tracing::info_span!("emit", otel.name = %format_args!("emit {topic}"), otel.kind = "producer", topic = %topic)
}

/// The span of a workflow run, child of the request that starts it, and the `traceparent` every
/// step's invocation carries: its context when traces are exported, else the request's. So one
/// trace holds the run, its steps' attempts and what they call.
pub(crate) fn run_span(workflow: &str, request: &str) -> (Span, String) {
    let span = tracing::info_span!(
        "workflow run",
        otel.name = %format_args!("workflow {workflow}"),
        otel.kind = "internal",
        workflow = %workflow,
        run_id = Empty,
    );
    set_remote_parent(&span, Some(request));
    let traceparent = traceparent_of(&span).unwrap_or_else(|| request.to_owned());
    (span, traceparent)
}

/// The current span's context as a `traceparent`, when traces are exported.
pub(crate) fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

pub(super) fn traceparent_of(span: &Span) -> Option<String> {
    if !exporting_now() {
        return None;
    }
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// Makes `span` a child of the (remote) span a `traceparent` names.
pub(super) fn set_remote_parent(span: &Span, traceparent: Option<&str>) {
    if !exporting_now() {
        return;
    }
    let Some((_, trace, parent, flags)) = traceparent.and_then(crate::trace::fields) else { return };
    let (Ok(trace), Ok(parent), Ok(flags)) =
        (TraceId::from_hex(trace), SpanId::from_hex(parent), u8::from_str_radix(flags, 16))
    else {
        return;
    };
    let remote = SpanContext::new(trace, parent, TraceFlags::new(flags), true, TraceState::default());
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}
