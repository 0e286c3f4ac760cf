//! Invocation ids: ULIDs, so ids sort by creation time and lists page by id.

use crate::clock::Millis;

/// A new ULID for the given creation time, with 80 random bits from `fastrand`.
pub fn new_id(now: Millis) -> String {
    let random = ((fastrand::u64(..) as u128) << 16) | fastrand::u16(..) as u128;
    ulid::Ulid::from_parts(now.max(0) as u64, random).to_string()
}

/// True when `s` is a well-formed ULID (26 Crockford base32 characters).
pub fn is_valid(s: &str) -> bool {
    ulid::Ulid::from_string(s).is_ok()
}
