//! How both stores keep an API key's scopes in one text column: a JSON array of scope strings
//! (`["invoke:f", "publish:user.*", "kv:balances:write"]`), each as [`Scope`] prints it.

use keel_core::auth::Scope;
use keel_core::{Error, Result};

/// The column text of `scopes`.
pub(crate) fn encode_scopes(scopes: &[Scope]) -> String {
    serde_json::to_string(scopes).expect("scopes serialise as strings")
}

/// The scopes of key `key_id` from its column. A stored scope that no longer parses (written by
/// a newer Keel, or damaged) is a [`Error::Bug`] naming the key: the key cannot be trusted with
/// fewer scopes than it was given, nor with more.
pub(crate) fn decode_scopes(key_id: &str, text: &str) -> Result<Vec<Scope>> {
    let names: Vec<String> = serde_json::from_str(text).map_err(|e| {
        Error::Bug(format!("api key {key_id}: its scopes {text:?} are not a JSON array of strings: {e}"))
    })?;
    names
        .iter()
        .map(|name| {
            name.parse().map_err(|e| Error::Bug(format!("api key {key_id} holds a scope no longer valid: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_a_bad_one_names_its_key() {
        let scopes: Vec<Scope> = ["publish:user.*", "kv:balances:write", "admin"].map(|s| s.parse().unwrap()).into();
        let text = encode_scopes(&scopes);
        assert_eq!(text, r#"["publish:user.*","kv:balances:write","admin"]"#);
        assert_eq!(decode_scopes("key_1", &text).unwrap(), scopes);
        assert_eq!(decode_scopes("key_1", "[]").unwrap(), []);
        for bad in [r#"["root"]"#, "admin"] {
            let err = decode_scopes("key_1", bad).unwrap_err();
            assert!(matches!(&err, Error::Bug(m) if m.contains("key_1")), "{err:?}");
        }
    }
}
