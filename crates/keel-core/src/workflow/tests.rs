//! The saga state machine on its own: which invocation starts after each end, with what payload.

use serde_json::json;

use super::*;

fn checkout() -> Definition {
    let step = |name: &str, function: &str, compensate: Option<&str>| StepDef {
        name: name.into(),
        function: function.into(),
        compensate: compensate.map(Into::into),
    };
    Definition {
        steps: vec![
            step("reserve", "reserve-stock", Some("release-stock")),
            step("notify", "send-mail", None),
            step("charge", "charge-card", Some("refund-card")),
            step("ship", "create-shipment", None),
        ],
        notify_topic: None,
    }
}

/// Ids `i1`, `i2`, … in the order decisions ask for them.
fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("i{n}")
    }
}

fn start(input: Value) -> (Run, StepStart, impl FnMut() -> String) {
    let mut new_id = ids();
    let (run, first) = Run::new("R".into(), "checkout", checkout(), input, None, None, 1_000, &mut new_id);
    (run, first, new_id)
}

fn forward(step: &str) -> StepRef {
    StepRef { run: "R".into(), step: step.into(), compensate: false }
}

fn compensation(step: &str) -> StepRef {
    StepRef { run: "R".into(), step: step.into(), compensate: true }
}

#[test]
fn each_step_starts_after_the_previous_succeeded_with_the_outputs_so_far() {
    let (mut run, first, mut new_id) = start(json!({"sku": "A1"}));
    assert_eq!(first.function, "reserve-stock");
    assert_eq!(first.payload, json!({"sku": "A1"}), "the first step gets the run's input");
    assert_eq!(first.step.key(), "R/reserve");
    assert_eq!(run.steps[0].status, StepStatus::Running);
    assert_eq!(run.steps[0].invocation_id.as_deref(), Some("i1"));

    let next = run.step_ended(&forward("reserve"), StepEnd::Succeeded(json!({"hold": 7})), 2_000, &mut new_id);
    let notify = next.start.unwrap();
    assert_eq!((notify.function.as_str(), notify.invocation_id.as_str()), ("send-mail", "i2"));
    assert_eq!(notify.payload, json!({"input": {"sku": "A1"}, "steps": {"reserve": {"hold": 7}}}));
    assert_eq!(run.version, 1);

    run.step_ended(&forward("notify"), StepEnd::Succeeded(Value::Null), 3_000, &mut new_id);
    run.step_ended(&forward("charge"), StepEnd::Succeeded(json!("ch_1")), 4_000, &mut new_id);
    let last = run.step_ended(&forward("ship"), StepEnd::Succeeded(json!({"tracking": "Z"})), 5_000, &mut new_id);
    assert_eq!(last, Advance { start: None, ended: Some(RunStatus::Succeeded), changed: true });
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.ended_at, Some(5_000));
    assert_eq!(run.version, 4);
    assert!(run.steps.iter().all(|s| s.status == StepStatus::Succeeded));
}

#[test]
fn a_dead_step_compensates_the_completed_steps_in_reverse_skipping_those_without_compensation() {
    let (mut run, _, mut new_id) = start(json!({"sku": "A1"}));
    run.step_ended(&forward("reserve"), StepEnd::Succeeded(json!({"hold": 7})), 2_000, &mut new_id);
    run.step_ended(&forward("notify"), StepEnd::Succeeded(json!("sent")), 3_000, &mut new_id);
    run.step_ended(&forward("charge"), StepEnd::Succeeded(json!("ch_1")), 4_000, &mut new_id);
    let refund = run.step_ended(&forward("ship"), StepEnd::Failed("HTTP 500".into()), 5_000, &mut new_id);
    let refund = refund.start.unwrap();
    assert_eq!(refund.function, "refund-card");
    assert_eq!(refund.step.key(), "R/charge/compensate");
    let payload = json!({
        "input": {"sku": "A1"},
        "steps": {"reserve": {"hold": 7}, "notify": "sent", "charge": "ch_1"},
        "failed_step": "ship",
        "error": "HTTP 500",
    });
    assert_eq!(refund.payload, payload);
    assert_eq!(run.status, RunStatus::Compensating);
    assert_eq!(run.steps[3].status, StepStatus::Failed);
    assert_eq!(run.steps[2].status, StepStatus::Compensating);

    // `notify` has no compensation: `reserve`'s comes next.
    let release = run.step_ended(&compensation("charge"), StepEnd::Succeeded(Value::Null), 6_000, &mut new_id);
    let release = release.start.unwrap();
    assert_eq!((release.function.as_str(), release.step.key().as_str()), ("release-stock", "R/reserve/compensate"));
    let done = run.step_ended(&compensation("reserve"), StepEnd::Succeeded(Value::Null), 7_000, &mut new_id);
    assert_eq!(done.ended, Some(RunStatus::Compensated));
    assert_eq!(run.status, RunStatus::Compensated);
    let statuses: Vec<_> = run.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Compensated, StepStatus::Succeeded, StepStatus::Compensated, StepStatus::Failed]);
    assert_eq!((run.failed_step.as_deref(), run.error.as_deref()), (Some("ship"), Some("HTTP 500")));
}

#[test]
fn a_dead_first_step_leaves_nothing_to_undo() {
    let (mut run, _, mut new_id) = start(json!(1));
    let end = run.step_ended(&forward("reserve"), StepEnd::Failed("out of stock".into()), 2_000, &mut new_id);
    assert_eq!(end, Advance { start: None, ended: Some(RunStatus::Compensated), changed: true });
}

#[test]
fn a_dead_compensation_fails_the_run_and_its_redrive_resumes_where_it_stopped() {
    let (mut run, _, mut new_id) = start(json!(1));
    run.step_ended(&forward("reserve"), StepEnd::Succeeded(json!(1)), 2_000, &mut new_id);
    run.step_ended(&forward("notify"), StepEnd::Succeeded(json!(2)), 3_000, &mut new_id);
    run.step_ended(&forward("charge"), StepEnd::Succeeded(json!(3)), 4_000, &mut new_id);
    run.step_ended(&forward("ship"), StepEnd::Failed("no courier".into()), 5_000, &mut new_id);
    let failed = run.step_ended(&compensation("charge"), StepEnd::Failed("refund refused".into()), 6_000, &mut new_id);
    assert_eq!(failed, Advance { start: None, ended: Some(RunStatus::Failed), changed: true });
    assert_eq!(run.steps[2].status, StepStatus::CompensationFailed);
    assert_eq!(run.steps[2].error.as_deref(), Some("refund refused"));

    // Redriven from the DLQ, the same compensation invocation succeeds.
    let resumed = run.step_ended(&compensation("charge"), StepEnd::Succeeded(Value::Null), 9_000, &mut new_id);
    assert_eq!(resumed.start.unwrap().step.key(), "R/reserve/compensate");
    assert_eq!((run.status, run.ended_at), (RunStatus::Compensating, None));
    let done = run.step_ended(&compensation("reserve"), StepEnd::Succeeded(Value::Null), 9_500, &mut new_id);
    assert_eq!(done.ended, Some(RunStatus::Compensated));
}

#[test]
fn an_end_the_run_has_moved_past_changes_nothing() {
    let (mut run, _, mut new_id) = start(json!(1));
    run.step_ended(&forward("reserve"), StepEnd::Failed("x".into()), 2_000, &mut new_id);
    let before = run.clone();
    // The dead step, redriven, succeeds later; a second end of it; an unknown step; another run.
    for (step, end) in [
        (forward("reserve"), StepEnd::Succeeded(json!(1))),
        (forward("reserve"), StepEnd::Failed("y".into())),
        (forward("nope"), StepEnd::Succeeded(json!(1))),
        (StepRef { run: "other".into(), step: "reserve".into(), compensate: false }, StepEnd::Succeeded(json!(1))),
        (compensation("charge"), StepEnd::Succeeded(json!(1))),
    ] {
        assert_eq!(run.step_ended(&step, end, 3_000, &mut new_id), Advance::default());
    }
    assert_eq!(run, before);
}

#[test]
fn cancelling_between_attempts_compensates_at_once() {
    let (mut run, _, mut new_id) = start(json!(1));
    run.step_ended(&forward("reserve"), StepEnd::Succeeded(json!(1)), 2_000, &mut new_id);
    let Cancel::Now { invocation_id, advance } = run.cancel(false, 2_500, &mut new_id).unwrap() else {
        panic!("the step was not running an attempt")
    };
    assert_eq!(invocation_id, "i2", "the notify step's invocation is cancelled");
    assert_eq!(advance.start.unwrap().step.key(), "R/reserve/compensate");
    assert_eq!(run.steps[1].status, StepStatus::Cancelled);
    assert_eq!((run.failed_step.as_deref(), run.error.as_deref()), (Some("notify"), Some(CANCELLED)));
    assert_eq!(run.cancel(false, 2_600, &mut new_id), Err(NotCancellable(RunStatus::Compensating)));
}

#[test]
fn cancelling_during_an_attempt_compensates_when_the_step_ends_including_that_step() {
    let (mut run, _, mut new_id) = start(json!(1));
    assert_eq!(run.cancel(true, 1_500, &mut new_id), Ok(Cancel::AfterAttempt));
    assert!(run.cancel_requested);
    assert_eq!(run.version, 1);
    let end = run.step_ended(&forward("reserve"), StepEnd::Succeeded(json!({"hold": 1})), 2_000, &mut new_id);
    assert_eq!(end.start.unwrap().step.key(), "R/reserve/compensate", "the step that succeeded is undone");
    let done = run.step_ended(&compensation("reserve"), StepEnd::Succeeded(Value::Null), 3_000, &mut new_id);
    assert_eq!(done.ended, Some(RunStatus::Compensated));
}

#[test]
fn only_a_running_run_can_be_cancelled() {
    let (mut run, _, mut new_id) = start(json!(1));
    run.step_ended(&forward("reserve"), StepEnd::Failed("x".into()), 2_000, &mut new_id);
    let refused = run.cancel(false, 3_000, &mut new_id).unwrap_err();
    assert_eq!(refused.to_string(), "the run is compensated: only a running run can be cancelled");
}

#[test]
fn step_keys_read_back() {
    for key in ["01J/reserve", "01J/charge/compensate", "01J/compensate", "01J/compensate/compensate"] {
        assert_eq!(StepRef::parse(key).unwrap().key(), key);
    }
    assert!(StepRef::parse("01J/charge/compensate").unwrap().compensate);
    assert!(!StepRef::parse("01J/compensate").unwrap().compensate, "a step named `compensate`");
    for bad in ["", "01J", "/x", "01J/", "01J/a/b"] {
        assert_eq!(StepRef::parse(bad), None, "{bad}");
    }
}

#[test]
fn outputs_are_json_when_they_can_be() {
    assert_eq!(output_of(br#"{"a":1}"#), json!({"a": 1}));
    assert_eq!(output_of(b"plain text"), json!("plain text"));
    assert_eq!(output_of(b""), Value::Null);
}
