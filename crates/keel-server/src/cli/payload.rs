//! What `--data` and `--value` name: the text itself, `@FILE`'s contents, or stdin for `-`.

use std::io::Read;

use anyhow::Context;
use bytes::Bytes;

/// The bytes named by `arg` (empty when the flag was not given).
pub(crate) fn read(arg: Option<&str>) -> anyhow::Result<Bytes> {
    match arg {
        None => Ok(Bytes::new()),
        Some("-") => {
            let mut buffer = Vec::new();
            std::io::stdin().read_to_end(&mut buffer).context("cannot read the payload from stdin")?;
            Ok(buffer.into())
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(file) => {
                std::fs::read(file).map(Bytes::from).with_context(|| format!("cannot read the payload file {file}"))
            }
            None => Ok(Bytes::copy_from_slice(arg.as_bytes())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_literal_unless_it_names_a_file() {
        assert_eq!(read(None).unwrap(), Bytes::new());
        assert_eq!(read(Some(r#"{"a":1}"#)).unwrap(), Bytes::from(r#"{"a":1}"#));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.json");
        std::fs::write(&file, "[1,2]").unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(read(Some(&arg)).unwrap(), Bytes::from("[1,2]"));
        let missing = format!("@{}", dir.path().join("nope").display());
        assert!(read(Some(&missing)).is_err());
    }
}
