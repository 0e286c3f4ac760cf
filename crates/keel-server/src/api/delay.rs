//! The `keel-delay` header of an async invoke: one whole number and one unit (`250ms`, `30s`,
//! `5m`, `2h`, `1d`), at most 365 days. Nothing else: not a bare number (seconds or
//! milliseconds?), not a sum (`1s 2s`), not a fraction. The OpenAPI document states the same
//! rule as a pattern (in `invoke.rs`).

use std::time::Duration;

use axum::http::HeaderMap;

use crate::problem::Problem;

/// Longest `keel-delay` accepted.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The header's name.
pub(crate) const KEEL_DELAY: &str = "keel-delay";

/// The delay the request asks for: zero without the header; 400 when it is malformed, too long
/// or sent twice.
pub(crate) fn delay_from(headers: &HeaderMap) -> Result<Duration, Problem> {
    let mut values = headers.get_all(KEEL_DELAY).iter();
    let Some(value) = values.next() else {
        return Ok(Duration::ZERO);
    };
    if values.next().is_some() {
        return Err(Problem::bad_request("keel-delay is sent more than once; send it once"));
    }
    let text = value.to_str().unwrap_or("");
    parse_delay(text).ok_or_else(|| {
        Problem::bad_request(format!(
            "keel-delay {text:?} is not a duration like \"250ms\", \"30s\", \"5m\", \"2h\" or \"1d\" (a whole number \
             and one unit, at most 365 days)"
        ))
    })
}

/// `250ms` → 250 ms; `None` unless `text` is digits then one of `ms`, `s`, `m`, `h`, `d`, at most
/// [`MAX_DELAY`].
fn parse_delay(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(millis_per_unit)?)).filter(|d| *d <= MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_number_and_one_unit() {
        assert_eq!(parse_delay("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_delay("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_delay("0s"), Some(Duration::ZERO));
        assert_eq!(parse_delay("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_delay("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_delay("365d"), Some(MAX_DELAY));
        for bad in ["0", "30", "1s 2s", "1s2s", "1.5s", "-1s", " 1s", "1s ", "1 s", "s", "", "366d", "1w", "1S"] {
            assert_eq!(parse_delay(bad), None, "{bad:?}");
        }
        assert_eq!(parse_delay("999999999999d"), None);
        assert_eq!(parse_delay("0000000000000000000030s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_delay("8760h"), Some(MAX_DELAY));
        assert_eq!(parse_delay("8761h"), None);
        assert_eq!(parse_delay("31536000000ms"), Some(MAX_DELAY));
        assert_eq!(parse_delay("99999999999999999999999s"), None);
    }

    #[test]
    fn sent_twice_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(delay_from(&headers).ok(), Some(Duration::ZERO));
        headers.append(KEEL_DELAY, "1s".parse().unwrap());
        assert_eq!(delay_from(&headers).ok(), Some(Duration::from_secs(1)));
        headers.append(KEEL_DELAY, "2s".parse().unwrap());
        assert!(delay_from(&headers).is_err());
    }
}
