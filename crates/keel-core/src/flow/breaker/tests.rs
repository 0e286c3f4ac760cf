//! Every transition of the breaker, at explicit instants.

use std::time::Duration;

use super::*;

/// An arbitrary epoch time, so that nothing depends on starting at 0.
const T0: Millis = 1_764_500_000_000;
const OPEN_FOR: Millis = 30_000;

fn config(consecutive_failures: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures,
        failure_ratio: None,
        min_calls: 20,
        window: Duration::from_secs(10),
        open_for: Duration::from_millis(OPEN_FOR as u64),
        half_open_probes: 1,
    }
}

fn with_probes(probes: u32) -> BreakerConfig {
    BreakerConfig { half_open_probes: probes, ..config(1) }
}

fn with_ratio(ratio: f64, min_calls: u32) -> BreakerConfig {
    BreakerConfig { failure_ratio: Some(ratio), min_calls, ..config(100) }
}

fn view(state: BreakerState, since: Millis, failures: u32) -> BreakerView {
    BreakerView { state, since, failures }
}

/// A breaker opened by one failure at `T0`.
fn opened(config: BreakerConfig) -> Breaker {
    let mut breaker = Breaker::new(BreakerConfig { consecutive_failures: 1, ..config }, T0);
    assert_eq!(breaker.admit(T0), Admit::Yes);
    assert_eq!(breaker.record(T0, false, false), Some(BreakerState::Open));
    breaker
}

/// A breaker half-open since `T0 + OPEN_FOR`.
fn half_open(config: BreakerConfig) -> Breaker {
    let breaker = opened(config);
    assert_eq!(breaker.view(T0 + OPEN_FOR).state, BreakerState::HalfOpen);
    breaker
}

#[test]
fn a_new_breaker_is_closed_and_admits() {
    let mut breaker = Breaker::new(config(5), T0);
    assert_eq!(breaker.view(T0 + 5), view(BreakerState::Closed, T0, 0));
    assert_eq!(breaker.admit(T0 + 5), Admit::Yes);
}

#[test]
fn it_opens_after_exactly_n_failures_in_a_row() {
    let mut breaker = Breaker::new(config(3), T0);
    assert_eq!(breaker.record(T0 + 1, false, false), None);
    assert_eq!(breaker.record(T0 + 2, false, false), None);
    assert_eq!(breaker.view(T0 + 2), view(BreakerState::Closed, T0, 2));
    assert_eq!(breaker.admit(T0 + 2), Admit::Yes);
    assert_eq!(breaker.record(T0 + 3, false, false), Some(BreakerState::Open));
    assert_eq!(breaker.view(T0 + 3), view(BreakerState::Open, T0 + 3, 3));
    assert_eq!(breaker.admit(T0 + 3), Admit::No { retry_after: Duration::from_secs(30) });
}

#[test]
fn a_success_resets_the_failures_in_a_row() {
    let mut breaker = Breaker::new(config(3), T0);
    for _ in 0..2 {
        assert_eq!(breaker.record(T0, false, false), None);
    }
    assert_eq!(breaker.record(T0, true, false), None);
    assert_eq!(breaker.view(T0).failures, 0);
    for _ in 0..2 {
        assert_eq!(breaker.record(T0, false, false), None);
    }
    assert_eq!(breaker.view(T0), view(BreakerState::Closed, T0, 2));
}

#[test]
fn it_stays_open_until_exactly_open_for_has_passed() {
    let mut breaker = opened(config(1));
    assert_eq!(breaker.admit(T0 + 1), Admit::No { retry_after: Duration::from_millis(29_999) });
    assert_eq!(breaker.admit(T0 + OPEN_FOR - 1), Admit::No { retry_after: Duration::from_millis(1) });
    assert_eq!(breaker.view(T0 + OPEN_FOR - 1), view(BreakerState::Open, T0, 1));
    assert_eq!(breaker.view(T0 + OPEN_FOR), view(BreakerState::HalfOpen, T0 + OPEN_FOR, 1));
    assert_eq!(breaker.admit(T0 + OPEN_FOR), Admit::Probe);
}

#[test]
fn half_open_dates_from_when_open_for_passed_however_late_it_is_asked() {
    let mut breaker = opened(config(1));
    let late = T0 + OPEN_FOR + 12_345;
    assert_eq!(breaker.view(late), view(BreakerState::HalfOpen, T0 + OPEN_FOR, 1));
    assert_eq!(breaker.admit(late), Admit::Probe);
    assert_eq!(breaker.view(late + 1), view(BreakerState::HalfOpen, T0 + OPEN_FOR, 1));
}

#[test]
fn half_open_hands_out_only_so_many_probes_at_once() {
    let mut breaker = half_open(with_probes(2));
    let now = T0 + OPEN_FOR;
    assert_eq!(breaker.admit(now), Admit::Probe);
    assert_eq!(breaker.admit(now), Admit::Probe);
    assert_eq!(breaker.admit(now), Admit::No { retry_after: Breaker::HALF_OPEN_RETRY_AFTER });
    breaker.cancel_probe();
    assert_eq!(breaker.admit(now + 1), Admit::Probe, "a cancelled probe frees its place");
    assert_eq!(breaker.admit(now + 1), Admit::No { retry_after: Duration::from_secs(1) });
}

#[test]
fn the_half_open_wait_is_never_longer_than_open_for() {
    let short = BreakerConfig { open_for: Duration::from_millis(200), ..config(1) };
    let mut breaker = opened(short);
    assert_eq!(breaker.admit(T0 + 200), Admit::Probe);
    assert_eq!(breaker.admit(T0 + 200), Admit::No { retry_after: Duration::from_millis(200) });
}

#[test]
fn it_closes_when_every_probe_succeeded() {
    let mut breaker = half_open(with_probes(2));
    let now = T0 + OPEN_FOR;
    assert_eq!((breaker.admit(now), breaker.admit(now)), (Admit::Probe, Admit::Probe));
    assert_eq!(breaker.record(now + 10, true, true), None);
    assert_eq!(breaker.view(now + 10).state, BreakerState::HalfOpen);
    assert_eq!(breaker.record(now + 20, true, true), Some(BreakerState::Closed));
    assert_eq!(breaker.view(now + 20), view(BreakerState::Closed, now + 20, 0));
    assert_eq!(breaker.admit(now + 20), Admit::Yes);
}

#[test]
fn it_closes_with_fresh_counters() {
    let config = BreakerConfig { half_open_probes: 1, ..with_ratio(0.5, 2) };
    let mut breaker = half_open(config);
    let now = T0 + OPEN_FOR;
    assert_eq!(breaker.admit(now), Admit::Probe);
    assert_eq!(breaker.record(now, true, true), Some(BreakerState::Closed));
    // The failure that opened it is forgotten: one failure among two calls is needed anew.
    assert_eq!(breaker.record(now, true, false), None);
    assert_eq!(breaker.record(now, false, false), Some(BreakerState::Open));
}

#[test]
fn a_failed_probe_reopens_it_from_that_instant() {
    let mut breaker = half_open(with_probes(3));
    let now = T0 + OPEN_FOR + 500;
    assert_eq!(breaker.admit(now), Admit::Probe);
    assert_eq!(breaker.admit(now), Admit::Probe);
    assert_eq!(breaker.record(now + 100, true, true), None);
    assert_eq!(breaker.record(now + 200, false, true), Some(BreakerState::Open));
    assert_eq!(breaker.view(now + 200), view(BreakerState::Open, now + 200, 1));
    assert_eq!(breaker.admit(now + 200), Admit::No { retry_after: Duration::from_secs(30) });
    assert_eq!(breaker.view(now + 200 + OPEN_FOR - 1).state, BreakerState::Open);
    assert_eq!(breaker.admit(now + 200 + OPEN_FOR), Admit::Probe);
}

#[test]
fn a_probe_from_an_earlier_half_open_spell_counts_for_nothing() {
    let mut breaker = half_open(with_probes(2));
    let now = T0 + OPEN_FOR;
    assert_eq!((breaker.admit(now), breaker.admit(now)), (Admit::Probe, Admit::Probe));
    assert_eq!(breaker.record(now, false, true), Some(BreakerState::Open));
    // The second probe answers while open, then another after the next half-open began.
    assert_eq!(breaker.record(now + 1, true, true), None);
    let again = now + OPEN_FOR;
    assert_eq!(breaker.record(again, true, true), None);
    assert_eq!(breaker.view(again), view(BreakerState::HalfOpen, again, 1));
    assert_eq!((breaker.admit(again), breaker.admit(again)), (Admit::Probe, Admit::Probe));
}

#[test]
fn late_results_of_ordinary_calls_are_ignored_once_it_opened() {
    let mut breaker = Breaker::new(config(2), T0);
    assert_eq!(breaker.record(T0, false, false), None);
    assert_eq!(breaker.record(T0, false, false), Some(BreakerState::Open));
    // Calls admitted while closed answer now: neither keeps it open longer nor closes it.
    assert_eq!(breaker.record(T0 + 10, false, false), None);
    assert_eq!(breaker.record(T0 + 20, true, false), None);
    assert_eq!(breaker.view(T0 + 20), view(BreakerState::Open, T0, 2));
    // Nor do they count once half-open, or take a probe's place.
    let now = T0 + OPEN_FOR;
    assert_eq!(breaker.record(now, true, false), None);
    assert_eq!(breaker.record(now, false, false), None);
    assert_eq!(breaker.view(now), view(BreakerState::HalfOpen, now, 2));
    assert_eq!(breaker.admit(now), Admit::Probe);
    // A probe result that comes in after it closed is ignored too.
    assert_eq!(breaker.record(now, true, true), Some(BreakerState::Closed));
    assert_eq!(breaker.record(now, false, true), None);
    assert_eq!(breaker.view(now), view(BreakerState::Closed, now, 0));
}

#[test]
fn the_ratio_opens_it_only_once_min_calls_were_made() {
    let mut breaker = Breaker::new(with_ratio(0.5, 4), T0);
    assert_eq!(breaker.record(T0, false, false), None);
    assert_eq!(breaker.record(T0, false, false), None);
    assert_eq!(breaker.record(T0, false, false), None, "3 of 3 failed, but only 3 calls");
    assert_eq!(breaker.record(T0, true, false), Some(BreakerState::Open), "3 of 4 failed");
    assert_eq!(breaker.view(T0), view(BreakerState::Open, T0, 3), "failures: those in the window");
}

#[test]
fn the_ratio_is_reached_at_exactly_the_configured_share() {
    let mut breaker = Breaker::new(with_ratio(0.3, 10), T0);
    for (i, success) in [true, false, true, true, false, true, true, true, true].into_iter().enumerate() {
        assert_eq!(breaker.record(T0, success, false), None, "call {i}");
    }
    assert_eq!(breaker.record(T0, false, false), Some(BreakerState::Open), "3 of 10 is 0.3");

    let mut below = Breaker::new(with_ratio(0.3, 10), T0);
    for success in [true, false, true, true, false, true, true, true, true, true] {
        assert_eq!(below.record(T0, success, false), None, "2 of 10 is below 0.3");
    }
}

#[test]
fn old_failures_slide_out_of_the_window() {
    // 10 s window in 1 s buckets; three failures at T0 (bucket start).
    let mut breaker = Breaker::new(with_ratio(0.5, 4), T0);
    for _ in 0..3 {
        assert_eq!(breaker.record(T0, false, false), None);
    }
    let mut just_in_time = breaker.clone();
    assert_eq!(just_in_time.record(T0 + 9_999, true, false), Some(BreakerState::Open));
    assert_eq!(breaker.record(T0 + 10_000, true, false), None, "the failures have slid out");
    assert_eq!(breaker.record(T0 + 10_000, false, false), None, "1 of 2");
    assert_eq!(breaker.record(T0 + 10_000, true, false), None, "1 of 3");
    assert_eq!(breaker.record(T0 + 10_001, false, false), Some(BreakerState::Open), "2 of 4");
}

#[test]
fn failures_in_a_row_still_open_it_when_a_ratio_is_set() {
    let config = BreakerConfig { consecutive_failures: 2, ..with_ratio(0.9, 100) };
    let mut breaker = Breaker::new(config, T0);
    assert_eq!(breaker.record(T0, false, false), None);
    assert_eq!(breaker.record(T0, false, false), Some(BreakerState::Open));
}

#[test]
fn states_have_their_api_names_and_gauge_values() {
    let shown: Vec<_> = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen]
        .into_iter()
        .map(|state| (state.as_str(), state.gauge()))
        .collect();
    assert_eq!(shown, [("closed", 0), ("open", 1), ("half-open", 2)]);
}
