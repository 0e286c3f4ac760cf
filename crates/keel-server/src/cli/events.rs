//! `keel events show`: a published event and where it went — one delivery (an invocation) per
//! matching subscription.

use serde_json::Value;

use super::client::{encode, print_json, KeelClient};
use super::invocations::text;
use super::table::{truncate, Table};
use super::EventIdArg;

/// Longest delivery error shown; `keel invocations show` prints it whole.
const ERROR_CHARS: usize = 60;

pub(crate) async fn show(client: &KeelClient, json: bool, args: EventIdArg) -> anyhow::Result<()> {
    let event = client.get_json(&format!("/v1/events/{}", encode(&args.id))).await?;
    if json {
        print_json(&event);
    } else {
        print!("{}", render_event(&event));
    }
    Ok(())
}

/// The event's fields, one per line, then its deliveries as a table.
fn render_event(event: &Value) -> String {
    let mut fields = Table::default();
    for key in ["id", "topic", "ce_id", "source", "type", "subject", "time", "hops", "created_at", "data"] {
        let value = text(event, key);
        if !value.is_empty() {
            fields.row([format!("{key}:"), value]);
        }
    }
    let deliveries = event.get("deliveries").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if deliveries.is_empty() {
        return format!("{fields}\nno deliveries: no subscription matched\n");
    }
    let mut table = Table::with_header(["SUBSCRIPTION", "FUNCTION", "INVOCATION", "STATUS", "ATTEMPTS", "ERROR"]);
    for delivery in deliveries {
        table.row([
            text(delivery, "subscription"),
            text(delivery, "function"),
            text(delivery, "invocation_id"),
            text(delivery, "status"),
            text(delivery, "attempt_count"),
            truncate(&text(delivery, "error"), ERROR_CHARS),
        ]);
    }
    format!("{fields}\n{table}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn show_prints_the_event_then_one_row_per_delivery() {
        let event = json!({
            "id": "01JEV", "topic": "orders", "specversion": "1.0", "ce_id": "e-1", "source": "shop",
            "type": "order.placed", "subject": "o-1", "data": {"total": 12}, "extensions": {},
            "hops": 0, "created_at": "2025-01-01T00:00:00Z",
            "deliveries": [
                {"subscription": "bill", "function": "charge", "invocation_id": "01JI1", "status": "succeeded",
                 "attempt_count": 1},
                {"subscription": "mail", "function": "email", "invocation_id": "01JI2", "status": "retrying",
                 "attempt_count": 2, "error": "e".repeat(80)},
            ]
        });
        let rendered = render_event(&event);
        assert!(rendered.starts_with("id:          01JEV\ntopic:       orders\nce_id:       e-1\n"), "{rendered}");
        assert!(rendered.contains("\ndata:        {\"total\":12}\n"), "{rendered}");
        assert!(!rendered.contains("time:"), "absent fields are left out: {rendered}");
        let table: Vec<&str> = rendered.lines().skip_while(|l| !l.starts_with("SUBSCRIPTION")).collect();
        assert_eq!(table[0], "SUBSCRIPTION  FUNCTION  INVOCATION  STATUS     ATTEMPTS  ERROR");
        assert_eq!(table[1], "bill          charge    01JI1       succeeded  1");
        assert!(table[2].ends_with(&format!("2         {}…", "e".repeat(59))), "{}", table[2]);
    }

    #[test]
    fn show_says_when_no_subscription_matched() {
        let rendered = render_event(&json!({"id": "01JEV", "topic": "orders", "hops": 0, "deliveries": []}));
        assert!(rendered.ends_with("\nno deliveries: no subscription matched\n"), "{rendered}");
    }
}
