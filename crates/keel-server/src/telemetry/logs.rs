//! The tracing subscriber of `keel serve`: a `RUST_LOG` filter (default `info`), JSON lines or
//! pretty text, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — spans exported over OTLP.
//!
//! Log lines inside an attempt or a request carry that span's fields (`invocation_id`,
//! `function`, `attempt`, `trace_id`, `subscription`, `event_id`) under `span`. Payloads,
//! results, idempotency keys and tokens are never fields of a span or an event.

use std::cell::RefCell;
use std::fmt::Write;
use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::lines::Lines;

/// Keeps the trace exporter and the log writer alive; dropping it flushes the spans not yet sent
/// and writes the log lines not yet written.
#[derive(Debug)]
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    lines: Lines,
}

impl Drop for Telemetry {
    /// Flushes the spans not yet exported, then the log lines not yet written.
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("keel: flushing traces failed: {e}");
            }
        }
        self.lines.close();
    }
}

/// Installs the global subscriber: JSON lines when `json`, else pretty text, coloured only on
/// a terminal (and not when `NO_COLOR` is set), on stdout through the log thread
/// (`telemetry::lines`: written behind, in groups).
pub fn init(json: bool) -> Telemetry {
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let lines = Lines::start(Box::new(std::io::stdout()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(lines.clone())
        .with_ansi(colours(std::io::stdout().is_terminal(), no_color));
    let fmt =
        if json { fmt.fmt_fields(AppendJsonFields).event_format(JsonLines).boxed() } else { fmt.pretty().boxed() };
    let (provider, otel_error) = match super::otel::provider_from_env() {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("keel"))
    });
    if otel.is_some() {
        super::spans::exporting();
    }
    tracing_subscriber::registry().with(otel).with(fmt).with(filter).init();
    if let Some(e) = otel_error {
        tracing::warn!(error = %e, "OpenTelemetry export is off: the OTLP exporter could not be built");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { provider, lines }
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
/// the same JSON object, its members in the order the span declares them; a record of a field
/// already there rewrites the object with each name once, the last value kept.
#[derive(Debug, Clone, Copy, Default)]
struct AppendJsonFields;

impl<'writer> FormatFields<'writer> for AppendJsonFields {
    /// Into a buffer the thread keeps, then into the span's text in one write: the text is
    /// allocated once at its size instead of grown by doubling as each member is written.
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        thread_local!(static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) });
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                json_object(&mut *scratch, fields)?;
                let written = writer.write_str(&scratch);
                if scratch.capacity() > 4096 {
                    *scratch = String::new(); // not kept at the size of a rare large span
                }
                written
            }
            // A field's value that makes a span of its own while it is written.
            Err(_) => json_object(&mut writer, fields),
        })
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let text = &mut current.fields;
        if text.strip_suffix('}').is_none() {
            text.clear();
            return self.format_fields(Writer::new(text), fields);
        }
        let mut repeats = Repeats { text, any: false };
        fields.record(&mut repeats);
        let repeated = repeats.any;
        let first = text == "{}";
        text.pop();
        let mut members = Members { out: text, first, result: Ok(()) };
        fields.record(&mut members);
        let result = members.result;
        text.push('}');
        if repeated {
            // A field recorded again: one member per name, the last value, so that a line never
            // carries a name twice (rare: Keel's spans record each field once).
            let members: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).map_err(|_| std::fmt::Error)?;
            *text = serde_json::Value::Object(members).to_string();
        }
        result
    }
}

/// `fields` as one JSON object into `out`.
fn json_object<W: Write, R: RecordFields>(out: &mut W, fields: R) -> std::fmt::Result {
    out.write_char('{')?;
    let mut members = Members { out: &mut *out, first: true, result: Ok(()) };
    fields.record(&mut members);
    members.result?;
    out.write_char('}')
}

/// Whether any visited field is already a member of the JSON object `text`.
struct Repeats<'a> {
    text: &'a str,
    any: bool,
}

impl Visit for Repeats<'_> {
    fn record_debug(&mut self, field: &Field, _: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.any || name.starts_with("log.") || name.starts_with("otel.") {
            return; // decided, or a field `Members` does not write
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.any = self
            .text
            .match_indices(name)
            .any(|(at, _)| self.text[..at].ends_with('"') && self.text[at + name.len()..].starts_with("\":"));
    }
}

/// One JSON object per line: `timestamp`, `level`, the event's fields (`message` among them),
/// `target`, and `span`, the fields of the span the line was logged in with its `name` — the
/// shape of `tracing_subscriber`'s JSON format with `flatten_event` and the current span only.
///
/// Written straight into the line. `tracing_subscriber`'s own JSON format parses the span's
/// fields back into a map at every line to copy them into it, and serializes the event through
/// serde: with an `attempt finished` line per async attempt that was about 5% of the server's
/// CPU under load, half of it the re-parse (BENCHMARKS.md). Here the span's object, kept as JSON
/// by [`AppendJsonFields`], is copied as it is.
#[derive(Debug, Clone, Copy, Default)]
struct JsonLines;

impl<S> FormatEvent<S, AppendJsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, AppendJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // A `log` record's own target and level, not those of the `log` bridge's callsite.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        // As `tracing_subscriber`'s `SystemTime` writes it (microseconds, UTC), at a fifth of
        // its cost: one `write_str` of digits laid out by humantime, not seven padded integers.
        write!(writer, "{}", humantime::format_rfc3339_micros(std::time::SystemTime::now()))?;
        write!(writer, "\",\"level\":\"{}\"", meta.level().as_str())?;
        let mut members = Members { out: &mut writer, first: false, result: Ok(()) };
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":\"")?;
        JsonEscaped(&mut writer).write_str(meta.target())?;
        writer.write_char('"')?;
        if let Some(span) = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current()) {
            let extensions = span.extensions();
            let fields = extensions
                .get::<FormattedFields<AppendJsonFields>>()
                .map(|f| f.fields.as_str())
                .filter(|f| f.len() >= 2 && f.starts_with('{') && f.ends_with('}'))
                .unwrap_or("{}");
            writer.write_str(",\"span\":")?;
            writer.write_str(&fields[..fields.len() - 1])?;
            writer.write_str(if fields.len() > 2 { ",\"name\":\"" } else { "\"name\":\"" })?;
            JsonEscaped(&mut writer).write_str(span.name())?;
            writer.write_str("\"}")?;
        }
        writer.write_str("}\n")
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
    /// `JsonFields` does, and so are `otel.` fields: the span's name, kind and status for the
    /// trace exporter, which a line already says otherwise (`name`, `function`, `outcome`), and
    /// whose formatting was a fifth of a span's cost at every request and attempt.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> std::fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") || name.starts_with("otel.") {
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
        self.quoted(field, |text| text.write_fmt(value));
    }

    /// A string member whose text `write` gives, escaped, between quotes.
    fn quoted(&mut self, field: &Field, write: impl FnOnce(&mut JsonEscaped<'_, W>) -> std::fmt::Result) {
        self.member(field, |out| {
            out.write_char('"')?;
            write(&mut JsonEscaped(&mut *out))?;
            out.write_char('"')
        });
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.string(field, format_args!("{value:?}"));
    }

    /// Straight into the text, not through `format_args!` (most of a span's fields are strings).
    fn record_str(&mut self, field: &Field, value: &str) {
        self.quoted(field, |text| text.write_str(value));
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

/// Whether a byte must be escaped in a JSON string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // Nearly every value (ids, names, routes) needs no escape: checked 16 bytes at a time,
        // a loop the compiler turns into vector instructions, and written whole.
        if s.as_bytes().chunks(16).all(|chunk| !chunk.iter().fold(false, |any, &b| any | needs_escape(b))) {
            return self.0.write_str(s);
        }
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

    use super::{colours, AppendJsonFields, JsonLines};

    /// A line logged inside a span, formatted by the JSON layer `init` installs, with the span's
    /// fields written by `AppendJsonFields`.
    fn logged_inside(
        make_span: impl FnOnce() -> tracing::Span,
        then: impl FnOnce(&tracing::Span),
    ) -> serde_json::Value {
        let text = logged(|| {
            let span = make_span();
            then(&span);
            span.in_scope(|| tracing::info!("inside"));
        });
        parsed(&text)
    }

    /// What `log` writes through the JSON layer `init` installs.
    fn logged(log: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(AppendJsonFields)
            .event_format(JsonLines)
            .with_writer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text
    }

    fn parsed(line: &str) -> serde_json::Value {
        assert!(line.ends_with('\n'), "a line ends with a newline: {line:?}");
        serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("{e}: {line}"))
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
                    long = "0123456789abcdefghij\"k0123456789abcdefghij",
                    debugged = ?vec!["x"],
                    outcome = Empty,
                )
            },
            |_| {},
        );
        let span = &line["span"];
        assert_eq!(line["message"], "inside");
        assert_eq!(span["name"], "attempt");
        assert!(span.get("otel.name").is_none(), "the exporter's fields stay out of the line: {span}");
        assert_eq!(span["invocation_id"], "01ABC");
        assert_eq!(span["attempt"], 2);
        assert_eq!(span["delta"], -3);
        assert_eq!(span["ratio"], 0.5);
        assert!(span["nothing"].is_null(), "NaN has no JSON literal: {span}");
        assert_eq!(span["done"], true);
        assert_eq!(span["type"], "raw", "r# is not part of the name");
        assert_eq!(span["quoted"], "a \"b\" \\ c\nd\u{1}", "escaped and read back the same");
        assert_eq!(span["long"], "0123456789abcdefghij\"k0123456789abcdefghij", "a quote past the first 16 bytes");
        assert_eq!(span["debugged"], "[\"x\"]");
        assert!(span.get("outcome").is_none(), "a field not yet recorded is absent: {span}");
    }

    #[test]
    fn a_request_span_carries_the_trace_id_of_the_traceparent_its_work_continues() {
        let received = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for sent in [Some(received), None] {
            let mut request = axum::extract::Request::builder().uri("/healthz");
            if let Some(traceparent) = sent {
                request = request.header("traceparent", traceparent);
            }
            let mut request = request.body(axum::body::Body::empty()).unwrap();
            let line = parsed(&logged(|| {
                let observed = crate::telemetry::Observed::start(&mut request);
                observed.span().in_scope(|| tracing::info!("inside"));
            }));
            let continued = request.headers()["traceparent"].to_str().unwrap();
            assert_eq!(continued, sent.unwrap_or(continued), "the caller's traceparent is continued");
            assert!(crate::trace::parse_traceparent(continued).is_some(), "{continued}");
            assert_eq!(line["span"]["trace_id"], continued.split('-').nth(1).unwrap(), "{line}");
            assert_eq!(line["span"]["name"], "request");
        }
    }

    #[test]
    fn fields_recorded_later_are_appended_to_the_span_object() {
        let text = logged(|| {
            let span = tracing::info_span!("request", trace_id = Empty, status = Empty, route = "/v1/x");
            span.record("trace_id", "4bf9");
            span.record("status", 200u16);
            span.record("trace_id", "later");
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(text.matches("\"trace_id\":").count(), 1, "a name recorded twice is written once: {text}");
        let line = parsed(&text);
        let span = &line["span"];
        assert_eq!(span["route"], "/v1/x");
        assert_eq!(span["status"], 200);
        assert_eq!(span["trace_id"], "later", "the last record wins");
        assert_eq!(span.as_object().unwrap().len(), 4, "the three fields and the span's name: {span}");
        let only_recorded = logged_inside(
            || tracing::info_span!("empty", a = Empty),
            |span| {
                span.record("a", 1);
            },
        );
        assert_eq!(only_recorded["span"]["a"], 1, "a span made without values gets its first member");
    }

    /// The members of a line and their order: the shape `tracing_subscriber`'s JSON format
    /// gave (flattened event, current span only), which log pipelines already read.
    #[test]
    fn a_line_is_one_json_object_with_the_event_flattened_and_its_span() {
        let text = logged(|| {
            tracing::warn!(invocation_id = "01ABC", tries = 3u64, error = "a \"quoted\"\nline", "completion refused");
            let request = tracing::info_span!("request", route = "/v1/x");
            let attempt = tracing::info_span!(parent: &request, "attempt", attempt = 1u32);
            request.in_scope(|| tracing::error!(parent: &attempt, "in the attempt"));
            tracing::info_span!("bare").in_scope(|| tracing::info!("in a span without fields"));
        });
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 3, "{text}");
        let outside = parsed(lines[0]);
        let keys: Vec<&str> = outside.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["error", "invocation_id", "level", "message", "target", "timestamp", "tries"], "{outside}");
        assert!(lines[0].starts_with("{\"timestamp\":\""), "{}", lines[0]);
        assert!(
            lines[0].contains("\",\"level\":\"WARN\",\"message\":\"completion refused\",\"invocation_id\""),
            "{}",
            lines[0]
        );
        let stamp = outside["timestamp"].as_str().unwrap();
        assert!(
            stamp.len() == 27 && stamp.ends_with('Z') && &stamp[10..11] == "T",
            "RFC 3339 in UTC, microseconds: {stamp}"
        );
        let age = std::time::SystemTime::now().duration_since(humantime::parse_rfc3339(stamp).unwrap()).unwrap();
        assert!(age < std::time::Duration::from_secs(60), "the time it was written: {stamp}");
        assert_eq!(outside["tries"], 3);
        assert_eq!(outside["error"], "a \"quoted\"\nline");
        assert_eq!(outside["target"], module_path!());
        let inside = parsed(lines[1]);
        assert_eq!(inside["level"], "ERROR");
        assert_eq!(inside["span"], serde_json::json!({"attempt": 1, "name": "attempt"}), "the event's own parent span");
        let bare = parsed(lines[2]);
        assert_eq!(bare["span"], serde_json::json!({"name": "bare"}));
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(false, false), "a file or a pipe gets plain text");
        assert!(!colours(true, true), "NO_COLOR turns them off");
    }
}
