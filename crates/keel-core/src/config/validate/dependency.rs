//! Checks of `[dependencies.NAME]` tables (DESIGN.md, "Egress (dependencies)") and of the
//! functions' `dependencies = [...]` lists. The breaker and rate limit tables are checked as a
//! function's are.

use std::collections::BTreeMap;

use super::flow::is_valid_header_name;
use super::function::is_valid_function_name;
use super::{key, Checker};
use crate::config::dependency::{BulkheadConfig, DependencyConfig, DependencyHeader, DependencyRetry};
use crate::config::locate::Anchor;
use crate::config::raw::{RawBulkhead, RawDependency, RawDependencyRetry, RawRetryBudget};
use crate::flow::RetryBudgetConfig;

const MAX_COUNT: i64 = 1_000_000;
/// Headers that describe the connection or the body, which Keel sets itself.
const RESERVED_HEADERS: [&str; 8] =
    ["host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"];

impl Checker {
    /// `env` looks a variable up for `env:VAR` header values.
    pub(super) fn dependency(
        &mut self,
        name: &str,
        raw: &RawDependency,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<DependencyConfig> {
        let at = |field: &str| key(&["dependencies", name, field]);
        if !is_valid_function_name(name) {
            let message = format!(
                r#"invalid dependency name "{name}": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit, like "payments""#
            );
            self.report(key(&["dependencies", name]), Anchor::Key, message);
        }
        let url = match raw.url.as_deref() {
            None => {
                let message = r#"missing required key `url`, like url = "https://payments.internal/api""#.to_owned();
                self.report(key(&["dependencies", name]), Anchor::Key, message);
                None
            }
            Some(text) => self.http_url(at("url"), text),
        };
        let timeout = self.positive_duration(at("timeout"), &raw.timeout, DependencyConfig::DEFAULT_TIMEOUT);
        let retry = match &raw.retry {
            None => Some(DependencyRetry::default()),
            Some(retry) => self.dependency_retry(name, retry),
        };
        let retry_budget = match &raw.retry_budget {
            None => Some(RetryBudgetConfig::default()),
            Some(budget) => self.retry_budget(name, budget),
        };
        let breaker = match &raw.breaker {
            None => Some(None),
            Some(breaker) => self.breaker(at("breaker"), breaker).map(Some),
        };
        let bulkhead = match &raw.bulkhead {
            None => Some(BulkheadConfig::default()),
            Some(bulkhead) => self.bulkhead(name, bulkhead),
        };
        let rate_limit = match &raw.rate_limit {
            None => Some(None),
            Some(rate) => self.rate_limit(at("rate_limit"), rate).map(Some),
        };
        let headers = self.dependency_headers(name, raw.headers.as_ref(), env);
        // Checked whatever the scheme (a file that cannot be read is a mistake either way).
        let ca_file = raw.ca_file.as_deref().map(|text| self.ca_file(at("ca_file"), text));
        Some(DependencyConfig {
            ca_file: ca_file.flatten(),
            name: name.to_owned(),
            url: url?,
            timeout: timeout?,
            retry: retry?,
            retry_budget: retry_budget?,
            breaker: breaker?,
            bulkhead: bulkhead?,
            rate_limit: rate_limit?,
            headers: headers?,
        })
    }

    fn dependency_retry(&mut self, name: &str, raw: &RawDependencyRetry) -> Option<DependencyRetry> {
        let at = |field: &str| key(&["dependencies", name, "retry", field]);
        let default = DependencyRetry::default();
        let max_attempts = self.count(at("max_attempts"), raw.max_attempts, default.max_attempts, 1, 100);
        let initial = self.positive_duration(at("initial"), &raw.initial, default.initial);
        let max = self.positive_duration(at("max"), &raw.max, default.max);
        if let (Some(initial), Some(max)) = (initial, max) {
            if initial > max {
                let (initial, max) = (humantime::format_duration(initial), humantime::format_duration(max));
                if raw.initial.is_some() {
                    let message = format!("must not exceed retry.max ({max}) (got {initial})");
                    self.report(at("initial"), Anchor::Value, message);
                } else {
                    let message = format!("must be at least retry.initial ({initial}) (got {max})");
                    self.report(at("max"), Anchor::Value, message);
                }
                return None;
            }
        }
        Some(DependencyRetry { max_attempts: max_attempts?, initial: initial?, max: max? })
    }

    fn retry_budget(&mut self, name: &str, raw: &RawRetryBudget) -> Option<RetryBudgetConfig> {
        let at = |field: &str| key(&["dependencies", name, "retry_budget", field]);
        let ratio = match raw.ratio {
            None => Some(RetryBudgetConfig::DEFAULT_RATIO),
            Some(r) if (0.0..=1.0).contains(&r) => Some(r),
            Some(r) => {
                let message = format!("must be a number from 0 to 1, like 0.2 (got {r})");
                self.report(at("ratio"), Anchor::Value, message);
                None
            }
        };
        let min_per_second = self.count(
            at("min_per_second"),
            raw.min_per_second,
            RetryBudgetConfig::DEFAULT_MIN_PER_SECOND,
            0,
            MAX_COUNT,
        );
        Some(RetryBudgetConfig { ratio: ratio?, min_per_second: min_per_second? })
    }

    fn bulkhead(&mut self, name: &str, raw: &RawBulkhead) -> Option<BulkheadConfig> {
        let at = |field: &str| key(&["dependencies", name, "bulkhead", field]);
        let default = BulkheadConfig::default();
        let max_concurrent = self.count(at("max_concurrent"), raw.max_concurrent, default.max_concurrent, 1, 100_000);
        let max_queued = self.count(at("max_queued"), raw.max_queued, default.max_queued, 0, MAX_COUNT);
        let queue_timeout = self.duration(at("queue_timeout"), &raw.queue_timeout, default.queue_timeout);
        Some(BulkheadConfig { max_concurrent: max_concurrent?, max_queued: max_queued?, queue_timeout: queue_timeout? })
    }

    fn dependency_headers(
        &mut self,
        name: &str,
        raw: Option<&BTreeMap<String, String>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Vec<DependencyHeader>> {
        let mut headers = Vec::new();
        let mut valid = true;
        for (header, value) in raw.into_iter().flatten() {
            let at = key(&["dependencies", name, "headers", header]);
            let lower = header.to_ascii_lowercase();
            if !is_valid_header_name(header) {
                let message = format!(
                    r#"not a valid HTTP header name: expected letters, digits and any of !#$%&'*+-.^_`|~, like "authorization" (got "{header}")"#
                );
                self.report(at, Anchor::Key, message);
                valid = false;
                continue;
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("keel-") {
                let message = format!("Keel sets {lower} itself; it cannot be configured");
                self.report(at, Anchor::Key, message);
                valid = false;
                continue;
            }
            let (value, from_env) = match value.strip_prefix("env:") {
                None => (value.clone(), None),
                Some(var) => match env(var) {
                    Some(value) => (value, Some(var.to_owned())),
                    None => {
                        let message = format!("the environment variable {var} is not set (named by \"env:{var}\")");
                        self.report(at, Anchor::Value, message);
                        valid = false;
                        continue;
                    }
                },
            };
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                let shown = from_env.as_ref().map_or_else(|| "its value".to_owned(), |var| format!("${var}"));
                self.report(
                    at,
                    Anchor::Value,
                    format!("not a valid HTTP header value: {shown} holds control characters"),
                );
                valid = false;
                continue;
            }
            headers.push(DependencyHeader { name: lower, value, from_env });
        }
        valid.then_some(headers)
    }

    /// A function's `dependencies = [...]`: each must be a configured dependency.
    pub(super) fn function_dependencies(
        &mut self,
        name: &str,
        raw: Option<&Vec<String>>,
        declared: &BTreeMap<String, RawDependency>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, dependency) in raw.into_iter().flatten().enumerate() {
            if !declared.contains_key(dependency) {
                let known: Vec<&str> = declared.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none is configured".to_owned()
                } else {
                    format!("configured: {}", known.join(", "))
                };
                let message =
                    format!(r#"unknown dependency "{dependency}": add a [dependencies.{dependency}] table ({known})"#);
                self.report(key(&["functions", name, "dependencies", &format!("[{i}]")]), Anchor::Value, message);
            } else if !out.contains(dependency) {
                out.push(dependency.clone());
            }
        }
        out
    }
}
