//! Classifying one attempt's result, and reading `Retry-After`.

use std::time::Duration;

use crate::clock::Millis;

/// The outcome of one attempt, as recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 408, 425, 429, 5xx, a connect error or reset, a lease lost in a crash: worth retrying.
    Transient,
    /// Any other 4xx, or a response Keel cannot accept: retrying will not help.
    Permanent,
    /// The attempt ran past its timeout: retried like a transient failure.
    Timeout,
    /// An effect's precondition failed: retried like a transient failure.
    Conflict,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Transient => "transient",
            Outcome::Permanent => "permanent",
            Outcome::Timeout => "timeout",
            Outcome::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "success" => Outcome::Success,
            "transient" => Outcome::Transient,
            "permanent" => Outcome::Permanent,
            "timeout" => Outcome::Timeout,
            "conflict" => Outcome::Conflict,
            _ => return None,
        })
    }

    /// True when another attempt may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Transient | Outcome::Timeout | Outcome::Conflict)
    }
}

/// Classifies an HTTP status answered by a function.
pub fn classify_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        408 | 425 | 429 | 500..=599 => Outcome::Transient,
        _ => Outcome::Permanent,
    }
}

/// The longest delay a `Retry-After` can ask for; a longer one is taken as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Reads a `Retry-After` value (delta-seconds or an HTTP-date) as a delay from `now`, at most
/// [`MAX_RETRY_AFTER`]. Only 429 and 503 answers carry one that Keel honours.
pub fn retry_after(status: u16, value: Option<&str>, now: Millis) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let value = value?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as Millis;
    // A date is capped like seconds are: `Fri, 31 Dec 9999 …` held a retry for 8,000 years.
    Some(Duration::from_millis(at_ms.saturating_sub(now).max(0) as u64).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_contract_says() {
        for s in [200, 201, 204, 299] {
            assert_eq!(classify_status(s), Outcome::Success, "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), Outcome::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 412, 413, 422, 301, 100] {
            assert_eq!(classify_status(s), Outcome::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_on_429_and_503_only() {
        assert_eq!(retry_after(503, Some("7"), 0), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(429, Some(" 2 "), 0), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(500, Some("7"), 0), None);
        assert_eq!(retry_after(503, Some("soon"), 0), None);
        assert_eq!(retry_after(503, None, 0), None);
        // Thu, 01 Jan 1970 00:00:10 GMT is 10 s after the epoch.
        let date = "Thu, 01 Jan 1970 00:00:10 GMT";
        assert_eq!(retry_after(503, Some(date), 4_000), Some(Duration::from_secs(6)));
        assert_eq!(retry_after(503, Some(date), 20_000), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_is_at_most_a_day_in_both_forms() {
        // Regression: the date form was not capped (the `retry_after` fuzz target checks the bound).
        let far = "Fri, 31 Dec 9999 23:59:59 GMT";
        assert_eq!(retry_after(503, Some(far), 1_764_460_800_000), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(429, Some("18446744073709551615"), 0), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(429, Some("86400"), 0), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(429, Some("86399"), 0), Some(Duration::from_secs(86_399)));
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in [Outcome::Success, Outcome::Transient, Outcome::Permanent, Outcome::Timeout, Outcome::Conflict] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
