//! Checks of `[workflows.NAME]`: a list of steps, each with a unique name and a declared
//! function (and compensation), and an optional declared `notify_topic`.

use std::collections::{BTreeMap, BTreeSet};

use super::function::is_valid_function_name;
use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::RawWorkflow;
use crate::config::{TopicConfig, WorkflowConfig};
use crate::workflow::{Definition, StepDef};

impl Checker {
    pub(super) fn workflows(
        &mut self,
        raw: &BTreeMap<String, RawWorkflow>,
        function_names: &BTreeSet<String>,
        topics: &BTreeMap<String, TopicConfig>,
    ) -> BTreeMap<String, WorkflowConfig> {
        let known = function_names.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
        let mut out = BTreeMap::new();
        for (name, workflow) in raw {
            let whole = key(&["workflows", name]);
            let mut ok = true;
            if !is_valid_function_name(name) {
                let message = format!(
                    r#"invalid workflow name "{name}": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"#
                );
                self.report(whole.clone(), Anchor::Key, message);
                ok = false;
            }
            let raw_steps = workflow.steps.as_deref().unwrap_or_default();
            if raw_steps.is_empty() {
                let message = r#"a workflow needs at least one step: steps = [{ name = "reserve", function = "reserve-stock", compensate = "release-stock" }, …]"#;
                let (path, anchor) = match workflow.steps {
                    Some(_) => (key(&["workflows", name, "steps"]), Anchor::Value),
                    None => (whole.clone(), Anchor::Key),
                };
                self.report(path, anchor, message.into());
                ok = false;
            }
            let mut steps = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, step) in raw_steps.iter().enumerate() {
                let index = i.to_string();
                let at = |field: &str| key(&["workflows", name, "steps", &index, field]);
                let unknown = |this: &mut Checker, field: &str, function: &str| {
                    let message = format!(r#"unknown function "{function}" (configured: {})"#, or_none(&known));
                    this.report(at(field), Anchor::Value, message);
                };
                let step_name = match &step.name {
                    None => {
                        let message = "missing `name`: each step is named (its key is `{run_id}/{name}`)".to_string();
                        self.report(key(&["workflows", name, "steps", &index]), Anchor::Value, message);
                        None
                    }
                    Some(step_name) if !is_valid_function_name(step_name) => {
                        let message = format!(
                            r#"invalid step name "{step_name}": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"#
                        );
                        self.report(at("name"), Anchor::Value, message);
                        None
                    }
                    Some(step_name) if !seen.insert(step_name.clone()) => {
                        let message =
                            format!(r#"duplicate step name "{step_name}": step names are unique in a workflow"#);
                        self.report(at("name"), Anchor::Value, message);
                        None
                    }
                    Some(step_name) => Some(step_name.clone()),
                };
                let function = match &step.function {
                    None => {
                        let message = "missing `function`: what the step invokes".to_string();
                        self.report(key(&["workflows", name, "steps", &index]), Anchor::Value, message);
                        None
                    }
                    Some(function) if !function_names.contains(function) => {
                        unknown(self, "function", function);
                        None
                    }
                    Some(function) => Some(function.clone()),
                };
                let compensate = match &step.compensate {
                    Some(function) if !function_names.contains(function) => {
                        unknown(self, "compensate", function);
                        ok = false;
                        None
                    }
                    other => other.clone(),
                };
                match (step_name, function) {
                    (Some(name), Some(function)) => steps.push(StepDef { name, function, compensate }),
                    _ => ok = false,
                }
            }
            if let Some(topic) = &workflow.notify_topic {
                if !topics.contains_key(topic) {
                    let declared = topics.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                    let message = format!(
                        r#"unknown topic "{topic}": declare it with [topics."{topic}"] (declared: {})"#,
                        or_none(&declared)
                    );
                    self.report(key(&["workflows", name, "notify_topic"]), Anchor::Value, message);
                    ok = false;
                }
            }
            if ok {
                let definition = Definition { steps, notify_topic: workflow.notify_topic.clone() };
                out.insert(name.clone(), WorkflowConfig { name: name.clone(), definition });
            }
        }
        out
    }
}

fn or_none(list: &str) -> &str {
    if list.is_empty() {
        "none"
    } else {
        list
    }
}
