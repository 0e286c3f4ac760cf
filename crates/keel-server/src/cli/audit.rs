//! `keel audit ls`: the audit log (`GET /v1/audit`, admin), newest first.

use serde_json::Value;

use super::client::{print_json, with_query, KeelClient};
use super::invocations::page_params;
use super::table::Table;
use super::AuditLsArgs;

pub(crate) async fn ls(client: &KeelClient, json: bool, args: AuditLsArgs) -> anyhow::Result<()> {
    let mut params = vec![("action", args.action), ("actor", args.actor)];
    params.extend(page_params(args.page));
    let page = client.get_json(&with_query("/v1/audit", &params)).await?;
    if json {
        print_json(&page);
        return Ok(());
    }
    let items = page.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        eprintln!("nothing in the audit log");
    } else {
        print!("{}", render_log(items));
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        eprintln!("next page: --cursor {cursor}");
    }
    Ok(())
}

/// The table of `keel audit ls`.
fn render_log(items: &[Value]) -> Table {
    let mut table = Table::with_header(["AT", "ACTOR", "ACTION", "TARGET", "REQUEST ID"]);
    for entry in items {
        let text = |key: &str| match entry.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".to_owned(),
            Some(v) => v.to_string(),
        };
        table.row([text("at"), text("actor"), text("action"), text("target"), text("request_id")]);
    }
    table
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_line_shows_who_did_what_to_what() {
        let items = [
            json!({"id": "01J2", "at": "2026-11-30T12:00:01.000Z", "actor": "key_01JA", "action": "dlq.redrive",
                "target": "*", "request_id": "req-7", "detail": {"redriven": 3}}),
            json!({"id": "01J1", "at": "2026-11-30T12:00:00.000Z", "actor": "local", "action": "key.create",
                "target": "key_01JA", "request_id": null, "detail": {"name": "ops"}}),
        ];
        let table = render_log(&items).to_string();
        assert_eq!(
            table,
            "AT                        ACTOR     ACTION       TARGET    REQUEST ID\n\
             2026-11-30T12:00:01.000Z  key_01JA  dlq.redrive  *         req-7\n\
             2026-11-30T12:00:00.000Z  local     key.create   key_01JA  -\n"
        );
    }
}
