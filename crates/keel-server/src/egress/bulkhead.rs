//! A dependency's bulkhead: at most `max_concurrent` calls in flight, at most `max_queued`
//! callers waiting (each `queue_timeout` at most) for a place; anyone else is refused at once.
//! Each dependency has its own, so a hung one holds only its own places.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use keel_core::config::BulkheadConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub(crate) struct Bulkhead {
    config: BulkheadConfig,
    places: Arc<Semaphore>,
    queued: AtomicU32,
}

/// A place in flight, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl Bulkhead {
    pub(crate) fn new(config: BulkheadConfig) -> Self {
        Self { places: Arc::new(Semaphore::new(config.max_concurrent as usize)), queued: AtomicU32::new(0), config }
    }

    /// A place now, or after waiting in the queue; `None` when the queue is full or the wait
    /// ran out.
    pub(crate) async fn enter(&self) -> Option<Place> {
        if let Ok(permit) = self.places.clone().try_acquire_owned() {
            return Some(Place(permit));
        }
        let ahead = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.queued);
        if ahead >= self.config.max_queued {
            return None;
        }
        let wait = tokio::time::timeout(self.config.queue_timeout, self.places.clone().acquire_owned());
        wait.await.ok()?.ok().map(Place)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.config.max_concurrent - self.places.available_permits().min(self.config.max_concurrent as usize) as u32
    }

    pub(crate) fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed).min(self.config.max_queued)
    }
}

/// Leaves the queue when dropped.
struct Leave<'a>(&'a AtomicU32);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bulkhead(max_concurrent: u32, max_queued: u32) -> Bulkhead {
        Bulkhead::new(BulkheadConfig { max_concurrent, max_queued, queue_timeout: Duration::from_millis(100) })
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_places_callers_queue_then_are_refused() {
        let b = bulkhead(2, 1);
        let (one, _two) = (b.enter().await.unwrap(), b.enter().await.unwrap());
        assert_eq!(b.in_flight(), 2);
        assert!(bulkhead(1, 0).enter().await.is_some());
        let waiter = b.enter();
        tokio::pin!(waiter);
        assert!(futures_poll(&mut waiter).await.is_none(), "queued");
        assert_eq!(b.queued(), 1);
        assert!(b.enter().await.is_none(), "the queue is full: refused at once");
        drop(one);
        assert!(waiter.await.is_some(), "a place freed goes to the queued caller");
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_caller_gives_up_after_queue_timeout() {
        let b = bulkhead(1, 4);
        let _held = b.enter().await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(b.enter().await.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert_eq!(b.queued(), 0);
    }

    /// Polls once: `Some` if ready.
    async fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            () = tokio::task::yield_now() => None,
        }
    }
}
