//! The tracing subscriber of `keel serve`: a `RUST_LOG` filter (default `info`), JSON lines or
//! pretty text, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — spans exported over OTLP.
//!
//! Log lines inside an attempt or a request carry that span's fields (`invocation_id`,
//! `function`, `attempt`, `trace_id`, `subscription`, `event_id`) under `span`. Payloads,
//! results, idempotency keys and tokens are never fields of a span or an event.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
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
        fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
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

/// Whether log lines get ANSI colours: only for a person at a terminal who has not asked for
/// none (<https://no-color.org>); never in a file, a pipe or a journal.
fn colours(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::colours;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(false, false), "a file or a pipe gets plain text");
        assert!(!colours(true, true), "NO_COLOR turns them off");
    }
}
