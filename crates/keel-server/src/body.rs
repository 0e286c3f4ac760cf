//! An HTTP body read whole, up to a limit: the API's request bodies and the functions' answers.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body was not read whole.
#[derive(Debug)]
pub(crate) enum Unread<E> {
    /// It is longer than the limit (read as far as the limit, no further).
    TooLarge,
    /// The body failed: it stalled past a timeout, or its connection broke.
    Failed(E),
}

/// `body`'s data frames as one `Bytes`, at most `limit` bytes long; trailers are skipped.
///
/// A body that comes in one frame, as almost every one does, is that frame: not copied, and
/// nothing allocated. `http_body_util`'s `Limited` and `collect` (what axum's `Bytes` extractor
/// runs) keep the frames in a `VecDeque`, which allocates for the first, and axum boxes the
/// limited body once more: two allocations and their frees on every request.
pub(crate) async fn read_whole<B: hyper::body::Body>(body: B, limit: usize) -> Result<Bytes, Unread<B::Error>> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(Unread::Failed)?.into_data() else { continue };
        len = len.saturating_add(data.remaining());
        if len > limit {
            return Err(Unread::TooLarge);
        }
        let data = data.copy_to_bytes(data.remaining()); // `Bytes` as it is, without a copy
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                let mut both = BytesMut::with_capacity(len);
                both.extend_from_slice(&earlier);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    use super::*;

    /// A body that comes in the given frames, then fails if told to.
    struct Frames(VecDeque<&'static str>, bool);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let next = self.0.pop_front().map(|f| Ok(Frame::data(Bytes::from_static(f.as_bytes()))));
            Poll::Ready(next.or(self.1.then_some(Err("reset"))))
        }
    }

    async fn read(frames: &[&'static str], limit: usize) -> Result<Bytes, Unread<&'static str>> {
        read_whole(Frames(frames.iter().copied().collect(), false), limit).await
    }

    #[tokio::test]
    async fn a_body_is_read_whole_up_to_its_limit() {
        assert_eq!(read(&[], 10).await.unwrap(), "");
        assert_eq!(read(&["{\"a\": 1}"], 10).await.unwrap(), "{\"a\": 1}");
        assert_eq!(read(&["ab", "", "cd", "e"], 5).await.unwrap(), "abcde", "frames joined, up to the limit");
        for over in [&["abcdef"][..], &["abc", "def"], &["abcde", "f"]] {
            assert!(matches!(read(over, 5).await, Err(Unread::TooLarge)), "{over:?}");
        }
        let failed = read_whole(Frames(["ab"].into(), true), 5).await;
        assert!(matches!(failed, Err(Unread::Failed("reset"))), "{failed:?}");
    }

    #[tokio::test]
    async fn a_body_in_one_frame_is_that_frame() {
        let frame = Bytes::from_static(b"payload");
        let read = read_whole(http_body_util::Full::new(frame.clone()), 10).await.unwrap();
        assert_eq!(read.as_ptr(), frame.as_ptr(), "not copied");
    }
}
