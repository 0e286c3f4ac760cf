//! HTTP/1.1 keep-alive connections to functions, pooled per origin and driven by the attempt
//! that holds one.
//!
//! hyper_util's pooled client runs each connection as a task of its own: an attempt hands its
//! request to that task through a channel and waits on a second one for the answer, and the pool
//! finds the connection under a SipHash of its key twice a call. Here an attempt takes a
//! connection out of the pool, writes its request, reads the whole answer while polling the
//! connection itself, and puts it back: no task, no channels, one lookup each way
//! (BENCHMARKS.md, "A connection driven by its attempt").
//!
//! What the pooled client did, kept:
//! - idle connections are kept 60 s, then closed (by the attempt that finds them, or by a sweep
//!   every 30 s for origins no longer called);
//! - a connection the function closed while it was idle is seen when it is taken (one poll of
//!   it) and not used;
//! - a request that never left (its connection was found closed as it was to be written) goes
//!   again on another idle connection, or on a new one; found so on a new one, it fails;
//! - a failure to connect (TCP, TLS or the handshake) is told apart: the request never left.
//!
//! HTTP/2 calls (`http2 = true`) still go through the pooled client, whose one connection per
//! origin carries many calls at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use crate::client::error_chain;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often idle connections of origins no longer called are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One connection: the handle requests are sent through, and the connection itself, which
/// whoever holds it must poll for the request to go out and the answer to come in.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<Io, Full<Bytes>>,
    /// What the connection and the attempt's work are polled with (see [`drive`]): the
    /// filter, and the waker made of it once for the connection's life.
    filter: Arc<Filter>,
    waker: Waker,
    /// The `Host` header of every request on it, made once (a copy of the text at each request
    /// was an allocation).
    host_header: HeaderValue,
    /// The lane that opened it, whose runtime drives its socket: it goes back to that lane's
    /// idle list.
    lane: usize,
}

/// A waker that keeps the wakes the attempt causes itself, while it is being polled, from
/// reaching the task. Sending a request into the connection, the connection handing back the
/// answer, its body: each wakes the waiter, which is the same task, already running. Passed on,
/// each such wake had tokio poll the whole request again later, and at times woke the other
/// worker to do it. Kept, it only has [`drive`] poll once more at once. Wakes from outside (the
/// socket became readable) go to the task as before.
#[derive(Default)]
struct Filter {
    polling: std::sync::atomic::AtomicBool,
    woken: std::sync::atomic::AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl std::task::Wake for Filter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            if let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
                task.wake_by_ref();
            }
        }
    }
}

struct Idle {
    /// Boxed: a connection is a kilobyte or two, and an attempt's future holds one across its
    /// awaits; moving it in and out of the pool, and the futures that hold it, copied it whole.
    conn: Box<Conn>,
    since: Instant,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum H1Error {
    /// The URL cannot be sent as a request: no attempt at it can succeed.
    Invalid(String),
    /// No connection could be made: the request never left.
    Connect(String),
    /// The request or its answer failed on the connection.
    Request(String),
}

/// What became of a request that got no answer.
enum Unsent {
    /// It never left, and is given back.
    Back(Box<Request<Full<Bytes>>>),
    /// It left, or may have: the connection failed before its answer.
    Failed(hyper::Error),
}

/// The pool: idle connections per origin (`scheme://host:port`), newest last.
#[derive(Clone)]
pub(crate) struct H1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Vec<LaneIdle>>,
}

/// The idle connections opened on one lane ([`crate::listener::lanes`]; 0: off the lanes), by
/// origin. A connection's socket is driven by the runtime that opened it: taken on another lane,
/// each of its answers would first wake the lane that opened it, and that lane the caller's.
struct LaneIdle {
    lane: usize,
    origins: foldhash::HashMap<String, Vec<Idle>>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self
            .inner
            .idle
            .lock()
            .map(|lanes| lanes.iter().flat_map(|l| l.origins.values()).map(Vec::len).sum::<usize>())
            .unwrap_or(0);
        f.debug_struct("H1Pool").field("idle", &idle).finish()
    }
}

impl H1Pool {
    /// A pool connecting through `connector` (TCP, and TLS for https://). Inside a tokio
    /// runtime it starts the sweep of idle connections; the sweep ends with the pool.
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        let inner = Arc::new(Inner { connector, idle: Mutex::new(Vec::new()) });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // The first sweep's time is set now, not when the task first runs.
            handle.spawn(sweep(Arc::downgrade(&inner), Instant::now() + SWEEP_EVERY));
        }
        Self { inner }
    }

    /// Sends `request` to `url` and hands its answer to `read`, which must read the body whole
    /// for the connection to be kept. The request goes in origin form with a `Host` header, as
    /// a client not going through a proxy sends it.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        url: &::url::Url,
        mut request: Request<Full<Bytes>>,
        read: F,
    ) -> Result<Result<T, E>, H1Error>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        use ::url::Position;
        let target = &url[Position::BeforePath..Position::AfterQuery];
        *request.uri_mut() = Uri::try_from(if target.is_empty() { "/" } else { target }).map_err(|e| invalid(&e))?;
        let origin = &url[..Position::BeforePath];
        let host = &url[Position::BeforeHost..Position::BeforePath];
        loop {
            let (mut conn, reused) = match self.take(origin) {
                Some(conn) => (conn, true),
                // Boxed: the connect and handshake futures hold a whole connection and TLS
                // state, and would make every attempt's future (moved into a box at each layer
                // of the router) that much larger; connecting is rare, moving is every call.
                None => (Box::pin(self.connect(origin, host)).await?, false),
            };
            let Conn { sender, driver, filter, waker, host_header, .. } = &mut *conn;
            request.headers_mut().insert(http::header::HOST, host_header.clone());
            let mut ended = false;
            let sent = drive(driver, (filter, waker), &mut ended, async {
                if sender.ready().await.is_err() {
                    return Err(Unsent::Back(Box::new(request)));
                }
                sender.try_send_request(request).await.map_err(|mut e| match e.take_message() {
                    Some(request) => Unsent::Back(Box::new(request)),
                    None => Unsent::Failed(e.into_error()),
                })
            })
            .await;
            let response = match sent {
                Ok(response) => response,
                // The connection was found closed before the request left: again, on another.
                Err(Unsent::Back(unsent)) if reused => {
                    request = *unsent;
                    continue;
                }
                Err(Unsent::Back(_)) => {
                    return Err(H1Error::Request(
                        "request failed: the connection closed before the request was sent".into(),
                    ))
                }
                Err(Unsent::Failed(e)) => return Err(H1Error::Request(format!("request failed: {}", error_chain(&e)))),
            };
            let answer = drive(driver, (filter, waker), &mut ended, read(response)).await;
            if answer.is_ok() && !ended && !sender.is_closed() {
                self.put(origin, conn);
            }
            return Ok(answer);
        }
    }

    /// An idle connection to `origin` still open, if any: the newest one this lane opened (older
    /// ones past the idle timeout are closed), or else the only one another lane holds idle.
    ///
    /// Another lane's connection costs a wake-up of that lane at each of its answers (its
    /// runtime drives the socket), so with two or more idle elsewhere this lane opens its own:
    /// the function has shown that it serves several connections at once. With exactly one, it
    /// may not: a function that serves one connection at a time (Python's `http.server`, say)
    /// would never answer a second while the first stays open, so that one is used.
    fn take(&self, origin: &str) -> Option<Box<Conn>> {
        let lane = crate::listener::lanes::current();
        loop {
            let idle = {
                let mut pool = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                let own = pool.iter_mut().find(|l| l.lane == lane).and_then(|l| l.origins.get_mut(origin));
                match own.and_then(|list| list.pop().map(|idle| (idle, list))) {
                    Some((idle, list)) => {
                        if idle.since.elapsed() >= IDLE_TIMEOUT {
                            list.clear(); // the older ones waited longer still
                            return None;
                        }
                        idle
                    }
                    None => {
                        let mut elsewhere = pool
                            .iter_mut()
                            .filter(|l| l.lane != lane)
                            .filter_map(|l| l.origins.get_mut(origin))
                            .filter(|list| !list.is_empty());
                        let list = elsewhere.next()?;
                        if list.len() > 1 || elsewhere.next().is_some() {
                            return None;
                        }
                        let idle = list.pop()?;
                        if idle.since.elapsed() >= IDLE_TIMEOUT {
                            return None;
                        }
                        idle
                    }
                }
            };
            let mut conn = idle.conn;
            // One poll, to see an end the function made while the connection was idle (its
            // keep-alive timeout, a restart); the attempt's own polls come next.
            let ended = Pin::new(&mut conn.driver).poll(&mut Context::from_waker(Waker::noop())).is_ready();
            if !ended && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
    }

    fn put(&self, origin: &str, conn: Box<Conn>) {
        // Idle, it wakes no task: the attempt that had it is done.
        *conn.filter.task.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let lane = conn.lane;
        let idle = Idle { conn, since: Instant::now() };
        let mut pool = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let at = match pool.iter().position(|l| l.lane == lane) {
            Some(at) => at,
            None => {
                pool.push(LaneIdle { lane, origins: foldhash::HashMap::default() });
                pool.len() - 1
            }
        };
        let pool = &mut pool[at].origins;
        match pool.get_mut(origin) {
            Some(list) => list.push(idle),
            None => {
                pool.insert(origin.to_owned(), vec![idle]);
            }
        }
    }

    /// A new connection to `origin`, whose requests name `host`: TCP (with the connector's
    /// timeout), TLS for https://, and the HTTP/1.1 handshake.
    async fn connect(&self, origin: &str, host: &str) -> Result<Box<Conn>, H1Error> {
        let host_header = HeaderValue::from_str(host).map_err(|e| invalid(&e))?;
        let failed =
            |e: &(dyn std::error::Error + 'static)| H1Error::Connect(format!("connect error: {}", error_chain(e)));
        let uri = Uri::try_from(origin).map_err(|e| failed(&e))?;
        // hyper-rustls' connector over `HttpConnector` is always ready: no `poll_ready` first.
        let io = self.inner.connector.clone().call(uri).await.map_err(|e| failed(&*e))?;
        let (sender, driver) = http1::handshake(io).await.map_err(|e| failed(&e))?;
        let filter = Arc::<Filter>::default();
        let waker = Waker::from(filter.clone());
        let lane = crate::listener::lanes::current();
        Ok(Box::new(Conn { sender, driver, filter, waker, host_header, lane }))
    }
}

/// A request that cannot be built from the function's URL.
fn invalid(e: &dyn std::fmt::Display) -> H1Error {
    H1Error::Invalid(format!("cannot build the request: {e}"))
}

/// Polls `work` to its end, polling the connection under it too (until it ends, which is
/// recorded in `ended`): the connection writes what `work` sends and reads what it waits for.
/// Both are polled with `waker`, from `filter`: what one does that wakes the other is polled
/// again here and now, not left to the task's next turn.
async fn drive<F: Future>(
    driver: &mut http1::Connection<Io, Full<Bytes>>,
    (filter, waker): (&Filter, &Waker),
    ended: &mut bool,
    work: F,
) -> F::Output {
    use std::sync::atomic::Ordering::SeqCst;
    /// Rounds of polling in one turn before the task yields: the connection may wake itself
    /// to yield (hyper does so after a long run of work), and that must not spin here.
    const ROUNDS: usize = 8;
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        {
            let mut task = filter.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut inner = Context::from_waker(waker);
        filter.polling.store(true, SeqCst);
        for _ in 0..ROUNDS {
            filter.woken.store(false, SeqCst);
            if let Poll::Ready(out) = work.as_mut().poll(&mut inner) {
                filter.polling.store(false, SeqCst);
                return Poll::Ready(out);
            }
            if !*ended && Pin::new(&mut *driver).poll(&mut inner).is_ready() {
                *ended = true;
            }
            if !filter.woken.load(SeqCst) {
                // Nothing to do until something outside wakes the task, unless a wake came
                // while `polling` was still set: then look once more.
                filter.polling.store(false, SeqCst);
                if !filter.woken.load(SeqCst) {
                    return Poll::Pending;
                }
                filter.polling.store(true, SeqCst);
            }
        }
        filter.polling.store(false, SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Closes idle connections past the timeout every [`SWEEP_EVERY`], until the pool is gone.
async fn sweep(inner: Weak<Inner>, first: Instant) {
    let mut every = tokio::time::interval_at(first, SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut pool = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        for lane in pool.iter_mut() {
            lane.origins.retain(|_, list| {
                list.retain(|idle| idle.since.elapsed() < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::sync::mpsc;

    use super::*;

    /// A function on `127.0.0.1:0` written on bare TCP, so that a test can see each connection:
    /// it counts those accepted and those it saw closed, keeps each request's target and
    /// `Host`, answers `ok` to each, and closes a connection after its answer when told to.
    struct Function {
        url: ::url::Url,
        accepted: Arc<AtomicUsize>,
        /// A message per connection the client closed, or that the function closed itself.
        closed: mpsc::UnboundedReceiver<()>,
        requests: mpsc::UnboundedReceiver<(String, String)>,
    }

    impl Function {
        /// Waits (5 s at most) for a connection to end.
        async fn saw_closed(&mut self) {
            let seen = tokio::time::timeout(Duration::from_secs(5), self.closed.recv()).await;
            assert!(matches!(seen, Ok(Some(()))), "no connection ended");
        }
    }

    async fn function(close_after_answer: bool) -> Function {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/purchase?at=1", listener.local_addr().unwrap()).parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let (closed_tx, requests_tx) = (closed_tx.clone(), requests_tx.clone());
                tokio::spawn(async move {
                    let mut socket = BufReader::new(socket);
                    while let Some(request) = read_request(&mut socket).await {
                        requests_tx.send(request).unwrap();
                        socket.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                        if close_after_answer {
                            break;
                        }
                    }
                    drop(socket);
                    let _ = closed_tx.send(());
                });
            }
        });
        Function { url, accepted, closed, requests }
    }

    /// A request's target and `Host`, its body read and dropped; `None` once the client closed.
    async fn read_request(socket: &mut BufReader<tokio::net::TcpStream>) -> Option<(String, String)> {
        let mut line = String::new();
        if socket.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let target = line.split(' ').nth(1)?.to_string();
        let (mut host, mut length) = (String::new(), 0);
        loop {
            line.clear();
            socket.read_line(&mut line).await.ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':')?;
            match name.to_ascii_lowercase().as_str() {
                "host" => host = value.trim().to_string(),
                "content-length" => length = value.trim().parse().ok()?,
                _ => {}
            }
        }
        let mut body = vec![0; length];
        socket.read_exact(&mut body).await.ok()?;
        Some((target, host))
    }

    fn pool() -> H1Pool {
        H1Pool::new(super::super::client::https_connector(&[]).unwrap())
    }

    fn request() -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
        *request.method_mut() = http::Method::POST;
        request
    }

    /// One call through `pool`, its body read whole: the body, or the pool's error.
    async fn call(pool: &H1Pool, url: &::url::Url) -> Result<Bytes, H1Error> {
        let answer = pool.call(url, request(), |r| async move { r.into_body().collect().await.map(|b| b.to_bytes()) });
        Ok(answer.await?.expect("the body reads"))
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_connection_sent_in_origin_form_with_host() {
        let mut f = function(false).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        }
        assert_eq!(f.accepted.load(Ordering::SeqCst), 1);
        let authority = format!("127.0.0.1:{}", f.url.port().unwrap());
        for _ in 0..3 {
            assert_eq!(f.requests.recv().await.unwrap(), ("/purchase?at=1".to_string(), authority.clone()));
        }
    }

    /// Runs a call through `pool` on lane `index` of `lanes`; the lane's number.
    async fn call_on(lanes: &crate::listener::lanes::Lanes, index: usize, pool: &H1Pool, url: &::url::Url) -> usize {
        let (pool, url) = (pool.clone(), url.clone());
        let call = lanes.run_on(index, async move {
            assert_eq!(call(&pool, &url).await.unwrap(), "ok");
            crate::listener::lanes::current()
        });
        tokio::time::timeout(Duration::from_secs(5), call).await.expect("the call is answered").unwrap()
    }

    /// A connection's socket is driven by the runtime that opened it: a lane uses its own idle
    /// connections, and another lane's only when that is the one idle connection to the function.
    #[tokio::test]
    async fn a_lane_keeps_its_own_connections_and_borrows_only_a_lone_one() {
        let f = function(false).await;
        let pool = pool();
        let lanes = crate::listener::lanes::Lanes::start(2).unwrap();
        let first = call_on(&lanes, 0, &pool, &f.url).await;
        let second = call_on(&lanes, 1, &pool, &f.url).await;
        assert!(first != 0 && second != 0 && first != second, "lanes {first} and {second}");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 1, "the lone idle connection is borrowed");
        // Two calls at once on lane 0, in one task so that both ask for a connection before
        // either answer is in: it holds two idle connections after them.
        let (both, url) = (pool.clone(), f.url.clone());
        let at_once = lanes.run_on(0, async move {
            let (a, b) = tokio::join!(call(&both, &url), call(&both, &url));
            (a.unwrap(), b.unwrap())
        });
        let answers = tokio::time::timeout(Duration::from_secs(5), at_once).await.expect("answered").unwrap();
        assert_eq!(answers, ("ok".into(), "ok".into()));
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
        // With two idle elsewhere, lane 1 opens its own, and keeps it.
        call_on(&lanes, 1, &pool, &f.url).await;
        assert_eq!(f.accepted.load(Ordering::SeqCst), 3, "lane 1 opens its own");
        call_on(&lanes, 1, &pool, &f.url).await;
        call_on(&lanes, 0, &pool, &f.url).await;
        assert_eq!(f.accepted.load(Ordering::SeqCst), 3, "each uses its own");
        // Off the lanes (three idle elsewhere): a connection of its own too.
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 4);
    }

    /// A function that serves one connection at a time, until it closes, answers calls made
    /// one after another from every lane and from off the lanes.
    #[tokio::test]
    async fn a_function_serving_one_connection_at_a_time_answers_calls_from_every_lane() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: ::url::Url = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let mut socket = BufReader::new(socket);
                while read_request(&mut socket).await.is_some() {
                    socket.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                }
            }
        });
        let pool = pool();
        let lanes = crate::listener::lanes::Lanes::start(2).unwrap();
        for lane in [0, 1, 0, 1] {
            call_on(&lanes, lane, &pool, &url).await;
        }
        let off = tokio::time::timeout(Duration::from_secs(5), call(&pool, &url)).await;
        assert_eq!(off.expect("answered off the lanes").unwrap(), "ok");
        call_on(&lanes, 1, &pool, &url).await;
    }

    #[tokio::test]
    async fn calls_at_once_each_get_a_connection_kept_for_the_next() {
        let f = function(false).await;
        let pool = pool();
        let (a, b) = tokio::join!(call(&pool, &f.url), call(&pool, &f.url));
        assert_eq!((a.unwrap(), b.unwrap()), ("ok".into(), "ok".into()));
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
        let (a, b) = tokio::join!(call(&pool, &f.url), call(&pool, &f.url));
        assert_eq!((a.unwrap(), b.unwrap()), ("ok".into(), "ok".into()));
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2, "both connections were kept and used again");
    }

    #[tokio::test]
    async fn a_connection_the_function_closed_while_idle_is_not_used() {
        let mut f = function(true).await;
        let pool = pool();
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        f.saw_closed().await; // the function has closed its end
                              // Seen when the connection is taken, or else when the request would go out on it.
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok", "the second call did not fail on the closed one");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_not_read_whole_closes_its_connection() {
        let mut f = function(false).await;
        let pool = pool();
        let unread = pool.call(&f.url, request(), |_response| async { Err::<(), _>("gave up") }).await.unwrap();
        assert_eq!(unread, Err("gave up"));
        f.saw_closed().await; // not kept: closed, so the function saw its end
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_connection_is_a_connect_error() {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap(); // bound, then let go: refused
        match call(&pool(), &url).await {
            Err(H1Error::Connect(message)) => assert!(message.starts_with("connect error: "), "{message}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let mut f = function(false).await;
        let pool = pool();
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        // The sweep closes it, the origin not being called again.
        tokio::time::pause();
        tokio::time::advance(IDLE_TIMEOUT + SWEEP_EVERY).await;
        tokio::time::resume();
        f.saw_closed().await;
        // And a connection past the timeout when it is taken is not used either.
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        tokio::time::pause();
        tokio::time::advance(IDLE_TIMEOUT).await;
        tokio::time::resume();
        assert!(pool.take(&f.url[..::url::Position::BeforePath]).is_none());
        f.saw_closed().await;
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
    }

    /// Counts its wakes, and lets the test wait for the next.
    #[derive(Default)]
    struct Counted {
        wakes: AtomicUsize,
        notify: tokio::sync::Notify,
    }

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_one();
        }
    }

    #[tokio::test]
    async fn a_call_on_a_kept_connection_wakes_its_task_only_for_the_answer_arriving() {
        let f = function(false).await;
        let pool = pool();
        assert_eq!(call(&pool, &f.url).await.unwrap(), "ok");
        // The second call, on the kept connection, polled by hand with a waker that counts.
        let counted = Arc::new(Counted::default());
        let waker = Waker::from(counted.clone());
        let mut second = std::pin::pin!(call(&pool, &f.url));
        let answer = loop {
            if let Poll::Ready(answer) = second.as_mut().poll(&mut Context::from_waker(&waker)) {
                break answer;
            }
            counted.notify.notified().await;
        };
        assert_eq!(answer.unwrap(), "ok");
        // Sending the request and the connection handing back the answer and its body each
        // woke the task too, before `Filter`: the task ran again for nothing.
        assert_eq!(counted.wakes.load(Ordering::SeqCst), 1, "one wake: the answer became readable");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 1);
    }
}
