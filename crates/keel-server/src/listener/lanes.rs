//! Lanes: threads that serve HTTP connections, one per core, each a tokio runtime of its own
//! (current-thread), so that a connection, the requests on it and the calls they make to
//! functions run on one thread from accept to close.
//!
//! On tokio's work-stealing runtime a worker that runs out of tasks parks, and the other wakes it
//! when tasks pile up. On a 2-core VM whose idle vCPUs halt, each such park and wake-up was a
//! stretch of idle CPU while the client and the function waited their turn on the other core.
//! Once a connection has its lane, its requests wake no other thread: a lane parks in its own
//! `epoll` only. Measured side by side under wrk at 32 connections, a sync call: 43,500 against
//! 39,700 calls/s, at 26.7 against 27.6 µs of CPU a call (BENCHMARKS.md, "Lanes: a connection
//! served by one thread"). The price is the one nginx pays: a lane's connections wait while one
//! of its requests computes (Keel's handlers wait on I/O, not on CPU), and connections are spread
//! as they open, not as they get busy.
//!
//! Every lane accepts on the listening socket (each has it in its own `epoll`) and serves what it
//! accepts, unless another lane has fewer connections open: then it hands the connection over
//! (`place`). Accepting on the main runtime and handing every connection to a lane cost a client
//! that opens a connection per request 13% of its calls a second (BENCHMARKS.md).
//!
//! `keel` serves on lanes ([`enable`], from `main`), as does the end-to-end suite; other
//! in-process servers (tests whose runtime may run on paused time) serve where they accept. The
//! server's background work (the async dispatcher, sweeps, the store's threads) stays on the
//! main runtime; work a request spawns runs on its lane. Lanes run until the process exits.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The process's lanes: how many [`enable`] asked for, started at the first listener.
static WANTED: AtomicUsize = AtomicUsize::new(0);
static LANES: OnceLock<Option<Lanes>> = OnceLock::new();
/// Lanes ever started in this process, for each lane's number (0: not a lane).
static STARTED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The number of the lane this thread is, 0 on any other thread.
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// Serves connections on `count` lanes from now on (at least one), or on one per core
/// (`TOKIO_WORKER_THREADS` when set, as for the main runtime) with `None`.
pub fn enable(count: Option<usize>) {
    let count = count.unwrap_or_else(|| {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    });
    WANTED.store(count.max(1), Ordering::Relaxed);
}

/// The process's lanes, started on first use; `None` until [`enable`] was called (or when they
/// could not be started: then connections are served where they are accepted, as before).
pub(super) fn enabled() -> Option<&'static Lanes> {
    let count = WANTED.load(Ordering::Relaxed);
    if count == 0 {
        return None;
    }
    LANES
        .get_or_init(|| {
            Lanes::start(count)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "cannot start the connection lanes: serving on the main runtime"),
                )
                .ok()
        })
        .as_ref()
}

/// The lane the current thread is, if it is one: work that keeps sockets for later (the pool of
/// connections to functions) keeps them per lane, since a socket is driven by the runtime that
/// opened it.
pub(crate) fn current() -> usize {
    LANE.with(Cell::get)
}

/// A set of lanes. Dropping it stops their threads (and drops whatever still runs on them).
pub(crate) struct Lanes {
    refs: Arc<[LaneRef]>,
    threads: Vec<LaneThread>,
}

/// What is needed to put work on a lane.
pub(crate) struct LaneRef {
    handle: Handle,
    /// Connections open on it.
    open: Arc<AtomicUsize>,
}

struct LaneThread {
    /// Taken (dropped), ends the lane's thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Lanes {
    /// Stops every lane's thread and waits for it to end.
    fn drop(&mut self) {
        for lane in &mut self.threads {
            lane.stop.take();
        }
        for lane in &mut self.threads {
            if let Some(thread) = lane.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Lanes {
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let mut refs = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let number = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("keel-lane-{number}")).spawn(move || {
                LANE.with(|lane| lane.set(number));
                // Until the set is dropped; then the runtime, and what still runs on it, goes.
                let _ = runtime.block_on(stopped);
            })?;
            refs.push(LaneRef { handle, open: Arc::default() });
            threads.push(LaneThread { stop: Some(stop), thread: Some(thread) });
        }
        Ok(Self { refs: refs.into(), threads })
    }

    pub(crate) fn len(&self) -> usize {
        self.refs.len()
    }

    /// The lanes, for work running on them that puts more work on them.
    pub(crate) fn refs(&self) -> Arc<[LaneRef]> {
        self.refs.clone()
    }

    /// Runs `work` on lane `index` of this set.
    pub(crate) fn run_on<F>(&self, index: usize, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.refs[index].handle.spawn(work)
    }
}

/// Serves `stream`, just accepted on lane `here` of `lanes`, there when no lane has fewer
/// connections open, else on the one with fewest: `serve` is given the stream registered with
/// that lane's runtime. Keeping it where it was accepted costs nothing; handing it over moves the
/// socket from one `epoll` to another and wakes that lane from this thread. A stream that cannot
/// move is closed.
pub(super) fn place<F, Fut>(lanes: &[LaneRef], here: usize, stream: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // The first lane with fewest open, counting from this one: this one on a tie.
    let least = (0..lanes.len())
        .map(|i| (here + i) % lanes.len())
        .min_by_key(|&at| lanes[at].open.load(Ordering::Relaxed))
        .unwrap_or(here);
    if least == here {
        let open = lanes[here].open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _open = Open(open);
            serve(stream).await;
        });
        return;
    }
    // The socket leaves this lane's reactor and joins the other's.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => return tracing::warn!(error = %e, "a connection could not be handed to a lane: closed"),
    };
    let open = lanes[least].open.clone();
    open.fetch_add(1, Ordering::Relaxed);
    lanes[least].handle.spawn(async move {
        let _open = Open(open);
        match TcpStream::from_std(stream) {
            Ok(stream) => serve(stream).await,
            Err(e) => tracing::warn!(error = %e, "a connection could not join its lane: closed"),
        }
    });
}

/// One connection counted on its lane while it is served.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::listener::{serve_on, Limits};

    /// One request on an open keep-alive connection; the body of the answer.
    async fn ask(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        let text = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the answer");
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if text.contains("\r\n\r\n") && text.ends_with('.') {
                break text;
            }
        };
        text.split("\r\n\r\n").nth(1).unwrap().trim_end_matches('.').to_string()
    }

    /// The names of this process's threads.
    fn threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim_end().to_string())
            .collect()
    }

    #[tokio::test]
    async fn connections_are_served_on_a_least_busy_lane_and_the_lanes_end_when_dropped() {
        let lanes = Lanes::start(2).unwrap();
        // Each answer names the thread that made it ('.' ends it).
        let app = axum::Router::new()
            .route("/", get(|| async { format!("{}.", std::thread::current().name().unwrap_or("?")) }));
        let limits = Limits {
            max_connections: 16,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_headers: 100,
            max_head_bytes: 16 * 1024,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = serve_on(listener, app, limits, None, async { stopped.await.unwrap() }, Some(&lanes));
        let client = async move {
            // Four connections opened one after another and kept open: each is served by a lane
            // with the fewest open, where it was accepted or handed over.
            let mut streams = Vec::new();
            let mut served = Vec::new();
            for _ in 0..4 {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                served.push(ask(&mut stream).await);
                streams.push(stream);
            }
            // The next request on each connection is served by the same lane.
            for (stream, first) in streams.iter_mut().zip(&served) {
                assert_eq!(&ask(stream).await, first);
            }
            stop.send(()).unwrap();
            served
        };
        let (mut served, result) = tokio::join!(client, server);
        result.unwrap();
        assert!(served.iter().all(|name| name.starts_with("keel-lane-")), "{served:?}");
        // Whichever lane accepted each, they are served two on each lane.
        assert_ne!(served[0], served[1], "{served:?}");
        served.sort();
        assert!(served[0] == served[1] && served[2] == served[3] && served[1] != served[2], "{served:?}");
        assert!(threads().contains(&served[0]));
        // The drop joins both threads. A joined thread may stay listed in /proc for a moment
        // while the kernel tears it down, so the list is read until they are gone (5 s at most).
        drop(lanes);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = threads();
            if !left.contains(&served[0]) && !left.contains(&served[2]) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "lane threads left: {left:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
