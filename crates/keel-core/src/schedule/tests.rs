//! Exact ticks on injected time, Europe/Berlin's daylight-saving days included (2026: spring
//! forward on 29 March at 02:00 CET → 03:00 CEST, fall back on 25 October at 03:00 CEST → 02:00
//! CET).

use super::*;

/// `"2026-03-29T01:00:00Z"` → epoch milliseconds.
fn utc(text: &str) -> Millis {
    let t = humantime::parse_rfc3339(text).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as Millis
}

fn berlin(pattern: &str) -> Cadence {
    Cadence::cron(pattern, "Europe/Berlin").unwrap()
}

/// The ticks strictly after `from`, while at or before `to`.
fn ticks(cadence: &Cadence, from: &str, to: &str) -> Vec<String> {
    let (mut t, end) = (utc(from), utc(to));
    let mut out = Vec::new();
    while let Some(next) = cadence.next_after(t).filter(|n| *n <= end) {
        out.push(crate::clock::rfc3339(next));
        t = next;
    }
    out
}

#[test]
fn a_daily_cron_fires_at_its_local_time() {
    let daily = berlin("0 3 * * *");
    // 03:00 in Berlin is 02:00Z in winter, 01:00Z in summer.
    assert_eq!(daily.next_after(utc("2026-01-10T12:00:00Z")), Some(utc("2026-01-11T02:00:00Z")));
    assert_eq!(daily.next_after(utc("2026-07-10T12:00:00Z")), Some(utc("2026-07-11T01:00:00Z")));
    // Strictly after: a tick at `t` itself is not next, and the next second still counts as past it.
    assert_eq!(daily.next_after(utc("2026-01-11T02:00:00Z")), Some(utc("2026-01-12T02:00:00Z")));
    assert_eq!(daily.next_after(utc("2026-01-11T02:00:00Z") + 500), Some(utc("2026-01-12T02:00:00Z")));
    assert_eq!(daily.last_at_or_before(utc("2026-01-11T02:00:00Z") + 500), Some(utc("2026-01-11T02:00:00Z")));
    let utc_daily = Cadence::cron("0 3 * * *", "UTC").unwrap();
    assert_eq!(utc_daily.next_after(utc("2026-01-10T12:00:00Z")), Some(utc("2026-01-11T03:00:00Z")));
}

#[test]
fn six_fields_put_seconds_first() {
    let every_ten_seconds = Cadence::cron("*/10 * * * * *", "UTC").unwrap();
    assert_eq!(every_ten_seconds.next_after(utc("2026-01-10T12:00:03Z")), Some(utc("2026-01-10T12:00:10Z")));
}

#[test]
fn spring_forward_fires_a_fixed_time_in_the_gap_right_after_it() {
    // 02:30 does not exist on 29 March: it fires at 03:00 CEST (01:00Z), once.
    assert_eq!(
        ticks(&berlin("30 2 * * *"), "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
        ["2026-03-28T01:30:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"]
    );
}

#[test]
fn spring_forward_skips_wildcard_ticks_in_the_gap() {
    // 01:30 CET, then the clock jumps from 02:00 to 03:00: 02:00 and 02:30 never happen.
    assert_eq!(
        ticks(&berlin("*/30 * * * *"), "2026-03-29T00:00:00Z", "2026-03-29T01:30:00Z"),
        ["2026-03-29T00:30:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-29T01:30:00.000Z"]
    );
}

#[test]
fn fall_back_fires_a_fixed_time_once() {
    // 02:30 happens twice on 25 October (00:30Z in CEST, 01:30Z in CET): it fires at the first.
    assert_eq!(
        ticks(&berlin("30 2 * * *"), "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
        ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]
    );
}

#[test]
fn fall_back_repeats_wildcard_ticks_over_the_doubled_hour() {
    assert_eq!(
        ticks(&berlin("*/30 2 * * *"), "2026-10-24T23:59:00Z", "2026-10-25T03:00:00Z"),
        [
            "2026-10-25T00:00:00.000Z",
            "2026-10-25T00:30:00.000Z",
            "2026-10-25T01:00:00.000Z",
            "2026-10-25T01:30:00.000Z"
        ]
    );
}

#[test]
fn every_counts_from_the_epoch() {
    let hourly = Cadence::every(3_600_000).unwrap();
    assert_eq!(hourly.next_after(utc("2026-01-10T12:34:56Z")), Some(utc("2026-01-10T13:00:00Z")));
    assert_eq!(hourly.next_after(utc("2026-01-10T13:00:00Z")), Some(utc("2026-01-10T14:00:00Z")));
    assert_eq!(hourly.last_at_or_before(utc("2026-01-10T13:00:00Z")), Some(utc("2026-01-10T13:00:00Z")));
    assert!(Cadence::every(999).is_none(), "less than a second");
    assert!(Cadence::every(1_500).is_none(), "not whole seconds");
    assert!(Cadence::every(0).is_none());
}

#[test]
fn bad_patterns_and_zones_say_which() {
    for pattern in ["0 3 * *", "0 0 3 * * * 2026", "61 * * * *", "0 3 * * MOO", ""] {
        assert!(matches!(Cadence::cron(pattern, "UTC"), Err(CadenceError::Pattern(_))), "{pattern:?}");
    }
    assert_eq!(
        Cadence::cron("0 3 * * *", "Europe/Atlantis").unwrap_err(),
        CadenceError::Zone("Europe/Atlantis".into())
    );
}

#[test]
fn an_on_time_tick_fires() {
    let every = Cadence::every(10_000).unwrap();
    let t = utc("2026-01-10T12:00:00Z");
    let due = due(&every, Missed::Skip, t, t + 10_400);
    assert_eq!(due, Due { fire: Some(t + 10_000), missed: 0, through: Some(t + 10_000), next: Some(t + 20_000) });
    // Asked again before the next tick: that tick is taken, nothing is due.
    let again = super::due(&every, Missed::Skip, t + 10_000, t + 10_900);
    assert_eq!(again, Due { fire: None, missed: 0, through: None, next: Some(t + 20_000) });
}

#[test]
fn after_a_short_downtime_the_current_tick_fires_and_the_rest_are_missed() {
    let every = Cadence::every(10_000).unwrap();
    let t = utc("2026-01-10T12:00:00Z");
    let due = due(&every, Missed::Skip, t, t + 100_500);
    assert_eq!(due, Due { fire: Some(t + 100_000), missed: 9, through: Some(t + 100_000), next: Some(t + 110_000) });
}

#[test]
fn a_late_tick_is_skipped_or_run_once_by_the_policy() {
    let daily = Cadence::cron("0 3 * * *", "UTC").unwrap();
    let last = utc("2026-01-10T03:00:00Z");
    let now = utc("2026-01-12T04:00:00Z"); // down for two days; today's tick is an hour late
    let skip = due(&daily, Missed::Skip, last, now);
    assert_eq!(
        skip,
        Due {
            fire: None,
            missed: 2,
            through: Some(utc("2026-01-12T03:00:00Z")),
            next: Some(utc("2026-01-13T03:00:00Z"))
        }
    );
    let once = due(&daily, Missed::RunOnce, last, now);
    assert_eq!(once.fire, Some(utc("2026-01-12T03:00:00Z")), "one catch-up run, the latest tick");
    assert_eq!(once.missed, 1);
    // Just within the tolerance, it is on time under either policy.
    let on_time = due(&daily, Missed::Skip, last, utc("2026-01-12T03:00:00Z") + ON_TIME_WITHIN_MS);
    assert_eq!((on_time.fire, on_time.missed), (Some(utc("2026-01-12T03:00:00Z")), 1));
}

#[test]
fn missed_ticks_of_a_cron_are_counted_across_a_daylight_saving_day() {
    // From before the spring-forward night to after it: 02:30 daily fires on each of 28, 29, 30.
    let cadence = berlin("30 2 * * *");
    let due = due(&cadence, Missed::Skip, utc("2026-03-27T12:00:00Z"), utc("2026-03-30T00:30:05Z"));
    assert_eq!((due.fire, due.missed), (Some(utc("2026-03-30T00:30:00Z")), 2));
}

#[test]
fn tick_keys_name_the_schedule_and_the_tick() {
    assert_eq!(tick_key("nightly-report", utc("2026-03-29T01:00:00Z")), "nightly-report/2026-03-29T01:00:00Z");
}

#[test]
fn a_list_with_an_empty_item_is_refused_at_once() {
    // Found by the cron fuzz target: croner took `, * * * *` and then spent over a minute of CPU
    // per look for a tick that never comes.
    for pattern in [", * * * *", "1,,2 * * * *", "0 5, * * *", "0 0 * * ,MON"] {
        let started = std::time::Instant::now();
        match Cadence::cron(pattern, "UTC") {
            Err(CadenceError::Pattern(why)) => assert!(why.contains("empty item"), "{pattern:?}: {why}"),
            other => panic!("{pattern:?} accepted: {other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{pattern:?} took {:?}", started.elapsed());
    }
    assert!(Cadence::cron("1,2 * * * *", "UTC").is_ok(), "a list without an empty item still reads");
}
