//! The sandbox of `command` functions: each instance's limits (`sandbox = { … }`), applied in the
//! instance's own process just before its program starts.
//!
//! The workspace forbids `unsafe`, so there is no `pre_exec` hook: instead an instance is started
//! through Keel itself as a trampoline, `keel __sandbox --spec JSON -- PROGRAM ARGS…`, which sets
//! the rlimits, switches user, sets `no_new_privs`, restricts itself with Landlock (all with safe
//! APIs) and then `exec`s the program, which keeps the limits and the pid.
//!
//! - this file: the [`Spec`] handed to the trampoline, and where the trampoline binary is.
//! - `trampoline`: what runs in the `keel __sandbox` process.
//! - `support`: what this host can enforce, said once at start and in `GET /v1/functions/{name}`.
//! - `verdict`: which limit, if any, an instance that died ran into.

mod support;
mod trampoline;
mod verdict;

use std::path::PathBuf;

use keel_core::config::SandboxConfig;
use serde::{Deserialize, Serialize};

pub(crate) use support::{Host, Support};
pub use trampoline::{probe, run};
pub(crate) use verdict::limit_hit;

/// The variable that names the `keel` binary to use as the trampoline, for a process that
/// embeds Keel's server (tests, say) rather than being `keel` itself.
pub const EXE_VAR: &str = "KEEL_SANDBOX_EXE";

/// The limits as the trampoline takes them, in its `--spec` argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// `RLIMIT_AS`, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// `RLIMIT_NOFILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// `RLIMIT_NPROC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// `RLIMIT_CPU`, seconds: SIGXCPU then, SIGKILL a second later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u64>,
    /// Landlock: readable (and executable) beneath these, besides the system's directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<PathBuf>,
    /// Landlock: readable and writable beneath these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<PathBuf>,
    /// Switch to this uid and gid (supplementary groups dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<(u32, u32)>,
}

impl From<&SandboxConfig> for Spec {
    fn from(config: &SandboxConfig) -> Self {
        Self {
            memory: config.memory,
            open_files: config.open_files,
            processes: config.processes,
            cpu: config.cpu,
            read: config.read.clone(),
            write: config.write.clone(),
            user: config.user.as_ref().map(|u| (u.uid, u.gid)),
        }
    }
}

/// This process's own executable, once the `keel` binary has said it is one.
static OWN_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Called by the `keel` binary's `main`: this process has the `__sandbox` command, so its own
/// executable can start sandboxed instances. A process that embeds Keel's server does not call
/// it, and names `keel` with [`EXE_VAR`] instead (no guessing from file names).
pub fn this_executable_is_keel() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = OWN_EXE.set(exe);
    }
}

/// The `keel` binary that serves as the trampoline: [`EXE_VAR`] when set, else this process's
/// own executable when it is `keel` (see [`this_executable_is_keel`]).
pub(crate) fn trampoline_exe() -> Result<PathBuf, String> {
    if let Some(exe) = std::env::var_os(EXE_VAR) {
        return Ok(PathBuf::from(exe));
    }
    OWN_EXE.get().cloned().ok_or_else(|| {
        format!("sandboxed instances start through the `keel` binary, and this process is not it: set {EXE_VAR} to the path of `keel`")
    })
}

/// `sandbox.user` switches user, which only root may do: a node that is not root refuses to
/// start rather than run functions that could never start.
pub(crate) fn check_user(config: &keel_core::config::Config) -> Result<(), crate::server::StartError> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let with_user = config.functions.values().find_map(|f| {
        let user = f.command()?.sandbox.as_ref()?.user.as_ref()?;
        Some((f.name.clone(), user.name.clone()))
    });
    match with_user {
        Some((function, user)) => Err(crate::server::StartError::SandboxUser { function, user }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use keel_core::config::SandboxUser;

    use super::*;

    #[test]
    fn a_spec_carries_every_limit_and_leaves_out_what_is_unset() {
        let config = SandboxConfig {
            memory: Some(64 << 20),
            cpu: Some(2),
            read: vec!["/srv/assets".into()],
            user: Some(SandboxUser { name: "nobody".into(), uid: 65534, gid: 65533 }),
            ..SandboxConfig::default()
        };
        let json = serde_json::to_string(&Spec::from(&config)).unwrap();
        assert_eq!(json, r#"{"memory":67108864,"cpu":2,"read":["/srv/assets"],"user":[65534,65533]}"#);
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Spec::from(&config));
        assert_eq!(serde_json::from_str::<Spec>("{}").unwrap(), Spec::default());
    }
}
