//! `[schedules.NAME]`: resolved with its defaults, and each mistake reported at its file:line.

use super::*;
use crate::schedule::{Cadence, Missed};

const TARGETS: &str = "[functions.build-report]\nurl = \"http://127.0.0.1:9001/\"\n[topics.ticks]\n";

#[test]
fn a_cron_schedule_and_an_every_schedule_are_resolved() {
    let text = format!(
        r#"{TARGETS}
[schedules.nightly-report]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
function = "build-report"
payload = {{ kind = "nightly", days = [1, 2], ratio = 0.5, from = 2026-01-01T00:00:00Z }}
missed = "run_once"

[schedules.heartbeat]
every = "10m"
topic = "ticks"
"#
    );
    let config = load_str("keel.toml", &text, &Overrides::default()).unwrap();
    let nightly = &config.schedules["nightly-report"];
    assert!(
        matches!(&nightly.cadence, Cadence::Cron { pattern, zone_name, .. } if pattern == "0 3 * * *" && zone_name == "Europe/Berlin")
    );
    assert_eq!(nightly.target, ScheduleTarget::Function("build-report".into()));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&nightly.payload).unwrap(),
        serde_json::json!({"kind": "nightly", "days": [1, 2], "ratio": 0.5, "from": "2026-01-01T00:00:00Z"})
    );
    assert_eq!(nightly.missed, Missed::RunOnce);
    let heartbeat = &config.schedules["heartbeat"];
    assert!(matches!(heartbeat.cadence, Cadence::Every { period_ms: 600_000 }));
    assert_eq!(heartbeat.target, ScheduleTarget::Topic("ticks".into()));
    assert_eq!(&heartbeat.payload[..], b"{}", "no payload: an empty object");
    assert_eq!(heartbeat.missed, Missed::Skip, "skip by default");
}

#[test]
fn each_mistake_is_named_where_it_was_written() {
    let text = format!(
        r#"{TARGETS}
[schedules.both]
cron = "0 3 * * *"
every = "1m"
function = "build-report"

[schedules.neither]
function = "build-report"

[schedules.bad-cron]
cron = "0 3 * *"
function = "build-report"

[schedules.bad-zone]
cron = "0 3 * * *"
timezone = "Mars/Olympus"
function = "build-report"

[schedules.bad-every]
every = "1500ms"
topic = "ticks"

[schedules.ghost-function]
every = "1m"
function = "nope"

[schedules.ghost-topic]
every = "1m"
topic = "nope"

[schedules.dated]
every = "1m"
topic = "ticks"
payload = {{ ratio = nan }}

[schedules.late]
every = "1m"
topic = "ticks"
missed = "always"
"#
    );
    assert_eq!(
        errors(&text),
        [
            r#"keel.toml:14:8: schedules.bad-cron.cron: invalid cron pattern "0 3 * *": expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), got 4"#,
            r#"keel.toml:23:9: schedules.bad-every.every: expected a whole number of seconds, at least 1s, like "30s", "10m" or "1h" (got "1500ms")"#,
            r#"keel.toml:19:12: schedules.bad-zone.timezone: unknown time zone "Mars/Olympus": expected an IANA name like "Europe/Berlin" or "UTC""#,
            "keel.toml:7:1: schedules.both.every: set `cron` or `every`, not both",
            "keel.toml:37:1: schedules.dated.payload: NaN has no JSON form: use a finite number",
            r#"keel.toml:28:12: schedules.ghost-function.function: unknown function "nope" (configured: build-report)"#,
            r#"keel.toml:32:9: schedules.ghost-topic.topic: unknown topic "nope": declare it with [topics."nope"] (declared: ticks)"#,
            r#"keel.toml:42:10: schedules.late.missed: must be "skip" or "run_once" (got "always")"#,
            r#"keel.toml:10:12: schedules.neither: missing `cron` (like "0 3 * * *") or `every` (like "10m")"#,
        ]
    );
}

#[test]
fn a_bad_pattern_and_a_bad_zone_are_both_reported() {
    let text = format!("{TARGETS}\n[schedules.x]\ncron = \"0 3 * *\"\ntimezone = \"Mars/Base\"\ntopic = \"ticks\"\n");
    assert_eq!(
        errors(&text),
        [
            r#"keel.toml:6:8: schedules.x.cron: invalid cron pattern "0 3 * *": expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), got 4"#,
            r#"keel.toml:7:12: schedules.x.timezone: unknown time zone "Mars/Base": expected an IANA name like "Europe/Berlin" or "UTC""#,
        ]
    );
}

#[test]
fn a_timezone_belongs_to_cron_only() {
    let text = format!("{TARGETS}\n[schedules.tick]\nevery = \"1m\"\ntimezone = \"UTC\"\ntopic = \"ticks\"\n");
    assert_eq!(
        errors(&text),
        ["keel.toml:7:1: schedules.tick.timezone: `timezone` applies to `cron` only: `every` counts from the Unix epoch"]
    );
}

#[test]
fn a_schedule_needs_one_target() {
    let text = format!("{TARGETS}\n[schedules.a]\nevery = \"1m\"\n[schedules.b]\nevery = \"1m\"\nfunction = \"build-report\"\ntopic = \"ticks\"\n");
    assert_eq!(
        errors(&text),
        [
            "keel.toml:5:12: schedules.a: missing `function` or `topic`: what each tick invokes or publishes to",
            "keel.toml:10:1: schedules.b.topic: set `function` or `topic`, not both",
        ]
    );
}
