//! Starting Keel with the example backend, in this process: `keel.toml` (compiled in), with this
//! binary in place of `keel-example` in each `command`, the stand-in providers' URLs as the
//! `email` and `payments` dependencies' (the functions reach them through Keel's egress), and the
//! database under the state directory.
//!
//! Two functions are not Rust: `count-signups` is TypeScript (`functions-ts/count-signups.mjs`,
//! run by `node`) and `init-profile` Python (`functions-py/init_profile.py`, run by `python3`).
//! Their `cwd` is made absolute (this crate's directory, known at build time). When `node` (20 or
//! later) or `python3` (3.10 or later) is not on `PATH`, or the sources are not where they were
//! built, the function runs as its Rust twin (`keel-example fn NAME`), said on stderr, so the
//! quick start still works with one command.
//!
//! Why one binary: `cargo run --release -p keel-example` is then the whole quick start — one
//! build, no install step, no PATH to set — and the functions Keel scales are the same code
//! one would deploy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use keel_core::config::{load_str, Config, FunctionTarget, Overrides, TomlValue};
use keel_server::Node;
use tokio::net::TcpListener;

use crate::providers::{self, Behaviour};

/// The example's `keel.toml`.
pub const KEEL_TOML: &str = include_str!("../keel.toml");
/// The JSON Schemas `keel.toml` names (`input_schema`), by function, compiled in like the file.
const SCHEMAS: [(&str, &str); 2] = [
    ("register-user", include_str!("../schemas/register-user.json")),
    ("purchase", include_str!("../schemas/purchase.json")),
];
/// The program name `keel.toml` uses for this binary.
const PROGRAM: &str = "keel-example";

/// What `keel-example up` takes from its flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub email: Behaviour,
    pub payments: Behaviour,
}

/// `keel.toml` resolved for this machine: `exe` runs the functions; the providers are at
/// `email_url` and `payments_url`. The schemas are written under the state directory and named
/// there: the file's paths are relative to it, and this binary runs from anywhere.
pub fn config(options: &Options, exe: &Path, email_url: &str, payments_url: &str) -> anyhow::Result<Config> {
    let storage = format!("sqlite://{}", options.state_dir.join("keel.db").display());
    let mut flags = vec![
        ("server.listen".to_owned(), "--listen".to_owned(), TomlValue::String(options.listen.to_string())),
        ("storage.url".to_owned(), "--state-dir".to_owned(), TomlValue::String(storage)),
    ];
    let schemas = options.state_dir.join("schemas");
    std::fs::create_dir_all(&schemas).with_context(|| format!("creating {}", schemas.display()))?;
    for (function, schema) in SCHEMAS {
        let file = schemas.join(format!("{function}.json"));
        std::fs::write(&file, schema).with_context(|| format!("writing {}", file.display()))?;
        let key = format!("functions.{function}.input_schema");
        flags.push((key, "--state-dir".to_owned(), TomlValue::String(file.display().to_string())));
    }
    // The variables one would set by hand for `keel serve -c examples/backend/keel.toml`.
    let env = vec![
        ("KEEL_DEPENDENCIES__EMAIL__URL".to_owned(), email_url.to_owned()),
        ("KEEL_DEPENDENCIES__PAYMENTS__URL".to_owned(), payments_url.to_owned()),
    ];
    let mut config =
        load_str("examples/backend/keel.toml", KEEL_TOML, &Overrides { env, flags, ..Overrides::default() })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    for function in config.functions.values_mut() {
        if let FunctionTarget::Command(command) = &mut function.target {
            if command.command[0] == PROGRAM {
                command.command[0] = exe.display().to_string();
            }
        }
    }
    for line in wire_runtimes(&mut config, exe, &Runtimes::detect()) {
        eprintln!("keel-example: {line}");
    }
    Ok(config)
}

/// The functions of `keel.toml` written in other languages: (function, program, its directory
/// under this crate, its source file there).
pub const FOREIGN: [(&str, &str, &str, &str); 2] = [
    ("count-signups", "node", "functions-ts", "count-signups.mjs"),
    ("init-profile", "python3", "functions-py", "init_profile.py"),
];

/// Where the interpreters and this crate's sources are, for [`wire_runtimes`].
#[derive(Debug, Clone, Default)]
pub struct Runtimes {
    /// `node` (20 or later), when found.
    pub node: Option<PathBuf>,
    /// `python3` (3.10 or later), when found.
    pub python3: Option<PathBuf>,
    /// `examples/backend`: the TypeScript and Python functions are under it.
    pub dir: PathBuf,
}

impl Runtimes {
    /// Looks on `PATH` (and asks each interpreter its version).
    pub fn detect() -> Self {
        Self {
            node: find_program("node", &["--version"], |v| version_at_least(v.trim_start_matches('v'), (20, 0))),
            python3: find_program("python3", &["--version"], |v| {
                version_at_least(v.trim_start_matches("Python "), (3, 10))
            }),
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }
}

/// The first `name` on `PATH` whose `args` print a version `ok` accepts.
fn find_program(name: &str, args: &[&str], ok: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).filter(|p| p.is_file()).find(|program| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success() && ok(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// `"20.11.1"` ≥ `(20, 0)`.
fn version_at_least(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.trim().parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Points the TypeScript and Python functions at their interpreter and directory, or, when one
/// cannot run here, at their Rust twin (`exe fn NAME`): what was done instead, one line each.
pub fn wire_runtimes(config: &mut Config, exe: &Path, runtimes: &Runtimes) -> Vec<String> {
    let mut fallbacks = Vec::new();
    for (name, program, dir, file) in FOREIGN {
        let Some(FunctionTarget::Command(command)) = config.functions.get_mut(name).map(|f| &mut f.target) else {
            continue;
        };
        if command.command[0] != program {
            continue; // Changed in keel.toml: left as it is.
        }
        let interpreter = if program == "node" { &runtimes.node } else { &runtimes.python3 };
        let source = runtimes.dir.join(dir).join(file);
        let why = match interpreter {
            None => Some(format!(
                "no {program} on PATH{}",
                if program == "node" { " (20 or later)" } else { " (3.10 or later)" }
            )),
            Some(_) if !source.is_file() => Some(format!("{} is missing", source.display())),
            Some(_) => None,
        };
        match (why, interpreter) {
            (None, Some(interpreter)) => {
                command.command[0] = interpreter.display().to_string();
                command.cwd = Some(runtimes.dir.join(dir));
            }
            (why, _) => {
                fallbacks.push(format!(
                    "{name} runs as its Rust twin (keel-example fn {name}) instead of {dir}/{file}: {}",
                    why.unwrap_or_default()
                ));
                command.command = vec![exe.display().to_string(), "fn".to_owned(), name.to_owned()];
                command.cwd = None;
            }
        }
    }
    fallbacks
}

/// The quick start's API key: made afresh at each start (the previous one is revoked), with
/// every scope, so the printed commands can also pause, redrive and read.
pub const QUICKSTART_KEY: &str = "quickstart";

/// Starts the providers and a Keel node running the backend, with a new quick-start API key
/// (returned with the node: its secret is shown once).
pub async fn start(options: &Options) -> anyhow::Result<(Node, String)> {
    std::fs::create_dir_all(&options.state_dir)
        .with_context(|| format!("creating the state directory {}", options.state_dir.display()))?;
    let email = providers::start("email", options.email).await?;
    let payments = providers::start("payments", options.payments).await?;
    let exe = std::env::current_exe().context("finding this program's path")?;
    let config = config(options, &exe, &email.url, &payments.url)?;
    let listener =
        TcpListener::bind(options.listen).await.with_context(|| format!("listening on {}", options.listen))?;
    let store =
        keel_store::open(&keel_store::StoreOptions { url: config.storage.url.clone(), fsync: config.storage.fsync })
            .context("opening the store")?;
    let secret = quickstart_key(store.as_ref()).await?;
    Ok((Node::start_with_store(config, listener, store).await?, secret))
}

/// Revokes the quick-start keys of earlier starts and makes a new one.
pub async fn quickstart_key(store: &dyn keel_core::store::Store) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    for key in store.api_keys().await? {
        if key.name == QUICKSTART_KEY && key.revoked_at.is_none() {
            store.revoke_api_key(&key.id, now).await?;
        }
    }
    let (_, secret) =
        keel_server::create_api_key(store, QUICKSTART_KEY, vec![keel_core::auth::Scope::Admin], None).await?;
    Ok(secret)
}

/// `keel-example up`: starts everything, prints what to try, runs until Ctrl-C or SIGTERM, then
/// drains (and stops the function instances).
pub async fn run(options: Options) -> anyhow::Result<()> {
    let (node, secret) = start(&options).await?;
    println!("{}", banner(&format!("http://{}", node.addr()), &options.state_dir, &secret));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        _ = term.recv() => {}
    }
    node.shutdown().await;
    Ok(())
}

/// What to try, as copy-paste commands.
pub fn banner(url: &str, state_dir: &Path, secret: &str) -> String {
    let json = "-H 'content-type: application/json' -H \"authorization: Bearer $KEEL_API_KEY\"";
    let auth = "-H \"authorization: Bearer $KEEL_API_KEY\"";
    format!(
        "\nKeel is running the example backend at {url} (state in {state}/; Ctrl-C stops it).\n\
         Auth is on: this start's API key (admin; shown once, revoked at the next start) is\n\
         \nexport KEEL_API_KEY={secret}\n\
         \n# Narrower keys: keel keys create --name web --scope invoke:register-user --scope invoke:purchase\n\
         \n# 1. Register a user (a cold start: Keel starts the function on demand)\n\
         curl -s -X POST {url}/v1/functions/register-user/invoke {json} -d '{{\"email\": \"ada@example.com\", \"name\": \"Ada\"}}'; echo\n\
         \n# 2. Buy twice with one idempotency key: one debit, the second answer is a replay\n\
         for i in 1 2; do curl -s -X POST {url}/v1/functions/purchase/invoke {json} -H 'idempotency-key: order-1' -H 'x-user-id: ada@example.com' -d '{{\"user_id\": \"ada@example.com\", \"item\": \"potion\"}}'; echo; done\n\
         \n# 3. Register a user whose address bounces: the email provider refuses the welcome mail for\n\
         #    good (422, not retried), so that delivery lands in the dead-letter queue a moment later\n\
         curl -s -X POST {url}/v1/functions/register-user/invoke {json} -d '{{\"email\": \"bob@example.invalid\", \"name\": \"Bob\"}}'; echo\n\
         sleep 1; curl -s {auth} {url}/v1/dlq; echo\n\
         #    ...and notify-ops, subscribed to Keel's own events (keel.system), logged an ALERT line above:\n\
         curl -s {auth} '{url}/v1/invocations?function=notify-ops&status=succeeded'; echo\n\
         \n# 4. Pause the welcome emails: sign-ups still work, their emails are held (not lost) until resumed\n\
         curl -s {auth} -X POST {url}/v1/functions/send-welcome-email/pause >/dev/null; echo paused\n\
         curl -s -X POST {url}/v1/functions/register-user/invoke {json} -d '{{\"email\": \"cy@example.com\", \"name\": \"Cy\"}}'; echo\n\
         curl -s {auth} -X POST {url}/v1/functions/send-welcome-email/resume | grep -o '\"queued\":[0-9]*'\n\
         \n# 5. A checkout workflow (a saga): reserve stock, charge the card, ship. The first run succeeds; the\n\
         #    second's shipment is refused, so its charge is refunded and its stock released, in reverse\n\
         curl -s -X POST {url}/v1/workflows/checkout/runs {json} -d '{{\"item\": \"sword\"}}'; echo\n\
         curl -s -X POST {url}/v1/workflows/checkout/runs {json} -d '{{\"item\": \"sword\", \"fail_shipping\": true}}'; echo\n\
         sleep 3; curl -s {auth} '{url}/v1/workflow-runs?workflow=checkout'; echo\n\
         #    ...or with the keel binary, a run's timeline: keel workflows run checkout '{{\"item\": \"potion\", \"fail_shipping\": true}}' --wait\n\
         \n# Functions with their live state (in flight, waiting, queued, paused, breaker):  curl -s {auth} {url}/v1/functions\n\
         # The providers they call through Keel (breaker, in flight, retry budget, counters):  curl -s {auth} {url}/v1/dependencies\n",
        state = state_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_function_runs_this_binary_and_the_dependencies_are_the_providers() {
        let quiet = Behaviour { error_rate: 0.0, latency: Duration::ZERO };
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.path().to_path_buf(),
            email: quiet,
            payments: quiet,
        };
        let config = config(&options, Path::new("/opt/keel-example"), "http://e", "http://p").unwrap();
        assert_eq!(config.storage.url, format!("sqlite://{}/keel.db", dir.path().display()));
        let schema = config.functions["register-user"].input_schema.as_ref().expect("register-user's schema");
        assert_eq!(schema.file, dir.path().join("schemas/register-user.json"));
        assert!(config.functions["purchase"].input_schema.is_some());
        let names: Vec<&str> = config.functions.keys().map(String::as_str).collect();
        let mut expected = crate::functions::NAMES.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected);
        for function in config.functions.values() {
            let command = function.command().expect("a command function");
            assert!(command.env.is_empty(), "the functions reach the providers through Keel only");
            if FOREIGN.iter().any(|(name, ..)| *name == function.name) {
                continue; // node or python3 here, or the Rust twin: see the test below.
            }
            assert_eq!(command.command[0], "/opt/keel-example");
            assert_eq!(command.command[1..], ["fn".to_owned(), function.name.clone()]);
        }
        assert_eq!(config.dependencies["email"].url.as_str(), "http://e/");
        assert_eq!(config.dependencies["payments"].url.as_str(), "http://p/");
        assert_eq!(config.functions["send-welcome-email"].dependencies, ["email"]);
        assert_eq!(config.functions["purchase"].dependencies, ["payments"]);
    }

    #[test]
    fn the_typescript_and_python_functions_run_by_their_interpreter_or_as_their_rust_twin() {
        let dir = tempfile::tempdir().unwrap();
        let exe = Path::new("/opt/keel-example");
        let fresh = || {
            let mut config = load_str("keel.toml", KEEL_TOML, &Overrides::default()).unwrap();
            for function in config.functions.values_mut() {
                if let FunctionTarget::Command(command) = &mut function.target {
                    command.command[0] = command.command[0].replace(PROGRAM, "/opt/keel-example");
                }
            }
            config
        };
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let both = Runtimes {
            node: Some("/usr/bin/node".into()),
            python3: Some("/usr/bin/python3".into()),
            dir: here.clone(),
        };
        let mut config = fresh();
        assert!(wire_runtimes(&mut config, exe, &both).is_empty());
        let counter = config.functions["count-signups"].command().unwrap();
        assert_eq!(counter.command, ["/usr/bin/node", "count-signups.mjs"]);
        assert_eq!(counter.cwd.as_deref(), Some(here.join("functions-ts").as_path()));
        let profile = config.functions["init-profile"].command().unwrap();
        assert_eq!(profile.command, ["/usr/bin/python3", "init_profile.py"]);
        assert_eq!(profile.cwd.as_deref(), Some(here.join("functions-py").as_path()));
        assert_eq!(config.functions["count-signups"].grants, fresh().functions["count-signups"].grants);

        let mut config = fresh();
        let lines = wire_runtimes(&mut config, exe, &Runtimes { node: None, ..both.clone() });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("count-signups runs as its Rust twin") && lines[0].contains("no node on PATH"));
        let counter = config.functions["count-signups"].command().unwrap();
        assert_eq!(counter.command, ["/opt/keel-example", "fn", "count-signups"]);
        assert_eq!(counter.cwd, None);
        assert_eq!(config.functions["init-profile"].command().unwrap().command[0], "/usr/bin/python3");

        let mut config = fresh();
        let lines = wire_runtimes(&mut config, exe, &Runtimes { dir: dir.path().to_path_buf(), ..both });
        assert_eq!(lines.len(), 2, "sources missing: {lines:?}");
        assert_eq!(
            config.functions["init-profile"].command().unwrap().command,
            ["/opt/keel-example", "fn", "init-profile"]
        );
        assert!(version_at_least("20.11.1", (20, 0)) && !version_at_least("18.19.0", (20, 0)));
        assert!(version_at_least("3.11.7", (3, 10)) && !version_at_least("3.9.2", (3, 10)));
    }
}
