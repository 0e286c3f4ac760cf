//! `[server.limits]`: each limit in its range, reported where it was written.

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawByteSize, RawLimits};
use crate::limits::LimitsConfig;

/// Above this a limit protects nothing: hyper refuses heads past its own buffer of a few MiB.
const MAX_HEAD_BYTES: u64 = 1024 * 1024;

impl Checker {
    pub(super) fn limits(&mut self, raw: &RawLimits) -> Option<LimitsConfig> {
        let at = |name: &str| key(&["server", "limits", name]);
        let url = self.head_bytes(at("max_url_bytes"), &raw.max_url_bytes, LimitsConfig::DEFAULT_MAX_URL_BYTES, 1);
        let header_bytes = self.head_bytes(
            at("max_header_bytes"),
            &raw.max_header_bytes,
            LimitsConfig::DEFAULT_MAX_HEADER_BYTES,
            LimitsConfig::MIN_HEADER_BYTES,
        );
        let headers = self.count(at("max_headers"), raw.max_headers, LimitsConfig::DEFAULT_MAX_HEADERS, 1, 10_000);
        let depth = self.count(
            at("max_json_depth"),
            raw.max_json_depth,
            LimitsConfig::DEFAULT_MAX_JSON_DEPTH,
            1,
            i64::from(LimitsConfig::MAX_JSON_DEPTH),
        );
        let keys = self.count(
            at("idempotency_keys_per_minute"),
            raw.idempotency_keys_per_minute,
            LimitsConfig::DEFAULT_IDEMPOTENCY_KEYS_PER_MINUTE,
            1,
            10_000_000,
        );
        Some(LimitsConfig {
            max_url_bytes: url?,
            max_header_bytes: header_bytes?,
            max_headers: headers?,
            max_json_depth: depth?,
            idempotency_keys_per_minute: keys?,
        })
    }

    /// A byte size of a request head's part, between `min` and 1 MiB.
    fn head_bytes(&mut self, path: Vec<String>, raw: &Option<RawByteSize>, default: u32, min: u32) -> Option<u32> {
        let bytes = self.byte_size(path.clone(), raw, u64::from(default))?;
        if (u64::from(min)..=MAX_HEAD_BYTES).contains(&bytes) {
            return u32::try_from(bytes).ok();
        }
        self.report(path, Anchor::Value, format!("must be between {min} bytes and 1MiB (got {bytes} bytes)"));
        None
    }
}
