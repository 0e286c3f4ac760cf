//! End-to-end tests of [`load_str`]: each check, with the exact message and location a user sees.

use std::time::Duration;

use super::*;
use crate::retry::{Jitter, RetryPolicy};

fn errors_with(text: &str, overrides: &Overrides) -> Vec<String> {
    match load_str("keel.toml", text, overrides) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn errors(text: &str) -> Vec<String> {
    errors_with(text, &Overrides::default())
}

fn env(pairs: &[(&str, &str)]) -> Overrides {
    let env = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Overrides { env, ..Overrides::default() }
}

const CHARGE: &str = "[functions.charge]\nurl = \"http://127.0.0.1:9001/charge\"\n";

#[test]
fn an_empty_file_gives_the_defaults() {
    let config = load_str("keel.toml", "", &Overrides::default()).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:7733".parse().unwrap());
    assert_eq!(config.server.body_limit, 1_048_576);
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.server.max_result_bytes, 6 * 1_048_576);
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.header_timeout, Duration::from_secs(10));
    assert_eq!(config.server.body_timeout, Duration::from_secs(30));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_inflight_requests, 10_000);
    assert_eq!(config.storage.url, "sqlite://.keel/keel.db");
    assert_eq!(config.storage.sqlite_path(), Some(".keel/keel.db"));
    assert!(config.storage.fsync);
    assert!(config.functions.is_empty());
}

#[test]
fn a_full_file_is_resolved() {
    let text = r#"
[server]
listen = "0.0.0.0:8080"
body_limit = "512KiB"
shutdown_grace = "5s"
max_result_bytes = 2000

[storage]
url = "postgres://keel@db:5432/keel"
fsync = false

[auth]
mode = "keys"

[functions.charge]
url = "https://pay.example/charge"
timeout = "10s"
sync_timeout = "250ms"
concurrency = 8
retry = { max_attempts = 3, initial = "1s", jitter = "equal" }
"#;
    let config = load_str("keel.toml", text, &Overrides::default()).unwrap();
    assert_eq!(config.server.body_limit, 512 * 1024);
    assert_eq!(config.server.max_result_bytes, 2000);
    assert_eq!(config.storage.sqlite_path(), None);
    let charge = &config.functions["charge"];
    assert_eq!(charge.name, "charge");
    assert_eq!(charge.url().unwrap().as_str(), "https://pay.example/charge");
    assert_eq!((charge.timeout, charge.sync_timeout), (Duration::from_secs(10), Duration::from_millis(250)));
    assert_eq!(charge.concurrency, 8);
    assert_eq!(charge.retry.max_attempts, 3);
    assert_eq!(charge.retry.initial, Duration::from_secs(1));
    assert_eq!(charge.retry.max, Duration::from_secs(60));
    assert_eq!(charge.retry.jitter, Jitter::Equal);
}

#[test]
fn function_defaults_apply() {
    let config = load_str("keel.toml", CHARGE, &Overrides::default()).unwrap();
    let charge = &config.functions["charge"];
    assert_eq!((charge.timeout, charge.sync_timeout), (Duration::from_secs(30), Duration::from_secs(30)));
    assert_eq!(charge.concurrency, 64);
    assert_eq!(charge.retry, RetryPolicy::default());
    assert_eq!(charge.flow, crate::flow::FlowConfig::unlimited(64));
    assert_eq!(charge.flow.max_waiting, 256, "4 × concurrency");
}

#[test]
fn unknown_keys_list_the_valid_ones() {
    assert_eq!(
        errors("[server]\nlisten = \"127.0.0.1:1\"\nport = 80\n"),
        ["keel.toml:3:1: server.port: unknown key `port`, expected one of `listen`, `body_limit`, \
          `shutdown_grace`, `max_result_bytes`, `max_event_hops`, `max_connections`, `header_timeout`, \
          `body_timeout`, `idle_timeout`, `max_inflight_requests`, `tls`, `firewall`, `throttle`, `system_events`, `limits`"]
    );
    assert_eq!(
        errors("[queues.a]\n"),
        ["keel.toml:1:2: queues: unknown key `queues`, expected one of `server`, `storage`, `functions`, \
          `topics`, `subscriptions`, `dependencies`, `auth`, `schedules`, `workflows`, `chaos`, `region`, `kv`"]
    );
}

#[test]
fn every_semantic_error_is_reported_with_its_line_and_column() {
    let text = "\
[functions.charge]
url = \"http://127.0.0.1:9001/charge\"
timeout = \"0s\"
sync_timeout = \"soon\"
concurrency = 0

[functions.charge.retry]
max_attempts = 0
initial = \"2m\"
multiplier = 0.5
jitter = \"fast\"
";
    assert_eq!(
        errors(text),
        [
            r#"keel.toml:3:11: functions.charge.timeout: must be greater than 0, like "30s" (got "0s")"#,
            r#"keel.toml:4:16: functions.charge.sync_timeout: expected a duration like "250ms", "30s", "5m" (got "soon")"#,
            "keel.toml:5:15: functions.charge.concurrency: must be between 1 and 10000 (got 0)",
            "keel.toml:8:16: functions.charge.retry.max_attempts: must be at least 1 (got 0)",
            "keel.toml:9:11: functions.charge.retry.initial: must not exceed retry.max (1m) (got 2m)",
            "keel.toml:10:14: functions.charge.retry.multiplier: must be a finite number of at least 1.0 (got 0.5)",
            r#"keel.toml:11:10: functions.charge.retry.jitter: must be one of "full", "equal", "decorrelated", "none" (got "fast")"#,
        ]
    );
}

#[test]
fn a_max_below_the_default_initial_is_blamed_on_max() {
    let text = format!("{CHARGE}retry = {{ max = \"100ms\", multiplier = inf }}\n");
    assert_eq!(
        errors(&text),
        [
            "keel.toml:3:17: functions.charge.retry.max: must be at least retry.initial (500ms) (got 100ms)",
            "keel.toml:3:39: functions.charge.retry.multiplier: must be a finite number of at least 1.0 (got inf)",
        ]
    );
}

#[test]
fn function_urls_must_be_http_or_https() {
    let text = "[functions.a]\nurl = \"ftp://x/y\"\n[functions.b]\nurl = \"not a url\"\n";
    assert_eq!(
        errors(text),
        [
            r#"keel.toml:2:7: functions.a.url: unsupported scheme "ftp"; expected an http:// or https:// URL like "http://127.0.0.1:9001/charge""#,
            r#"keel.toml:4:7: functions.b.url: not a valid URL (relative URL without a base); expected an http:// or https:// URL like "http://127.0.0.1:9001/charge" (got "not a url")"#,
        ]
    );
}

#[test]
fn function_names_are_checked_at_their_header() {
    let text = "[functions.Charge]\nurl = \"http://x\"\n[functions.-x]\nurl = \"http://x\"\n";
    let hint = r#"expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit, like "charge-card""#;
    assert_eq!(
        errors(text),
        [
            format!(r#"keel.toml:3:12: functions.-x: invalid function name "-x": {hint}"#),
            format!(r#"keel.toml:1:12: functions.Charge: invalid function name "Charge": {hint}"#),
        ]
    );
}

#[test]
fn durations_take_only_the_documented_forms() {
    let text = "[server]\nshutdown_grace = \"5 secs\"\n[functions.a]\nurl = \"http://x\"\ntimeout = \"400d\"\n\
                idempotency_ttl = \"2h 30m\"\n";
    assert_eq!(
        errors(text),
        [
            r#"keel.toml:2:18: server.shutdown_grace: expected a duration like "250ms", "30s", "5m" (got "5 secs")"#,
            r#"keel.toml:5:11: functions.a.timeout: expected a duration like "250ms", "30s", "5m" (got "400d")"#,
        ]
    );
}

#[test]
fn server_values_are_checked() {
    let text =
        "[server]\nlisten = \"localhost\"\nbody_limit = \"1 parsec\"\nshutdown_grace = \"\"\nmax_result_bytes = 0\n";
    let size_hint = r#"expected a byte size like 1048576, "512KiB", "1MiB", "2MB" (units B, KB, MB, GB, KiB, MiB, GiB), at least 1 byte"#;
    assert_eq!(
        errors(text),
        [
            r#"keel.toml:2:10: server.listen: expected an IP address and port like "127.0.0.1:7733" or "[::1]:7733" (got "localhost")"#.to_owned(),
            format!(r#"keel.toml:3:14: server.body_limit: {size_hint} (got "1 parsec")"#),
            r#"keel.toml:4:18: server.shutdown_grace: expected a duration like "250ms", "30s", "5m" (got "")"#.to_owned(),
            format!("keel.toml:5:20: server.max_result_bytes: {size_hint} (got 0)"),
        ]
    );
}

#[test]
fn connection_limits_are_checked() {
    let text =
        "[server]\nmax_connections = 0\nheader_timeout = \"0s\"\nbody_timeout = \"soon\"\nidle_timeout = \"5s\"\n";
    assert_eq!(
        errors(text),
        [
            "keel.toml:2:19: server.max_connections: must be between 1 and 1000000 (got 0)",
            r#"keel.toml:3:18: server.header_timeout: must be greater than 0, like "30s" (got "0s")"#,
            r#"keel.toml:4:16: server.body_timeout: expected a duration like "250ms", "30s", "5m" (got "soon")"#,
        ]
    );
    let config =
        load_str("keel.toml", "[server]\nmax_connections = 3\nidle_timeout = \"5s\"\n", &Overrides::default()).unwrap();
    assert_eq!((config.server.max_connections, config.server.idle_timeout), (3, Duration::from_secs(5)));
}

#[test]
fn request_limits_have_defaults_and_are_checked_where_written() {
    let defaults = load_str("keel.toml", "", &Overrides::default()).unwrap().server.limits;
    assert_eq!(defaults, crate::limits::LimitsConfig::default());
    assert_eq!((defaults.max_url_bytes, defaults.max_header_bytes, defaults.max_json_depth), (8192, 32768, 64));
    let text = "[server.limits]\nmax_url_bytes = \"16KiB\"\nmax_headers = 20\nmax_json_depth = 10\n\
                idempotency_keys_per_minute = 5\n";
    let set = load_str("keel.toml", text, &Overrides::default()).unwrap().server.limits;
    assert_eq!(
        (set.max_url_bytes, set.max_headers, set.max_json_depth, set.idempotency_keys_per_minute),
        (16 * 1024, 20, 10, 5)
    );
    let text =
        "[server.limits]\nmax_header_bytes = 100\nmax_json_depth = 200\nmax_headers = 0\nmax_url_bytes = \"a lot\"\n";
    assert_eq!(
        errors(text),
        [
            r#"keel.toml:5:17: server.limits.max_url_bytes: expected a byte size like 1048576, "512KiB", "1MiB", "2MB" (units B, KB, MB, GB, KiB, MiB, GiB), at least 1 byte (got "a lot")"#,
            "keel.toml:2:20: server.limits.max_header_bytes: must be between 8192 bytes and 1MiB (got 100 bytes)",
            "keel.toml:4:15: server.limits.max_headers: must be between 1 and 10000 (got 0)",
            "keel.toml:3:18: server.limits.max_json_depth: must be between 1 and 127 (got 200)",
        ]
    );
}

/// TOML nested past its parser's own recursion limit is a syntax error at a line, not a crash.
#[test]
fn a_config_nested_too_deep_is_an_error_at_its_line() {
    let text = format!("[server]\nlisten = \"127.0.0.1:1\"\nx = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let shown = errors(&text);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("keel.toml:3:"), "{shown:?}");
}

#[test]
fn storage_urls_are_checked() {
    let ok = |url: &str| load_str("k", &format!("[storage]\nurl = {url:?}\n"), &Overrides::default());
    assert_eq!(ok("sqlite::memory:").unwrap().storage.sqlite_path(), Some(":memory:"));
    assert_eq!(ok("sqlite:///var/keel.db").unwrap().storage.sqlite_path(), Some("/var/keel.db"));
    assert!(ok("postgresql://u@h/db").is_ok());
    let expected = r#"expected "sqlite://PATH", "sqlite::memory:" or "postgres://USER@HOST/DB""#;
    assert_eq!(
        errors("[storage]\nurl = \"mysql://h/db\"\n"),
        [format!(r#"keel.toml:2:7: storage.url: unknown database scheme; {expected} (got "mysql://h/db")"#)]
    );
    assert_eq!(
        errors("[storage]\nurl = \"sqlite://\"\n"),
        [format!(r#"keel.toml:2:7: storage.url: missing the database path; {expected} (got "sqlite://")"#)]
    );
}

#[test]
fn a_type_error_names_its_key_and_position() {
    assert_eq!(
        errors(&format!("{CHARGE}\nconcurrency = \"lots\"\n")),
        [r#"keel.toml:4:15: functions.charge.concurrency: invalid type: string "lots", expected an integer"#]
    );
}

#[test]
fn type_errors_say_what_to_write() {
    let shown: Vec<String> = ["server = 5", "functions = 5", "[functions.a]\nretry.multiplier = \"x\""]
        .iter()
        .flat_map(|text| errors(text))
        .collect();
    assert_eq!(
        shown,
        [
            "keel.toml:1:10: server: invalid type: integer `5`, expected a table",
            "keel.toml:1:13: functions: invalid type: integer `5`, expected a table",
            r#"keel.toml:2:20: functions.a.retry.multiplier: invalid type: string "x", expected a number"#,
        ]
    );
}

#[test]
fn toml_syntax_errors_have_a_position() {
    assert_eq!(
        errors("[server]\nlisten = \n"),
        ["keel.toml:2:10: invalid TOML: string values must be quoted, expected literal string"]
    );
}

#[test]
fn a_duplicate_function_table_is_reported_at_the_second_header() {
    let text = format!("{CHARGE}\n{CHARGE}");
    assert_eq!(errors(&text), ["keel.toml:4:12: duplicate key: each key and each [table] may be defined only once"]);
}

#[test]
fn env_overrides_the_file_and_flags_override_env() {
    let text = "[server]\nlisten = \"127.0.0.1:1\"\nbody_limit = 10\n[auth]\nmode = \"keys\"\n";
    let mut overrides = env(&[("KEEL_SERVER__LISTEN", "0.0.0.0:2"), ("KEEL_SERVER__BODY_LIMIT", "2MB")]);
    let config = load_str("keel.toml", text, &overrides).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:2".parse().unwrap());
    assert_eq!(config.server.body_limit, 2_000_000);

    overrides.flags.push(("server.listen".into(), "--listen".into(), "0.0.0.0:3".into()));
    let config = load_str("keel.toml", text, &overrides).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:3".parse().unwrap());
}

#[test]
fn an_invalid_override_names_the_variable_or_flag() {
    let text = format!("[server]\nlisten = \"127.0.0.1:1\"\n{CHARGE}");
    let mut overrides = env(&[
        ("KEEL_SERVER__LISTEN", "nowhere"),
        ("KEEL_FUNCTIONS__CHARGE__RETRY", "{ max_attempts = 0 }"),
        ("KEEL_FUNCTIONS__NEW__TIMEOUT", "1s"),
    ]);
    overrides.flags.push(("server.shutdown_grace".into(), "--grace".into(), "forever".into()));
    assert_eq!(
        errors_with(&text, &overrides),
        [
            r#"env KEEL_SERVER__LISTEN: server.listen: expected an IP address and port like "127.0.0.1:7733" or "[::1]:7733" (got "nowhere")"#,
            r#"flag --grace: server.shutdown_grace: expected a duration like "250ms", "30s", "5m" (got "forever")"#,
            "env KEEL_FUNCTIONS__CHARGE__RETRY: functions.charge.retry.max_attempts: must be at least 1 (got 0)",
            r#"env KEEL_FUNCTIONS__NEW__TIMEOUT: functions.new: missing required key `url` or `command`: set `url = "http://127.0.0.1:9001/charge"` for a function that already runs, or `command = ["./charge"]` for one Keel runs"#,
        ]
    );
}

#[test]
fn an_unknown_key_from_env_names_the_variable() {
    assert_eq!(
        errors_with("", &env(&[("KEEL_SERVER__LISTN", "x")])),
        ["env KEEL_SERVER__LISTN: server.listn: unknown key `listn`, expected one of `listen`, \
          `body_limit`, `shutdown_grace`, `max_result_bytes`, `max_event_hops`, `max_connections`, `header_timeout`, \
          `body_timeout`, `idle_timeout`, `max_inflight_requests`, `tls`, `firewall`, `throttle`, `system_events`, `limits`"]
    );
}

#[test]
fn a_missing_file_is_named() {
    let path = Path::new("/nonexistent/keel.toml");
    let shown = load(Some(path), &Overrides::default()).unwrap_err().to_string();
    assert!(shown.starts_with("/nonexistent/keel.toml: cannot read the config file: "), "{shown}");
    assert!(load(None, &Overrides::default()).is_ok());
}

#[test]
fn errors_display_one_per_line() {
    let shown = load_str("keel.toml", "[server]\nlisten = \"x\"\nbody_limit = 0\n", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert_eq!(shown.lines().count(), 2);
}

const WORKER: &str = "[functions.worker]\ncommand = [\"./worker\", \"--quiet\"]\n";

#[test]
fn a_command_function_gets_the_scaling_defaults() {
    let config = load_str("keel.toml", WORKER, &Overrides::default()).unwrap();
    let worker = &config.functions["worker"];
    assert!(worker.url().is_none());
    let command = worker.command().unwrap();
    assert_eq!(command.command, ["./worker", "--quiet"]);
    assert!(command.env.is_empty() && command.cwd.is_none() && command.health_path.is_none());
    assert_eq!((command.min_instances, command.max_instances, command.instance_concurrency), (0, 4, 16));
    assert_eq!((command.idle_timeout, command.startup_timeout), (Duration::from_secs(60), Duration::from_secs(10)));
    assert_eq!(command.path, "/");
}

#[test]
fn a_command_function_is_resolved_whole() {
    let text = format!(
        "{WORKER}env = {{ MODE = \"fast\" }}\ncwd = \"/srv\"\nmin_instances = 1\nmax_instances = 3\n\
         instance_concurrency = 1\nidle_timeout = \"2s\"\nstartup_timeout = \"500ms\"\n\
         health_path = \"/healthz\"\npath = \"/run?v=2\"\n"
    );
    let config = load_str("keel.toml", &text, &Overrides::default()).unwrap();
    let command = config.functions["worker"].command().unwrap().clone();
    assert_eq!(command.env.get("MODE").map(String::as_str), Some("fast"));
    assert_eq!(command.cwd.as_deref(), Some(Path::new("/srv")));
    assert_eq!((command.min_instances, command.max_instances, command.instance_concurrency), (1, 3, 1));
    assert_eq!(command.idle_timeout, Duration::from_secs(2));
    assert_eq!(command.startup_timeout, Duration::from_millis(500));
    assert_eq!((command.health_path.as_deref(), command.path.as_str()), (Some("/healthz"), "/run?v=2"));
}

#[test]
fn url_and_command_are_exclusive_and_one_is_required() {
    let hint = r#"set `url = "http://127.0.0.1:9001/charge"` for a function that already runs, or `command = ["./charge"]` for one Keel runs"#;
    assert_eq!(
        errors(&format!("{CHARGE}command = [\"./charge\"]\n")),
        [format!("keel.toml:3:1: functions.charge.command: `url` and `command` are both set; a function has one of them: {hint}")]
    );
    assert_eq!(
        errors("\n[functions.charge]\ntimeout = \"1s\"\n"),
        [format!("keel.toml:2:12: functions.charge: missing required key `url` or `command`: {hint}")]
    );
}

#[test]
fn process_keys_on_a_url_function_are_refused() {
    assert_eq!(
        errors(&format!("{CHARGE}max_instances = 2\n")),
        ["keel.toml:3:1: functions.charge.max_instances: only `command` functions take `max_instances`; a `url` \
          function puts its path in the url and runs elsewhere"]
    );
}

#[test]
fn every_command_problem_is_reported_where_it_was_written() {
    let text = "\
[functions.worker]
command = []
env = { PORT = \"1\", \"A=B\" = \"x\" }
min_instances = 5
max_instances = 2
instance_concurrency = 0
idle_timeout = \"0s\"
health_path = \"healthz\"
";
    assert_eq!(
        errors(text),
        [
            r#"keel.toml:2:11: functions.worker.command: must name a program and its arguments, like ["./target/release/charge", "--quiet"]"#,
            "keel.toml:3:21: functions.worker.env.\"A=B\": \"A=B\" is not a valid environment variable name (no '=' or NUL, not empty)",
            "keel.toml:3:9: functions.worker.env.PORT: PORT is set by Keel for every instance and cannot be configured",
            "keel.toml:4:17: functions.worker.min_instances: must not exceed max_instances (2) (got 5)",
            "keel.toml:6:24: functions.worker.instance_concurrency: must be between 1 and 10000 (got 0)",
            r#"keel.toml:7:16: functions.worker.idle_timeout: must be greater than 0, like "30s" (got "0s")"#,
            r#"keel.toml:8:15: functions.worker.health_path: expected a path starting with "/", like "/healthz" (got "healthz")"#,
        ]
    );
}

#[test]
fn a_command_can_come_from_the_environment() {
    let overrides = env(&[("KEEL_FUNCTIONS__WORKER__COMMAND", r#"["python3", "app.py"]"#)]);
    let config = load_str("keel.toml", "", &overrides).unwrap();
    assert_eq!(config.functions["worker"].command().unwrap().command, ["python3", "app.py"]);
}

#[test]
fn subscriptions_reference_declared_topics_and_functions() {
    let text = "\
[functions.mail]
url = \"http://127.0.0.1:9/mail\"
retry = { max_attempts = 3 }

[topics.\"user.registered\"]

[[subscriptions]]
name = \"welcome\"
topic = \"user.registered\"
function = \"mail\"
filter = { type_prefix = \"user.\" }
retry = { initial = \"1s\" }
ordered_by = \"subject\"
";
    let config = load_str("keel.toml", text, &Overrides::default()).unwrap();
    let sub = &config.subscriptions[0];
    assert_eq!((sub.name.as_str(), sub.topic.as_str(), sub.function.as_str()), ("welcome", "user.registered", "mail"));
    assert_eq!(sub.filter.type_prefix.as_deref(), Some("user."));
    assert_eq!(sub.retry.max_attempts, 3, "inherited from the function");
    assert_eq!(sub.retry.initial, Duration::from_secs(1), "overridden by the subscription");
    assert_eq!(sub.ordered_by, Some(super::OrderedBy::Subject));
    assert!(config.topics.contains_key("user.registered"));
    assert_eq!(config.server.max_event_hops, 16);
}

#[test]
fn bad_subscriptions_are_located_by_index() {
    let text = "\
[functions.mail]
url = \"http://127.0.0.1:9/mail\"

[topics.orders]

[[subscriptions]]
name = \"ok\"
topic = \"orders\"
function = \"mail\"

[[subscriptions]]
name = \"ok\"
topic = \"nope\"
function = \"ghost\"
ordered_by = \"time\"
filter = { colour = \"red\" }
";
    assert_eq!(
        errors(text),
        ["keel.toml:16:12: subscriptions[1].filter.colour: unknown key `colour`, expected one of `type`, \
          `type_prefix`, `source`, `subject_prefix`"]
    );
    let text = text.replace("filter = { colour = \"red\" }\n", "");
    assert_eq!(
        errors(&text),
        [
            "keel.toml:12:8: subscriptions[1].name: duplicate subscription name \"ok\"",
            "keel.toml:13:9: subscriptions[1].topic: unknown topic \"nope\": declare it with [topics.\"nope\"] (declared: orders)",
            "keel.toml:14:12: subscriptions[1].function: unknown function \"ghost\" (configured: mail)",
            "keel.toml:15:14: subscriptions[1].ordered_by: must be \"subject\" (got \"time\")",
        ]
    );
}

#[test]
fn relative_command_paths_are_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("keel-config-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("app")).unwrap();
    let file = dir.join("app").join("keel.toml");
    std::fs::write(
        &file,
        "[functions.a]\ncommand = [\"./bin/a\", \"--flag\"]\ncwd = \"work\"\n\
         [functions.b]\ncommand = [\"python3\", \"b.py\"]\n\
         [functions.c]\ncommand = [\"/usr/bin/c\"]\ncwd = \"/srv\"\n",
    )
    .unwrap();
    let config = load(Some(&file), &Overrides::default()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let command = |name: &str| config.functions[name].command().unwrap().clone();
    let base = dir.join("app");
    assert_eq!(command("a").command, [base.join("./bin/a").display().to_string(), "--flag".to_string()]);
    assert_eq!(command("a").cwd, Some(base.join("work")));
    assert_eq!(command("b").command, ["python3", "b.py"], "a bare program name is looked up on PATH");
    assert_eq!(command("c").command, ["/usr/bin/c"]);
    assert_eq!(command("c").cwd, Some(std::path::PathBuf::from("/srv")));
}

#[test]
fn the_database_path_is_relative_to_the_config_file_unless_given_on_the_command_line() {
    let dir = std::env::temp_dir().join(format!("keel-config-state-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("app")).unwrap();
    let default = dir.join("app").join("keel.toml");
    std::fs::write(&default, "").unwrap();
    let written = dir.join("app").join("written.toml");
    std::fs::write(&written, "[storage]\nurl = \"sqlite://data/keel.db\"\n").unwrap();
    let absolute = dir.join("app").join("absolute.toml");
    std::fs::write(&absolute, "[storage]\nurl = \"sqlite:///var/lib/keel/keel.db\"\n").unwrap();
    let url = |file: &std::path::Path, overrides: &Overrides| load(Some(file), overrides).unwrap().storage.url;
    let none = Overrides::default();
    let from_env = env(&[("KEEL_STORAGE__URL", "sqlite://here.db")]);
    let from_flag = Overrides {
        env: Vec::new(),
        flags: vec![("storage.url".into(), "--storage-url".into(), toml::Value::String("sqlite://here.db".into()))],
        ..Overrides::default()
    };
    let in_app = |path: &str| format!("sqlite://{}", dir.join("app").join(path).display());
    let results = [
        url(&default, &none),
        url(&written, &none),
        url(&absolute, &none),
        url(&default, &from_env),
        url(&written, &from_flag),
    ];
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(results[0], in_app(".keel/keel.db"), "the default state lives beside keel.toml");
    assert_eq!(results[1], in_app("data/keel.db"));
    assert_eq!(results[2], "sqlite:///var/lib/keel/keel.db");
    assert_eq!(results[3], "sqlite://here.db", "a path typed in the environment is the shell's");
    assert_eq!(results[4], "sqlite://here.db", "a path typed as a flag is the shell's");
}

mod flow {
    use super::*;
    use crate::flow::{BreakerConfig, ConcurrencyKeyConfig, FlowConfig, RateLimitConfig};

    fn flow_of(text: &str) -> FlowConfig {
        load_str("keel.toml", &format!("{CHARGE}{text}"), &Overrides::default()).unwrap().functions["charge"]
            .flow
            .clone()
    }

    #[test]
    fn the_design_example_is_resolved() {
        let text = r#"
[server]
max_inflight_requests = 500

[functions.charge]
url = "http://127.0.0.1:9001/charge"
concurrency = 64
max_waiting = 64
max_queued = 100000
rate_limit = { per_second = 50, burst = 10 }
concurrency_key = { header = "X-Tenant-ID", limit = 2 }
breaker = { consecutive_failures = 5, failure_ratio = 0.5, min_calls = 20, window = "30s",
            open_for = "10s", half_open_probes = 3 }
"#;
        let config = load_str("keel.toml", text, &Overrides::default()).unwrap();
        assert_eq!(config.server.max_inflight_requests, 500);
        let flow = &config.functions["charge"].flow;
        assert_eq!((flow.max_waiting, flow.max_queued), (64, Some(100_000)));
        assert_eq!(flow.rate_limit, Some(RateLimitConfig { per_second: 50.0, burst: 10 }));
        assert_eq!(
            flow.concurrency_key,
            Some(ConcurrencyKeyConfig { header: "x-tenant-id".into(), limit: 2 }),
            "the header is stored lowercase"
        );
        assert_eq!(
            flow.breaker,
            Some(BreakerConfig {
                consecutive_failures: 5,
                failure_ratio: Some(0.5),
                min_calls: 20,
                window: Duration::from_secs(30),
                open_for: Duration::from_secs(10),
                half_open_probes: 3,
            })
        );
    }

    #[test]
    fn keys_left_out_take_their_defaults() {
        assert_eq!(flow_of("rate_limit = { per_second = 0.5 }\n").rate_limit.unwrap().burst, 1);
        assert_eq!(flow_of("breaker = {}\n").breaker, Some(BreakerConfig::default()));
        assert_eq!(
            flow_of("breaker = { failure_ratio = 1 }\n").breaker,
            Some(BreakerConfig { failure_ratio: Some(1.0), ..BreakerConfig::default() })
        );
        assert_eq!(flow_of("concurrency = 3\n").max_waiting, 12);
        assert_eq!(flow_of("max_waiting = 0\n").max_waiting, 0, "0: no sync caller waits");
    }

    #[test]
    fn every_flow_problem_is_reported_where_it_was_written() {
        let text = "\
[server]
max_inflight_requests = 0

[functions.charge]
url = \"http://127.0.0.1:9001/charge\"
concurrency = 4
max_waiting = -1
max_queued = 0
rate_limit = { per_second = 0, burst = 0 }
concurrency_key = { header = \"x tenant\", limit = 0 }
breaker = { consecutive_failures = 0, failure_ratio = 1.5, min_calls = 0, window = \"0s\", open_for = \"soon\", half_open_probes = 0 }
";
        assert_eq!(
            errors(text),
            [
                "keel.toml:2:25: server.max_inflight_requests: must be between 1 and 1000000 (got 0)",
                "keel.toml:7:15: functions.charge.max_waiting: must be between 0 and 1000000 (got -1)",
                "keel.toml:8:14: functions.charge.max_queued: must be at least 1 (got 0)",
                "keel.toml:9:29: functions.charge.rate_limit.per_second: must be a number above 0 and at most 1000000, like 50 or 0.5 (got 0)",
                "keel.toml:9:40: functions.charge.rate_limit.burst: must be between 1 and 1000000 (got 0)",
                r#"keel.toml:10:30: functions.charge.concurrency_key.header: not a valid HTTP header name: expected letters, digits and any of !#$%&'*+-.^_`|~, like "x-tenant-id" (got "x tenant")"#,
                "keel.toml:10:50: functions.charge.concurrency_key.limit: must be between 1 and the function's concurrency (4) (got 0)",
                "keel.toml:11:36: functions.charge.breaker.consecutive_failures: must be between 1 and 1000000 (got 0)",
                "keel.toml:11:55: functions.charge.breaker.failure_ratio: must be a number above 0 and at most 1, like 0.5 (got 1.5)",
                "keel.toml:11:72: functions.charge.breaker.min_calls: must be between 1 and 1000000 (got 0)",
                r#"keel.toml:11:84: functions.charge.breaker.window: must be greater than 0, like "30s" (got "0s")"#,
                r#"keel.toml:11:101: functions.charge.breaker.open_for: expected a duration like "250ms", "30s", "5m" (got "soon")"#,
                "keel.toml:11:128: functions.charge.breaker.half_open_probes: must be between 1 and 1000000 (got 0)",
            ]
        );
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        let shown: Vec<String> = ["-1.5", "inf", "nan", "2e6"]
            .iter()
            .flat_map(|rate| errors(&format!("{CHARGE}rate_limit = {{ per_second = {rate} }}\n")))
            .collect();
        let message =
            "functions.charge.rate_limit.per_second: must be a number above 0 and at most 1000000, like 50 or 0.5";
        assert_eq!(
            shown,
            [
                format!("keel.toml:3:29: {message} (got -1.5)"),
                format!("keel.toml:3:29: {message} (got inf)"),
                format!("keel.toml:3:29: {message} (got NaN)"),
                format!("keel.toml:3:29: {message} (got 2000000)"),
            ]
        );
        assert_eq!(
            errors(&format!("{CHARGE}rate_limit = {{ per_second = \"50\" }}\n")),
            [r#"keel.toml:3:29: functions.charge.rate_limit.per_second: invalid type: string "50", expected a number"#]
        );
    }

    #[test]
    fn required_keys_of_rate_limit_and_concurrency_key_are_named() {
        assert_eq!(
            errors(&format!("{CHARGE}rate_limit = {{ burst = 3 }}\nconcurrency_key = {{}}\n")),
            [
                "keel.toml:3:1: functions.charge.rate_limit: missing required key `per_second`, like rate_limit = { per_second = 50, burst = 10 }",
                r#"keel.toml:4:1: functions.charge.concurrency_key: missing required key `header`, like concurrency_key = { header = "x-tenant-id", limit = 2 }"#,
                r#"keel.toml:4:1: functions.charge.concurrency_key: missing required key `limit`, like concurrency_key = { header = "x-tenant-id", limit = 2 }"#,
            ]
        );
    }

    #[test]
    fn a_per_key_limit_above_the_functions_concurrency_is_refused() {
        assert_eq!(
            errors(&format!("{CHARGE}concurrency = 8\nconcurrency_key = {{ header = \"x-t\", limit = 9 }}\n")),
            ["keel.toml:4:45: functions.charge.concurrency_key.limit: must be between 1 and the function's concurrency (8) (got 9)"]
        );
        assert_eq!(flow_of("concurrency_key = { header = \"x-t\", limit = 64 }\n").concurrency_key.unwrap().limit, 64);
    }

    #[test]
    fn an_unknown_key_inside_a_flow_table_lists_the_valid_ones() {
        assert_eq!(
            errors(&format!("{CHARGE}breaker = {{ failures = 3 }}\n")),
            ["keel.toml:3:13: functions.charge.breaker.failures: unknown key `failures`, expected one of \
              `consecutive_failures`, `failure_ratio`, `min_calls`, `window`, `open_for`, `half_open_probes`"]
        );
        assert_eq!(
            errors(&format!("{CHARGE}rate_limit = {{ per_second = 1, per_minute = 3 }}\n")),
            ["keel.toml:3:32: functions.charge.rate_limit.per_minute: unknown key `per_minute`, expected \
              `per_second` or `burst`"]
        );
    }

    #[test]
    fn flow_keys_can_be_set_from_the_environment() {
        let overrides = env(&[
            ("KEEL_FUNCTIONS__CHARGE__BREAKER__OPEN_FOR", "5s"),
            ("KEEL_FUNCTIONS__CHARGE__RATE_LIMIT", "{ per_second = 2.5, burst = 4 }"),
            ("KEEL_SERVER__MAX_INFLIGHT_REQUESTS", "50"),
        ]);
        let config = load_str("keel.toml", CHARGE, &overrides).unwrap();
        let flow = &config.functions["charge"].flow;
        assert_eq!(flow.breaker, Some(BreakerConfig { open_for: Duration::from_secs(5), ..BreakerConfig::default() }));
        assert_eq!(flow.rate_limit, Some(RateLimitConfig { per_second: 2.5, burst: 4 }));
        assert_eq!(config.server.max_inflight_requests, 50);
        assert_eq!(
            errors_with(CHARGE, &env(&[("KEEL_FUNCTIONS__CHARGE__BREAKER__FAILURE_RATIO", "0")])),
            ["env KEEL_FUNCTIONS__CHARGE__BREAKER__FAILURE_RATIO: functions.charge.breaker.failure_ratio: must be a number above 0 and at most 1, like 0.5 (got 0)"]
        );
    }
}

/// A PEM certificate section as `ca_file` is checked: PEM only (the certificate inside is
/// parsed by the server when it builds its client).
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2E=\n-----END CERTIFICATE-----\n";

#[test]
fn a_ca_file_must_be_readable_and_hold_a_pem_certificate() {
    let dir = std::env::temp_dir().join(format!("keel-config-ca-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let key_only = dir.join("key.pem");
    std::fs::write(&key_only, "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n").unwrap();
    let broken = dir.join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let good = dir.join("ca.pem");
    std::fs::write(&good, CA_PEM).unwrap();
    let function = |name: &str, path: &std::path::Path| {
        format!("[functions.{name}]\nurl = \"https://127.0.0.1:9443/\"\nca_file = \"{}\"\n", path.display())
    };
    let text = [
        function("a", &missing),
        function("b", &empty),
        function("c", &key_only),
        function("d", &broken),
        function("e", &good),
        format!("[functions.f]\ncommand = [\"./f\"]\nca_file = \"{}\"\n", good.display()),
    ]
    .concat();
    let found = errors(&text);
    std::fs::remove_dir_all(&dir).unwrap();
    let (missing, empty, key_only, broken) = (missing.display(), empty.display(), key_only.display(), broken.display());
    assert_eq!(
        found,
        [
            format!("keel.toml:3:11: functions.a.ca_file: cannot read the CA file {missing}: No such file or directory (os error 2)"),
            format!(r#"keel.toml:6:11: functions.b.ca_file: the CA file {empty} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")"#),
            format!(r#"keel.toml:9:11: functions.c.ca_file: the CA file {key_only} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")"#),
            format!(r#"keel.toml:12:11: functions.d.ca_file: the CA file {broken} is not valid PEM: a "-----BEGIN CERTIFICATE-----" section has no "-----END CERTIFICATE-----" line"#),
            "keel.toml:18:1: functions.f.ca_file: only `url` functions take `ca_file`; Keel calls the instances of a `command` function over plain http on 127.0.0.1".to_owned(),
        ]
    );
}

#[test]
fn a_relative_ca_file_is_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("keel-config-ca-path-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("app").join("certs")).unwrap();
    std::fs::write(dir.join("app").join("certs").join("ca.pem"), CA_PEM).unwrap();
    let file = dir.join("app").join("keel.toml");
    std::fs::write(
        &file,
        "[functions.a]\nurl = \"https://127.0.0.1:9443/\"\nca_file = \"certs/ca.pem\"\n\
         [functions.b]\nurl = \"https://127.0.0.1:9443/\"\n",
    )
    .unwrap();
    let config = load(Some(&file), &Overrides::default());
    std::fs::remove_dir_all(&dir).unwrap();
    let config = config.unwrap();
    assert_eq!(config.functions["a"].ca_file, Some(dir.join("app").join("certs/ca.pem")));
    assert_eq!(config.functions["b"].ca_file, None);
}

mod dependencies {
    use super::*;
    use crate::config::{BulkheadConfig, DependencyConfig, DependencyRetry};
    use crate::flow::{BreakerConfig, RateLimitConfig, RetryBudgetConfig};

    fn with_vars(pairs: &[(&str, &str)]) -> Overrides {
        let vars = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Overrides { vars, ..Overrides::default() }
    }

    #[test]
    fn the_design_example_is_resolved() {
        let text = r#"
[dependencies.payments]
url = "https://payments.internal/api"
timeout = "2s"
retry = { max_attempts = 3, initial = "50ms", max = "1s" }
retry_budget = { ratio = 0.2, min_per_second = 10 }
breaker = { consecutive_failures = 5, open_for = "30s", half_open_probes = 1 }
bulkhead = { max_concurrent = 32, max_queued = 64, queue_timeout = "100ms" }
rate_limit = { per_second = 100, burst = 20 }
headers = { Authorization = "env:PAYMENTS_TOKEN", x-client = "keel" }

[functions.purchase]
url = "http://127.0.0.1:9001/purchase"
dependencies = ["payments"]
"#;
        let config = load_str("keel.toml", text, &with_vars(&[("PAYMENTS_TOKEN", "Bearer s3cret")])).unwrap();
        assert_eq!(config.functions["purchase"].dependencies, ["payments"]);
        let payments = &config.dependencies["payments"];
        assert_eq!(payments.url.as_str(), "https://payments.internal/api");
        assert_eq!(payments.timeout, Duration::from_secs(2));
        assert_eq!(
            payments.retry,
            DependencyRetry { max_attempts: 3, initial: Duration::from_millis(50), max: Duration::from_secs(1) }
        );
        assert_eq!(payments.retry_budget, RetryBudgetConfig { ratio: 0.2, min_per_second: 10 });
        assert_eq!(payments.breaker, Some(BreakerConfig::default()));
        assert_eq!(
            payments.bulkhead,
            BulkheadConfig { max_concurrent: 32, max_queued: 64, queue_timeout: Duration::from_millis(100) }
        );
        assert_eq!(payments.rate_limit, Some(RateLimitConfig { per_second: 100.0, burst: 20 }));
        let headers: Vec<_> =
            payments.headers.iter().map(|h| (h.name.as_str(), h.value.as_str(), h.from_env.as_deref())).collect();
        assert_eq!(
            headers,
            [("authorization", "Bearer s3cret", Some("PAYMENTS_TOKEN")), ("x-client", "keel", None)],
            "names are stored lowercase, env: values resolved"
        );
        assert!(!format!("{payments:?}").contains("s3cret"), "Debug hides header values");
    }

    #[test]
    fn a_dependency_with_only_a_url_gets_the_defaults() {
        let config =
            load_str("keel.toml", "[dependencies.mail]\nurl = \"http://127.0.0.1:9/\"\n", &Overrides::default())
                .unwrap();
        let mail = &config.dependencies["mail"];
        assert_eq!(mail.timeout, DependencyConfig::DEFAULT_TIMEOUT);
        assert_eq!(mail.timeout, Duration::from_secs(10));
        assert_eq!(mail.retry, DependencyRetry::default());
        assert_eq!(mail.retry.max_attempts, 3);
        assert_eq!(mail.retry_budget, RetryBudgetConfig { ratio: 0.2, min_per_second: 10 });
        assert_eq!(mail.breaker, None, "no breaker unless configured");
        assert_eq!(mail.rate_limit, None);
        assert_eq!(
            mail.bulkhead,
            BulkheadConfig { max_concurrent: 64, max_queued: 64, queue_timeout: Duration::from_millis(100) }
        );
        assert!(mail.headers.is_empty());
    }

    #[test]
    fn every_dependency_problem_is_reported_where_it_was_written() {
        let text = "\
[dependencies.payments]
url = \"ftp://payments\"
timeout = \"0s\"
retry = { max_attempts = 0, initial = \"2s\", max = \"1s\" }
retry_budget = { ratio = 1.5, min_per_second = -1 }
breaker = { consecutive_failures = 0 }
bulkhead = { max_concurrent = 0, max_queued = -1, queue_timeout = \"soon\" }
rate_limit = { burst = 2 }
headers = { authorization = \"env:MISSING_TOKEN\", host = \"x\", \"bad name\" = \"x\" }

[dependencies.Mail]

[functions.purchase]
url = \"http://127.0.0.1:9001/purchase\"
dependencies = [\"payments\", \"ledger\"]
";
        assert_eq!(
            errors(text),
            [
                "keel.toml:15:29: functions.purchase.dependencies[1]: unknown dependency \"ledger\": add a [dependencies.ledger] table (configured: Mail, payments)",
                r#"keel.toml:11:15: dependencies.Mail: invalid dependency name "Mail": expected 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit, like "payments""#,
                r#"keel.toml:11:15: dependencies.Mail: missing required key `url`, like url = "https://payments.internal/api""#,
                r#"keel.toml:2:7: dependencies.payments.url: unsupported scheme "ftp"; expected an http:// or https:// URL like "http://127.0.0.1:9001/charge""#,
                r#"keel.toml:3:11: dependencies.payments.timeout: must be greater than 0, like "30s" (got "0s")"#,
                "keel.toml:4:26: dependencies.payments.retry.max_attempts: must be between 1 and 100 (got 0)",
                "keel.toml:4:39: dependencies.payments.retry.initial: must not exceed retry.max (1s) (got 2s)",
                "keel.toml:5:26: dependencies.payments.retry_budget.ratio: must be a number from 0 to 1, like 0.2 (got 1.5)",
                "keel.toml:5:48: dependencies.payments.retry_budget.min_per_second: must be between 0 and 1000000 (got -1)",
                "keel.toml:6:36: dependencies.payments.breaker.consecutive_failures: must be between 1 and 1000000 (got 0)",
                "keel.toml:7:31: dependencies.payments.bulkhead.max_concurrent: must be between 1 and 100000 (got 0)",
                "keel.toml:7:47: dependencies.payments.bulkhead.max_queued: must be between 0 and 1000000 (got -1)",
                r#"keel.toml:7:67: dependencies.payments.bulkhead.queue_timeout: expected a duration like "250ms", "30s", "5m" (got "soon")"#,
                "keel.toml:8:1: dependencies.payments.rate_limit: missing required key `per_second`, like rate_limit = { per_second = 50, burst = 10 }",
                r#"keel.toml:9:29: dependencies.payments.headers.authorization: the environment variable MISSING_TOKEN is not set (named by "env:MISSING_TOKEN")"#,
                r#"keel.toml:9:62: dependencies.payments.headers."bad name": not a valid HTTP header name: expected letters, digits and any of !#$%&'*+-.^_`|~, like "authorization" (got "bad name")"#,
                "keel.toml:9:50: dependencies.payments.headers.host: Keel sets host itself; it cannot be configured",
            ]
        );
    }

    #[test]
    fn an_unknown_dependency_is_named_when_none_is_configured() {
        assert_eq!(
            errors(&format!("{CHARGE}dependencies = [\"payments\"]\n")),
            ["keel.toml:3:17: functions.charge.dependencies[0]: unknown dependency \"payments\": add a [dependencies.payments] table (none is configured)"]
        );
    }

    #[test]
    fn an_unknown_key_in_a_dependency_lists_the_valid_ones() {
        assert_eq!(
            errors("[dependencies.payments]\nurl = \"http://x/\"\nretries = 3\n"),
            ["keel.toml:3:1: dependencies.payments.retries: unknown key `retries`, expected one of `url`, `timeout`, \
              `retry`, `retry_budget`, `breaker`, `bulkhead`, `rate_limit`, `headers`, `ca_file`"]
        );
    }
}

mod access {
    use super::*;
    use crate::auth::Scope;

    #[test]
    fn auth_is_off_by_default_and_keys_turn_it_on() {
        assert_eq!(load_str("keel.toml", "", &Overrides::default()).unwrap().auth.mode, AuthMode::None);
        let config = load_str("keel.toml", "[auth]\nmode = \"keys\"\n", &Overrides::default()).unwrap();
        assert_eq!(config.auth.mode, AuthMode::Keys);
        assert_eq!(
            errors("[auth]\nmode = \"open\"\n"),
            [r#"keel.toml:2:8: auth.mode: expected "keys" or "none" (got "open")"#]
        );
    }

    #[test]
    fn auth_off_is_allowed_only_on_loopback() {
        for listen in ["127.0.0.1:7733", "[::1]:7733"] {
            load_str("keel.toml", &format!("[server]\nlisten = \"{listen}\"\n"), &Overrides::default()).unwrap();
        }
        let found = errors("[server]\nlisten = \"0.0.0.0:7733\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .starts_with("keel.toml:2:10: server.listen: 0.0.0.0:7733 is not a loopback address and auth is off"),
            "{found:?}"
        );
        assert!(found[0].contains("keel keys create --name admin --scope admin -c keel.toml"), "{found:?}");
        // From the environment too: the rule is on the resolved address.
        let overrides = env(&[("KEEL_SERVER__LISTEN", "10.0.0.5:7733")]);
        assert!(errors_with("", &overrides)[0].contains("10.0.0.5:7733 is not a loopback address"));
        let overrides = env(&[("KEEL_SERVER__LISTEN", "10.0.0.5:7733"), ("KEEL_AUTH__MODE", "keys")]);
        load_str("keel.toml", "", &overrides).unwrap();
    }

    #[test]
    fn grants_become_scopes_and_name_what_they_refer_to() {
        let text = format!(
            "{CHARGE}[functions.notify]\nurl = \"http://127.0.0.1:9/\"\n[topics.\"purchase.completed\"]\n\
             [functions.charge.grants]\nkv = [\"balances:write\", \"users:read\"]\npublish = [\"purchase.*\"]\ninvoke = [\"notify\"]\n"
        );
        let config = load_str("keel.toml", &text, &Overrides::default()).unwrap();
        let scopes: Vec<String> =
            config.functions["charge"].grants.as_ref().unwrap().iter().map(Scope::to_string).collect();
        assert_eq!(scopes, ["kv:balances:write", "kv:users:read", "publish:purchase.*", "invoke:notify"]);
        assert_eq!(config.functions["notify"].grants, None);
        let bad = format!(
            "{CHARGE}[functions.charge.grants]\nkv = [\"balances\", \"users:delete\"]\npublish = [\"nowhere\"]\ninvoke = [\"ghost\", \"a b\"]\n"
        );
        assert_eq!(
            errors(&bad),
            [
                r#"keel.toml:4:7: functions.charge.grants.kv[0]: a kv scope is kv:NS:read or kv:NS:write (expected "NAMESPACE:read" or "NAMESPACE:write")"#,
                r#"keel.toml:4:19: functions.charge.grants.kv[1]: a kv scope is kv:NS:read or kv:NS:write (expected "NAMESPACE:read" or "NAMESPACE:write")"#,
                r#"keel.toml:5:12: functions.charge.grants.publish[0]: unknown topic "nowhere": declare it with [topics."nowhere"]"#,
                r#"keel.toml:6:11: functions.charge.grants.invoke[0]: unknown function "ghost": add a [functions.ghost] table"#,
                r#"keel.toml:6:20: functions.charge.grants.invoke[1]: a name may not hold spaces or `:`"#,
            ]
        );
    }

    #[test]
    fn tls_needs_a_readable_certificate_and_key() {
        let dir = std::env::temp_dir().join(format!("keel-config-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), CA_PEM).unwrap();
        std::fs::write(dir.join("no-key.pem"), CA_PEM).unwrap();
        let file = dir.join("keel.toml");
        let text = "[server]\ntls = { cert = \"cert.pem\", key = \"no-key.pem\" }\n";
        std::fs::write(&file, text).unwrap();
        let found = match load(Some(&file), &Overrides::default()) {
            Ok(_) => panic!("expected errors"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("server.tls.key:") && found[0].contains("holds no PEM private key"), "{found:?}");
        assert!(errors("[server]\ntls = { cert = \"cert.pem\" }\n")[0].contains("needs both `cert` and `key`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn effects_are_held_to_grants_when_declared_and_always_with_auth_on() {
    let text = "[topics.\"user.registered\"]\n[functions.granted]\nurl = \"http://127.0.0.1:9001/a\"\n\
                grants = { kv = [\"users:write\"], publish = [\"user.*\"] }\n\
                [functions.open]\nurl = \"http://127.0.0.1:9001/b\"\n";
    let config = load_str("keel.toml", text, &Overrides::default()).unwrap();
    let granted: Vec<crate::auth::Scope> = vec!["kv:users:write".parse().unwrap(), "publish:user.*".parse().unwrap()];
    let (g, o) = (&config.functions["granted"], &config.functions["open"]);
    assert_eq!(g.effect_scopes(AuthMode::None), Some(&granted[..]));
    assert_eq!(g.effect_scopes(AuthMode::Keys), Some(&granted[..]));
    assert_eq!(o.effect_scopes(AuthMode::None), None, "auth off and no grants: not held");
    assert_eq!(o.effect_scopes(AuthMode::Keys), Some(&[][..]), "auth on and no grants: nothing allowed");
}

mod edge {
    use super::*;
    use crate::edge::{RequestRule, RuleAction};
    use crate::flow::RateLimitConfig;

    #[test]
    fn firewall_and_throttle_are_off_by_default() {
        let config = load_str("keel.toml", "", &Overrides::default()).unwrap();
        assert_eq!(config.server.firewall, Default::default());
        assert_eq!(config.server.throttle, Default::default());
    }

    #[test]
    fn the_documented_example_is_resolved() {
        let text = r#"
[server.firewall]
allow = ["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"]
deny = ["203.0.113.0/24"]
trusted_proxies = ["10.0.0.5/32"]
rules = [{ method = "delete", path = "/v1/dlq/*", action = "deny" }, { path = "/v1/keys", action = "allow" }]

[server.throttle]
per_key = { per_second = 100, burst = 200 }
per_address = { per_second = 50, burst = 100 }
"#;
        let server = load_str("keel.toml", text, &Overrides::default()).unwrap().server;
        let shown: Vec<String> = server.firewall.allow.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"]);
        assert_eq!(server.firewall.deny, ["203.0.113.0/24".parse().unwrap()]);
        assert_eq!(server.firewall.trusted_proxies, ["10.0.0.5/32".parse().unwrap()]);
        assert_eq!(
            server.firewall.rules,
            [
                RequestRule { method: Some("DELETE".into()), path: "/v1/dlq/*".into(), action: RuleAction::Deny },
                RequestRule { method: None, path: "/v1/keys".into(), action: RuleAction::Allow },
            ]
        );
        assert_eq!(server.throttle.per_key, Some(RateLimitConfig { per_second: 100.0, burst: 200 }));
        assert_eq!(server.throttle.per_address, Some(RateLimitConfig { per_second: 50.0, burst: 100 }));
    }

    #[test]
    fn every_bad_network_is_located() {
        let text = "[server.firewall]\nallow = [\"10.0.0.0/8\", \"10.0.0/8\"]\ndeny = [\"::/200\"]\n\
                    trusted_proxies = [\"10.0.0.5/24\"]\n";
        assert_eq!(
            errors(text),
            [
                r#"keel.toml:2:24: server.firewall.allow[1]: expected an IP network like "10.0.0.0/8", "2001:db8::/32" or an address (got "10.0.0/8")"#,
                r#"keel.toml:3:9: server.firewall.deny[0]: the prefix length must be 0 to 128 (got "::/200")"#,
                r#"keel.toml:4:20: server.firewall.trusted_proxies[0]: 10.0.0.5 has bits set past the /24 prefix: the network is 10.0.0.0/24 (got "10.0.0.5/24")"#,
            ]
        );
    }

    #[test]
    fn bad_rules_are_located_by_index() {
        let text = "[server.firewall]\nrules = [\n  { path = \"/v1/dlq/*\", action = \"deny\" },\n\
                    \x20 { method = \"DEL ETE\", path = \"v1/*\", action = \"drop\" },\n  { method = \"GET\" },\n]\n";
        assert_eq!(
            errors(text),
            [
                r#"keel.toml:4:14: server.firewall.rules[1].method: expected an HTTP method like "DELETE" (got "DEL ETE")"#,
                r#"keel.toml:4:32: server.firewall.rules[1].path: expected a path starting with "/", with at most a trailing `*` for a prefix, like "/v1/dlq/*" (got "v1/*")"#,
                r#"keel.toml:4:49: server.firewall.rules[1].action: expected "deny" or "allow" (got "drop")"#,
                r#"keel.toml:5:3: server.firewall.rules[2]: missing required key `path`, like { method = "DELETE", path = "/v1/dlq/*", action = "deny" }"#,
                r#"keel.toml:5:3: server.firewall.rules[2]: missing required key `action`, like { method = "DELETE", path = "/v1/dlq/*", action = "deny" }"#,
            ]
        );
    }

    #[test]
    fn bad_throttles_are_located() {
        let text = "[server.throttle]\nper_key = { per_second = 0, burst = 200 }\nper_address = { burst = 0 }\n";
        assert_eq!(
            errors(text),
            [
                "keel.toml:2:26: server.throttle.per_key.per_second: must be a number above 0 and at most 1000000, like 50 or 0.5 (got 0)",
                "keel.toml:3:1: server.throttle.per_address: missing required key `per_second`, like rate_limit = { per_second = 50, burst = 10 }",
                "keel.toml:3:25: server.throttle.per_address.burst: must be between 1 and 1000000 (got 0)",
            ]
        );
        let unknown = errors("[server.throttle]\nper_ip = { per_second = 1 }\n");
        assert_eq!(
            unknown,
            ["keel.toml:2:1: server.throttle.per_ip: unknown key `per_ip`, expected `per_key` or `per_address`"]
        );
    }
}

mod sandbox {
    use super::*;

    #[test]
    fn the_design_example_is_resolved_against_the_config_file() {
        let dir = std::env::temp_dir().join(format!("keel-config-sandbox-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("app").join("assets")).unwrap();
        std::fs::create_dir_all(dir.join("app").join("scratch")).unwrap();
        let file = dir.join("app").join("keel.toml");
        std::fs::write(
            &file,
            "[functions.resize]\ncommand = [\"./resize\"]\nsandbox = { memory = \"512MiB\", open_files = 256, \
             processes = 32, cpu = \"1500ms\", read = [\"./assets\"], write = [\"./scratch\"], user = \"root\" }\n\
             [functions.plain]\ncommand = [\"./plain\"]\n",
        )
        .unwrap();
        let config = load(Some(&file), &Overrides::default());
        std::fs::remove_dir_all(&dir).unwrap();
        let config = config.unwrap();
        let sandbox = config.functions["resize"].command().unwrap().sandbox.clone().unwrap();
        assert_eq!(sandbox.memory, Some(512 << 20));
        assert_eq!((sandbox.open_files, sandbox.processes), (Some(256), Some(32)));
        assert_eq!(sandbox.cpu, Some(2), "CPU time is counted in whole seconds, rounded up");
        assert_eq!(sandbox.read, [dir.join("app").join("./assets")]);
        assert_eq!(sandbox.write, [dir.join("app").join("./scratch")]);
        assert_eq!(sandbox.user, Some(SandboxUser { name: "root".into(), uid: 0, gid: 0 }));
        assert_eq!(config.functions["plain"].command().unwrap().sandbox, None);
    }

    #[test]
    fn every_key_is_optional() {
        let text = "[functions.f]\ncommand = [\"./f\"]\nsandbox = { cpu = \"60s\" }\n";
        let config = load_str("keel.toml", text, &Overrides::default()).unwrap();
        let sandbox = config.functions["f"].command().unwrap().sandbox.clone().unwrap();
        assert_eq!(*sandbox, SandboxConfig { cpu: Some(60), ..SandboxConfig::default() });
        assert!(!sandbox.restricts_paths());
    }

    #[test]
    fn every_sandbox_problem_is_reported_where_it_was_written() {
        let text = "[functions.f]\ncommand = [\"./f\"]\n\
                    sandbox = { memory = \"lots\", open_files = 0, processes = -1, cpu = \"0s\", \
                    read = [\"/no/such/dir\"], user = \"no-such-user\" }\n\
                    [functions.u]\nurl = \"http://127.0.0.1:9001/\"\nsandbox = { cpu = \"1s\" }\n";
        assert_eq!(
            errors(text),
            [
                r#"keel.toml:3:22: functions.f.sandbox.memory: expected a byte size like 1048576, "512KiB", "1MiB", "2MB" (units B, KB, MB, GB, KiB, MiB, GiB), at least 1 byte (got "lots")"#,
                "keel.toml:3:43: functions.f.sandbox.open_files: must be between 1 and 1048576 (got 0)",
                "keel.toml:3:58: functions.f.sandbox.processes: must be between 1 and 4194304 (got -1)",
                r#"keel.toml:3:68: functions.f.sandbox.cpu: must be greater than 0, like "30s" (got "0s")"#,
                r#"keel.toml:3:81: functions.f.sandbox.read: "/no/such/dir": cannot use /no/such/dir: No such file or directory (os error 2)"#,
                r#"keel.toml:3:106: functions.f.sandbox.user: no user "no-such-user" in /etc/passwd"#,
                "keel.toml:6:1: functions.u.sandbox: only `command` functions take `sandbox`; a `url` function puts its path in the url and runs elsewhere",
            ]
        );
    }

    #[test]
    fn an_unknown_sandbox_key_lists_the_valid_ones() {
        let text = "[functions.f]\ncommand = [\"./f\"]\nsandbox = { network = false }\n";
        assert_eq!(
            errors(text),
            ["keel.toml:3:13: functions.f.sandbox.network: unknown key `network`, expected one of `memory`, \
              `open_files`, `processes`, `cpu`, `read`, `write`, `user`"]
        );
    }
}

mod batch;
mod schedule;
mod schema;
mod workflow;

#[test]
fn keel_system_needs_no_declaration_to_be_subscribed_to_and_may_not_be_declared() {
    let text = "[functions.notify-ops]\nurl = \"http://127.0.0.1:1\"\n\n[[subscriptions]]\nname = \"ops\"\n\
                topic = \"keel.system\"\nfunction = \"notify-ops\"\nfilter = { type = \"keel.invocation.dead\" }\n";
    let config = load_str("keel.toml", text, &Overrides::default()).unwrap();
    assert_eq!(config.subscriptions[0].topic, "keel.system");
    assert_eq!(
        errors("[topics.\"keel.system\"]\n"),
        ["keel.toml:1:9: topics.\"keel.system\": topic \"keel.system\" is reserved for Keel's own events: subscribe to it \
          without declaring it"]
    );
}

#[test]
fn system_events_rate_limit_defaults_and_checks() {
    let config = load_str("keel.toml", "", &Overrides::default()).unwrap();
    assert_eq!(config.server.system_events, crate::system_events::SystemEventsConfig::default());
    let config =
        load_str("keel.toml", "[server]\nsystem_events = { per_kind = 3, window = \"5s\" }\n", &Overrides::default())
            .unwrap();
    assert_eq!((config.server.system_events.per_kind, config.server.system_events.window), (3, Duration::from_secs(5)));
    assert_eq!(
        errors("[server]\nsystem_events = { per_kind = 0 }\n"),
        ["keel.toml:2:30: server.system_events.per_kind: must be between 1 and 10000 (got 0)"]
    );
}

const PG: &str = "[storage]\nurl = \"postgres://keel@127.0.0.1/keel\"\n";

#[test]
fn a_region_is_resolved_with_its_peers_and_key() {
    let text = format!(
        "{PG}[region]\nname = \"us\"\nrole = \"standby\"\npeers = {{ eu = \"http://127.0.0.1:7733/\" }}\n\
         key = \"env:PEER_KEY\"\nfailover_after = \"30s\"\n"
    );
    let vars = Overrides { vars: [("PEER_KEY".to_owned(), "keel_sk_x".to_owned())].into(), ..Overrides::default() };
    let config = load_str("keel.toml", &text, &vars).unwrap();
    let region = config.region.unwrap();
    assert_eq!((region.name.as_str(), region.role), ("us", crate::region::Role::Standby));
    assert_eq!(region.peers["eu"], "http://127.0.0.1:7733", "the trailing slash is dropped");
    assert_eq!(region.key.as_deref(), Some("keel_sk_x"));
    assert_eq!(region.failover_after, Some(Duration::from_secs(30)));
    let plain = load_str("keel.toml", "[region]\nname = \"eu\"\nrole = \"active\"\n", &Overrides::default()).unwrap();
    assert_eq!(plain.region.map(|r| r.role), Some(crate::region::Role::Active), "active-active runs on SQLite too");
    assert_eq!(load_str("keel.toml", "", &Overrides::default()).unwrap().region, None);
}

#[test]
fn region_mistakes_are_reported_where_they_are() {
    assert_eq!(errors("[region]\nrole = \"active\"\n"), ["keel.toml:1:2: region: needs a `name`, like name = \"eu\""]);
    assert_eq!(
        errors("[region]\nname = \"EU\"\nrole = \"leader\"\n"),
        [
            "keel.toml:2:8: region.name: expected lowercase letters, digits and '-', starting with a letter, like \"eu-west\" (got \"EU\")",
            "keel.toml:3:8: region.role: expected \"primary\", \"standby\" or \"active\" (got \"leader\")",
        ]
    );
    assert_eq!(
        errors("[region]\nname = \"eu\"\nrole = \"primary\"\n"),
        ["keel.toml:3:8: region.role: a primary region needs PostgreSQL (the standby's database is a streaming replica of the primary's); set storage.url to a postgres:// URL, or use role = \"active\""]
    );
    let text = format!(
        "{PG}[region]\nname = \"eu\"\npeers = {{ eu = \"http://a\", us = \"ftp://b\" }}\nfailover_after = \"1m\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "keel.toml:5:11: region.peers.eu: `eu` is this region's own name; peers are the other regions",
            "keel.toml:5:33: region.peers.us: expected the base URL of the peer's Keel API, like \"https://keel-us.internal:7733\" (got \"ftp://b\")",
            "keel.toml:6:18: region.failover_after: only a standby with peers promotes itself: failover_after needs role = \"standby\" and the primary among `peers`",
        ]
    );
    assert_eq!(
        errors(&format!("{PG}[region]\nname = \"eu\"\nkey = \"env:NOPE\"\n")),
        ["keel.toml:5:7: region.key: the environment variable NOPE is not set (named by \"env:NOPE\")"]
    );
}

const ACTIVE_EU: &str = "[region]\nname = \"eu\"\nrole = \"active\"\npeers = { us = \"http://127.0.0.1:7734\" }\n";

#[test]
fn subscriptions_are_local_unless_global_and_kv_namespaces_have_a_home() {
    let text = format!(
        "{ACTIVE_EU}{CHARGE}[topics.\"order.placed\"]\n\n[[subscriptions]]\nname = \"a\"\ntopic = \"order.placed\"\n\
         function = \"charge\"\n\n[[subscriptions]]\nname = \"b\"\ntopic = \"order.placed\"\nfunction = \"charge\"\n\
         scope = \"global\"\n\n[kv.balances]\nhome = \"us\"\n\n[kv.carts]\nhome = \"eu\"\n"
    );
    let config = load_str("keel.toml", &text, &Overrides::default()).unwrap();
    let scopes: Vec<_> = config.subscriptions.iter().map(|s| (s.name.as_str(), s.scope)).collect();
    assert_eq!(scopes, [("a", super::SubscriptionScope::Local), ("b", super::SubscriptionScope::Global)]);
    assert_eq!(config.kv["balances"].home.as_deref(), Some("us"));
    assert_eq!(config.kv["carts"].home.as_deref(), Some("eu"));
}

#[test]
fn scope_and_home_mistakes_are_reported_where_they_are() {
    let text = format!(
        "{ACTIVE_EU}{CHARGE}[topics.t]\n\n[[subscriptions]]\nname = \"a\"\ntopic = \"t\"\nfunction = \"charge\"\n\
         scope = \"everywhere\"\n\n[kv.balances]\nhome = \"asia\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "keel.toml:13:9: subscriptions[0].scope: expected \"local\" or \"global\" (got \"everywhere\")",
            "keel.toml:16:8: kv.balances.home: unknown region \"asia\": expected this region or one of its peers (eu, us)",
        ]
    );
    assert_eq!(
        errors("[kv.balances]\nhome = \"eu\"\n"),
        ["keel.toml:2:8: kv.balances.home: a home region needs [region] (this region's name and its peers); got home = \"eu\""]
    );
}
