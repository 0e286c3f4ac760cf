//! Keel's deterministic simulation: a whole node — its HTTP API, dispatchers, sweeper, flow
//! control, retry decisions and the SQLite store — run on one thread on paused `tokio` time,
//! with the network to the functions replaced by simulated functions ([`Wire`]) that answer,
//! fail, hang or answer slowly as a seeded generator decides. Everything that varies is drawn
//! from the seed: the clients' requests and their timing, the functions' behaviour, the store's
//! faults (a write refused, a commit whose confirmation is lost, a slow commit) and crashes of
//! the node (its runtime dropped mid-flight, a new node started on the same store). A seed
//! therefore reproduces a run exactly, and a failing seed is a bug report.
//!
//! After the load, the node runs without faults until every invocation has ended, and the
//! run's history is held against the store:
//! - nothing acknowledged is lost (every id a client was given is stored; every event accepted
//!   has its deliveries);
//! - nothing keyed is applied twice (one invocation per Idempotency-Key, and every replay of a
//!   key answered alike; the effects of exactly one attempt — the recorded one — committed);
//! - attempts never exceed the policy's `max_attempts`;
//! - no retry starts before its backoff allows;
//! - every invocation ends in a terminal state.
//!
//! `cargo test -p keel-server --lib sim` runs [`SEEDS_IN_CI`] seeds and checks that a seed
//! repeats exactly; the long mode (`KEEL_SIM_SEEDS=100000 cargo test --release -p keel-server
//! --lib sim::tests::long -- --ignored --nocapture`) runs as many as asked, from
//! `KEEL_SIM_FIRST_SEED` (default 0); `sim::tests::trace` prints one seed's run
//! (`KEEL_SIM_SEED`). RESILIENCE.md records the long run.
//!
//! What is simulated and what is real: the node is the real one (`Node::start_with`), its API
//! called in-process through the router (no sockets), its store the real SQLite store in its
//! deterministic mode (`SqliteStore::deterministic`: every write its own transaction, at once,
//! on this thread) under a [`FaultyStore`]. Only the functions' side of the network is a
//! stand-in ([`Wire`], in `runtime::url` where the HTTP client would send), so the request
//! Keel builds, the timeout, the classification of answers and effects are Keel's own code.
//! Not covered here: PostgreSQL and several nodes (the kill loop and the cluster tests cover
//! those with real processes), group commit (the deterministic mode commits alone).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use keel_core::clock::{Clock, Millis};
use keel_core::invocation::{Invocation, Status};
use keel_core::retry::{Jitter, RetryPolicy};
use keel_core::store::faulty::{Fault, FaultyStore, Write};
use keel_core::store::{ListFilter, RunFilter, Store};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::server::{Node, NodeOptions};

/// What answers an attempt's request in place of the network.
pub(crate) trait Wire: Send + Sync + std::fmt::Debug {
    fn call(&self, request: Request<Full<Bytes>>) -> WireFuture;
}

pub(crate) type WireFuture = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, WireFailure>> + Send>>;

/// A call that got no answer: `unreached` when no connection could be made.
#[derive(Debug)]
pub(crate) struct WireFailure {
    pub(crate) unreached: bool,
    pub(crate) message: String,
}

/// Seeds `cargo test` runs.
const SEEDS_IN_CI: u64 = 200;

/// Where every simulated clock starts: 2027-01-15T08:00:00Z.
const EPOCH_MS: Millis = 1_800_000_000_000;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[auth]
mode = "none"

[topics."sim.in"]
[topics."sim.out"]

[functions.a]
url = "http://a.sim.invalid/run"
timeout = "2s"
concurrency = 4
retry = { max_attempts = 4, initial = "200ms", max = "2s", multiplier = 2.0, jitter = "full" }

[functions.b]
url = "http://b.sim.invalid/run"
timeout = "1s"
concurrency = 2
retry = { max_attempts = 3, initial = "100ms", max = "1s", multiplier = 3.0, jitter = "equal" }

[[subscriptions]]
name = "s1"
topic = "sim.in"
function = "b"
retry = { max_attempts = 5, initial = "50ms", max = "500ms", jitter = "equal" }

[workflows.w]
steps = [
  { name = "one", function = "a", compensate = "b" },
  { name = "two", function = "b" },
  { name = "three", function = "a", compensate = "b" },
  { name = "four", function = "b" },
]
"#;

/// A clock on `tokio` time: paused time moves it.
#[derive(Debug)]
struct SimClock {
    base: Millis,
    start: Instant,
}

impl Clock for SimClock {
    fn now_ms(&self) -> Millis {
        self.base + self.start.elapsed().as_millis() as Millis
    }
}

/// One seeded generator shared by everything that draws (the order of draws is the run's).
#[derive(Debug, Clone)]
struct Draw(Arc<Mutex<fastrand::Rng>>);

impl Draw {
    fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))))
    }
    fn u64(&self, range: std::ops::Range<u64>) -> u64 {
        self.0.lock().unwrap().u64(range)
    }
    fn percent(&self) -> u64 {
        self.u64(0..100)
    }
}

/// How a simulated function treats one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    /// Succeeds with effects: a KV write and an event, both naming the call.
    Effects,
    Unavailable,
    /// 422: retrying will not help.
    Refuses,
    /// Answers only after the attempt's timeout.
    Hangs,
    /// Answers, late but within the timeout.
    Slow,
    /// No connection.
    Unreachable,
}

/// Every call the functions got, in order.
#[derive(Debug, Default)]
struct Ledger {
    calls: Vec<Call>,
}

#[derive(Debug, Clone)]
struct Call {
    invocation: String,
    attempt: u32,
    behaviour: Behaviour,
}

/// The simulated functions `a` and `b`.
#[derive(Debug)]
struct Functions {
    draw: Draw,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
}

impl Wire for Functions {
    fn call(&self, request: Request<Full<Bytes>>) -> WireFuture {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let invocation = header("keel-invocation-id");
        let attempt: u32 = header("keel-attempt").parse().unwrap_or(0);
        let function = header("keel-function");
        let timeout_ms = if function == "a" { 2_000 } else { 1_000 };
        let behaviour = match self.draw.percent() {
            0..50 => Behaviour::Ok,
            50..65 => Behaviour::Effects,
            65..78 => Behaviour::Unavailable,
            78..81 => Behaviour::Refuses,
            81..86 => Behaviour::Hangs,
            86..95 => Behaviour::Slow,
            _ => Behaviour::Unreachable,
        };
        let delay = match behaviour {
            Behaviour::Hangs => timeout_ms * 3,
            Behaviour::Slow => self.draw.u64(1..timeout_ms * 8 / 10),
            _ => self.draw.u64(0..5),
        };
        let mut ledger = self.ledger.lock().unwrap();
        let seq = ledger.calls.len();
        let event = (behaviour == Behaviour::Effects).then(|| format!("fx-{seq}"));
        ledger.calls.push(Call { invocation: invocation.clone(), attempt, behaviour });
        drop(ledger);
        self.trace.note(format!("call {seq} {function} {invocation} #{attempt} {behaviour:?}"));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let json = |status: u16, body: serde_json::Value| {
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap()
            };
            match behaviour {
                Behaviour::Ok | Behaviour::Slow | Behaviour::Hangs => Ok(json(200, serde_json::json!({ "call": seq }))),
                Behaviour::Effects => {
                    let envelope = serde_json::json!({
                        "result": { "call": seq },
                        "kv": [{ "ns": "sim", "key": format!("{invocation}.{seq}"), "value": { "call": seq } }],
                        "events": [{ "topic": "sim.out", "id": event, "data": { "call": seq } }],
                    });
                    Ok(Response::builder()
                        .status(200)
                        .header("content-type", keel_core::effects::CONTENT_TYPE)
                        .body(Full::new(Bytes::from(envelope.to_string())))
                        .unwrap())
                }
                Behaviour::Unavailable => Ok(json(503, serde_json::json!({ "error": "busy" }))),
                Behaviour::Refuses => Ok(json(422, serde_json::json!({ "error": "no" }))),
                Behaviour::Unreachable => {
                    Err(WireFailure { unreached: true, message: "connection refused (simulated)".into() })
                }
            }
        })
    }
}

/// What happened, in order, and when on the simulated clock: the run's fingerprint (two runs
/// of one seed must be equal).
#[derive(Debug, Clone, Default)]
struct Trace(Arc<Mutex<TraceLines>>);

#[derive(Debug, Default)]
struct TraceLines {
    lines: Vec<String>,
    /// The life's start: its tokio instant and its clock reading.
    anchor: Option<(Instant, Millis)>,
}

impl Trace {
    /// Simulated time restarts with each life's runtime: notes count from `at` on.
    fn anchor(&self, at: Millis) {
        self.0.lock().unwrap().anchor = Some((Instant::now(), at));
    }

    fn note(&self, line: String) {
        let mut trace = self.0.lock().unwrap();
        let at = trace.anchor.map_or(0, |(start, base)| base + start.elapsed().as_millis() as Millis);
        trace.lines.push(format!("{at} {line}"));
    }
}

/// What the clients were told.
#[derive(Debug, Default)]
struct History {
    /// Invocation ids a client was given (202 or a keyed sync answer).
    acknowledged: BTreeSet<String>,
    /// Event ids accepted (202).
    events: BTreeSet<String>,
    /// Workflow run ids a client was given (202).
    runs: BTreeSet<String>,
    /// Each Idempotency-Key (`route/key`): every answer given for it, as `status body`.
    keyed: BTreeMap<String, BTreeSet<String>>,
    requests: u64,
}

/// One life of a node: started on the store, maybe crashed (its runtime dropped).
struct Life {
    seed: u64,
    store: Arc<dyn Store>,
    faulty: Arc<FaultyStore>,
    functions: Arc<Functions>,
    draw: Draw,
    history: Arc<Mutex<History>>,
    trace: Trace,
}

/// The result of one seed: its fingerprint, or the invariants it broke.
pub(crate) struct Outcome {
    pub(crate) fingerprint: Vec<String>,
    pub(crate) broken: Vec<String>,
    pub(crate) invocations: usize,
    pub(crate) calls: usize,
    /// Workflow runs by how they ended (`compensated`, `failed`, …).
    pub(crate) runs: BTreeMap<String, usize>,
}

/// Runs seed `seed` to the end and checks it.
pub(crate) fn run(seed: u64) -> Outcome {
    // Ids and node names draw from the thread's `fastrand`: seeded too.
    fastrand::seed(seed);
    let draw = Draw::new(seed ^ 0x5eed);
    let trace = Trace::default();
    let store_draw = Draw::new(seed ^ 0xd15c);
    let sqlite = keel_store::sqlite::SqliteStore::deterministic(Box::new(move || {
        Duration::from_millis(match store_draw.percent() {
            0..90 => 0,
            90..99 => store_draw.u64(1..50),
            _ => store_draw.u64(200..800),
        })
    }))
    .expect("an in-memory store");
    let faulty = Arc::new(FaultyStore::new(Arc::new(sqlite)));
    let store: Arc<dyn Store> = faulty.clone();
    let functions = Arc::new(Functions { draw: draw.clone(), ledger: Default::default(), trace: trace.clone() });
    let history = Arc::new(Mutex::new(History::default()));
    let life = Life {
        seed,
        store: store.clone(),
        faulty: faulty.clone(),
        functions: functions.clone(),
        draw: draw.clone(),
        history: history.clone(),
        trace: trace.clone(),
    };
    let crashes = draw.u64(0..3);
    let mut now = EPOCH_MS;
    for n in 0..crashes {
        now = life.run(n, now);
        now += draw.u64(0..5_000) as Millis;
    }
    let mut broken = Vec::new();
    let (invocations, runs) = life.finish(crashes, now, &mut broken);
    let calls = functions.ledger.lock().unwrap().calls.len();
    let fingerprint = trace.0.lock().unwrap().lines.clone();
    Outcome { fingerprint, broken, invocations, calls, runs }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a runtime")
}

impl Life {
    async fn start(&self, n: u64, now: Millis) -> (Node, Arc<SimClock>) {
        let config = keel_core::config::load_str("keel.toml", CONFIG, &Default::default()).expect("the config");
        let clock = Arc::new(SimClock { base: now, start: Instant::now() });
        self.trace.anchor(now);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let options = NodeOptions {
            clock: clock.clone(),
            seed: Some(self.seed.wrapping_add(n)),
            wire: Some(self.functions.clone() as Arc<dyn Wire>),
        };
        let node = Node::start_with(config, listener, self.store.clone(), options).await.expect("the node starts");
        self.trace.note(format!("life {n} starts at {now}"));
        (node, clock)
    }

    /// Runs life `n` from `now` under load and faults; crashes it at a random moment. Answers
    /// the clock's reading at the crash.
    fn run(&self, n: u64, now: Millis) -> Millis {
        runtime().block_on(async {
            let (node, clock) = self.start(n, now).await;
            let length = Duration::from_millis(self.draw.u64(2_000..8_000));
            let until = Instant::now() + length;
            self.load(&node, until);
            self.faults(until);
            tokio::time::sleep_until(until).await;
            self.trace.note(format!("life {n} crashes"));
            let at = clock.now_ms();
            // The node goes, and the runtime with every task in it: nothing runs after this
            // point (no drain, no last commit) — the crash.
            drop(node);
            at
        })
    }

    /// Starts the clients, which send requests until `until`.
    fn load(&self, node: &Node, until: Instant) {
        for client in 0..4 {
            let router = crate::api::router(node.shared().clone());
            let draw = self.draw.clone();
            let history = self.history.clone();
            let trace = self.trace.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(draw.u64(0..600))).await;
                    if Instant::now() >= until {
                        return;
                    }
                    let op = draw.percent();
                    let (cancel, run) = {
                        let history = history.lock().unwrap();
                        let pick = |set: &BTreeSet<String>| {
                            let n = set.len() as u64;
                            (n > 0).then(|| draw.u64(0..n)).and_then(|i| set.iter().nth(i as usize).cloned())
                        };
                        (pick(&history.acknowledged), pick(&history.runs))
                    };
                    let (request, key) = request(op, &draw, cancel, run);
                    let path = request.uri().path().to_string();
                    history.lock().unwrap().requests += 1;
                    let response = router.clone().oneshot(request).await.expect("the router answers");
                    let status = response.status().as_u16();
                    let id =
                        response.headers().get("keel-invocation-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let text = String::from_utf8_lossy(&body).to_string();
                    trace.note(format!("client {client} {path} {key:?} -> {status} {text}"));
                    record(&history, &path, key, status, id, &body);
                }
            });
        }
    }

    /// Plans a store fault from time to time until `until`. A planned fault catches the next
    /// matching write, in this life or a later one.
    fn faults(&self, until: Instant) {
        let draw = self.draw.clone();
        let faulty = self.faulty.clone();
        let trace = self.trace.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(draw.u64(200..2_000))).await;
                if Instant::now() >= until {
                    return;
                }
                let write = match draw.u64(0..6) {
                    0 => Write::Enqueue,
                    1 => Write::EnqueueKeyed,
                    2 => Write::Publish,
                    3 => Write::Complete,
                    4 => Write::RecordFinished,
                    _ => Write::FinishSync,
                };
                let fault = if draw.percent() < 60 { Fault::Unavailable } else { Fault::CommitThenUnknown };
                faulty.plan(write, fault);
                trace.note(format!("fault planned: {write:?} {fault:?}"));
            }
        });
    }

    /// The last life: no crash; the load, then no new faults until every invocation has ended;
    /// then the checks. Answers how many invocations the store holds.
    fn finish(&self, n: u64, now: Millis, broken: &mut Vec<String>) -> (usize, BTreeMap<String, usize>) {
        runtime().block_on(async {
            let (node, _clock) = self.start(n, now).await;
            let until = Instant::now() + Duration::from_millis(self.draw.u64(2_000..8_000));
            self.load(&node, until);
            self.faults(until);
            tokio::time::sleep_until(until).await;
            // Let the clients' last requests finish, then wait for every invocation to end.
            tokio::time::sleep(Duration::from_secs(40)).await;
            let give_up = Instant::now() + Duration::from_secs(3_600);
            let all = loop {
                let all = all_invocations(self.store.as_ref()).await;
                if all.iter().all(|i| i.status.is_final()) || Instant::now() >= give_up {
                    break all;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            self.trace.note(format!("drained: {} invocations", all.len()));
            for inv in &all {
                self.trace.note(format!(
                    "final {} {} {:?} attempts={}/{} response={:?}",
                    inv.id,
                    inv.function,
                    inv.status,
                    inv.attempt_count,
                    inv.attempts.len(),
                    inv.response.as_ref().map(|r| String::from_utf8_lossy(&r.body).to_string())
                ));
            }
            let runs = self.check(&all, broken).await;
            node.shutdown().await;
            (all.len(), runs)
        })
    }

    async fn check(&self, all: &[Invocation], broken: &mut Vec<String>) -> BTreeMap<String, usize> {
        let config = keel_core::config::load_str("keel.toml", CONFIG, &Default::default()).expect("the config");
        let history = std::mem::take(&mut *self.history.lock().unwrap());
        let by_id: BTreeMap<&str, &Invocation> = all.iter().map(|i| (i.id.as_str(), i)).collect();
        // Nothing acknowledged lost.
        for id in &history.acknowledged {
            if !by_id.contains_key(id.as_str()) {
                broken.push(format!("lost: invocation {id} was acknowledged but is not stored"));
            }
        }
        for id in &history.events {
            match self.store.get_event(id).await {
                Ok(Some(event))
                    if event.deliveries.iter().any(|d| d.delivery.as_ref().is_some_and(|d| d.subscription == "s1")) => {
                }
                Ok(Some(_)) => broken.push(format!("lost: event {id} has no delivery to s1")),
                Ok(None) => broken.push(format!("lost: event {id} was accepted but is not stored")),
                Err(e) => broken.push(format!("reading event {id}: {e}")),
            }
        }
        let runs = check_runs(self.store.as_ref(), &history.runs, &by_id, broken).await;
        // Every replay of a key answered alike (503s and 409s, which run nothing, aside).
        for (key, answers) in &history.keyed {
            if answers.len() > 1 {
                broken.push(format!("key {key} answered differently: {answers:?}"));
            }
        }
        // One invocation per key.
        let mut per_key: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for inv in all {
            if let Some(key) = inv.idempotency_key.as_deref() {
                *per_key.entry((inv.function.as_str(), key)).or_default() += 1;
            }
        }
        for ((function, key), n) in per_key {
            if n > 1 {
                broken.push(format!("applied twice: {n} invocations of {function} for key {key}"));
            }
        }
        let calls = self.functions.ledger.lock().unwrap().calls.clone();
        for inv in all {
            if !inv.status.is_final() {
                broken.push(format!("not ended: {} is {:?} after the drain", inv.id, inv.status));
            }
            let policy = policy_of(&config, inv);
            // Interrupted attempts (a crash) may have run unseen: up to twice the policy then.
            let interrupted =
                inv.attempts.iter().any(|a| a.error.as_deref().is_some_and(|e| e.starts_with("interrupted")));
            let most = if interrupted { policy.max_attempts * 2 } else { policy.max_attempts };
            if inv.attempts_in_budget() > most {
                broken.push(format!(
                    "too many attempts: {} made {} since its last redrive, of at most {most}",
                    inv.id,
                    inv.attempts_in_budget()
                ));
            }
            // Within the budget since the last redrive (earlier budgets are not kept apart).
            for pair in inv.attempts.windows(2).filter(|p| p[0].number > inv.budget_start) {
                let (before, after) = (&pair[0], &pair[1]);
                let interrupted = before.error.as_deref().is_some_and(|e| e.starts_with("interrupted"));
                if interrupted || before.outcome == keel_core::outcome::Outcome::Success {
                    continue;
                }
                let least = least_delay(policy, before.number - inv.budget_start);
                let gap = after.started_at - before.ended_at;
                if gap < least {
                    broken.push(format!(
                        "early retry: {} attempt {} started {gap} ms after attempt {} ended, policy allows no less than {least} ms",
                        inv.id, after.number, before.number
                    ));
                }
            }
            // The effects of exactly the recorded attempt are committed, and no other's.
            let recorded_call = (inv.status == Status::Succeeded)
                .then_some(inv.response.as_ref())
                .flatten()
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
                .and_then(|v| v["call"].as_u64());
            for (seq, call) in calls.iter().enumerate().filter(|(_, c)| c.invocation == inv.id) {
                if call.behaviour != Behaviour::Effects {
                    continue;
                }
                let stored = match self.store.kv_get("sim", &format!("{}.{seq}", inv.id)).await {
                    Ok(found) => found.is_some(),
                    Err(e) => {
                        broken.push(format!("reading kv sim/{}.{seq}: {e}", inv.id));
                        continue;
                    }
                };
                let should = recorded_call == Some(seq as u64);
                if stored != should {
                    broken.push(format!(
                        "effects: the KV write of {} attempt {} (call {seq}) is {} but the recorded call is {recorded_call:?}",
                        inv.id,
                        call.attempt,
                        if stored { "committed" } else { "missing" }
                    ));
                }
            }
        }
        runs
    }
}

/// Workflow runs: every run a client was given is stored and has ended, as its steps'
/// invocations say, and no step or compensation was started twice (or left out).
async fn check_runs(
    store: &dyn Store,
    acknowledged: &BTreeSet<String>,
    invocations: &BTreeMap<&str, &Invocation>,
    broken: &mut Vec<String>,
) -> BTreeMap<String, usize> {
    use keel_core::workflow::{RunStatus, StepStatus};
    let mut runs = Vec::new();
    let mut cursor = None;
    loop {
        let filter = RunFilter { limit: keel_core::store::MAX_LIMIT, cursor: cursor.clone(), ..Default::default() };
        match store.list_runs(filter).await {
            Ok(page) => {
                runs.extend(page.items);
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            Err(e) => {
                broken.push(format!("listing runs: {e}"));
                return BTreeMap::new();
            }
        }
    }
    let stored: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    for id in acknowledged.iter().filter(|id| !stored.contains(id.as_str())) {
        broken.push(format!("lost: workflow run {id} was acknowledged but is not stored"));
    }
    let status_of = |id: &Option<String>| id.as_deref().and_then(|id| invocations.get(id)).map(|i| i.status);
    for run in &runs {
        let id = &run.id;
        if !run.status.is_ended() {
            let steps: Vec<String> = run
                .steps
                .iter()
                .map(|s| format!("{}={:?}/{:?}", s.name, s.status, status_of(&s.invocation_id)))
                .collect();
            broken.push(format!("stuck: run {id} is {} after the drain: {steps:?}", run.status));
        }
        let mut started = 0;
        for (step, def) in run.steps.iter().zip(&run.definition.steps) {
            let inv = status_of(&step.invocation_id);
            let expected = match step.status {
                StepStatus::Pending => None,
                StepStatus::Running => Some(inv.unwrap_or(Status::Queued)),
                StepStatus::Failed => Some(Status::Dead),
                StepStatus::Cancelled => Some(Status::Cancelled),
                StepStatus::Succeeded
                | StepStatus::Compensating
                | StepStatus::Compensated
                | StepStatus::CompensationFailed => Some(Status::Succeeded),
            };
            if inv != expected {
                broken.push(format!("run {id}: step {} is {:?} but its invocation is {inv:?}", step.name, step.status));
            }
            let undo = status_of(&step.compensation_id);
            let expected = match step.status {
                StepStatus::Compensated => Some(Status::Succeeded),
                StepStatus::CompensationFailed => Some(Status::Dead),
                StepStatus::Compensating => undo,
                _ => None,
            };
            if undo != expected {
                broken.push(format!(
                    "run {id}: step {} is {:?} but its compensation is {undo:?}",
                    step.name, step.status
                ));
            }
            if step.status == StepStatus::Succeeded && def.compensate.is_some() && run.status == RunStatus::Compensated
            {
                broken.push(format!("run {id} is compensated but step {} was not undone", step.name));
            }
            started += usize::from(step.invocation_id.is_some()) + usize::from(step.compensation_id.is_some());
        }
        let of_run = invocations.values().filter(|i| i.workflow.as_ref().is_some_and(|w| &w.run == id)).count();
        if of_run != started {
            broken.push(format!("run {id}: {of_run} invocations are its steps, but it started {started}"));
        }
        let all_succeeded = run.steps.iter().all(|s| s.status == StepStatus::Succeeded);
        if (run.status == RunStatus::Succeeded) != all_succeeded {
            broken.push(format!("run {id} is {} but all its steps succeeded: {all_succeeded}", run.status));
        }
    }
    for inv in invocations.values() {
        if let Some(w) = inv.workflow.as_ref().filter(|w| !stored.contains(w.run.as_str())) {
            broken.push(format!("orphan: invocation {} is a step of run {}, which is not stored", inv.id, w.run));
        }
    }
    let mut by_status = BTreeMap::new();
    for run in &runs {
        *by_status.entry(run.status.as_str().to_owned()).or_default() += 1;
    }
    by_status
}

/// The request of operation `op` (0..100), and its Idempotency-Key scope when keyed.
fn request(
    op: u64,
    draw: &Draw,
    cancel: Option<String>,
    run: Option<String>,
) -> (Request<axum::body::Body>, Option<String>) {
    let function = if draw.percent() < 60 { "a" } else { "b" };
    let post = |path: String, key: Option<&str>, body: String| {
        let mut builder = Request::post(path).header("content-type", "application/json");
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder.body(axum::body::Body::from(body)).unwrap()
    };
    match op {
        0..32 => (post(format!("/v1/functions/{function}/invocations"), None, r#"{"n":1}"#.into()), None),
        32..40 => {
            // Half keyed, with few keys: replays of a run's start happen.
            let key = (draw.percent() < 50).then(|| format!("r{}", draw.u64(0..8)));
            let path = "/v1/workflows/w/runs".to_string();
            let scope = key.as_ref().map(|k| format!("{path} {k}"));
            (post(path, key.as_deref(), serde_json::json!({ "key": key }).to_string()), scope)
        }
        40..60 => {
            // Few keys, so that replays (and replays racing the first) happen.
            let key = format!("k{}", draw.u64(0..12));
            let path = format!("/v1/functions/{function}/invocations");
            (post(path.clone(), Some(&key), format!(r#"{{"key":"{key}"}}"#)), Some(format!("{path} {key}")))
        }
        60..78 => (post("/v1/topics/sim.in/events".into(), None, r#"{"hello":"world"}"#.into()), None),
        // The operator's hand: redrive what is dead, cancel what waits.
        78..80 => (post("/v1/dlq/redrive".into(), None, r#"{"limit":20}"#.into()), None),
        80..82 => {
            let id = cancel.unwrap_or_else(|| "01MCC5RM18VD7EWF4NG5CQMGRS".into());
            (post(format!("/v1/invocations/{id}/cancel"), None, String::new()), None)
        }
        82..84 => {
            let id = run.unwrap_or_else(|| "01MCC5RM18VD7EWF4NG5CQMGRS".into());
            (post(format!("/v1/workflow-runs/{id}/cancel"), None, String::new()), None)
        }
        _ => {
            let key = format!("s{}", draw.u64(0..8));
            let path = "/v1/functions/a/invoke".to_string();
            (post(path.clone(), Some(&key), format!(r#"{{"key":"{key}"}}"#)), Some(format!("{path} {key}")))
        }
    }
}

/// Records what the client was told.
fn record(history: &Mutex<History>, path: &str, key: Option<String>, status: u16, id: Option<String>, body: &[u8]) {
    let mut history = history.lock().unwrap();
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if path.ends_with("/invocations") && status == 202 {
        if let Some(id) = json.as_ref().and_then(|j| j["id"].as_str()) {
            history.acknowledged.insert(id.to_string());
        }
    }
    if path.ends_with("/runs") && status == 202 {
        if let Some(id) = json.as_ref().and_then(|j| j["id"].as_str()) {
            history.runs.insert(id.to_string());
        }
    }
    if path.ends_with("/events") && status == 202 {
        for id in json.as_ref().and_then(|j| j["ids"].as_array()).into_iter().flatten() {
            if let Some(id) = id.as_str() {
                history.events.insert(id.to_string());
            }
        }
    }
    if path.ends_with("/invoke") && key.is_some() && status != 503 && status != 409 {
        if let Some(id) = id {
            history.acknowledged.insert(id);
        }
    }
    // Keyed answers that ran something: every replay must match the first.
    if let Some(key) = key {
        if status != 503 && status != 409 {
            // A run's start answers the run as it is now: its id is what must not change.
            let answer = match path.ends_with("/invoke") {
                true => format!("{status} {}", String::from_utf8_lossy(body)),
                false => format!("{status} {}", json.as_ref().map(|j| j["id"].to_string()).unwrap_or_default()),
            };
            history.keyed.entry(key).or_default().insert(answer);
        }
    }
}

/// The policy an invocation's attempts follow: its subscription's, else its function's.
fn policy_of<'c>(config: &'c keel_core::config::Config, inv: &Invocation) -> &'c RetryPolicy {
    inv.delivery
        .as_ref()
        .and_then(|d| config.subscriptions.iter().find(|s| s.name == d.subscription))
        .map_or(&config.functions[&inv.function].retry, |s| &s.retry)
}

/// The shortest pause the policy allows after failed attempt `attempt`.
fn least_delay(policy: &RetryPolicy, attempt: u32) -> Millis {
    let least = match policy.jitter {
        Jitter::None => policy.ceiling(attempt),
        Jitter::Full => Duration::ZERO,
        Jitter::Equal => policy.ceiling(attempt) / 2,
        Jitter::Decorrelated => policy.initial,
    };
    least.as_millis() as Millis
}

async fn all_invocations(store: &dyn Store) -> Vec<Invocation> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let filter = ListFilter { limit: keel_core::store::MAX_LIMIT, cursor: cursor.clone(), ..Default::default() };
        let page = match store.list(filter).await {
            Ok(page) => page,
            // A planned fault may still catch a read: look again.
            Err(_) => continue,
        };
        // A list leaves out each invocation's attempts: read each whole.
        for item in page.items {
            loop {
                match store.get(&item.id).await {
                    Ok(Some(whole)) => break all.push(whole),
                    Ok(None) => break,
                    Err(_) => continue,
                }
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seed: u64, outcome: &Outcome) -> String {
        format!(
            "seed {seed}: {} invariant(s) broken ({} invocations, {} calls):\n  {}\nits trace: KEEL_SIM_SEED={seed} cargo test -p keel-server --lib sim::tests::trace -- --ignored --nocapture",
            outcome.broken.len(),
            outcome.invocations,
            outcome.calls,
            outcome.broken.join("\n  ")
        )
    }

    #[test]
    fn a_seed_repeats_exactly() {
        let first = run(7);
        let second = run(7);
        assert!(first.calls > 20, "the run did something: {} calls", first.calls);
        assert_eq!(first.fingerprint.len(), second.fingerprint.len(), "the same seed made a different run");
        for (a, b) in first.fingerprint.iter().zip(&second.fingerprint) {
            assert_eq!(a, b, "the same seed made a different run");
        }
        let other = run(8);
        assert_ne!(first.fingerprint, other.fingerprint, "another seed makes another run");
    }

    fn open_files() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    #[test]
    fn every_invariant_holds_for_the_ci_seeds() {
        let files_before = open_files();
        let mut failures = Vec::new();
        let (mut invocations, mut calls) = (0, 0);
        let mut runs: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 0..SEEDS_IN_CI {
            let outcome = run(seed);
            invocations += outcome.invocations;
            calls += outcome.calls;
            for (status, n) in &outcome.runs {
                *runs.entry(status.clone()).or_default() += n;
            }
            if !outcome.broken.is_empty() {
                failures.push(report(seed, &outcome));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(invocations > SEEDS_IN_CI as usize * 10, "the seeds made {invocations} invocations");
        // Runs end every way a run can: the seeds reach each branch of the saga.
        for status in ["succeeded", "compensated", "failed"] {
            assert!(runs.get(status).is_some_and(|n| *n > 0), "no run ended {status}: {runs:?}");
        }
        // A crashed life leaves nothing open behind it (a long run would run out of files).
        let grown = open_files().saturating_sub(files_before);
        assert!(grown < 50, "{grown} more files open after {SEEDS_IN_CI} seeds");
        eprintln!("{SEEDS_IN_CI} seeds: {invocations} invocations, {calls} calls, runs {runs:?}, every invariant held");
    }

    /// One seed's trace, line by line: `KEEL_SIM_SEED=N cargo test -p keel-server --lib
    /// sim::tests::trace -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints one seed's run: KEEL_SIM_SEED=N"]
    fn trace() {
        let seed: u64 = std::env::var("KEEL_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let outcome = run(seed);
        outcome.fingerprint.iter().for_each(|line| println!("{line}"));
        assert!(outcome.broken.is_empty(), "{}", report(seed, &outcome));
    }

    /// The long mode: `KEEL_SIM_SEEDS` seeds from `KEEL_SIM_FIRST_SEED`.
    #[test]
    #[ignore = "long: run with KEEL_SIM_SEEDS=N"]
    fn long() {
        let count: u64 = std::env::var("KEEL_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000);
        let first: u64 = std::env::var("KEEL_SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let started = std::time::Instant::now();
        let (mut invocations, mut calls, mut failures) = (0, 0, Vec::new());
        for seed in first..first + count {
            let outcome = run(seed);
            invocations += outcome.invocations;
            calls += outcome.calls;
            if !outcome.broken.is_empty() {
                eprintln!("{}", report(seed, &outcome));
                failures.push(seed);
            }
        }
        eprintln!(
            "{count} seeds from {first} in {:.0?}: {invocations} invocations, {calls} calls, {} failing seed(s): {failures:?}",
            started.elapsed(),
            failures.len()
        );
        assert!(failures.is_empty());
    }
}
