//! `sandbox` on `command` functions, end to end: a real `keel serve` (so that instances start
//! through the real `keel __sandbox` trampoline) running `python3` programs that fork, allocate,
//! spin and read past their limits. Each limit fails the attempt that ran into it (retried, then
//! dead), names itself in the function's `last_error`, and harms nothing else.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::crash::{free_port, wait_ready};
use crate::serve::serve_in;
use crate::support::{eventually, eventually_or_why, fast_retry, get_json, post_json};

/// Does what its JSON body asks, then answers: `alloc` 600 MiB, `spin` forever, `fork` up to 500
/// sleeping children, `read` a file. A failure of `alloc` or `fork` ends the program, as it ends
/// most programs that do not expect it. Single-threaded, so that it fits in small limits.
const PROGRAM: &str = r#"
import json, os, sys, time, traceback
from http.server import BaseHTTPRequestHandler, HTTPServer

def work(body):
    action = body.get("do")
    if action == "alloc":
        return {"bytes": len(bytearray(600 * 1024 * 1024))}
    if action == "spin":
        while True:
            pass
    if action == "fork":
        for n in range(500):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        return {"forked": 500}
    if action == "read":
        try:
            with open(body["file"]) as f:
                return {"ok": True, "text": f.read()}
        except OSError as e:
            return {"ok": False, "error": str(e)}
    return {"ok": True, "pid": os.getpid(), "uid": os.getuid()}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        try:
            answer = json.dumps(work(body)).encode()
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// The system's python3: a user switched to `nobody` cannot reach one under root's home.
const PYTHON: &str = "/usr/bin/python3";

/// A `keel serve` on a config of `functions` tables, in a directory of its own that holds the
/// program (`function.py`); stopped when dropped.
struct Served {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    async fn start(functions: impl Fn(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Readable by `nobody`, for the functions that run as it.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("function.py"), PROGRAM).unwrap();
        let config = dir.path().join("keel.toml");
        std::fs::write(&config, functions(dir.path())).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = serve_in(dir.path(), &config, port, &dir.path().join("keel.log"));
        wait_ready(&base, &mut child).await;
        Self { child, base, dir }
    }

    /// The log once it holds `needle` (a line reaches it up to 10 ms after it is logged).
    async fn logged(&self, needle: &str) -> String {
        let path = self.dir.path().join("keel.log");
        eventually_or_why(needle, Duration::from_secs(10), || {
            let log = std::fs::read_to_string(&path).unwrap();
            std::future::ready(if log.contains(needle) { Ok(log) } else { Err(log) })
        })
        .await
    }

    /// A sync invoke: status and answer.
    async fn invoke(&self, function: &str, body: &str) -> (u16, Value) {
        let (status, _, answer) = post_json(&format!("{}/v1/functions/{function}/invoke", self.base), body).await;
        (status, answer)
    }

    /// An async invocation, once it is final.
    async fn submit(&self, function: &str, body: &str) -> Value {
        let (status, _, reply) = post_json(&format!("{}/v1/functions/{function}/invocations", self.base), body).await;
        assert_eq!(status, 202, "{reply}");
        let url = format!("{}/v1/invocations/{}", self.base, reply["id"].as_str().unwrap());
        eventually("the invocation ends", Duration::from_secs(30), || async {
            let (_, _, inv) = get_json(&url).await;
            let status = inv["status"].as_str().unwrap_or("").to_owned();
            (!["queued", "running", "retrying"].contains(&status.as_str())).then_some(inv)
        })
        .await
    }

    async fn function(&self, name: &str) -> Value {
        get_json(&format!("{}/v1/functions/{name}", self.base)).await.2
    }
}

fn function(name: &str, sandbox: &str) -> String {
    format!(
        "[functions.{name}]\ncommand = [\"{PYTHON}\", \"function.py\"]\ntimeout = \"20s\"\n{}\nsandbox = {{ {sandbox} }}\n",
        fast_retry(2)
    )
}

const PLAIN: &str = "[functions.plain]\ncommand = [\"/usr/bin/python3\", \"function.py\"]\n";

/// A dead invocation after two attempts, and the limit named where the crash is shown.
async fn assert_stopped_by(keel: &Served, name: &str, body: &str, limit: &str) {
    let invocation = keel.submit(name, body).await;
    assert_eq!(invocation["status"], "dead", "{invocation:#}");
    assert_eq!(invocation["attempts"].as_array().unwrap().len(), 2, "retried like any crash: {invocation:#}");
    let state = keel.function(name).await;
    let last_error = state["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains(&format!("stopped by the {limit} limit")), "{state:#}");
    let log = keel.logged("instance stopped by a sandbox limit").await;
    assert!(log.contains("instance stopped by a sandbox limit"), "{log}");
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_past_processes_fails_its_attempts_and_the_node_serves_on() {
    if !is_root() {
        eprintln!("skipped: `processes` binds through `user`, which needs the tests to run as root");
        return;
    }
    let keel = Served::start(|_| format!("{}{PLAIN}", function("bomb", "processes = 32, user = \"nobody\""))).await;
    let state = keel.function("bomb").await;
    assert_eq!(state["sandbox"]["applied"], serde_json::json!(["user", "processes", "no_new_privs"]), "{state:#}");
    let (_, answer) = keel.invoke("plain", "{}").await;
    assert_eq!(answer["ok"], true);

    assert_stopped_by(&keel, "bomb", r#"{"do": "fork"}"#, "processes").await;

    // The limit held the instance only: Keel, its other function and this test go on.
    let (status, answer) = keel.invoke("plain", "{}").await;
    assert_eq!((status, &answer["ok"]), (200, &Value::Bool(true)), "{answer}");
    let (_, answer) = keel.invoke("bomb", "{}").await;
    assert_eq!(answer["uid"], 65534, "a new instance, as nobody: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_past_memory_fails_the_attempt_and_smaller_work_succeeds() {
    let keel = Served::start(|_| function("hog", "memory = \"64MiB\"")).await;
    let (status, answer) = keel.invoke("hog", "{}").await;
    assert_eq!((status, &answer["ok"]), (200, &Value::Bool(true)), "python itself fits in 64 MiB: {answer}");
    assert_stopped_by(&keel, "hog", r#"{"do": "alloc"}"#, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_limit_kills_a_busy_loop() {
    let keel = Served::start(|_| format!("{}{PLAIN}", function("spin", "cpu = \"1s\""))).await;
    assert_stopped_by(&keel, "spin", r#"{"do": "spin"}"#, "cpu").await;
    let (status, _) = keel.invoke("plain", "{}").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_outside_read_is_refused_where_landlock_is_available() {
    let keel = Served::start(|dir| {
        std::fs::create_dir(dir.join("assets")).unwrap();
        std::fs::write(dir.join("assets").join("hello.txt"), "hello").unwrap();
        std::fs::write(dir.join("secret.txt"), "secret").unwrap();
        function("reader", "read = [\"function.py\", \"assets\"]")
    })
    .await;
    let log = keel.logged("sandbox applied:").await;
    assert!(log.contains("sandbox applied:"), "said once at start: {log}");
    let state = keel.function("reader").await;
    if state["sandbox"]["unavailable"].as_array().is_some_and(|u| !u.is_empty()) {
        eprintln!("skipped: this kernel cannot enforce `read`: {}", state["sandbox"]["unavailable"]);
        return;
    }
    assert_eq!(state["sandbox"]["applied"], serde_json::json!(["no_new_privs", "read"]), "{state:#}");
    let read = |file: PathBuf| format!(r#"{{"do": "read", "file": "{}"}}"#, file.display());
    let (_, inside) = keel.invoke("reader", &read(keel.dir.path().join("assets/hello.txt"))).await;
    assert_eq!(inside["text"], "hello", "{inside}");
    let (_, outside) = keel.invoke("reader", &read(keel.dir.path().join("secret.txt"))).await;
    assert_eq!(outside["ok"], false, "{outside}");
    assert!(outside["error"].as_str().unwrap().contains("Permission denied"), "{outside}");
    let (_, home) = keel.invoke("reader", &read(PathBuf::from("/root/.bashrc"))).await;
    assert_eq!(home["ok"], false, "{home}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_embedded_in_another_program_says_how_to_name_the_keel_binary() {
    // This test binary is not `keel` and does not set KEEL_SANDBOX_EXE: no instance can start,
    // and the error says what to do rather than running the program unsandboxed.
    let keel = crate::support::Keel::start(&format!(
        "[functions.boxed]\ncommand = [\"{PYTHON}\", \"-c\", \"pass\"]\n{}\nsandbox = {{ cpu = \"1s\" }}\n",
        fast_retry(1)
    ))
    .await;
    let (status, _, answer) = post_json(&format!("{}/v1/functions/boxed/invoke", keel.url), "{}").await;
    assert_ne!(status, 200, "{answer}");
    let (_, _, state) = get_json(&format!("{}/v1/functions/boxed", keel.url)).await;
    let last_error = state["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("set KEEL_SANDBOX_EXE to the path of `keel`"), "{state:#}");
}
