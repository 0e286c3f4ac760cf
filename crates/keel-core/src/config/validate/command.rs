//! Checks of where a function's attempts go: `url`, or `command` with its process and scaling
//! keys. Exactly one of `url` and `command`; the process keys only with `command`.

use std::path::PathBuf;

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::RawFunction;
use crate::config::{CommandConfig, FunctionTarget};

const MAX_INSTANCES_LIMIT: i64 = 1_000;
const MAX_INSTANCE_CONCURRENCY: i64 = 10_000;
const TARGET_HINT: &str = r#"set `url = "http://127.0.0.1:9001/charge"` for a function that already runs, or `command = ["./charge"]` for one Keel runs"#;

impl Checker {
    pub(super) fn target(&mut self, name: &str, raw: &RawFunction) -> Option<FunctionTarget> {
        match (&raw.url, &raw.command) {
            (Some(_), Some(_)) => {
                let message = format!("`url` and `command` are both set; a function has one of them: {TARGET_HINT}");
                self.report(key(&["functions", name, "command"]), Anchor::Key, message);
                None
            }
            (None, None) => {
                let message = format!("missing required key `url` or `command`: {TARGET_HINT}");
                self.report(key(&["functions", name]), Anchor::Key, message);
                None
            }
            (Some(url), None) => {
                self.reject_command_keys(name, raw);
                let url = self.http_url(key(&["functions", name, "url"]), url);
                Some(FunctionTarget::Url(url?))
            }
            (None, Some(command)) => {
                if raw.ca_file.is_some() {
                    let message = "only `url` functions take `ca_file`; Keel calls the instances of a `command` function over plain http on 127.0.0.1";
                    self.report(key(&["functions", name, "ca_file"]), Anchor::Key, message.to_owned());
                }
                self.command(name, command, raw).map(FunctionTarget::Command)
            }
        }
    }

    /// A process key on a `url` function is a mistake worth saying out loud, not a silent no-op.
    fn reject_command_keys(&mut self, name: &str, raw: &RawFunction) {
        let set = [
            ("env", raw.env.is_some()),
            ("cwd", raw.cwd.is_some()),
            ("min_instances", raw.min_instances.is_some()),
            ("max_instances", raw.max_instances.is_some()),
            ("instance_concurrency", raw.instance_concurrency.is_some()),
            ("idle_timeout", raw.idle_timeout.is_some()),
            ("startup_timeout", raw.startup_timeout.is_some()),
            ("health_path", raw.health_path.is_some()),
            ("path", raw.path.is_some()),
            ("sandbox", raw.sandbox.is_some()),
        ];
        for (field, _) in set.iter().filter(|(_, is_set)| *is_set) {
            let message = format!(
                "only `command` functions take `{field}`; a `url` function puts its path in the url and runs elsewhere"
            );
            self.report(key(&["functions", name, field]), Anchor::Key, message);
        }
    }

    fn command(&mut self, name: &str, command: &[String], raw: &RawFunction) -> Option<CommandConfig> {
        let at = |field: &str| key(&["functions", name, field]);
        if command.first().is_none_or(|program| program.trim().is_empty()) {
            let message = r#"must name a program and its arguments, like ["./target/release/charge", "--quiet"]"#;
            self.report(at("command"), Anchor::Value, message.to_owned());
        }
        let env = raw.env.clone().unwrap_or_default();
        for var in env.keys() {
            if CommandConfig::RESERVED_ENV.contains(&var.as_str()) {
                let message = format!("{var} is set by Keel for every instance and cannot be configured");
                self.report(key(&["functions", name, "env", var]), Anchor::Key, message);
            } else if var.is_empty() || var.contains(['=', '\0']) {
                let message = format!("{var:?} is not a valid environment variable name (no '=' or NUL, not empty)");
                self.report(key(&["functions", name, "env", var]), Anchor::Key, message);
            }
        }
        let default_max = CommandConfig::DEFAULT_MAX_INSTANCES;
        let max = self.count(at("max_instances"), raw.max_instances, default_max, 1, MAX_INSTANCES_LIMIT);
        let min = self.count(at("min_instances"), raw.min_instances, 0, 0, MAX_INSTANCES_LIMIT);
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                let message = format!("must not exceed max_instances ({max}) (got {min})");
                self.report(at("min_instances"), Anchor::Value, message);
            }
        }
        let per_instance = self.count(
            at("instance_concurrency"),
            raw.instance_concurrency,
            CommandConfig::DEFAULT_INSTANCE_CONCURRENCY,
            1,
            MAX_INSTANCE_CONCURRENCY,
        );
        let idle = self.positive_duration(at("idle_timeout"), &raw.idle_timeout, CommandConfig::DEFAULT_IDLE_TIMEOUT);
        let startup =
            self.positive_duration(at("startup_timeout"), &raw.startup_timeout, CommandConfig::DEFAULT_STARTUP_TIMEOUT);
        let health_path = raw.health_path.as_ref().map(|p| self.http_path(at("health_path"), p));
        let path = match &raw.path {
            Some(p) => self.http_path(at("path"), p),
            None => Some("/".to_owned()),
        };
        let sandbox = match &raw.sandbox {
            Some(raw) => self.sandbox(name, raw).map(|s| Some(Box::new(s))),
            None => Some(None),
        };
        let health_path = match health_path {
            Some(None) => return None,
            checked => checked.flatten(),
        };
        Some(CommandConfig {
            command: command.to_vec(),
            env,
            cwd: raw.cwd.as_ref().map(PathBuf::from),
            min_instances: min?,
            max_instances: max?,
            instance_concurrency: per_instance?,
            idle_timeout: idle?,
            startup_timeout: startup?,
            health_path,
            path: path?,
            sandbox: sandbox?,
        })
    }

    /// An integer key with a default and an inclusive range.
    pub(super) fn count(
        &mut self,
        path: Vec<String>,
        raw: Option<i64>,
        default: u32,
        min: i64,
        max: i64,
    ) -> Option<u32> {
        match raw {
            None => Some(default),
            Some(n) if (min..=max).contains(&n) => u32::try_from(n).ok(),
            Some(n) => {
                self.report(path, Anchor::Value, format!("must be between {min} and {max} (got {n})"));
                None
            }
        }
    }

    /// A request path (and query) on the instance: starts with `/`.
    fn http_path(&mut self, path: Vec<String>, text: &str) -> Option<String> {
        let valid = text.starts_with('/') && !text.contains(|c: char| c.is_whitespace() || c.is_control());
        if !valid {
            let message = format!(r#"expected a path starting with "/", like "/healthz" (got "{text}")"#);
            self.report(path, Anchor::Value, message);
            return None;
        }
        Some(text.to_owned())
    }
}
