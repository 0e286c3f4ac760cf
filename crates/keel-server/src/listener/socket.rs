//! A connection's socket (or its TLS stream) as hyper sees it: it tells the connection's stage when bytes arrive, and
//! turns hyper's own answers to requests it cannot parse into problem+json.
//!
//! hyper answers a request it cannot parse (400), whose target is too long (414) or whose
//! headers are too large (431) itself, before any handler runs, with an empty body and no hook
//! to change it. Such an answer is recognised as it is written — a status line of one of those
//! three, then headers without `content-type`, then nothing: Keel's own error answers are all
//! problem+json, and a function's answers passed through carry `keel-invocation-id` — and is
//! replaced by the same status as problem+json, closing the connection as hyper meant to.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connection::StageTx;

/// The socket, watched: a `TcpStream`, or the plaintext side of a TLS stream.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    stage: StageTx,
    /// A replacement answer still to be written, before anything else.
    pending: Vec<u8>,
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    pub(super) fn new(inner: S, stage: StageTx) -> Self {
        Self { inner, stage, pending: Vec::new() }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.stage.byte_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(problem) = problem_for_bare_error(buf) {
            self.pending = problem;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Not vectored: hyper then writes a response head in one buffer, which is what
    // `problem_for_bare_error` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// If `written` is hyper's own bodiless 400, 414 or 431, the same status as problem+json.
fn problem_for_bare_error(written: &[u8]) -> Option<Vec<u8>> {
    // Every other answer (a 2xx, a body) is passed by its first bytes or its last, without reading
    // the whole of it as UTF-8.
    let head = written.strip_prefix(b"HTTP/1.1 4").and(written.strip_suffix(b"\r\n\r\n"))?;
    let head = std::str::from_utf8(head).ok()?;
    let status_line = head.lines().next()?;
    let (status, title, detail) = match status_line.get(..12)? {
        "HTTP/1.1 400" => {
            (400, "Bad request", "the request is not valid HTTP/1.1: a malformed request line, URL or header")
        }
        "HTTP/1.1 414" => (414, "URI too long", "the request target is too long"),
        "HTTP/1.1 431" => (
            431,
            "Request header fields too large",
            "the request's headers are too many or too large (server.limits.max_headers, server.limits.max_header_bytes)",
        ),
        _ => return None,
    };
    let bodiless = head.lines().skip(1).all(|line| {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        name != "content-type" && (name != "content-length" || line.ends_with(": 0"))
    });
    if !bodiless {
        return None;
    }
    let kind = match status {
        400 => "bad-request",
        414 => "uri-too-long",
        _ => "request-header-fields-too-large",
    };
    let body = serde_json::json!({
        "type": format!("urn:keel:problem:{kind}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
    .to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_parse_errors_are_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(problem_for_bare_error(bare).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{replaced}");
        assert!(replaced.contains("content-type: application/problem+json\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(&replaced[replaced.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(
            (body["status"].as_u64(), body["type"].as_str()),
            (Some(431), Some("urn:keel:problem:request-header-fields-too-large"))
        );
        let keel_own =
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 80\r\n\r\n";
        assert_eq!(problem_for_bare_error(keel_own), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(problem_for_bare_error(with_body), None);
        assert_eq!(problem_for_bare_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(problem_for_bare_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nbody"), None);
    }
}
