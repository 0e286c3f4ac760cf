//! The override layers: `KEEL_` environment variables, then command-line flags, written into the
//! TOML tree parsed from the file before it is deserialized.
//!
//! An override *replaces* the value at its path (a table given inline replaces the whole table),
//! and the list it returns records which layer set which path, for locating errors.

use super::locate::dotted;
use super::{ConfigError, Location, Overrides};

/// Prefix of the variables that override `keel.toml`.
const ENV_PREFIX: &str = "KEEL_";
/// Separates levels in a variable name: `KEEL_SERVER__LISTEN` is `server.listen`.
const ENV_SEPARATOR: &str = "__";

/// The paths each override set, in the order applied (a later one wins).
pub(super) type Applied = Vec<(Vec<String>, Location)>;

/// Writes env overrides, then flag overrides, into `table`.
pub(super) fn apply(table: &mut toml::Table, overrides: &Overrides) -> Result<Applied, Vec<ConfigError>> {
    let mut applied = Applied::new();
    let mut errors = Vec::new();
    for (var, text) in &overrides.env {
        let location = Location::Env { var: var.clone() };
        let Some(path) = env_key_path(var) else {
            errors.push(ConfigError {
                location,
                key: String::new(),
                message: "malformed variable name: expected KEEL_SECTION__KEY with non-empty \
                          parts, like KEEL_SERVER__LISTEN"
                    .into(),
            });
            continue;
        };
        set_and_record(table, path, parse_env_value(text), location, &mut applied, &mut errors);
    }
    for (dotted_path, flag, value) in &overrides.flags {
        let path = dotted_path.split('.').map(str::to_owned).collect();
        let location = Location::Flag { name: flag.clone() };
        set_and_record(table, path, value.clone(), location, &mut applied, &mut errors);
    }
    if errors.is_empty() {
        Ok(applied)
    } else {
        Err(errors)
    }
}

fn set_and_record(
    table: &mut toml::Table,
    path: Vec<String>,
    value: toml::Value,
    location: Location,
    applied: &mut Applied,
    errors: &mut Vec<ConfigError>,
) {
    match set_path(table, &path, value) {
        Ok(()) => applied.push((path, location)),
        Err(message) => errors.push(ConfigError { location, key: dotted(&path), message }),
    }
}

/// `KEEL_FUNCTIONS__CHARGE__TIMEOUT` → `["functions", "charge", "timeout"]`; `None` if a part is
/// empty.
pub(super) fn env_key_path(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix(ENV_PREFIX).unwrap_or(var);
    let path: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
    path.iter().all(|part| !part.is_empty()).then_some(path)
}

/// Whether a variable is a config override. `KEEL_URL` and the like, which hold no `__`, are
/// settings of the command-line client and are left alone.
pub(super) fn is_override_var(name: &str) -> bool {
    name.starts_with(ENV_PREFIX) && name.contains(ENV_SEPARATOR)
}

/// A variable's text as a TOML value when it is one (`8080`, `true`, `["a"]`, `{ max = "5s" }`),
/// otherwise as a plain string, so `KEEL_SERVER__LISTEN=0.0.0.0:80` needs no quotes.
pub(super) fn parse_env_value(text: &str) -> toml::Value {
    let as_document = format!("value = {text}");
    match toml::from_str::<toml::Table>(&as_document) {
        // More than one key means the text smuggled in a newline and another assignment.
        Ok(mut doc) if doc.len() == 1 => doc.remove("value").unwrap_or_else(|| text.into()),
        _ => toml::Value::String(text.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key path".into());
    };
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            other => {
                return Err(format!("cannot set this key: `{}` is `{other}`, not a table", dotted(&path[..=depth])))
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_lowercase_key_paths() {
        assert_eq!(env_key_path("KEEL_SERVER__LISTEN").unwrap(), ["server", "listen"]);
        assert_eq!(
            env_key_path("KEEL_FUNCTIONS__CHARGE__RETRY__MAX_ATTEMPTS").unwrap(),
            ["functions", "charge", "retry", "max_attempts"]
        );
        assert_eq!(env_key_path("KEEL_SERVER____LISTEN"), None);
    }

    #[test]
    fn only_keel_variables_with_levels_are_overrides() {
        assert!(is_override_var("KEEL_SERVER__LISTEN"));
        assert!(!is_override_var("KEEL_URL"));
        assert!(!is_override_var("HOME__X"));
    }

    #[test]
    fn env_values_are_toml_when_they_parse_and_strings_otherwise() {
        assert_eq!(parse_env_value("64"), toml::Value::Integer(64));
        assert_eq!(parse_env_value("false"), toml::Value::Boolean(false));
        assert_eq!(parse_env_value("1.5"), toml::Value::Float(1.5));
        assert_eq!(parse_env_value("0.0.0.0:80"), toml::Value::String("0.0.0.0:80".into()));
        assert_eq!(parse_env_value("30s"), toml::Value::String("30s".into()));
        assert_eq!(parse_env_value("\"quoted\""), toml::Value::String("quoted".into()));
        assert_eq!(parse_env_value("1\nx = 2"), toml::Value::String("1\nx = 2".into()));
        let table = parse_env_value("{ max_attempts = 3 }");
        assert_eq!(table.get("max_attempts"), Some(&toml::Value::Integer(3)));
    }

    #[test]
    fn overrides_create_missing_tables_and_record_their_source() {
        let mut table = toml::Table::new();
        let overrides = Overrides {
            env: vec![("KEEL_SERVER__LISTEN".into(), "0.0.0.0:80".into())],
            flags: vec![("server.listen".into(), "--listen".into(), "127.0.0.1:1".into())],
            ..Overrides::default()
        };
        let applied = apply(&mut table, &overrides).unwrap();
        assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(applied.len(), 2);
        assert_eq!(applied[1].1, Location::Flag { name: "--listen".into() });
    }

    #[test]
    fn setting_inside_a_non_table_is_an_error_naming_the_variable() {
        let mut table: toml::Table = toml::from_str("server = 5").unwrap();
        let overrides = Overrides {
            env: vec![("KEEL_SERVER__LISTEN".into(), "x".into()), ("KEEL_A____B".into(), "x".into())],
            flags: Vec::new(),
            ..Overrides::default()
        };
        let errors = apply(&mut table, &overrides).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "env KEEL_SERVER__LISTEN: server.listen: cannot set this key: `server` is `5`, \
                 not a table",
                "env KEEL_A____B: malformed variable name: expected KEEL_SECTION__KEY with \
                 non-empty parts, like KEEL_SERVER__LISTEN",
            ]
        );
    }
}
