//! Checks of one `[functions.NAME]` table and its `retry` policy.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawBatch, RawDuration, RawFunction, RawRetry};
use crate::config::{BatchConfig, FunctionConfig};
use crate::retry::{Jitter, RetryPolicy};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONCURRENCY: u32 = 64;
const MAX_CONCURRENCY: i64 = 10_000;
const MAX_FUNCTION_NAME_LEN: usize = 64;
const HTTP_URL_HINT: &str = r#"expected an http:// or https:// URL like "http://127.0.0.1:9001/charge""#;

/// `[a-z0-9][a-z0-9._-]{0,63}`: safe in URLs, file names and metric labels.
pub(super) fn is_valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    starts_well
        && name.len() <= MAX_FUNCTION_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// How long idempotency key records are kept by default (the draft's suggestion: a day).
const DEFAULT_IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Checker {
    pub(super) fn function(&mut self, name: &str, raw: &RawFunction) -> Option<FunctionConfig> {
        let at = |field: &str| key(&["functions", name, field]);
        if !is_valid_function_name(name) {
            let message = format!(
                r#"invalid function name "{name}": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit, like "charge-card""#
            );
            self.report(key(&["functions", name]), Anchor::Key, message);
        }
        let target = self.target(name, raw);
        let timeout = self.positive_duration(at("timeout"), &raw.timeout, DEFAULT_TIMEOUT);
        let sync_timeout = self.positive_duration(at("sync_timeout"), &raw.sync_timeout, DEFAULT_TIMEOUT);
        let idempotency_ttl =
            self.positive_duration(at("idempotency_ttl"), &raw.idempotency_ttl, DEFAULT_IDEMPOTENCY_TTL);
        let concurrency = match raw.concurrency {
            None => Some(DEFAULT_CONCURRENCY),
            Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => u32::try_from(n).ok(),
            Some(n) => {
                let message = format!("must be between 1 and {MAX_CONCURRENCY} (got {n})");
                self.report(at("concurrency"), Anchor::Value, message);
                None
            }
        };
        let default_retry = RetryPolicy::default();
        let retry = match &raw.retry {
            Some(retry) => self.retry(&key(&["functions", name]), retry, default_retry),
            None => Some(default_retry),
        };
        let flow = self.flow(name, raw, concurrency);
        let ca_file = raw.ca_file.as_deref().map(|text| self.ca_file(at("ca_file"), text));
        let input_schema = raw.input_schema.as_deref().map(|text| self.json_schema(at("input_schema"), text));
        let batch = match &raw.batch {
            None => Some(None),
            Some(batch) => self.batch(at("batch"), batch).map(Some),
        };
        Some(FunctionConfig {
            name: name.to_owned(),
            target: target?,
            timeout: timeout?,
            sync_timeout: sync_timeout?,
            idempotency_ttl: idempotency_ttl?,
            flow: flow?,
            dependencies: Vec::new(),
            concurrency: concurrency?,
            retry: retry?,
            ca_file: ca_file.flatten(),
            grants: None,
            input_schema: input_schema.flatten(),
            batch: batch?,
            http2: raw.http2.unwrap_or(false),
        })
    }

    /// `batch = { max_size, max_wait }`: 1–1000 items, waiting at most 10 s for company.
    fn batch(&mut self, base: Vec<String>, raw: &RawBatch) -> Option<BatchConfig> {
        let at = |field: &str| [base.clone(), vec![field.to_owned()]].concat();
        let largest = i64::from(BatchConfig::LARGEST_MAX_SIZE);
        let max_size = self.count(at("max_size"), raw.max_size, BatchConfig::DEFAULT_MAX_SIZE, 1, largest);
        let max_wait = self.duration(at("max_wait"), &raw.max_wait, BatchConfig::DEFAULT_MAX_WAIT);
        let max_wait = match max_wait {
            Some(wait) if wait > BatchConfig::LONGEST_MAX_WAIT => {
                let got = raw.max_wait.as_ref().map_or(String::new(), |d| d.0.clone());
                let message = format!(
                    r#"must be at most "10s": items wait leased, and their leases outlast the timeout by a minute (got "{got}")"#
                );
                self.report(at("max_wait"), Anchor::Value, message);
                None
            }
            wait => wait,
        };
        Some(BatchConfig { max_size: max_size?, max_wait: max_wait? })
    }

    /// A PEM file of CA certificates: relative to the config file's directory (as `cwd` and a
    /// command's program are), readable, and holding at least one certificate. Read here, so a
    /// wrong path is a file:line error from `keel config check` and not a failing https attempt
    /// later.
    pub(super) fn ca_file(&mut self, path: Vec<String>, text: &str) -> Option<PathBuf> {
        let file = self.relative_to_config(text);
        let shown = file.display();
        let problem = match std::fs::read(&file) {
            Err(e) => format!("cannot read the CA file {shown}: {e}"),
            Ok(pem) => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
                match certs {
                    Ok(certs) if !certs.is_empty() => return Some(file),
                    Ok(_) => format!(r#"the CA file {shown} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")"#),
                    Err(e) => format!("the CA file {shown} is not valid PEM: {}", describe_pem_error(&e)),
                }
            }
        };
        self.report(path, Anchor::Value, problem);
        None
    }

    /// Checks a `retry` table under `base` (a function's or a subscription's key path).
    pub(super) fn retry(&mut self, base: &[String], raw: &RawRetry, default: RetryPolicy) -> Option<RetryPolicy> {
        let at = |field: &str| {
            let mut path = base.to_vec();
            path.extend(["retry".to_string(), field.to_string()]);
            path
        };
        let max_attempts = match raw.max_attempts {
            None => Some(default.max_attempts),
            Some(n) if n < 1 => {
                self.report(at("max_attempts"), Anchor::Value, format!("must be at least 1 (got {n})"));
                None
            }
            Some(n) => u32::try_from(n).ok().or_else(|| {
                let message = format!("must be at most {} (got {n})", u32::MAX);
                self.report(at("max_attempts"), Anchor::Value, message);
                None
            }),
        };
        let initial = self.duration(at("initial"), &raw.initial, default.initial);
        let max = self.duration(at("max"), &raw.max, default.max);
        if let (Some(initial), Some(max)) = (initial, max) {
            if initial > max {
                let (initial, max) = (humantime::format_duration(initial), humantime::format_duration(max));
                // Blame the key the user wrote; the other one is a default.
                if raw.initial.is_some() {
                    let message = format!("must not exceed retry.max ({max}) (got {initial})");
                    self.report(at("initial"), Anchor::Value, message);
                } else {
                    let message = format!("must be at least retry.initial ({initial}) (got {max})");
                    self.report(at("max"), Anchor::Value, message);
                }
            }
        }
        let multiplier = match raw.multiplier {
            Some(m) if !(m.is_finite() && m >= 1.0) => {
                let message = format!("must be a finite number of at least 1.0 (got {m})");
                self.report(at("multiplier"), Anchor::Value, message);
                None
            }
            m => Some(m.unwrap_or(default.multiplier)),
        };
        let jitter = match raw.jitter.as_deref() {
            None => Some(default.jitter),
            Some("full") => Some(Jitter::Full),
            Some("equal") => Some(Jitter::Equal),
            Some("decorrelated") => Some(Jitter::Decorrelated),
            Some("none") => Some(Jitter::None),
            Some(other) => {
                let message = format!(r#"must be one of "full", "equal", "decorrelated", "none" (got "{other}")"#);
                self.report(at("jitter"), Anchor::Value, message);
                None
            }
        };
        Some(RetryPolicy {
            max_attempts: max_attempts?,
            initial: initial?,
            max: max?,
            multiplier: multiplier?,
            jitter: jitter?,
        })
    }

    pub(super) fn http_url(&mut self, path: Vec<String>, text: &str) -> Option<url::Url> {
        let message = match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => return Some(url),
            Ok(url) => format!(r#"unsupported scheme "{}"; {HTTP_URL_HINT}"#, url.scheme()),
            Err(e) => format!(r#"not a valid URL ({e}); {HTTP_URL_HINT} (got "{text}")"#),
        };
        self.report(path, Anchor::Value, message);
        None
    }

    pub(super) fn positive_duration(
        &mut self,
        path: Vec<String>,
        raw: &Option<RawDuration>,
        default: Duration,
    ) -> Option<Duration> {
        let duration = self.duration(path.clone(), raw, default)?;
        if duration.is_zero() {
            let got = raw.as_ref().map_or("0s", |d| d.0.as_str());
            self.report(path, Anchor::Value, format!(r#"must be greater than 0, like "30s" (got "{got}")"#));
            return None;
        }
        Some(duration)
    }
}

/// The PEM reader's errors, with its byte strings shown as text.
fn describe_pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => {
            let label = String::from_utf8_lossy(end_marker);
            format!(r#"a "-----BEGIN {label}-----" section has no "-----END {label}-----" line"#)
        }
        Error::IllegalSectionStart { line } => {
            format!(r#"a malformed section start "{}""#, String::from_utf8_lossy(line).trim())
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_follow_the_pattern() {
        assert!(is_valid_function_name("charge"));
        assert!(is_valid_function_name("0user.signup_v2-a"));
        assert!(is_valid_function_name(&"a".repeat(64)));
        assert!(!is_valid_function_name(&"a".repeat(65)));
        assert!(!is_valid_function_name(""));
        assert!(!is_valid_function_name("-x"));
        assert!(!is_valid_function_name(".x"));
        assert!(!is_valid_function_name("Charge"));
        assert!(!is_valid_function_name("a b"));
        assert!(!is_valid_function_name("café"));
    }
}
