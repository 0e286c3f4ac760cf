//! `keel bench --quick --json` end to end, on the real binary: every scenario is reported, with
//! positive figures or a reason it was skipped. Speed is never asserted here: the benchmark itself
//! is where performance is checked.

use std::process::Command;

use serde_json::Value;

/// Figures that may rightly be zero or negative: latency overheads (a percentile through Keel can
/// tie the direct one) and re-runs after the crash (often none).
fn may_be_non_positive(name: &str) -> bool {
    name.starts_with("overhead_") || name == "reruns"
}

/// CPU time per request (`bench_cpu_us`, `server_cpu_us`). The kernel counts CPU time in clock
/// ticks (10 ms at the usual 100 Hz), so a short run, such as the 100 requests of `--quick` at
/// c=1, can rightly read 0: each such figure is only required to be a count, never negative.
fn is_cpu_figure(name: &str) -> bool {
    name.ends_with("_cpu_us")
}

#[test]
fn quick_json_reports_every_scenario() {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["bench", "--quick", "--json"])
        .env_remove("KEEL_URL")
        .output()
        .expect("running keel bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "keel bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");

    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(report["machine"]["fsync"], Value::Bool(true), "durability is on by default");
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["direct", "sync", "egress", "async", "async-batch", "replay", "fanout", "depth", "recovery", "memory"]
    );

    // The CPU meter itself must work: over the whole run, the bench's own process spends well
    // over a tick, so at least one of its figures is positive.
    let mut cpu_total = 0.0;
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        if let Some(why) = scenario["skipped"].as_str() {
            // Only the scenarios of features still landing may be skipped.
            assert!(matches!(name, "replay" | "fanout"), "{name} skipped: {why}");
            continue;
        }
        let cases = scenario["cases"].as_array().unwrap();
        assert!(!cases.is_empty(), "{name} has no case");
        for case in cases {
            let figures = case["figures"].as_object().unwrap();
            assert!(!figures.is_empty(), "{name} {} has no figure", case["case"]);
            for (figure, value) in figures {
                let value = value.as_f64().unwrap_or_else(|| panic!("{name}.{figure} is not a number"));
                if is_cpu_figure(figure) {
                    assert!(value >= 0.0, "{name} {}: {figure} = {value}", case["case"]);
                    cpu_total += value;
                    continue;
                }
                assert!(value > 0.0 || may_be_non_positive(figure), "{name} {}: {figure} = {value}", case["case"]);
            }
            if let Some(ratio) = case["ratio_to_direct"].as_f64() {
                assert!(ratio > 0.0, "{name}: ratio {ratio}");
            }
        }
    }
    assert!(cpu_total > 0.0, "no CPU time was measured in any scenario");
    let depths = scenarios.iter().find(|s| s["name"] == "depth").unwrap()["cases"].as_array().unwrap().len();
    assert_eq!(depths, 2, "--quick runs two depths");
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 9, "every target of issues 8, 16 and 24 is checked");
    let batch = scenarios.iter().find(|s| s["name"] == "async-batch").unwrap()["cases"].as_array().unwrap();
    let per_batch = batch[0]["figures"]["items_per_batch"].as_f64().unwrap();
    assert!((1.0..=100.0).contains(&per_batch), "at most max_size items a batch: {per_batch}");
    let egress = scenarios.iter().find(|s| s["name"] == "egress").unwrap()["cases"].as_array().unwrap();
    let cases: Vec<&str> = egress.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(cases, ["c=1", "c=8"], "egress at concurrency 1 and C");
    assert!(egress.iter().all(|c| c["figures"]["overhead_p50_ms"].is_number()), "egress overhead reported");
}

/// `--auth`: `sync` and `async` run again on a server with `[auth] mode = "keys"`, every request
/// with the key (the bench fails on any unexpected status, so a missing or wrong key fails it),
/// each case compared with the same case with auth off.
#[test]
fn quick_auth_runs_sync_and_async_again_with_a_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["bench", "--quick", "--json", "--auth", "--scenarios", "direct,sync,async"])
        .env_remove("KEEL_URL")
        .env_remove("KEEL_API_KEY")
        .output()
        .expect("running keel bench --auth");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "keel bench --auth failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["direct", "sync", "async", "sync+auth", "async+auth"]);
    for scenario in &scenarios[3..] {
        let (name, cases) = (scenario["name"].as_str().unwrap(), scenario["cases"].as_array().unwrap());
        let labels: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
        assert_eq!(labels, if name == "sync+auth" { vec!["c=1", "c=8"] } else { vec!["c=8"] }, "{name}");
        for case in cases {
            let figures = &case["figures"];
            assert!(figures["vs_auth_off"].as_f64().unwrap() > 0.0, "{name} {}: {figures}", case["case"]);
            assert!(figures["added_p50_ms"].is_number() || figures["added_submit_p50_ms"].is_number(), "{figures}");
            assert!(figures["server_cpu_us"].as_f64().unwrap() >= 0.0, "{name}: CPU per request reported");
        }
    }
    let targets = report["targets"].as_array().unwrap();
    let auth = targets.iter().find(|t| t["target"].as_str().unwrap().starts_with("with auth")).expect("issue 17's");
    assert!(auth["met"].is_boolean(), "{auth}");
}
