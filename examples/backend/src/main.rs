//! `keel-example`: with no arguments (or `up`), starts Keel with the example backend on
//! embedded SQLite and prints what to try; `keel-example fn NAME` serves one function (this is
//! what Keel runs for each instance).

use std::time::Duration;

use clap::{Parser, Subcommand};
use keel_example::app::{self, Options};
use keel_example::demo;
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
    /// Run the chaos experiments of examples/backend/experiments against the backend and print
    /// each verdict (email provider down, payments failing, instances killed, Keel SIGKILLed);
    /// exit 0 when every hypothesis held, 1 when one did not.
    Demo(DemoArgs),
    /// Keel with the backend and chaos on, for `demo` (which starts, kills and restarts it).
    #[command(hide = true)]
    DemoNode(DemoNodeArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Scale every time in the experiments (CI runs them at 0.3).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Where the reports go (report.md, report.json and charts, a folder per experiment).
    #[arg(long, default_value = "demo-report")]
    report: std::path::PathBuf,
    /// Only this experiment (repeatable): email-outage, payments-flaky, instance-crash, keel-restart.
    #[arg(long)]
    only: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct DemoNodeArgs {
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[arg(long)]
    state_dir: std::path::PathBuf,
    #[arg(long)]
    email_url: String,
    #[arg(long)]
    payments_url: String,
    #[arg(long)]
    key_file: std::path::PathBuf,
    /// Scales every breaker's `open_for` (the demo passes its own `--time-scale`).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
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
        Some(Command::Demo(args)) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
                )
                .init();
            let options = demo::DemoOptions { time_scale: args.time_scale, report: args.report, only: args.only };
            if demo::run(options).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Some(Command::DemoNode(args)) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .init();
            demo::node(demo::NodeOptions {
                listen: args.listen,
                state_dir: args.state_dir,
                email_url: args.email_url,
                payments_url: args.payments_url,
                key_file: args.key_file,
                time_scale: args.time_scale,
            })
            .await
        }
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
