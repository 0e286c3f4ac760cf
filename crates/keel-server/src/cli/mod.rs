//! The `keel` command line: its clap surface, and one module per area of commands.
//!
//! # Layout
//! - this file: the arguments, as clap derive structs, and nothing that runs.
//! - [`serve`]: `keel serve` and `keel config check` — configuration, logging, the server.
//! - [`invoke`]: `keel invoke`, sync and async.
//! - [`invocations`]: `keel invocations ls|show|cancel` and how an invocation is printed.
//! - [`dlq`]: `keel dlq ls|show|redrive|discard`.
//! - [`workflows`]: `keel workflows defs|run|ls|show|cancel`: runs of sagas and their timelines.
//! - [`publish`]: `keel publish`, an event to a topic, plain or as a CloudEvent.
//! - [`events`]: `keel events show`, an event and its deliveries.
//! - [`deps`]: `keel deps ls|show`, the dependencies functions call through egress.
//! - [`kv`]: `keel kv ls|get|put|delete`, with versions and preconditions.
//! - [`keys`]: `keel keys create|ls|revoke|rotate-signing`, over the API or straight into the
//!   store with `-c keel.toml`.
//! - [`audit`]: `keel audit ls`.
//! - [`chaos`]: `keel chaos inject|ls|clear`, faults on a function, a dependency or the store.
//! - [`payload`]: reading `--data`/`--value` from the command line, a file or stdin.
//! - [`client`]: the small HTTP client every client command goes through, and its errors.
//! - [`table`]: the column formatter behind every human table.
//! - [`bench`](mod@bench): `keel bench`, the performance harness (its arguments live there too).
//! - [`completions`]: `keel completions SHELL` and `keel man`, generated from this file.

pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod chaos;
pub(crate) use keel_server::client;
pub(crate) mod completions;
pub(crate) mod deps;
pub(crate) mod dlq;
pub(crate) mod events;
pub(crate) mod functions;
pub(crate) mod invocations;
pub(crate) mod invoke;
pub(crate) mod keys;
pub(crate) mod kv;
pub(crate) mod payload;
pub(crate) mod publish;
pub(crate) mod region;
pub(crate) mod schedules;
pub(crate) mod serve;
pub(crate) mod table;
#[cfg(test)]
mod tests;
pub(crate) mod workflows;

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use keel_core::auth::Scope;
use keel_core::invocation::Status;
use keel_core::workflow::RunStatus;

/// The exit status of a usage or configuration error (clap exits 2 on a usage error itself);
/// any other failure exits 1. The README's "Exit codes" lists them.
pub(crate) const EXIT_USAGE_OR_CONFIG: u8 = 2;

/// Where `keel serve` listens unless told otherwise, so where the client commands look first.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:7733";

/// Keel: durable serverless functions — retries, dead letters and redrive, in one binary.
#[derive(Debug, Parser)]
#[command(name = "keel", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Where the Keel server is, for the client commands.
    #[arg(long, global = true, env = "KEEL_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub(crate) url: String,

    /// The API key sent with every request (`Authorization: Bearer KEY`).
    #[arg(long, global = true, env = "KEEL_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub(crate) api_key: Option<String>,

    /// A PEM file of CA certificates trusted for an https:// --url, besides the system's.
    #[arg(long, global = true, env = "KEEL_CA_FILE", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,

    /// Print the server's JSON answers instead of human tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the Keel server.
    Serve(ServeArgs),
    /// Work with `keel.toml`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Invoke a function, waiting for its answer (or queue it with --async).
    Invoke(InvokeArgs),
    /// List, inspect and cancel invocations.
    #[command(subcommand)]
    Invocations(InvocationsCommand),
    /// The dead-letter queue: invocations that ran out of retries.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Publish an event to a topic: plain JSON, or a CloudEvent when any attribute is given.
    Publish(PublishArgs),
    /// Inspect published events and their deliveries.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Read and write the key-value store, with versions as preconditions.
    #[command(subcommand)]
    Kv(KvCommand),
    /// List functions with their live state; pause and resume them.
    #[command(subcommand)]
    Functions(FunctionsCommand),
    /// List schedules with their next and last fire; pause and resume them.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Start workflows (sagas), list their runs, follow a run step by step, cancel it.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// List the dependencies functions call through egress, with their live state.
    #[command(subcommand)]
    Deps(DepsCommand),
    /// API keys: create, list, revoke; rotate the key that signs function tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log: who changed keys, paused, redrove, discarded, injected faults.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Regions: where this node's region stands; promote a standby region.
    #[command(subcommand)]
    Region(RegionCommand),
    /// Inject faults (latency, errors, resets, timeouts, crashes) to see how the backend copes;
    /// needs `[chaos] enabled = true` on the server.
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Measure Keel on this machine against one raw HTTP hop to a no-op function.
    Bench(bench::BenchArgs),
    /// Print a completion script for SHELL, e.g. `keel completions bash > ~/.local/share/bash-completion/completions/keel`.
    Completions(CompletionsArgs),
    /// The example backend under four chaos experiments, each verdict printed: runs
    /// `keel-example demo` (next to this binary or on PATH; `cargo run --release -p keel-example
    /// -- demo` builds and runs it from a checkout). Flags are passed on, e.g. `--time-scale 0.4`.
    #[command(disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Print the man page (roff), e.g. `keel man > ~/.local/share/man/man1/keel.1`.
    Man,
    /// Internal: how Keel starts a sandboxed instance (applies the limits, then runs PROGRAM).
    #[command(name = "__sandbox", hide = true)]
    Sandbox(SandboxArgs),
}

/// `keel __sandbox --spec JSON -- PROGRAM ARGS…`, or `--probe` (see `keel_server::sandbox`).
#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    /// The limits, as `keel_server::sandbox::Spec` JSON.
    #[arg(long, required_unless_present = "probe")]
    pub(crate) spec: Option<String>,
    /// Print what the kernel enforces (Landlock) and exit.
    #[arg(long, conflicts_with = "spec")]
    pub(crate) probe: bool,
    /// The program and its arguments.
    #[arg(last = true, required_unless_present = "probe")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The config file; without it, `keel.toml` is read when it exists.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Address to listen on (overrides `server.listen`).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,

    /// Storage URL, `sqlite://PATH` or `postgres://…` (overrides `storage.url`).
    #[arg(long, value_name = "URL")]
    pub(crate) storage_url: Option<String>,

    /// Log format; JSON lines by default when stdout is not a terminal.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a config file, with the `KEEL_` environment applied, and report every error.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The config file to check.
    #[arg(short, long, value_name = "FILE", default_value = "keel.toml")]
    pub(crate) config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// The function's name, as declared in `keel.toml`.
    pub(crate) name: String,

    /// Queue the invocation and print its id instead of waiting for the result.
    #[arg(long = "async")]
    pub(crate) asynchronous: bool,

    /// The payload: literal text, `@FILE` to read a file, or `-` to read stdin.
    #[arg(short, long, value_name = "JSON|@FILE|-")]
    pub(crate) data: Option<String>,

    /// Run the queued invocation this much later, e.g. `30s` or `5m` (with --async).
    #[arg(long, requires = "asynchronous", value_name = "DURATION")]
    pub(crate) delay: Option<Delay>,

    /// The payload's content type.
    #[arg(long, default_value = "application/json", value_name = "TYPE")]
    pub(crate) content_type: String,

    /// Send this `Idempotency-Key`: a retry with the same key and payload is answered once.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
}

/// `--delay`: a duration in the documented forms (`30s`, `5m`, `2h 30m`), sent as the
/// `keel-delay` header takes it: one whole number and one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delay {
    pub(crate) duration: std::time::Duration,
}

impl Delay {
    /// The header's value: the duration in its largest whole unit (`1m30s` → `90s`).
    pub(crate) fn header_value(&self) -> String {
        let ms = self.duration.as_millis();
        let unit = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
            .into_iter()
            .find(|(size, _)| ms > 0 && ms.is_multiple_of(*size));
        match unit {
            Some((size, name)) => format!("{}{name}", ms / size),
            None => format!("{ms}ms"),
        }
    }
}

impl std::str::FromStr for Delay {
    type Err = keel_core::duration::InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Delay { duration: keel_core::duration::parse_duration(text)? })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum InvocationsCommand {
    /// List invocations, newest first.
    Ls(InvocationsLsArgs),
    /// Show one invocation and its attempts.
    Show(IdArg),
    /// Cancel a queued or retrying invocation.
    Cancel(IdArg),
}

#[derive(Debug, Args)]
pub(crate) struct InvocationsLsArgs {
    /// Only this function's invocations.
    #[arg(long, value_name = "NAME")]
    pub(crate) function: Option<String>,

    /// Only deliveries of this subscription.
    #[arg(long, value_name = "NAME")]
    pub(crate) subscription: Option<String>,

    /// Only invocations in this status.
    #[arg(long, value_parser = status_parser())]
    pub(crate) status: Option<Status>,

    #[command(flatten)]
    pub(crate) page: PageArgs,
}

/// Parses a status by the name the server uses, offering every status in `--help` and errors.
fn status_parser() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(Status::ALL.map(Status::as_str))
        .map(|name: String| Status::parse(&name).expect("only listed names get here"))
}

#[derive(Debug, Args)]
pub(crate) struct PageArgs {
    /// At most this many items (the server's default is 100, its maximum 1000).
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u32>,

    /// Continue a listing from the `next page` cursor of the previous one.
    // A KV listing's cursor is a key, which may start with `-`.
    #[arg(long, value_name = "CURSOR", allow_hyphen_values = true)]
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct IdArg {
    /// The invocation id.
    pub(crate) id: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead invocations.
    Ls(DlqLsArgs),
    /// Show one dead invocation and its attempts.
    Show(IdArg),
    /// Requeue one dead invocation (same id, history kept), or many with --all.
    Redrive(RedriveArgs),
    /// Discard one dead invocation for good.
    Discard(IdArg),
}

#[derive(Debug, Args)]
pub(crate) struct DlqLsArgs {
    /// Only this function's dead invocations.
    #[arg(long, value_name = "NAME")]
    pub(crate) function: Option<String>,

    /// Only this subscription's dead deliveries.
    #[arg(long, value_name = "NAME")]
    pub(crate) subscription: Option<String>,

    #[command(flatten)]
    pub(crate) page: PageArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RedriveArgs {
    /// The dead invocation to requeue.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) id: Option<String>,

    /// Requeue every dead invocation that matches --function and --subscription, up to --limit.
    #[arg(long)]
    pub(crate) all: bool,

    /// With --all: only this function's dead invocations.
    #[arg(long, conflicts_with = "id", value_name = "NAME")]
    pub(crate) function: Option<String>,

    /// With --all: only this subscription's dead deliveries.
    #[arg(long, conflicts_with = "id", value_name = "NAME")]
    pub(crate) subscription: Option<String>,

    /// With --all: requeue at most this many.
    #[arg(long, conflicts_with = "id", value_name = "N")]
    pub(crate) limit: Option<u32>,

    /// Send this `Idempotency-Key`: a retry with the same key is answered once.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The topic, as declared in `keel.toml`.
    pub(crate) topic: String,

    /// The event's data, JSON: literal text, `@FILE` to read a file, or `-` to read stdin.
    #[arg(short, long, value_name = "JSON|@FILE|-")]
    pub(crate) data: Option<String>,

    /// The CloudEvent `type` (default: the topic).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) ty: Option<String>,

    /// The CloudEvent `source` (default: `keel-cli`).
    #[arg(long, value_name = "URI")]
    pub(crate) source: Option<String>,

    /// The CloudEvent `subject`.
    #[arg(long, value_name = "SUBJECT")]
    pub(crate) subject: Option<String>,

    /// The CloudEvent `id`; the same source and id are accepted once (default: a new ULID, or
    /// `TOPIC/KEY` with --idempotency-key).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,

    /// Send this `Idempotency-Key`: a retry with the same key and data is answered once.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,

    /// Deliver this much later, e.g. `30s` or `5m` (the event is stored at once).
    #[arg(long, value_name = "DURATION")]
    pub(crate) delay: Option<Delay>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Show one event (by the id `keel publish` printed) and its delivery to each subscription.
    Show(EventIdArg),
}

#[derive(Debug, Args)]
pub(crate) struct EventIdArg {
    /// Keel's id of the event.
    pub(crate) id: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum FunctionsCommand {
    /// Every function: kind, in flight, waiting, queued, paused, breaker.
    Ls,
    /// Show one function's configuration and live state (JSON).
    Show(FunctionArg),
    /// Pause a function: it starts no attempts (async work is held, sync calls get 503) until
    /// resumed, on every node and across restarts.
    Pause(FunctionArg),
    /// Resume a paused function: its held work starts.
    Resume(FunctionArg),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCommand {
    /// Every schedule: when it ticks, what it makes, paused, next and last fire.
    Ls,
    /// Show one schedule's configuration and state (JSON).
    Show(ScheduleArg),
    /// Pause a schedule: its ticks make nothing until resumed, on every node and across restarts.
    Pause(ScheduleArg),
    /// Resume a paused schedule: it fires from its next tick on (no catch-up).
    Resume(ScheduleArg),
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleArg {
    /// The schedule's name, as declared in `keel.toml`.
    pub(crate) name: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowsCommand {
    /// Every declared workflow: its steps in order, their compensations, its notify topic.
    Defs,
    /// Start a run of a workflow and print its id (with --wait: follow it to its end).
    Run(WorkflowRunArgs),
    /// List runs, newest first.
    Ls(WorkflowsLsArgs),
    /// Show one run: each step's invocation, times and output, compensations under the step
    /// they undo.
    Show(RunIdArg),
    /// Cancel a running run: the steps that succeeded are compensated, in reverse.
    Cancel(RunIdArg),
}

#[derive(Debug, Args)]
pub(crate) struct WorkflowRunArgs {
    /// The workflow's name, as declared in `keel.toml`.
    pub(crate) name: String,

    /// The run's input, JSON (without it and --data, the input is null).
    #[arg(value_name = "INPUT_JSON", conflicts_with = "data")]
    pub(crate) input: Option<String>,

    /// The run's input, JSON: literal text, `@FILE` to read a file, or `-` to read stdin.
    #[arg(short, long, value_name = "JSON|@FILE|-")]
    pub(crate) data: Option<String>,

    /// Send this `Idempotency-Key`: the same key again answers with the run it started.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,

    /// Follow the run until it is no longer running or compensating, print its timeline, and
    /// exit 0 only if it succeeded.
    #[arg(long)]
    pub(crate) wait: bool,

    /// With --wait: give up (exit 1) when the run has not ended after this long, e.g. `2m`.
    #[arg(long, requires = "wait", default_value = "60s", value_name = "DURATION", value_parser = wait_parser)]
    pub(crate) timeout: std::time::Duration,
}

/// `--timeout`: a duration in the documented forms, more than zero.
fn wait_parser(text: &str) -> Result<std::time::Duration, String> {
    match keel_core::duration::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("a wait of zero would never see the run end".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub(crate) struct WorkflowsLsArgs {
    /// Only runs of this workflow.
    #[arg(long, value_name = "NAME")]
    pub(crate) workflow: Option<String>,

    /// Only runs in this status.
    #[arg(long, value_parser = run_status_parser())]
    pub(crate) status: Option<RunStatus>,

    #[command(flatten)]
    pub(crate) page: PageArgs,
}

/// Parses a run status by the name the server uses, offering every status in `--help` and errors.
fn run_status_parser() -> impl TypedValueParser<Value = RunStatus> {
    PossibleValuesParser::new(RunStatus::ALL.map(RunStatus::as_str))
        .map(|name: String| RunStatus::parse(&name).expect("only listed names get here"))
}

#[derive(Debug, Args)]
pub(crate) struct RunIdArg {
    /// The run's id, as `keel workflows run` or `ls` printed it.
    pub(crate) id: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegionCommand {
    /// The node's region: role, standing (active, standby, fenced), epoch, primary, peers.
    Status,
    /// Promote a standby region: end its PostgreSQL replica's recovery and raise the epoch so
    /// its nodes admit and the old primary's stand down. Works on the config's database directly.
    Promote(PromoteArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PromoteArgs {
    /// The standby region's config file (its `[storage] url` is the replica to promote).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DepsCommand {
    /// Every dependency: url, breaker, in flight, queued, retry budget, counters.
    Ls,
    /// Show one dependency's configuration and live state (JSON).
    Show(DependencyArg),
}

#[derive(Debug, Args)]
pub(crate) struct DependencyArg {
    /// The dependency's name, as declared in `keel.toml`.
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct FunctionArg {
    /// The function's name, as declared in `keel.toml`.
    pub(crate) name: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// List a namespace's keys with their versions and values, in byte order of the keys.
    Ls(KvLsArgs),
    /// Print a key's JSON value (its version goes to stderr, or into --json's output).
    Get(KvKeyArgs),
    /// Write a key's JSON value and print its new version.
    Put(KvPutArgs),
    /// Delete a key.
    Delete(KvDeleteArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KvLsArgs {
    /// The namespace.
    pub(crate) ns: String,

    /// Only keys that start with this, taken literally (`%` and `_` too).
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,

    #[command(flatten)]
    pub(crate) page: PageArgs,
}

#[derive(Debug, Args)]
pub(crate) struct KvKeyArgs {
    /// The namespace.
    pub(crate) ns: String,
    /// The key within the namespace.
    pub(crate) key: String,
}

#[derive(Debug, Args)]
pub(crate) struct KvPutArgs {
    #[command(flatten)]
    pub(crate) at: KvKeyArgs,

    /// The value, JSON: literal text, `@FILE` to read a file, or `-` to read stdin.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub(crate) value: String,

    /// Write only if the key is at this version (else: precondition failed).
    #[arg(long, value_name = "N")]
    pub(crate) if_version: Option<i64>,

    /// Write only if the key does not exist (else: precondition failed).
    #[arg(long, conflicts_with = "if_version")]
    pub(crate) if_absent: bool,
}

#[derive(Debug, Args)]
pub(crate) struct KvDeleteArgs {
    #[command(flatten)]
    pub(crate) at: KvKeyArgs,

    /// Delete only if the key is at this version (else: precondition failed).
    #[arg(long, value_name = "N")]
    pub(crate) if_version: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key and print its secret, once.
    Create(KeysCreateArgs),
    /// Every key: id, name, scopes, created, expires, last used, revoked.
    Ls(StoreArg),
    /// Revoke a key: within about a second no node accepts it.
    Revoke(KeysRevokeArgs),
    /// Make a new key sign function tokens; the old one keeps verifying for a while.
    RotateSigning(StoreArg),
}

/// `-c keel.toml`: write to the configured store directly instead of calling the API (how the
/// first admin key is made).
#[derive(Debug, Args)]
pub(crate) struct StoreArg {
    /// Work on the store of this config file directly instead of through the API.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct KeysCreateArgs {
    /// A name to know the key by.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: String,

    /// A scope the key holds: `admin`, `read`, `dlq`, `metrics`, `invoke:FN`, `publish:TOPIC`,
    /// `kv:NS:read`, `kv:NS:write`, `workflows:NAME` (names may end in `*`). Repeat for more.
    #[arg(long = "scope", required = true, value_name = "SCOPE", value_parser = scope_parser)]
    pub(crate) scopes: Vec<Scope>,

    /// The key stops working this long after it is made, e.g. `90d` or `12h`.
    #[arg(long, value_name = "DURATION", value_parser = expiry_parser)]
    pub(crate) expires: Option<Expiry>,

    #[command(flatten)]
    pub(crate) store: StoreArg,
}

/// A scope as the server reads it, refused here with the reason when it is not one.
fn scope_parser(text: &str) -> Result<Scope, String> {
    text.parse::<Scope>().map_err(|e| e.to_string())
}

/// `--expires`: a duration (humantime, as every duration of the CLI), kept as typed to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expiry {
    pub(crate) text: String,
    pub(crate) duration: std::time::Duration,
}

fn expiry_parser(text: &str) -> Result<Expiry, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}): e.g. 90d"))?;
    if duration.is_zero() {
        return Err("a key that expires at once is of no use".to_owned());
    }
    Ok(Expiry { text: text.to_owned(), duration })
}

#[derive(Debug, Args)]
pub(crate) struct KeysRevokeArgs {
    /// The key's id (`key_…`, from `keel keys ls`).
    pub(crate) id: String,

    #[command(flatten)]
    pub(crate) store: StoreArg,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// The audit log, newest first.
    Ls(AuditLsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AuditLsArgs {
    /// Only this action, e.g. `key.create` or `dlq.redrive`.
    #[arg(long, value_name = "ACTION")]
    pub(crate) action: Option<String>,

    /// Only what this actor did: a key id, `local` or `anonymous`.
    #[arg(long, value_name = "KEY")]
    pub(crate) actor: Option<String>,

    #[command(flatten)]
    pub(crate) page: PageArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChaosCommand {
    /// Inject a fault on a function, a dependency or the store, for a while, and print its id.
    Inject(ChaosInjectArgs),
    /// The faults in force: target, kind, latency or status, rate, time left.
    Ls,
    /// End a fault now (or every fault with --all): every node stops applying it within a second.
    Clear(ChaosClearArgs),
    /// Run an experiment: load, faults at set times, a steady-state hypothesis checked before,
    /// during and after them, rollbacks. Exit 0 when the hypothesis held, 1 when it did not, 2
    /// when the file is broken (file:line) or could not be carried out.
    Run(ChaosRunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ChaosRunArgs {
    /// The experiment file (see examples/backend/experiments/).
    #[arg(value_name = "EXPERIMENT.toml")]
    pub(crate) file: std::path::PathBuf,

    /// The folder the report goes to: report.md, report.json and the charts (SVG).
    #[arg(long, value_name = "DIR", default_value = "chaos-report")]
    pub(crate) report: std::path::PathBuf,

    /// Scale every time in the file by this factor (0.2 runs a 60 s experiment in 12 s).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub(crate) time_scale: f64,

    /// Only check the file, run nothing.
    #[arg(long)]
    pub(crate) check: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["function", "dependency", "store"])))]
pub(crate) struct ChaosInjectArgs {
    /// Hit attempts of this function.
    #[arg(long, value_name = "NAME")]
    pub(crate) function: Option<String>,

    /// Hit calls through egress to this dependency (its breaker, retries and budget see them).
    #[arg(long, value_name = "NAME")]
    pub(crate) dependency: Option<String>,

    /// Hit the store's writes (latency and error only).
    #[arg(long)]
    pub(crate) store: bool,

    /// What a hit call suffers.
    #[arg(long, value_enum)]
    pub(crate) kind: FaultKind,

    /// With --kind latency: the delay added, e.g. `300ms`, or a range drawn from, `100ms..2s`.
    #[arg(long, value_name = "DURATION|MIN..MAX", required_if_eq("kind", "latency"), value_parser = Latency::parse)]
    pub(crate) latency: Option<Latency>,

    /// With --kind error: the status answered (503 when absent).
    #[arg(long, value_name = "STATUS")]
    pub(crate) status: Option<u16>,

    /// The share of calls hit, more than 0 and at most 1 (1 when absent).
    #[arg(long, value_name = "SHARE")]
    pub(crate) rate: Option<f64>,

    /// How long the fault lasts, e.g. `60s` (at most 24h); it then ends by itself.
    #[arg(long, value_name = "DURATION", value_parser = fault_duration_parser)]
    pub(crate) duration: String,
}

/// The kinds of fault, by the names the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FaultKind {
    /// The call is made after a delay (--latency).
    Latency,
    /// The call is not made: it is answered with --status.
    Error,
    /// The call is not made: the connection is reset.
    Abort,
    /// The call hangs until its timeout.
    Timeout,
    /// A running instance of the (command) function is killed.
    Crash,
}

impl FaultKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Error => "error",
            FaultKind::Abort => "abort",
            FaultKind::Timeout => "timeout",
            FaultKind::Crash => "crash",
        }
    }
}

/// `--latency`: one duration, or `MIN..MAX`, kept as typed to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Latency {
    pub(crate) min: String,
    /// Absent for a fixed latency.
    pub(crate) max: Option<String>,
}

/// `--duration`: a duration in the documented forms, more than zero, kept as typed to send.
fn fault_duration_parser(text: &str) -> Result<String, String> {
    match keel_core::duration::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(text.to_owned()),
        Ok(_) => Err("a fault of no duration would never apply".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub(crate) struct ChaosClearArgs {
    /// The fault's id, as `keel chaos inject` or `ls` printed it.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) id: Option<String>,

    /// Clear every fault in force.
    #[arg(long)]
    pub(crate) all: bool,
}
