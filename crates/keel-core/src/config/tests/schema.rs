//! `input_schema` on functions and `schema` on topics: read and compiled at load, relative to
//! the config file, and every bad file reported at its key with why.

use super::*;

/// A fresh directory of this test's own, removed by the caller.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-config-schema-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    dir
}

#[test]
fn schemas_are_compiled_relative_to_the_config_file() {
    let dir = scratch("good");
    let schema = r#"{"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}"#;
    std::fs::write(dir.join("schemas/user.json"), schema).unwrap();
    let file = dir.join("keel.toml");
    std::fs::write(
        &file,
        "[functions.register]\nurl = \"http://127.0.0.1:9001/\"\ninput_schema = \"schemas/user.json\"\n\
         [functions.other]\nurl = \"http://127.0.0.1:9001/\"\n\
         [topics.\"user.registered\"]\nschema = \"schemas/user.json\"\n[topics.plain]\n",
    )
    .unwrap();
    let config = load(Some(&file), &Overrides::default());
    std::fs::remove_dir_all(&dir).unwrap();
    let config = config.unwrap();
    let input = config.functions["register"].input_schema.as_ref().unwrap();
    assert_eq!(input.file, dir.join("schemas/user.json"));
    assert_eq!(input.check(&serde_json::json!({"email": "a@b.c"})), Ok(()));
    assert!(input.check(&serde_json::json!({})).is_err());
    assert!(config.functions["other"].input_schema.is_none());
    assert_eq!(config.topics["user.registered"].schema.as_ref().unwrap().file, dir.join("schemas/user.json"));
    assert!(config.topics["plain"].schema.is_none());
}

#[test]
fn a_schema_file_must_be_readable_json_and_a_valid_schema() {
    let dir = scratch("bad");
    let at = |name: &str| dir.join("schemas").join(name);
    std::fs::write(at("not-json.json"), "{\"type\": \"object\",\n}").unwrap();
    std::fs::write(at("bad-type.json"), r#"{"properties": {"qty": {"type": "integr"}}}"#).unwrap();
    std::fs::write(at("bad-pattern.json"), r#"{"pattern": "^(?=a)"}"#).unwrap();
    let text = format!(
        "[functions.a]\nurl = \"http://127.0.0.1:9001/\"\ninput_schema = \"{}\"\n\
         [functions.b]\nurl = \"http://127.0.0.1:9001/\"\ninput_schema = \"{}\"\n\
         [functions.c]\nurl = \"http://127.0.0.1:9001/\"\ninput_schema = \"{}\"\n\
         [topics.t]\nschema = \"{}\"\n",
        at("missing.json").display(),
        at("not-json.json").display(),
        at("bad-type.json").display(),
        at("bad-pattern.json").display(),
    );
    let found = errors(&text);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [
            format!(
                "keel.toml:3:16: functions.a.input_schema: cannot read the schema file {}: No such file or directory (os error 2)",
                at("missing.json").display()
            ),
            format!(
                "keel.toml:6:16: functions.b.input_schema: the schema file {} is not JSON: trailing comma at line 2 column 1",
                at("not-json.json").display()
            ),
            format!(
                "keel.toml:9:16: functions.c.input_schema: the schema file {} is not a valid JSON Schema at /properties/qty/type: \"integr\" is not valid under any of the schemas listed in the 'anyOf' keyword",
                at("bad-type.json").display()
            ),
            format!(
                "keel.toml:11:10: topics.t.schema: the schema file {} is not a valid JSON Schema at /pattern: \"^(?=a)\" is not a \"regex\"",
                at("bad-pattern.json").display()
            ),
        ]
    );
}

/// A schema file nested past what Keel parses, and a config file larger than any real one, are
/// errors at their key (or naming the file), not a parser's stack or a long read.
#[test]
fn a_schema_too_deep_and_a_config_too_large_are_refused_naming_why() {
    let dir = scratch("limits");
    let deep = dir.join("schemas/deep.json");
    std::fs::write(&deep, format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))).unwrap();
    let text = format!("[topics.t]\nschema = \"{}\"\n", deep.display());
    let found = errors(&text);
    let huge = dir.join("huge.toml");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(crate::limits::MAX_CONFIG_FILE_BYTES + 1).unwrap();
    let too_large = load(Some(&huge), &Overrides::default()).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [format!(
            "keel.toml:2:10: topics.t.schema: the schema file {} nests arrays and objects more than 127 deep (at byte 127)",
            deep.display()
        )]
    );
    assert!(too_large.contains("huge.toml"), "{too_large}");
    assert!(too_large.contains("more than the 16 MiB a config file may hold"), "{too_large}");
}
