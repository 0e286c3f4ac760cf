//! A first attempt that succeeded, kept in its invocation's row (`first_started_at`,
//! `first_ended_at`) instead of in `attempts`, on both stores. Most invocations have just such an
//! attempt: its number is 1, its outcome a success, its HTTP status the row's `result_status`,
//! and it has no error, so only its two times need a place, in a row written anyway. Any other
//! attempt goes to `attempts`, and rows stored before keep theirs there. BENCHMARKS.md, "A first
//! success kept in its row".

use keel_core::clock::Millis;
use keel_core::invocation::{Attempt, Invocation, Status, StoredResponse};
use keel_core::outcome::Outcome;

/// Whether `attempt` may be kept in its invocation's row instead of in `attempts`, the row's
/// status being `status` and its reply `response`: the row succeeded (it is final, so no later
/// attempt can join it in `attempts`), and the attempt is the first, succeeded with no error, and
/// the reply stored is its own status's. All but its times can then be told from the row
/// ([`of_row`]).
pub(crate) fn kept_in_row(status: Status, attempt: &Attempt, response: Option<&StoredResponse>) -> bool {
    status == Status::Succeeded
        && attempt.number == 1
        && attempt.outcome == Outcome::Success
        && attempt.error.is_none()
        && response.is_some_and(|r| attempt.http_status == Some(r.status))
}

/// The attempt of a finished invocation's record that is kept in its row, if it has one.
pub(crate) fn in_row(inv: &Invocation) -> Option<&Attempt> {
    match &inv.attempts[..] {
        [only] if kept_in_row(inv.status, only, inv.response.as_ref()) => Some(only),
        _ => None,
    }
}

/// The attempts of finished invocations' records that go to `attempts`, with their invocation's
/// id: every attempt of a record whose row keeps none ([`in_row`]).
pub(crate) fn kept_apart(invs: &[Invocation]) -> Vec<(&str, &Attempt)> {
    invs.iter()
        .filter(|inv| in_row(inv).is_none())
        .flat_map(|inv| inv.attempts.iter().map(move |a| (inv.id.as_str(), a)))
        .collect()
}

/// The attempt a row keeps (`first_started_at`, `first_ended_at`, `result_status`), if it keeps
/// one.
pub(crate) fn of_row(times: (Option<Millis>, Option<Millis>), result_status: Option<u16>) -> Option<Attempt> {
    let (Some(started_at), Some(ended_at)) = times else { return None };
    Some(Attempt {
        number: 1,
        started_at,
        ended_at,
        outcome: Outcome::Success,
        http_status: result_status,
        error: None,
    })
}

/// What both stores' tests of a first success kept in its row do through the `Store` trait;
/// each then looks at its own `attempts` table.
#[cfg(test)]
pub(crate) mod scenario {
    use keel_core::invocation::{Attempt, Completion, NewInvocation, Status, StoredResponse, Transition};
    use keel_core::outcome::Outcome;
    use keel_core::store::{LeaseRequest, Store, Urgency};

    /// Attempt `number`: times 10·n and 10·n + 7; an error unless it succeeded.
    pub(crate) fn attempt(number: u32, outcome: Outcome, http_status: Option<u16>) -> Attempt {
        Attempt {
            number,
            started_at: 10 * number as i64,
            ended_at: 10 * number as i64 + 7,
            outcome,
            http_status,
            error: (outcome != Outcome::Success).then(|| "503 from the function".to_string()),
        }
    }

    fn reply(status: u16) -> StoredResponse {
        StoredResponse { status, content_type: None, body: bytes::Bytes::from_static(b"{}") }
    }

    /// The rows of `attempts` the scenario leaves, as (invocation, number), sorted.
    pub(crate) const IN_ATTEMPTS: [(&str, u32); 3] = [("a2", 1), ("a2", 2), ("s2", 1)];

    /// Records two sync calls (`s1`, whose reply is its attempt's; `s2`, whose stored reply is
    /// not) and runs two async invocations (`a1` succeeds at once; `a2` after a retry), through
    /// the batched paths and the single one; then checks that each reads back with its attempts.
    pub(crate) async fn run(store: &dyn Store) {
        let record = |id: &str, stored: u16, attempt: Attempt| {
            let mut inv = NewInvocation::plain(id, "f", bytes::Bytes::from_static(b"{}"), 1).into_stored();
            inv.status = Status::Succeeded;
            inv.sync = true;
            inv.due_at = None;
            (inv.attempt_count, inv.response, inv.attempts) = (1, Some(reply(stored)), vec![attempt]);
            inv
        };
        let sync_first = record("s1", 200, attempt(1, Outcome::Success, Some(200)));
        let sync_other = record("s2", 201, attempt(1, Outcome::Success, Some(200)));
        store.record_finished_all(std::sync::Arc::new(vec![sync_first, sync_other]), Urgency::Now).await.unwrap();

        let new = |id: &str| NewInvocation::plain(id, "f", bytes::Bytes::from_static(b"{}"), 1);
        store.enqueue_all(vec![new("a1"), new("a2")]).await.unwrap();
        let lease = |now| LeaseRequest {
            function: "f".into(),
            owner: "n".into(),
            now,
            expires_at: now + 60_000,
            limit: 10,
            keys: None,
        };
        let complete = |id: &str, fence, attempt, next| Completion {
            id: id.into(),
            owner: "n".into(),
            fence,
            now: 100,
            attempt: Some(attempt),
            next,
            effects: None,
            run: None,
        };
        assert_eq!(store.lease(lease(1)).await.unwrap().invocations.len(), 2);
        let first =
            complete("a1", 0, attempt(1, Outcome::Success, Some(200)), Transition::Succeed { response: reply(200) });
        let failed = Transition::Retry { due_at: 2, delay_ms: 1, error: "503 from the function".into() };
        let retried = complete("a2", 0, attempt(1, Outcome::Transient, Some(503)), failed);
        for answer in store.complete_all(vec![first, retried], Urgency::Now).await.unwrap() {
            answer.unwrap();
        }
        assert_eq!(store.lease(lease(5)).await.unwrap().invocations.len(), 1);
        let second =
            complete("a2", 1, attempt(2, Outcome::Success, Some(200)), Transition::Succeed { response: reply(200) });
        store.complete(second, Urgency::Now).await.unwrap();

        for (id, attempts) in [
            ("s1", vec![attempt(1, Outcome::Success, Some(200))]),
            ("s2", vec![attempt(1, Outcome::Success, Some(200))]),
            ("a1", vec![attempt(1, Outcome::Success, Some(200))]),
            ("a2", vec![attempt(1, Outcome::Transient, Some(503)), attempt(2, Outcome::Success, Some(200))]),
        ] {
            let inv = store.get(id).await.unwrap().unwrap();
            assert_eq!((inv.status, inv.attempts), (Status::Succeeded, attempts), "{id}");
        }
    }
}
