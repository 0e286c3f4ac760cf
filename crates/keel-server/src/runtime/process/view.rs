//! A snapshot of a pool's live state, for `GET /v1/functions/{name}`.

use std::time::Duration;

use keel_core::clock::Millis;

use super::{InstanceState, ProcessPool};

/// One instance as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct InstanceView {
    pub(crate) id: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) port: u16,
    pub(crate) state: &'static str,
    pub(crate) in_flight: u32,
    pub(crate) started_at: Millis,
}

/// A pool as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct PoolView {
    pub(crate) instances: Vec<InstanceView>,
    /// Attempts waiting for an instance.
    pub(crate) waiting: usize,
    pub(crate) cold_starts: u64,
    pub(crate) last_cold_start: Option<Duration>,
    pub(crate) p50_cold_start: Option<Duration>,
    /// The latest failed start or crash, with what the program printed.
    pub(crate) last_error: Option<String>,
    /// What of `sandbox` this host enforces, when it is set.
    pub(crate) sandbox: Option<crate::sandbox::Support>,
}

impl InstanceState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Stopping => "stopping",
        }
    }
}

impl ProcessPool {
    pub(crate) fn view(&self) -> PoolView {
        let state = self.lock();
        PoolView {
            instances: state
                .slots
                .iter()
                .map(|s| InstanceView {
                    id: s.id,
                    pid: s.pid,
                    port: s.port,
                    state: s.state.as_str(),
                    in_flight: s.in_flight,
                    started_at: s.started_at,
                })
                .collect(),
            waiting: state.waiting,
            cold_starts: state.cold_starts.count,
            last_cold_start: state.cold_starts.last,
            p50_cold_start: state.cold_starts.p50(),
            last_error: state.last_error.clone(),
            sandbox: self.sandbox.as_ref().map(|s| s.support.clone()),
        }
    }
}
