//! The README's "Your first function", run as written: `examples/first-function` (a Python
//! standard-library function and a minimal keel.toml) under the real `keel serve`, driven with
//! the `keel` commands the walkthrough shows.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::crash::{free_port, wait_ready};
use crate::serve::{exit_within, serve_in, sigterm};

/// `keel ARGS…` against `base`; its stdout, or a panic with its stderr.
fn keel(base: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(args).env("KEEL_URL", base).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "keel {args:?}: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Polls an invocation until it is no longer queued, running or retrying.
async fn settled(base: &str, id: &str) -> serde_json::Value {
    crate::support::settled(base, id, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_function_walkthrough_runs_as_written() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/first-function");
    let dir = tempfile::tempdir().unwrap();
    for file in ["keel.toml", "greet.py"] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    let (port, log) = (free_port(), dir.path().join("keel.log"));
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve_in(dir.path(), Path::new("keel.toml"), port, &log);
    wait_ready(&base, &mut server).await;

    let greeting = keel(&base, &["invoke", "greet", "-d", r#"{"name": "Ada"}"#]);
    assert!(greeting.contains("Hello, Ada!"), "{greeting}");

    let id = keel(&base, &["invoke", "greet", "--async", "-d", r#"{"name": "Grace"}"#]).trim().to_string();
    assert_eq!(settled(&base, &id).await["status"], "succeeded");

    std::fs::write(dir.path().join("OUTAGE"), "").unwrap();
    let id = keel(&base, &["invoke", "greet", "--async", "-d", r#"{"name": "Linus"}"#]).trim().to_string();
    let dead = settled(&base, &id).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["attempts"].as_array().unwrap().len(), 3, "max_attempts = 3, then the DLQ: {dead}");
    assert!(keel(&base, &["dlq", "ls"]).contains(&id));

    std::fs::remove_file(dir.path().join("OUTAGE")).unwrap();
    keel(&base, &["dlq", "redrive", &id]);
    let redriven = settled(&base, &id).await;
    assert_eq!(redriven["status"], "succeeded", "{redriven}");

    sigterm(&server);
    assert!(exit_within(&mut server, Duration::from_secs(20)).await.success());
    assert!(dir.path().join(".keel/keel.db").exists(), "state beside keel.toml");
}
