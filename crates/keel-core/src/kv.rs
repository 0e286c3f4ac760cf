//! Function state: namespaced keys holding JSON values with integer versions, written with
//! preconditions (`if_version`, `if_absent`) so concurrent writers never lose an update; and the
//! range of keys a listing reads ([`KeyRange`]), decided once for both stores.

use std::ops::Bound;

use bytes::Bytes;

use crate::clock::Millis;

/// A precondition on a KV write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The key must hold exactly this version.
    IfVersion(i64),
    /// The key must not exist.
    IfAbsent,
}

/// One KV write: a put (with a JSON value) or a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct KvWrite {
    pub ns: String,
    pub key: String,
    /// `None` deletes the key.
    pub value: Option<Bytes>,
    pub precondition: Precondition,
}

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// JSON text.
    pub value: Bytes,
    /// 1 when created; +1 on each write. A deleted and re-created key starts again at 1.
    pub version: i64,
    pub updated_at: Millis,
}

/// A stored value with its key, as a listing answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct KvItem {
    pub key: String,
    pub entry: KvEntry,
}

/// The keys one page of a listing reads, in byte order of their UTF-8 (SQLite's `BINARY`,
/// PostgreSQL's `COLLATE "C"`): from the cursor (exclusive) or the prefix (inclusive), up to
/// `end` (exclusive), the least string past every key that starts with the prefix. A range, not a
/// `LIKE`, so `%` and `_` in a prefix are plain characters and an index serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<String>,
    pub end: Option<String>,
}

impl KeyRange {
    /// The keys that start with `prefix` (all keys when it is empty or absent) and come after
    /// `after` (the last key of the previous page, when there was one).
    pub fn new(prefix: Option<&str>, after: Option<&str>) -> Self {
        let prefix = prefix.filter(|p| !p.is_empty());
        let start = match (prefix, after) {
            (Some(prefix), Some(after)) if after < prefix => Bound::Included(prefix.to_owned()),
            (_, Some(after)) => Bound::Excluded(after.to_owned()),
            (Some(prefix), None) => Bound::Included(prefix.to_owned()),
            (None, None) => Bound::Unbounded,
        };
        KeyRange { start, end: prefix.and_then(prefix_end) }
    }
}

/// The least string greater than every string that starts with `prefix`: its last character
/// raised by one (code point order is UTF-8 byte order), dropping trailing U+10FFFF, which has
/// no successor. `None` when nothing bounds them (an empty prefix, or only U+10FFFF).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // No key holds a surrogate: the character after U+D7FF is U+E000.
        let next = if last == '\u{D7FF}' { Some('\u{E000}') } else { char::from_u32(last as u32 + 1) };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Precondition {
    /// Whether a key at `current` version (`None`: absent) satisfies this precondition.
    pub fn holds(self, current: Option<i64>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::IfVersion(v) => current == Some(v),
            Precondition::IfAbsent => current.is_none(),
        }
    }

    /// What failed, for error texts.
    pub fn describe_failure(self, ns: &str, key: &str, current: Option<i64>) -> String {
        let found = current.map_or("absent".to_string(), |v| format!("at version {v}"));
        match self {
            Precondition::IfVersion(v) => format!("{ns}/{key}: expected version {v}, found it {found}"),
            Precondition::IfAbsent => format!("{ns}/{key}: expected it absent, found it {found}"),
            Precondition::None => format!("{ns}/{key}: no precondition"),
        }
    }
}

/// Checks a KV namespace or key: 1–255 bytes, no control characters, no `/` in namespaces.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let slash = what == "ns" && name.contains('/');
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) || slash {
        let extra = if what == "ns" { " or '/'" } else { "" };
        return Err(format!("{what} {name:?} must be 1–255 bytes without control characters{extra}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_hold_exactly() {
        assert!(Precondition::None.holds(None) && Precondition::None.holds(Some(3)));
        assert!(Precondition::IfVersion(3).holds(Some(3)));
        assert!(!Precondition::IfVersion(3).holds(Some(4)) && !Precondition::IfVersion(3).holds(None));
        assert!(Precondition::IfAbsent.holds(None) && !Precondition::IfAbsent.holds(Some(1)));
        assert_eq!(
            Precondition::IfVersion(3).describe_failure("b", "u1", Some(4)),
            "b/u1: expected version 3, found it at version 4"
        );
    }

    #[test]
    fn a_prefix_ends_at_its_last_character_raised() {
        assert_eq!(prefix_end("user/"), Some("user0".to_owned()));
        assert_eq!(prefix_end("a%"), Some("a&".to_owned()));
        assert_eq!(prefix_end("é"), Some("ê".to_owned()));
        assert_eq!(prefix_end("a\u{D7FF}"), Some("a\u{E000}".to_owned()));
        assert_eq!(prefix_end("a\u{10FFFF}\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }

    #[test]
    fn a_page_starts_at_the_prefix_or_after_the_cursor() {
        let range = |prefix, after| KeyRange::new(prefix, after);
        assert_eq!(range(None, None), KeyRange { start: Bound::Unbounded, end: None });
        assert_eq!(range(Some(""), None), KeyRange { start: Bound::Unbounded, end: None });
        assert_eq!(range(Some("u/"), None), KeyRange { start: Bound::Included("u/".into()), end: Some("u0".into()) });
        assert_eq!(range(Some("u/"), Some("u/7")).start, Bound::Excluded("u/7".into()));
        assert_eq!(range(Some("u/"), Some("a")).start, Bound::Included("u/".into()), "a cursor before the prefix");
        assert_eq!(range(None, Some("k")), KeyRange { start: Bound::Excluded("k".into()), end: None });
    }

    /// Every key the range admits, and only those, starts with the prefix and follows the
    /// cursor, in byte order — over keys made of the characters where ranges go wrong.
    #[test]
    fn a_range_admits_exactly_the_keys_with_the_prefix_after_the_cursor() {
        let alphabet = ["a", "b", "%", "_", "/", "é", "\u{D7FF}", "\u{E000}", "\u{10FFFF}"];
        let mut keys = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> =
                keys.iter().flat_map(|k| alphabet.iter().map(move |c| format!("{k}{c}"))).collect();
            keys.extend(longer);
        }
        keys.sort();
        keys.dedup();
        for prefix in ["", "a", "a%", "_", "é", "\u{D7FF}", "\u{10FFFF}", "a\u{10FFFF}"] {
            for after in [None, Some("a"), Some("a%b"), Some("\u{E000}")] {
                let range = KeyRange::new(Some(prefix), after);
                for key in &keys {
                    let in_range = range.start_admits(key) && range.end.as_ref().is_none_or(|end| key < end);
                    let wanted = key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a);
                    assert_eq!(in_range, wanted, "prefix {prefix:?} after {after:?} key {key:?}");
                }
            }
        }
    }

    impl KeyRange {
        fn start_admits(&self, key: &str) -> bool {
            match &self.start {
                Bound::Included(s) => key >= s.as_str(),
                Bound::Excluded(s) => key > s.as_str(),
                Bound::Unbounded => true,
            }
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ns", "users").is_ok());
        assert!(check_name("key", "a/b").is_ok());
        assert!(check_name("ns", "a/b").is_err());
        assert!(check_name("key", "").is_err());
        assert!(check_name("key", &"k".repeat(256)).is_err());
    }
}
