//! What `keel bench` reports: the machine, the settings, each scenario's cases with their figures
//! and ratio to `direct`, and the targets checked against them — as a table or as JSON.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::cli::table::Table;

/// The whole report; `--json` prints it as one object.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) settings: serde_json::Value,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) targets: Vec<TargetCheck>,
}

/// Facts about where the figures come from.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu: String,
    pub(crate) memory_mb: u64,
    pub(crate) store: String,
    /// `true`: every group commit is fsync'd (the default); `null` for a server bench did not start.
    pub(crate) fsync: Option<bool>,
}

impl Machine {
    pub(crate) fn probe(store: String, fsync: Option<bool>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu =
            cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb =
            meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|l| l.split_whitespace().next());
        Machine {
            cores: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            cpu: cpu.unwrap_or("unknown").to_owned(),
            memory_mb: memory_kb.and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) / 1024,
            store,
            fsync,
        }
    }
}

/// One scenario: its cases, or why it was skipped.
#[derive(Debug, Serialize)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) cases: Vec<Case>,
    pub(crate) skipped: Option<String>,
}

impl Scenario {
    pub(crate) fn skipped(name: &'static str, why: impl Into<String>) -> Self {
        Scenario { name, cases: Vec::new(), skipped: Some(why.into()) }
    }

    pub(crate) fn figure(&self, case: &str, figure: &str) -> Option<f64> {
        self.cases.iter().find(|c| c.case == case)?.get(figure)
    }
}

/// One measured case of a scenario, e.g. `sync` at `c=32`.
#[derive(Debug, Serialize)]
pub(crate) struct Case {
    pub(crate) case: String,
    /// This case's throughput over `direct`'s at the same concurrency, where that means something.
    pub(crate) ratio_to_direct: Option<f64>,
    pub(crate) figures: Figures,
}

impl Case {
    pub(crate) fn new(case: impl Into<String>, ratio_to_direct: Option<f64>) -> Self {
        Case { case: case.into(), ratio_to_direct, figures: Figures::default() }
    }

    pub(crate) fn with(mut self, name: impl Into<String>, value: f64) -> Self {
        self.figures.0.push((name.into(), value));
        self
    }

    pub(crate) fn get(&self, figure: &str) -> Option<f64> {
        self.figures.0.iter().find(|(n, _)| n == figure).map(|(_, v)| *v)
    }
}

/// Named figures, units in the name (`per_s`, `_ms`, `_mb`), kept in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Figures(Vec<(String, f64)>);

impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, &round(*value))?;
        }
        map.end()
    }
}

/// One of the targets (issue 8's, issue 16's for `egress`, issue 17's with `--auth`), and whether this run met it.
#[derive(Debug, Serialize)]
pub(crate) struct TargetCheck {
    pub(crate) target: &'static str,
    pub(crate) value: Option<f64>,
    /// `null` when the scenario it needs did not run.
    pub(crate) met: Option<bool>,
}

/// A target's wording, the figure it reads (when its scenario ran) and the test of that figure.
type Check = (&'static str, Option<f64>, fn(f64) -> bool);

/// Checks the targets against whichever scenarios ran.
pub(crate) fn check_targets(scenarios: &[Scenario], concurrency: usize) -> Vec<TargetCheck> {
    let find = |name: &str| scenarios.iter().find(|s| s.name == name && s.skipped.is_none());
    let ratio = |name: &str, case: &str| find(name)?.cases.iter().find(|c| c.case == case)?.ratio_to_direct;
    let c = format!("c={concurrency}");
    let depth = find("depth").and_then(|s| s.cases.last()?.get("vs_smallest"));
    let batch = find("async-batch").and_then(|s| s.cases.first()?.get("per_s"));
    let checks: [Check; 9] = [
        ("async end-to-end >= 0.25x direct", ratio("async", &c), |v| v >= 0.25),
        ("sync throughput >= 0.35x direct", ratio("sync", &c), |v| v >= 0.35),
        ("sync p50 overhead at c=1 <= 0.25 ms", find("sync").and_then(|s| s.figure("c=1", "overhead_p50_ms")), |v| {
            v <= 0.25
        }),
        (
            "egress p50 overhead at c=1 <= 0.1 ms",
            find("egress").and_then(|s| s.figure("c=1", "overhead_p50_ms")),
            |v| v <= 0.1,
        ),
        ("replay >= 0.5x direct", ratio("replay", &c), |v| v >= 0.5),
        ("depth 1M within 20% of 1k", depth, |v| v >= 0.8),
        (
            "recovery to first completion <= 1 s",
            find("recovery").and_then(|s| s.figure("restart", "first_completion_ms")),
            |v| v <= 1000.0,
        ),
        ("RSS <= 100 MB with 1M queued", find("memory").and_then(|s| s.figure("queued", "rss_mb")), |v| v <= 100.0),
        // Issue 24's.
        ("async-batch (batch delivery, bulk admission) >= 50,000/s", batch, |v| v >= 50_000.0),
    ];
    let mut checks: Vec<Check> = checks.into();
    // Issue 17's, only with --auth (whose scenarios are the only ones with `vs_auth_off`).
    if let Some(worst) = super::auth::worst_ratio(scenarios) {
        checks.push(("with auth, sync and async throughput within 5% of auth off", Some(worst), |v| v >= 0.95));
    }
    checks
        .into_iter()
        .map(|(target, value, ok)| TargetCheck { target, value: value.map(round), met: value.map(ok) })
        .collect()
}

/// Three significant digits are all a benchmark on a shared machine can claim.
fn round(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let digits = 3 - value.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The human form: machine line, one row per case, then the targets.
pub(crate) fn render(report: &Report) -> String {
    let m = &report.machine;
    let durability = match m.fsync {
        Some(true) => "fsync on (every group commit)",
        Some(false) => "fsync OFF (--no-fsync)",
        None => "as the server is configured",
    };
    let mut out = format!(
        "machine: {} cores ({}), {} MB memory; store: {}; durability: {durability}\n\n",
        m.cores, m.cpu, m.memory_mb, m.store
    );
    let mut table = Table::with_header(["SCENARIO", "CASE", "x DIRECT", "FIGURES"]);
    for scenario in &report.scenarios {
        if let Some(why) = &scenario.skipped {
            table.row([scenario.name, "-", "-", &format!("skipped: {why}")]);
        }
        for case in &scenario.cases {
            let ratio = case.ratio_to_direct.map(|r| format!("{:.2}", round(r))).unwrap_or_else(|| "-".into());
            let figures: Vec<String> = case.figures.0.iter().map(|(n, v)| format!("{n}={}", round(*v))).collect();
            table.row([scenario.name.to_owned(), case.case.clone(), ratio, figures.join(" ")]);
        }
    }
    out.push_str(&table.to_string());
    out.push_str("\ntargets:\n");
    for check in &report.targets {
        let verdict = match check.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not run",
        };
        let value = check.value.map(|v| format!(" ({v})")).unwrap_or_default();
        out.push_str(&format!("  {verdict:<7}  {}{value}\n", check.target));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_round_to_three_significant_digits() {
        assert_eq!(round(12_345.6), 12_300.0);
        assert_eq!(round(0.012_345), 0.0123);
        assert_eq!(round(1.0), 1.0);
        assert_eq!(round(0.0), 0.0);
    }

    #[test]
    fn targets_are_met_not_met_or_not_run() {
        let sync = Scenario {
            name: "sync",
            cases: vec![
                Case::new("c=1", Some(0.5)).with("overhead_p50_ms", 0.1),
                Case::new("c=8", Some(0.2)).with("per_s", 100.0),
            ],
            skipped: None,
        };
        let batch = Scenario {
            name: "async-batch",
            cases: vec![Case::new("x100 c=8", Some(0.5)).with("per_s", 50_000.0)],
            skipped: None,
        };
        let checks = check_targets(&[sync, Scenario::skipped("replay", "no idempotency"), batch], 8);
        let met: Vec<(&str, Option<bool>)> = checks.iter().map(|c| (c.target, c.met)).collect();
        assert_eq!(met[1], ("sync throughput >= 0.35x direct", Some(false)));
        assert_eq!(met[2], ("sync p50 overhead at c=1 <= 0.25 ms", Some(true)));
        assert_eq!(met[3], ("egress p50 overhead at c=1 <= 0.1 ms", None));
        assert_eq!(met[4], ("replay >= 0.5x direct", None));
        assert_eq!(met[8], ("async-batch (batch delivery, bulk admission) >= 50,000/s", Some(true)));
    }
}
