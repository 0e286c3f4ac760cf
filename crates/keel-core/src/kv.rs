//! Function state: namespaced keys holding JSON values with integer versions, written with
//! preconditions (`if_version`, `if_absent`) so concurrent writers never lose an update.

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
    fn names_are_checked() {
        assert!(check_name("ns", "users").is_ok());
        assert!(check_name("key", "a/b").is_ok());
        assert!(check_name("ns", "a/b").is_err());
        assert!(check_name("key", "").is_err());
        assert!(check_name("key", &"k".repeat(256)).is_err());
    }
}
