//! `keel kv ls|get|put|delete`: the key-value store, a JSON value per key, with its version as
//! the ETag and `--if-version`/`--if-absent` as `If-Match`/`If-None-Match` preconditions; `ls`
//! pages through a namespace by prefix like every other list (`--limit`, `--cursor`).

use anyhow::Context;
use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderName, Method};
use serde_json::{json, Value};

use super::client::{encode, print_json, with_query, KeelClient};
use super::invocations::page_params;
use super::table::{truncate, Table};
use super::{payload, KvDeleteArgs, KvKeyArgs, KvLsArgs, KvPutArgs};

/// Longest value shown in a list; `get` prints it whole.
const LIST_VALUE_CHARS: usize = 60;

pub(crate) async fn ls(client: &KeelClient, json: bool, args: KvLsArgs) -> anyhow::Result<()> {
    let mut params = vec![("prefix", args.prefix.clone())];
    params.extend(page_params(args.page));
    let page = client.get_json(&with_query(&format!("/v1/kv/{}", encode(&args.ns)), &params)).await?;
    if json {
        print_json(&page);
        return Ok(());
    }
    let items = page.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    match (items.is_empty(), &args.prefix) {
        (false, _) => print!("{}", render_list(items)),
        (true, Some(prefix)) => eprintln!("no keys of {} start with {prefix:?}", args.ns),
        (true, None) => eprintln!("no keys in {}", args.ns),
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        eprintln!("next page: --cursor {}", shell_word(cursor));
    }
    Ok(())
}

/// `text` as one shell word: as it is when it holds only characters no shell treats specially,
/// else in single quotes. A cursor is a key, and keys may hold spaces, `&` or quotes.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "_-./:@%+=,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A table of keys: each with its version and its value on one line, cut if long.
fn render_list(items: &[Value]) -> Table {
    let mut table = Table::with_header(["KEY", "VERSION", "VALUE"]);
    for item in items {
        let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
        let version = item.get("version").map(Value::to_string).unwrap_or_default();
        let value = item.get("value").map(Value::to_string).unwrap_or_default();
        table.row([key.to_owned(), version, truncate(&value, LIST_VALUE_CHARS)]);
    }
    table
}

pub(crate) async fn get(client: &KeelClient, json: bool, args: KvKeyArgs) -> anyhow::Result<()> {
    let response = client.send(Method::GET, &path(&args), &[], Default::default()).await?;
    let version = response.header(ETAG.as_str()).and_then(etag_version);
    let value = response.into_json()?;
    if json {
        print_json(&json!({"value": value, "version": version}));
    } else {
        print_json(&value);
        if let Some(version) = version {
            eprintln!("version {version}");
        }
    }
    Ok(())
}

pub(crate) async fn put(client: &KeelClient, json: bool, args: KvPutArgs) -> anyhow::Result<()> {
    let value = payload::read(Some(&args.value))?;
    let mut headers = vec![(CONTENT_TYPE, "application/json".to_owned())];
    headers.extend(precondition(args.if_version, args.if_absent));
    let answer = client.send(Method::PUT, &path(&args.at), &headers, value).await?.into_json()?;
    if json {
        print_json(&answer);
    } else {
        let version = answer.get("version").and_then(Value::as_i64).context("the server sent no version")?;
        println!("{version}");
    }
    Ok(())
}

pub(crate) async fn delete(client: &KeelClient, json: bool, args: KvDeleteArgs) -> anyhow::Result<()> {
    let headers: Vec<_> = precondition(args.if_version, false).into_iter().collect();
    client.send(Method::DELETE, &path(&args.at), &headers, Default::default()).await?.into_json()?;
    if json {
        print_json(&json!({"ns": args.at.ns, "key": args.at.key, "deleted": true}));
    } else {
        println!("deleted {}/{}", args.at.ns, args.at.key);
    }
    Ok(())
}

fn path(at: &KvKeyArgs) -> String {
    format!("/v1/kv/{}/{}", encode(&at.ns), encode(&at.key))
}

/// The header stating a write's precondition, if it has one.
fn precondition(if_version: Option<i64>, if_absent: bool) -> Option<(HeaderName, String)> {
    match (if_version, if_absent) {
        (Some(version), _) => Some((IF_MATCH, format!("\"{version}\""))),
        (None, true) => Some((IF_NONE_MATCH, "*".to_owned())),
        (None, false) => None,
    }
}

/// The version in an ETag such as `"7"` (or a weak `W/"7"`).
fn etag_version(etag: &str) -> Option<i64> {
    etag.trim().trim_start_matches("W/").strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_etags() {
        assert_eq!(etag_version(r#""7""#), Some(7));
        assert_eq!(etag_version(r#"W/"12""#), Some(12));
        assert_eq!(etag_version("7"), None);
        assert_eq!(etag_version(r#""abc""#), None);
    }

    #[test]
    fn preconditions_become_if_match_or_if_none_match() {
        assert_eq!(precondition(Some(3), false), Some((IF_MATCH, r#""3""#.to_owned())));
        assert_eq!(precondition(None, true), Some((IF_NONE_MATCH, "*".to_owned())));
        assert_eq!(precondition(None, false), None);
    }

    #[test]
    fn a_list_shows_keys_with_versions_and_cuts_long_values() {
        let items = [
            json!({"key": "user/1", "version": 3, "value": {"name": "Ada"}}),
            json!({"key": "user/10", "version": 1, "value": "x".repeat(100)}),
        ];
        let rendered = render_list(&items).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "KEY      VERSION  VALUE");
        assert_eq!(lines[1], r#"user/1   3        {"name":"Ada"}"#);
        assert!(lines[2].starts_with(r#"user/10  1        "xxx"#) && lines[2].ends_with('…'), "{rendered}");
        assert_eq!(lines[2].chars().count(), 18 + LIST_VALUE_CHARS, "two columns of 7 and their gaps, then the value");
    }

    #[test]
    fn cursors_are_printed_as_one_shell_word() {
        assert_eq!(shell_word("user/10"), "user/10");
        assert_eq!(shell_word("user 1&x"), "'user 1&x'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
    }

    #[test]
    fn keys_may_hold_any_character() {
        let at = KvKeyArgs { ns: "carts".into(), key: "user 1/items".into() };
        assert_eq!(path(&at), "/v1/kv/carts/user%201%2Fitems");
    }
}
