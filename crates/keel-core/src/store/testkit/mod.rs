//! The conformance suite: behaviour every [`Store`] must show, written once and run against each
//! backend with [`store_conformance!`](crate::store_conformance).

use bytes::Bytes;

use super::{LeaseRequest, ListFilter, NodeBeat, NodeState, Page, Reclaim, Store, Urgency};
use crate::clock::Millis;
use crate::events::{CloudEvent, NewEvent, Published};
use crate::idempotency::{KeyClaim, KeyDecision, KeyRef, StoredReply};
use crate::invocation::{Attempt, Completion, Invocation, NewInvocation, Status, StoredResponse, Transition};
use crate::invocation::{CommitEffects, Delivery};
use crate::kv::{KvWrite, Precondition};
use crate::outcome::Outcome;
use crate::Error;

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async function returning
/// `(store, guard)`, or `Option<(store, guard)>` for a backend that may be missing here (`None`
/// skips the case; `make` says why); the guard (a temp dir, a database) lives as long as the test.
#[macro_export]
macro_rules! store_conformance {
    ($make:path) => {
        $crate::store_conformance!(@cases $make;
            enqueue_then_get, lease_takes_due_work_oldest_first, lease_is_per_function,
            success_keeps_the_response, retry_comes_due_later, stale_lease_cannot_complete,
            a_lease_taken_back_cannot_complete_after_its_node_leased_again,
            exhausted_goes_dead_and_redrive_gives_a_fresh_budget, discard_only_from_dlq,
            cancel_queued_but_not_running, reclaim_all_and_expired, leased_at_admission_runs_only_under_its_lease,
            a_lease_given_back_unattempted_is_queued_again_with_no_attempt,
            list_filters_and_pages, bulk_enqueue_admits_all_or_none, keyed_bulk_enqueue_admits_once_and_replays,
            batch_completions_commit_together_judged_each_alone,
            bulk_redrive_by_function, finished_sync_invocations_are_recorded,
            finished_sync_invocations_are_recorded_many_at_once_all_or_none,
            keyed_enqueue_admits_once_and_replays, keyed_sync_holds_then_completes_the_key,
            a_dead_sync_holder_is_taken_over_with_the_same_invocation, claimed_keys_complete_release_and_expire,
            a_held_key_outlives_its_ttl_until_its_lease_ends,
            nodes_report_heartbeats_and_leases, publish_stores_events_with_deliveries_once,
            events_to_replicate_wait_in_the_outbox_until_acknowledged,
            header_lists_keep_every_character,
            kv_versions_and_preconditions, kv_lists_keys_in_byte_order_by_prefix_and_cursor,
            effects_commit_with_the_completion_or_not_at_all,
            ordered_deliveries_wait_for_earlier_ones, finished_sync_invocations_commit_their_effects,
            queue_stats_count_backlog_and_dead,
            concurrency_keys_are_kept_through_every_path, a_key_at_its_limit_does_not_hide_other_keys,
            a_lease_takes_at_most_the_room_of_each_key, invocations_without_a_key_are_unlimited,
            next_due_at_counts_only_keys_with_room, a_paused_function_leases_nothing_until_resumed,
            api_keys_are_created_listed_and_revoked, api_key_use_keeps_the_latest_time,
            signing_keys_are_made_once_rotated_and_expired, audit_log_pages_newest_first_with_filters,
            a_tick_is_taken_once_with_its_work, a_tick_can_publish_an_event,
            a_paused_schedule_takes_no_tick_until_resumed, racing_nodes_take_a_tick_once,
            a_run_starts_once_per_key_and_moves_on_with_its_step,
            a_run_change_decided_on_an_older_run_refuses_the_whole_completion,
            a_cancel_takes_the_queued_step_with_the_run_change, runs_list_newest_first_by_workflow_and_status,
            a_dead_step_is_not_redriven_but_its_dead_compensation_is,
            faults_are_kept_until_they_expire_or_are_removed,
            payloads_of_every_size_read_back_whole_at_every_step);
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $crate::store::testkit::Backend::into_backend($make().await) else {
                    return;
                };
                $crate::store::testkit::$case(&store).await;
            }
        )*
    };
}

/// What a `make` function of [`store_conformance!`] returns: `(store, guard)`, or an `Option`
/// of it.
pub trait Backend {
    type Store;
    type Guard;
    fn into_backend(self) -> Option<(Self::Store, Self::Guard)>;
}

impl<S, G> Backend for (S, G) {
    type Store = S;
    type Guard = G;
    fn into_backend(self) -> Option<(S, G)> {
        Some(self)
    }
}

impl<S, G> Backend for Option<(S, G)> {
    type Store = S;
    type Guard = G;
    fn into_backend(self) -> Option<(S, G)> {
        self
    }
}

mod stats;
pub use stats::queue_stats_count_backlog_and_dead;

const T0: Millis = 1_700_000_000_000;

fn new_inv(id: &str, function: &str, due_at: Millis) -> NewInvocation {
    NewInvocation {
        concurrency_key: None,
        id: id.to_string(),
        function: function.to_string(),
        payload: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        content_type: Some("application/json".into()),
        created_at: T0,
        due_at,
        idempotency_key: None,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        delivery: None,
        lease: None,
        workflow: None,
    }
}

fn lease_req(function: &str, now: Millis, limit: usize) -> LeaseRequest {
    LeaseRequest { function: function.into(), owner: "node-a".into(), now, expires_at: now + 30_000, limit, keys: None }
}

fn attempt(number: u32, outcome: Outcome, status: Option<u16>) -> Attempt {
    Attempt { number, started_at: T0 + 10, ended_at: T0 + 25, outcome, http_status: status, error: None }
}

fn ok_response(body: &'static str) -> StoredResponse {
    StoredResponse {
        status: 200,
        content_type: Some("application/json".into()),
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// The completion of a successful first attempt of `id`, reported by `owner`.
fn success(id: &str, owner: &str, now: Millis, body: &'static str) -> Completion {
    Completion {
        id: id.into(),
        owner: owner.into(),
        fence: 0,
        now,
        attempt: Some(attempt(1, Outcome::Success, Some(200))),
        next: Transition::Succeed { response: ok_response(body) },
        effects: None,
        run: None,
    }
}

async fn lease_one(store: &dyn Store, function: &str, now: Millis) -> Invocation {
    let mut leased = store.lease(lease_req(function, now, 1)).await.unwrap().invocations;
    assert_eq!(leased.len(), 1, "expected one due invocation of {function}");
    leased.pop().unwrap()
}

async fn fail_once(store: &dyn Store, inv: &Invocation, now: Millis, next: Transition) {
    let number = inv.attempt_count + 1;
    let completion = Completion {
        id: inv.id.clone(),
        owner: "node-a".into(),
        fence: inv.attempt_count,
        now,
        attempt: Some(Attempt { error: Some("boom".into()), ..attempt(number, Outcome::Transient, Some(503)) }),
        next,
        effects: None,
        run: None,
    };
    store.complete(completion, Urgency::Now).await.unwrap();
}

mod access;
mod batch;
mod chaos;
mod events;
mod flow;
mod invocations;
mod keys;
mod schedules;
mod workflows;

use self::events::{delivery_of, event};
pub use access::*;
pub use batch::*;
pub use chaos::*;
pub use events::*;
pub use flow::*;
pub use invocations::*;
pub use keys::*;
pub use schedules::*;
pub use workflows::*;
