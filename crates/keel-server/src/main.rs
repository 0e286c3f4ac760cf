//! `keel`, the one binary: runs the server (`keel serve`), checks `keel.toml`, and talks to a
//! running server (`keel invoke`, `keel invocations`, `keel dlq`, `keel publish`, `keel events`,
//! `keel kv`). The commands live in [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::client::KeelClient;
use cli::{bench, dlq, events, invocations, invoke, kv, publish, serve};
use cli::{Cli, Command, ConfigCommand, DlqCommand, EventsCommand, InvocationsCommand, KvCommand};

/// mimalloc instead of glibc's malloc: the hot path allocates per request (headers, bodies,
/// spans), and glibc's allocator was about a tenth of the server's CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    let client = || KeelClient::new(&cli.url);
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Bench(args) => bench::run(args, &cli.url, json).await,
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
        Command::Kv(command) => {
            let client = client()?;
            match command {
                KvCommand::Get(args) => kv::get(&client, json, args).await?,
                KvCommand::Put(args) => kv::put(&client, json, args).await?,
                KvCommand::Delete(args) => kv::delete(&client, json, args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
