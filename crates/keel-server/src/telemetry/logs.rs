//! The tracing subscriber of `keel serve`: a `RUST_LOG` filter (default `info`), JSON lines or
//! pretty text, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — spans exported over OTLP.
//!
//! Log lines inside an attempt or a request carry that span's fields (`invocation_id`,
//! `function`, `attempt`, `trace_id`, `subscription`, `event_id`) under `span`. Payloads,
//! results, idempotency keys and tokens are never fields of a span or an event.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
#[derive(Debug)]
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("keel: flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: JSON lines when `json`, else pretty text, coloured only on
/// a terminal (and not when `NO_COLOR` is set).
pub fn init(json: bool) -> Telemetry {
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(colours(std::io::stdout().is_terminal(), no_color));
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(AppendJsonFields)
            .boxed()
    } else {
        fmt.pretty().boxed()
    };
    let (provider, otel_error) = match super::otel::provider_from_env() {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("keel"))
    });
    tracing_subscriber::registry().with(otel).with(fmt).with(filter).init();
    if let Some(e) = otel_error {
        tracing::warn!(error = %e, "OpenTelemetry export is off: the OTLP exporter could not be built");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// A span's fields as JSON, as `JsonFields` writes them, except that a `Span::record` appends
/// the new fields to the object instead of parsing it and writing it again whole, as
/// `JsonFields` does — every request and attempt records several fields after its span is made,
/// and that re-parsing was the biggest cost of logging at the default level (~8% of a sync
/// call's CPU, `perf`, BENCHMARKS.md). A field recorded twice appears twice; the last wins
/// when the line is read (serde_json keeps the last of duplicate keys).
#[derive(Debug, Clone, Copy, Default)]
struct AppendJsonFields;

impl<'writer> FormatFields<'writer> for AppendJsonFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        JsonFields::new().format_fields(writer, fields)
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let mut new = String::new();
        JsonFields::new().format_fields(Writer::new(&mut new), fields)?;
        append_object(&mut current.fields, &new);
        Ok(())
    }
}

/// Appends the members of the JSON object `new` to the JSON object `current` (empty: none yet).
fn append_object(current: &mut String, new: &str) {
    let members = new.strip_prefix('{').and_then(|n| n.strip_suffix('}')).unwrap_or("");
    if members.is_empty() {
        return;
    }
    match current.strip_suffix('}') {
        Some("{") => {
            current.pop();
            current.push_str(members);
            current.push('}');
        }
        Some(_) => {
            current.pop();
            current.push(',');
            current.push_str(members);
            current.push('}');
        }
        None => new.clone_into(current),
    }
}

/// Whether log lines get ANSI colours: only for a person at a terminal who has not asked for
/// none (<https://no-color.org>); never in a file, a pipe or a journal.
fn colours(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::{append_object, colours};

    #[test]
    fn recorded_fields_are_appended_to_the_span_object() {
        let mut fields = String::new();
        append_object(&mut fields, r#"{"a":1}"#);
        assert_eq!(fields, r#"{"a":1}"#, "the first fields");
        append_object(&mut fields, r#"{"b":"x","c":true}"#);
        assert_eq!(fields, r#"{"a":1,"b":"x","c":true}"#);
        append_object(&mut fields, "{}");
        assert_eq!(fields, r#"{"a":1,"b":"x","c":true}"#, "nothing new");
        let mut empty = "{}".to_owned();
        append_object(&mut empty, r#"{"d":2}"#);
        assert_eq!(empty, r#"{"d":2}"#);
        let read: serde_json::Value = serde_json::from_str(&fields).unwrap();
        assert_eq!(read["c"], true, "still one JSON object");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(false, false), "a file or a pipe gets plain text");
        assert!(!colours(true, true), "NO_COLOR turns them off");
    }
}
