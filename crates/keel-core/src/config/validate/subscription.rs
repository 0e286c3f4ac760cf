//! Checks of `[topics.NAME]` and `[[subscriptions]]`: names, references to declared topics and
//! functions, filters, per-subscription retry overrides and ordering.

use std::collections::{BTreeMap, BTreeSet};

use super::function::is_valid_function_name;
use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawSubscription, RawTopic};
use crate::config::{FunctionConfig, OrderedBy, SubscriptionConfig, SubscriptionScope, TopicConfig};
use crate::system_events::SYSTEM_TOPIC;

const NAME_HINT: &str = "expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit";

impl Checker {
    pub(super) fn topics(&mut self, raw: &BTreeMap<String, RawTopic>) -> BTreeMap<String, TopicConfig> {
        let mut topics = BTreeMap::new();
        for (name, topic) in raw {
            if !is_valid_function_name(name) {
                let message = format!(r#"invalid topic name "{name}": {NAME_HINT}, like "user.registered""#);
                self.report(key(&["topics", name]), Anchor::Key, message);
            } else if name == SYSTEM_TOPIC {
                let message = format!(
                    r#"topic "{SYSTEM_TOPIC}" is reserved for Keel's own events: subscribe to it without declaring it"#
                );
                self.report(key(&["topics", name]), Anchor::Key, message);
            }
            let schema =
                topic.schema.as_deref().and_then(|text| self.json_schema(key(&["topics", name, "schema"]), text));
            topics.insert(name.clone(), TopicConfig { schema });
        }
        topics
    }

    pub(super) fn subscriptions(
        &mut self,
        raw: &[RawSubscription],
        topics: &BTreeMap<String, TopicConfig>,
        functions: &BTreeMap<String, FunctionConfig>,
        function_names: &BTreeSet<String>,
    ) -> Vec<SubscriptionConfig> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, sub) in raw.iter().enumerate() {
            let index = format!("[{i}]");
            let at = |field: &str| key(&["subscriptions", &index, field]);
            let whole = key(&["subscriptions", &index]);
            let mut ok = true;
            let required = |field: &str, value: &Option<String>, me: &mut Self| -> Option<String> {
                if value.is_none() {
                    me.report(whole.clone(), Anchor::Value, format!("missing `{field}`"));
                }
                value.clone()
            };
            let name = required("name", &sub.name, self);
            let topic = required("topic", &sub.topic, self);
            let function = required("function", &sub.function, self);
            if let Some(name) = &name {
                if !is_valid_function_name(name) {
                    self.report(
                        at("name"),
                        Anchor::Value,
                        format!(r#"invalid subscription name "{name}": {NAME_HINT}"#),
                    );
                    ok = false;
                } else if !seen.insert(name.clone()) {
                    self.report(at("name"), Anchor::Value, format!(r#"duplicate subscription name "{name}""#));
                    ok = false;
                }
            }
            // Keel's own topic needs no declaration.
            if let Some(topic) = topic.as_ref().filter(|t| !topics.contains_key(*t) && *t != SYSTEM_TOPIC) {
                let known: Vec<_> = topics.keys().map(String::as_str).collect();
                let message = format!(
                    r#"unknown topic "{topic}": declare it with [topics."{topic}"] (declared: {})"#,
                    list(&known)
                );
                self.report(at("topic"), Anchor::Value, message);
                ok = false;
            }
            if let Some(function) = function.as_ref().filter(|f| !function_names.contains(*f)) {
                let known: Vec<_> = function_names.iter().map(String::as_str).collect();
                let message = format!(r#"unknown function "{function}" (configured: {})"#, list(&known));
                self.report(at("function"), Anchor::Value, message);
                ok = false;
            }
            let ordered_by = match sub.ordered_by.as_deref() {
                None => None,
                Some("subject") => Some(OrderedBy::Subject),
                Some(other) => {
                    self.report(at("ordered_by"), Anchor::Value, format!(r#"must be "subject" (got "{other}")"#));
                    ok = false;
                    None
                }
            };
            let scope = match sub.scope.as_deref() {
                None | Some("local") => SubscriptionScope::Local,
                Some("global") => SubscriptionScope::Global,
                Some(other) => {
                    self.report(at("scope"), Anchor::Value, format!(r#"expected "local" or "global" (got "{other}")"#));
                    ok = false;
                    SubscriptionScope::Local
                }
            };
            // A subscription's retry overrides its function's policy, key by key.
            let base = function.as_ref().and_then(|f| functions.get(f)).map(|f| f.retry.clone()).unwrap_or_default();
            let retry = match &sub.retry {
                Some(raw) => self.retry(&whole, raw, base),
                None => Some(base),
            };
            if let (Some(name), Some(topic), Some(function), Some(retry), true) = (name, topic, function, retry, ok) {
                out.push(SubscriptionConfig {
                    name,
                    topic,
                    function,
                    filter: sub.filter.clone().unwrap_or_default(),
                    retry,
                    ordered_by,
                    scope,
                });
            }
        }
        out
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
