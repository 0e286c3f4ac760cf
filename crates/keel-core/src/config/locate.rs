//! Where a key came from: a `file:line:column` in `keel.toml`, an environment variable, a flag,
//! or the built-in defaults. Built from the TOML text's spans plus the list of applied overrides.

use std::collections::BTreeMap;

use toml::de::DeTable;

use super::Location;

/// Which part of a `key = value` line an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Anchor {
    /// The key itself: unknown keys, bad function names.
    Key,
    /// The value; for a table, its header or key, since the "value" is the whole body.
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spot {
    key: (usize, usize),
    value: (usize, usize),
    is_table: bool,
}

/// Line and column (both 1-based, columns in characters) of every key path in a TOML text.
#[derive(Debug, Default)]
pub(super) struct SourceMap {
    spots: BTreeMap<Vec<String>, Spot>,
}

impl SourceMap {
    /// Records every key of `text`; a text that does not parse yields an empty map.
    pub(super) fn from_text(text: &str) -> Self {
        let mut map = SourceMap::default();
        if let Ok(root) = DeTable::parse(text) {
            let lines = LineIndex::new(text);
            map.record(&lines, &mut Vec::new(), root.get_ref());
        }
        map
    }

    fn record(&mut self, lines: &LineIndex, prefix: &mut Vec<String>, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            prefix.push(key.get_ref().to_string());
            let nested = value.get_ref().as_table();
            let spot = Spot {
                key: lines.position(key.span().start),
                value: lines.position(value.span().start),
                is_table: nested.is_some(),
            };
            self.spots.insert(prefix.clone(), spot);
            if let Some(nested) = nested {
                self.record(lines, prefix, nested);
            }
            // Arrays of tables (`[[subscriptions]]`): items are keyed `[0]`, `[1]`, … as serde
            // paths name them.
            if let Some(items) = value.get_ref().as_array() {
                for (i, item) in items.iter().enumerate() {
                    prefix.push(format!("[{i}]"));
                    let at = lines.position(item.span().start);
                    let table = item.get_ref().as_table();
                    self.spots.insert(prefix.clone(), Spot { key: at, value: at, is_table: table.is_some() });
                    if let Some(table) = table {
                        self.record(lines, prefix, table);
                    }
                    prefix.pop();
                }
            }
            prefix.pop();
        }
    }

    fn position(&self, path: &[String], anchor: Anchor) -> Option<(usize, usize)> {
        let spot = self.spots.get(path)?;
        Some(match anchor {
            Anchor::Value if !spot.is_table => spot.value,
            _ => spot.key,
        })
    }
}

/// Byte offset → (line, column), both 1-based.
#[derive(Debug)]
pub(super) struct LineIndex<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

/// Answers "which layer last set this key path?" for error messages.
#[derive(Debug)]
pub(super) struct Locator {
    file_name: String,
    file: SourceMap,
    /// Paths set by env vars and flags, in the order applied; a later entry wins.
    overrides: Vec<(Vec<String>, Location)>,
}

impl Locator {
    pub(super) fn new(file_name: &str, file: SourceMap, overrides: Vec<(Vec<String>, Location)>) -> Self {
        Locator { file_name: file_name.to_owned(), file, overrides }
    }

    pub(super) fn locate(&self, path: &[String], anchor: Anchor) -> Location {
        // An override of `path` or of a table enclosing it replaced whatever the file said.
        if let Some((_, at)) = self.overrides.iter().rev().find(|(set, _)| path.starts_with(set)) {
            return at.clone();
        }
        if let Some(at) = self.file_location(path, anchor) {
            return at;
        }
        // A table that exists only because an override created a key inside it.
        if let Some((_, at)) = self.overrides.iter().rev().find(|(set, _)| set.starts_with(path)) {
            return at.clone();
        }
        (0..path.len())
            .rev()
            .find_map(|len| self.file_location(&path[..len], Anchor::Value))
            .unwrap_or(Location::Default)
    }

    fn file_location(&self, path: &[String], anchor: Anchor) -> Option<Location> {
        let (line, column) = self.file.position(path, anchor)?;
        Some(Location::File { path: self.file_name.clone(), line, column })
    }
}

/// Renders a key path the way TOML would write it: `functions."my fn".timeout`.
pub(super) fn dotted(path: &[String]) -> String {
    let bare = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let index = |s: &str| s.starts_with('[') && s.ends_with(']');
    let mut out = String::new();
    for (i, s) in path.iter().enumerate() {
        if i > 0 && !index(s) {
            out.push('.');
        }
        match s {
            s if bare(s) || index(s) => out.push_str(s),
            s => out.push_str(&format!("{s:?}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(dotted: &str) -> Vec<String> {
        dotted.split('.').map(str::to_owned).collect()
    }

    const TEXT: &str = "[server]\nlisten = \"x\"\n\n[functions.charge]\nurl = \"u\"\n\
                        retry = { max_attempts = 0 }\n";

    fn file_at(line: usize, column: usize) -> Location {
        Location::File { path: "keel.toml".into(), line, column }
    }

    #[test]
    fn line_index_counts_characters_from_one() {
        let lines = LineIndex::new("ab\nçd = 1\n");
        assert_eq!(lines.position(0), (1, 1));
        assert_eq!(lines.position(3), (2, 1));
        assert_eq!(lines.position(6), (2, 3)); // after the two-byte 'ç'
        assert_eq!(lines.position(100), (3, 1));
    }

    #[test]
    fn values_keys_and_headers_are_located() {
        let at = Locator::new("keel.toml", SourceMap::from_text(TEXT), Vec::new());
        assert_eq!(at.locate(&path("server.listen"), Anchor::Value), file_at(2, 10));
        assert_eq!(at.locate(&path("server.listen"), Anchor::Key), file_at(2, 1));
        assert_eq!(at.locate(&path("functions.charge"), Anchor::Value), file_at(4, 12));
        assert_eq!(at.locate(&path("functions.charge.retry.max_attempts"), Anchor::Value), file_at(6, 26));
    }

    #[test]
    fn a_missing_key_falls_back_to_its_table() {
        let at = Locator::new("keel.toml", SourceMap::from_text(TEXT), Vec::new());
        assert_eq!(at.locate(&path("functions.charge.timeout"), Anchor::Value), file_at(4, 12));
        assert_eq!(at.locate(&path("storage.url"), Anchor::Value), Location::Default);
    }

    #[test]
    fn the_last_override_wins_over_the_file() {
        let env = Location::Env { var: "KEEL_SERVER__LISTEN".into() };
        let flag = Location::Flag { name: "--listen".into() };
        let overrides = vec![(path("server.listen"), env.clone()), (path("server"), flag.clone())];
        let at = Locator::new("keel.toml", SourceMap::from_text(TEXT), overrides[..1].to_vec());
        assert_eq!(at.locate(&path("server.listen"), Anchor::Value), env);
        let at = Locator::new("keel.toml", SourceMap::from_text(TEXT), overrides);
        assert_eq!(at.locate(&path("server.listen"), Anchor::Value), flag);
    }

    #[test]
    fn a_table_created_by_an_override_is_located_there() {
        let env = Location::Env { var: "KEEL_FUNCTIONS__NEW__TIMEOUT".into() };
        let overrides = vec![(path("functions.new.timeout"), env.clone())];
        let at = Locator::new("keel.toml", SourceMap::from_text(TEXT), overrides);
        assert_eq!(at.locate(&path("functions.new"), Anchor::Key), env);
    }

    #[test]
    fn dotted_quotes_keys_that_are_not_bare() {
        assert_eq!(dotted(&path("functions.charge")), "functions.charge");
        let odd = vec!["functions".to_owned(), "user.signup".to_owned()];
        assert_eq!(dotted(&odd), "functions.\"user.signup\"");
    }
}
