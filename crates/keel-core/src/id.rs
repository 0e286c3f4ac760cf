//! Invocation ids: ULIDs, so ids sort by creation time and lists page by id.

use crate::clock::Millis;

/// A new ULID for the given creation time, with 80 random bits from `fastrand`.
pub fn new_id(now: Millis) -> String {
    let random = ((fastrand::u64(..) as u128) << 16) | fastrand::u16(..) as u128;
    ulid::Ulid::from_parts(now.max(0) as u64, random).to_string()
}

/// A new ULID for `now` that sorts after every id this function gave before in this process,
/// even within one millisecond (or if the clock steps back): the previous one plus one then. For
/// records listed in id order that are made in bursts, like the audit log.
pub fn new_ordered_id(now: Millis) -> String {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let fresh = ulid::Ulid::from_parts(now.max(0) as u64, fastrand::u128(..) >> 48).0;
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    *last = if fresh > *last { fresh } else { *last + 1 };
    ulid::Ulid(*last).to_string()
}

/// The least id made at `now` or later: ids of records made since `now` sort at or above it.
pub fn floor(now: Millis) -> String {
    ulid::Ulid::from_parts(now.max(0) as u64, 0).to_string()
}

/// True when `s` is a well-formed ULID (26 Crockford base32 characters).
pub fn is_valid(s: &str) -> bool {
    ulid::Ulid::from_string(s).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordered_ids_sort_in_the_order_made_within_a_millisecond_and_after_a_step_back() {
        let ids: Vec<String> =
            [5_000, 5_000, 5_000, 4_000, 5_000, 6_000].iter().map(|&t| super::new_ordered_id(t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert!(ids.iter().all(|id| super::is_valid(id)));
    }
}
