//! JSON Schema checks of what callers send: a function's `input_schema` (the invoke body) and a
//! topic's `schema` (each event's `data`). A schema is compiled once, when the config is loaded;
//! checking a value against it is a pure function whose errors name JSON Pointer paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::Value;

/// The most errors one check reports: enough to fix a body in one go, and a bound on the size of
/// the answer (and on the work) a hostile body can cause.
pub const MAX_ERRORS: usize = 20;

/// A compiled JSON Schema (2020-12 unless its `$schema` names another draft), with the file it
/// was read from.
#[derive(Clone)]
pub struct JsonSchema {
    /// The file, absolute when the config was loaded from a file; shown in errors and `Debug`.
    pub file: PathBuf,
    /// Shared, not cloned: compiling happens once, at load, and every request reuses it.
    validator: Arc<Validator>,
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema").field("file", &self.file).finish_non_exhaustive()
    }
}

/// One way a value fails its schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaError {
    /// JSON Pointer (RFC 6901) to the failing part of the value: `""` for the whole value,
    /// `/items/0/qty` for a member deep inside.
    pub path: String,
    /// What is wrong, without the value itself (it may be large, or private).
    pub message: String,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The body is not JSON at all: the parser's reason.
    NotJson(String),
    /// The body is JSON but fails the schema: at most [`MAX_ERRORS`] errors, in schema order.
    Schema(Vec<SchemaError>),
}

impl Invalid {
    /// The errors as answered: a body that is not JSON is one error at the root (`""`).
    pub fn into_errors(self) -> Vec<SchemaError> {
        match self {
            Invalid::NotJson(why) => vec![SchemaError { path: String::new(), message: format!("not JSON: {why}") }],
            Invalid::Schema(errors) => errors,
        }
    }
}

impl JsonSchema {
    /// Reads and compiles the schema at `file`. The error says why in words fit for a config
    /// error: the file cannot be read, is not JSON (with line and column), or is not a valid
    /// schema (with the JSON Pointer of the offending keyword). `$ref`s are resolved inside the
    /// file only: nothing is fetched over the network or from other files.
    pub fn read(file: &Path) -> Result<Self, String> {
        let shown = file.display();
        if let Some(why) = crate::limits::config_file_too_large(file) {
            return Err(format!("cannot read the schema file {shown}: {why}"));
        }
        let text = std::fs::read(file).map_err(|e| format!("cannot read the schema file {shown}: {e}"))?;
        let most = crate::limits::LimitsConfig::MAX_JSON_DEPTH;
        crate::limits::check_json_depth(&text, most).map_err(|too_deep| {
            format!(
                "the schema file {shown} nests arrays and objects more than {most} deep (at byte {})",
                too_deep.offset
            )
        })?;
        let schema: Value =
            serde_json::from_slice(&text).map_err(|e| format!("the schema file {shown} is not JSON: {e}"))?;
        let validator = Self::options().build(&schema).map_err(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() { String::new() } else { format!(" at {at}") };
            format!("the schema file {shown} is not a valid JSON Schema{at}: {e}")
        })?;
        Ok(Self { file: file.to_path_buf(), validator: Arc::new(validator) })
    }

    /// Draft 2020-12 by default; `format` is asserted (an `"email"` that is not one fails), and
    /// `pattern` uses the linear-time `regex` engine, so no body can make a pattern backtrack
    /// for long (look-around and back-references are refused when the schema is loaded).
    fn options() -> jsonschema::ValidationOptions<'static> {
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
    }

    /// Checks a JSON value: every error up to [`MAX_ERRORS`].
    pub fn check(&self, value: &Value) -> Result<(), Vec<SchemaError>> {
        if self.validator.is_valid(value) {
            return Ok(());
        }
        let errors = self
            .validator
            .iter_errors(value)
            .take(MAX_ERRORS)
            .map(|e| SchemaError { path: e.instance_path().as_str().to_owned(), message: e.masked().to_string() })
            .collect();
        Err(errors)
    }

    /// Checks a request body, which must be JSON.
    pub fn check_body(&self, body: &[u8]) -> Result<(), Invalid> {
        let value: Value = serde_json::from_slice(body).map_err(|e| Invalid::NotJson(e.to_string()))?;
        self.check(&value).map_err(Invalid::Schema)
    }

    /// Checks an event's data, which must be JSON; an event without data is checked as `null`.
    pub fn check_event_data(&self, data: &[u8]) -> Result<(), Invalid> {
        if data.is_empty() {
            return self.check(&Value::Null).map_err(Invalid::Schema);
        }
        self.check_body(data)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn compile(schema: &Value) -> JsonSchema {
        let dir = std::env::temp_dir().join(format!("keel-schema-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.json", fastrand::u64(..)));
        std::fs::write(&file, schema.to_string()).unwrap();
        let compiled = JsonSchema::read(&file);
        std::fs::remove_file(&file).unwrap();
        compiled.unwrap()
    }

    fn purchase() -> JsonSchema {
        compile(&json!({
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["sku", "qty"],
                        "properties": {
                            "sku": {"type": "string"},
                            "qty": {"type": "integer", "minimum": 1}
                        }
                    }
                },
                "email": {"type": "string", "format": "email"}
            },
            "additionalProperties": false
        }))
    }

    fn paths(result: Result<(), Vec<SchemaError>>) -> Vec<(String, String)> {
        result.unwrap_err().into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[test]
    fn a_valid_value_passes() {
        assert_eq!(purchase().check(&json!({"items": [{"sku": "a", "qty": 2}]})), Ok(()));
    }

    #[test]
    fn every_error_is_named_by_its_json_pointer_without_the_value() {
        let value = json!({"items": [{"sku": "a", "qty": 0}, {"qty": "two"}], "email": "nope", "extra": 1});
        assert_eq!(
            paths(purchase().check(&value)),
            [
                ("/email".into(), r#"value is not a "email""#.into()),
                ("/items/0/qty".into(), "value is less than the minimum of 1".into()),
                ("/items/1".into(), r#""sku" is a required property"#.into()),
                ("/items/1/qty".into(), r#"value is not of type "integer""#.into()),
                ("".into(), "Additional properties are not allowed ('extra' was unexpected)".into()),
            ]
        );
    }

    #[test]
    fn errors_are_capped() {
        let value = json!({"items": (0..50).map(|_| json!({"sku": 1, "qty": 0})).collect::<Vec<_>>()});
        assert_eq!(purchase().check(&value).unwrap_err().len(), MAX_ERRORS);
    }

    #[test]
    fn a_body_that_is_not_json_says_so() {
        assert_eq!(
            purchase().check_body(b"{\"items\": ["),
            Err(Invalid::NotJson("EOF while parsing a list at line 1 column 11".into()))
        );
    }
}
