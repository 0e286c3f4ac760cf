//! `keel serve` as a user runs it: where its state goes, what it logs, how it stops, and how it
//! says it cannot start.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::crash::{free_port, wait_ready};
use crate::support::post_json;

/// `keel serve -c CONFIG --listen 127.0.0.1:PORT` started in `cwd`, output (pretty, as a person
/// asks for it) into `log`.
pub(crate) fn serve_in(cwd: &Path, config: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "-c", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "pretty"])
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting keel")
}

/// Waits for `child` to exit, at most `limit`.
pub(crate) async fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    crate::support::eventually("keel to exit after it was asked to stop", limit, || {
        std::future::ready(child.try_wait().unwrap())
    })
    .await
}

/// SIGTERM, as systemd or `kill` sends it.
pub(crate) fn sigterm(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lives_beside_keel_toml_and_a_clean_stop_folds_the_wal() {
    let (_fns, addr) = crate::support::Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, elsewhere) = (dir.path().join("app"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = app.join("keel.toml");
    std::fs::write(&config, format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n")).unwrap();
    let (port, log) = (free_port(), dir.path().join("keel.log"));
    let base = format!("http://127.0.0.1:{port}");
    let mut keel = serve_in(&elsewhere, &config, port, &log);
    wait_ready(&base, &mut keel).await;
    let (status, _, _) = post_json(&format!("{base}/v1/functions/ok/invoke"), "{}").await;
    assert_eq!(status, 200);

    let database = app.join(".keel").join("keel.db");
    assert!(database.exists(), "the default state is beside keel.toml, not in the working directory");
    assert!(!elsewhere.join(".keel").exists());
    sigterm(&keel);
    let status = exit_within(&mut keel, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");

    let wal = app.join(".keel").join("keel.db-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_bytes, 0, "a clean stop leaves the write-ahead log folded into the database");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains(&database.display().to_string()), "the database path is logged: {output}");
    assert!(output.contains("keel stopped"), "{output}");
    assert!(!output.contains('\u{1b}'), "no ANSI colours when the output is not a terminal: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "").unwrap();
    let log = dir.path().join("keel.log");
    let mut keel = serve_in(dir.path(), &config, port, &log);
    let status = exit_within(&mut keel, Duration::from_secs(20)).await;
    assert!(!status.success());
    let output = std::fs::read_to_string(&log).unwrap();
    let error = output.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{output}"));
    assert!(error.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{error}");
    assert_eq!(error.to_lowercase().matches("address already in use").count(), 1, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_beyond_loopback_without_auth_is_refused_and_says_how_to_turn_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "").unwrap();
    let log = std::fs::File::create(dir.path().join("keel.log")).unwrap();
    let mut keel = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(dir.path())
        .args(["serve", "-c"])
        .arg(&config)
        .args(["--listen", "0.0.0.0:0"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = exit_within(&mut keel, Duration::from_secs(20)).await;
    assert!(!status.success());
    let output = std::fs::read_to_string(dir.path().join("keel.log")).unwrap();
    assert!(output.contains("0.0.0.0:0 is not a loopback address and auth is off"), "{output}");
    assert!(output.contains("keel keys create --name admin --scope admin -c keel.toml"), "{output}");
    assert!(output.contains("mode = \"keys\""), "{output}");
    assert!(!dir.path().join(".keel").exists(), "nothing was opened");
}

/// A reader of Keel's stdout that stops reading (a stuck log shipper, a pipe nobody drains)
/// costs log lines, never invocations: lines are written behind by a thread of their own. Before,
/// each line was written by the worker that logged it, and once the pipe's 64 KiB were full every
/// worker blocked in that write: Keel stopped answering at all, `/healthz` included, after about
/// 160 async invocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_stalls_no_invocation() {
    let (_fns, addr) = crate::support::Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let store = format!("[storage]\nurl = \"sqlite://{}/keel.db\"\n", dir.path().display());
    std::fs::write(&config, format!("{store}[functions.ok]\nurl = \"http://{addr}/ok\"\n")).unwrap();
    let (unread, pipe) = std::io::pipe().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut keel = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "-c", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(pipe.try_clone().unwrap())
        .stderr(pipe)
        .spawn()
        .expect("starting keel");
    wait_ready(&base, &mut keel).await;

    // Each one logs its `attempt finished` line (~300 bytes): 600 of them are three pipes' worth.
    const INVOCATIONS: usize = 600;
    for _ in 0..INVOCATIONS {
        let (status, _, body) = post_json(&format!("{base}/v1/functions/ok/invocations"), "{}").await;
        assert_eq!(status, 202, "{body}");
    }
    crate::support::wait_quiet(&base, Duration::from_secs(60)).await;
    let (_, _, metrics) = crate::support::request("GET", &format!("{base}/metrics"), &[], "").await;
    let metrics = String::from_utf8_lossy(&metrics);
    let line = format!("keel_invocations_completed_total{{function=\"ok\",outcome=\"succeeded\"}} {INVOCATIONS}");
    assert!(metrics.lines().any(|l| l == line), "every invocation ran: {metrics}");
    assert!(metrics.lines().any(|l| l == "keel_log_lines_dropped_total 0"), "nothing dropped yet: {metrics}");
    keel.kill().unwrap();
    keel.wait().unwrap();
    drop(unread);
}
