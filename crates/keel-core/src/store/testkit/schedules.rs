//! Conformance of the schedules table ([`crate::store::ScheduleStore`]): a tick is taken once,
//! with its work in the same transaction; pause and resume hold for every node.

use super::*;
use crate::store::{ScheduleState, Tick, TickTaken, TickWork};

fn tick(schedule: &str, at: Millis, work: Option<TickWork>) -> Tick {
    Tick { schedule: schedule.into(), at, work, now: at + 100 }
}

/// The invocation a tick of `schedule` at `at` makes, with its id.
fn tick_invocation(schedule: &str, id: &str, at: Millis) -> Option<TickWork> {
    let mut inv = new_inv(id, "report", at);
    inv.idempotency_key = Some(crate::schedule::tick_key(schedule, at));
    Some(TickWork::Invocation(inv))
}

async fn state_of(store: &dyn Store, name: &str) -> ScheduleState {
    let states = store.schedules().await.unwrap();
    states.into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no state of schedule {name}"))
}

pub async fn a_tick_is_taken_once_with_its_work(store: &dyn Store) {
    store.arm_schedules(vec!["nightly".into(), "hourly".into()], T0).await.unwrap();
    assert_eq!(
        store.schedules().await.unwrap(),
        [
            ScheduleState { name: "hourly".into(), last_tick: None, last_fired: None, armed_at: T0, paused_at: None },
            ScheduleState { name: "nightly".into(), last_tick: None, last_fired: None, armed_at: T0, paused_at: None },
        ],
        "by name, armed when first seen"
    );
    let t1 = T0 + 60_000;
    let taken = store.take_tick(tick("nightly", t1, tick_invocation("nightly", "01T1", t1))).await.unwrap();
    assert_eq!(taken, TickTaken::Taken);
    let inv = store.get("01T1").await.unwrap().expect("the tick's invocation is stored with it");
    assert_eq!(inv.status, Status::Queued);
    assert_eq!(inv.idempotency_key.as_deref(), Some(crate::schedule::tick_key("nightly", t1).as_str()));

    // Another node (or this one after a restart) trying the same tick, or an earlier one.
    for at in [t1, t1 - 30_000] {
        let again = store.take_tick(tick("nightly", at, tick_invocation("nightly", "01T2", at))).await.unwrap();
        assert_eq!(again, TickTaken::AlreadyTaken, "tick {at}");
    }
    assert!(store.get("01T2").await.unwrap().is_none(), "a tick taken before stores nothing more");

    // A missed tick is taken without work: it moves the last tick, not the last fire.
    let t2 = t1 + 60_000;
    assert_eq!(store.take_tick(tick("nightly", t2, None)).await.unwrap(), TickTaken::Taken);
    assert_eq!(store.take_tick(tick("nightly", t2, None)).await.unwrap(), TickTaken::AlreadyTaken);
    let state = state_of(store, "nightly").await;
    assert_eq!((state.last_tick, state.last_fired, state.since()), (Some(t2), Some(t1), t2));
    assert_eq!(state_of(store, "hourly").await.last_tick, None, "schedules are apart");

    // Arming again (a restart) keeps what each schedule has; a new one is armed now.
    store.arm_schedules(vec!["nightly".into(), "weekly".into()], T0 + 500_000).await.unwrap();
    assert_eq!(state_of(store, "nightly").await, state);
    assert_eq!(state_of(store, "weekly").await.armed_at, T0 + 500_000);

    // A schedule the store has not seen yet is armed by its first tick.
    let t3 = T0 + 900_000;
    assert_eq!(store.take_tick(tick("unarmed", t3, None)).await.unwrap(), TickTaken::Taken);
    assert_eq!(state_of(store, "unarmed").await.last_tick, Some(t3));
}

pub async fn a_tick_can_publish_an_event(store: &dyn Store) {
    let at = T0 + 1_000;
    let mut ev =
        event("01EV", &crate::schedule::tick_key("ticker", at), vec![delivery_of("01EV", "log", "01D1", "f", None)]);
    ev.hops = 0;
    assert_eq!(store.take_tick(tick("ticker", at, Some(TickWork::Event(ev)))).await.unwrap(), TickTaken::Taken);
    let stored = store.get_event("01EV").await.unwrap().expect("the tick's event is stored with it");
    assert_eq!(stored.deliveries.len(), 1);
    assert_eq!(state_of(store, "ticker").await.last_fired, Some(at));
}

pub async fn a_paused_schedule_takes_no_tick_until_resumed(store: &dyn Store) {
    store.arm_schedules(vec!["nightly".into()], T0).await.unwrap();
    store.set_schedule_paused("nightly", true, T0 + 10).await.unwrap();
    store.set_schedule_paused("nightly", true, T0 + 20).await.unwrap();
    assert_eq!(state_of(store, "nightly").await.paused_at, Some(T0 + 10), "the first pause is kept");
    let at = T0 + 60_000;
    let paused = store.take_tick(tick("nightly", at, tick_invocation("nightly", "01P1", at))).await.unwrap();
    assert_eq!(paused, TickTaken::Paused);
    assert!(store.get("01P1").await.unwrap().is_none(), "a paused schedule stores nothing");
    assert_eq!(state_of(store, "nightly").await.last_tick, None);

    store.set_schedule_paused("nightly", false, T0 + 70_000).await.unwrap();
    let resumed = state_of(store, "nightly").await;
    assert_eq!((resumed.paused_at, resumed.armed_at), (None, T0 + 70_000), "armed again at the resume");
    store.set_schedule_paused("nightly", false, T0 + 80_000).await.unwrap();
    assert_eq!(state_of(store, "nightly").await.armed_at, T0 + 70_000, "resuming a running schedule changes nothing");
    let next = T0 + 120_000;
    let taken = store.take_tick(tick("nightly", next, tick_invocation("nightly", "01P2", next))).await.unwrap();
    assert_eq!(taken, TickTaken::Taken);
    assert!(store.get("01P2").await.unwrap().is_some());

    // Pausing a schedule not seen yet records it, paused.
    store.set_schedule_paused("fresh", true, T0 + 5).await.unwrap();
    assert_eq!(state_of(store, "fresh").await.paused_at, Some(T0 + 5));
}

pub async fn racing_nodes_take_a_tick_once(store: &dyn Store) {
    let at = T0 + 60_000;
    let try_tick = |id: &'static str| store.take_tick(tick("race", at, tick_invocation("race", id, at)));
    let (a, b, c, d) = tokio::join!(try_tick("01R1"), try_tick("01R2"), try_tick("01R3"), try_tick("01R4"));
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    assert_eq!(outcomes.iter().filter(|t| **t == TickTaken::Taken).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|t| **t == TickTaken::AlreadyTaken).count(), 3, "{outcomes:?}");
    let page = store.list(ListFilter { function: Some("report".into()), ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 1, "one invocation for the tick");
}
