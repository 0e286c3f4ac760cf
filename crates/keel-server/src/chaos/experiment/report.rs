//! An experiment's report: the verdict, each probe's figure per window, the series over time;
//! written as `report.md`, `report.json` and the charts (SVG) into a folder.

use std::path::Path;

use serde::Serialize;

use super::probe::{percentile, Outcome};
use super::spec::{Experiment, Load};
use super::{charts, DlqSample, FaultWindow, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every probe held in every window.
    Held,
    /// A probe did not hold (exit 1).
    NotHeld,
    /// The experiment could not be carried out as written (exit 2).
    Broken,
}

impl Verdict {
    /// `keel chaos run`'s exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Held => 0,
            Verdict::NotHeld => 1,
            Verdict::Broken => 2,
        }
    }
}

/// One probe in one window.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub probe: String,
    /// `before`, `during`, `after` or `end`.
    pub window: String,
    pub held: bool,
    pub value: String,
    pub expected: String,
}

impl ProbeResult {
    pub(super) fn new(probe: &str, window: &str, outcome: Outcome, expected: String) -> Self {
        let (held, value) = match outcome {
            Outcome::Held(v) => (true, v),
            Outcome::Broken(v) => (false, v),
        };
        ProbeResult { probe: probe.to_owned(), window: window.to_owned(), held, value, expected }
    }
}

/// One second of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub p99_ms: Option<f64>,
    pub dlq: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    pub run_id: String,
    pub verdict: Verdict,
    /// Whether the steady state held before the faults (when not, the method was skipped).
    pub held_before: bool,
    pub probes: Vec<ProbeResult>,
    pub faults: Vec<FaultWindow>,
    pub loads: Vec<LoadSummary>,
    pub seconds: Vec<Second>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub name: String,
    pub target: String,
    pub sent: u64,
    pub ok: u64,
    pub p99_ms: Option<f64>,
}

/// What the runner hands over.
pub(super) struct Parts {
    pub run_id: String,
    pub loads: Vec<Load>,
    pub samples: Vec<Sample>,
    pub dlq: Vec<DlqSample>,
    pub offset: f64,
    pub windows: Vec<FaultWindow>,
    pub checks: Vec<ProbeResult>,
    pub notes: Vec<String>,
    pub held_before: bool,
    pub broken: bool,
    /// Seconds the load ran.
    pub duration: f64,
}

impl Report {
    pub(super) fn new(experiment: &Experiment, parts: Parts) -> Self {
        let verdict = if parts.broken {
            Verdict::Broken
        } else if parts.held_before && parts.checks.iter().all(|c| c.held) {
            Verdict::Held
        } else {
            Verdict::NotHeld
        };
        let loads = parts
            .loads
            .iter()
            .enumerate()
            .map(|(i, load)| {
                let mine: Vec<&Sample> = parts.samples.iter().filter(|s| s.load == i).collect();
                LoadSummary {
                    name: load.name.clone(),
                    target: load.target.to_string(),
                    sent: mine.len() as u64,
                    ok: mine.iter().filter(|s| s.ok()).count() as u64,
                    p99_ms: percentile(
                        mine.iter().filter(|s| s.status.is_some()).map(|s| s.latency_ms).collect(),
                        0.99,
                    ),
                }
            })
            .collect();
        let setup = experiment.setup.len();
        let seconds = (0..parts.duration.ceil().max(1.0) as u64)
            .map(|t| {
                let in_second: Vec<&Sample> = parts
                    .samples
                    .iter()
                    .filter(|s| s.load >= setup && ((s.at - parts.offset).floor() as i64) == t as i64)
                    .collect();
                let ok = in_second.iter().filter(|s| s.ok()).count() as u64;
                let answered = in_second.iter().filter(|s| s.status.is_some()).map(|s| s.latency_ms).collect();
                let dlq = parts.dlq.iter().rev().find(|d| d.at < (t + 1) as f64).map(|d| d.total);
                Second {
                    t,
                    sent: in_second.len() as u64,
                    ok,
                    failed: in_second.len() as u64 - ok,
                    p99_ms: percentile(answered, 0.99),
                    dlq,
                }
            })
            .collect();
        Report {
            title: experiment.title.clone(),
            run_id: parts.run_id,
            verdict,
            held_before: parts.held_before,
            probes: parts.checks,
            faults: parts.windows,
            loads,
            seconds,
            notes: parts.notes,
        }
    }

    /// A run that stopped before its load (its setup failed).
    pub(super) fn aborted(experiment: &Experiment, run_id: &str, notes: Vec<String>, reason: &str) -> Self {
        Report {
            title: experiment.title.clone(),
            run_id: run_id.to_owned(),
            verdict: Verdict::NotHeld,
            held_before: false,
            probes: vec![ProbeResult {
                probe: "setup".into(),
                window: "before".into(),
                held: false,
                value: reason.into(),
                expected: "every setup request answered 2xx".into(),
            }],
            faults: Vec::new(),
            loads: Vec::new(),
            seconds: Vec::new(),
            notes,
        }
    }

    /// The probes that did not hold, one line each.
    pub fn broken_probes(&self) -> Vec<String> {
        self.probes
            .iter()
            .filter(|p| !p.held)
            .map(|p| format!("{} ({}): {}, expected {}", p.probe, p.window, p.value, p.expected))
            .collect()
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Held => "HELD",
            Verdict::NotHeld => "NOT HELD",
            Verdict::Broken => "BROKEN",
        };
        let mut out = format!("{verdict}: {}\n", self.title);
        for p in &self.probes {
            let mark = if p.held { "ok  " } else { "FAIL" };
            out.push_str(&format!("  {mark} {:<6} {}: {} (expected {})\n", p.window, p.probe, p.value, p.expected));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }

    /// Writes `report.md`, `report.json` and the charts into `dir` (made if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        let charts = charts::draw(self, dir)?;
        std::fs::write(dir.join("report.md"), self.markdown(&charts))?;
        Ok(())
    }

    fn markdown(&self, charts: &[(String, String)]) -> String {
        let verdict = match self.verdict {
            Verdict::Held => "**held**",
            Verdict::NotHeld => "**not held**",
            Verdict::Broken => "**broken** (the experiment could not be carried out)",
        };
        let mut md = format!("# {}\n\nRun `{}`. Verdict: {verdict}.\n\n", self.title, self.run_id);
        if !self.held_before {
            md.push_str("The steady state did not hold before any fault, so the method was not run.\n\n");
        }
        md.push_str("## Hypothesis\n\n| probe | window | result | value | expected |\n|---|---|---|---|---|\n");
        for p in &self.probes {
            let result = if p.held { "held" } else { "**broken**" };
            md.push_str(&format!("| {} | {} | {result} | {} | {} |\n", p.probe, p.window, p.value, p.expected));
        }
        if !self.faults.is_empty() {
            md.push_str("\n## Method\n\n| from | to | what |\n|---|---|---|\n");
            for f in &self.faults {
                md.push_str(&format!("| {:.1} s | {:.1} s | {} |\n", f.start, f.end, f.label));
            }
        }
        if !self.loads.is_empty() {
            md.push_str("\n## Load\n\n| load | target | sent | 2xx | p99 |\n|---|---|---|---|---|\n");
            for l in &self.loads {
                let p99 = l.p99_ms.map_or("–".to_owned(), |p| format!("{p:.1} ms"));
                md.push_str(&format!("| {} | {} | {} | {} | {p99} |\n", l.name, l.target, l.sent, l.ok));
            }
        }
        if !charts.is_empty() {
            md.push_str("\n## Over time\n\nShaded: the fault windows.\n\n");
            for (title, file) in charts {
                md.push_str(&format!("![{title}]({file})\n\n"));
            }
        }
        if !self.notes.is_empty() {
            md.push_str("## Notes\n\n");
            for note in &self.notes {
                md.push_str(&format!("- {note}\n"));
            }
        }
        md
    }
}
