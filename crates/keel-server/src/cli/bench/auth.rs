//! `--auth`: what access control costs. A second server, the first one's twin but with
//! `[auth] mode = "keys"` and an admin key made in its store before it starts, runs `sync` and
//! `async` again with `authorization: Bearer KEY` on every request. Each case is compared with
//! the same case of the auth-off run of this same bench (issue 17: within 5%).

use super::noop::NoopFunction;
use super::report::Scenario;
use super::server::BenchServer;
use super::throughput::{self, Direct};
use super::{BenchError, Settings};

/// The latency figures compared with auth off (`added_…`: on minus off, in ms).
const COMPARED: [&str; 4] = ["p50_ms", "p99_ms", "submit_p50_ms", "submit_p99_ms"];

/// Runs `sync+auth` and `async+auth` for whichever of `sync` and `async` ran in `off`, on a server
/// configured as the auth-off one was (the same `holder_url` for its config).
pub(crate) async fn run(
    settings: &Settings,
    direct: &Direct,
    noop: &NoopFunction,
    holder_url: Option<&str>,
    off: &[Scenario],
) -> Result<Vec<Scenario>, BenchError> {
    let ran = |name: &str| off.iter().find(|s| s.name == name && s.skipped.is_none());
    let (sync_off, async_off) = (ran("sync"), ran("async"));
    if sync_off.is_none() && async_off.is_none() {
        return Ok(Vec::new());
    }
    let mut server = BenchServer::new(&noop.url(), holder_url, settings.concurrency * 2, settings.fsync)?;
    let key = server.enable_auth().await?;
    server.start().await?;
    let settings = Settings { api_key: Some(key), ..settings.clone() };
    let base = server.base_url();
    let mut scenarios = Vec::new();
    if let Some(off) = sync_off {
        let on = throughput::sync(&settings, direct, &base, Some(&server)).await?;
        scenarios.push(compared("sync+auth", on, off));
    }
    if let Some(off) = async_off {
        let on = throughput::asynchronous(&settings, direct, Some(noop), &base, Some(&server)).await?;
        scenarios.push(compared("async+auth", on, off));
    }
    server.kill().await?;
    Ok(scenarios)
}

/// With --url there is one server, whose auth mode the bench does not choose: no side-by-side.
pub(crate) fn skipped(off: &[Scenario], key_sent: bool) -> Vec<Scenario> {
    let sent =
        if key_sent { "the key (KEEL_API_KEY / --api-key) was sent" } else { "no KEEL_API_KEY / --api-key given" };
    let why = format!("the auth on/off side-by-side needs two servers keel bench starts itself (no --url); {sent}");
    [("sync", "sync+auth"), ("async", "async+auth")]
        .into_iter()
        .filter(|(name, _)| off.iter().any(|s| s.name == *name))
        .map(|(_, auth)| Scenario::skipped(auth, why.clone()))
        .collect()
}

/// `on` renamed `name`, each case with `vs_auth_off` (its throughput over the same case of `off`)
/// and `added_p50_ms` etc. (its latency minus that case's).
fn compared(name: &'static str, on: Scenario, off: &Scenario) -> Scenario {
    let cases = on
        .cases
        .into_iter()
        .map(|mut case| {
            let Some(before) = off.cases.iter().find(|c| c.case == case.case) else { return case };
            if let (Some(on), Some(off)) = (case.get("per_s"), before.get("per_s")) {
                case = case.with("vs_auth_off", on / off);
            }
            for figure in COMPARED {
                if let (Some(on), Some(off)) = (case.get(figure), before.get(figure)) {
                    case = case.with(format!("added_{figure}"), on - off);
                }
            }
            case
        })
        .collect();
    Scenario { name, cases, skipped: None }
}

/// The smallest `vs_auth_off` of any auth case, when one ran: the figure issue 17's target reads.
pub(crate) fn worst_ratio(scenarios: &[Scenario]) -> Option<f64> {
    scenarios
        .iter()
        .filter(|s| s.name.ends_with("+auth"))
        .flat_map(|s| s.cases.iter().filter_map(|c| c.get("vs_auth_off")))
        .reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::report::Case;

    #[test]
    fn each_case_is_compared_with_the_same_case_with_auth_off() {
        let off = Scenario {
            name: "sync",
            cases: vec![
                Case::new("c=1", None).with("per_s", 1000.0).with("p50_ms", 1.0).with("p99_ms", 2.0),
                Case::new("c=32", None).with("per_s", 8000.0).with("p50_ms", 4.0).with("p99_ms", 9.0),
            ],
            skipped: None,
        };
        let on = Scenario {
            name: "sync",
            cases: vec![
                Case::new("c=1", None).with("per_s", 950.0).with("p50_ms", 1.5).with("p99_ms", 2.0),
                Case::new("c=32", None).with("per_s", 8800.0).with("p50_ms", 3.0).with("p99_ms", 9.5),
            ],
            skipped: None,
        };
        let scenario = compared("sync+auth", on, &off);
        assert_eq!(scenario.name, "sync+auth");
        assert_eq!(scenario.figure("c=1", "vs_auth_off"), Some(0.95));
        assert_eq!(scenario.figure("c=1", "added_p50_ms"), Some(0.5));
        assert_eq!(scenario.figure("c=32", "vs_auth_off"), Some(1.1));
        assert_eq!(scenario.figure("c=32", "added_p50_ms"), Some(-1.0));
        assert_eq!(scenario.figure("c=32", "added_p99_ms"), Some(0.5));
        assert_eq!(scenario.figure("c=32", "added_submit_p50_ms"), None);
        assert_eq!(worst_ratio(&[off, scenario]), Some(0.95));
    }
}
