//! W3C trace context: a `traceparent` is kept with each invocation and each attempt gets a child
//! of it, so one trace follows the work from the first request through every retry.

/// A fresh `traceparent` starting a new trace.
pub(crate) fn new_traceparent() -> String {
    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    push_hex(&mut traceparent, nonzero_u64());
    push_hex(&mut traceparent, fastrand::u64(..));
    traceparent.push('-');
    push_hex(&mut traceparent, nonzero_u64());
    traceparent.push_str("-01");
    traceparent
}

/// The received `traceparent` when well formed (version 00, non-zero ids), lower-cased.
pub(crate) fn parse_traceparent(value: &str) -> Option<String> {
    let v = value.trim();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let ok = match fields(v) {
        Some(("00", trace, parent, flags)) => {
            hex(trace, 32) && hex(parent, 16) && hex(flags, 2) && nonzero(trace) && nonzero(parent)
        }
        _ => false,
    };
    ok.then(|| v.to_ascii_lowercase())
}

/// The same trace with a new parent id: what one attempt sends to the function.
pub(crate) fn child_of(traceparent: &str) -> String {
    match fields(traceparent) {
        Some((version, trace_id, _, flags)) => {
            let mut child = String::with_capacity(version.len() + trace_id.len() + flags.len() + 19);
            child.push_str(version);
            child.push('-');
            child.push_str(trace_id);
            child.push('-');
            push_hex(&mut child, nonzero_u64());
            child.push('-');
            child.push_str(flags);
            child
        }
        None => new_traceparent(),
    }
}

/// The length of a version 00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// The four `-`-separated fields of a traceparent (version, trace id, parent id, flags), when it
/// has exactly four.
pub(crate) fn fields(traceparent: &str) -> Option<(&str, &str, &str, &str)> {
    let b = traceparent.as_bytes();
    // Every traceparent Keel makes or accepts has version 00's shape: its fields are cut at fixed
    // offsets once it has just those three dashes (a third of the cost of `split`, which runs
    // several times a call).
    if b.len() == LEN && b[2] == b'-' && b[35] == b'-' && b[52] == b'-' && b.iter().filter(|&&c| c == b'-').count() == 3
    {
        return Some((&traceparent[..2], &traceparent[3..35], &traceparent[36..52], &traceparent[53..]));
    }
    let mut parts = traceparent.split('-');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(version), Some(trace), Some(parent), Some(flags), None) => Some((version, trace, parent, flags)),
        _ => None,
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

/// `value` as 16 lower-case hex digits, without `format!`'s machinery (four a sync call): laid
/// out in a buffer and appended at once, not pushed one `char` at a time.
fn push_hex(out: &mut String, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = DIGITS[(value >> ((15 - i) * 4)) as usize & 0xf];
    }
    out.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
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
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"),
            None,
            "a zero parent id"
        );
        assert_eq!(parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-ff"), None, "five parts");
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01"),
            None,
            "a short parent id"
        );
        assert_eq!(parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01"), None, "not hex");
        assert_eq!(
            parse_traceparent(" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\t").as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            "surrounding whitespace trimmed"
        );
        assert!(parse_traceparent(&new_traceparent()).is_some());
    }

    #[test]
    fn ids_are_sixteen_hex_digits_a_word() {
        let mut text = String::new();
        push_hex(&mut text, 0x0af7_6519_16cd_43dd);
        push_hex(&mut text, 1);
        assert_eq!(text, "0af7651916cd43dd0000000000000001");
        let fresh = new_traceparent();
        assert_eq!(fresh.len(), 55, "{fresh}");
        assert!(fresh.starts_with("00-") && fresh.ends_with("-01"), "{fresh}");
    }

    #[test]
    fn fields_are_cut_alike_at_fixed_offsets_and_by_search() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(fields(tp), Some(("00", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01")));
        // 55 bytes with the dashes at the offsets, and one more: five fields, none.
        assert_eq!(fields("00-0af7651916cd43dd8448eb211c8031-c-b7ad6b7169203331-01"), None);
        // Other shapes by search.
        assert_eq!(fields("01-ab-cd-ef"), Some(("01", "ab", "cd", "ef")));
        assert_eq!(fields("a-b-c"), None);
        assert_eq!(parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"), None, "short flags");
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c8031-9c-b7ad6b7169203331-01"),
            None,
            "a dash inside the trace id"
        );
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01"),
            None,
            "55 bytes, the second dash a byte early"
        );
    }

    #[test]
    fn a_child_keeps_the_trace_id_and_changes_the_parent() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let child = child_of(tp);
        assert!(child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, tp);
        assert!(parse_traceparent(&child).is_some());
        assert!(parse_traceparent(&child_of("not-a-traceparent")).is_some(), "a malformed one starts a new trace");
    }
}
