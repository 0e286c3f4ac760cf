use super::*;

fn policy(jitter: Jitter) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        jitter,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn ceiling_grows_exponentially_and_caps_at_max() {
    let p = policy(Jitter::None);
    let got: Vec<_> = (1..=6).map(|a| p.ceiling(a)).collect();
    assert_eq!(got, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
    assert_eq!(p.ceiling(10_000), ms(1000), "huge attempt numbers do not overflow");
}

#[test]
fn full_jitter_spans_zero_to_ceiling() {
    let p = policy(Jitter::Full);
    assert_eq!(p.delay_for(3, None, 0.0), ms(0));
    assert_eq!(p.delay_for(3, None, 0.5), ms(200));
    assert!(p.delay_for(3, None, 0.999_999) <= ms(400));
}

#[test]
fn equal_jitter_spans_half_to_full_ceiling() {
    let p = policy(Jitter::Equal);
    assert_eq!(p.delay_for(3, None, 0.0), ms(200));
    assert_eq!(p.delay_for(3, None, 0.5), ms(300));
    assert!(p.delay_for(3, None, 0.999_999) <= ms(400));
}

#[test]
fn decorrelated_jitter_builds_on_previous_delay_and_caps() {
    let p = policy(Jitter::Decorrelated);
    assert_eq!(p.delay_for(1, None, 0.0), ms(100));
    assert_eq!(p.delay_for(1, None, 1.0), ms(300));
    assert_eq!(p.delay_for(2, Some(ms(300)), 0.5), ms(500));
    assert_eq!(p.delay_for(4, Some(ms(900)), 1.0), ms(1000), "capped at max");
}

#[test]
fn no_jitter_is_exact() {
    let p = policy(Jitter::None);
    assert_eq!(p.delay_for(2, None, 0.73), ms(200));
}

#[test]
fn gives_up_after_max_attempts() {
    let p = policy(Jitter::None);
    assert_eq!(p.next_step(4, None, None, 0.0), NextStep::RetryAfter(ms(800)));
    assert_eq!(p.next_step(5, None, None, 0.0), NextStep::GiveUp);
    let once = RetryPolicy { max_attempts: 1, ..p };
    assert_eq!(once.next_step(1, None, None, 0.0), NextStep::GiveUp);
}

#[test]
fn retry_after_is_the_least_delay() {
    let p = policy(Jitter::Full);
    assert_eq!(p.next_step(1, None, Some(ms(5000)), 0.5), NextStep::RetryAfter(ms(5000)));
    assert_eq!(p.next_step(1, None, Some(ms(10)), 0.5), NextStep::RetryAfter(ms(50)));
}

#[test]
fn every_jitter_stays_within_bounds_for_many_samples() {
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated, Jitter::None] {
        let p = policy(jitter);
        let mut previous = None;
        for attempt in 1..=20 {
            let sample = fastrand::f64();
            let d = p.delay_for(attempt, previous, sample);
            assert!(d <= p.max, "{jitter:?} attempt {attempt}: {d:?} above max");
            if jitter != Jitter::Full {
                assert!(d >= p.initial.min(p.ceiling(attempt) / 2), "{jitter:?}: {d:?} too small");
            }
            previous = Some(d);
        }
    }
}
