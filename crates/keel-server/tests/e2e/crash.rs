//! The real `keel` binary, SIGKILLed under load and restarted on the same database.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::{submit_many, wait_all_succeeded};
use crate::support::{get_json, Functions};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn spawn_keel(config: &std::path::Path, port: u16, log: &std::path::Path) -> Child {
    spawn_keel_with_env(config, port, log, &[])
}

/// Starts the real `keel serve` on `port`, appending its output to `log`. `KEEL_BIN` names
/// another binary than the one cargo built (a long kill loop runs a copy that rebuilds leave alone).
pub(crate) fn spawn_keel_with_env(
    config: &std::path::Path,
    port: u16,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let binary = std::env::var("KEEL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keel").to_string());
    Command::new(binary)
        .args(["serve", "-c", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting keel")
}

pub(crate) async fn wait_ready(base: &str, child: &mut Child) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("keel exited early: {status}");
        }
        if std::net::TcpStream::connect(base.trim_start_matches("http://")).is_ok() {
            let ready = tokio::time::timeout(Duration::from_secs(1), get_json(&format!("{base}/readyz"))).await;
            if matches!(ready, Ok((200, _, _))) {
                return;
            }
        }
        assert!(Instant::now() < end, "keel not ready at {base}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_thousand_in_flight_loses_no_accepted_invocation() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"sqlite://{}/keel.db\"\n\n[functions.work]\nurl = \"http://{addr}/slow?ms=50\"\n\
             concurrency = 16\nretry = {{ max_attempts = 10, initial = \"10ms\", max = \"100ms\" }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("keel.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;

    // Killed while submissions are still arriving and earlier ones are queued or running.
    let submitting = tokio::spawn({
        let base = base.clone();
        async move { submit_many(&base, "work", 1000).await }
    });
    let end = Instant::now() + Duration::from_secs(30);
    while fns.successes().len() < 100 {
        assert!(Instant::now() < end, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    keel.kill().unwrap(); // SIGKILL
    keel.wait().unwrap();
    let accepted = submitting.await.unwrap();
    let done_before = fns.successes().len();
    assert!(accepted.len() > done_before, "the kill must land mid-work ({done_before} of {} done)", accepted.len());

    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;
    let succeeded = wait_all_succeeded(&base, "work", &accepted, Duration::from_secs(120)).await;
    keel.kill().unwrap();
    keel.wait().unwrap();

    // An invocation committed just before the kill may have lost its 202: it still runs, so
    // `succeeded` may hold a few more than `accepted` — never fewer (every accepted one is in it).
    assert!(succeeded.len() <= accepted.len() + 64, "{} succeeded for {} accepted", succeeded.len(), accepted.len());
    let successes = fns.successes();
    let missing: Vec<_> = accepted.iter().filter(|id| !successes.contains_key(*id)).collect();
    assert!(missing.is_empty(), "the function never completed {missing:?}");
}
