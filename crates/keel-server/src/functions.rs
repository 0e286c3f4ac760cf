//! The live side of each configured function: its bulkhead (the `concurrency` permits that sync
//! calls, async admissions and the dispatcher share), the room of async admissions started on
//! this node, and the signal that wakes its dispatcher.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::config::{Config, FunctionConfig};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One function's configuration and live state.
#[derive(Debug)]
pub(crate) struct Function {
    pub(crate) config: FunctionConfig,
    /// At most `slots` attempts in flight, sync and async together.
    pub(crate) permits: Arc<Semaphore>,
    /// Room for `slots` async admissions stored leased by this node, from before their commit
    /// until they have a slot ([`Function::admit_now`]). An admission awaiting its commit is not
    /// a call in flight, so it takes room here, not a slot: with slots taken by admissions, a
    /// client with as many requests in flight as the function's `concurrency` found none free
    /// and had most of its work go through the store's queue and the dispatcher (BENCHMARKS.md,
    /// "Admissions take room, not slots"). Bounded, so that what waits in memory for a slot
    /// stays small; a drain takes all of it first.
    pub(crate) admitting: Arc<Semaphore>,
    /// Attempts that may be in flight: `concurrency`, or `concurrency × batch.max_size` for a
    /// batch function ([`FunctionConfig::attempt_slots`]).
    pub(crate) slots: u32,
    /// A batch function's queue of leased items waiting to go out in a batch (`dispatch/batch.rs`).
    pub(crate) batch: Option<crate::dispatch::batch::BatchQueue>,
    /// Wakes the dispatcher: new work, a finished attempt, a redrive.
    pub(crate) wake: Notify,
    /// One permit per attempt whose function answered but whose outcome is not recorded yet, at
    /// most `slots` of them. An attempt takes one before it gives its concurrency permit
    /// back, so the next call need not wait for a commit, while a node never holds more than
    /// 2 × `slots` unrecorded attempts (what a crash of it can make run again); a drain
    /// waits on these too.
    pub(crate) unrecorded: Arc<Semaphore>,
    /// Pause, shedding, rate limit, per-key concurrency, breaker, queue cap (`flow.rs`).
    pub(crate) flow: crate::flow::Flow,
    /// Whether due work may be waiting in the store for the dispatcher (set by whatever queues
    /// work, cleared by the dispatcher when a lease found no more). While it may, an admission
    /// queues behind that work instead of taking a free slot at once.
    due: AtomicBool,
    /// Permits the dispatcher holds while it asks flow control and the store for work to start
    /// with them ([`crate::dispatch`]'s `Held`): room kept, not attempts in flight, so
    /// [`Function::in_flight`] leaves them out.
    pub(crate) reserved: AtomicUsize,
}

/// A concurrency slot with what flow control gave the attempt that will use it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) pass: Pass,
}

/// An async admission stored leased by this node: its room among those admitted so
/// ([`Function::admitting`]) and what flow control gave it. Once the admission is durable it
/// takes a slot, free now or the next one to free ([`Admitted::next_slot`]).
#[derive(Debug)]
pub(crate) struct Admitted {
    #[expect(dead_code, reason = "held, never read: dropping it gives the room back")]
    room: OwnedSemaphorePermit,
    pass: Pass,
}

/// What an admission finds once it is durable: when a slot is free now
/// ([`Admitted::slot_now`]), or once it has waited for the next ([`Admitted::next_slot`]).
#[derive(Debug)]
pub(crate) enum Turn {
    /// A slot, and flow control still lets the attempt start: it starts on it.
    Start(Slot),
    /// No slot: every one taken now, or none freed within the wait. It may wait (for the next
    /// one), or go back to the queue (after a wait).
    NoSlot(Admitted),
    /// Flow control holds it back now: the function was paused, or its breaker opened, since
    /// it was admitted. Its room (and its key's) is given back.
    HeldBack,
}

impl Admitted {
    /// A slot of `function` if one is free now, and flow control still lets the attempt start.
    /// Flow control passed the admission before its commit; the attempts that ran meanwhile, on
    /// the slots it did not hold, may have opened the breaker (with `concurrency = 1`, one more
    /// call reached a function whose breaker had just opened). [`Admitted::next_slot`] asks
    /// again after its wait.
    pub(crate) fn slot_now(self, function: &Function, now: keel_core::clock::Millis) -> Turn {
        if function.flow.holds_back(now) {
            return Turn::HeldBack;
        }
        match function.permits.clone().try_acquire_owned() {
            Ok(permit) => Turn::Start(Slot { permit, pass: self.pass }),
            Err(_) => Turn::NoSlot(self),
        }
    }

    /// The next slot of `function` to free, in turn with everything else waiting for one (sync
    /// calls, the dispatcher, other admissions), and flow control asked again once it has one.
    /// [`Turn::NoSlot`] when none freed within `limit`, or the function's slots are closed. The
    /// room is held until then.
    pub(crate) async fn next_slot(
        self,
        function: &Function,
        limit: Duration,
        clock: &dyn keel_core::clock::Clock,
    ) -> Turn {
        match tokio::time::timeout(limit, function.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) if function.flow.holds_back(clock.now_ms()) => {
                drop(permit);
                Turn::HeldBack
            }
            Ok(Ok(permit)) => Turn::Start(Slot { permit, pass: self.pass }),
            Ok(Err(_)) | Err(_) => Turn::NoSlot(self),
        }
    }
}

/// What flow control gave one async attempt: whether it is a breaker probe, and its room under
/// its `concurrency_key` value (held until the function answered).
#[derive(Debug, Default)]
pub(crate) struct Pass {
    pub(crate) probe: bool,
    #[expect(dead_code, reason = "held, never read: dropping it frees the key's room")]
    pub(crate) key: Option<crate::flow::KeyGuard>,
}

/// Calls in flight from which a function counts as busy (PostgreSQL's `commit_siblings`).
const BUSY_FROM: usize = 4;

impl Function {
    /// Attempts running now, sync and async: the permits taken, less those the dispatcher holds
    /// for a lease it has not started. Without that, `GET /v1/functions/{name}` showed nearly
    /// every slot in flight whenever it came while the dispatcher held them (asking the store,
    /// or finding the breaker open and giving them back), with nothing running.
    pub(crate) fn in_flight(&self) -> usize {
        let taken = self.slots as usize - self.permits.available_permits();
        taken.saturating_sub(self.reserved.load(Ordering::SeqCst))
    }

    /// Whether other calls are in flight: then an attempt's outcome may wait briefly to share
    /// its commit (and fsync) with theirs, saving the CPU the load needs. With a few calls in
    /// flight there is CPU to spare, and the outcome commits at once. A sync call's record,
    /// which nothing waits on, always shares (`dispatch::behind`).
    pub(crate) fn busy(&self) -> bool {
        self.in_flight() >= BUSY_FROM
    }

    /// Work was queued (or made due again): the dispatcher leases it.
    pub(crate) fn work_queued(&self) {
        self.due.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The dispatcher's last lease took every due invocation it could see.
    pub(crate) fn nothing_due(&self) {
        self.due.store(false, Ordering::SeqCst);
    }

    /// Room for an async invocation being admitted (alone, in a bulk admission, or as an event's
    /// delivery), to store it leased by this node and start it once it is durable, on the first
    /// slot free then ([`Admitted`]): only when no due work waits for the dispatcher (which it
    /// would overtake), there is room, and flow control lets it start now (not paused, breaker
    /// closed, a rate turn and room for its key). Else it is stored queued, for the dispatcher.
    pub(crate) fn admit_now(self: &Arc<Self>, key: Option<&str>, now: keel_core::clock::Millis) -> Option<Admitted> {
        if self.due.load(Ordering::SeqCst) {
            return None;
        }
        let room = self.admitting.clone().try_acquire_owned().ok()?;
        Some(Admitted { room, pass: self.pass_now(key, now)? })
    }

    /// What flow control gives an attempt starting now: room for its key and a rate turn, when
    /// the function is not paused and its breaker is closed.
    fn pass_now(self: &Arc<Self>, key: Option<&str>, now: keel_core::clock::Millis) -> Option<Pass> {
        let key = match (key, &self.flow.keys) {
            (Some(key), Some(keys)) => {
                if !keys.try_enter(key) {
                    return None;
                }
                Some(crate::flow::KeyGuard::counted(self.clone(), key.to_owned()))
            }
            _ => None,
        };
        if !self.flow.may_start_now(now) {
            return None;
        }
        Some(Pass { probe: false, key })
    }

    /// An attempt gave its slot back: the dispatcher wants it only if due work may be waiting.
    pub(crate) fn slot_freed(&self) {
        if self.due.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

/// Every configured function by name.
#[derive(Debug, Default)]
pub(crate) struct Functions(BTreeMap<String, Arc<Function>>);

impl Functions {
    pub(crate) fn from_config(
        config: &Config,
        now: keel_core::clock::Millis,
        events: &crate::system_events::SystemEvents,
    ) -> Self {
        Self(
            config
                .functions
                .iter()
                .map(|(name, f)| {
                    let slots = f.attempt_slots();
                    let function = Function {
                        config: f.clone(),
                        permits: Arc::new(Semaphore::new(slots as usize)),
                        admitting: Arc::new(Semaphore::new(slots as usize)),
                        slots,
                        batch: f.batch.map(|batch| crate::dispatch::batch::BatchQueue::new(batch, f.concurrency)),
                        wake: Notify::new(),
                        unrecorded: Arc::new(Semaphore::new(slots as usize)),
                        flow: crate::flow::Flow::new(name, f.flow.clone(), slots, now, events),
                        // Unknown until the dispatcher's first lease (work left from before a
                        // restart, or queued by other nodes).
                        due: AtomicBool::new(true),
                        reserved: AtomicUsize::new(0),
                    };
                    (name.clone(), Arc::new(function))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Function>> {
        self.0.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Function>> {
        self.0.values()
    }

    /// Wakes the dispatcher of `name` to lease work queued for it, if that function is configured.
    pub(crate) fn wake(&self, name: &str) {
        if let Some(f) = self.0.get(name) {
            f.work_queued();
        }
    }
}
