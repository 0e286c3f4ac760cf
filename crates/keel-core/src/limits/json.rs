//! How deep a JSON text nests, counted over its bytes before it is parsed: a parser recursing
//! into 100,000 `[` would answer with its own limit (serde_json stops at 128) or, without one,
//! overflow the stack. One pass, no allocation; a text that is not JSON is left to the parser.

/// JSON nested deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the JSON nests arrays and objects more than {limit} deep (server.limits.max_json_depth)")]
pub struct TooDeep {
    pub limit: u32,
    /// The byte offset of the bracket one level too deep.
    pub offset: usize,
}

/// Checks that no array or object in `text` sits more than `limit` levels deep: `[]` and `{}`
/// are depth 1, `[[1]]` is 2, a bare scalar 0. Brackets inside strings do not count.
pub fn check_json_depth(text: &[u8], limit: u32) -> Result<(), TooDeep> {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &byte) in text.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(TooDeep { limit, offset });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_to_the_limit_and_one_past_it_is_refused() {
        assert_eq!(check_json_depth(b"1", 0), Ok(()));
        assert_eq!(check_json_depth(b"[]", 0), Err(TooDeep { limit: 0, offset: 0 }));
        assert_eq!(check_json_depth(nested(64).as_bytes(), 64), Ok(()));
        assert_eq!(check_json_depth(nested(65).as_bytes(), 64), Err(TooDeep { limit: 64, offset: 64 }));
        let mixed = r#"{"a": [{"b": {"c": [1]}}], "d": {}}"#;
        assert_eq!(check_json_depth(mixed.as_bytes(), 5), Ok(()));
        assert_eq!(check_json_depth(mixed.as_bytes(), 4).map_err(|e| e.offset), Err(mixed.find("[1]").unwrap()));
    }

    #[test]
    fn siblings_do_not_add_up() {
        let wide = "[".to_owned() + &vec!["[[]]"; 10_000].join(",") + "]";
        assert_eq!(check_json_depth(wide.as_bytes(), 3), Ok(()));
    }

    #[test]
    fn brackets_in_strings_and_escaped_quotes_do_not_count() {
        let text = r#"["[[[[", "\"[[[[", "\\", ["ok"]]"#;
        assert_eq!(check_json_depth(text.as_bytes(), 2), Ok(()));
        assert!(check_json_depth(text.as_bytes(), 1).is_err());
    }

    #[test]
    fn a_million_brackets_are_refused_without_recursing() {
        let deep = "[".repeat(1_000_000);
        assert_eq!(check_json_depth(deep.as_bytes(), 128), Err(TooDeep { limit: 128, offset: 128 }));
    }

    #[test]
    fn serde_json_agrees_on_what_depth_means() {
        // The limit bites before serde_json's own: at the highest limit allowed it still parses.
        let most = crate::limits::LimitsConfig::MAX_JSON_DEPTH as usize;
        assert_eq!(check_json_depth(nested(most).as_bytes(), most as u32), Ok(()));
        assert!(serde_json::from_str::<serde_json::Value>(&nested(most)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(most + 1)).is_err());
    }
}
