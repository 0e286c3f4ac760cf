//! `keel invocations ls|show|cancel`, and how invocations are printed for people — shared with
//! `keel dlq`, whose items are invocations too.

use serde_json::Value;

use super::client::{encode, print_json, with_query, KeelClient};
use super::table::{truncate, Table};
use super::{IdArg, InvocationsLsArgs, PageArgs};

/// Longest error shown in a list; `show` prints it whole.
const LIST_ERROR_CHARS: usize = 60;

pub(crate) async fn ls(client: &KeelClient, json: bool, args: InvocationsLsArgs) -> anyhow::Result<()> {
    let mut params = vec![
        ("function", args.function),
        ("subscription", args.subscription),
        ("status", args.status.map(|s| s.as_str().to_owned())),
    ];
    params.extend(page_params(args.page));
    let page = client.get_json(&with_query("/v1/invocations", &params)).await?;
    print_page(&page, json, "no invocations");
    Ok(())
}

pub(crate) async fn show(client: &KeelClient, json: bool, args: IdArg) -> anyhow::Result<()> {
    let invocation = client.get_json(&format!("/v1/invocations/{}", encode(&args.id))).await?;
    if json {
        print_json(&invocation);
    } else {
        print!("{}", render_invocation(&invocation));
    }
    Ok(())
}

pub(crate) async fn cancel(client: &KeelClient, json: bool, args: IdArg) -> anyhow::Result<()> {
    let path = format!("/v1/invocations/{}/cancel", encode(&args.id));
    let answer = client.post_json(&path, None, None).await?;
    if json {
        print_json(&answer);
    } else {
        println!("cancelled {}", args.id);
    }
    Ok(())
}

/// `limit` and `cursor`, as query parameters.
pub(crate) fn page_params(page: PageArgs) -> [(&'static str, Option<String>); 2] {
    [("limit", page.limit.map(|n| n.to_string())), ("cursor", page.cursor)]
}

/// Prints one page of a list: as JSON, or as a table followed by how to fetch the next page.
pub(crate) fn print_page(page: &Value, json: bool, empty: &str) {
    if json {
        print_json(page);
        return;
    }
    let items = page.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        eprintln!("{empty}");
    } else {
        print!("{}", render_list(items));
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        eprintln!("next page: --cursor {cursor}");
    }
}

/// A table of invocations, one per line; with a SUBSCRIPTION column when any is an event's
/// delivery.
pub(crate) fn render_list(items: &[Value]) -> Table {
    let deliveries = items.iter().any(|item| !text(item, "subscription").is_empty());
    let mut table = Table::default();
    let mut header = vec!["ID", "FUNCTION"];
    if deliveries {
        header.push("SUBSCRIPTION");
    }
    header.extend(["STATUS", "ATTEMPTS", "CREATED", "ERROR"]);
    table.row(header);
    for item in items {
        let mut row = vec![text(item, "id"), text(item, "function")];
        if deliveries {
            row.push(text(item, "subscription"));
        }
        row.extend([
            text(item, "status"),
            text(item, "attempt_count"),
            text(item, "created_at"),
            truncate(&text(item, "error"), LIST_ERROR_CHARS),
        ]);
        table.row(row);
    }
    table
}

/// One invocation: its fields, one per line, then its attempts as a table.
pub(crate) fn render_invocation(invocation: &Value) -> String {
    let mut fields = Table::default();
    for key in [
        "id",
        "function",
        "subscription",
        "event_id",
        "status",
        "attempt_count",
        "redrives",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "idempotency_key",
        "result_status",
        "result",
        "error",
    ] {
        let value = text(invocation, key);
        if !value.is_empty() {
            fields.row([format!("{key}:"), value]);
        }
    }
    let attempts = invocation.get("attempts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if attempts.is_empty() {
        return format!("{fields}\nno attempts yet\n");
    }
    let mut table = Table::with_header(["#", "OUTCOME", "STATUS", "DURATION", "STARTED", "ERROR"]);
    for attempt in attempts {
        let duration = match text(attempt, "duration_ms") {
            ms if ms.is_empty() => ms,
            ms => format!("{ms}ms"),
        };
        table.row([
            text(attempt, "number"),
            text(attempt, "outcome"),
            text(attempt, "status"),
            duration,
            text(attempt, "started_at"),
            truncate(&text(attempt, "error"), LIST_ERROR_CHARS),
        ]);
    }
    format!("{fields}\n{table}")
}

/// A field as people read it: strings bare, other JSON compact, absent or null as empty.
pub(crate) fn text(object: &Value, key: &str) -> String {
    match object.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dead_invocation() -> Value {
        json!({
            "id": "01JDEAD",
            "function": "charge",
            "status": "dead",
            "attempt_count": 2,
            "redrives": 0,
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:03Z",
            "next_attempt_at": null,
            "error": "HTTP 500 from the function",
            "attempts": [
                {"number": 1, "started_at": "2025-01-01T00:00:00Z", "ended_at": "2025-01-01T00:00:01Z",
                 "duration_ms": 12, "outcome": "transient", "status": 503},
                {"number": 2, "started_at": "2025-01-01T00:00:02Z", "ended_at": "2025-01-01T00:00:03Z",
                 "duration_ms": 7, "outcome": "transient", "status": 500, "error": "HTTP 500 from the function"}
            ]
        })
    }

    #[test]
    fn a_list_shows_one_row_per_invocation_and_cuts_long_errors() {
        let long = "x".repeat(100);
        let items = [json!({"id": "01JA", "function": "f", "status": "failed", "attempt_count": 10,
                            "created_at": "2025-01-01T00:00:00Z", "error": long})];
        let rendered = render_list(&items).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(lines[0].starts_with("ID    FUNCTION  STATUS  ATTEMPTS  CREATED"), "{rendered}");
        assert!(lines[1].starts_with("01JA  f         failed  10        2025-01-01T00:00:00Z"));
        assert!(lines[1].ends_with(&format!("{}…", "x".repeat(59))));
    }

    #[test]
    fn a_list_with_deliveries_names_their_subscriptions() {
        let items = [
            json!({"id": "01JA", "function": "email", "subscription": "welcome", "event_id": "01JE",
                   "status": "dead", "attempt_count": 3, "created_at": "2025-01-01T00:00:00Z"}),
            json!({"id": "01JB", "function": "charge", "status": "succeeded", "attempt_count": 1,
                   "created_at": "2025-01-01T00:00:01Z"}),
        ];
        let rendered = render_list(&items).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "ID    FUNCTION  SUBSCRIPTION  STATUS     ATTEMPTS  CREATED               ERROR");
        assert_eq!(lines[1], "01JA  email     welcome       dead       3         2025-01-01T00:00:00Z");
        assert_eq!(lines[2], "01JB  charge                  succeeded  1         2025-01-01T00:00:01Z");
        assert!(!render_list(&items[1..]).to_string().contains("SUBSCRIPTION"));
    }

    #[test]
    fn show_prints_set_fields_then_the_attempts() {
        let rendered = render_invocation(&dead_invocation());
        assert!(rendered.starts_with("id:             01JDEAD\nfunction:       charge\n"), "{rendered}");
        assert!(!rendered.contains("next_attempt_at"), "null fields are left out: {rendered}");
        assert!(rendered.contains("\n#  OUTCOME    STATUS  DURATION  STARTED"), "{rendered}");
        assert!(rendered.contains("\n2  transient  500     7ms       2025-01-01T00:00:02Z  HTTP 500"));
    }

    #[test]
    fn show_says_when_nothing_has_run() {
        let rendered = render_invocation(&json!({"id": "01JQ", "status": "queued", "attempts": []}));
        assert!(rendered.ends_with("\nno attempts yet\n"), "{rendered}");
    }
}
