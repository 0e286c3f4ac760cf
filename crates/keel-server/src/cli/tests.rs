//! How the command line parses: the flags each command takes, their defaults and their rules.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::*;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("keel").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_error(args: &[&str]) -> ErrorKind {
    match Cli::try_parse_from(std::iter::once("keel").chain(args.iter().copied())) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => e.kind(),
    }
}

#[test]
fn the_clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn serve_takes_a_config_file_and_overrides() {
    let cli = parse(&[
        "serve",
        "-c",
        "prod.toml",
        "--listen",
        "0.0.0.0:80",
        "--storage-url",
        "sqlite::memory:",
        "--log-format",
        "json",
    ]);
    let Command::Serve(args) = cli.command else { panic!("{cli:?}") };
    assert_eq!(args.config.as_deref(), Some(std::path::Path::new("prod.toml")));
    assert_eq!(args.listen.as_deref(), Some("0.0.0.0:80"));
    assert_eq!(args.storage_url.as_deref(), Some("sqlite::memory:"));
    assert_eq!(args.log_format, Some(LogFormat::Json));

    let Command::Serve(args) = parse(&["serve"]).command else { panic!() };
    assert_eq!((args.config, args.log_format), (None, None));
    assert_eq!(parse_error(&["serve", "--log-format", "xml"]), ErrorKind::InvalidValue);
}

#[test]
fn config_check_defaults_to_keel_toml() {
    let Command::Config(ConfigCommand::Check(args)) = parse(&["config", "check"]).command else { panic!() };
    assert_eq!(args.config, std::path::PathBuf::from("keel.toml"));
}

#[test]
fn url_and_json_are_global_and_may_follow_the_command() {
    let cli = parse(&["invocations", "ls", "--json", "--url", "http://10.0.0.1:7733"]);
    assert!(cli.json);
    assert_eq!(cli.url, "http://10.0.0.1:7733");
    // KEEL_URL may be set where tests run; only an explicit flag is certain.
    let cli = parse(&["--url", DEFAULT_URL, "dlq", "ls"]);
    assert!(!cli.json);
}

#[test]
fn invoke_is_sync_by_default_with_a_json_content_type() {
    let Command::Invoke(args) = parse(&["invoke", "charge", "--data", "{}"]).command else { panic!() };
    assert_eq!(args.name, "charge");
    assert!(!args.asynchronous);
    assert_eq!(args.data.as_deref(), Some("{}"));
    assert_eq!(args.content_type, "application/json");
}

#[test]
fn invoke_delay_is_a_duration_and_needs_async() {
    let cli = parse(&["invoke", "charge", "--async", "--delay", "1m30s", "--content-type", "text/plain"]);
    let Command::Invoke(args) = cli.command else { panic!() };
    assert!(args.asynchronous);
    assert_eq!(args.delay.as_ref().map(|d| d.duration), Some(std::time::Duration::from_secs(90)));
    assert_eq!(args.delay.map(|d| d.header_value()), Some("90s".to_owned()), "sent as keel-delay takes it");
    let header = |text: &str| text.parse::<super::Delay>().unwrap().header_value();
    assert_eq!(
        [header("2h 30m"), header("250ms"), header("24h"), header("1s 500ms")],
        ["150m", "250ms", "1d", "1500ms"]
    );
    assert_eq!(args.content_type, "text/plain");

    assert_eq!(parse_error(&["invoke", "charge", "--delay", "30s"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["invoke", "charge", "--async", "--delay", "soon"]), ErrorKind::ValueValidation);
    for loose in ["2d", "5 secs", "1y"] {
        let kind = parse_error(&["invoke", "charge", "--async", "--delay", loose]);
        assert_eq!(kind, ErrorKind::ValueValidation, "{loose}: only the documented forms");
    }
    assert_eq!(parse_error(&["invoke"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn invocations_ls_filters_by_a_known_status() {
    let cli =
        parse(&["invocations", "ls", "--function", "charge", "--status", "dead", "--limit", "5", "--cursor", "abc"]);
    let Command::Invocations(InvocationsCommand::Ls(args)) = cli.command else { panic!() };
    assert_eq!(args.function.as_deref(), Some("charge"));
    assert_eq!(args.status, Some(Status::Dead));
    assert_eq!(args.page.limit, Some(5));
    assert_eq!(args.page.cursor.as_deref(), Some("abc"));

    assert_eq!(parse_error(&["invocations", "ls", "--status", "asleep"]), ErrorKind::InvalidValue);
    assert_eq!(parse_error(&["invocations", "ls", "--limit", "many"]), ErrorKind::ValueValidation);
}

#[test]
fn every_status_parses_to_the_name_the_server_uses() {
    for status in &Status::ALL {
        let name = status.as_str();
        let cli = parse(&["invocations", "ls", "--status", name]);
        let Command::Invocations(InvocationsCommand::Ls(args)) = cli.command else { panic!() };
        assert_eq!(args.status, Some(*status));
    }
}

#[test]
fn show_and_cancel_take_an_id() {
    let cli = parse(&["invocations", "show", "01JABC"]);
    assert!(matches!(cli.command, Command::Invocations(InvocationsCommand::Show(IdArg { id })) if id == "01JABC"));
    let cli = parse(&["invocations", "cancel", "01JABC"]);
    assert!(matches!(cli.command, Command::Invocations(InvocationsCommand::Cancel(_))));
    assert_eq!(parse_error(&["invocations", "show"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn dlq_redrive_takes_an_id_or_all() {
    let Command::Dlq(DlqCommand::Redrive(args)) = parse(&["dlq", "redrive", "01JABC"]).command else { panic!() };
    assert_eq!((args.id.as_deref(), args.all), (Some("01JABC"), false));

    let cli = parse(&["dlq", "redrive", "--all", "--function", "charge", "--limit", "10"]);
    let Command::Dlq(DlqCommand::Redrive(args)) = cli.command else { panic!() };
    assert_eq!((args.id, args.all, args.limit), (None, true, Some(10)));
    assert_eq!(args.function.as_deref(), Some("charge"));

    assert_eq!(parse_error(&["dlq", "redrive"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["dlq", "redrive", "01JABC", "--all"]), ErrorKind::ArgumentConflict);
    assert_eq!(parse_error(&["dlq", "redrive", "01JABC", "--function", "f"]), ErrorKind::ArgumentConflict);
}

#[test]
fn dlq_ls_show_and_discard_parse() {
    let Command::Dlq(DlqCommand::Ls(args)) = parse(&["dlq", "ls", "--function", "f", "--limit", "3"]).command else {
        panic!()
    };
    assert_eq!((args.function.as_deref(), args.page.limit), (Some("f"), Some(3)));
    assert!(matches!(parse(&["dlq", "show", "01J"]).command, Command::Dlq(DlqCommand::Show(_))));
    assert!(matches!(parse(&["dlq", "discard", "01J"]).command, Command::Dlq(DlqCommand::Discard(_))));
    assert_eq!(parse_error(&["dlq", "purge"]), ErrorKind::InvalidSubcommand);
}

#[test]
fn lists_and_bulk_redrive_filter_by_subscription() {
    let Command::Invocations(InvocationsCommand::Ls(args)) =
        parse(&["invocations", "ls", "--subscription", "welcome"]).command
    else {
        panic!()
    };
    assert_eq!(args.subscription.as_deref(), Some("welcome"));
    let Command::Dlq(DlqCommand::Ls(args)) = parse(&["dlq", "ls", "--subscription", "welcome"]).command else {
        panic!()
    };
    assert_eq!((args.function, args.subscription.as_deref()), (None, Some("welcome")));

    let cli = parse(&["dlq", "redrive", "--all", "--subscription", "welcome", "--idempotency-key", "k1"]);
    let Command::Dlq(DlqCommand::Redrive(args)) = cli.command else { panic!() };
    assert_eq!((args.subscription.as_deref(), args.idempotency_key.as_deref()), (Some("welcome"), Some("k1")));
    assert_eq!(parse_error(&["dlq", "redrive", "01J", "--subscription", "s"]), ErrorKind::ArgumentConflict);
}

#[test]
fn invoke_and_redrive_take_an_idempotency_key() {
    let Command::Invoke(args) = parse(&["invoke", "charge", "--idempotency-key", "order-42"]).command else { panic!() };
    assert_eq!(args.idempotency_key.as_deref(), Some("order-42"));
    let Command::Dlq(DlqCommand::Redrive(args)) =
        parse(&["dlq", "redrive", "01JABC", "--idempotency-key", "r-1"]).command
    else {
        panic!()
    };
    assert_eq!((args.id.as_deref(), args.idempotency_key.as_deref()), (Some("01JABC"), Some("r-1")));
}

#[test]
fn publish_takes_a_topic_data_and_cloudevent_attributes() {
    let Command::Publish(args) = parse(&["publish", "orders", "-d", r#"{"n":1}"#]).command else { panic!() };
    assert_eq!((args.topic.as_str(), args.data.as_deref()), ("orders", Some(r#"{"n":1}"#)));
    assert_eq!((args.ty, args.source, args.subject, args.id), (None, None, None, None));

    let cli = parse(&[
        "publish",
        "orders",
        "--type",
        "order.placed",
        "--source",
        "shop",
        "--subject",
        "o-1",
        "--id",
        "e-1",
        "--data",
        "@order.json",
        "--idempotency-key",
        "k",
        "--delay",
        "1m30s",
    ]);
    let Command::Publish(args) = cli.command else { panic!() };
    assert_eq!(args.delay.map(|d| d.header_value()), Some("90s".to_owned()), "sent as keel-delay takes it");
    assert_eq!(args.ty.as_deref(), Some("order.placed"));
    assert_eq!(args.source.as_deref(), Some("shop"));
    assert_eq!(args.subject.as_deref(), Some("o-1"));
    assert_eq!(args.id.as_deref(), Some("e-1"));
    assert_eq!(args.data.as_deref(), Some("@order.json"));
    assert_eq!(args.idempotency_key.as_deref(), Some("k"));
    assert_eq!(parse_error(&["publish"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn events_show_takes_an_id() {
    let cli = parse(&["events", "show", "01JEV"]);
    assert!(matches!(cli.command, Command::Events(EventsCommand::Show(EventIdArg { id })) if id == "01JEV"));
    assert_eq!(parse_error(&["events", "show"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["events", "ls"]), ErrorKind::InvalidSubcommand);
}

#[test]
fn kv_get_put_and_delete_name_a_namespace_and_key() {
    let Command::Kv(KvCommand::Get(args)) = parse(&["kv", "get", "users", "u1"]).command else { panic!() };
    assert_eq!((args.ns.as_str(), args.key.as_str()), ("users", "u1"));
    assert_eq!(parse_error(&["kv", "get", "users"]), ErrorKind::MissingRequiredArgument);

    let Command::Kv(KvCommand::Put(args)) = parse(&["kv", "put", "users", "u1", "--value", "{}"]).command else {
        panic!()
    };
    assert_eq!((args.at.key.as_str(), args.value.as_str(), args.if_version, args.if_absent), ("u1", "{}", None, false));
    let cli = parse(&["kv", "put", "users", "u1", "--value", "1", "--if-version", "7"]);
    let Command::Kv(KvCommand::Put(args)) = cli.command else { panic!() };
    assert_eq!(args.if_version, Some(7));
    let Command::Kv(KvCommand::Put(args)) = parse(&["kv", "put", "users", "u1", "--value", "-", "--if-absent"]).command
    else {
        panic!()
    };
    assert!(args.if_absent);
    assert_eq!(parse_error(&["kv", "put", "users", "u1"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        parse_error(&["kv", "put", "users", "u1", "--value", "1", "--if-version", "1", "--if-absent"]),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        parse_error(&["kv", "put", "users", "u1", "--value", "1", "--if-version", "x"]),
        ErrorKind::ValueValidation
    );

    let Command::Kv(KvCommand::Delete(args)) = parse(&["kv", "delete", "users", "u1", "--if-version", "2"]).command
    else {
        panic!()
    };
    assert_eq!((args.at.ns.as_str(), args.if_version), ("users", Some(2)));
    assert_eq!(parse_error(&["kv", "delete", "users", "u1", "--if-absent"]), ErrorKind::UnknownArgument);
}

#[test]
fn kv_ls_takes_a_namespace_a_prefix_and_a_page() {
    let Command::Kv(KvCommand::Ls(args)) = parse(&["kv", "ls", "users"]).command else { panic!() };
    assert_eq!((args.ns.as_str(), args.prefix, args.page.limit, args.page.cursor), ("users", None, None, None));
    let cli = parse(&["kv", "ls", "users", "--prefix", "eu/", "--limit", "2", "--cursor", "dTE"]);
    let Command::Kv(KvCommand::Ls(args)) = cli.command else { panic!() };
    assert_eq!(
        (args.prefix.as_deref(), args.page.limit, args.page.cursor.as_deref()),
        (Some("eu/"), Some(2), Some("dTE"))
    );
    let Command::Kv(KvCommand::Ls(args)) = parse(&["kv", "ls", "users", "--cursor", "-x"]).command else { panic!() };
    assert_eq!(args.page.cursor.as_deref(), Some("-x"), "a cursor is a key, which may start with -");
    assert_eq!(parse_error(&["kv", "ls"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["kv", "ls", "users", "--limit", "many"]), ErrorKind::ValueValidation);
}

#[test]
fn api_key_and_ca_file_are_global() {
    let cli = parse(&["functions", "ls", "--api-key", "keel_sk_x", "--ca-file", "ca.pem", "--url", "https://k:7733"]);
    assert_eq!(cli.api_key.as_deref(), Some("keel_sk_x"));
    assert_eq!(cli.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("[env: KEEL_API_KEY"), "{help}");
    assert!(help.contains("[env: KEEL_CA_FILE"), "{help}");
}

#[test]
fn keys_create_takes_scopes_checked_as_typed_and_an_expiry() {
    let cli = parse(&[
        "keys",
        "create",
        "--name",
        "app",
        "--scope",
        "invoke:register-user",
        "--scope",
        "publish:user.*",
        "--expires",
        "90d",
    ]);
    let Command::Keys(KeysCommand::Create(args)) = cli.command else { panic!() };
    assert_eq!(args.name, "app");
    assert_eq!(args.scopes, ["invoke:register-user".parse::<Scope>().unwrap(), "publish:user.*".parse().unwrap()]);
    assert_eq!(args.expires.map(|e| e.duration), Some(std::time::Duration::from_secs(90 * 86_400)));
    assert_eq!(args.store.config, None);

    let cli = parse(&["keys", "create", "--name", "ops", "--scope", "admin", "-c", "keel.toml"]);
    let Command::Keys(KeysCommand::Create(args)) = cli.command else { panic!() };
    assert_eq!(args.store.config.as_deref(), Some(std::path::Path::new("keel.toml")));
    assert_eq!(args.expires, None);

    assert_eq!(parse_error(&["keys", "create", "--name", "app"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["keys", "create", "--scope", "read"]), ErrorKind::MissingRequiredArgument);
    let bad = Cli::try_parse_from(["keel", "keys", "create", "--name", "a", "--scope", "invoke"]).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::ValueValidation);
    assert!(bad.to_string().contains("`invoke` is not a scope"), "{bad}");
    for expires in ["soon", "0s"] {
        let kind = parse_error(&["keys", "create", "--name", "a", "--scope", "read", "--expires", expires]);
        assert_eq!(kind, ErrorKind::ValueValidation, "{expires}");
    }
}

#[test]
fn keys_ls_revoke_and_rotate_work_with_or_without_a_config() {
    let Command::Keys(KeysCommand::Ls(store)) = parse(&["keys", "ls"]).command else { panic!() };
    assert_eq!(store.config, None);
    let cli = parse(&["keys", "revoke", "key_01J", "--config", "prod.toml"]);
    let Command::Keys(KeysCommand::Revoke(args)) = cli.command else { panic!() };
    assert_eq!((args.id.as_str(), args.store.config.is_some()), ("key_01J", true));
    let Command::Keys(KeysCommand::RotateSigning(store)) = parse(&["keys", "rotate-signing", "-c", "k.toml"]).command
    else {
        panic!()
    };
    assert!(store.config.is_some());
    assert_eq!(parse_error(&["keys", "revoke"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn audit_ls_filters_by_action_and_actor() {
    let cli = parse(&["audit", "ls", "--action", "key.create", "--actor", "local", "--limit", "20"]);
    let Command::Audit(AuditCommand::Ls(args)) = cli.command else { panic!() };
    assert_eq!((args.action.as_deref(), args.actor.as_deref()), (Some("key.create"), Some("local")));
    assert_eq!(args.page.limit, Some(20));
}

#[test]
fn workflows_run_takes_its_input_inline_or_as_data_and_waits_when_asked() {
    let cli = parse(&["workflows", "run", "checkout", r#"{"item":"sword"}"#, "--idempotency-key", "order-7"]);
    let Command::Workflows(WorkflowsCommand::Run(args)) = cli.command else { panic!() };
    assert_eq!((args.name.as_str(), args.input.as_deref(), args.data), ("checkout", Some(r#"{"item":"sword"}"#), None));
    assert_eq!(args.idempotency_key.as_deref(), Some("order-7"));
    assert!(!args.wait);

    let cli = parse(&["workflows", "run", "checkout", "-d", "@order.json", "--wait", "--timeout", "2m"]);
    let Command::Workflows(WorkflowsCommand::Run(args)) = cli.command else { panic!() };
    assert_eq!((args.input, args.data.as_deref(), args.wait), (None, Some("@order.json"), true));
    assert_eq!(args.timeout, std::time::Duration::from_secs(120));
    let Command::Workflows(WorkflowsCommand::Run(args)) = parse(&["workflows", "run", "checkout", "--wait"]).command
    else {
        panic!()
    };
    assert_eq!(args.timeout, std::time::Duration::from_secs(60), "the default wait");

    assert_eq!(parse_error(&["workflows", "run"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["workflows", "run", "checkout", "{}", "-d", "{}"]), ErrorKind::ArgumentConflict);
    assert_eq!(parse_error(&["workflows", "run", "checkout", "--timeout", "5s"]), ErrorKind::MissingRequiredArgument);
    for bad in ["0s", "soon"] {
        let kind = parse_error(&["workflows", "run", "checkout", "--wait", "--timeout", bad]);
        assert_eq!(kind, ErrorKind::ValueValidation, "{bad}");
    }
}

#[test]
fn workflows_ls_filters_by_workflow_and_a_known_run_status() {
    let cli = parse(&["workflows", "ls", "--workflow", "checkout", "--status", "compensated", "--limit", "5"]);
    let Command::Workflows(WorkflowsCommand::Ls(args)) = cli.command else { panic!() };
    assert_eq!(
        (args.workflow.as_deref(), args.status, args.page.limit),
        (Some("checkout"), Some(RunStatus::Compensated), Some(5))
    );
    for status in RunStatus::ALL {
        let Command::Workflows(WorkflowsCommand::Ls(args)) =
            parse(&["workflows", "ls", "--status", status.as_str()]).command
        else {
            panic!()
        };
        assert_eq!(args.status, Some(status));
    }
    assert_eq!(
        parse_error(&["workflows", "ls", "--status", "dead"]),
        ErrorKind::InvalidValue,
        "an invocation's status"
    );
}

#[test]
fn workflows_defs_show_and_cancel_parse() {
    assert!(matches!(parse(&["workflows", "defs"]).command, Command::Workflows(WorkflowsCommand::Defs)));
    let cli = parse(&["workflows", "show", "01JRUN", "--json"]);
    assert!(cli.json);
    assert!(matches!(cli.command, Command::Workflows(WorkflowsCommand::Show(RunIdArg { id })) if id == "01JRUN"));
    let cli = parse(&["workflows", "cancel", "01JRUN"]);
    assert!(matches!(cli.command, Command::Workflows(WorkflowsCommand::Cancel(RunIdArg { id })) if id == "01JRUN"));
    assert_eq!(parse_error(&["workflows", "show"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["workflows", "start", "checkout"]), ErrorKind::InvalidSubcommand);
}

#[test]
fn chaos_inject_takes_one_target_a_kind_and_a_duration() {
    let cli = parse(&[
        "chaos",
        "inject",
        "--dependency",
        "payments",
        "--kind",
        "error",
        "--status",
        "502",
        "--rate",
        "0.3",
        "--duration",
        "60s",
    ]);
    let Command::Chaos(ChaosCommand::Inject(args)) = cli.command else { panic!() };
    assert_eq!(args.dependency.as_deref(), Some("payments"));
    assert_eq!((args.function, args.store), (None, false));
    assert_eq!((args.kind, args.status, args.rate), (FaultKind::Error, Some(502), Some(0.3)));
    assert_eq!(args.duration, "60s");

    let cli = parse(&["chaos", "inject", "--store", "--kind", "latency", "--latency", "100ms..2s", "--duration", "1m"]);
    let Command::Chaos(ChaosCommand::Inject(args)) = cli.command else { panic!() };
    assert!(args.store);
    assert_eq!(args.latency, Some(Latency { min: "100ms".into(), max: Some("2s".into()) }));

    let inject = |extra: &[&str]| {
        let mut line = vec!["chaos", "inject"];
        line.extend_from_slice(extra);
        parse_error(&line)
    };
    // No target, two targets.
    assert_eq!(inject(&["--kind", "abort", "--duration", "60s"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        inject(&["--function", "f", "--store", "--kind", "abort", "--duration", "60s"]),
        ErrorKind::ArgumentConflict
    );
    // A kind the server does not know, no duration, a zero or unreadable duration.
    assert_eq!(inject(&["--store", "--kind", "slow", "--duration", "60s"]), ErrorKind::InvalidValue);
    assert_eq!(inject(&["--store", "--kind", "error"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(inject(&["--store", "--kind", "error", "--duration", "0s"]), ErrorKind::ValueValidation);
    assert_eq!(inject(&["--store", "--kind", "error", "--duration", "soon"]), ErrorKind::ValueValidation);
    // A latency fault needs its latency, read as a duration or a range.
    assert_eq!(inject(&["--store", "--kind", "latency", "--duration", "60s"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        inject(&["--store", "--kind", "latency", "--latency", "2s..1s", "--duration", "60s"]),
        ErrorKind::ValueValidation
    );
}

#[test]
fn chaos_ls_and_clear_take_an_id_or_all() {
    assert!(matches!(parse(&["chaos", "ls"]).command, Command::Chaos(ChaosCommand::Ls)));
    let Command::Chaos(ChaosCommand::Clear(args)) = parse(&["chaos", "clear", "01KA"]).command else { panic!() };
    assert_eq!((args.id.as_deref(), args.all), (Some("01KA"), false));
    let Command::Chaos(ChaosCommand::Clear(args)) = parse(&["chaos", "clear", "--all"]).command else { panic!() };
    assert_eq!((args.id, args.all), (None, true));
    assert_eq!(parse_error(&["chaos", "clear"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse_error(&["chaos", "clear", "01KA", "--all"]), ErrorKind::ArgumentConflict);
}
