//! How both stores keep a header list (a delivery's CloudEvents headers, a stored reply's
//! headers, an event's extensions) in one text column: a JSON array of `[name, value]` pairs,
//! which no value can split into more pairs, whatever characters it holds.
//!
//! Rows written before this form hold `name: value` lines; they are still read (a JSON array
//! starts with `[`, which no header name does). A value that carried a line break there was
//! already split when it was written: the HTTP client drops any header Keel sets itself that
//! comes from stored data, so such a row cannot forge one.

/// The column text of `headers`.
pub(crate) fn encode_headers(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).expect("strings serialise")
}

/// The header list of a column written by [`encode_headers`], or in the old line form.
pub(crate) fn decode_headers(text: &str) -> Vec<(String, String)> {
    if text.starts_with('[') {
        return serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a stored header list is not a JSON array of pairs; read as empty");
            Vec::new()
        });
    }
    text.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn values_with_line_breaks_stay_one_header() {
        let headers = pairs(&[("ce-subject", "x\nidempotency-key: attacker-key"), ("ce-id", "a: b\r\n")]);
        let text = encode_headers(&headers);
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(decode_headers(&text), headers);
        assert_eq!(decode_headers(&encode_headers(&[])), Vec::new());
    }

    #[test]
    fn rows_in_the_old_line_form_are_still_read() {
        assert_eq!(
            decode_headers("ce-id: e1\nkeel-subscription: welcome\n"),
            pairs(&[("ce-id", "e1"), ("keel-subscription", "welcome")])
        );
        assert_eq!(decode_headers(""), Vec::new());
    }
}
