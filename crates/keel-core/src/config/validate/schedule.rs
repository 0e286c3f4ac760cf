//! Checks of `[schedules.NAME]`: one of `cron` or `every`, a known time zone, one target (a
//! declared function or topic), a payload with a JSON form (a TOML date becomes its RFC 3339 string), and the `missed` policy.

use std::collections::{BTreeMap, BTreeSet};

use super::function::is_valid_function_name;
use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::RawSchedule;
use crate::config::{ScheduleConfig, ScheduleTarget, TopicConfig};
use crate::schedule::{Cadence, CadenceError, Missed};

impl Checker {
    pub(super) fn schedules(
        &mut self,
        raw: &BTreeMap<String, RawSchedule>,
        function_names: &BTreeSet<String>,
        topics: &BTreeMap<String, TopicConfig>,
    ) -> BTreeMap<String, ScheduleConfig> {
        let mut out = BTreeMap::new();
        for (name, schedule) in raw {
            let at = |field: &str| key(&["schedules", name, field]);
            let whole = key(&["schedules", name]);
            let mut ok = true;
            if !is_valid_function_name(name) {
                let message = format!(
                    r#"invalid schedule name "{name}": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"#
                );
                self.report(whole.clone(), Anchor::Key, message);
                ok = false;
            }
            let cadence = self.cadence(name, schedule);
            let target = match (&schedule.function, &schedule.topic) {
                (Some(function), None) if function_names.contains(function) => {
                    Some(ScheduleTarget::Function(function.clone()))
                }
                (Some(function), None) => {
                    let known: Vec<_> = function_names.iter().map(String::as_str).collect();
                    let message = format!(r#"unknown function "{function}" (configured: {})"#, list(&known));
                    self.report(at("function"), Anchor::Value, message);
                    None
                }
                (None, Some(topic)) if topics.contains_key(topic) => Some(ScheduleTarget::Topic(topic.clone())),
                (None, Some(topic)) => {
                    let known: Vec<_> = topics.keys().map(String::as_str).collect();
                    let message = format!(
                        r#"unknown topic "{topic}": declare it with [topics."{topic}"] (declared: {})"#,
                        list(&known)
                    );
                    self.report(at("topic"), Anchor::Value, message);
                    None
                }
                (Some(_), Some(_)) => {
                    let message = "set `function` or `topic`, not both".to_string();
                    self.report(at("topic"), Anchor::Key, message);
                    None
                }
                (None, None) => {
                    let message = "missing `function` or `topic`: what each tick invokes or publishes to".to_string();
                    self.report(whole.clone(), Anchor::Key, message);
                    None
                }
            };
            let payload = match &schedule.payload {
                None => Some(bytes::Bytes::from_static(b"{}")),
                Some(value) => match json_form(value) {
                    Ok(json) => Some(bytes::Bytes::from(json.to_string())),
                    Err(message) => {
                        self.report(at("payload"), Anchor::Value, message);
                        None
                    }
                },
            };
            let missed = match schedule.missed.as_deref() {
                None | Some("skip") => Some(Missed::Skip),
                Some("run_once") => Some(Missed::RunOnce),
                Some(other) => {
                    self.report(
                        at("missed"),
                        Anchor::Value,
                        format!(r#"must be "skip" or "run_once" (got "{other}")"#),
                    );
                    None
                }
            };
            if let (Some(cadence), Some(target), Some(payload), Some(missed), true) =
                (cadence, target, payload, missed, ok)
            {
                out.insert(name.clone(), ScheduleConfig { name: name.clone(), cadence, target, payload, missed });
            }
        }
        out
    }

    /// `cron` (+ `timezone`) or `every`, exactly one.
    fn cadence(&mut self, name: &str, schedule: &RawSchedule) -> Option<Cadence> {
        let at = |field: &str| key(&["schedules", name, field]);
        match (&schedule.cron, &schedule.every) {
            (Some(_), Some(_)) => {
                self.report(at("every"), Anchor::Key, "set `cron` or `every`, not both".into());
                None
            }
            (None, None) => {
                let message = r#"missing `cron` (like "0 3 * * *") or `every` (like "10m")"#.to_string();
                self.report(key(&["schedules", name]), Anchor::Key, message);
                None
            }
            (Some(pattern), None) => {
                // Both checked, so a bad pattern and a bad zone are reported together.
                let zone = schedule.timezone.as_deref().unwrap_or("UTC");
                let cadence = match Cadence::cron(pattern, zone) {
                    Ok(cadence) => Some(cadence),
                    Err(CadenceError::Pattern(why)) => {
                        self.report(at("cron"), Anchor::Value, format!(r#"invalid cron pattern "{pattern}": {why}"#));
                        None
                    }
                    Err(CadenceError::Zone(_)) => None,
                };
                if !crate::schedule::is_known_zone(zone) {
                    let message =
                        format!(r#"unknown time zone "{zone}": expected an IANA name like "Europe/Berlin" or "UTC""#);
                    self.report(at("timezone"), Anchor::Value, message);
                }
                cadence
            }
            (None, Some(every)) => {
                if schedule.timezone.is_some() {
                    let message = "`timezone` applies to `cron` only: `every` counts from the Unix epoch".to_string();
                    self.report(at("timezone"), Anchor::Key, message);
                }
                let hint = r#"expected a whole number of seconds, at least 1s, like "30s", "10m" or "1h""#;
                let period =
                    crate::duration::parse_duration(&every.0).ok().and_then(|d| i64::try_from(d.as_millis()).ok());
                match period.and_then(Cadence::every) {
                    Some(cadence) if schedule.timezone.is_none() => Some(cadence),
                    Some(_) => None,
                    None => {
                        self.report(at("every"), Anchor::Value, format!(r#"{hint} (got "{}")"#, every.0));
                        None
                    }
                }
            }
        }
    }
}

/// The JSON form of a TOML value, or why it has none (NaN and the infinities).
fn json_form(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(n) => J::from(*n),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} has no JSON form: use a finite number"))?,
        // Dates reach here as strings already (the layers pass them through serde); one that
        // did not is given the same RFC 3339 text.
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(items.iter().map(json_form).collect::<Result<_, _>>()?),
        toml::Value::Table(table) => J::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), json_form(v)?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()?,
        ),
    })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
