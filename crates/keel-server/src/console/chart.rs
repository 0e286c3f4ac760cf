//! The overview's charts: SVG made on the server, one bar per minute of the last hour, with a
//! `<title>` that says what it shows (for screen readers) and one per bar (for a mouse).

use maud::{html, Markup};

use crate::telemetry::recent::{Minute, MINUTES};

const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 48.0;

/// Attempts per minute, the failed part of each bar in the error colour.
pub(super) fn attempts(function: &str, hour: &[Minute; MINUTES]) -> Markup {
    let max = hour.iter().map(|m| m.attempts).max().unwrap_or(0).max(1);
    let total: u32 = hour.iter().map(|m| m.attempts).sum();
    let errors: u32 = hour.iter().map(|m| m.errors).sum();
    let label = format!("{function}: {total} attempts in the last hour, {errors} failed; at most {max} in a minute");
    bars(
        &label,
        "attempts",
        hour.iter().map(|m| {
            (
                f64::from(m.attempts) / f64::from(max),
                f64::from(m.errors) / f64::from(max),
                format!("{} attempts, {} failed", m.attempts, m.errors),
            )
        }),
    )
}

/// The p99 latency of each minute.
pub(super) fn p99(function: &str, hour: &[Minute; MINUTES]) -> Markup {
    let values: Vec<Option<i64>> = hour.iter().map(|m| m.quantile_ms(0.99)).collect();
    let max = values.iter().flatten().copied().max().unwrap_or(0).max(1);
    let label = format!("{function}: p99 latency by minute over the last hour, highest {max} ms");
    bars(
        &label,
        "latency",
        values.iter().map(|v| {
            let v = v.unwrap_or(0);
            (v as f64 / max as f64, 0.0, if v == 0 { "no attempts".to_owned() } else { format!("p99 ≤ {v} ms") })
        }),
    )
}

/// Bars of heights in [0, 1] (a part of each in the error colour), oldest minute first.
fn bars(label: &str, class: &str, values: impl Iterator<Item = (f64, f64, String)>) -> Markup {
    let step = WIDTH / MINUTES as f64;
    html! {
        svg class={ "chart " (class) } viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label) preserveAspectRatio="none" {
            title { (label) }
            line x1="0" y1=(HEIGHT - 0.5) x2=(WIDTH) y2=(HEIGHT - 0.5) class="axis" {}
            @for (i, (height, bad, tip)) in values.enumerate() {
                @let ago = MINUTES - 1 - i;
                @let h = (height * (HEIGHT - 2.0)).max(if height > 0.0 { 1.0 } else { 0.0 });
                @let x = format!("{:.2}", i as f64 * step + 0.5);
                @let w = format!("{:.2}", step - 1.0);
                @if h > 0.0 {
                    rect x=(x) y=(format!("{:.2}", HEIGHT - h)) width=(w) height=(format!("{h:.2}")) {
                        title { (tip) ", " (ago) " min ago" }
                    }
                    @if bad > 0.0 {
                        @let b = (bad * (HEIGHT - 2.0)).max(1.0);
                        rect.bad x=(x) y=(format!("{:.2}", HEIGHT - b)) width=(w) height=(format!("{b:.2}")) {}
                    }
                }
            }
        }
    }
}
