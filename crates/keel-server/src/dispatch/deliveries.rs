//! Deliveries leased at admission: a publish stores each new delivery already leased by this
//! node when its function has room for an admission ([`Function::admit_now`]), so that its first
//! attempt starts as soon as the event is on disk, on the first slot free then, without a round
//! trip through the store.

use std::sync::Arc;

use keel_core::clock::Millis;
use keel_core::events::NewEvent;
use keel_core::invocation::Invocation;

use crate::functions::{Admitted, Function};
use crate::state::Shared;

/// A delivery stored leased by this node: it runs once its event is durable.
#[derive(Debug)]
pub(crate) struct LeasedDelivery {
    invocation: Invocation,
    function: Arc<Function>,
    admitted: Admitted,
}

impl LeasedDelivery {
    /// Starts the delivery's first attempt (its event committed), on the first slot free
    /// ([`super::start_admitted`]).
    pub(crate) fn start(self, shared: &Arc<Shared>) {
        super::start_admitted(shared.clone(), self.function, self.invocation, self.admitted);
    }

    /// Starts it once the store confirms its event was stored, after a publish whose commit the
    /// store never confirmed ([`super::start_if_stored`]).
    pub(crate) fn start_if_stored(self, shared: &Arc<Shared>) {
        super::start_if_stored(shared.clone(), self.function, self.invocation.id, self.admitted);
    }
}

/// Leases, at admission, each delivery of `event` whose function has room for an admission and
/// nothing due waiting for it, so that it starts as soon as the event is on disk. Ordered
/// deliveries always queue: they wait behind earlier deliveries of the same key.
pub(crate) fn lease_deliveries(shared: &Shared, event: &mut NewEvent, now: Millis) -> Vec<LeasedDelivery> {
    let mut leased = Vec::new();
    for delivery in
        event.deliveries.iter_mut().filter(|d| d.delivery.as_ref().is_some_and(|d| d.ordering_key.is_none()))
    {
        let Some(function) = shared.functions.get(&delivery.function) else { continue };
        let Some(admitted) = function.admit_now(None, now) else { continue };
        delivery.lease = Some(super::lease_at(shared, function, now));
        leased.push(LeasedDelivery {
            invocation: delivery.clone().into_stored(),
            function: function.clone(),
            admitted,
        });
    }
    leased
}
