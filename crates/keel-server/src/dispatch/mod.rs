//! The dispatcher: one task per function leases due invocations while the function has free
//! permits, runs each as an attempt, and applies the retry decision. It sleeps until new work is
//! signalled or the next retry comes due — never in a polling loop.

pub(crate) mod attempt;
pub(crate) mod batch;
pub(crate) mod behind;
mod deliveries;
mod sweeper;
pub(crate) mod sync;

pub(crate) use deliveries::{lease_deliveries, LeasedDelivery};
pub(crate) use sweeper::{purge_expired_keys, sweep_expired_leases};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::Millis;
use keel_core::invocation::{Invocation, Lease, Status, Transition};
use keel_core::store::{KeyLimit, LeaseRequest};
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::flow::KeyGuard;
use crate::functions::{Admitted, Function, Pass, Slot, Turn};
use crate::state::Shared;

/// Most invocations leased in one store call.
const MAX_LEASE_BATCH: usize = 256;
/// A lease outlives the attempt's timeout by this much before another node may take it back.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// Pause after the store failed, before leasing again.
const STORE_BACKOFF: Duration = Duration::from_secs(1);

/// How long a lease of `function`'s lasts: past the attempt's timeout, by a margin. An item of a
/// batch function may first wait `max_wait` for company and then for a request in flight to end
/// (at most a timeout) before its own call: its lease covers those waits too.
fn lease_for(function: &Function) -> Millis {
    let config = &function.config;
    let waits = config.batch.map_or(std::time::Duration::ZERO, |b| b.max_wait + config.timeout);
    (config.timeout + waits + LEASE_MARGIN).as_millis() as Millis
}

/// A lease taken at `now` by this node, for an invocation leased at admission.
pub(crate) fn lease_at(shared: &Shared, function: &Function, now: Millis) -> Lease {
    Lease { owner: shared.node_id.clone(), leased_at: now, expires_at: now + lease_for(function) }
}

/// Runs an attempt of `invocation`, leased by this node, in a task of its own (or, for a batch
/// function, in the next batch), holding `slot` (the function's concurrency slot, and what flow
/// control gave it) until the function answered.
pub(crate) fn start(shared: Arc<Shared>, function: Arc<Function>, invocation: Invocation, slot: Slot) {
    if let Some(queue) = &function.batch {
        // A batch function's attempt goes out with others: its queue's collector sends it.
        return queue.push(invocation, slot);
    }
    let span = crate::telemetry::attempt_span(&invocation);
    // Boxed: the attempt's future is large (the call to the function is in it), and the task
    // moved it whole several times on its way in and out of the runtime.
    let attempt = Box::pin(attempt::run(shared, function, invocation, slot));
    tokio::spawn(tracing::Instrument::instrument(attempt, span));
}

/// Pause between looks at an admission whose outcome is unknown, growing to the cap.
const RESOLVE_STEP: Duration = Duration::from_millis(250);
const RESOLVE_MAX: Duration = Duration::from_secs(5);

/// Longest an admission stored leased by this node waits, once durable, for a slot of its
/// function to free. Past it the function is busy with calls longer than a burst's, and the
/// invocation goes back to the store's queue for the dispatcher ([`start_admitted`]): what waits
/// in memory is counted `running` and cannot be cancelled, so it waits briefly. Well within the
/// lease's margin, which covers the wait and then the call.
pub(crate) const SLOT_WAIT: Duration = Duration::from_secs(1);
const _: () = assert!(SLOT_WAIT.as_millis() * 4 <= LEASE_MARGIN.as_millis());

/// Starts `invocation`, just stored leased by this node at its admission, on a slot: the one
/// free now, else the next to free, in turn ([`Admitted::next_slot`]). Flow control is asked
/// again before it starts, whether it waited or not (paused, breaker no longer closed). One
/// that got no slot within [`SLOT_WAIT`], or that flow control now holds back, goes back to
/// the store's queue, due now and with no attempt counted, for the dispatcher to lease when it
/// may.
pub(crate) fn start_admitted(shared: Arc<Shared>, function: Arc<Function>, invocation: Invocation, admitted: Admitted) {
    let admitted = match admitted.slot_now(&function, shared.clock.now_ms()) {
        Turn::Start(slot) => return start(shared, function, invocation, slot),
        Turn::NoSlot(admitted) => Some(admitted),
        Turn::HeldBack => None,
    };
    tokio::spawn(async move {
        let why = match admitted {
            None => HELD_BACK,
            Some(admitted) => match admitted.next_slot(&function, SLOT_WAIT, &*shared.clock).await {
                Turn::Start(slot) => return start(shared, function, invocation, slot),
                Turn::HeldBack => HELD_BACK,
                // Its room is given back before the store is asked.
                Turn::NoSlot(_) => "no slot of its function freed within SLOT_WAIT of its admission",
            },
        };
        put_back(&shared, &function, &invocation, why).await;
    });
}

/// Why an admission goes back to the queue unattempted when flow control holds it back.
const HELD_BACK: &str = "its function was paused, or its breaker opened, since it was admitted";

/// Gives `invocation`, leased by this node and never attempted, back to the store's queue (due
/// now, no attempt counted: [`Transition::Requeue`]) and wakes the dispatcher. Should that fail,
/// its lease runs out and the sweeper takes it back, as for a node that stopped.
async fn put_back(shared: &Shared, function: &Function, invocation: &Invocation, why: &str) {
    tracing::debug!(invocation_id = %invocation.id, function = %function.config.name, why, "an admission goes back to the queue");
    let completion = attempt::completion_of(shared, invocation, None, Transition::Requeue, None);
    let lease_expires_at = invocation.lease.as_ref().map(|l| l.expires_at);
    if let attempt::Recorded::Yes = attempt::record(shared, completion, None, lease_expires_at, false).await {
        function.flow.queued(1);
        function.work_queued();
    }
}

/// An admission stored leased by this node whose commit the store never confirmed
/// ([`keel_core::Error::OutcomeUnknown`]): once the store answers again, it starts as
/// [`start_admitted`] starts one, if it was stored and is still this node's, never tried; else
/// its room is given back. It holds its room meanwhile, not a slot. Without this, a stored one
/// would sit `running`, unattempted, until its lease ran out.
pub(crate) fn start_if_stored(shared: Arc<Shared>, function: Arc<Function>, id: String, admitted: Admitted) {
    tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + Duration::from_millis(lease_for(&function) as u64);
        let mut pause = RESOLVE_STEP;
        loop {
            match shared.store.get(&id).await {
                Ok(Some(inv))
                    if inv.status == Status::Running
                        && inv.attempt_count == 0
                        && inv.lease.as_ref().is_some_and(|l| l.owner == shared.node_id) =>
                {
                    tracing::info!(invocation_id = %id, "an admission whose commit was unconfirmed was stored: starting it");
                    return start_admitted(shared, function, inv, admitted);
                }
                // Not stored (the client was told so may retry), or no longer ours to start.
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::debug!(invocation_id = %id, error = %e, "store still unavailable; looking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RESOLVE_MAX);
                }
                // The lease runs out: the sweeper takes it back, like any lease of a stalled node.
                Err(_) => return,
            }
        }
    });
}

/// Runs `function`'s dispatcher until `stop` turns true.
///
/// Before each lease, flow control says how many attempts may start ([`Flow::async_turns`]):
/// none while the function is paused or its breaker open, only probes while it is half-open,
/// no more than the rate limit has turns for. Work held back stays in the store, due, with no
/// attempt counted.
///
/// [`Flow::async_turns`]: crate::flow::Flow::async_turns
pub(crate) async fn run(shared: Arc<Shared>, function: Arc<Function>, mut stop: watch::Receiver<bool>) {
    let lease_for = lease_for(&function);
    let flow = &function.flow;
    loop {
        let first = tokio::select! {
            permit = function.permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut permits = Held::new(&function, first);
        permits.take_more(MAX_LEASE_BATCH);
        let now = shared.clock.now_ms();
        let turns = flow.async_turns(now, permits.len());
        if turns.allowed == 0 {
            drop(permits);
            tokio::select! {
                _ = function.wake.notified() => {}
                _ = sleep_or_forever(turns.wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        permits.truncate(turns.allowed);
        let wanted = permits.len();
        let request = LeaseRequest {
            function: function.config.name.clone(),
            owner: shared.node_id.clone(),
            now,
            expires_at: now + lease_for,
            limit: wanted,
            keys: flow.keys.as_ref().map(|k| KeyLimit { limit: k.limit(), running: k.snapshot() }),
        };
        let leased = match shared.store.lease(request).await {
            Ok(leased) => leased,
            Err(e) => {
                tracing::warn!(function = %function.config.name, error = %e, "leasing failed; retrying");
                flow.cancel_probes(turns.probes);
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(STORE_BACKOFF) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        let got = leased.invocations.len();
        flow.cancel_probes(turns.probes.saturating_sub(got));
        for (i, invocation) in leased.invocations.into_iter().enumerate() {
            let permit: OwnedSemaphorePermit = permits.hand_out().expect("one permit per leased invocation");
            flow.take_turn(now);
            let key = match (&invocation.concurrency_key, &flow.keys) {
                (Some(key), Some(keys)) => {
                    keys.enter(key);
                    Some(KeyGuard::counted(function.clone(), key.clone()))
                }
                _ => None,
            };
            let pass = Pass { probe: i < turns.probes, key };
            start(shared.clone(), function.clone(), invocation, Slot { permit, pass });
        }
        drop(permits);
        if got == wanted {
            continue;
        }
        function.nothing_due();
        let sleep = leased.next_due_at.map(|due| Duration::from_millis((due - now).max(0) as u64));
        tokio::select! {
            _ = function.wake.notified() => {}
            _ = sleep_or_forever(sleep) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The permits the dispatcher holds for the lease it is about to ask for, counted in
/// [`Function::reserved`] while it holds them: kept room, not attempts in flight. Each permit
/// leaves the count as it is handed to an attempt (then it is in flight) or given back.
struct Held<'a> {
    function: &'a Function,
    permits: Vec<OwnedSemaphorePermit>,
}

impl<'a> Held<'a> {
    fn new(function: &'a Function, first: OwnedSemaphorePermit) -> Self {
        function.reserved.fetch_add(1, Ordering::SeqCst);
        Self { function, permits: vec![first] }
    }

    /// Takes the permits that are free, up to `up_to` in all. Each is counted before it is
    /// taken, so that `in_flight` may miss one for a moment but never counts one held here.
    fn take_more(&mut self, up_to: usize) {
        while self.permits.len() < up_to {
            self.function.reserved.fetch_add(1, Ordering::SeqCst);
            match self.function.permits.clone().try_acquire_owned() {
                Ok(p) => self.permits.push(p),
                Err(_) => {
                    self.function.reserved.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.permits.len()
    }

    /// Gives back all but `n`.
    fn truncate(&mut self, n: usize) {
        let before = self.permits.len();
        self.permits.truncate(n);
        self.function.reserved.fetch_sub(before - self.permits.len(), Ordering::SeqCst);
    }

    /// One permit for an attempt about to start: in flight from now on.
    fn hand_out(&mut self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.pop()?;
        self.function.reserved.fetch_sub(1, Ordering::SeqCst);
        Some(permit)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let n = self.permits.len();
        self.permits.clear();
        self.function.reserved.fetch_sub(n, Ordering::SeqCst);
    }
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::{Held, MAX_LEASE_BATCH, SLOT_WAIT};
    use crate::functions::{Functions, Turn};
    use crate::system_events::SystemEvents;

    fn functions(concurrency: u32) -> Functions {
        functions_with(&format!("concurrency = {concurrency}\n"))
    }

    fn functions_with(settings: &str) -> Functions {
        let text = format!("[functions.f]\nurl = \"http://127.0.0.1:9/\"\n{settings}");
        let config = keel_core::config::load_str("keel.toml", &text, &Default::default()).expect("the config");
        Functions::from_config(&config, 0, &SystemEvents::detached())
    }

    /// An async admission takes room, not a slot: with every slot taken by calls it is still
    /// admitted to start once durable, waits its turn for the next slot, and gives up after
    /// `SLOT_WAIT`. Room is `concurrency` admissions; past it they are stored queued.
    #[tokio::test(start_paused = true)]
    async fn admissions_take_room_not_slots_and_wait_in_turn_for_the_next_slot() {
        let functions = functions(2);
        let f = functions.get("f").expect("f");
        f.nothing_due(); // as after the dispatcher's first lease
        let calls = [f.permits.clone().try_acquire_owned().unwrap(), f.permits.clone().try_acquire_owned().unwrap()];
        let first = f.admit_now(None, 0).expect("room with every slot taken");
        let second = f.admit_now(None, 0).expect("room for a second");
        assert!(f.admit_now(None, 0).is_none(), "room for `concurrency` admissions only");
        assert_eq!(f.in_flight(), 2, "admissions are not calls in flight");
        let Turn::NoSlot(first) = first.slot_now(f, 0) else { panic!("no slot free") };
        let (f1, f2) = (f.clone(), f.clone());
        let clock = keel_core::clock::ManualClock::new(0);
        let c1 = clock.clone();
        let first = tokio::spawn(async move { first.next_slot(&f1, SLOT_WAIT, &c1).await });
        tokio::task::yield_now().await;
        let second = tokio::spawn(async move { second.next_slot(&f2, SLOT_WAIT, &clock).await });
        tokio::task::yield_now().await;
        let [call, _still_running] = calls;
        drop(call);
        let Turn::Start(slot) = first.await.unwrap() else { panic!("the first in line takes the slot that freed") };
        assert!(f.admit_now(None, 0).is_some(), "its room is free again");
        tokio::time::advance(SLOT_WAIT + Duration::from_millis(1)).await;
        let Turn::NoSlot(second) = second.await.unwrap() else { panic!("no slot within SLOT_WAIT: given up") };
        drop(second);
        assert_eq!(f.in_flight(), 2, "the running call and the first admission's attempt");
        drop(slot);
    }

    /// Flow control passed an admission before its commit. If the breaker opened meanwhile (the
    /// attempts that failed ran on the slots it did not hold) or the function was paused, it is
    /// held back once durable, though a slot is free: it goes back to the queue, and gives its
    /// room back.
    #[test]
    fn an_admission_is_held_back_once_durable_if_its_breaker_opened_or_its_function_paused_since() {
        let breaker = "breaker = { consecutive_failures = 1, open_for = \"1s\", half_open_probes = 1 }\n";
        let with_breaker = functions_with(&format!("concurrency = 1\n{breaker}"));
        let f = with_breaker.get("f").expect("f");
        f.nothing_due();
        let admitted = f.admit_now(None, 0).expect("room, the breaker closed");
        f.flow.attempt_ended(0, keel_core::outcome::Outcome::Transient, false);
        assert!(matches!(admitted.slot_now(f, 1), Turn::HeldBack), "the breaker opened since");
        assert_eq!(f.permits.available_permits(), 1, "the free slot was not taken");
        assert!(f.admit_now(None, 1).is_none(), "the breaker is open: no admission starts");

        let plain = functions(1);
        let f = plain.get("f").expect("f");
        f.nothing_due();
        let admitted = f.admit_now(None, 0).expect("room");
        f.flow.set_paused(true);
        assert!(matches!(admitted.slot_now(f, 0), Turn::HeldBack), "paused since");
        f.flow.set_paused(false);
        let admitted = f.admit_now(None, 0).expect("its room was given back");
        assert!(matches!(admitted.slot_now(f, 0), Turn::Start(_)), "resumed: it starts on the free slot");
    }

    /// An admission that waited for a slot is asked again once it has one: the breaker opened
    /// while it waited, so it is held back and the slot that freed stays free.
    #[tokio::test(start_paused = true)]
    async fn an_admission_that_waited_is_held_back_if_the_breaker_opened_while_it_waited() {
        let breaker = "breaker = { consecutive_failures = 1, open_for = \"1s\", half_open_probes = 1 }\n";
        let functions = functions_with(&format!("concurrency = 1\n{breaker}"));
        let f = functions.get("f").expect("f");
        f.nothing_due();
        let call = f.permits.clone().try_acquire_owned().unwrap();
        let admitted = f.admit_now(None, 0).expect("room, the breaker closed");
        let Turn::NoSlot(admitted) = admitted.slot_now(f, 0) else { panic!("the one slot is taken") };
        let f1 = f.clone();
        let clock = keel_core::clock::ManualClock::new(0);
        let waiting = tokio::spawn(async move { admitted.next_slot(&f1, SLOT_WAIT, &clock).await });
        tokio::task::yield_now().await;
        f.flow.attempt_ended(0, keel_core::outcome::Outcome::Transient, false);
        drop(call);
        assert!(matches!(waiting.await.unwrap(), Turn::HeldBack), "the breaker opened while it waited");
        assert_eq!(f.permits.available_permits(), 1, "the slot that freed is free");
    }

    /// With due work waiting for the dispatcher an admission is stored queued behind it, room
    /// or not.
    #[test]
    fn an_admission_does_not_overtake_due_work() {
        let functions = functions(2);
        let f = functions.get("f").expect("f");
        assert!(f.admit_now(None, 0).is_none(), "due work unknown until the dispatcher's first lease");
        f.nothing_due();
        assert!(f.admit_now(None, 0).is_some());
        f.work_queued();
        assert!(f.admit_now(None, 0).is_none());
        f.nothing_due();
        assert!(f.admit_now(None, 0).is_some());
    }

    /// What `GET /v1/functions/{name}` reports as `in_flight` while the dispatcher holds permits
    /// for a lease: only the attempts running, at every step of the hold.
    #[test]
    fn permits_held_for_a_lease_are_not_counted_in_flight() {
        let functions = functions(4);
        let f = functions.get("f").expect("f");
        let running = f.permits.clone().try_acquire_owned().expect("a free permit");
        assert_eq!(f.in_flight(), 1);
        let first = f.permits.clone().try_acquire_owned().expect("a free permit");
        let mut held = Held::new(f, first);
        held.take_more(MAX_LEASE_BATCH);
        assert_eq!((held.len(), f.permits.available_permits()), (3, 0), "every free permit held");
        assert_eq!(f.in_flight(), 1, "held for a lease is not in flight");
        let started = held.hand_out().expect("a held permit");
        assert_eq!(f.in_flight(), 2, "handed to an attempt: in flight");
        held.truncate(1);
        assert_eq!((f.permits.available_permits(), f.in_flight()), (1, 2), "one given back");
        drop(held);
        assert_eq!((f.permits.available_permits(), f.in_flight()), (2, 2), "the rest given back");
        assert_eq!(f.reserved.load(Ordering::SeqCst), 0);
        drop((running, started));
        assert_eq!(f.in_flight(), 0);
    }
}
