//! What happens to an invocation after an attempt: one pure decision ([`next_after`]), which
//! the async dispatcher applies as a stored [`Transition`] ([`after_attempt`]) and a sync call
//! in its request (a pause before the next attempt, or how it ends).

use std::time::Duration;

use crate::clock::Millis;
use crate::invocation::{Attempt, Invocation, StoredResponse, Transition};
use crate::outcome::Outcome;
use crate::retry::{NextStep, RetryPolicy};

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub attempt: Attempt,
    /// The function's response, when it answered.
    pub response: Option<StoredResponse>,
    /// The least delay the function asked for (`Retry-After` on 429 and 503).
    pub retry_after: Option<Duration>,
    /// What a successful attempt asked Keel to commit (an effects envelope).
    pub effects: Option<crate::effects::Effects>,
}

impl AttemptReport {
    /// A one-line description of what went wrong, for `error` fields.
    pub fn error_text(&self) -> String {
        match (&self.attempt.error, self.attempt.http_status) {
            (Some(e), _) => e.clone(),
            (None, Some(status)) => format!("HTTP {status}"),
            (None, None) => self.attempt.outcome.as_str().to_string(),
        }
    }
}

/// Where an invocation stands after an attempt, as far as the decision needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    /// Attempts made within the current budget, this one included.
    pub made: u32,
    /// The pause before this attempt, if it was a retry (decorrelated jitter grows from it).
    pub previous_delay: Option<Duration>,
    /// Time left before the caller's deadline (a sync call's `sync_timeout`); `None` for async
    /// work, which has only its retry budget.
    pub time_left: Option<Duration>,
}

/// Why an invocation ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The function refused the request (a 4xx, or a response Keel cannot accept).
    Permanent,
    /// Transient failures used up the retry policy.
    Exhausted,
    /// The deadline passed, or the next retry would start after it.
    DeadlineExceeded,
}

/// What comes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Succeed,
    /// Try again after `delay`.
    Retry {
        delay: Duration,
    },
    /// Stop: the invocation failed, `error` says why.
    Fail {
        failure: Failure,
        error: String,
    },
}

/// The decision after an attempt of `outcome` (its error text `error`, the least delay the
/// function asked for `retry_after`), for sync and async invocations alike. `sample` is uniform
/// in `[0, 1)` and drives the jitter.
pub fn next_after(
    policy: &RetryPolicy,
    standing: Standing,
    outcome: Outcome,
    error: &str,
    retry_after: Option<Duration>,
    sample: f64,
) -> Next {
    if outcome == Outcome::Success {
        return Next::Succeed;
    }
    let made = standing.made;
    if !outcome.is_retryable() {
        return Next::Fail { failure: Failure::Permanent, error: format!("permanent failure: {error}") };
    }
    if standing.time_left.is_some_and(|left| left.is_zero()) {
        let error = format!("deadline exceeded after {made} attempts: {error}");
        return Next::Fail { failure: Failure::DeadlineExceeded, error };
    }
    match policy.next_step(made, standing.previous_delay, retry_after, sample) {
        NextStep::GiveUp => Next::Fail {
            failure: Failure::Exhausted,
            error: format!("retries exhausted after {made} attempts: {error}"),
        },
        NextStep::RetryAfter(delay) if standing.time_left.is_some_and(|left| delay >= left) => {
            let pause = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
            let error = format!(
                "deadline exceeded: the next retry ({pause}) would start after sync_timeout; last error: {error}"
            );
            Next::Fail { failure: Failure::DeadlineExceeded, error }
        }
        NextStep::RetryAfter(delay) => Next::Retry { delay },
    }
}

/// Decides the transition of an async invocation after `report`, its latest attempt
/// ([`next_after`], stored as a [`Transition`]).
pub fn after_attempt(
    policy: &RetryPolicy,
    invocation: &Invocation,
    report: &AttemptReport,
    now: Millis,
    sample: f64,
) -> Transition {
    let standing = Standing {
        made: invocation.attempts_in_budget() + 1,
        previous_delay: invocation.last_delay_ms.map(Duration::from_millis),
        time_left: None,
    };
    let error = report.error_text();
    match next_after(policy, standing, report.attempt.outcome, &error, report.retry_after, sample) {
        Next::Succeed => Transition::Succeed {
            response: report.response.clone().unwrap_or(StoredResponse {
                status: 200,
                content_type: None,
                body: Default::default(),
            }),
        },
        Next::Retry { delay } => {
            Transition::Retry { due_at: now + delay.as_millis() as Millis, delay_ms: delay.as_millis() as u64, error }
        }
        Next::Fail { error, .. } => Transition::Die { error, response: report.response.clone() },
    }
}

/// The transition of a leased invocation whose budget interrupted attempts already used up.
///
/// An interrupted attempt (its node died, or its lease was taken back) is charged, but Keel
/// cannot tell whether it ever reached the function — it may have died between taking the lease
/// and sending the request. So an interruption never ends an invocation by itself: after one, an
/// attempt whose outcome Keel sees still runs, even past `max_attempts`, up to twice that in all
/// (a node that crashes on every attempt still ends in the DLQ).
pub fn exhausted_before_attempt(policy: &RetryPolicy, invocation: &Invocation) -> Option<Transition> {
    let used = invocation.attempts_in_budget();
    let interrupted = invocation.error.as_deref().is_some_and(Attempt::is_interruption);
    let exhausted = used >= policy.max_attempts && (!interrupted || used >= policy.max_attempts.saturating_mul(2));
    exhausted.then(|| Transition::Die {
        error: format!(
            "retries exhausted after {} attempts: {}",
            invocation.attempts_in_budget(),
            invocation.error.as_deref().unwrap_or("the last attempt was interrupted")
        ),
        response: invocation.response.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::NewInvocation;
    use crate::retry::Jitter;

    fn invocation(attempts: u32) -> Invocation {
        let mut inv = NewInvocation::plain("01", "f", Default::default(), 0).into_stored();
        inv.attempt_count = attempts;
        inv
    }

    fn report(outcome: Outcome, status: Option<u16>, retry_after: Option<Duration>) -> AttemptReport {
        AttemptReport {
            attempt: Attempt { number: 1, started_at: 0, ended_at: 5, outcome, http_status: status, error: None },
            response: status.map(|s| StoredResponse { status: s, content_type: None, body: Default::default() }),
            retry_after,
            effects: None,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::None,
        }
    }

    #[test]
    fn transient_failures_retry_with_backoff_then_die() {
        let p = policy();
        let t = after_attempt(&p, &invocation(0), &report(Outcome::Transient, Some(503), None), 1_000, 0.5);
        assert_eq!(t, Transition::Retry { due_at: 1_100, delay_ms: 100, error: "HTTP 503".into() });
        let t = after_attempt(&p, &invocation(1), &report(Outcome::Timeout, None, None), 1_000, 0.5);
        assert_eq!(t, Transition::Retry { due_at: 1_200, delay_ms: 200, error: "timeout".into() });
        let t = after_attempt(&p, &invocation(2), &report(Outcome::Transient, Some(500), None), 1_000, 0.5);
        assert!(
            matches!(t, Transition::Die { ref error, .. } if error == "retries exhausted after 3 attempts: HTTP 500"),
            "{t:?}"
        );
    }

    #[test]
    fn retry_after_sets_the_least_delay() {
        let t = after_attempt(
            &policy(),
            &invocation(0),
            &report(Outcome::Transient, Some(429), Some(Duration::from_secs(3))),
            0,
            0.5,
        );
        assert_eq!(t, Transition::Retry { due_at: 3_000, delay_ms: 3_000, error: "HTTP 429".into() });
    }

    #[test]
    fn permanent_failures_die_at_once_and_success_keeps_the_response() {
        let t = after_attempt(&policy(), &invocation(0), &report(Outcome::Permanent, Some(400), None), 0, 0.5);
        assert!(
            matches!(t, Transition::Die { ref error, response: Some(ref r) } if error == "permanent failure: HTTP 400" && r.status == 400)
        );
        let t = after_attempt(&policy(), &invocation(0), &report(Outcome::Success, Some(201), None), 0, 0.5);
        assert!(matches!(t, Transition::Succeed { ref response } if response.status == 201));
    }

    #[test]
    fn a_redriven_invocation_counts_only_its_new_budget() {
        let mut inv = invocation(3);
        inv.budget_start = 3;
        let t = after_attempt(&policy(), &inv, &report(Outcome::Transient, Some(503), None), 0, 0.5);
        assert!(matches!(t, Transition::Retry { .. }));
        assert!(exhausted_before_attempt(&policy(), &inv).is_none());
        inv.budget_start = 0;
        assert!(exhausted_before_attempt(&policy(), &inv).is_some());
    }

    #[test]
    fn an_interruption_never_uses_up_the_budget_by_itself() {
        // max_attempts = 3; the third attempt was interrupted (perhaps before it was even sent).
        let mut inv = invocation(3);
        inv.error = Some(Attempt::interrupted(3, 0, 10, "node-a").error.unwrap());
        assert!(exhausted_before_attempt(&policy(), &inv).is_none(), "one attempt whose outcome is seen runs");
        inv.attempt_count = 5;
        assert!(exhausted_before_attempt(&policy(), &inv).is_none());
        inv.attempt_count = 6;
        let died = exhausted_before_attempt(&policy(), &inv);
        assert!(
            matches!(died, Some(Transition::Die { ref error, .. }) if error.starts_with("retries exhausted after 6 attempts: interrupted")),
            "interrupted on every try: dead at twice max_attempts, {died:?}"
        );
        // After that extra attempt fails, the policy ends it as usual.
        inv.attempt_count = 3;
        let t = after_attempt(&policy(), &inv, &report(Outcome::Transient, Some(503), None), 0, 0.5);
        assert!(matches!(t, Transition::Die { .. }), "{t:?}");
    }

    fn sync_standing(made: u32, left_ms: u64) -> Standing {
        Standing { made, previous_delay: None, time_left: Some(Duration::from_millis(left_ms)) }
    }

    #[test]
    fn a_sync_call_retries_within_its_deadline_and_says_why_it_stops() {
        let p = policy();
        let next = next_after(&p, sync_standing(1, 5_000), Outcome::Transient, "HTTP 503", None, 0.5);
        assert_eq!(next, Next::Retry { delay: Duration::from_millis(100) }, "the same backoff as async work");
        let next = next_after(&p, sync_standing(2, 150), Outcome::Timeout, "timeout", None, 0.5);
        assert_eq!(
            next,
            Next::Fail {
                failure: Failure::DeadlineExceeded,
                error: "deadline exceeded: the next retry (200ms) would start after sync_timeout; last error: timeout"
                    .into()
            }
        );
        let next = next_after(&p, sync_standing(1, 0), Outcome::Transient, "HTTP 500", None, 0.5);
        assert_eq!(
            next,
            Next::Fail {
                failure: Failure::DeadlineExceeded,
                error: "deadline exceeded after 1 attempts: HTTP 500".into()
            }
        );
        let next = next_after(&p, sync_standing(3, 60_000), Outcome::Transient, "HTTP 500", None, 0.5);
        assert_eq!(
            next,
            Next::Fail { failure: Failure::Exhausted, error: "retries exhausted after 3 attempts: HTTP 500".into() }
        );
        let next = next_after(&p, sync_standing(1, 60_000), Outcome::Permanent, "HTTP 404", None, 0.5);
        assert_eq!(next, Next::Fail { failure: Failure::Permanent, error: "permanent failure: HTTP 404".into() });
        let asked =
            next_after(&p, sync_standing(1, 60_000), Outcome::Transient, "HTTP 429", Some(Duration::from_secs(2)), 0.5);
        assert_eq!(asked, Next::Retry { delay: Duration::from_secs(2) }, "Retry-After is the least delay, sync too");
    }
}
