//! One instance: the program started under a watchdog in its own process group, probed until
//! ready, then supervised until it exits or the pool stops it.
//!
//! Why a watchdog: no function process may outlive Keel, even when Keel is SIGKILLed and runs
//! no code at all. `PR_SET_PDEATHSIG` would need `unsafe` and fires when the *thread* that
//! spawned the child exits (tokio's blocking threads come and go), so instead each instance is
//! started as `sh -c WATCHDOG`: the shell puts a tiny background reader on a pipe whose only
//! writer is Keel, then `exec`s the program (so the program keeps the shell's pid and is the
//! group leader). When Keel dies for any reason the kernel closes the pipe, the reader sees
//! end-of-file and kills the whole process group: the program and anything it started.
//!
//! A sandboxed instance has one more step between: the shell `exec`s `keel __sandbox`, which
//! applies the limits to itself and `exec`s the program (same pid, same group). The watchdog
//! reader was started before, so the limits never bind it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::output::{forward, Tail};
use super::ProcessPool;

/// `$@` is the program and its arguments. fd 3 keeps Keel's pipe for the reader only.
const WATCHDOG: &str = "exec 3<&0 </dev/null\n{ read -r line <&3; kill -9 0; } &\nexec \"$@\" 3<&-\n";
/// The shell exports `PWD` of its own accord; an instance gets only what was declared.
const UNSET_PWD: &str = "unset PWD\n";
/// Between SIGTERM and SIGKILL when an instance is stopped.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a readiness probe may take before it counts as "not yet".
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for the last output lines once the process group is gone.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// Why an instance's task ended.
enum End {
    /// It never became ready: the reason, to be shown to the attempts waiting for it, and how
    /// it exited if it did.
    NotReady(String, Option<ExitStatus>),
    /// It was ready and then exited by itself.
    Crashed(ExitStatus),
    /// The pool asked it to stop.
    Stopped,
}

/// Runs instance `id` on `port` from start to exit, reporting each step to `pool`.
pub(super) async fn run(pool: Arc<ProcessPool>, id: u64, port: u16, mut stop: oneshot::Receiver<()>) {
    let spawned_at = Instant::now();
    let mut child = match spawn(&pool, id, port) {
        Ok(child) => child,
        Err(reason) => return pool.start_failed(id, format!("function {}: {reason}", pool.function)),
    };
    // Held until this task ends: the watchdog's pipe (see the module doc).
    let _watchdog_pipe = child.stdin.take();
    let pid = child.id().and_then(|pid| Pid::from_raw(pid as i32));
    pool.set_pid(id, child.id());
    let tail = Tail::default();
    let readers = [
        child.stdout.take().map(|out| forward(out, "stdout", pool.function.clone(), id, tail.clone())),
        child.stderr.take().map(|err| forward(err, "stderr", pool.function.clone(), id, tail.clone())),
    ];
    let config = &pool.config;
    let ready = tokio::select! {
        ready = wait_ready(port, config.health_path.as_deref(), config.startup_timeout) => ready.map_err(|r| (r, None)),
        status = child.wait() => Err((format!("exited before it was ready ({})", describe(&status)), status.ok())),
        _ = &mut stop => Err((String::new(), None)),
    };
    let end = match ready {
        Err((reason, _)) if reason.is_empty() => End::Stopped,
        Err((reason, status)) => End::NotReady(reason, status),
        Ok(()) => {
            pool.mark_ready(id, spawned_at.elapsed());
            let end = tokio::select! {
                status = child.wait() => status.map_or(End::Stopped, End::Crashed),
                // Retired because its port refused an attempt: it may have exited already.
                _ = &mut stop => match child.try_wait() {
                    Ok(Some(status)) => End::Crashed(status),
                    _ => End::Stopped,
                },
            };
            if matches!(end, End::Crashed(_)) {
                // Out of service now, not once its output is drained below.
                pool.retire(id);
            }
            end
        }
    };
    if matches!(end, End::Stopped | End::NotReady(..)) {
        terminate(&mut child, pid).await;
    }
    // The program is gone; take its children and the watchdog with it.
    if let Some(pid) = pid {
        let _ = kill_process_group(pid, Signal::KILL);
    }
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, reader).await;
    }
    let name = &pool.function;
    match end {
        End::Stopped => {
            tracing::info!(function = %name, instance = id, "instance stopped");
            pool.exited(id, None);
        }
        End::NotReady(reason, status) => {
            let limit = status.and_then(|status| limit_hit(&pool, id, status, &tail)).unwrap_or_default();
            let message =
                format!("function {name}: instance {id} did not become ready: {reason}{limit}{}", tail.describe());
            pool.start_failed(id, message);
        }
        End::Crashed(status) => {
            let limit = limit_hit(&pool, id, status, &tail).unwrap_or_default();
            let message =
                format!("function {name}: instance {id} exited unexpectedly ({status}){limit}{}", tail.describe());
            tracing::warn!(function = %name, instance = id, %status, "instance exited unexpectedly");
            pool.exited(id, Some(message));
        }
    }
}

/// `, killed by the cpu limit (…)` when a sandbox limit explains the exit (and logged so).
fn limit_hit(pool: &ProcessPool, id: u64, status: ExitStatus, tail: &Tail) -> Option<String> {
    let sandbox = pool.config.sandbox.as_ref()?;
    let limit = crate::sandbox::limit_hit(sandbox, status.into(), &tail.text())?;
    tracing::warn!(function = %pool.function, instance = id, %status, %limit, "instance stopped by a sandbox limit");
    Some(format!(", stopped by {limit}"))
}

fn spawn(pool: &ProcessPool, id: u64, port: u16) -> Result<Child, String> {
    let config = &pool.config;
    let program = pool.program.as_ref().map_err(Clone::clone)?;
    let mut command = Command::new("/bin/sh");
    let script = if config.env.contains_key("PWD") { WATCHDOG.to_owned() } else { format!("{UNSET_PWD}{WATCHDOG}") };
    command.arg("-c").arg(script).arg("keel-watchdog");
    if let Some(sandbox) = &pool.sandbox {
        let trampoline = sandbox.trampoline.as_ref().map_err(Clone::clone)?;
        command.arg(trampoline).args(["__sandbox", "--spec", &sandbox.spec, "--"]);
    }
    command.arg(program).args(&config.command[1..]);
    command
        .env_clear()
        .envs(&config.env)
        .env("PORT", port.to_string())
        .env("KEEL_URL", &pool.keel_url)
        .env("KEEL_FUNCTION", &*pool.function)
        .env("KEEL_INSTANCE", id.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    command.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// SIGTERM, then SIGKILL for the whole group if it has not exited after [`STOP_GRACE`].
async fn terminate(child: &mut Child, pid: Option<Pid>) {
    if let Some(pid) = pid {
        let _ = kill_process(pid, Signal::TERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        if let Some(pid) = pid {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = child.wait().await;
    }
}

/// Probes until the instance accepts a connection (or answers `GET health_path` with 200).
/// Probing is the only way to learn that a program is listening; the interval is short so that
/// it adds little to a cold start.
async fn wait_ready(port: u16, health_path: Option<&str>, startup_timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + startup_timeout;
    let mut probes = 0u32;
    loop {
        let last = match tokio::time::timeout(PROBE_TIMEOUT, probe(port, health_path)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => why,
            Err(_) => format!("the probe took over {}", humantime::format_duration(PROBE_TIMEOUT)),
        };
        if Instant::now() >= deadline {
            let waited = humantime::format_duration(startup_timeout);
            return Err(format!("not ready within startup_timeout ({waited}): {last} (port {port})"));
        }
        probes += 1;
        let step = if probes < 100 { Duration::from_millis(10) } else { Duration::from_millis(50) };
        tokio::time::sleep(step.min(deadline - Instant::now())).await;
    }
}

async fn probe(port: u16, health_path: Option<&str>) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|_| "nothing accepted a connection on PORT".to_owned())?;
    let Some(path) = health_path else {
        return Ok(());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.map_err(|e| format!("GET {path}: {e}"))?;
    let status = String::from_utf8_lossy(&head[9..12]).into_owned();
    if status == "200" {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    status.as_ref().map_or_else(|e| format!("unknown status: {e}"), |s| s.to_string())
}

/// The program to run: a name without `/` is looked up on Keel's `PATH` (the instance gets no
/// `PATH` of its own unless `env` declares one); a path is used as written, relative to `cwd`.
pub(super) fn resolve_program(name: &str) -> Result<std::path::PathBuf, String> {
    if name.contains('/') {
        return Ok(Path::new(name).to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("program {name:?} not found on Keel's PATH"))
}
