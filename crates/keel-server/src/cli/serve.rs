//! `keel serve` and `keel config check`: loading `keel.toml` with its layers, logging, and the
//! server itself.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keel_core::config::{self, Config, ConfigErrors, Overrides, TomlValue};

use super::{CheckArgs, LogFormat, ServeArgs, EXIT_USAGE_OR_CONFIG};

/// The file `keel serve` reads when `-c` is not given, if it exists.
const DEFAULT_CONFIG: &str = "keel.toml";

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.clone().or_else(default_config_if_present);
    let config = match config::load(path.as_deref(), &serve_overrides(&args)) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(EXIT_USAGE_OR_CONFIG));
        }
    };
    let _telemetry = init_logging(args.log_format);
    match &path {
        Some(path) => tracing::info!(config = %path.display(), "configuration loaded"),
        None => tracing::info!("no {DEFAULT_CONFIG}; running on built-in defaults"),
    }
    tracing::info!(database = %where_state_lives(&config.storage), "state");
    keel_server::serve(config).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check(args: &CheckArgs) -> ExitCode {
    let result = config::load(Some(&args.config), &Overrides::from_process_env());
    let (report, code) = check_report(&args.config, &result);
    match code {
        0 => println!("{report}"),
        _ => eprintln!("{report}"),
    }
    ExitCode::from(code)
}

/// What `keel config check` prints, and its exit status: 0, or 2 as for any configuration error.
fn check_report(path: &Path, result: &Result<Config, ConfigErrors>) -> (String, u8) {
    match result {
        Ok(config) => {
            let names: Vec<&str> = config.functions.keys().map(String::as_str).collect();
            let count = match names.len() {
                1 => "1 function".to_owned(),
                n => format!("{n} functions"),
            };
            let summary = if names.is_empty() { count } else { format!("{count}: {}", names.join(", ")) };
            (format!("{}: ok ({summary})", path.display()), 0)
        }
        Err(errors) => (errors.to_string(), EXIT_USAGE_OR_CONFIG),
    }
}

/// Where the state is, for the start-up log: a SQLite file as an absolute path, PostgreSQL
/// without its password.
fn where_state_lives(storage: &config::StorageConfig) -> String {
    match storage.sqlite_path() {
        Some(":memory:") => "in memory (nothing is kept after exit)".to_owned(),
        Some(path) => std::path::absolute(path).map_or_else(|_| path.to_owned(), |p| p.display().to_string()),
        None => match url::Url::parse(&storage.url) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => storage.url.clone(),
        },
    }
}

/// `keel.toml` in the working directory, unless there is none (then built-in defaults apply).
/// Any other reason it cannot be read is left for [`config::load`] to report.
fn default_config_if_present() -> Option<PathBuf> {
    let path = PathBuf::from(DEFAULT_CONFIG);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => Some(path),
    }
}

/// The `KEEL_` environment, then the flags given, as config layers.
fn serve_overrides(args: &ServeArgs) -> Overrides {
    let mut overrides = Overrides::from_process_env();
    let flags = [("server.listen", "--listen", &args.listen), ("storage.url", "--storage-url", &args.storage_url)];
    for (key, flag, value) in flags {
        if let Some(value) = value {
            overrides.flags.push((key.to_owned(), flag.to_owned(), TomlValue::String(value.clone())));
        }
    }
    overrides
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`): JSON lines for machines, unless
/// stdout is a terminal or `--log-format pretty` says otherwise; traces over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the guard until exit: dropping it flushes traces.
fn init_logging(format: Option<LogFormat>) -> keel_server::telemetry::Telemetry {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    keel_server::telemetry::init(format == LogFormat::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(listen: Option<&str>, storage_url: Option<&str>) -> ServeArgs {
        ServeArgs {
            config: None,
            listen: listen.map(str::to_owned),
            storage_url: storage_url.map(str::to_owned),
            log_format: None,
        }
    }

    #[test]
    fn flags_become_overrides_under_their_keys() {
        let overrides = serve_overrides(&serve_args(Some("0.0.0.0:80"), Some("sqlite::memory:")));
        let flags: Vec<(&str, &str)> =
            overrides.flags.iter().map(|(key, flag, _)| (key.as_str(), flag.as_str())).collect();
        assert_eq!(flags, [("server.listen", "--listen"), ("storage.url", "--storage-url")]);
        assert_eq!(overrides.flags[0].2, TomlValue::String("0.0.0.0:80".into()));
    }

    #[test]
    fn absent_flags_override_nothing() {
        assert!(serve_overrides(&serve_args(None, None)).flags.is_empty());
    }

    #[test]
    fn the_state_is_named_absolute_and_without_a_password() {
        let storage = |url: &str| config::StorageConfig { url: url.to_owned(), fsync: true };
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            where_state_lives(&storage("sqlite://.keel/keel.db")),
            cwd.join(".keel/keel.db").display().to_string()
        );
        assert_eq!(where_state_lives(&storage("sqlite:///srv/keel.db")), "/srv/keel.db");
        assert_eq!(where_state_lives(&storage("sqlite::memory:")), "in memory (nothing is kept after exit)");
        assert_eq!(
            where_state_lives(&storage("postgres://keel:secret@db:5432/keel")),
            "postgres://keel:***@db:5432/keel"
        );
    }

    #[test]
    fn check_names_the_functions_it_found() {
        let text = "[functions.b]\nurl = \"http://127.0.0.1:9001/b\"\n\
                    [functions.a]\nurl = \"http://127.0.0.1:9001/a\"\n";
        let result = config::load_str("keel.toml", text, &Overrides::default());
        let (report, code) = check_report(Path::new("keel.toml"), &result);
        assert_eq!((report.as_str(), code), ("keel.toml: ok (2 functions: a, b)", 0));

        let result = config::load_str("keel.toml", "", &Overrides::default());
        let (report, _) = check_report(Path::new("keel.toml"), &result);
        assert_eq!(report, "keel.toml: ok (0 functions)");
    }

    #[test]
    fn check_prints_every_error_and_fails() {
        let result = config::load_str("keel.toml", "[server]\nlisten = 7\n", &Overrides::default());
        let (report, code) = check_report(Path::new("keel.toml"), &result);
        assert_eq!(code, 2, "a config error exits 2, as `keel serve` does");
        assert!(report.starts_with("keel.toml:2:"), "{report}");
    }
}
