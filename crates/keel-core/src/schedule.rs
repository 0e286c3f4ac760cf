//! Schedules as pure decisions over injected time: when a `cron` or `every` schedule ticks next
//! (a cron pattern read in its time zone), and, given the last tick taken and the `missed`
//! policy, which tick fires now and how many were missed ([`due`]: the one place that decides
//! missed ticks, so whatever reports them hooks in where its answer is used).
//!
//! Cron patterns are croner's (5 fields, or 6 with seconds first), so daylight-saving days
//! follow croner's documented rule (the Open Cron Pattern Specification): a fixed time that falls
//! in a spring-forward gap fires right after the gap; a fixed time that happens twice on a
//! fall-back day fires once, at its first occurrence; wildcard and step fields (`*/15`) follow
//! the wall clock, so they skip the gap and repeat over the doubled hour. `every` ticks are
//! multiples of the period since the Unix epoch (`every = "1h"` fires on the hour, UTC): every
//! node and every restart computes the same ticks without any shared state.

use std::fmt;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::clock::Millis;

/// A tick that comes this late after its time still counts as on time: it fires even under
/// `missed = "skip"` (a node that was busy, or restarted, for a few seconds). Later than this,
/// it was missed.
pub const ON_TIME_WITHIN_MS: Millis = 30_000;

/// Missed ticks are counted up to this many (a cron pattern is walked tick by tick): past it the
/// count saturates, which only a schedule of many ticks a second left down for hours reaches.
pub const MAX_COUNTED_MISSES: u64 = 100_000;

/// When a schedule ticks.
#[derive(Clone)]
pub enum Cadence {
    /// A cron pattern read in a time zone.
    Cron { pattern: String, zone_name: String, cron: Box<Cron>, zone: TimeZone },
    /// Every `period_ms` (a whole number of seconds), counted from the Unix epoch.
    Every { period_ms: Millis },
}

impl fmt::Debug for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cadence::Cron { pattern, zone_name, .. } => write!(f, "Cron({pattern:?} in {zone_name})"),
            Cadence::Every { period_ms } => write!(f, "Every({period_ms}ms)"),
        }
    }
}

/// What to do with ticks that passed while no node could fire them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// They are skipped (and counted); the schedule goes on with its next tick.
    #[default]
    Skip,
    /// The latest of them fires once, late; the others are skipped (and counted).
    RunOnce,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "run_once",
        }
    }
}

impl Cadence {
    /// A cron pattern of 5 fields (minute first) or 6 (seconds first), read in the IANA zone
    /// `zone_name`. The error says which of the two is wrong.
    pub fn cron(pattern: &str, zone_name: &str) -> Result<Cadence, CadenceError> {
        let fields = pattern.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(CadenceError::Pattern(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), got {fields}"
            )));
        }
        // An empty item in a list (`,`, `1,,2`, `5,`) leaves a field that can match nothing:
        // croner accepts it, and then searches minute by minute to the year 5000 for a tick
        // that never comes (over a minute of CPU per look; found by the cron fuzz target).
        if let Some((n, field)) = pattern.split_whitespace().enumerate().find(|(_, f)| f.split(',').any(str::is_empty))
        {
            return Err(CadenceError::Pattern(format!("field {} ({field:?}) has an empty item in its list", n + 1)));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(pattern).map_err(|e| CadenceError::Pattern(e.to_string()))?;
        let zone = TimeZone::get(zone_name).map_err(|_| CadenceError::Zone(zone_name.to_string()))?;
        Ok(Cadence::Cron { pattern: pattern.to_string(), zone_name: zone_name.to_string(), cron: Box::new(cron), zone })
    }

    /// Every `period_ms`; `None` unless it is a whole number of seconds, at least one.
    pub fn every(period_ms: Millis) -> Option<Cadence> {
        (period_ms >= 1_000 && period_ms % 1_000 == 0).then_some(Cadence::Every { period_ms })
    }

    /// The first tick strictly after `t`; `None` when there is none (a pattern that never
    /// matches, or past the year 5000).
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match self {
            Cadence::Every { period_ms } => Some((t.div_euclid(*period_ms) + 1) * period_ms),
            Cadence::Cron { cron, zone, .. } => {
                let next = cron.find_next_occurrence(&zoned_second(t, zone)?, false).ok()?;
                Some(next.timestamp().as_millisecond())
            }
        }
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: Millis) -> Option<Millis> {
        match self {
            Cadence::Every { period_ms } => Some(t.div_euclid(*period_ms) * period_ms),
            Cadence::Cron { cron, zone, .. } => {
                let last = cron.find_previous_occurrence(&zoned_second(t, zone)?, true).ok()?;
                Some(last.timestamp().as_millisecond())
            }
        }
    }

    /// How many ticks lie in `(after, through]`, at most [`MAX_COUNTED_MISSES`] + 1.
    fn ticks_between(&self, after: Millis, through: Millis) -> u64 {
        if through <= after {
            return 0;
        }
        match self {
            Cadence::Every { period_ms } => {
                let n = through.div_euclid(*period_ms) - after.div_euclid(*period_ms);
                (n as u64).min(MAX_COUNTED_MISSES + 1)
            }
            Cadence::Cron { .. } => {
                let mut count = 0;
                let mut t = after;
                while let Some(next) = self.next_after(t).filter(|n| *n <= through) {
                    count += 1;
                    if count > MAX_COUNTED_MISSES {
                        break;
                    }
                    t = next;
                }
                count
            }
        }
    }
}

/// Whether `name` is a time zone of the IANA database (as bundled).
pub fn is_known_zone(name: &str) -> bool {
    TimeZone::get(name).is_ok()
}

/// `t` (floored to its second: ticks are whole seconds) in `zone`.
fn zoned_second(t: Millis, zone: &TimeZone) -> Option<Zoned> {
    let ts = Timestamp::from_second(t.div_euclid(1_000)).ok()?;
    Some(ts.to_zoned(zone.clone()))
}

/// Why a cadence could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CadenceError {
    /// The cron pattern, with croner's reason.
    Pattern(String),
    /// The zone name is not in the IANA database.
    Zone(String),
}

/// What [`due`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The tick to fire now.
    pub fire: Option<Millis>,
    /// Ticks passed over without firing (downtime, or a late tick under `skip`).
    pub missed: u64,
    /// The latest tick decided about (fired or missed): what the store records as taken, so no
    /// node decides about it again. `None` when nothing came due.
    pub through: Option<Millis>,
    /// The next tick after `now`.
    pub next: Option<Millis>,
}

/// Which tick of `cadence` fires at `now`, when every tick up to `since` has been dealt with
/// (the last tick taken, or when the schedule was first seen or last resumed, whichever is
/// later). Of the ticks in `(since, now]` only the latest can fire: on time (at most
/// [`ON_TIME_WITHIN_MS`] late) it fires under either policy; later, only under `run_once`.
/// Every other one is missed.
pub fn due(cadence: &Cadence, missed: Missed, since: Millis, now: Millis) -> Due {
    let next = cadence.next_after(now);
    let Some(latest) = cadence.last_at_or_before(now).filter(|l| *l > since) else {
        return Due { fire: None, missed: 0, through: None, next };
    };
    let count = cadence.ticks_between(since, latest).max(1);
    let fires = now - latest <= ON_TIME_WITHIN_MS || missed == Missed::RunOnce;
    Due { fire: fires.then_some(latest), missed: if fires { count - 1 } else { count }, through: Some(latest), next }
}

/// The idempotency key of a tick's invocation (and the id of its event):
/// `{schedule}/{tick time, RFC 3339}`, e.g. `nightly-report/2026-03-29T01:00:00Z`.
pub fn tick_key(schedule: &str, tick: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(tick.max(0) as u64);
    format!("{schedule}/{}", humantime::format_rfc3339_seconds(t))
}

#[cfg(test)]
mod tests;
