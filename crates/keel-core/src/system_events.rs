//! Keel's operational events (CloudEvents about itself on the reserved topic [`SYSTEM_TOPIC`]):
//! their kinds, and the two decisions the server takes before publishing one, as pure code with
//! the time passed in — the rate limit per kind ([`KindLimiter`]) and the debounce that turns a
//! stream of shed calls into one `keel.shed.started` and, after a quiet spell, one
//! `keel.shed.stopped` ([`ShedWatch`]).
//!
//! The rate limit, per kind: in a window of `window` that begins with an event of that kind, the
//! first `per_kind` events are sent one by one; the rest of the window's are counted, not sent, and
//! when the window ends one summary event of that kind says how many there were (and carries the
//! last one's data). An outage that makes a thousand dead invocations makes `per_kind` + 1 events
//! a window, not a thousand.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::Millis;
use crate::store::{NodeState, NODE_TIMEOUT_MS};

/// The reserved topic Keel publishes its operational events to. Users may subscribe to it (it
/// needs no declaration) but not publish to it.
pub const SYSTEM_TOPIC: &str = "keel.system";

/// An invocation reached `dead` (retries exhausted or a permanent failure).
pub const INVOCATION_DEAD: &str = "keel.invocation.dead";
/// A function's or a dependency's breaker opened.
pub const BREAKER_OPENED: &str = "keel.breaker.opened";
/// It closed again (its half-open probes succeeded).
pub const BREAKER_CLOSED: &str = "keel.breaker.closed";
/// A function was paused through the API.
pub const FUNCTION_PAUSED: &str = "keel.function.paused";
/// It was resumed.
pub const FUNCTION_RESUMED: &str = "keel.function.resumed";
/// A function began refusing calls (overloaded, breaker open, rate-limited, queue full).
pub const SHED_STARTED: &str = "keel.shed.started";
/// It refused none for [`ShedWatch`]'s quiet period.
pub const SHED_STOPPED: &str = "keel.shed.stopped";
/// A schedule's tick was not run (reserved: published by the scheduler).
pub const SCHEDULE_MISSED: &str = "keel.schedule.missed";
/// A node started, or was first seen by the cluster.
pub const NODE_JOINED: &str = "keel.node.joined";
/// A node stopped heartbeating without draining.
pub const NODE_LOST: &str = "keel.node.lost";
/// A chaos fault began (reserved: published by the chaos engine).
pub const CHAOS_FAULT_STARTED: &str = "keel.chaos.fault.started";
/// It ended.
pub const CHAOS_FAULT_ENDED: &str = "keel.chaos.fault.ended";

/// Every kind, for metrics registered at start.
pub const KINDS: [&str; 12] = [
    INVOCATION_DEAD,
    BREAKER_OPENED,
    BREAKER_CLOSED,
    FUNCTION_PAUSED,
    FUNCTION_RESUMED,
    SHED_STARTED,
    SHED_STOPPED,
    SCHEDULE_MISSED,
    NODE_JOINED,
    NODE_LOST,
    CHAOS_FAULT_STARTED,
    CHAOS_FAULT_ENDED,
];

/// `server.system_events = { per_kind = 10, window = "1m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemEventsConfig {
    /// Events of one kind sent one by one in a window; at least 1.
    pub per_kind: u32,
    /// The window; the summary of what was held back comes at its end.
    pub window: Duration,
}

impl SystemEventsConfig {
    pub const DEFAULT_PER_KIND: u32 = 10;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
}

impl Default for SystemEventsConfig {
    fn default() -> Self {
        Self { per_kind: Self::DEFAULT_PER_KIND, window: Self::DEFAULT_WINDOW }
    }
}

/// What to do with one event offered to the [`KindLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Send,
    /// Held back: counted in its window's summary.
    Held,
}

/// A window's summary: how many events of `kind` were held back in `since..until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<T> {
    pub kind: &'static str,
    pub held: u64,
    pub since: Millis,
    pub until: Millis,
    /// What the last event held back carried.
    pub last: T,
}

#[derive(Debug)]
struct Window<T> {
    started: Millis,
    sent: u32,
    held: u64,
    last: Option<T>,
}

/// The rate limit per kind (see the module doc). `T` is what an event carries, kept for the
/// summary.
#[derive(Debug)]
pub struct KindLimiter<T> {
    config: SystemEventsConfig,
    windows: BTreeMap<&'static str, Window<T>>,
}

impl<T> KindLimiter<T> {
    pub fn new(config: SystemEventsConfig) -> Self {
        Self { config, windows: BTreeMap::new() }
    }

    fn window_ms(&self) -> Millis {
        self.config.window.as_millis().min(i64::MAX as u128) as Millis
    }

    /// Sends or holds back an event of `kind` at `now`. Call [`KindLimiter::summaries`] first, so
    /// an ended window is summed up before a new one begins.
    pub fn offer(&mut self, kind: &'static str, now: Millis, carries: T) -> Offer {
        let per_kind = self.config.per_kind.max(1);
        let window = self.windows.entry(kind).or_insert(Window { started: now, sent: 0, held: 0, last: None });
        if window.sent < per_kind {
            window.sent += 1;
            Offer::Send
        } else {
            window.held += 1;
            window.last = Some(carries);
            Offer::Held
        }
    }

    /// Ends the windows that are over at `now`: each that held events back gives its summary.
    pub fn summaries(&mut self, now: Millis) -> Vec<Summary<T>> {
        let window_ms = self.window_ms();
        let ended: Vec<&'static str> =
            self.windows.iter().filter(|(_, w)| now >= w.started + window_ms).map(|(k, _)| *k).collect();
        let mut out = Vec::new();
        for kind in ended {
            let Some(w) = self.windows.remove(kind) else { continue };
            if let Some(last) = w.last {
                out.push(Summary { kind, held: w.held, since: w.started, until: w.started + window_ms, last });
            }
        }
        out
    }

    /// When the next window ends (`None`: none is open).
    pub fn next_end(&self) -> Option<Millis> {
        let window_ms = self.window_ms();
        self.windows.values().map(|w| w.started + window_ms).min()
    }
}

/// A function's shedding, debounced: [`ShedWatch::shed`] says when shedding starts, and
/// [`ShedWatch::quiet`] when it has stopped (no call shed for `quiet`).
#[derive(Debug)]
pub struct ShedWatch {
    quiet_ms: Millis,
    /// Functions shedding now: since, last shed, calls shed.
    shedding: BTreeMap<String, (Millis, Millis, u64)>,
}

/// A function stopped shedding: when it began, its last refusal, and how many calls it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShedSpell {
    pub function: String,
    pub since: Millis,
    pub last: Millis,
    pub refused: u64,
}

impl ShedWatch {
    /// Quiet period after which shedding counts as stopped.
    pub const DEFAULT_QUIET: Duration = Duration::from_secs(30);

    pub fn new(quiet: Duration) -> Self {
        Self { quiet_ms: quiet.as_millis().min(i64::MAX as u128) as Millis, shedding: BTreeMap::new() }
    }

    /// A call of `function` was shed at `now`: true when this begins a spell of shedding.
    pub fn shed(&mut self, function: &str, now: Millis) -> bool {
        match self.shedding.get_mut(function) {
            Some(spell) => {
                spell.1 = spell.1.max(now);
                spell.2 += 1;
                false
            }
            None => {
                self.shedding.insert(function.to_owned(), (now, now, 1));
                true
            }
        }
    }

    /// The spells over at `now` (quiet for the period), removed.
    pub fn quiet(&mut self, now: Millis) -> Vec<ShedSpell> {
        let over: Vec<String> =
            self.shedding.iter().filter(|(_, s)| now >= s.1 + self.quiet_ms).map(|(f, _)| f.clone()).collect();
        over.into_iter()
            .filter_map(|function| {
                let (since, last, refused) = self.shedding.remove(&function)?;
                Some(ShedSpell { function, since, last, refused })
            })
            .collect()
    }

    /// When the next spell may be over, if none sheds meanwhile.
    pub fn next_quiet(&self) -> Option<Millis> {
        self.shedding.values().map(|s| s.1 + self.quiet_ms).min()
    }
}

/// What one look at a cluster's nodes showed changed since the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// Alive now, and not at the last look.
    Joined(String),
    /// Alive at the last look, silent past [`NODE_TIMEOUT_MS`] now, and it was not draining: it
    /// died or was cut off, not stopped.
    Lost(String),
}

/// The nodes of a cluster as one node last saw them. The first look is the baseline: the nodes
/// already there joined before this one watched.
#[derive(Debug, Default)]
pub struct NodeWatch {
    alive: Option<BTreeMap<String, bool>>,
}

impl NodeWatch {
    pub fn look(&mut self, nodes: &[NodeState]) -> Vec<NodeChange> {
        let now: BTreeMap<String, bool> =
            nodes.iter().map(|n| (n.id.clone(), n.silent_ms <= NODE_TIMEOUT_MS)).collect();
        let Some(before) = self.alive.replace(now.clone()) else { return Vec::new() };
        let mut changes = Vec::new();
        for node in nodes {
            let was = before.get(&node.id).copied().unwrap_or(false);
            match (was, now[&node.id]) {
                (false, true) => changes.push(NodeChange::Joined(node.id.clone())),
                (true, false) if !node.draining => changes.push(NodeChange::Lost(node.id.clone())),
                _ => {}
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, silent_ms: Millis, draining: bool) -> NodeState {
        NodeState {
            id: id.into(),
            addr: "127.0.0.1:1".into(),
            started_at: 0,
            heartbeat_at: 0,
            leases: 0,
            draining,
            silent_ms,
            clock_skew_ms: 0,
        }
    }

    #[test]
    fn a_node_watch_reports_joins_and_losses_after_its_first_look() {
        let mut w = NodeWatch::default();
        assert!(w.look(&[node("a", 0, false), node("b", 0, false)]).is_empty(), "the first look is the baseline");
        let changes = w.look(&[node("a", 0, false), node("b", 20_000, false), node("c", 0, false)]);
        assert_eq!(changes, vec![NodeChange::Lost("b".into()), NodeChange::Joined("c".into())]);
        assert!(w.look(&[node("a", 0, false), node("b", 30_000, false), node("c", 0, false)]).is_empty(), "once");
        let changes = w.look(&[node("a", 0, false), node("c", 20_000, true)]);
        assert!(changes.is_empty(), "a node that drained and stopped was not lost: {changes:?}");
    }

    fn limiter(per_kind: u32, window_s: u64) -> KindLimiter<u32> {
        KindLimiter::new(SystemEventsConfig { per_kind, window: Duration::from_secs(window_s) })
    }

    #[test]
    fn the_first_per_kind_events_of_a_window_are_sent_the_rest_held_and_summed_up_at_its_end() {
        let mut l = limiter(10, 60);
        let offers: Vec<Offer> = (0..1000).map(|i| l.offer(INVOCATION_DEAD, 1_000 + i64::from(i), i)).collect();
        assert_eq!(offers.iter().filter(|o| **o == Offer::Send).count(), 10);
        assert!(offers[..10].iter().all(|o| *o == Offer::Send), "the first ten, one by one");
        assert_eq!(l.next_end(), Some(61_000));
        assert!(l.summaries(60_999).is_empty(), "the window is still open");
        let summaries = l.summaries(61_000);
        assert_eq!(
            summaries,
            vec![Summary { kind: INVOCATION_DEAD, held: 990, since: 1_000, until: 61_000, last: 999 }]
        );
        assert_eq!(l.next_end(), None);
        assert_eq!(l.offer(INVOCATION_DEAD, 61_001, 0), Offer::Send, "a new window sends again");
    }

    #[test]
    fn kinds_are_limited_apart() {
        let mut l = limiter(1, 60);
        assert_eq!(l.offer(BREAKER_OPENED, 0, 0), Offer::Send);
        assert_eq!(l.offer(BREAKER_OPENED, 1, 0), Offer::Held);
        assert_eq!(l.offer(BREAKER_CLOSED, 2, 0), Offer::Send, "another kind has its own window");
    }

    #[test]
    fn a_window_that_held_nothing_back_ends_without_a_summary() {
        let mut l = limiter(10, 60);
        for i in 0..10 {
            assert_eq!(l.offer(NODE_LOST, i, 0), Offer::Send);
        }
        assert!(l.summaries(60_000).is_empty());
        assert_eq!(l.next_end(), None, "the window is closed all the same");
    }

    #[test]
    fn a_zero_per_kind_still_sends_one() {
        let mut l = limiter(0, 60);
        assert_eq!(l.offer(SHED_STARTED, 0, 0), Offer::Send);
        assert_eq!(l.offer(SHED_STARTED, 0, 0), Offer::Held);
    }

    #[test]
    fn shedding_starts_once_and_stops_after_a_quiet_period() {
        let mut w = ShedWatch::new(Duration::from_secs(30));
        assert!(w.shed("charge", 1_000));
        assert!(!w.shed("charge", 2_000), "the same spell");
        assert!(!w.shed("charge", 10_000));
        assert!(w.shed("other", 10_000), "each function has its own");
        assert_eq!(w.next_quiet(), Some(40_000));
        assert!(w.quiet(39_999).is_empty());
        let over = w.quiet(40_000);
        assert_eq!(over.len(), 2);
        assert_eq!(over[0], ShedSpell { function: "charge".into(), since: 1_000, last: 10_000, refused: 3 });
        assert_eq!(w.next_quiet(), None);
        assert!(w.shed("charge", 50_000), "a new spell");
    }
}
