//! `keel`, the one binary: runs the server (`keel serve`), checks `keel.toml`, and talks to a
//! running server (`keel invoke`, `keel invocations`, `keel dlq`, `keel publish`, `keel events`,
//! `keel kv`, `keel functions`, `keel keys`, `keel audit`, `keel chaos`), and prints its own shell completions
//! and man page. The commands live in [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::client::{Access, KeelClient};
use cli::keys::Target;
use cli::{
    audit, bench, chaos, completions, deps, dlq, events, functions, invocations, invoke, keys, kv, publish, region,
    schedules, serve, workflows,
};
use cli::{
    AuditCommand, ChaosCommand, Cli, Command, ConfigCommand, DepsCommand, DlqCommand, EventsCommand, FunctionsCommand,
    InvocationsCommand, KeysCommand, KvCommand, RegionCommand, SchedulesCommand, StoreArg,
};

// mimalloc instead of glibc's malloc: the hot path allocates per request (headers, bodies,
// spans), and glibc's allocator was about a tenth of the server's CPU there.
//
// On Linux mimalloc *is* `malloc` (the `override` feature; build.rs makes the linker keep it), and
// Rust's default allocator calls `malloc`. `mimalloc::MiMalloc` as the global allocator would
// pass every allocation to `mi_malloc_aligned`, and mimalloc 3 sends alignment 8 at sizes that are
// not powers of two down a slow path that over-allocates (BENCHMARKS.md, "mimalloc as the
// process's malloc"): 2% of a sync call's instructions. As `malloc` it also serves SQLite.
#[cfg(target_os = "linux")]
extern crate mimalloc as _;
#[cfg(not(target_os = "linux"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sandbox trampoline runs before any runtime thread exists: it switches user per thread
    // and then replaces this process with the function's program.
    if let Command::Sandbox(args) = &cli.command {
        return match &args.spec {
            Some(spec) => keel_server::sandbox::run(spec, &args.command),
            None => keel_server::sandbox::probe(),
        };
    }
    // Text generated from the command line itself needs no runtime.
    match &cli.command {
        Command::Completions(args) => return completions::print(Ok(completions::completion_script(args.shell))),
        Command::Man => return completions::print(completions::man_page()),
        Command::Demo { args } => return demo(args),
        _ => {}
    }
    keel_server::sandbox::this_executable_is_keel();
    // Connections are served on lanes, one thread per core (started by the first listener).
    keel_server::lanes::enable(None);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", describe_error(&error));
            exit_code_of(&error)
        }
    }
}

/// `keel demo`: the example backend's demo lives in `keel-example` (which holds the example's
/// functions and stand-in providers); this finds it beside `keel` or on PATH and runs it.
fn demo(args: &[String]) -> ExitCode {
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("keel-example")));
    let program = match beside.filter(|p| p.is_file()) {
        Some(path) => path.into_os_string(),
        None => "keel-example".into(),
    };
    match std::process::Command::new(&program).arg("demo").args(args).status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c as u8)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "error: keel demo runs keel-example, which is neither beside this keel nor on PATH\n\
                 hint: from a checkout, `cargo run --release -p keel-example -- demo` builds and runs it"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: cannot run {}: {error}", program.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}

/// 2 for a configuration that does not load (`keys -c keel.toml`), 1 for any other failure.
fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<keel_core::config::ConfigErrors>().is_some() {
        ExitCode::from(cli::EXIT_USAGE_OR_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    let access = Access { url: cli.url.clone(), api_key: cli.api_key.clone(), ca_file: cli.ca_file.clone() };
    let client = || KeelClient::connect(&access);
    // `-c keel.toml`: the store directly; otherwise the API.
    let target = |store: &StoreArg| -> anyhow::Result<Target> {
        match &store.config {
            Some(path) => Target::open_store(path),
            None => Ok(Target::Api(Box::new(client()?))),
        }
    };
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Bench(args) => bench::run(args, &access, json).await,
        Command::Config(ConfigCommand::Check(args)) => Ok(serve::check(&args)),
        Command::Invoke(args) => invoke::run(&client()?, json, args).await,
        Command::Invocations(command) => {
            let client = client()?;
            match command {
                InvocationsCommand::Ls(args) => invocations::ls(&client, json, args).await?,
                InvocationsCommand::Show(args) => invocations::show(&client, json, args).await?,
                InvocationsCommand::Cancel(args) => invocations::cancel(&client, json, args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(command) => {
            let client = client()?;
            match command {
                DlqCommand::Ls(args) => dlq::ls(&client, json, args).await?,
                DlqCommand::Show(args) => invocations::show(&client, json, args).await?,
                DlqCommand::Redrive(args) => dlq::redrive(&client, json, args).await?,
                DlqCommand::Discard(args) => dlq::discard(&client, json, args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(args) => publish::run(&client()?, json, args).await.map(|()| ExitCode::SUCCESS),
        Command::Events(EventsCommand::Show(args)) => {
            events::show(&client()?, json, args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Deps(command) => {
            let client = client()?;
            match command {
                DepsCommand::Ls => deps::ls(&client, json).await?,
                DepsCommand::Show(args) => deps::show(&client, args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Functions(command) => {
            let client = client()?;
            match command {
                FunctionsCommand::Ls => functions::ls(&client, json).await?,
                FunctionsCommand::Show(args) => functions::show(&client, args).await?,
                FunctionsCommand::Pause(args) => functions::set_paused(&client, json, args, true).await?,
                FunctionsCommand::Resume(args) => functions::set_paused(&client, json, args, false).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedules(command) => {
            let client = client()?;
            match command {
                SchedulesCommand::Ls => schedules::ls(&client, json).await?,
                SchedulesCommand::Show(args) => schedules::show(&client, args).await?,
                SchedulesCommand::Pause(args) => schedules::set_paused(&client, json, args, true).await?,
                SchedulesCommand::Resume(args) => schedules::set_paused(&client, json, args, false).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Workflows(command) => workflows::run(&client()?, json, command).await,
        Command::Keys(command) => {
            match command {
                KeysCommand::Create(args) => keys::create(&target(&args.store)?, json, args).await?,
                KeysCommand::Ls(store) => keys::ls(&target(&store)?, json).await?,
                KeysCommand::Revoke(args) => keys::revoke(&target(&args.store)?, json, args).await?,
                KeysCommand::RotateSigning(store) => keys::rotate_signing(&target(&store)?, json).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Region(RegionCommand::Status) => region::status(&client()?, json).await.map(|()| ExitCode::SUCCESS),
        Command::Region(RegionCommand::Promote(args)) => {
            region::promote(&args.config, json).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Ls(args)) => audit::ls(&client()?, json, args).await.map(|()| ExitCode::SUCCESS),
        Command::Chaos(ChaosCommand::Run(args)) => chaos::run(client()?, json, args).await,
        Command::Chaos(command) => {
            let client = client()?;
            match command {
                ChaosCommand::Run(_) => unreachable!("matched above"),
                ChaosCommand::Inject(args) => chaos::inject(&client, json, args).await?,
                ChaosCommand::Ls => chaos::ls(&client, json).await?,
                ChaosCommand::Clear(args) => chaos::clear(&client, json, args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(_) | Command::Completions(_) | Command::Man | Command::Demo { .. } => {
            unreachable!("handled in main before the runtime starts")
        }
        Command::Kv(command) => {
            let client = client()?;
            match command {
                KvCommand::Ls(args) => kv::ls(&client, json, args).await?,
                KvCommand::Get(args) => kv::get(&client, json, args).await?,
                KvCommand::Put(args) => kv::put(&client, json, args).await?,
                KvCommand::Delete(args) => kv::delete(&client, json, args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The error and its causes, `: `-separated, each said once: a message that already quotes its
/// cause (`cannot listen on 127.0.0.1:7733: Address already in use`) is not followed by it again.
fn describe_error(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use std::process::ExitCode;

    use super::{describe_error, exit_code_of};

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:7733: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the store failed")]
    struct Terse {
        source: std::io::Error,
    }

    fn in_use() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use (os error 98)")
    }

    #[test]
    fn a_cause_is_said_once() {
        let error = anyhow::Error::new(Quoting { source: in_use() });
        assert_eq!(describe_error(&error), "cannot listen on 127.0.0.1:7733: Address already in use (os error 98)");
    }

    #[test]
    fn a_cause_not_yet_said_is_added() {
        let error = anyhow::Error::new(Terse { source: in_use() });
        assert_eq!(describe_error(&error), "the store failed: Address already in use (os error 98)");
        let error = anyhow::anyhow!("outer").context("context");
        assert_eq!(describe_error(&error), "context: outer");
    }

    #[test]
    fn a_config_error_exits_2_and_any_other_failure_1() {
        let overrides = keel_core::config::Overrides::default();
        let errors = keel_core::config::load_str("keel.toml", "[server]\nlisten = 7\n", &overrides).unwrap_err();
        assert_eq!(exit_code_of(&anyhow::Error::new(errors)), ExitCode::from(2));
        assert_eq!(exit_code_of(&anyhow::anyhow!("cannot reach http://127.0.0.1:7733")), ExitCode::FAILURE);
    }
}
