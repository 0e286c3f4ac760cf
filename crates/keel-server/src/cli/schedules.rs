//! `keel schedules ls|show|pause|resume`: each schedule with its next and last fire, and pausing it.

use serde_json::Value;

use super::client::{encode, print_json, KeelClient};
use super::table::Table;
use super::ScheduleArg;

pub(crate) async fn ls(client: &KeelClient, json: bool) -> anyhow::Result<()> {
    let list = client.get_json("/v1/schedules").await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let mut table = Table::with_header(["NAME", "WHEN", "TARGET", "PAUSED", "NEXT FIRE", "LAST FIRE"]);
    for s in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        table.row(row(s));
    }
    print!("{table}");
    Ok(())
}

/// One schedule's row of `keel schedules ls`.
fn row(s: &Value) -> [String; 6] {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("-").to_string();
    let when = match (s.get("cron").and_then(Value::as_str), s.get("every").and_then(Value::as_str)) {
        (Some(cron), _) => format!("cron {cron} ({})", text(s.get("timezone"))),
        (None, Some(every)) => format!("every {every}"),
        (None, None) => "-".to_string(),
    };
    let target = s.get("target");
    let target = match (target.and_then(|t| t.get("function")), target.and_then(|t| t.get("topic"))) {
        (Some(f), _) => format!("function {}", text(Some(f))),
        (None, Some(t)) => format!("topic {}", text(Some(t))),
        (None, None) => "-".to_string(),
    };
    let paused = if s.get("paused").and_then(Value::as_bool) == Some(true) { "yes" } else { "no" };
    [text(s.get("name")), when, target, paused.into(), text(s.get("next_fire")), text(s.get("last_fire"))]
}

pub(crate) async fn show(client: &KeelClient, args: ScheduleArg) -> anyhow::Result<()> {
    print_json(&client.get_json(&format!("/v1/schedules/{}", encode(&args.name))).await?);
    Ok(())
}

/// `pause` (`true`) or `resume`.
pub(crate) async fn set_paused(client: &KeelClient, json: bool, args: ScheduleArg, pause: bool) -> anyhow::Result<()> {
    let verb = if pause { "pause" } else { "resume" };
    let answer = client.post_json(&format!("/v1/schedules/{}/{verb}", encode(&args.name)), None, None).await?;
    if json {
        print_json(&answer);
    } else {
        match pause {
            true => println!("paused {}: its ticks make nothing until resumed", args.name),
            false => {
                let next = answer.get("next_fire").and_then(Value::as_str).unwrap_or("-");
                println!("resumed {} (next fire {next})", args.name)
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_shows_when_what_and_the_fires() {
        let cron = json!({"name": "nightly", "cron": "0 3 * * *", "every": null, "timezone": "Europe/Berlin",
            "target": {"function": "build-report"}, "paused": false, "next_fire": "2026-12-01T02:00:00.000Z",
            "last_fire": null});
        assert_eq!(
            row(&cron),
            [
                "nightly",
                "cron 0 3 * * * (Europe/Berlin)",
                "function build-report",
                "no",
                "2026-12-01T02:00:00.000Z",
                "-"
            ]
            .map(String::from)
        );
        let every = json!({"name": "tick", "cron": null, "every": "1m", "timezone": null,
            "target": {"topic": "ticks"}, "paused": true, "next_fire": null, "last_fire": "2026-11-30T22:00:00.000Z"});
        assert_eq!(
            row(&every),
            ["tick", "every 1m", "topic ticks", "yes", "-", "2026-11-30T22:00:00.000Z"].map(String::from)
        );
    }
}
