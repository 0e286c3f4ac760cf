//! `keel dlq ls|show|redrive|discard`: the dead-letter queue, where invocations that ran out of
//! retries wait to be redriven or discarded.

use serde_json::{json, Value};

use super::client::{encode, print_json, with_query, KeelClient};
use super::invocations::{page_params, print_page};
use super::{DlqLsArgs, IdArg, RedriveArgs};

pub(crate) async fn ls(client: &KeelClient, json: bool, args: DlqLsArgs) -> anyhow::Result<()> {
    let mut params = vec![("function", args.function), ("subscription", args.subscription)];
    params.extend(page_params(args.page));
    let page = client.get_json(&with_query("/v1/dlq", &params)).await?;
    print_page(&page, json, "the dead-letter queue is empty");
    Ok(())
}

pub(crate) async fn redrive(client: &KeelClient, json: bool, args: RedriveArgs) -> anyhow::Result<()> {
    let key = args.idempotency_key.as_deref();
    let Some(id) = args.id else {
        let filter = bulk_filter(args.function, args.subscription, args.limit);
        let answer = client.post_json("/v1/dlq/redrive", Some(&filter), key).await?;
        if json {
            print_json(&answer);
        } else {
            let n = answer.get("redriven").and_then(Value::as_u64).unwrap_or(0);
            println!("redrove {n} invocation{}", if n == 1 { "" } else { "s" });
        }
        return Ok(());
    };
    let answer = client.post_json(&format!("/v1/dlq/{}/redrive", encode(&id)), None, key).await?;
    if json {
        print_json(&answer);
    } else {
        println!("redrove {id}");
    }
    Ok(())
}

pub(crate) async fn discard(client: &KeelClient, json: bool, args: IdArg) -> anyhow::Result<()> {
    let answer = client.delete_json(&format!("/v1/dlq/{}", encode(&args.id))).await?;
    if json {
        print_json(&answer);
    } else {
        println!("discarded {}", args.id);
    }
    Ok(())
}

/// The body of a bulk redrive: only the filters given, so the server's defaults apply to the rest.
fn bulk_filter(function: Option<String>, subscription: Option<String>, limit: Option<u32>) -> Value {
    let mut filter = serde_json::Map::new();
    if let Some(function) = function {
        filter.insert("function".into(), json!(function));
    }
    if let Some(subscription) = subscription {
        filter.insert("subscription".into(), json!(subscription));
    }
    if let Some(limit) = limit {
        filter.insert("limit".into(), json!(limit));
    }
    Value::Object(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_filter_holds_only_what_was_given() {
        assert_eq!(bulk_filter(None, None, None), json!({}));
        assert_eq!(bulk_filter(Some("charge".into()), None, Some(5)), json!({"function": "charge", "limit": 5}));
        assert_eq!(bulk_filter(None, Some("welcome".into()), None), json!({"subscription": "welcome"}));
    }
}
