//! A plain-text column formatter for the human output: every cell padded to its column's width.
//!
//! Widths count `char`s, which is right for the ids, names, statuses and times Keel prints; wide
//! characters in function error messages may misalign a row, which is not worth a crate.

use std::fmt;

/// Rows of cells, optionally under a header, printed with two spaces between columns and no
/// trailing whitespace.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub(crate) fn with_header<const N: usize>(header: [&str; N]) -> Self {
        Table { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub(crate) fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let width = cell.chars().count();
                match widths.get_mut(i) {
                    Some(w) if *w < width => *w = width,
                    Some(_) => {}
                    None => widths.push(width),
                }
            }
        }
        widths
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `text` on one line and at most `max` chars long, ending in `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_each_column_to_its_widest_cell() {
        let mut table = Table::with_header(["ID", "STATUS", "ERROR"]);
        table.row(["01J", "dead", "HTTP 500"]);
        table.row(["01J2AB", "ok", ""]);
        assert_eq!(
            table.to_string(),
            "ID      STATUS  ERROR\n\
             01J     dead    HTTP 500\n\
             01J2AB  ok\n"
        );
    }

    #[test]
    fn counts_chars_not_bytes() {
        let mut table = Table::default();
        table.row(["é…", "x"]);
        table.row(["abc", "y"]);
        assert_eq!(table.to_string(), "é…   x\nabc  y\n");
    }

    #[test]
    fn a_row_may_have_fewer_cells_than_the_header() {
        let mut table = Table::with_header(["A", "B"]);
        table.row(["long"]);
        assert_eq!(table.to_string(), "A     B\nlong\n");
    }

    #[test]
    fn an_empty_table_prints_nothing() {
        assert_eq!(Table::default().to_string(), "");
    }

    #[test]
    fn truncate_keeps_short_text_and_cuts_long_text_to_max_chars() {
        assert_eq!(truncate("short", 60), "short");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcdef", 4).chars().count(), 4);
        assert_eq!(truncate("line one\nline two", 60), "line one line two");
    }
}
