//! The report's charts, as SVG files: throughput, p99 latency, errors and the DLQ's size per
//! second of the load, each with the fault windows shaded.
//!
//! Written by hand rather than with `plotters`: without a font engine (font-kit and fontconfig,
//! or a TTF embedded in the binary) plotters lays out no text at all — no title, no axis labels —
//! while an SVG `<text>` needs no glyphs: the viewer draws it. A line chart with axes is little.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{Report, Second};

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 44.0;

/// One line: its name, colour, and a value per second (absent seconds are gaps).
struct Series {
    name: &'static str,
    colour: &'static str,
    values: Vec<Option<f64>>,
}

/// Draws every chart into `dir`; (title, file name) of each.
pub(super) fn draw(report: &Report, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if report.seconds.is_empty() {
        return Ok(Vec::new());
    }
    let per_second = |f: fn(&Second) -> Option<f64>| report.seconds.iter().map(f).collect::<Vec<_>>();
    let charts = [
        (
            "Throughput",
            "throughput.svg",
            "requests / s",
            vec![
                Series { name: "sent", colour: "#1f77b4", values: per_second(|s| Some(s.sent as f64)) },
                Series { name: "2xx", colour: "#2ca02c", values: per_second(|s| Some(s.ok as f64)) },
            ],
        ),
        (
            "p99 latency",
            "latency.svg",
            "ms",
            vec![Series { name: "p99", colour: "#9467bd", values: per_second(|s| s.p99_ms) }],
        ),
        (
            "Errors",
            "errors.svg",
            "not 2xx / s",
            vec![Series { name: "not 2xx", colour: "#d62728", values: per_second(|s| Some(s.failed as f64)) }],
        ),
        (
            "DLQ size",
            "dlq.svg",
            "dead invocations",
            vec![Series { name: "DLQ", colour: "#d62728", values: per_second(|s| s.dlq.map(|d| d as f64)) }],
        ),
    ];
    let mut drawn = Vec::new();
    for (title, file, unit, series) in charts {
        std::fs::write(dir.join(file), svg(report, title, unit, &series))?;
        drawn.push((title.to_owned(), file.to_owned()));
    }
    Ok(drawn)
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|step| *step >= raw).unwrap_or(magnitude * 10.0)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn svg(report: &Report, title: &str, unit: &str, series: &[Series]) -> String {
    let seconds = report.seconds.len() as f64;
    let top = series.iter().flat_map(|s| s.values.iter().flatten()).fold(0.0, |a: f64, b| a.max(*b));
    let step = tick_step(if top > 0.0 { top } else { 1.0 });
    let y_max = (top / step).ceil().max(1.0) * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / seconds * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(out, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = write!(out, r#"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>"#, escape(title));
    // Fault windows, under everything else.
    for window in &report.faults {
        let (x0, x1) = (x(window.start.max(0.0)), x(window.end.min(seconds)));
        if x1 > x0 {
            let _ = write!(
                out,
                r##"<rect class="fault" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#ff7f0e" fill-opacity="0.2"><title>{}</title></rect>"##,
                x1 - x0,
                escape(&window.label)
            );
        }
    }
    // Axes, grid and ticks.
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            trim(v)
        );
        v += step;
    }
    let x_step = tick_step(seconds);
    let mut t = 0.0;
    while t <= seconds + 1e-9 {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            TOP + plot_h + 16.0,
            trim(t)
        );
        t += x_step;
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="#333"/><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds into the load</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0
    );
    let _ = write!(
        out,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(unit)
    );
    // The lines: each second's value at the middle of its second; a missing value breaks the line.
    for s in series {
        let mut path = String::new();
        let mut pen_down = false;
        for (i, value) in s.values.iter().enumerate() {
            match value {
                Some(value) => {
                    let _ =
                        write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(i as f64 + 0.5), y(*value));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            out,
            r#"<path class="series" d="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></path>"#,
            path.trim_end(),
            s.colour,
            s.name
        );
    }
    // The legend: the series, then the fault shading when there is any.
    let mut lx = WIDTH - RIGHT - 10.0;
    let mut items: Vec<(String, String)> = series.iter().map(|s| (s.name.to_owned(), s.colour.to_owned())).collect();
    if !report.faults.is_empty() {
        items.push(("fault".into(), "fault".into()));
    }
    for (name, colour) in items.iter().rev() {
        let width = 28.0 + name.chars().count() as f64 * 7.0;
        lx -= width;
        let swatch = if colour == "fault" {
            format!(r##"<rect x="{lx:.1}" y="14" width="16" height="10" fill="#ff7f0e" fill-opacity="0.2"/>"##)
        } else {
            format!(r#"<line x1="{lx:.1}" x2="{:.1}" y1="19" y2="19" stroke="{colour}" stroke-width="2"/>"#, lx + 16.0)
        };
        let _ = write!(out, r#"{swatch}<text x="{:.1}" y="23">{}</text>"#, lx + 20.0, escape(name));
    }
    out.push_str("</svg>\n");
    out
}

/// A tick's number without a needless fraction.
fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::{Report, Second, Verdict};
    use super::super::FaultWindow;

    #[test]
    fn every_chart_is_an_svg_with_the_fault_window_shaded_where_it_was() {
        let seconds = (0..20)
            .map(|t| Second {
                t,
                sent: 10,
                ok: if (5..10).contains(&t) { 6 } else { 10 },
                failed: if (5..10).contains(&t) { 4 } else { 0 },
                p99_ms: Some(if (5..10).contains(&t) { 300.0 } else { 20.0 }),
                dlq: Some(if t >= 7 { 3 } else { 0 }),
            })
            .collect();
        let report = Report {
            title: "t".into(),
            run_id: "r".into(),
            verdict: Verdict::Held,
            held_before: true,
            probes: Vec::new(),
            faults: vec![FaultWindow { label: "error 30% on function:f".into(), start: 5.0, end: 10.0 }],
            loads: Vec::new(),
            seconds,
            notes: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let drawn = super::draw(&report, dir.path()).unwrap();
        let files: Vec<&str> = drawn.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(files, ["throughput.svg", "latency.svg", "errors.svg", "dlq.svg"]);
        for (title, file) in &drawn {
            let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{file}");
            assert!(svg.contains(&format!(">{title}</text>")), "{file}: no title");
            // The window from 5 s to 10 s of 20 s: a quarter of the plot's 716 px, from x = 243.
            assert!(
                svg.contains(r#"<rect class="fault" x="243.0" y="40" width="179.0""#),
                "{file}: the fault window is not shaded where it was"
            );
            assert!(svg.contains(">fault</text>"), "{file}: no legend for the window");
            assert!(svg.contains("seconds into the load"), "{file}");
        }
        let errors = std::fs::read_to_string(dir.path().join("errors.svg")).unwrap();
        // 4 failures a second during the window, none outside: the line rises inside it only.
        assert!(errors.contains("L243.0,") || errors.contains("L260.9,"), "{errors}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(super::tick_step(47.0), 10.0);
        assert_eq!(super::tick_step(4.0), 1.0);
        assert_eq!(super::tick_step(900.0), 200.0);
    }
}
