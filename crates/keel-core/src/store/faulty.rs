//! A store that passes every call to another one, except those a plan of faults catches: the
//! store side of fault injection. Tests use it to reach paths a healthy database never takes (a
//! commit the store never confirms); chaos experiments can use it on a running node.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    EventStore, InvocationStore, KeyStore, KvStore, LeaseRequest, Leased, ListFilter, NodeBeat, NodeState, NodeStore,
    Page, QueueStats, Reclaim, Store, Urgency, WakeFn,
};
use crate::clock::Millis;
use crate::events::{NewEvent, Outgoing, Published, StoredEvent};
use crate::idempotency::{KeyClaim, KeyDecision, KeyRecord, KeyRef, StoredReply};
use crate::invocation::{CommitEffects, Completion, Invocation, NewInvocation};
use crate::kv::{KvEntry, KvItem, KvWrite};
use crate::{Error, Result};

/// The writes a fault can catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// One admission or a bulk one.
    Enqueue,
    EnqueueKeyed,
    Publish,
    /// One completion, or the completions of a batch.
    Complete,
    RecordFinished,
    FinishSync,
}

/// What a caught write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails before anything is written: [`Error::Unavailable`].
    Unavailable,
    /// Is written, and then reported as [`Error::OutcomeUnknown`]: a commit whose confirmation
    /// was lost with the connection.
    CommitThenUnknown,
}

/// Asked before every write a plan can catch, after the plan: how chaos faults on the store
/// (`keel-server`'s `Chaos`) slow a write down or fail it. An `Err` is the write's answer.
pub trait WriteHook: Send + Sync + std::fmt::Debug {
    fn before(&self, write: Write) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>>;
}

/// Wraps `inner`; each planned fault catches the next matching write, once.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    plan: Mutex<Vec<(Write, Fault)>>,
    hook: Option<Arc<dyn WriteHook>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner, plan: Mutex::new(Vec::new()), hook: None }
    }

    /// Wraps `inner`, asking `hook` before each write.
    pub fn with_hook(inner: Arc<dyn Store>, hook: Arc<dyn WriteHook>) -> Self {
        Self { inner, plan: Mutex::new(Vec::new()), hook: Some(hook) }
    }

    /// Makes the next `write` fail with `fault` (faults of one kind of write fire in order).
    pub fn plan(&self, write: Write, fault: Fault) {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).push((write, fault));
    }

    /// How many planned faults have not fired yet.
    pub fn pending(&self) -> usize {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn take(&self, write: Write) -> Option<Fault> {
        let mut plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        let at = plan.iter().position(|(w, _)| *w == write)?;
        Some(plan.remove(at).1)
    }

    /// Runs `call` under the fault planned for `write`, if any.
    async fn faulted<T>(&self, write: Write, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        if let Some(hook) = &self.hook {
            hook.before(write).await?;
        }
        match self.take(write) {
            None => call.await,
            Some(Fault::Unavailable) => Err(Error::Unavailable(format!("injected fault on {write:?}"))),
            Some(Fault::CommitThenUnknown) => {
                call.await?;
                Err(Error::OutcomeUnknown(format!("injected fault: {write:?} committed, unconfirmed")))
            }
        }
    }
}

#[async_trait]
impl NodeStore for FaultyStore {
    fn is_exclusive(&self) -> bool {
        self.inner.is_exclusive()
    }

    fn on_wakeup(&self, wake: WakeFn) {
        self.inner.on_wakeup(wake)
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    async fn queue_stats(&self, now: Millis) -> Result<Vec<QueueStats>> {
        self.inner.queue_stats(now).await
    }

    async fn heartbeat(&self, beat: NodeBeat) -> Result<()> {
        self.inner.heartbeat(beat).await
    }

    async fn nodes(&self) -> Result<Vec<NodeState>> {
        self.inner.nodes().await
    }

    async fn region_view(&self) -> Result<crate::region::LocalView> {
        self.inner.region_view().await
    }

    async fn raise_epoch(&self, epoch: crate::region::Epoch, now: Millis) -> Result<bool> {
        self.inner.raise_epoch(epoch, now).await
    }

    async fn promote(&self) -> Result<Option<Millis>> {
        self.inner.promote().await
    }
}

#[async_trait]
impl InvocationStore for FaultyStore {
    async fn enqueue(&self, new: NewInvocation) -> Result<Invocation> {
        self.faulted(Write::Enqueue, self.inner.enqueue(new)).await
    }

    async fn enqueue_all(&self, news: Vec<NewInvocation>) -> Result<Vec<Invocation>> {
        self.faulted(Write::Enqueue, self.inner.enqueue_all(news)).await
    }

    async fn record_finished(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        urgency: Urgency,
    ) -> Result<()> {
        self.faulted(Write::RecordFinished, self.inner.record_finished(invocation, effects, urgency)).await
    }

    async fn record_finished_all(&self, invocations: Arc<Vec<Invocation>>, urgency: Urgency) -> Result<()> {
        self.faulted(Write::RecordFinished, self.inner.record_finished_all(invocations, urgency)).await
    }

    fn hurry(&self) {
        self.inner.hurry()
    }

    async fn lease(&self, request: LeaseRequest) -> Result<Leased> {
        self.inner.lease(request).await
    }

    async fn set_paused(&self, function: &str, paused: bool, now: Millis) -> Result<()> {
        self.inner.set_paused(function, paused, now).await
    }

    async fn paused(&self) -> Result<Vec<(String, Millis)>> {
        self.inner.paused().await
    }

    async fn complete(&self, completion: Completion, urgency: Urgency) -> Result<()> {
        self.faulted(Write::Complete, self.inner.complete(completion, urgency)).await
    }

    async fn complete_all(&self, completions: Vec<Completion>, urgency: Urgency) -> Result<Vec<Result<()>>> {
        self.faulted(Write::Complete, self.inner.complete_all(completions, urgency)).await
    }

    async fn reclaim_leases(&self, scope: Reclaim, now: Millis) -> Result<Vec<String>> {
        self.inner.reclaim_leases(scope, now).await
    }

    async fn get(&self, id: &str) -> Result<Option<Invocation>> {
        self.inner.get(id).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Page<Invocation>> {
        self.inner.list(filter).await
    }

    async fn cancel(&self, id: &str, now: Millis) -> Result<Invocation> {
        self.inner.cancel(id, now).await
    }

    async fn redrive(&self, id: &str, now: Millis) -> Result<Invocation> {
        self.inner.redrive(id, now).await
    }

    async fn redrive_matching(&self, filter: ListFilter, now: Millis) -> Result<Vec<Invocation>> {
        self.inner.redrive_matching(filter, now).await
    }

    async fn discard(&self, id: &str, now: Millis) -> Result<Invocation> {
        self.inner.discard(id, now).await
    }
}

#[async_trait]
impl KeyStore for FaultyStore {
    async fn enqueue_keyed(&self, new: NewInvocation, claim: KeyClaim, reply: StoredReply) -> Result<KeyDecision> {
        self.faulted(Write::EnqueueKeyed, self.inner.enqueue_keyed(new, claim, reply)).await
    }

    async fn enqueue_all_keyed(
        &self,
        news: Vec<NewInvocation>,
        claim: KeyClaim,
        reply: StoredReply,
    ) -> Result<KeyDecision> {
        self.faulted(Write::EnqueueKeyed, self.inner.enqueue_all_keyed(news, claim, reply)).await
    }

    async fn begin_sync(&self, invocation: Invocation, claim: KeyClaim) -> Result<KeyDecision> {
        self.inner.begin_sync(invocation, claim).await
    }

    async fn finish_sync(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        key: KeyRef,
        holder: String,
        reply: StoredReply,
    ) -> Result<()> {
        self.faulted(Write::FinishSync, self.inner.finish_sync(invocation, effects, key, holder, reply)).await
    }

    async fn peek_key(&self, key: &KeyRef) -> Result<Option<KeyRecord>> {
        self.inner.peek_key(key).await
    }

    async fn claim_key(&self, claim: KeyClaim) -> Result<KeyDecision> {
        self.inner.claim_key(claim).await
    }

    async fn complete_key(&self, key: KeyRef, holder: String, reply: StoredReply) -> Result<()> {
        self.inner.complete_key(key, holder, reply).await
    }

    async fn release_key(&self, key: KeyRef, holder: String) -> Result<()> {
        self.inner.release_key(key, holder).await
    }

    async fn purge_expired_keys(&self, now: Millis, limit: usize) -> Result<usize> {
        self.inner.purge_expired_keys(now, limit).await
    }
}

#[async_trait]
impl EventStore for FaultyStore {
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>> {
        self.faulted(Write::Publish, self.inner.publish(events)).await
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>> {
        self.inner.get_event(id).await
    }

    async fn outbox_next(&self, peer: &str, limit: usize) -> Result<Vec<Outgoing>> {
        self.inner.outbox_next(peer, limit).await
    }

    async fn outbox_ack(&self, peer: &str, seqs: &[i64]) -> Result<()> {
        self.inner.outbox_ack(peer, seqs).await
    }

    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>> {
        self.inner.outbox_depth().await
    }
}

#[async_trait]
impl KvStore for FaultyStore {
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>> {
        self.inner.kv_get(ns, key).await
    }

    async fn kv_write(&self, write: KvWrite, now: Millis) -> Result<Option<i64>> {
        self.inner.kv_write(write, now).await
    }

    async fn kv_list(&self, ns: &str, prefix: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page<KvItem>> {
        self.inner.kv_list(ns, prefix, after, limit).await
    }
}

#[async_trait]
impl super::AccessStore for FaultyStore {
    async fn create_api_key(&self, key: crate::auth::ApiKey) -> Result<()> {
        self.inner.create_api_key(key).await
    }

    async fn api_keys(&self) -> Result<Vec<crate::auth::ApiKey>> {
        self.inner.api_keys().await
    }

    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<crate::auth::ApiKey> {
        self.inner.revoke_api_key(id, now).await
    }

    async fn touch_api_keys(&self, used: Vec<(String, Millis)>) -> Result<()> {
        self.inner.touch_api_keys(used).await
    }

    async fn signing_keys(&self) -> Result<Vec<crate::auth::SigningKey>> {
        self.inner.signing_keys().await
    }

    async fn add_signing_key(&self, key: crate::auth::SigningKey, retire_at: Millis, only_if_none: bool) -> Result<()> {
        self.inner.add_signing_key(key, retire_at, only_if_none).await
    }

    async fn audit(&self, entry: crate::auth::AuditEntry) -> Result<()> {
        self.inner.audit(entry).await
    }

    async fn audit_log(&self, filter: crate::auth::AuditFilter) -> Result<Page<crate::auth::AuditEntry>> {
        self.inner.audit_log(filter).await
    }
}

#[async_trait]
impl super::ScheduleStore for FaultyStore {
    async fn arm_schedules(&self, names: Vec<String>, now: Millis) -> Result<()> {
        self.inner.arm_schedules(names, now).await
    }

    async fn schedules(&self) -> Result<Vec<super::ScheduleState>> {
        self.inner.schedules().await
    }

    async fn take_tick(&self, tick: super::Tick) -> Result<super::TickTaken> {
        self.inner.take_tick(tick).await
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Millis) -> Result<()> {
        self.inner.set_schedule_paused(name, paused, now).await
    }
}

#[async_trait]
impl super::WorkflowStore for FaultyStore {
    async fn start_run(&self, run: crate::workflow::Run, first: NewInvocation) -> Result<super::RunStarted> {
        self.inner.start_run(run, first).await
    }

    async fn get_run(&self, id: &str) -> Result<Option<crate::workflow::Run>> {
        self.inner.get_run(id).await
    }

    async fn list_runs(&self, filter: super::RunFilter) -> Result<Page<crate::workflow::Run>> {
        self.inner.list_runs(filter).await
    }

    async fn update_run(&self, update: super::RunUpdate) -> Result<()> {
        self.inner.update_run(update).await
    }
}

#[async_trait]
impl super::ChaosStore for FaultyStore {
    async fn add_fault(&self, fault: crate::chaos::Fault) -> Result<()> {
        self.inner.add_fault(fault).await
    }

    async fn faults(&self, now: Millis) -> Result<Vec<crate::chaos::Fault>> {
        self.inner.faults(now).await
    }

    async fn remove_fault(&self, id: &str) -> Result<bool> {
        self.inner.remove_fault(id).await
    }
}
