//! Starting Keel with the example backend, in this process: `keel.toml` (compiled in), with this
//! binary in place of `keel-example` in each `command`, the stand-in providers' URLs as the
//! `email` and `payments` dependencies' (the functions reach them through Keel's egress), and the
//! database under the state directory.
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
    Ok(config)
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
            assert_eq!(command.command[0], "/opt/keel-example");
            assert_eq!(command.command[1..], ["fn".to_owned(), function.name.clone()]);
            assert!(command.env.is_empty(), "the functions reach the providers through Keel only");
        }
        assert_eq!(config.dependencies["email"].url.as_str(), "http://e/");
        assert_eq!(config.dependencies["payments"].url.as_str(), "http://p/");
        assert_eq!(config.functions["send-welcome-email"].dependencies, ["email"]);
        assert_eq!(config.functions["purchase"].dependencies, ["payments"]);
    }
}
