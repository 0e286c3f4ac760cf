//! Durations as Keel's config and headers take them: the humantime forms the docs promise
//! (`250ms`, `30s`, `5m`, `1h`, `2h 30m`) and nothing looser.
//!
//! `humantime::parse_duration` alone accepts far more (`5 secs`, `400d`, `3 fortnights`,
//! `1y`), so a typo or a unit Keel never documented would be taken at face value. Here a
//! duration is one or more `<whole number><unit>` parts, unit `ms`, `s`, `m` or `h`, each unit
//! at most once and largest first, parts separated by at most one space.

use std::fmt;
use std::time::Duration;

/// The units, largest first, with their length.
const UNITS: [(&str, Duration); 4] = [
    ("h", Duration::from_secs(3600)),
    ("m", Duration::from_secs(60)),
    ("s", Duration::from_secs(1)),
    ("ms", Duration::from_millis(1)),
];

/// Text that is not a duration in the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDuration;

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"expected a duration like "250ms", "30s", "5m", "1h" or "2h 30m""#)
    }
}

impl std::error::Error for InvalidDuration {}

/// Parses `text` (surrounding whitespace allowed) into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(InvalidDuration);
    }
    let mut total = Duration::ZERO;
    // Index into UNITS of the next unit allowed: each part's unit is smaller than the last.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let count: u64 = rest[..digits].parse().map_err(|_| InvalidDuration)?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let index = UNITS.iter().position(|(name, _)| *name == unit).ok_or(InvalidDuration)?;
        if index < next_unit {
            return Err(InvalidDuration);
        }
        next_unit = index + 1;
        let length = UNITS[index].1;
        let part = u32::try_from(count).ok().and_then(|n| length.checked_mul(n)).ok_or(InvalidDuration)?;
        total = total.checked_add(part).ok_or(InvalidDuration)?;
        rest = &rest[unit_len..];
        if let Some(after_space) = rest.strip_prefix(' ') {
            if after_space.is_empty() || after_space.starts_with(' ') {
                return Err(InvalidDuration);
            }
            rest = after_space;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn the_documented_forms_parse() {
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("2h 30m"), Duration::from_secs(9000));
        assert_eq!(ok("2h30m"), Duration::from_secs(9000));
        assert_eq!(ok("1m 30s 500ms"), Duration::from_millis(90_500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok(" 30s "), Duration::from_secs(30), "surrounding whitespace is trimmed");
        assert_eq!(ok("90s"), Duration::from_secs(90), "a part may exceed the next unit");
    }

    #[test]
    fn looser_humantime_spellings_are_refused() {
        for text in [
            "5 secs",
            "5 s",
            "5sec",
            "5secs",
            "1 minute",
            "400d",
            "2w",
            "1y",
            "3 fortnights",
            "1.5s",
            "30",
            "s",
            "",
            "  ",
            "-1s",
            "+1s",
            "1ns",
            "10us",
            "1h  30m",
            "30m 2h",
            "1m 1m",
            "1s,2s",
        ] {
            assert_eq!(parse_duration(text), Err(InvalidDuration), "{text:?} must be refused");
        }
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        assert_eq!(parse_duration("99999999999h"), Err(InvalidDuration));
        assert_eq!(parse_duration("18446744073709551616ms"), Err(InvalidDuration));
    }
}
