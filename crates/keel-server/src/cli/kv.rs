//! `keel kv get|put|delete`: the key-value store, a JSON value per key, with its version as
//! the ETag and `--if-version`/`--if-absent` as `If-Match`/`If-None-Match` preconditions.

use anyhow::Context;
use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderName, Method};
use serde_json::{json, Value};

use super::client::{encode, print_json, KeelClient};
use super::{payload, KvDeleteArgs, KvKeyArgs, KvPutArgs};

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
    fn keys_may_hold_any_character() {
        let at = KvKeyArgs { ns: "carts".into(), key: "user 1/items".into() };
        assert_eq!(path(&at), "/v1/kv/carts/user%201%2Fitems");
    }
}
