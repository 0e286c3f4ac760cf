//! Flow control of each function, live: whether it is paused, the sync callers waiting for a
//! slot, its breaker and rate limiter (pure state machines from `keel_core::flow`, fed the time),
//! the attempts in flight per `concurrency_key` value, and the backlog estimate `max_queued` is
//! checked against. Sync calls go through [`Flow::gate_sync`] before their first attempt;
//! the dispatcher asks [`Flow::async_turns`] how many attempts it may start before it leases.
//!
//! Everything here is per node: a cluster's nodes each keep their own breaker, limiter and key
//! counts (a limit is per node; pause is stored and applies to all).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_core::clock::Millis;
use keel_core::flow::breaker::{Admit, Breaker, BreakerState, BreakerView};
use keel_core::flow::rate::Gcra;
use keel_core::flow::FlowConfig;
use keel_core::outcome::Outcome;
use tokio::sync::{watch, Notify};

use crate::functions::Function;
use crate::state::Shared;

/// Why a call was not admitted. Each is answered with its own problem and counted by reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The function is paused: 503 `function-paused`.
    Paused,
    /// Its breaker is open: 503 `breaker-open`.
    BreakerOpen { retry_after: Duration },
    /// No slot can be had in time, or too many callers wait already: 503 `overloaded`.
    Overloaded { retry_after: Duration, why: String },
    /// Its turn under the rate limit comes after the deadline: 429 `rate-limited`.
    RateLimited { retry_after: Duration },
    /// `max_queued` reached: 429 `queue-full`.
    QueueFull { retry_after: Duration, queued: u64 },
}

/// Every reason of [`Shed`], as metrics and problem types name them.
pub(crate) const SHED_REASONS: [&str; 5] =
    ["function-paused", "breaker-open", "overloaded", "rate-limited", "queue-full"];

impl Shed {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Shed::Paused => SHED_REASONS[0],
            Shed::BreakerOpen { .. } => SHED_REASONS[1],
            Shed::Overloaded { .. } => SHED_REASONS[2],
            Shed::RateLimited { .. } => SHED_REASONS[3],
            Shed::QueueFull { .. } => SHED_REASONS[4],
        }
    }

    /// When to try again; `None` when no time can be told (a pause lasts until resumed).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Shed::Paused => None,
            Shed::BreakerOpen { retry_after }
            | Shed::Overloaded { retry_after, .. }
            | Shed::RateLimited { retry_after }
            | Shed::QueueFull { retry_after, .. } => Some(*retry_after),
        }
    }
}

/// A function's live flow state.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) config: FlowConfig,
    concurrency: u32,
    paused: AtomicBool,
    /// Bumped by each pause or resume through this node, so a look at the store that began
    /// before it does not undo it.
    pause_changes: AtomicU64,
    /// Sync callers admitted that wait for a slot.
    waiting: AtomicU32,
    breaker: Option<ReportedBreaker>,
    rate: Option<Mutex<Gcra>>,
    pub(crate) keys: Option<KeySlots>,
    backlog: Option<Backlog>,
    /// A moving average of attempt durations, in microseconds (0 until the first attempt): what
    /// the expected wait for a slot is estimated from.
    typical_us: AtomicU64,
}

/// A breaker of one target (a function, a dependency) with the last state reported (metrics,
/// log): a move is reported once, whichever call makes it (`open` becomes `half-open` when the
/// first probe is asked for).
///
/// An outage is announced on `keel.system` once: `keel.breaker.opened` when it first opens,
/// `keel.breaker.closed` when it closes again (a failed probe that reopens it says nothing new).
#[derive(Debug)]
pub(crate) struct ReportedBreaker {
    target: String,
    of: BreakerOf,
    /// The breaker, the last state reported, and whether an opening was announced.
    tracked: Mutex<(Breaker, BreakerState, bool)>,
    events: crate::system_events::SystemEvents,
}

/// What a breaker guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerOf {
    Function,
    Dependency,
}

impl ReportedBreaker {
    pub(crate) fn new(
        target: &str,
        of: BreakerOf,
        config: keel_core::flow::BreakerConfig,
        now: Millis,
        events: &crate::system_events::SystemEvents,
    ) -> Self {
        let tracked = Mutex::new((Breaker::new(config, now), BreakerState::Closed, false));
        Self { target: target.to_owned(), of, tracked, events: events.clone() }
    }

    /// Runs `op` on the breaker and reports the move it made, if any.
    pub(crate) fn with<T>(&self, now: Millis, op: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut tracked = lock(&self.tracked);
        let out = op(&mut tracked.0);
        let view = tracked.0.view(now);
        if view.state != tracked.1 {
            tracked.1 = view.state;
            crate::metric_definitions::breaker_moved(&self.target, view.state);
            let announce = match view.state {
                BreakerState::Open if !tracked.2 => Some(keel_core::system_events::BREAKER_OPENED),
                BreakerState::Closed if tracked.2 => Some(keel_core::system_events::BREAKER_CLOSED),
                _ => None,
            };
            if let Some(kind) = announce {
                tracked.2 = view.state == BreakerState::Open;
                let of = match self.of {
                    BreakerOf::Function => "function",
                    BreakerOf::Dependency => "dependency",
                };
                let data = serde_json::json!({ of: self.target, "state": view.state.as_str() });
                self.events.emit(kind, &self.target, data);
            }
        }
        out
    }

    /// Gives back `n` probe places (never a change of state: nothing to report).
    fn cancel_probes(&self, n: usize) {
        let mut tracked = lock(&self.tracked);
        (0..n).for_each(|_| tracked.0.cancel_probe());
    }
}

/// Weight of the newest attempt in [`Flow::typical_us`].
const TYPICAL_WEIGHT: f64 = 0.1;

impl Flow {
    pub(crate) fn new(
        name: &str,
        config: FlowConfig,
        concurrency: u32,
        now: Millis,
        events: &crate::system_events::SystemEvents,
    ) -> Self {
        Self {
            breaker: config.breaker.map(|b| ReportedBreaker::new(name, BreakerOf::Function, b, now, events)),
            rate: config.rate_limit.map(|r| Mutex::new(Gcra::new(r))),
            keys: config.concurrency_key.as_ref().map(|k| KeySlots::new(k.limit)),
            backlog: config.max_queued.map(Backlog::new),
            config,
            concurrency,
            paused: AtomicBool::new(false),
            pause_changes: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            typical_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Sets the paused flag after the store took the change; true when it changed.
    pub(crate) fn set_paused(&self, paused: bool) -> bool {
        self.pause_changes.fetch_add(1, Ordering::AcqRel);
        self.paused.swap(paused, Ordering::AcqRel) != paused
    }

    /// Which pause changes this node has made so far ([`Flow::follow_store`] takes it).
    fn pause_seen(&self) -> u64 {
        self.pause_changes.load(Ordering::Acquire)
    }

    /// Sets the paused flag as the store had it, unless this node changed it since `seen`
    /// (the store was read before that change); true when it changed.
    fn follow_store(&self, paused: bool, seen: u64) -> bool {
        if self.pause_seen() != seen {
            return false;
        }
        self.paused.swap(paused, Ordering::AcqRel) != paused
    }

    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn breaker_view(&self, now: Millis) -> Option<BreakerView> {
        self.with_breaker(now, |b| b.view(now))
    }

    /// Runs `op` on the breaker, if there is one, and reports the move it made, if any.
    fn with_breaker<T>(&self, now: Millis, op: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        self.breaker.as_ref().map(|b| b.with(now, op))
    }

    /// How long a caller that finds `ahead` callers waiting before it can expect to wait for a
    /// slot: one typical attempt per round of `concurrency` callers.
    fn expected_wait(&self, ahead: u32) -> Duration {
        let typical = self.typical_us.load(Ordering::Relaxed);
        let rounds = u64::from(ahead) / u64::from(self.concurrency.max(1)) + 1;
        Duration::from_micros(typical.saturating_mul(rounds))
    }

    /// Records how long an attempt took, for the expected wait.
    pub(crate) fn observe(&self, took: Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.typical_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old as f64 * (1.0 - TYPICAL_WEIGHT) + sample as f64 * TYPICAL_WEIGHT) as u64
        };
        self.typical_us.store(new.max(1), Ordering::Relaxed);
    }

    /// Admits a sync call that has `time_left` until its deadline, or says why not — at once,
    /// never after waiting. `slot_free`: a concurrency slot is free now.
    pub(crate) fn gate_sync(&self, now: Millis, time_left: Duration, slot_free: bool) -> Result<SyncPass<'_>, Shed> {
        if self.is_paused() {
            return Err(Shed::Paused);
        }
        let mut pass = SyncPass { flow: self, waiting: false, probe: false, turn_at: None };
        if !slot_free {
            let max = self.config.max_waiting;
            // A place is taken in one step: two callers that both see the last place free cannot
            // both take it (a load and then an add let `max_waiting` be passed).
            let taken = self.waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ahead| {
                (ahead < max && self.expected_wait(ahead) <= time_left).then_some(ahead + 1)
            });
            if let Err(ahead) = taken {
                let expected = self.expected_wait(ahead);
                let why = if ahead >= max {
                    format!(
                        "every one of {} slots is busy and {ahead} callers already wait (max_waiting = {max})",
                        self.concurrency
                    )
                } else {
                    format!(
                        "every one of {} slots is busy and the expected wait ({} ms) is past the deadline",
                        self.concurrency,
                        expected.as_millis()
                    )
                };
                return Err(Shed::Overloaded { retry_after: expected, why });
            }
            pass.waiting = true;
        }
        match self.with_breaker(now, |b| b.admit(now)) {
            None | Some(Admit::Yes) => {}
            Some(Admit::Probe) => pass.probe = true,
            Some(Admit::No { retry_after }) => return Err(Shed::BreakerOpen { retry_after }),
        }
        if let Some(rate) = &self.rate {
            let latest = now + time_left.as_millis() as Millis;
            match lock(rate).reserve_by(now, latest) {
                Ok(at) => pass.turn_at = (at > now).then_some(at),
                Err(at) => {
                    return Err(Shed::RateLimited { retry_after: Duration::from_millis((at - now).max(0) as u64) })
                }
            }
        }
        Ok(pass)
    }

    /// A retry inside a sync call: its turn under the rate limit, if it comes by `latest`
    /// (`Ok(None)`: at once). The breaker is not asked again (the call was admitted), but the
    /// retry's result is recorded in it.
    pub(crate) fn retry_turn(&self, now: Millis, latest: Millis) -> Result<Option<Millis>, Millis> {
        match &self.rate {
            None => Ok(None),
            Some(rate) => lock(rate).reserve_by(now, latest).map(|at| (at > now).then_some(at)),
        }
    }

    /// How many attempts the dispatcher may start now, out of `wanted` free slots; when none,
    /// how long until one may (`None`: until something changes — a resume, a wake-up).
    pub(crate) fn async_turns(&self, now: Millis, wanted: usize) -> Turns {
        if self.is_paused() {
            return Turns { allowed: 0, probes: 0, wait: None };
        }
        let mut turns = Turns { allowed: wanted, probes: 0, wait: None };
        self.with_breaker(now, |breaker| {
            turns.allowed = 0;
            while turns.allowed < wanted {
                match breaker.admit(now) {
                    Admit::Yes => {
                        turns.allowed = wanted;
                        break;
                    }
                    Admit::Probe => {
                        turns.allowed += 1;
                        turns.probes += 1;
                    }
                    Admit::No { retry_after } => {
                        if turns.allowed == 0 {
                            turns.wait = Some(retry_after);
                        }
                        break;
                    }
                }
            }
        });
        if let Some(rate) = &self.rate {
            let rate = lock(rate);
            let ready = rate.ready(now) as usize;
            if ready < turns.allowed {
                self.cancel_probes(turns.probes.saturating_sub(ready));
                turns.probes = turns.probes.min(ready);
                turns.allowed = ready;
            }
            if turns.allowed == 0 && turns.wait.is_none() {
                let mut probe = rate.clone();
                turns.wait = probe.try_take(now).err().map(|at| Duration::from_millis((at - now).max(1) as u64));
            }
        }
        turns
    }

    /// Takes the rate limiter's turn of an attempt the dispatcher starts (counted free by
    /// [`Flow::async_turns`]), or of one started at admission.
    pub(crate) fn take_turn(&self, now: Millis) -> bool {
        match &self.rate {
            None => true,
            Some(rate) => lock(rate).try_take(now).is_ok(),
        }
    }

    /// May an async invocation start at admission, with no lease round-trip: not paused, breaker
    /// closed, a rate turn free now (taken). Its key's room is checked by the caller.
    pub(crate) fn may_start_now(&self, now: Millis) -> bool {
        !self.holds_back(now) && self.take_turn(now)
    }

    /// Whether an attempt admitted earlier must not start now after all: the function was paused
    /// or its breaker left `closed` since (an admission that waited for a slot is checked again).
    pub(crate) fn holds_back(&self, now: Millis) -> bool {
        self.is_paused()
            || self.with_breaker(now, |b| b.view(now).state).is_some_and(|state| state != BreakerState::Closed)
    }

    /// Probes admitted that will not be made.
    pub(crate) fn cancel_probes(&self, n: usize) {
        if let (Some(breaker), true) = (&self.breaker, n > 0) {
            breaker.cancel_probes(n);
        }
    }

    /// Feeds an attempt's outcome to the breaker (a move it makes is reported). A 4xx
    /// (permanent) or a conflict is the function working as meant: a success to the breaker.
    /// Transient failures and timeouts are failures.
    pub(crate) fn attempt_ended(&self, now: Millis, outcome: Outcome, probe: bool) {
        let success = !matches!(outcome, Outcome::Transient | Outcome::Timeout);
        self.with_breaker(now, |b| b.record(now, success, probe));
    }

    /// Checks `max_queued` before an async admission of `adding` invocations (a bulk admission
    /// is refused whole when they do not all fit).
    pub(crate) fn check_queue(&self, adding: u64) -> Result<(), Shed> {
        let Some(backlog) = &self.backlog else { return Ok(()) };
        let queued = backlog.estimate();
        if queued + adding <= backlog.cap {
            return Ok(());
        }
        // Work drains at about `concurrency` attempts per typical attempt.
        let over = queued + adding - backlog.cap;
        let retry_after = self.expected_wait((over.min(u64::from(u32::MAX))) as u32).max(Duration::from_secs(1));
        Err(Shed::QueueFull { retry_after, queued })
    }

    /// `n` async invocations were queued (not started at admission).
    pub(crate) fn queued(&self, n: u64) {
        if let Some(backlog) = &self.backlog {
            backlog.admitted.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Whether `max_queued` needs counts from the store.
    pub(crate) fn counts_backlog(&self) -> bool {
        self.backlog.is_some()
    }

    /// The store's count of queued and retrying work (every node's).
    pub(crate) fn backlog_counted(&self, waiting: u64) {
        if let Some(backlog) = &self.backlog {
            backlog.counted.store(waiting, Ordering::Relaxed);
            backlog.admitted.store(0, Ordering::Relaxed);
        }
    }
}

/// What [`Flow::async_turns`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turns {
    pub(crate) allowed: usize,
    /// Of `allowed`, how many are half-open probes of the breaker.
    pub(crate) probes: usize,
    pub(crate) wait: Option<Duration>,
}

/// A sync call admitted by [`Flow::gate_sync`]: counted among the waiting until it has a slot;
/// a probe of the breaker, if half-open; its rate-limited turn. Dropped unused, it gives all
/// back.
#[derive(Debug)]
pub(crate) struct SyncPass<'a> {
    flow: &'a Flow,
    waiting: bool,
    probe: bool,
    turn_at: Option<Millis>,
}

impl SyncPass<'_> {
    /// When the call's turn under the rate limit comes, if later than its admission.
    pub(crate) fn turn_at(&self) -> Option<Millis> {
        self.turn_at
    }

    /// The call got its slot: it no longer waits.
    pub(crate) fn seated(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.flow.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The first attempt was made: whether it was a breaker probe (its result goes to the
    /// breaker as one).
    pub(crate) fn used(&mut self) -> bool {
        self.seated();
        std::mem::take(&mut self.probe)
    }
}

impl Drop for SyncPass<'_> {
    fn drop(&mut self) {
        self.seated();
        if self.probe {
            self.flow.cancel_probes(1);
        }
    }
}

/// Attempts in flight per `concurrency_key` value on this node, sync and async alike.
#[derive(Debug)]
pub(crate) struct KeySlots {
    limit: u32,
    running: Mutex<HashMap<String, u32>>,
    freed: Notify,
}

impl KeySlots {
    fn new(limit: u32) -> Self {
        Self { limit, running: Mutex::new(HashMap::new()), freed: Notify::new() }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// The values with attempts in flight, for a lease to leave the full ones alone.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u32> {
        lock(&self.running).iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// Counts an attempt of `key` in flight if the value has room; `false` when it is full.
    pub(crate) fn try_enter(&self, key: &str) -> bool {
        let mut running = lock(&self.running);
        let n = running.entry(key.to_owned()).or_insert(0);
        if *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts an attempt of `key` in flight whatever the count (a lease already checked it; a
    /// sync call may have taken the room meanwhile, by at most its own attempt).
    pub(crate) fn enter(&self, key: &str) {
        *lock(&self.running).entry(key.to_owned()).or_insert(0) += 1;
    }

    fn leave(&self, key: &str) {
        let mut running = lock(&self.running);
        if let Some(n) = running.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(key);
            }
        }
        drop(running);
        self.freed.notify_waiters();
    }

    /// Waits until `key` has room (then counts the attempt in), or `deadline` passes.
    pub(crate) async fn enter_by(&self, key: &str, deadline: tokio::time::Instant) -> bool {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_enter(key) {
                return true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return false;
            }
        }
    }
}

/// One attempt of a `concurrency_key` value in flight: leaving frees its room, and wakes the
/// dispatcher (due work of that value may have been left alone while it was full).
#[derive(Debug)]
pub(crate) struct KeyGuard {
    function: Arc<Function>,
    key: String,
}

impl KeyGuard {
    /// Counts an attempt of `key` in flight (already counted by the caller with `enter` or
    /// `try_enter`).
    pub(crate) fn counted(function: Arc<Function>, key: String) -> Self {
        Self { function, key }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some(keys) = &self.function.flow.keys {
            keys.leave(&self.key);
            self.function.wake.notify_one();
        }
    }
}

/// `max_queued`'s count: the store's last count of queued and retrying work (refreshed every
/// [`BACKLOG_RECOUNT`]) plus what this node queued since.
#[derive(Debug)]
struct Backlog {
    cap: u64,
    counted: AtomicU64,
    admitted: AtomicU64,
}

/// How often the store's backlog counts are refreshed for `max_queued`.
pub(crate) const BACKLOG_RECOUNT: Duration = Duration::from_secs(1);

impl Backlog {
    fn new(cap: u64) -> Self {
        Self { cap, counted: AtomicU64::new(0), admitted: AtomicU64::new(0) }
    }

    fn estimate(&self) -> u64 {
        self.counted.load(Ordering::Relaxed) + self.admitted.load(Ordering::Relaxed)
    }
}

/// Keeps every function's flow state in step with the store, until `stop`: the paused flags
/// (a pause made on another node, or before a restart) and, for functions with `max_queued`,
/// the count of their queued and retrying work. Runs once before it returns the first time, so a
/// node starts with the stored pauses.
pub(crate) async fn keep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let counts_backlog = shared.functions.iter().any(|f| f.flow.counts_backlog());
    loop {
        refresh(&shared, counts_backlog).await;
        tokio::select! {
            _ = tokio::time::sleep(BACKLOG_RECOUNT) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One look at the store: the stored pauses and, if any function needs them, backlog counts.
pub(crate) async fn refresh(shared: &Shared, counts_backlog: bool) {
    let seen: Vec<u64> = shared.functions.iter().map(|f| f.flow.pause_seen()).collect();
    match shared.store.paused().await {
        Ok(paused) => {
            for (function, seen) in shared.functions.iter().zip(seen) {
                let is_paused = paused.iter().any(|(name, _)| *name == function.config.name);
                if function.flow.follow_store(is_paused, seen) {
                    tracing::info!(function = %function.config.name, paused = is_paused, "pause changed in the store");
                    if !is_paused {
                        function.work_queued();
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading paused functions failed; keeping the last known"),
    }
    if counts_backlog {
        match shared.store.queue_stats(shared.clock.now_ms()).await {
            Ok(stats) => {
                for function in shared.functions.iter().filter(|f| f.flow.counts_backlog()) {
                    let name = &function.config.name;
                    let waiting = stats.iter().filter(|s| s.function == *name).map(|s| s.waiting).sum();
                    function.flow.backlog_counted(waiting);
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting queued work for max_queued failed; keeping the last count"),
        }
    }
}

/// A poisoned lock only means a panic elsewhere: the counts are still good.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use keel_core::flow::{ConcurrencyKeyConfig, FlowConfig};

    use super::*;

    fn flow(config: FlowConfig) -> Flow {
        Flow::new("f", config, 4, 0, &crate::system_events::SystemEvents::detached())
    }

    #[test]
    fn a_call_that_finds_a_free_slot_is_admitted_without_waiting() {
        let f = flow(FlowConfig::unlimited(4));
        let pass = f.gate_sync(0, Duration::from_secs(1), true).unwrap();
        assert_eq!((f.waiting(), pass.turn_at()), (0, None));
    }

    #[test]
    fn past_max_waiting_a_call_is_shed_with_the_expected_wait() {
        let f = flow(FlowConfig { max_waiting: 2, ..FlowConfig::unlimited(4) });
        f.observe(Duration::from_millis(200));
        let first = f.gate_sync(0, Duration::from_secs(30), false).unwrap();
        let second = f.gate_sync(0, Duration::from_secs(30), false).unwrap();
        assert_eq!(f.waiting(), 2);
        let Err(Shed::Overloaded { retry_after, why }) = f.gate_sync(0, Duration::from_secs(30), false) else {
            panic!("a third waiter is shed")
        };
        // Two ahead, four slots: the first round frees one for it — one typical attempt.
        assert_eq!(retry_after, Duration::from_millis(200));
        assert!(why.contains("2 callers already wait (max_waiting = 2)"), "{why}");
        drop(first);
        assert_eq!(f.waiting(), 1, "a pass dropped before its slot stops counting as waiting");
        drop(second);
        assert_eq!(f.waiting(), 0);
    }

    #[test]
    fn a_call_whose_expected_wait_is_past_its_deadline_is_shed_at_once() {
        let f = flow(FlowConfig::unlimited(4));
        f.observe(Duration::from_millis(200));
        let _waiting: Vec<_> = (0..4).map(|_| f.gate_sync(0, Duration::from_secs(30), false).unwrap()).collect();
        // Four ahead: the second round, 400 ms away; with 300 ms left there is no point waiting.
        let Err(Shed::Overloaded { retry_after, .. }) = f.gate_sync(0, Duration::from_millis(300), false) else {
            panic!("shed")
        };
        assert_eq!(retry_after, Duration::from_millis(400));
        assert!(f.gate_sync(0, Duration::from_millis(500), false).is_ok(), "with 500 ms left it may wait");
    }

    #[test]
    fn the_typical_attempt_is_a_moving_average() {
        let f = flow(FlowConfig::unlimited(1));
        f.observe(Duration::from_millis(100));
        f.observe(Duration::from_millis(200));
        // 100 × 0.9 + 200 × 0.1
        assert_eq!(f.expected_wait(0), Duration::from_millis(110));
    }

    #[test]
    fn a_paused_function_admits_no_sync_call_and_starts_no_async_work() {
        let f = flow(FlowConfig::unlimited(4));
        assert!(f.set_paused(true));
        assert!(!f.set_paused(true), "no change the second time");
        assert_eq!(f.gate_sync(0, Duration::from_secs(1), true).unwrap_err(), Shed::Paused);
        assert_eq!(f.async_turns(0, 8), Turns { allowed: 0, probes: 0, wait: None });
        assert!(!f.may_start_now(0));
        f.set_paused(false);
        assert_eq!(f.async_turns(0, 8), Turns { allowed: 8, probes: 0, wait: None });
    }

    #[test]
    fn a_pause_made_here_is_not_undone_by_an_older_look_at_the_store() {
        let f = flow(FlowConfig::unlimited(4));
        let seen = f.pause_seen();
        f.set_paused(true);
        assert!(!f.follow_store(false, seen), "the store was read before the pause");
        assert!(f.is_paused());
        assert!(f.follow_store(false, f.pause_seen()), "a later look is followed (resumed elsewhere)");
        assert!(!f.is_paused());
    }

    #[test]
    fn the_queue_cap_counts_the_store_and_what_was_queued_since() {
        let f = flow(FlowConfig { max_queued: Some(3), ..FlowConfig::unlimited(4) });
        f.backlog_counted(2);
        assert!(f.check_queue(1).is_ok());
        f.queued(1);
        let Err(Shed::QueueFull { queued, retry_after }) = f.check_queue(1) else { panic!("full") };
        assert_eq!((queued, retry_after), (3, Duration::from_secs(1)));
        f.backlog_counted(0);
        assert!(f.check_queue(1).is_ok(), "a recount that shows the queue drained opens it again");
        assert!(f.check_queue(3).is_ok(), "a bulk admission that fits");
        assert!(
            matches!(f.check_queue(4), Err(Shed::QueueFull { queued: 0, .. })),
            "one that does not fit whole is refused whole"
        );
    }

    fn keyed(limit: u32) -> Flow {
        let key = ConcurrencyKeyConfig { header: "x-tenant-id".into(), limit };
        flow(FlowConfig { concurrency_key: Some(key), ..FlowConfig::unlimited(4) })
    }

    #[test]
    fn a_key_value_has_room_for_limit_attempts() {
        let f = keyed(2);
        let keys = f.keys.as_ref().unwrap();
        assert!(keys.try_enter("a") && keys.try_enter("a"));
        assert!(!keys.try_enter("a"), "a third of one value waits");
        assert!(keys.try_enter("b"), "another value has its own room");
        assert_eq!(keys.snapshot(), BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)]));
        keys.leave("a");
        keys.leave("b");
        assert_eq!(keys.snapshot(), BTreeMap::from([("a".to_string(), 1)]), "values with none are left out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_its_keys_room_until_the_deadline() {
        let f = Arc::new(keyed(1));
        let keys = || f.keys.as_ref().unwrap();
        assert!(keys().try_enter("a"));
        let start = tokio::time::Instant::now();
        assert!(!keys().enter_by("a", start + Duration::from_millis(500)).await, "no room by the deadline");
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        let f2 = f.clone();
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            f2.keys.as_ref().unwrap().leave("a");
        });
        let start = tokio::time::Instant::now();
        assert!(keys().enter_by("a", start + Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(100), "room as soon as the other attempt left");
        freer.await.unwrap();
    }
}
