//! Errors a handler returns, and the status code each becomes under the function contract:
//! Keel retries 408, 425, 429 and 5xx (honouring `Retry-After`), and dead-letters other 4xx.

use std::time::Duration;

/// Why an invocation did not succeed, and whether Keel should try again.
///
/// ```
/// use std::time::Duration;
/// use keel_sdk::Error;
///
/// assert_eq!(Error::retryable("the database is down").status(), 503);
/// assert_eq!(Error::permanent("unknown product").status(), 422);
/// assert_eq!(Error::permanent("taken").with_status(409).status(), 409);
/// assert_eq!(Error::bad_request("missing email").status(), 400);
/// let later = Error::retry_after(Duration::from_millis(1500));
/// assert_eq!((later.status(), later.retry_after_secs()), (503, Some(2)));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (HTTP {status})")]
pub struct Error {
    status: u16,
    message: String,
    retry_after: Option<Duration>,
}

impl Error {
    /// A failure another attempt may not have (a dependency is down, a timeout): 503, retried
    /// after Keel's backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { status: 503, message: message.into(), retry_after: None }
    }

    /// A failure no retry will fix (invalid input, a business rule): 422, not retried; an async
    /// invocation goes to the dead-letter queue with this message.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { status: 422, message: message.into(), retry_after: None }
    }

    /// A malformed request: 400, not retried.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into(), retry_after: None }
    }

    /// Try again, but not before `delay`: 503 with `Retry-After` (whole seconds, rounded up),
    /// which Keel honours as the least delay before the next attempt.
    pub fn retry_after(delay: Duration) -> Self {
        let message = format!("retry after {}", humantime::format_duration(delay));
        Self { status: 503, message, retry_after: Some(delay) }
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Answers with another status of the same class. A permanent error takes a 4xx that Keel
    /// does not retry (not 408, 425 or 429); a retryable one a 5xx. Other values are ignored.
    pub fn with_status(mut self, status: u16) -> Self {
        let permanent = |s: u16| (400..500).contains(&s) && !matches!(s, 408 | 425 | 429);
        let fits = if permanent(self.status) { permanent(status) } else { (500..600).contains(&status) };
        if fits {
            self.status = status;
        }
        self
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether Keel will retry the invocation.
    pub fn is_retryable(&self) -> bool {
        self.status >= 500 || matches!(self.status, 408 | 425 | 429)
    }

    /// The `Retry-After` header value, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_of_the_wrong_class_is_ignored() {
        assert_eq!(Error::permanent("x").with_status(429).status(), 422);
        assert_eq!(Error::permanent("x").with_status(500).status(), 422);
        assert_eq!(Error::retryable("x").with_status(404).status(), 503);
        assert_eq!(Error::retryable("x").with_status(502).status(), 502);
        assert!(Error::retryable("x").is_retryable() && !Error::permanent("x").is_retryable());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(Error::retry_after(Duration::from_secs(3)).retry_after_secs(), Some(3));
        assert_eq!(Error::retry_after(Duration::from_millis(10)).retry_after_secs(), Some(1));
        assert_eq!(Error::retryable("x").retry_after_secs(), None);
    }
}
