//! The real `keel` binary, SIGKILLed under load and restarted on the same database.

use std::process::Child;
use std::time::Duration;

use crate::load::{submit_many, wait_all_succeeded};
use crate::support::Functions;

pub(crate) use crate::support::{free_port, spawn_keel, wait_ready};

/// [`spawn_keel`] with more environment (a crash point, say).
pub(crate) fn spawn_keel_with_env(
    config: &std::path::Path,
    port: u16,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Child {
    crate::support::spawn_keel_with(config, port, log, &[], env)
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
    crate::support::eventually("100 successes before the kill", Duration::from_secs(30), || async {
        (fns.successes().len() >= 100).then_some(())
    })
    .await;
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
