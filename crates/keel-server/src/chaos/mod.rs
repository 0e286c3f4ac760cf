//! Chaos faults on a node: the active set, read from the store every second (a fault injected
//! through any node applies on all), and the hits the runtime, egress and store edges ask for.
//! Every hit is logged (a span event on the attempt or call it hits), counted
//! (`keel_chaos_injected_total{target,kind}`) and follows [`keel_core::chaos::pick`].

pub mod experiment;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keel_core::chaos::{pick, Fault, Hit, Kind, Target};
use keel_core::clock::{rfc3339, Clock};
use keel_core::store::faulty::{Write, WriteHook};
use metrics::counter;
use tokio::sync::watch;

use crate::metric_definitions as m;
use crate::state::Shared;

/// How often a node reads the faults from the store.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Chaos {
    enabled: bool,
    faults: RwLock<Arc<Vec<Fault>>>,
    rng: Mutex<fastrand::Rng>,
    clock: Arc<dyn Clock>,
}

impl Chaos {
    pub(crate) fn new(enabled: bool, clock: Arc<dyn Clock>, seed: Option<u64>) -> Arc<Self> {
        let rng = seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Arc::new(Self { enabled, faults: Default::default(), rng: Mutex::new(rng), clock })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The faults this node applies now.
    pub(crate) fn active(&self) -> Arc<Vec<Fault>> {
        self.faults.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, faults: Vec<Fault>) {
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(faults);
    }

    /// The fault that hits this call on `target`, if any: logged and counted (a crash only once
    /// it killed an instance: [`Chaos::injected`]).
    pub(crate) fn hit(&self, target: &Target) -> Option<Hit> {
        if !self.enabled {
            return None;
        }
        let faults = self.active();
        if faults.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        let hit = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            pick(&faults, target, now, &mut || rng.f64())?
        };
        if hit.kind != Kind::Crash {
            self.injected(target, &hit);
        }
        Some(hit)
    }

    /// Logs (a span event on the call it hit) and counts an injection.
    pub(crate) fn injected(&self, target: &Target, hit: &Hit) {
        let label = target.label();
        counter!(m::CHAOS_INJECTED_TOTAL, "target" => label.clone(), "kind" => hit.kind.name()).increment(1);
        tracing::warn!(fault = %hit.fault, target = %label, kind = hit.kind.name(), delay_ms = hit.delay_ms, "chaos: fault injected");
    }
}

/// The store's writes slowed down or failed by the faults on `{"store": true}`.
impl WriteHook for Chaos {
    fn before(
        &self,
        write: Write,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = keel_core::Result<()>> + Send + '_>> {
        Box::pin(async move {
            match self.hit(&Target::Store).map(|h| (h.kind, h.delay_ms, h.fault)) {
                Some((Kind::Latency { .. }, delay, _)) => {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Ok(())
                }
                Some((Kind::Error { .. }, _, fault)) => {
                    Err(keel_core::Error::Unavailable(format!("chaos: {write:?} failed by fault {fault}")))
                }
                _ => Ok(()),
            }
        })
    }
}

/// Reads the faults from the store every [`REFRESH`]: a fault added or removed through any
/// node applies here within a second. Announces each fault's start and end on `keel.system`.
pub(crate) async fn keep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if !shared.chaos.enabled() {
        return;
    }
    loop {
        refresh(&shared).await;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Reads the faults now (also after this node added or removed one).
pub(crate) async fn refresh(shared: &Shared) {
    let now = shared.clock.now_ms();
    match shared.store.faults(now).await {
        Ok(faults) => {
            let before = shared.chaos.active();
            for fault in faults.iter().filter(|f| !before.iter().any(|b| b.id == f.id)) {
                announce(shared, keel_core::system_events::CHAOS_FAULT_STARTED, fault);
            }
            for fault in before.iter().filter(|b| !faults.iter().any(|f| f.id == b.id)) {
                announce(shared, keel_core::system_events::CHAOS_FAULT_ENDED, fault);
            }
            shared.chaos.set(faults);
        }
        Err(e) => tracing::warn!(error = %e, "reading the chaos faults"),
    }
}

fn announce(shared: &Shared, kind: &'static str, fault: &Fault) {
    let data = serde_json::json!({
        "id": fault.id,
        "target": fault.target,
        "kind": fault.kind,
        "rate": fault.rate,
        "expires_at": rfc3339(fault.expires_at),
    });
    // Every node sees the same start and end: one event each, named by fault and kind.
    let id = format!("{kind}/{}", fault.id);
    shared.system_events.emit_shared(kind, &fault.target.label(), data, "keel://cluster", id);
}
