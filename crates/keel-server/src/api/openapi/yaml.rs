//! The document as YAML (`GET /v1/openapi.yaml`): its JSON value written out in block style.
//!
//! Seventy lines of our own rather than utoipa's `yaml` feature, which brings `serde_norway` and a
//! machine translation of libyaml (`unsafe-libyaml-norway`) to write one document. Writing is
//! the easy half of YAML: every string that could read as anything else is written as its JSON
//! string, which is a YAML double-quoted scalar with the same escapes, so the YAML and the JSON
//! load to the same value (`.ci/openapi-check` checks that with PyYAML).

use serde_json::{Map, Value};

/// `value` (an object: the document) as a YAML document.
pub(super) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(map, 0, &mut out),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

/// Each member of `map` at `indent`, one per line, its nested values below it (in key order:
/// serde_json's map is sorted).
fn mapping(map: &Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(key));
        out.push(':');
        nested(value, indent + 2, out);
    }
}

/// Each item of `items` at `indent`, `- ` before it; a non-empty mapping or sequence starts on
/// the dash's line (`- name: x`).
fn sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        let mut block = String::new();
        nested(item, indent + 2, &mut block);
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match block.strip_prefix('\n') {
            // A block item: its first line's indent becomes the space after the dash.
            Some(block) => out.push_str(&block[indent + 1..]),
            None => out.push_str(&block),
        }
    }
}

/// What follows a `key:` or `-`: ` scalar` on the same line, or a block indented below it.
fn nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(map, indent, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(items, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// A scalar, `{}` or `[]` on one line: numbers, booleans and null as JSON writes them (the
/// document has no fractions, whose JSON forms YAML 1.1 readers may take for strings).
fn inline(value: &Value) -> String {
    match value {
        Value::String(text) => scalar(text),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

/// A string plain when it can only read as itself (`type`, `/v1/functions/{name}`,
/// `application/problem+json`), else as its JSON string.
fn scalar(text: &str) -> String {
    let mut chars = text.chars();
    let plain_start = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '/' | '$'));
    let plain_rest =
        chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | '+' | '{' | '}' | '$'));
    // Words that YAML 1.1 reads as booleans or null, in any case.
    const RESERVED: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    if plain_start && plain_rest && !RESERVED.contains(&text.to_ascii_lowercase().as_str()) {
        text.to_owned()
    } else {
        Value::from(text).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::to_yaml;
    use serde_json::json;

    #[test]
    fn nested_mappings_and_sequences_in_block_style() {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": {"/v1/functions/{name}": {"get": {"tags": ["functions"], "parameters": [
                {"name": "name", "in": "path", "required": true},
                {"$ref": "#/components/parameters/Key"}
            ]}}},
            "nested": [[1, 2], [], {}],
            "empty": {},
        });
        let expected = "\
empty: {}
nested:
  - - 1
    - 2
  - []
  - {}
openapi: \"3.1.0\"
paths:
  /v1/functions/{name}:
    get:
      parameters:
        - in: path
          name: name
          required: true
        - $ref: \"#/components/parameters/Key\"
      tags:
        - functions
";
        assert_eq!(to_yaml(&doc), expected);
    }

    #[test]
    fn strings_that_could_read_as_something_else_are_quoted() {
        let doc = json!({
            "200": "yes", "No": "null", "on": "12", "a: b": "x # y", "": "-",
            "text": "line one\nline \"two\"\ttab \u{1}", "unicode": "keel_sk_…",
            "n": 3, "b": false, "z": null,
        });
        let expected = "\
\"\": \"-\"
\"200\": \"yes\"
\"No\": \"null\"
\"a: b\": \"x # y\"
b: false
\"n\": 3
\"on\": \"12\"
text: \"line one\\nline \\\"two\\\"\\ttab \\u0001\"
unicode: \"keel_sk_…\"
z: null
";
        assert_eq!(to_yaml(&doc), expected);
    }
}
