//! Checks of `input_schema` (functions) and `schema` (topics): the JSON Schema file is read and
//! compiled here, so a bad one is a file:line error at load and not a surprise per request.

use super::Checker;
use crate::config::locate::Anchor;
use crate::schema::JsonSchema;

impl Checker {
    /// Compiles the JSON Schema file `text` names (relative to the config file's directory).
    pub(super) fn json_schema(&mut self, path: Vec<String>, text: &str) -> Option<JsonSchema> {
        match JsonSchema::read(&self.relative_to_config(text)) {
            Ok(schema) => Some(schema),
            Err(message) => {
                self.report(path, Anchor::Value, message);
                None
            }
        }
    }
}
