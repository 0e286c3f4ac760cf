//! Limits on what a caller controls and Keel itself reads: a request's target and headers, the
//! nesting of the JSON Keel parses (invoke bodies it checks, events, effects envelopes, KV
//! values, schema files), and how many idempotency-key records one caller may make a minute.
//! Pure checks over plain numbers; the server applies them and answers each with its problem.
//! Sizes of bodies stay where they were: `server.body_limit` and `server.max_result_bytes`.

mod json;

pub use json::{check_json_depth, TooDeep};

/// `[server.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest request target (path and query), in bytes; past it → 414.
    pub max_url_bytes: u32,
    /// Largest sum of a request's header lines (`name: value` and their line ends); past it → 431.
    pub max_header_bytes: u32,
    /// Most header lines in one request; past it → 431.
    pub max_headers: u32,
    /// Deepest nesting of arrays and objects in JSON Keel parses; past it → 400 (or a permanent
    /// attempt failure, for an effects envelope).
    pub max_json_depth: u32,
    /// New idempotency-key records one caller may make a minute; past it → 429 + Retry-After.
    pub idempotency_keys_per_minute: u32,
}

impl LimitsConfig {
    /// RFC 9110 §4.1 asks servers to take request targets of at least 8,000 octets.
    pub const DEFAULT_MAX_URL_BYTES: u32 = 8 * 1024;
    pub const DEFAULT_MAX_HEADER_BYTES: u32 = 32 * 1024;
    /// hyper's own default, kept.
    pub const DEFAULT_MAX_HEADERS: u32 = 100;
    pub const DEFAULT_MAX_JSON_DEPTH: u32 = 64;
    pub const DEFAULT_IDEMPOTENCY_KEYS_PER_MINUTE: u32 = 60_000;
    /// serde_json stops past 127 levels with a message of its own; the limit must bite first.
    pub const MAX_JSON_DEPTH: u32 = 127;
    /// hyper reads a request head into a buffer of at least 8 KiB.
    pub const MIN_HEADER_BYTES: u32 = 8 * 1024;
}

/// The largest config file Keel reads (`keel.toml`, a JSON Schema file it names): far more than
/// any real one, and a mistake (a log file named by accident) is an error, not a stall.
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Refuses a file past [`MAX_CONFIG_FILE_BYTES`] before reading it; `None` when it fits (or
/// cannot be measured: reading it will say why).
pub fn config_file_too_large(file: &std::path::Path) -> Option<String> {
    let len = std::fs::metadata(file).ok()?.len();
    (len > MAX_CONFIG_FILE_BYTES)
        .then(|| format!("the file is {len} bytes, more than the 16 MiB a config file may hold"))
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_url_bytes: Self::DEFAULT_MAX_URL_BYTES,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_headers: Self::DEFAULT_MAX_HEADERS,
            max_json_depth: Self::DEFAULT_MAX_JSON_DEPTH,
            idempotency_keys_per_minute: Self::DEFAULT_IDEMPOTENCY_KEYS_PER_MINUTE,
        }
    }
}

/// A request head past one of the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadTooLarge {
    #[error("the request target is {got} bytes, more than server.limits.max_url_bytes ({limit})")]
    Url { got: usize, limit: u32 },
    #[error("the request has {got} header lines, more than server.limits.max_headers ({limit})")]
    TooManyHeaders { got: usize, limit: u32 },
    #[error("the request's headers take {got} bytes, more than server.limits.max_header_bytes ({limit})")]
    HeaderBytes { got: usize, limit: u32 },
}

impl HeadTooLarge {
    /// The HTTP status: 414 for the target, 431 for the headers (RFC 9110 §15.5.15, RFC 6585 §5).
    pub fn status(self) -> u16 {
        match self {
            HeadTooLarge::Url { .. } => 414,
            HeadTooLarge::TooManyHeaders { .. } | HeadTooLarge::HeaderBytes { .. } => 431,
        }
    }
}

impl LimitsConfig {
    /// Checks a request head: the target's length and each header's `(name, value)` lengths.
    /// A header line counts `name: value\r\n`, as sent.
    pub fn check_head(
        &self,
        url_bytes: usize,
        headers: impl Iterator<Item = (usize, usize)>,
    ) -> Result<(), HeadTooLarge> {
        if url_bytes > self.max_url_bytes as usize {
            return Err(HeadTooLarge::Url { got: url_bytes, limit: self.max_url_bytes });
        }
        let (lines, bytes) =
            headers.fold((0, 0), |(lines, bytes), (name, value)| (lines + 1, bytes + name + value + 4));
        if lines > self.max_headers as usize {
            return Err(HeadTooLarge::TooManyHeaders { got: lines, limit: self.max_headers });
        }
        if bytes > self.max_header_bytes as usize {
            return Err(HeadTooLarge::HeaderBytes { got: bytes, limit: self.max_header_bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig { max_url_bytes: 100, max_header_bytes: 50, max_headers: 3, ..LimitsConfig::default() }
    }

    #[test]
    fn a_head_at_each_limit_passes_and_one_byte_more_is_refused() {
        let limits = limits();
        // 3 headers of 10 + 4 bytes each = 42, then 50 exactly.
        assert_eq!(limits.check_head(100, [(4, 6), (4, 6), (4, 6)].into_iter()), Ok(()));
        assert_eq!(limits.check_head(100, [(4, 6), (4, 6), (4, 14)].into_iter()), Ok(()));
        let url = limits.check_head(101, [].into_iter()).unwrap_err();
        assert_eq!((url, url.status()), (HeadTooLarge::Url { got: 101, limit: 100 }, 414));
        let bytes = limits.check_head(1, [(4, 6), (4, 6), (4, 15)].into_iter()).unwrap_err();
        assert_eq!((bytes, bytes.status()), (HeadTooLarge::HeaderBytes { got: 51, limit: 50 }, 431));
        let many = limits.check_head(1, [(1, 1); 4].into_iter()).unwrap_err();
        assert_eq!(many, HeadTooLarge::TooManyHeaders { got: 4, limit: 3 });
        assert_eq!(many.to_string(), "the request has 4 header lines, more than server.limits.max_headers (3)");
    }
}
