//! The tracing subscriber of `keel serve`: a `RUST_LOG` filter (default `info`), JSON lines or
//! pretty text, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — spans exported over OTLP.
//!
//! Log lines inside an attempt or a request carry that span's fields (`invocation_id`,
//! `function`, `attempt`, `trace_id`, `subscription`, `event_id`) under `span`. Payloads,
//! results, idempotency keys and tokens are never fields of a span or an event.

use std::fmt::Write;
use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
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

/// A span's fields as one JSON object, written straight into the span's text: no map is built
/// and no value is boxed, and a `Span::record` appends its fields to the object instead of
/// parsing it and writing it again whole, as `JsonFields` does.
///
/// Every request and every attempt makes a span with seven to twelve fields and records two
/// to four more, whether or not a line is ever logged inside it. With `JsonFields` that was
/// the biggest cost of logging at the default level: it collects the fields into a
/// `BTreeMap<&str, serde_json::Value>` (a `String` per value) and serializes the map, and
/// re-parses the whole object on each record (BENCHMARKS.md has the profiles). The output is
/// the same JSON object, its members in the order the span declares them; a field recorded
/// twice appears twice and the last wins when the line is read (serde_json keeps the last of
/// duplicate keys).
#[derive(Debug, Clone, Copy, Default)]
struct AppendJsonFields;

impl<'writer> FormatFields<'writer> for AppendJsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        writer.write_char('{')?;
        let mut members = Members { out: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut members);
        members.result?;
        writer.write_char('}')
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let text = &mut current.fields;
        if text.strip_suffix('}').is_none() {
            text.clear();
            return self.format_fields(Writer::new(text), fields);
        }
        let first = text == "{}";
        text.pop();
        let mut members = Members { out: text, first, result: Ok(()) };
        fields.record(&mut members);
        let result = members.result;
        text.push('}');
        result
    }
}

/// Writes each visited field as a member of a JSON object whose braces the caller writes.
struct Members<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    result: std::fmt::Result,
}

impl<W: Write> Members<'_, W> {
    /// Writes `"name":` (after a comma unless it is the first member) and then the value;
    /// `r#` names lose their prefix, `log.` fields (a `log` record's metadata) are skipped, as
    /// `JsonFields` does.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> std::fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if std::mem::take(&mut self.first) { "\"" } else { ",\"" };
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| JsonEscaped(&mut *self.out).write_str(name))
            .and_then(|()| self.out.write_str("\":"))
            .and_then(|()| value(self.out));
    }

    fn string(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        self.member(field, |out| {
            out.write_char('"')?;
            JsonEscaped(&mut *out).write_fmt(value)?;
            out.write_char('"')
        });
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.string(field, format_args!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| out.write_str(if value { "true" } else { "false" }));
    }

    /// A finite number as JSON writes it; NaN and the infinities, which JSON has no literal for,
    /// as `null` (serde_json's choice too).
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, |out| write!(out, "{}", serde_json::Number::from_f64(value).expect("finite")));
        } else {
            self.member(field, |out| out.write_str("null"));
        }
    }
}

/// Writes text into a JSON string: quotes, backslashes and control characters escaped.
struct JsonEscaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// Whether log lines get ANSI colours: only for a person at a terminal who has not asked for
/// none (<https://no-color.org>); never in a file, a pipe or a journal.
fn colours(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::Empty;

    use super::{colours, AppendJsonFields};

    /// A line logged inside a span, formatted by the JSON layer `init` installs, with the span's
    /// fields written by `AppendJsonFields`.
    fn logged_inside(
        make_span: impl FnOnce() -> tracing::Span,
        then: impl FnOnce(&tracing::Span),
    ) -> serde_json::Value {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(AppendJsonFields)
            .with_writer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = make_span();
            then(&span);
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_carries_its_span_fields_as_json_with_every_kind_of_value() {
        let line = logged_inside(
            || {
                tracing::info_span!(
                    "attempt",
                    otel.name = %format_args!("attempt {}", "sign-up"),
                    invocation_id = %"01ABC",
                    attempt = 2u32,
                    delta = -3i64,
                    ratio = 0.5f64,
                    nothing = f64::NAN,
                    done = true,
                    r#type = "raw",
                    quoted = "a \"b\" \\ c\nd\u{1}",
                    debugged = ?vec!["x"],
                    outcome = Empty,
                )
            },
            |_| {},
        );
        let span = &line["span"];
        assert_eq!(line["message"], "inside");
        assert_eq!(span["name"], "attempt");
        assert_eq!(span["otel.name"], "attempt sign-up");
        assert_eq!(span["invocation_id"], "01ABC");
        assert_eq!(span["attempt"], 2);
        assert_eq!(span["delta"], -3);
        assert_eq!(span["ratio"], 0.5);
        assert!(span["nothing"].is_null(), "NaN has no JSON literal: {span}");
        assert_eq!(span["done"], true);
        assert_eq!(span["type"], "raw", "r# is not part of the name");
        assert_eq!(span["quoted"], "a \"b\" \\ c\nd\u{1}", "escaped and read back the same");
        assert_eq!(span["debugged"], "[\"x\"]");
        assert!(span.get("outcome").is_none(), "a field not yet recorded is absent: {span}");
    }

    #[test]
    fn fields_recorded_later_are_appended_to_the_span_object() {
        let line = logged_inside(
            || tracing::info_span!("request", trace_id = Empty, status = Empty, route = "/v1/x"),
            |span| {
                span.record("trace_id", "4bf9");
                span.record("status", 200u16);
                span.record("trace_id", "later");
            },
        );
        let span = &line["span"];
        assert_eq!(span["route"], "/v1/x");
        assert_eq!(span["status"], 200);
        assert_eq!(span["trace_id"], "later", "the last record wins");
        let only_recorded = logged_inside(
            || tracing::info_span!("empty", a = Empty),
            |span| {
                span.record("a", 1);
            },
        );
        assert_eq!(only_recorded["span"]["a"], 1, "a span made without values gets its first member");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(false, false), "a file or a pipe gets plain text");
        assert!(!colours(true, true), "NO_COLOR turns them off");
    }
}
