//! The schedules part of a store: per schedule, the last tick taken and whether it is paused.
//! Taking a tick and storing the work it makes happen in one transaction, and a tick is taken
//! once: a crash never loses or doubles one, and of two nodes trying the same tick one gets
//! [`TickTaken::AlreadyTaken`].

use async_trait::async_trait;

use crate::clock::Millis;
use crate::events::NewEvent;
use crate::invocation::NewInvocation;
use crate::Result;

/// What a schedule's state is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub name: String,
    /// The latest tick decided about (fired or missed): no tick at or before it is taken again.
    pub last_tick: Option<Millis>,
    /// The latest tick that made work (an invocation or an event).
    pub last_fired: Option<Millis>,
    /// When the schedule was first seen, or last resumed: ticks before it are not due.
    pub armed_at: Millis,
    /// Set while paused: when it was paused.
    pub paused_at: Option<Millis>,
}

impl ScheduleState {
    /// Every tick up to this time has been dealt with: what [`crate::schedule::due`] counts from.
    pub fn since(&self) -> Millis {
        self.last_tick.map_or(self.armed_at, |t| t.max(self.armed_at))
    }
}

/// What a tick makes, stored with it.
#[derive(Debug, Clone)]
pub enum TickWork {
    Invocation(NewInvocation),
    Event(NewEvent),
}

/// A request to take tick `at` of `schedule`: every tick up to `at` is then dealt with. `work` is
/// `None` when the tick was missed (skipped): it is taken all the same, so no node counts it again.
#[derive(Debug, Clone)]
pub struct Tick {
    pub schedule: String,
    pub at: Millis,
    pub work: Option<TickWork>,
    pub now: Millis,
}

/// What taking a tick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickTaken {
    /// Taken, and its work (if any) stored in the same transaction.
    Taken,
    /// This tick or a later one was taken before (by this node or another): nothing was written.
    AlreadyTaken,
    /// The schedule is paused: nothing was written.
    Paused,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Records `names` as seen at `now` (their `armed_at`), leaving schedules already known as
    /// they are. A node calls it at start with the schedules of its config.
    async fn arm_schedules(&self, names: Vec<String>, now: Millis) -> Result<()>;

    /// Every schedule the store knows, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleState>>;

    /// Takes a tick and stores its work, in one transaction; see [`TickTaken`].
    async fn take_tick(&self, tick: Tick) -> Result<TickTaken>;

    /// Pauses (keeping the first `paused_at`) or resumes a schedule, for every node. Resuming
    /// arms it again at `now` (the ticks that passed while it was paused are not due, nor
    /// missed); resuming one not paused changes nothing.
    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Millis) -> Result<()>;
}
