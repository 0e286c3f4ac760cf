//! W3C trace context: a `traceparent` is kept with each invocation and each attempt gets a child
//! of it, so one trace follows the work from the first request through every retry.

/// A fresh `traceparent` starting a new trace.
pub(crate) fn new_traceparent() -> String {
    format!("00-{:032x}-{:016x}-01", nonzero_u128(), nonzero_u64())
}

/// The received `traceparent` when well formed (version 00, non-zero ids), lower-cased.
pub(crate) fn parse_traceparent(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    ok.then_some(v)
}

/// The same trace with a new parent id: what one attempt sends to the function.
pub(crate) fn child_of(traceparent: &str) -> String {
    match traceparent.split('-').collect::<Vec<_>>().as_slice() {
        [version, trace_id, _, flags] => format!("{version}-{trace_id}-{:016x}-{flags}", nonzero_u64()),
        _ => new_traceparent(),
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn nonzero_u128() -> u128 {
    ((fastrand::u64(1..) as u128) << 64) | fastrand::u64(..) as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_malformed_traceparents() {
        let tp = "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01";
        assert_eq!(parse_traceparent(tp).as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01"), None);
        assert_eq!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), None);
        assert_eq!(parse_traceparent("garbage"), None);
        assert!(parse_traceparent(&new_traceparent()).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_id_and_changes_the_parent() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let child = child_of(tp);
        assert!(child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, tp);
        assert!(parse_traceparent(&child).is_some());
    }
}
