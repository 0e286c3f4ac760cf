//! `[workflows.NAME]`: resolved into a definition, and each mistake reported at its file:line.

use super::*;
use crate::workflow::StepDef;

const FUNCTIONS: &str = "[functions.reserve-stock]\nurl = \"http://127.0.0.1:9001/\"\n\
[functions.release-stock]\nurl = \"http://127.0.0.1:9001/\"\n\
[functions.charge-card]\nurl = \"http://127.0.0.1:9001/\"\n[topics.orders]\n";

#[test]
fn a_workflow_is_resolved_with_its_steps_in_order() {
    let text = format!(
        r#"{FUNCTIONS}
[workflows.checkout]
steps = [
  {{ name = "reserve", function = "reserve-stock", compensate = "release-stock" }},
  {{ name = "charge", function = "charge-card" }},
]
notify_topic = "orders"
"#
    );
    let config = load_str("keel.toml", &text, &Overrides::default()).unwrap();
    let checkout = &config.workflows["checkout"];
    assert_eq!(
        checkout.definition.steps,
        [
            StepDef {
                name: "reserve".into(),
                function: "reserve-stock".into(),
                compensate: Some("release-stock".into())
            },
            StepDef { name: "charge".into(), function: "charge-card".into(), compensate: None },
        ]
    );
    assert_eq!(checkout.definition.notify_topic.as_deref(), Some("orders"));
}

#[test]
fn each_mistake_is_named_where_it_was_written() {
    let text = format!(
        r#"{FUNCTIONS}
[workflows.empty]
steps = []

[workflows.none]
notify_topic = "orders"

[workflows.bad]
steps = [
  {{ name = "reserve", function = "reserve-stock", compensate = "ghost-undo" }},
  {{ name = "reserve", function = "charge-card" }},
  {{ name = "ship", function = "ghost" }},
  {{ function = "charge-card" }},
  {{ name = "Bad/Name", function = "charge-card" }},
]
notify_topic = "nope"
"#
    );
    // A step inside the inline array is located at the array (`steps = [`): the locator does
    // not reach into inline tables; the dotted key names the step and member.
    assert_eq!(
        errors(&text),
        [
            r#"keel.toml:16:9: workflows.bad.steps.0.compensate: unknown function "ghost-undo" (configured: charge-card, release-stock, reserve-stock)"#,
            r#"keel.toml:16:9: workflows.bad.steps.1.name: duplicate step name "reserve": step names are unique in a workflow"#,
            r#"keel.toml:16:9: workflows.bad.steps.2.function: unknown function "ghost" (configured: charge-card, release-stock, reserve-stock)"#,
            "keel.toml:16:9: workflows.bad.steps.3: missing `name`: each step is named (its key is `{run_id}/{name}`)",
            r#"keel.toml:16:9: workflows.bad.steps.4.name: invalid step name "Bad/Name": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"#,
            r#"keel.toml:23:16: workflows.bad.notify_topic: unknown topic "nope": declare it with [topics."nope"] (declared: orders)"#,
            r#"keel.toml:10:9: workflows.empty.steps: a workflow needs at least one step: steps = [{ name = "reserve", function = "reserve-stock", compensate = "release-stock" }, …]"#,
            r#"keel.toml:12:12: workflows.none: a workflow needs at least one step: steps = [{ name = "reserve", function = "reserve-stock", compensate = "release-stock" }, …]"#,
        ]
    );
}
