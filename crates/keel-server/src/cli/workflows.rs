//! `keel workflows defs|run|ls|show|cancel`: starting workflow runs (sagas), following one to its
//! end, and printing a run as a timeline — each step's invocation, then, under it, the
//! compensation that undid it.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use http::header::CONTENT_TYPE;
use http::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::client::{encode, idempotency_header, print_json, with_query, ClientError, KeelClient};
use super::invocations::{page_params, text};
use super::table::{truncate, Table};
use super::{payload, RunIdArg, WorkflowRunArgs, WorkflowsCommand, WorkflowsLsArgs};

/// Longest output or error shown in a table; `--json` prints them whole.
const CELL_CHARS: usize = 60;

/// `--wait` looks again soon at first (a run of a few quick steps ends within a second), then
/// less and less often, at most every [`LAST_LOOK_EVERY`].
const FIRST_LOOK_AFTER: Duration = Duration::from_millis(100);
const LAST_LOOK_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(client: &KeelClient, json: bool, command: WorkflowsCommand) -> anyhow::Result<ExitCode> {
    match command {
        WorkflowsCommand::Defs => defs(client, json).await?,
        WorkflowsCommand::Run(args) => return start(client, json, args).await,
        WorkflowsCommand::Ls(args) => ls(client, json, args).await?,
        WorkflowsCommand::Show(args) => show(client, json, args).await?,
        WorkflowsCommand::Cancel(args) => cancel(client, json, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn defs(client: &KeelClient, json: bool) -> anyhow::Result<()> {
    let list = client.get_json("/v1/workflows").await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let items = list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        eprintln!("no workflows are declared");
        return Ok(());
    }
    print!("{}", render_defs(items));
    Ok(())
}

/// One line per step, the workflow's name and notify topic on its first.
fn render_defs(items: &[Value]) -> Table {
    let mut table = Table::with_header(["WORKFLOW", "STEP", "FUNCTION", "COMPENSATE", "NOTIFY"]);
    for workflow in items {
        let steps = workflow.get("steps").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            let (name, notify) = match i {
                0 => (text(workflow, "name"), text(workflow, "notify_topic")),
                _ => (String::new(), String::new()),
            };
            let compensate = match text(step, "compensate") {
                none if none.is_empty() => "-".to_owned(),
                function => function,
            };
            table.row([name, text(step, "name"), text(step, "function"), compensate, notify]);
        }
    }
    table
}

/// `keel workflows run`: starts the run and prints its id; with `--wait`, its timeline at the end.
async fn start(client: &KeelClient, json: bool, args: WorkflowRunArgs) -> anyhow::Result<ExitCode> {
    let input = payload::read(args.input.as_deref().or(args.data.as_deref()))?;
    if !input.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<Value>(&input)
            .context("the run's input is not JSON (e.g. '{\"order_id\": \"o-1\"}')")?;
    }
    let mut headers = vec![(CONTENT_TYPE, "application/json".to_owned())];
    headers.extend(args.idempotency_key.as_deref().map(idempotency_header));
    let path = format!("/v1/workflows/{}/runs", encode(&args.name));
    let response = client.send(Method::POST, &path, &headers, input).await?;
    let replayed = response.header("idempotent-replayed") == Some("true");
    let started = response.into_json()?;
    let id = text(&started, "id");
    if !json {
        println!("{id}");
        let replayed = if replayed { " · replayed (the run this key started)" } else { "" };
        eprintln!("run {id} of {} · {}{replayed}", args.name, text(&started, "status"));
    }
    if !args.wait {
        if json {
            print_json(&started);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let run_path = format!("/v1/workflow-runs/{}", encode(&id));
    let run = match follow(|| client.get_json(&run_path), args.timeout).await? {
        Followed::Ended(run) => run,
        Followed::StillGoing(run) => anyhow::bail!(
            "run {id} is still {} after {}: `keel workflows show {id}` shows where it is",
            text(&run, "status"),
            humantime::format_duration(args.timeout)
        ),
    };
    if json {
        print_json(&run);
    } else {
        print!("{}", render_run(&run));
    }
    Ok(if text(&run, "status") == "succeeded" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Where `--wait` left a run.
#[derive(Debug, PartialEq)]
enum Followed {
    /// No longer running or compensating (`failed` included: it waits for a redrive).
    Ended(Value),
    /// Still on its way when the time was up: the last look at it.
    StillGoing(Value),
}

/// Looks at a run with `look` until it is no longer running or compensating, or `timeout` has
/// passed since the first look.
async fn follow<F, Fut>(mut look: F, timeout: Duration) -> Result<Followed, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value, ClientError>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_LOOK_AFTER;
    loop {
        let run = look().await?;
        if !matches!(text(&run, "status").as_str(), "running" | "compensating") {
            return Ok(Followed::Ended(run));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Followed::StillGoing(run));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(LAST_LOOK_EVERY);
    }
}

async fn ls(client: &KeelClient, json: bool, args: WorkflowsLsArgs) -> anyhow::Result<()> {
    let mut params = vec![("workflow", args.workflow), ("status", args.status.map(|s| s.as_str().to_owned()))];
    params.extend(page_params(args.page));
    let page = client.get_json(&with_query("/v1/workflow-runs", &params)).await?;
    if json {
        print_json(&page);
        return Ok(());
    }
    let items = page.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        eprintln!("no workflow runs");
    } else {
        print!("{}", render_runs(items));
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        eprintln!("next page: --cursor {cursor}");
    }
    Ok(())
}

/// A table of runs, one per line, with the step each is at.
fn render_runs(items: &[Value]) -> Table {
    let mut table = Table::with_header(["ID", "WORKFLOW", "STATUS", "STEP", "CREATED", "ERROR"]);
    for run in items {
        table.row([
            text(run, "id"),
            text(run, "workflow"),
            text(run, "status"),
            step_at(run),
            text(run, "created_at"),
            truncate(&text(run, "error"), CELL_CHARS),
        ]);
    }
    table
}

/// The step a run is at: the one running or being compensated, else the one that failed.
fn step_at(run: &Value) -> String {
    let steps = run.get("steps").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let busy =
        steps.iter().find(|s| matches!(text(s, "status").as_str(), "running" | "compensating" | "compensation_failed"));
    match busy {
        Some(step) => text(step, "name"),
        None => text(run, "failed_step"),
    }
}

async fn show(client: &KeelClient, json: bool, args: RunIdArg) -> anyhow::Result<()> {
    let run = client.get_json(&format!("/v1/workflow-runs/{}", encode(&args.id))).await?;
    if json {
        print_json(&run);
    } else {
        print!("{}", render_run(&run));
    }
    Ok(())
}

/// One run: its fields, one per line; its steps as a timeline (times after the run's start),
/// each compensation on the line under the step it undoes; then what to do about a dead
/// compensation or a pending cancel.
fn render_run(run: &Value) -> String {
    let mut fields = Table::default();
    for key in ["id", "workflow", "status", "input", "created_at", "updated_at", "ended_at", "failed_step", "error"] {
        let value = text(run, key);
        if !value.is_empty() {
            fields.row([format!("{key}:"), value]);
        }
    }
    let cancel_requested = run.get("cancel_requested").and_then(Value::as_bool) == Some(true);
    if cancel_requested {
        fields.row(["cancel_requested:", "true"]);
    }
    let start = time_of(run.get("created_at"));
    let after_start = |step: &Value, key: &str| since(start, step.get(key));
    let mut timeline =
        Table::with_header(["STEP", "FUNCTION", "STATUS", "INVOCATION", "STARTED", "ENDED", "OUTPUT / ERROR"]);
    let mut notes = Vec::new();
    let steps = run.get("steps").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for step in steps {
        let status = text(step, "status");
        let forward_failed = matches!(status.as_str(), "failed" | "cancelled");
        let detail = if forward_failed { text(step, "error") } else { text(step, "output") };
        timeline.row([
            text(step, "name"),
            text(step, "function"),
            status.clone(),
            text(step, "invocation_id"),
            after_start(step, "started_at"),
            after_start(step, "ended_at"),
            truncate(&detail, CELL_CHARS),
        ]);
        let compensation = match status.as_str() {
            "compensating" => "running",
            "compensated" => "succeeded",
            "compensation_failed" => "dead",
            _ => continue,
        };
        let error = if compensation == "dead" { text(step, "error") } else { String::new() };
        timeline.row([
            "└ undo".to_owned(),
            text(step, "compensate"),
            compensation.to_owned(),
            text(step, "compensation_id"),
            String::new(),
            after_start(step, "compensated_at"),
            truncate(&error, CELL_CHARS),
        ]);
        if compensation == "dead" {
            let id = text(step, "compensation_id");
            notes.push(format!(
                "the compensation of {} is dead: `keel dlq redrive {id}` runs it again, and the run's \
                 compensation resumes from there",
                text(step, "name")
            ));
        }
    }
    if cancel_requested && text(run, "status") == "running" {
        notes.push("cancel requested: the compensation starts when the running step's attempt ends".to_owned());
    }
    let notes: String = notes.iter().map(|note| format!("\n{note}\n")).collect();
    format!("{fields}\n{timeline}{notes}")
}

/// A time the server sent, as a point in time.
fn time_of(value: Option<&Value>) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(value?.as_str()?).ok()
}

/// `value` (a time) as seconds after `start`, `+1.234s`; as sent when either cannot be read.
fn since(start: Option<SystemTime>, value: Option<&Value>) -> String {
    let elapsed = start.zip(time_of(value)).and_then(|(start, t)| t.duration_since(start).ok());
    match elapsed {
        Some(d) => format!("+{}.{:03}s", d.as_secs(), d.subsec_millis()),
        None => value.and_then(Value::as_str).unwrap_or_default().to_owned(),
    }
}

async fn cancel(client: &KeelClient, json: bool, args: RunIdArg) -> anyhow::Result<()> {
    let path = format!("/v1/workflow-runs/{}/cancel", encode(&args.id));
    let run = client.post_json(&path, None, None).await?;
    if json {
        print_json(&run);
    } else {
        println!("{}", cancel_message(&args.id, &run));
    }
    Ok(())
}

/// What a cancel came to, in words: undone, being undone, or waiting for a running attempt.
fn cancel_message(id: &str, run: &Value) -> String {
    match text(run, "status").as_str() {
        "compensating" => format!("cancelled {id}: compensating the steps that succeeded, in reverse"),
        "compensated" => format!("cancelled {id}: compensated"),
        "running" => {
            format!("cancel requested for {id}: a step's attempt is running; the compensation starts when it ends")
        }
        other => format!("cancelled {id}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::VecDeque;

    use serde_json::json;

    use super::*;

    fn checkout() -> Value {
        json!({"name": "checkout", "notify_topic": "orders", "steps": [
            {"name": "reserve", "function": "reserve-stock", "compensate": "release-stock"},
            {"name": "charge", "function": "charge-card", "compensate": "refund-card"},
            {"name": "ship", "function": "create-shipment"},
        ]})
    }

    fn compensated_run() -> Value {
        json!({
            "id": "01JRUN", "workflow": "checkout", "status": "compensated",
            "input": {"item": "sword", "fail_shipping": true},
            "created_at": "2026-12-01T10:00:00.000Z", "updated_at": "2026-12-01T10:00:01.500Z",
            "ended_at": "2026-12-01T10:00:01.500Z", "failed_step": "ship",
            "error": "HTTP 422: cannot ship", "cancel_requested": false,
            "steps": [
                {"name": "reserve", "function": "reserve-stock", "compensate": "release-stock",
                 "status": "compensated", "invocation_id": "01JA", "output": {"hold_id": "hold_01JRUN"},
                 "started_at": "2026-12-01T10:00:00.000Z", "ended_at": "2026-12-01T10:00:00.250Z",
                 "compensation_id": "01JD", "compensated_at": "2026-12-01T10:00:01.500Z"},
                {"name": "charge", "function": "charge-card", "compensate": "refund-card",
                 "status": "compensated", "invocation_id": "01JB", "output": {"charge_id": "ch_1"},
                 "started_at": "2026-12-01T10:00:00.250Z", "ended_at": "2026-12-01T10:00:00.600Z",
                 "compensation_id": "01JC", "compensated_at": "2026-12-01T10:00:01.200Z"},
                {"name": "ship", "function": "create-shipment", "status": "failed", "invocation_id": "01JE",
                 "error": "HTTP 422: cannot ship", "started_at": "2026-12-01T10:00:00.600Z",
                 "ended_at": "2026-12-01T10:00:00.900Z"},
            ]
        })
    }

    #[test]
    fn defs_show_each_step_with_its_compensation_under_its_workflow() {
        let rendered = render_defs(&[checkout()]).to_string();
        assert_eq!(
            rendered,
            "WORKFLOW  STEP     FUNCTION         COMPENSATE     NOTIFY\n\
             checkout  reserve  reserve-stock    release-stock  orders\n          \
             charge   charge-card      refund-card\n          \
             ship     create-shipment  -\n"
        );
    }

    #[test]
    fn a_timeline_puts_each_compensation_under_the_step_it_undoes() {
        let rendered = render_run(&compensated_run());
        assert!(rendered.starts_with("id:           01JRUN\nworkflow:     checkout\nstatus:       compensated\n"));
        assert!(rendered.contains("\ninput:        {\"fail_shipping\":true,\"item\":\"sword\"}\n"), "{rendered}");
        assert!(rendered.contains("\nfailed_step:  ship\n"), "{rendered}");
        let timeline: Vec<&str> = rendered.lines().skip_while(|l| !l.starts_with("STEP")).collect();
        assert_eq!(
            timeline,
            [
                "STEP     FUNCTION         STATUS       INVOCATION  STARTED  ENDED    OUTPUT / ERROR",
                "reserve  reserve-stock    compensated  01JA        +0.000s  +0.250s  {\"hold_id\":\"hold_01JRUN\"}",
                "└ undo   release-stock    succeeded    01JD                 +1.500s",
                "charge   charge-card      compensated  01JB        +0.250s  +0.600s  {\"charge_id\":\"ch_1\"}",
                "└ undo   refund-card      succeeded    01JC                 +1.200s",
                "ship     create-shipment  failed       01JE        +0.600s  +0.900s  HTTP 422: cannot ship",
            ]
        );
    }

    #[test]
    fn a_dead_compensation_says_how_to_resume_it() {
        let mut run = compensated_run();
        run["status"] = json!("failed");
        run["steps"][0]["status"] = json!("compensation_failed");
        run["steps"][0]["error"] = json!("HTTP 503: stock service down");
        run["steps"][0].as_object_mut().unwrap().remove("compensated_at");
        let rendered = render_run(&run);
        let undo = rendered.lines().find(|l| l.starts_with("└ undo   release-stock")).expect("its compensation");
        let cells: Vec<&str> = undo.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells, ["└ undo", "release-stock", "dead", "01JD", "HTTP 503: stock service down"]);
        let note = "\nthe compensation of reserve is dead: `keel dlq redrive 01JD` runs it again, and the run's \
                    compensation resumes from there\n";
        assert!(rendered.ends_with(note), "{rendered}");
    }

    #[test]
    fn a_running_step_has_no_end_and_a_pending_cancel_is_said() {
        let run = json!({"id": "01JR", "workflow": "checkout", "status": "running", "cancel_requested": true,
            "created_at": "2026-12-01T10:00:00.000Z", "steps": [
                {"name": "reserve", "function": "reserve-stock", "status": "running", "invocation_id": "01JA",
                 "started_at": "2026-12-01T10:00:00.000Z"},
                {"name": "ship", "function": "create-shipment", "status": "pending"}]});
        let rendered = render_run(&run);
        assert!(rendered.contains("\ncancel_requested:  true\n"), "{rendered}");
        assert!(rendered.contains("\nreserve  reserve-stock    running  01JA        +0.000s\n"), "{rendered}");
        assert!(rendered.contains("\nship     create-shipment  pending\n"), "{rendered}");
        assert!(
            rendered.ends_with("\ncancel requested: the compensation starts when the running step's attempt ends\n")
        );
    }

    #[test]
    fn a_time_that_cannot_be_read_is_shown_as_sent() {
        assert_eq!(since(None, Some(&json!("yesterday"))), "yesterday");
        assert_eq!(
            since(time_of(Some(&json!("2026-12-01T10:00:00Z"))), Some(&json!("2026-12-01T10:01:02.5Z"))),
            "+62.500s"
        );
        assert_eq!(since(None, None), "");
    }

    #[test]
    fn a_list_of_runs_names_the_step_each_is_at() {
        let running = json!({"id": "01JB", "workflow": "checkout", "status": "running",
            "created_at": "2026-12-01T10:00:02.000Z", "steps": [
                {"name": "reserve", "status": "succeeded"}, {"name": "charge", "status": "running"}]});
        let rendered = render_runs(&[running, compensated_run()]).to_string();
        assert_eq!(
            rendered,
            "ID      WORKFLOW  STATUS       STEP    CREATED                   ERROR\n\
             01JB    checkout  running      charge  2026-12-01T10:00:02.000Z\n\
             01JRUN  checkout  compensated  ship    2026-12-01T10:00:00.000Z  HTTP 422: cannot ship\n"
        );
    }

    #[test]
    fn a_cancel_says_whether_it_compensated_or_waits_for_an_attempt() {
        let run = |status: &str| json!({"status": status, "cancel_requested": true});
        assert_eq!(cancel_message("01J", &run("compensated")), "cancelled 01J: compensated");
        assert!(cancel_message("01J", &run("compensating")).starts_with("cancelled 01J: compensating"));
        assert!(cancel_message("01J", &run("running")).starts_with("cancel requested for 01J: a step's attempt"));
    }

    fn runs(statuses: &[&str]) -> VecDeque<Value> {
        statuses.iter().map(|s| json!({"status": s})).collect()
    }

    /// The next run a look answers: the ones given in order, then the last again and again.
    fn next(runs: &mut VecDeque<Value>, looked: &Cell<usize>) -> std::future::Ready<Result<Value, ClientError>> {
        looked.set(looked.get() + 1);
        let run = if runs.len() > 1 { runs.pop_front() } else { runs.front().cloned() };
        std::future::ready(Ok(run.expect("a run")))
    }

    #[tokio::test(start_paused = true)]
    async fn wait_follows_a_run_through_compensating_to_its_end() {
        let (mut runs, looked) = (runs(&["running", "running", "compensating", "compensated"]), Cell::new(0));
        let begin = Instant::now();
        let followed = follow(|| next(&mut runs, &looked), Duration::from_secs(60)).await.unwrap();
        assert_eq!(followed, Followed::Ended(json!({"status": "compensated"})));
        assert_eq!(looked.get(), 4);
        assert_eq!(begin.elapsed(), Duration::from_millis(100 + 200 + 400), "looks back off from 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_ends_at_once_for_a_run_that_already_ended_and_treats_failed_as_ended() {
        let (mut runs, looked) = (runs(&["failed"]), Cell::new(0));
        let followed = follow(|| next(&mut runs, &looked), Duration::from_secs(1)).await.unwrap();
        assert_eq!(followed, Followed::Ended(json!({"status": "failed"})));
        assert_eq!(looked.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_after_the_timeout_with_the_last_look() {
        let (mut runs, looked) = (runs(&["running"]), Cell::new(0));
        let begin = Instant::now();
        let followed = follow(|| next(&mut runs, &looked), Duration::from_secs(3)).await.unwrap();
        assert_eq!(followed, Followed::StillGoing(json!({"status": "running"})));
        assert_eq!(begin.elapsed(), Duration::from_secs(3), "the last look is at the deadline");
        // 0, 0.1, 0.3, 0.7, 1.5, 2.5, 3.0: at most a second apart once backed off.
        assert_eq!(looked.get(), 7);
    }
}
