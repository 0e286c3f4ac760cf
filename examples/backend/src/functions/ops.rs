//! `notify-ops` (on `keel.system`): Keel's own operational events — an invocation gone dead, a
//! breaker opened or closed, a function paused, shedding, a node lost — turned into one alert
//! line each. Here the line is logged (Keel labels an instance's output with the function) and
//! answered as the result; a real notifier would post it to Slack, e-mail or a PagerDuty webhook
//! through a dependency, with Keel's retries and DLQ around it like any function. It also gets
//! the `keel.workflow.compensated` events of the `orders` topic: a checkout that was undone.

use keel_sdk::{Error, Reply, Request};
use serde_json::{json, Value};

/// Logs the alert and answers `{"alert", "type", "data"}`.
pub async fn notify_ops(req: Request) -> Result<Reply, Error> {
    let Some(event) = req.ctx.event() else {
        return Err(Error::bad_request("notify-ops takes the events of keel.system"));
    };
    let data: Value = req.json()?;
    let alert = alert_line(&event.kind, event.subject.as_deref().unwrap_or(""), &data);
    println!("ALERT {alert}");
    Ok(Reply::json(json!({ "alert": alert, "type": event.kind, "data": data })))
}

/// One line a person can act on.
fn alert_line(kind: &str, subject: &str, data: &Value) -> String {
    let text = |key: &str| data[key].as_str().unwrap_or("?").to_owned();
    if data["summary"] == true {
        return format!("{kind}: {} more held back by the rate limit since {}", data["held"], text("since"));
    }
    match kind {
        "keel.invocation.dead" => {
            let by = match data["subscription"].as_str() {
                Some(subscription) => format!("{} (subscription {subscription})", text("function")),
                None => text("function"),
            };
            format!(
                "invocation {} of {by} is in the DLQ after {} attempt(s): {}",
                text("invocation_id"),
                data["attempts"],
                text("error")
            )
        }
        "keel.breaker.opened" | "keel.breaker.closed" => format!("{kind}: {subject} is now {}", text("state")),
        "keel.workflow.compensated" => format!(
            "{} run {} was undone: step {} failed: {}",
            text("workflow"),
            text("id"),
            text("failed_step"),
            text("error")
        ),
        "keel.workflow.failed" => format!(
            "{} run {} is stuck with a compensation in the DLQ (step {} failed: {})",
            text("workflow"),
            text("id"),
            text("failed_step"),
            text("error")
        ),
        _ => format!("{kind}: {subject} {data}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_dead_delivery_reads_as_one_line_naming_its_subscription() {
        let data = json!({"invocation_id": "01J", "function": "send-welcome-email", "subscription": "welcome-email",
                          "attempts": 1, "error": "422: no such mailbox"});
        assert_eq!(
            super::alert_line("keel.invocation.dead", "send-welcome-email", &data),
            "invocation 01J of send-welcome-email (subscription welcome-email) is in the DLQ after 1 attempt(s): \
             422: no such mailbox"
        );
        let summary = json!({"summary": true, "held": 990, "since": "2026-11-30T22:00:00Z"});
        assert_eq!(
            super::alert_line("keel.invocation.dead", "", &summary),
            "keel.invocation.dead: 990 more held back by the rate limit since 2026-11-30T22:00:00Z"
        );
    }

    #[test]
    fn an_undone_checkout_reads_as_the_step_that_failed() {
        let data = json!({"id": "01JRUN", "workflow": "checkout", "status": "compensated", "failed_step": "ship",
                          "error": "the carrier refused the parcel", "input": {}, "steps": {}});
        assert_eq!(
            super::alert_line("keel.workflow.compensated", "01JRUN", &data),
            "checkout run 01JRUN was undone: step ship failed: the carrier refused the parcel"
        );
        assert_eq!(
            super::alert_line("keel.workflow.failed", "01JRUN", &data),
            "checkout run 01JRUN is stuck with a compensation in the DLQ (step ship failed: the carrier refused \
             the parcel)"
        );
    }
}
