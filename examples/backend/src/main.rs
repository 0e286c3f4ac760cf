//! `keel-example`: with no arguments (or `up`), starts Keel with the example backend on
//! embedded SQLite and prints what to try; `keel-example fn NAME` serves one function (this is
//! what Keel runs for each instance).

use std::time::Duration;

use clap::{Parser, Subcommand};
use keel_example::app::{self, Options};
use keel_example::functions;
use keel_example::providers::Behaviour;

#[derive(Debug, Parser)]
#[command(about = "An example app backend on Keel")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    up: UpArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Keel with the example backend (the default).
    Up,
    /// Serve one function on $PORT (Keel runs this for each instance).
    Fn { name: String },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where Keel listens.
    #[arg(long, default_value = "127.0.0.1:7733")]
    listen: String,
    /// Directory of the SQLite database.
    #[arg(long, default_value = ".keel")]
    state_dir: std::path::PathBuf,
    /// Share of calls the email provider fails with 503 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.3)]
    email_error_rate: f64,
    /// Added latency of the email provider.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    email_latency: Duration,
    /// Share of calls the payments provider fails with 503.
    #[arg(long, default_value_t = 0.1)]
    payments_error_rate: f64,
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    payments_latency: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Fn { name }) => functions::serve(&name).await,
        None | Some(Command::Up) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,keel::function=info".into()),
                )
                .init();
            let args = cli.up;
            let options = Options {
                listen: args.listen.parse()?,
                state_dir: args.state_dir,
                email: Behaviour { error_rate: args.email_error_rate, latency: args.email_latency },
                payments: Behaviour { error_rate: args.payments_error_rate, latency: args.payments_latency },
            };
            app::run(options).await
        }
    }
}
