//! `keel deps ls|show`: each dependency's live state on the node asked — breaker, calls in
//! flight and queued, the retry budget, counters.

use serde_json::Value;

use super::client::{encode, print_json, KeelClient};
use super::table::Table;
use super::DependencyArg;

pub(crate) async fn ls(client: &KeelClient, json: bool) -> anyhow::Result<()> {
    let list = client.get_json("/v1/dependencies").await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let mut table = Table::with_header([
        "NAME",
        "URL",
        "BREAKER",
        "IN FLIGHT",
        "QUEUED",
        "BUDGET",
        "REQUESTS",
        "RETRIES",
        "FAILURES",
        "SHED",
    ]);
    for d in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        table.row(row(d));
    }
    print!("{table}");
    Ok(())
}

/// One dependency's row of `keel deps ls`.
fn row(d: &Value) -> [String; 10] {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(v) => v.to_string(),
    };
    let counters = d.get("counters");
    let counter = |key: &str| text(counters.and_then(|c| c.get(key)));
    let shed: u64 = counters
        .and_then(|c| c.get("shed"))
        .and_then(Value::as_object)
        .map_or(0, |shed| shed.values().filter_map(Value::as_u64).sum());
    [
        text(d.get("name")),
        text(d.get("url")),
        text(d.get("breaker").and_then(|b| b.get("state"))),
        text(d.get("in_flight")),
        text(d.get("queued")),
        text(d.get("budget_available")),
        counter("requests"),
        counter("retries"),
        counter("failures"),
        shed.to_string(),
    ]
}

pub(crate) async fn show(client: &KeelClient, args: DependencyArg) -> anyhow::Result<()> {
    print_json(&client.get_json(&format!("/v1/dependencies/{}", encode(&args.name))).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_shows_the_live_state() {
        let d = json!({"name": "payments", "url": "http://p/api", "breaker": {"state": "open"}, "in_flight": 2,
            "queued": 1, "budget_available": 7, "counters": {"requests": 40, "retries": 3, "failures": 9,
            "shed": {"breaker-open": 4, "rate-limited": 1, "bulkhead-full": 0}}});
        assert_eq!(row(&d), ["payments", "http://p/api", "open", "2", "1", "7", "40", "3", "9", "5"].map(String::from));
        assert_eq!(row(&json!({"name": "mail", "breaker": null}))[2], "-");
    }
}
