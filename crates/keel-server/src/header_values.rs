//! Header values Keel sends at every call, made without an allocation when they are common ones.
//!
//! `HeaderValue::from_str` and `From<u32>` copy the text into a buffer of their own: an
//! allocation (and a free) per header. A function's content type and an attempt's number are
//! nearly always one of a few texts, which are served from static ones instead.

use http::HeaderValue;

/// Content types most functions answer and are called with.
const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/octet-stream",
];

/// `text` as a header value (`None` when it cannot be one): a static one for a common content
/// type, else a copy.
pub(crate) fn content_type(text: &str) -> Option<HeaderValue> {
    match CONTENT_TYPES.iter().find(|&&common| common == text) {
        Some(common) => Some(HeaderValue::from_static(common)),
        None => HeaderValue::from_str(text).ok(),
    }
}

/// Numbers up to this one are static values.
const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// `n` as a header value: a static one for a single digit (an attempt's number, nearly always).
pub(crate) fn number(n: u32) -> HeaderValue {
    match SMALL.get(n as usize) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_other_values_read_back_as_given() {
        for n in [0, 1, 9, 10, 11, 4_294_967_295] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
        for text in CONTENT_TYPES.iter().copied().chain(["application/cloudevents+json", "text/csv"]) {
            assert_eq!(content_type(text).unwrap().to_str().unwrap(), text);
        }
        assert_eq!(content_type("bad\nvalue"), None, "a value no header can hold");
    }
}
