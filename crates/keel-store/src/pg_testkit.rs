//! A throwaway PostgreSQL cluster for tests: the system's `initdb` and `pg_ctl` (found under
//! `/usr/lib/postgresql/*/bin` or on `PATH`), a free port, a temp dir; run as the `postgres`
//! user when the tests run as root, since PostgreSQL refuses to run as root.
//!
//! A small shell watchdog owns each cluster: it starts the server, reports `ready`, then waits
//! for its standard input to close — which happens when the test process exits, however it
//! exits — and stops the server and removes the directory. No destructor has to run.
//!
//! Tests that need PostgreSQL call [`fresh_database`]: with `CI` set, a cluster that cannot start
//! fails the test; without it, the test is skipped with a loud message.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Starts the server, says where, and stops it once standard input closes.
/// With a third argument (a port), the cluster is a streaming replica of the one on that port
/// (`pg_basebackup -R`), not a new one.
const WATCHDOG: &str = r#"set -u
bin=$1; opts=$2; source=${3:-}
dir=$(mktemp -d /tmp/keel-pg-XXXXXX) || exit 1
if [ -n "$source" ]; then
    if ! "$bin/pg_basebackup" -h 127.0.0.1 -p "$source" -U postgres -D "$dir/data" -R -X stream -c fast >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1
    fi
elif ! "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1
fi
if ! "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts -k $dir" start >/dev/null 2>&1; then
    cat "$dir/server.log" >&2; rm -rf "$dir"; exit 1
fi
echo "ready $dir"
read -r _ignored
"$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
rm -rf "$dir"
"#;

/// A running throwaway cluster. Dropping it (or the test process ending) stops it.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    bin: PathBuf,
    dir: String,
    opts: String,
    /// Closing the watchdog's standard input stops the cluster.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl PgCluster {
    /// Starts a new cluster of its own (for a test that stops and starts it).
    pub fn start() -> Result<Self, String> {
        Self::launch(None)
    }

    /// Starts a streaming replica of `primary` (a hot standby: it answers reads), from a base
    /// backup taken now. Asynchronous until the primary names it in `synchronous_standby_names`
    /// ([`PgCluster::require_sync_standby`]).
    pub fn replica_of(primary: &PgCluster) -> Result<Self, String> {
        Self::launch(Some(primary.port))
    }

    fn launch(source: Option<u16>) -> Result<Self, String> {
        let bin = find_bin().ok_or("no initdb under /usr/lib/postgresql/*/bin or on PATH (install `postgresql`)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let opts = format!("-p {port} -h 127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300");
        let mut child = as_postgres_user("sh")
            .args(["-c", WATCHDOG, "keel-pg", bin.to_str().unwrap_or_default(), &opts])
            .args(source.map(|port| port.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running the PostgreSQL watchdog: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let Some(dir) = line.trim().strip_prefix("ready ").map(str::to_string) else {
            let mut stderr = String::new();
            let _ = child.stderr.take().expect("piped").read_to_string(&mut stderr);
            let _ = child.wait();
            return Err(format!("PostgreSQL did not start: {}", stderr.trim()));
        };
        let stdin = child.stdin.take().expect("piped");
        Ok(Self { port, bin, dir, opts, watchdog: Mutex::new(Some((child, stdin))) })
    }

    /// The cluster this test process shares, started on first use.
    pub fn shared() -> Result<&'static PgCluster, String> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start).as_ref().map_err(Clone::clone)
    }

    /// The url of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database; returns its url.
    pub async fn create_database(&self) -> Result<String, String> {
        self.create_database_with("").await
    }

    /// [`create_database`](Self::create_database) with `options` after `CREATE DATABASE name`
    /// (`TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en'`, say).
    pub async fn create_database_with(&self, options: &str) -> Result<String, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("keel_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to the test cluster: {e}"))?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .map_err(|e| format!("CREATE DATABASE: {e}"))?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(&name))
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes every commit wait until a standby has it (`synchronous_standby_names = '*'`),
    /// once a replica is streaming: with it, a commit acknowledged here survives losing this
    /// server.
    pub async fn require_sync_standby(&self) -> Result<(), String> {
        self.execute("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'").await?;
        self.execute("postgres", "SELECT pg_reload_conf()").await
    }

    /// Runs `sql` in `database` on this server.
    pub async fn execute(&self, database: &str, sql: &str) -> Result<(), String> {
        let (client, connection) = tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to the test cluster: {e}"))?;
        let driver = tokio::spawn(connection);
        let done = client.batch_execute(sql).await.map_err(|e| format!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
        done
    }

    /// The first row `sql` returns in `database`, each column as text (`None` for NULL).
    pub async fn first_row(&self, database: &str, sql: &str) -> Result<Option<Vec<Option<String>>>, String> {
        let (client, connection) = tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to the test cluster: {e}"))?;
        let driver = tokio::spawn(connection);
        let messages = client.simple_query(sql).await.map_err(|e| format!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
        Ok(messages?.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        }))
    }

    /// SIGKILLs the server's postmaster, as a crash would (its backends follow); its data stays
    /// for [`resume`](Self::resume).
    pub fn kill(&self) -> Result<(), String> {
        let pid_file = format!("{}/data/postmaster.pid", self.dir);
        let pids = std::fs::read_to_string(&pid_file).map_err(|e| format!("reading {pid_file}: {e}"))?;
        let pid = pids.lines().next().unwrap_or_default().trim().to_owned();
        let out = Command::new("kill").args(["-KILL", &pid]).output().map_err(|e| format!("running kill: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("kill -KILL {pid}: {}", String::from_utf8_lossy(&out.stderr))),
        }
    }

    /// Stops the server (fast shutdown: connections are cut), keeping its data.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn resume(&self) -> Result<(), String> {
        let opts = format!("{} -k {}", self.opts, self.dir);
        let log = format!("{}/server.log", self.dir);
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = format!("{}/data", self.dir);
        let out = as_postgres_user(self.bin.join("pg_ctl").to_str().unwrap_or_default())
            .args(["-D", &data])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running pg_ctl: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr))),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.lock().unwrap_or_else(|p| p.into_inner()).take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A fresh database on the shared cluster, or `None` when PostgreSQL cannot start here and
/// `CI` is not set (the test should then return: it is skipped, and says so).
///
/// # Panics
/// When PostgreSQL cannot start and `CI` is set: in CI, a test that needs PostgreSQL never
/// passes without it.
pub async fn fresh_database() -> Option<String> {
    fresh_database_with("").await
}

/// [`fresh_database`] created with `options` (see [`PgCluster::create_database_with`]).
///
/// # Panics
/// As [`fresh_database`], and when the database cannot be created so.
pub async fn fresh_database_with(options: &str) -> Option<String> {
    let cluster = or_skip(PgCluster::shared())?;
    Some(cluster.create_database_with(options).await.unwrap_or_else(|e| panic!("{e}")))
}

/// A cluster of the test's own (one it stops, kills or replicates), or `None` when PostgreSQL
/// cannot start here and `CI` is not set, as [`fresh_database`].
///
/// # Panics
/// As [`fresh_database`].
pub fn own_cluster() -> Option<PgCluster> {
    or_skip(PgCluster::start())
}

/// What started, or `None` with a loud message outside CI; in CI, a panic.
fn or_skip<T>(started: Result<T, String>) -> Option<T> {
    match started {
        Ok(started) => Some(started),
        Err(reason) if std::env::var_os("CI").is_some() => panic!("PostgreSQL is required in CI: {reason}"),
        Err(reason) => {
            eprintln!("\n*** SKIPPED: this test needs PostgreSQL, which could not start: {reason} ***\n");
            None
        }
    }
}

/// The newest PostgreSQL's `bin` directory.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

/// `program` as is, or through `runuser -u postgres --` when this process is root.
fn as_postgres_user(program: &str) -> Command {
    let root = std::fs::metadata(Path::new("/proc/self")).map(|m| m.uid() == 0).unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}
