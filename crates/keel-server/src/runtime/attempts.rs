//! The attempts running on this node, by invocation id, of the functions that declare
//! dependencies (no other attempt can make an egress call): how egress knows its caller without
//! access control (an attempt's function calls back with its `keel-invocation-id`), and where
//! each invocation's calls to a dependency are numbered for the idempotency keys Keel forwards.
//! An unkeyed sync invocation is not in the store until it ends, so this lives in memory.
//! With auth on, a caller is known by its function token on any node; the calls of an attempt
//! running elsewhere are numbered here by its token ([`Attempts::next_call_by_token`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use keel_core::clock::Millis;

/// Every attempt running here. A std Mutex: nothing awaits while it is held. By Keel's own
/// invocation ids, so hashed with foldhash rather than std's SipHash, made to resist chosen keys.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    running: Mutex<HashMap<String, Entry, foldhash::fast::RandomState>>,
    /// Calls to each dependency of attempts running on other nodes, by (invocation, token
    /// expiry): an attempt's token expires at its deadline, so each attempt has its own count.
    /// Dropped once the token has expired.
    elsewhere: Mutex<HashMap<(String, Millis), HashMap<String, u32>>>,
}

#[derive(Debug)]
struct Entry {
    function: String,
    /// Attempts of this invocation running here now (two only when a lease was lost and the
    /// work taken again while the first still ran).
    attempts: u32,
    /// Calls made so far to each dependency by the running attempt(s).
    calls: HashMap<String, u32>,
}

impl Attempts {
    /// Records an attempt of `invocation_id` (of `function`) until the guard is dropped. A new
    /// attempt, after the last one ended, numbers its calls from 1 again.
    pub(crate) fn enter<'a>(&'a self, invocation_id: &'a str, function: &str) -> Running<'a> {
        let mut running = self.lock();
        let entry = running.entry(invocation_id.to_owned()).or_insert_with(|| Entry {
            function: function.to_owned(),
            attempts: 0,
            calls: HashMap::new(),
        });
        entry.attempts += 1;
        Running { attempts: self, invocation_id }
    }

    /// The function of the attempt of `invocation_id` running here, if one is.
    pub(crate) fn function_of(&self, invocation_id: &str) -> Option<String> {
        self.lock().get(invocation_id).map(|e| e.function.clone())
    }

    /// Counts one more call of `invocation_id`'s attempt to `dependency`: its number, from 1.
    /// `None` when no attempt of it is running here (any more).
    pub(crate) fn next_call(&self, invocation_id: &str, dependency: &str) -> Option<u32> {
        let mut running = self.lock();
        let n = running.get_mut(invocation_id)?.calls.entry(dependency.to_owned()).or_insert(0);
        *n += 1;
        Some(*n)
    }

    /// Counts one more call to `dependency` by the attempt whose token names `invocation_id` and
    /// expires at `exp`: numbered with the attempt's other calls when it runs here, else with
    /// the other calls of that token this node has seen (calls of one attempt spread over
    /// several nodes may then share a number: a function that needs distinct keys there sends
    /// its own `idempotency-key`).
    pub(crate) fn next_call_by_token(&self, invocation_id: &str, exp: Millis, dependency: &str, now: Millis) -> u32 {
        if let Some(n) = self.next_call(invocation_id, dependency) {
            return n;
        }
        let mut elsewhere = self.elsewhere.lock().unwrap_or_else(|e| e.into_inner());
        elsewhere.retain(|(_, until), _| *until > now);
        let n = elsewhere.entry((invocation_id.to_owned(), exp)).or_default().entry(dependency.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry, foldhash::fast::RandomState>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An attempt recorded in [`Attempts`] until dropped (also when the call is cancelled).
#[derive(Debug)]
pub(crate) struct Running<'a> {
    attempts: &'a Attempts,
    invocation_id: &'a str,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.attempts.lock();
        if let Some(entry) = running.get_mut(self.invocation_id) {
            entry.attempts -= 1;
            if entry.attempts == 0 {
                running.remove(self.invocation_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_numbered_per_dependency_and_restart_with_the_next_attempt() {
        let attempts = Attempts::default();
        assert_eq!(attempts.function_of("inv1"), None);
        assert_eq!(attempts.next_call("inv1", "payments"), None);
        let first = attempts.enter("inv1", "purchase");
        assert_eq!(attempts.function_of("inv1").as_deref(), Some("purchase"));
        assert_eq!(attempts.next_call("inv1", "payments"), Some(1));
        assert_eq!(attempts.next_call("inv1", "payments"), Some(2));
        assert_eq!(attempts.next_call("inv1", "email"), Some(1));
        drop(first);
        assert_eq!(attempts.function_of("inv1"), None, "an ended attempt is no caller");
        let _second = attempts.enter("inv1", "purchase");
        assert_eq!(attempts.next_call("inv1", "payments"), Some(1), "a new attempt makes the same calls");
    }

    #[test]
    fn calls_by_token_are_numbered_per_attempt_wherever_it_runs() {
        let attempts = Attempts::default();
        // Running here: the same count as calls by keel-invocation-id.
        let here = attempts.enter("inv1", "purchase");
        assert_eq!(attempts.next_call("inv1", "payments"), Some(1));
        assert_eq!(attempts.next_call_by_token("inv1", 5_000, "payments", 1_000), 2);
        drop(here);
        // Running elsewhere: counted by token, a new attempt (a later deadline) from 1 again.
        assert_eq!(attempts.next_call_by_token("inv2", 5_000, "payments", 1_000), 1);
        assert_eq!(attempts.next_call_by_token("inv2", 5_000, "payments", 1_000), 2);
        assert_eq!(attempts.next_call_by_token("inv2", 5_000, "email", 1_000), 1);
        assert_eq!(attempts.next_call_by_token("inv2", 9_000, "payments", 6_000), 1);
        assert_eq!(attempts.elsewhere.lock().unwrap().len(), 1, "expired tokens are forgotten");
    }

    #[test]
    fn an_overlapping_attempt_keeps_the_entry_until_both_end() {
        let attempts = Attempts::default();
        let a = attempts.enter("inv1", "purchase");
        let b = attempts.enter("inv1", "purchase");
        drop(a);
        assert!(attempts.function_of("inv1").is_some());
        drop(b);
        assert!(attempts.function_of("inv1").is_none());
    }
}
