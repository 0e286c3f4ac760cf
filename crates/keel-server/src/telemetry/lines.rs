//! Log lines written behind: a line is appended to a buffer in memory, and one thread writes
//! what gathered to stdout, at most [`WINDOW`] after the first line of a group.
//!
//! Before, each line was a `write` on stdout by the tokio worker that logged it: one system call
//! for every async invocation's `attempt finished` line (~2 µs of CPU on this machine; written a
//! hundred at once, a line costs a tenth of that), and a worker blocked for as long as stdout's
//! reader (a pipe to a log shipper, a terminal, journald) did not read. Now a worker only copies
//! its line under a lock; the writer thread wakes once a group, not once a line, so there is no
//! wake-up a line either.
//!
//! A reader that falls behind by more than [`LIMIT`] costs lines, never invocations: a line that
//! does not fit is dropped and counted (`keel_log_lines_dropped_total`), and once the writer
//! catches up it logs how many were lost. Lines still in the buffer when the process is killed
//! (`SIGKILL`, a power cut) are lost: at most the last [`WINDOW`]. A clean stop ([`Lines::close`],
//! when `keel serve` returns) writes them all, and lines logged after it go straight to stdout;
//! it waits at most [`CLOSE_WAIT`] for a reader that stopped reading, then drops the rest.
//!
//! tracing-appender's `non_blocking` does the same job with a channel and a thread that writes
//! each line as it arrives, so it wakes that thread (a `futex` and a context switch) about as
//! often as lines come, which is what this is for avoiding.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::thread::Thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the first line of a group waits for company before the group is written.
const WINDOW: Duration = Duration::from_millis(10);
/// Buffered bytes past which the writer is woken before the window ends.
const HURRY: usize = 256 * 1024;
/// Buffered bytes past which a new line is dropped (the reader is that far behind).
const LIMIT: usize = 8 * 1024 * 1024;
/// How long a stop waits for a write stuck in a reader that stopped reading, before it gives up
/// the lines not yet written (the process is on its way out; a log must not hold it).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The `MakeWriter` of the fmt layer: cheap to clone, every clone the same buffer.
#[derive(Clone)]
pub(crate) struct Lines {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").finish_non_exhaustive()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Held by whoever writes to the sink, from taking the buffer until its bytes are written,
    /// so groups reach the sink in the order they were taken.
    sink: Mutex<Box<dyn Write + Send>>,
    writer: OnceLock<Thread>,
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    /// Lines dropped since the last group was written.
    dropped: u64,
    closed: bool,
    /// Closed, and the sink stayed busy for [`CLOSE_WAIT`]: later lines are dropped at once.
    stuck: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lines {
    /// Lines for `sink`, with the thread that writes them (`keel-log`) started. Should the
    /// thread not start, each line is written as it comes, as if closed.
    pub(crate) fn start(sink: Box<dyn Write + Send>) -> Lines {
        let shared =
            Arc::new(Shared { state: Mutex::new(State::default()), sink: Mutex::new(sink), writer: OnceLock::new() });
        let for_thread = Arc::clone(&shared);
        match std::thread::Builder::new().name("keel-log".into()).spawn(move || for_thread.write_behind()) {
            Ok(handle) => {
                let _ = shared.writer.set(handle.thread().clone());
            }
            Err(_) => lock(&shared.state).closed = true,
        }
        Lines { shared }
    }

    /// Writes what is buffered and has every later line go straight to the sink. Idempotent.
    /// Waits at most [`CLOSE_WAIT`] for a sink stuck in a write; past that, what is buffered and
    /// every later line are dropped.
    pub(crate) fn close(&self) {
        lock(&self.shared.state).closed = true;
        if let Some(thread) = self.shared.writer.get() {
            thread.unpark(); // it sees `closed` and ends
        }
        match self.shared.sink_within(CLOSE_WAIT) {
            Some(mut sink) => {
                self.shared.write_group(&mut sink);
            }
            None => lock(&self.shared.state).stuck = true,
        }
    }

    fn append(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        if state.closed {
            if state.stuck {
                return;
            }
            drop(state);
            match shared.sink_within(CLOSE_WAIT) {
                Some(mut sink) => {
                    let _ = sink.write_all(line).and_then(|()| sink.flush());
                }
                None => lock(&shared.state).stuck = true,
            }
            return;
        }
        let before = state.buffer.len();
        if before + line.len() > LIMIT {
            state.dropped += 1;
            return;
        }
        state.buffer.extend_from_slice(line);
        let wake = before == 0 || (before < HURRY && state.buffer.len() >= HURRY);
        drop(state);
        if wake {
            if let Some(thread) = shared.writer.get() {
                thread.unpark();
            }
        }
    }
}

impl Shared {
    /// The `keel-log` thread: waits for a first line, gives it [`WINDOW`] for company (less if
    /// the buffer passes [`HURRY`]), writes the group, and again, until closed.
    fn write_behind(&self) {
        loop {
            {
                let state = lock(&self.state);
                if state.closed {
                    return;
                }
                if state.buffer.is_empty() {
                    drop(state);
                    std::thread::park();
                    continue;
                }
            }
            let until = std::time::Instant::now() + WINDOW;
            loop {
                let now = std::time::Instant::now();
                if now >= until || lock(&self.state).buffer.len() >= HURRY {
                    break;
                }
                std::thread::park_timeout(until - now);
            }
            let dropped = self.write_group(&mut lock(&self.sink));
            if dropped > 0 {
                metrics::counter!(crate::metric_definitions::LOG_LINES_DROPPED_TOTAL).increment(dropped);
                tracing::warn!(dropped, "log lines were dropped: stdout's reader fell behind by more than 8 MiB");
            }
        }
    }

    /// The sink, once no other thread is writing to it, if that is within `wait`.
    fn sink_within(&self, wait: Duration) -> Option<MutexGuard<'_, Box<dyn Write + Send>>> {
        let until = std::time::Instant::now() + wait;
        loop {
            match self.sink.try_lock() {
                Ok(sink) => return Some(sink),
                Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// Writes the buffer to `sink` (held, so that groups reach it in the order they are taken);
    /// returns the lines dropped since the last group.
    fn write_group(&self, sink: &mut Box<dyn Write + Send>) -> u64 {
        let (group, dropped) = {
            let mut state = lock(&self.state);
            let dropped = std::mem::take(&mut state.dropped);
            // The next group starts in a buffer of the size this one reached, unless that was
            // a burst far above the usual.
            let capacity = if state.buffer.len() > HURRY { 0 } else { state.buffer.len() };
            (std::mem::replace(&mut state.buffer, Vec::with_capacity(capacity)), dropped)
        };
        if !group.is_empty() {
            // Nowhere to report a failure to write the log; the next group tries again.
            let _ = sink.write_all(&group).and_then(|()| sink.flush());
        }
        dropped
    }
}

/// One line on its way into the buffer (the fmt layer makes one writer per line and writes the
/// whole line with one `write_all`).
pub(crate) struct LineWriter<'a> {
    lines: &'a Lines,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { lines: self }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A sink whose bytes the test reads, and which can be made to stall like a reader that
    /// stopped reading.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        stall: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(release) = lock(&self.stall).take() {
                let _ = release.recv();
            }
            *lock(&self.writes) += 1;
            lock(&self.bytes).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.bytes).clone()).expect("utf-8")
        }

        fn wait_for(&self, expected: usize) -> String {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let text = self.text();
                if text.lines().count() >= expected || std::time::Instant::now() > deadline {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn log(lines: &Lines, text: &str) {
        lines.make_writer().write_all(text.as_bytes()).expect("a buffered write does not fail");
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_each_thread_in_order_in_few_writes() {
        let sink = Sink::default();
        let lines = Lines::start(Box::new(sink.clone()));
        std::thread::scope(|scope| {
            for t in 0..4 {
                let lines = &lines;
                scope.spawn(move || {
                    for i in 0..2_000 {
                        log(lines, &format!("thread {t} line {i}\n"));
                    }
                });
            }
        });
        let text = sink.wait_for(8_000);
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line
                .strip_prefix("thread ")
                .and_then(|rest| rest.split_once(" line "))
                .map(|(t, i)| (t.parse::<usize>().expect("thread"), i.parse::<usize>().expect("line")))
                .unwrap_or_else(|| panic!("a torn line: {line:?}"));
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 4], "every line arrives once");
        let writes = *lock(&sink.writes);
        assert!(writes < 800, "8,000 lines took {writes} writes: they were not written in groups");
        lines.close();
    }

    #[test]
    fn a_line_is_written_within_the_window_without_a_second_line_to_push_it() {
        let sink = Sink::default();
        let lines = Lines::start(Box::new(sink.clone()));
        log(&lines, "alone\n");
        assert_eq!(sink.wait_for(1), "alone\n");
        log(&lines, "later\n");
        assert_eq!(sink.wait_for(2), "alone\nlater\n");
        lines.close();
    }

    #[test]
    fn close_writes_what_is_buffered_and_later_lines_go_straight_through() {
        let sink = Sink::default();
        let lines = Lines::start(Box::new(sink.clone()));
        log(&lines, "one\n");
        log(&lines, "two\n");
        lines.close();
        assert_eq!(sink.text(), "one\ntwo\n", "close returns only once the buffer is written");
        log(&lines, "after\n");
        assert_eq!(sink.text(), "one\ntwo\nafter\n");
        lines.close();
    }

    #[test]
    fn a_stop_waits_for_a_stalled_reader_only_so_long_and_then_drops_what_is_left() {
        let sink = Sink::default();
        let (release, stalled) = mpsc::channel();
        *lock(&sink.stall) = Some(stalled);
        let lines = Lines::start(Box::new(sink.clone()));
        log(&lines, "taken\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&lines.shared.state).buffer.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        log(&lines, "left\n"); // the writer is stuck in the sink with "taken"
        let started = std::time::Instant::now();
        lines.close();
        let waited = started.elapsed();
        assert!(waited >= CLOSE_WAIT && waited < CLOSE_WAIT * 3, "close waited {waited:?}");
        let started = std::time::Instant::now();
        log(&lines, "after\n");
        assert!(started.elapsed() < CLOSE_WAIT / 2, "a line after a stuck stop does not wait again");
        release.send(()).expect("the writer waits in the sink");
        assert_eq!(sink.wait_for(1), "taken\n");
        std::thread::sleep(WINDOW * 3);
        assert_eq!(sink.text(), "taken\n", "what was left and what came after are dropped");
    }

    #[test]
    fn a_stalled_reader_costs_lines_not_the_threads_that_log_and_the_loss_is_counted() {
        let sink = Sink::default();
        let (release, stalled) = mpsc::channel();
        *lock(&sink.stall) = Some(stalled);
        let lines = Lines::start(Box::new(sink.clone()));
        log(&lines, "first\n");
        // The writer takes "first" and blocks in the sink; everything after stays in the buffer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&lines.shared.state).buffer.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let line = "x".repeat(1023) + "\n";
        let started = std::time::Instant::now();
        for _ in 0..(LIMIT / 1024 + 100) {
            log(&lines, &line); // returns at once although nothing is being written
        }
        assert!(started.elapsed() < Duration::from_secs(5), "logging blocked on the stalled reader");
        assert_eq!(lock(&lines.shared.state).dropped, 100, "the lines past the limit are dropped and counted");
        release.send(()).expect("the writer waits in the sink");
        let text = sink.wait_for(LIMIT / 1024 + 1);
        assert!(text.starts_with("first\n"));
        assert_eq!(text.lines().filter(|l| *l == &line[..1023]).count(), LIMIT / 1024);
        lines.close();
    }
}
