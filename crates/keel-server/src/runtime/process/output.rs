//! An instance's stdout and stderr: each line becomes a Keel log line labelled with the function
//! and the instance, and the last few are kept to explain a program that fails to start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

/// Lines kept for error messages.
const TAIL_LINES: usize = 20;
/// Longest line logged, in bytes; the rest is cut (a program can print anything).
const MAX_LINE: usize = 16 * 1024;

/// The last lines an instance printed, both streams interleaved as they arrived.
#[derive(Debug, Clone, Default)]
pub(super) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("tail lock");
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The lines kept, `|`-separated: what a sandbox verdict reads.
    pub(super) fn text(&self) -> String {
        let lines = self.0.lock().expect("tail lock");
        lines.iter().map(String::as_str).collect::<Vec<_>>().join(" | ")
    }

    /// `; it printed: a | b` or `; it printed nothing`, for an error message.
    pub(super) fn describe(&self) -> String {
        let lines = self.0.lock().expect("tail lock");
        if lines.is_empty() {
            return "; it printed nothing".to_owned();
        }
        let text: Vec<&str> = lines.iter().map(String::as_str).collect();
        format!("; it printed: {}", text.join(" | "))
    }
}

/// Forwards one stream to the log until it closes.
pub(super) fn forward<R>(stream: R, name: &'static str, function: Arc<str>, instance: u64, tail: Tail) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            buf.truncate(MAX_LINE);
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
            tracing::info!(target: "keel::function", function = %function, instance, stream = name, "{line}");
            tail.push(line);
        }
    })
}
