//! What a keyed lease may still take of each `concurrency_key` value ([`KeyLimit`]), shared by
//! both stores.
//!
//! A keyed lease runs in rounds. Each round asks the database for the next due invocations in
//! due order, leaving out in SQL every value already at its limit (so a flood of one value never
//! hides another value's work behind a window of its own rows). The round takes each row whose
//! value has room left; a value that fills up during the round is left out of the next one. A
//! round that came back full but had to skip rows (their value filled up) is followed by
//! another; otherwise the lease is done. Every round takes at least its first row (its value
//! was not full when the round started), so a lease of `limit` rows runs at most `limit` rounds,
//! and usually one.

use std::collections::BTreeMap;

use keel_core::store::KeyLimit;

#[derive(Debug)]
pub(crate) struct KeyBudget<'a> {
    keys: &'a KeyLimit,
    taken: BTreeMap<String, u32>,
}

impl<'a> KeyBudget<'a> {
    pub(crate) fn new(keys: &'a KeyLimit) -> Self {
        Self { keys, taken: BTreeMap::new() }
    }

    /// The limit per value; 0 leaves every keyed invocation out.
    pub(crate) fn limit(&self) -> u32 {
        self.keys.limit
    }

    fn in_flight(&self, value: &str) -> u32 {
        self.keys.running.get(value).copied().unwrap_or(0) + self.taken.get(value).copied().unwrap_or(0)
    }

    /// Takes one invocation of `value` if its value has room (an invocation without a value
    /// always has); returns whether it did.
    pub(crate) fn take(&mut self, value: Option<&str>) -> bool {
        let Some(value) = value else { return true };
        if self.in_flight(value) >= self.keys.limit {
            return false;
        }
        *self.taken.entry(value.to_string()).or_insert(0) += 1;
        true
    }

    /// The values at their limit now (running plus taken by this lease), sorted. With limit 0
    /// every value is, including those not listed: callers test [`KeyBudget::limit`] too.
    pub(crate) fn saturated(&self) -> Vec<&str> {
        let mut values: Vec<&str> = self.keys.running.keys().chain(self.taken.keys()).map(String::as_str).collect();
        values.sort_unstable();
        values.dedup();
        values.retain(|v| self.in_flight(v) >= self.keys.limit);
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fill_up_from_running_and_taken() {
        let keys = KeyLimit { limit: 2, running: [("a".to_string(), 2), ("b".to_string(), 1)].into() };
        let mut budget = KeyBudget::new(&keys);
        assert_eq!(budget.saturated(), ["a"]);
        assert!(!budget.take(Some("a")));
        assert!(budget.take(Some("b")));
        assert!(!budget.take(Some("b")));
        assert!(budget.take(Some("c")));
        assert!(budget.take(None));
        assert!(budget.take(None));
        assert_eq!(budget.saturated(), ["a", "b"]);
        assert!(budget.take(Some("c")));
        assert_eq!(budget.saturated(), ["a", "b", "c"]);
    }

    #[test]
    fn limit_zero_takes_only_unkeyed_work() {
        let keys = KeyLimit { limit: 0, running: BTreeMap::new() };
        let mut budget = KeyBudget::new(&keys);
        assert!(!budget.take(Some("a")));
        assert!(budget.take(None));
    }
}
