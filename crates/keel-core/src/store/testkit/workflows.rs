//! Conformance of workflow runs ([`crate::store::WorkflowStore`]): a run starts with its first
//! step, once per idempotency key; a step's end moves the run on in the same transaction, and a
//! change decided on an older run is refused whole.

use serde_json::json;

use super::*;
use crate::store::{RunFilter, RunStarted, RunUpdate};
use crate::workflow::{Definition, Run, RunStatus, StepDef, StepEnd, StepRef, StepStart};

fn definition() -> Definition {
    Definition {
        steps: vec![
            StepDef { name: "reserve".into(), function: "reserve-stock".into(), compensate: Some("release".into()) },
            StepDef { name: "charge".into(), function: "charge-card".into(), compensate: None },
        ],
        notify_topic: None,
    }
}

/// The stored form of a step the state machine starts.
fn invocation_of(start: &StepStart, now: Millis) -> NewInvocation {
    let mut inv = new_inv(&start.invocation_id, &start.function, now);
    inv.payload = Bytes::from(start.payload.to_string());
    inv.workflow = Some(start.step.clone());
    inv
}

fn ids(prefix: &'static str) -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("{prefix}{n:03}")
    }
}

async fn started(store: &dyn Store, id: &str, key: Option<&str>) -> (Run, NewInvocation) {
    let first_id = format!("{id}S1");
    let mut new_id = move || first_id.clone();
    let (run, first) =
        Run::new(id.into(), "checkout", definition(), json!({"sku": "A1"}), key.map(Into::into), None, T0, &mut new_id);
    let first = invocation_of(&first, T0);
    match store.start_run(run.clone(), first.clone()).await.unwrap() {
        RunStarted::Started(stored) => assert_eq!(stored, run),
        RunStarted::Existing(other) => panic!("a new key found run {}", other.id),
    }
    (run, first)
}

/// The completion of `inv`'s first attempt with `body`, moving `run` on.
fn step_success(inv: &Invocation, run: &Run, body: &'static str, next_id: &str) -> (Completion, Run) {
    let mut after = run.clone();
    let step = inv.workflow.clone().expect("a step knows its run");
    let mut new_id = {
        let id = next_id.to_string();
        move || id.clone()
    };
    let advance =
        after.step_ended(&step, StepEnd::Succeeded(crate::workflow::output_of(body.as_bytes())), T0 + 50, &mut new_id);
    let mut completion = success(&inv.id, "node-a", T0 + 50, body);
    completion.run = Some(Box::new(RunUpdate {
        run: after.clone(),
        expected_version: run.version,
        start: advance.start.as_ref().map(|s| invocation_of(s, T0 + 50)),
        cancel_invocation: None,
        events: Vec::new(),
    }));
    (completion, after)
}

pub async fn a_run_starts_once_per_key_and_moves_on_with_its_step(store: &dyn Store) {
    let (run, first) = started(store, "01RUN1", Some("order-7")).await;
    let stored = store.get(&first.id).await.unwrap().expect("the first step is stored with its run");
    assert_eq!(stored.workflow, Some(StepRef { run: "01RUN1".into(), step: "reserve".into(), compensate: false }));
    assert_eq!(stored.status, Status::Queued);
    assert_eq!(store.get_run("01RUN1").await.unwrap().as_ref(), Some(&run), "read back whole");

    // The same key again (a client's retry): the run it started, nothing more stored.
    let mut new_id = ids("01X");
    let (again, again_first) =
        Run::new("01RUN2".into(), "checkout", definition(), json!({}), Some("order-7".into()), None, T0, &mut new_id);
    match store.start_run(again, invocation_of(&again_first, T0)).await.unwrap() {
        RunStarted::Existing(existing) => assert_eq!(existing.id, "01RUN1"),
        RunStarted::Started(_) => panic!("a key started a second run"),
    }
    assert!(store.get_run("01RUN2").await.unwrap().is_none());
    assert!(store.get(&again_first.invocation_id).await.unwrap().is_none());

    // The step's completion carries the run's change and the next step.
    let leased = lease_one(store, "reserve-stock", T0 + 10).await;
    assert_eq!(leased.workflow, stored.workflow, "a leased step still knows its run");
    let (completion, after) = step_success(&leased, &run, r#"{"hold":1}"#, "01NEXT");
    store.complete(completion, Urgency::Now).await.unwrap();
    let now_run = store.get_run("01RUN1").await.unwrap().unwrap();
    assert_eq!(now_run, after);
    assert_eq!(now_run.version, 1);
    assert_eq!(now_run.steps[0].output, Some(json!({"hold": 1})));
    let next = store.get("01NEXT").await.unwrap().expect("the next step is stored with the change");
    assert_eq!(next.function, "charge-card");
    assert_eq!(next.workflow.as_ref().map(StepRef::key).as_deref(), Some("01RUN1/charge"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&next.payload).unwrap(),
        json!({"input": {"sku": "A1"}, "steps": {"reserve": {"hold": 1}}})
    );
}

pub async fn a_run_change_decided_on_an_older_run_refuses_the_whole_completion(store: &dyn Store) {
    let (run, _) = started(store, "01RUN1", None).await;
    let leased = lease_one(store, "reserve-stock", T0 + 10).await;
    let (completion, _) = step_success(&leased, &run, "{}", "01NEXT");
    // An operator's cancel changed the run meanwhile.
    let mut cancelled = run.clone();
    cancelled.cancel(true, T0 + 20, &mut || unreachable!("nothing starts yet")).unwrap();
    store
        .update_run(RunUpdate {
            run: cancelled.clone(),
            expected_version: run.version,
            start: None,
            cancel_invocation: None,
            events: Vec::new(),
        })
        .await
        .unwrap();
    let refused = store.complete(completion, Urgency::Now).await.unwrap_err();
    assert!(matches!(refused, Error::Stale(_)), "{refused:?}");
    assert_eq!(store.get(&leased.id).await.unwrap().unwrap().status, Status::Running, "the completion is not applied");
    assert!(store.get("01NEXT").await.unwrap().is_none(), "nor the next step");
    assert_eq!(store.get_run("01RUN1").await.unwrap().unwrap(), cancelled);

    // Decided again on the run as it is now: the step that succeeded is compensated.
    let (completion, after) = step_success(&leased, &cancelled, "{}", "01UNDO");
    store.complete(completion, Urgency::Now).await.unwrap();
    assert_eq!(store.get_run("01RUN1").await.unwrap().unwrap().status, RunStatus::Compensating);
    assert_eq!(after.status, RunStatus::Compensating);
    let undo = store.get("01UNDO").await.unwrap().unwrap();
    assert_eq!((undo.function.as_str(), undo.workflow.unwrap().key()), ("release", "01RUN1/reserve/compensate".into()));
}

pub async fn a_cancel_takes_the_queued_step_with_the_run_change(store: &dyn Store) {
    let (run, first) = started(store, "01RUN1", None).await;
    let mut cancelled = run.clone();
    let crate::workflow::Cancel::Now { invocation_id, .. } =
        cancelled.cancel(false, T0 + 20, &mut || unreachable!("nothing to compensate")).unwrap()
    else {
        panic!("a queued step is cancelled at once")
    };
    assert_eq!(invocation_id, first.id);
    let ended = event("01EV", "01RUN1/compensated", Vec::new());
    let update = RunUpdate {
        run: cancelled.clone(),
        expected_version: run.version,
        start: None,
        cancel_invocation: Some(invocation_id.clone()),
        events: vec![ended],
    };

    // Leased meanwhile: the cancel is refused whole, the run untouched.
    let leased = lease_one(store, "reserve-stock", T0 + 10).await;
    let refused = store.update_run(update.clone()).await.unwrap_err();
    assert!(matches!(refused, Error::InvalidState(_)), "{refused:?}");
    assert_eq!(store.get_run("01RUN1").await.unwrap().unwrap(), run);
    assert!(store.get_event("01EV").await.unwrap().is_none());

    // Back in the queue (its attempt failed): cancelled with the run change.
    let retry = Transition::Retry { due_at: T0 + 1_000, delay_ms: 900, error: "503".into() };
    fail_once(store, &leased, T0 + 30, retry).await;
    store.update_run(update).await.unwrap();
    assert_eq!(store.get(&first.id).await.unwrap().unwrap().status, Status::Cancelled);
    assert_eq!(store.get_run("01RUN1").await.unwrap().unwrap().status, RunStatus::Compensated);
    assert!(store.get_event("01EV").await.unwrap().is_some(), "the run's event is published with it");
}

pub async fn runs_list_newest_first_by_workflow_and_status(store: &dyn Store) {
    for id in ["01RUN1", "01RUN2", "01RUN3"] {
        started(store, id, None).await;
    }
    let mut other = started_other(store).await;
    other.status = RunStatus::Succeeded;
    let ids = |page: crate::store::Page<Run>| page.items.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = store.list_runs(RunFilter::default()).await.unwrap();
    assert_eq!(ids(all), ["01RUN4", "01RUN3", "01RUN2", "01RUN1"]);
    let checkout = RunFilter { workflow: Some("checkout".into()), limit: 2, ..Default::default() };
    let first = store.list_runs(checkout.clone()).await.unwrap();
    assert_eq!(first.next_cursor.as_deref(), Some("01RUN2"));
    assert_eq!(ids(first), ["01RUN3", "01RUN2"]);
    let rest = store.list_runs(RunFilter { cursor: Some("01RUN2".into()), ..checkout }).await.unwrap();
    assert_eq!((ids(rest.clone()), rest.next_cursor), (vec!["01RUN1".to_string()], None));
    let running = RunFilter { status: Some(RunStatus::Running), workflow: Some("refund".into()), ..Default::default() };
    assert_eq!(ids(store.list_runs(running).await.unwrap()), ["01RUN4"]);
    let none = RunFilter { status: Some(RunStatus::Failed), ..Default::default() };
    assert!(store.list_runs(none).await.unwrap().items.is_empty());
}

async fn started_other(store: &dyn Store) -> Run {
    let mut new_id = ids("01O");
    let (run, first) = Run::new("01RUN4".into(), "refund", definition(), json!(null), None, None, T0, &mut new_id);
    store.start_run(run.clone(), invocation_of(&first, T0)).await.unwrap();
    run
}

pub async fn a_dead_step_is_not_redriven_but_its_dead_compensation_is(store: &dyn Store) {
    let (run, first) = started(store, "01RUN1", None).await;
    let leased = lease_one(store, "reserve-stock", T0 + 10).await;
    let die = Transition::Die { error: "HTTP 422".into(), response: None };
    fail_once(store, &leased, T0 + 20, die.clone()).await;
    // Its compensation, dead too (stored as the state machine would start it).
    let mut undo = new_inv("01UNDO", "release", T0);
    undo.workflow = Some(StepRef { run: run.id.clone(), step: "reserve".into(), compensate: true });
    store.enqueue(undo).await.unwrap();
    let undo = lease_one(store, "release", T0 + 30).await;
    fail_once(store, &undo, T0 + 40, die).await;

    let refused = store.redrive(&first.id, T0 + 50).await.unwrap_err();
    assert!(matches!(&refused, Error::InvalidState(why) if why.contains("start a new run")), "{refused:?}");
    let all = store.redrive_matching(ListFilter::default(), T0 + 50).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["01UNDO"], "a bulk redrive takes the compensation and leaves the step");
    assert_eq!(store.get(&first.id).await.unwrap().unwrap().status, Status::Dead);
}
