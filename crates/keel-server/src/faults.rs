//! Crash points: places where a node can be told to SIGKILL itself, so tests and chaos
//! experiments can stop Keel at an exact instant (e.g. after an admission committed, before the
//! client got its 202). Set with `KEEL_CRASH_AT=after-admit` or `before-complete`; unset in
//! normal operation.

use crate::state::Shared;

/// Where a node may crash on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// An async invocation is committed; its 202 has not been sent.
    AfterAdmit,
    /// An async attempt's function answered (its effects in hand); its outcome is not recorded.
    BeforeComplete,
}

impl CrashPoint {
    /// Reads `KEEL_CRASH_AT`.
    pub(crate) fn from_env() -> Option<Self> {
        match std::env::var("KEEL_CRASH_AT").ok()?.as_str() {
            "after-admit" => Some(CrashPoint::AfterAdmit),
            "before-complete" => Some(CrashPoint::BeforeComplete),
            other => {
                tracing::warn!(value = other, "ignoring unknown KEEL_CRASH_AT (known: after-admit, before-complete)");
                None
            }
        }
    }
}

/// SIGKILLs this process when `point` is the configured crash point.
pub(crate) fn crash_point(shared: &Shared, point: CrashPoint) {
    if shared.crash_at == Some(point) {
        tracing::warn!(?point, "crash point reached: SIGKILL");
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
