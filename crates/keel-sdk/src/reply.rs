//! What a handler answers when it succeeds: a status, a content type and a body — usually JSON,
//! or an [`Effects`] envelope.

use bytes::Bytes;
use serde::Serialize;

use crate::effects::{Effects, EFFECTS_CONTENT_TYPE};

/// A successful answer.
///
/// ```
/// use keel_sdk::Reply;
/// use serde_json::json;
///
/// let reply = Reply::json(json!({"ok": true})).with_status(201);
/// assert_eq!(reply.status(), 201);
/// assert_eq!(reply.body(), br#"{"ok":true}"#.as_slice());
/// assert_eq!(Reply::empty().status(), 204);
/// ```
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    body: Bytes,
}

impl Reply {
    /// 200 with `value` as JSON. Panics, like `serde_json::json!`, on a value JSON cannot
    /// represent.
    pub fn json(value: impl Serialize) -> Self {
        let body = serde_json::to_vec(&value).expect("a value JSON can represent (maps need string keys)");
        Self { status: 200, content_type: Some("application/json"), body: body.into() }
    }

    /// 200 with a plain-text body.
    pub fn text(text: impl Into<String>) -> Self {
        Self { status: 200, content_type: Some("text/plain; charset=utf-8"), body: Bytes::from(text.into()) }
    }

    /// 204, no body.
    pub fn empty() -> Self {
        Self { status: 204, content_type: None, body: Bytes::new() }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn content_type(&self) -> Option<&'static str> {
        self.content_type
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub(crate) fn into_body(self) -> Bytes {
        self.body
    }
}

impl From<Effects> for Reply {
    /// The envelope, answered 200 with the effects content type; the status the caller sees is
    /// the envelope's own.
    fn from(effects: Effects) -> Self {
        let body = serde_json::to_vec(&effects.to_json()).unwrap_or_default();
        Self { status: 200, content_type: Some(EFFECTS_CONTENT_TYPE), body: body.into() }
    }
}
