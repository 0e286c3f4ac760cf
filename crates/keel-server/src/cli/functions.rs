//! `keel functions ls|show|pause|resume`: each function's live state, and pausing it.

use serde_json::Value;

use super::client::{encode, print_json, KeelClient};
use super::table::Table;
use super::FunctionArg;

pub(crate) async fn ls(client: &KeelClient, json: bool) -> anyhow::Result<()> {
    let list = client.get_json("/v1/functions").await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let mut table = Table::with_header(["NAME", "KIND", "IN FLIGHT", "WAITING", "QUEUED", "PAUSED", "BREAKER"]);
    for f in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        table.row(row(f));
    }
    print!("{table}");
    Ok(())
}

/// One function's row of `keel functions ls`.
fn row(f: &Value) -> [String; 7] {
    let text = |key: &str| match f.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(v) => v.to_string(),
    };
    let breaker = match f.get("breaker").and_then(|b| b.get("state")).and_then(Value::as_str) {
        Some(state) => state.to_string(),
        None => "-".to_string(),
    };
    let paused = if f.get("paused").and_then(Value::as_bool) == Some(true) { "yes" } else { "no" };
    [text("name"), text("kind"), text("in_flight"), text("waiting"), text("queued"), paused.into(), breaker]
}

pub(crate) async fn show(client: &KeelClient, args: FunctionArg) -> anyhow::Result<()> {
    print_json(&client.get_json(&format!("/v1/functions/{}", encode(&args.name))).await?);
    Ok(())
}

/// `pause` (`true`) or `resume`.
pub(crate) async fn set_paused(client: &KeelClient, json: bool, args: FunctionArg, pause: bool) -> anyhow::Result<()> {
    let verb = if pause { "pause" } else { "resume" };
    let answer = client.post_json(&format!("/v1/functions/{}/{verb}", encode(&args.name)), None, None).await?;
    if json {
        print_json(&answer);
    } else {
        let queued = answer.get("queued").and_then(Value::as_u64).unwrap_or(0);
        match pause {
            true => println!("paused {} ({queued} queued, held until resumed)", args.name),
            false => println!("resumed {} ({queued} queued)", args.name),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_shows_the_live_state() {
        let f = json!({"name": "charge", "kind": "url", "in_flight": 3, "waiting": 0, "queued": 12,
            "paused": true, "breaker": {"state": "half-open", "since": "x", "failures": 5}});
        assert_eq!(row(&f), ["charge", "url", "3", "0", "12", "yes", "half-open"].map(String::from));
        let plain = json!({"name": "a", "kind": "command", "in_flight": 0, "waiting": 0, "queued": 0,
            "paused": false, "breaker": null});
        assert_eq!(row(&plain)[5..], ["no".to_string(), "-".to_string()]);
    }
}
