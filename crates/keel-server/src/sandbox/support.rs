//! What this host can enforce of a function's `sandbox`: rlimits and `no_new_privs` always;
//! `processes` only for a user other than root (the kernel does not hold root to
//! `RLIMIT_NPROC`); `read`/`write` only where the kernel has Landlock. Keel says it once per
//! sandboxed function at start, and `GET /v1/functions/{name}` shows it.

use std::path::Path;
use std::sync::OnceLock;

use keel_core::config::SandboxConfig;

/// What the host offers, detected once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// Whether the instance would run as root (Keel is root and no `user` is set).
    pub(crate) root: bool,
    /// `None`: Landlock enforces rules here; `Some(why)`: it does not.
    pub(crate) landlock_missing: Option<String>,
}

/// One sandbox setting that cannot be enforced here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unavailable {
    pub(crate) name: &'static str,
    pub(crate) reason: String,
}

/// Of one function's sandbox: what is applied to each instance, and what is not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Support {
    pub(crate) applied: Vec<&'static str>,
    pub(crate) unavailable: Vec<Unavailable>,
}

impl Support {
    /// A pure decision over the config and what the host offers.
    pub(crate) fn of(config: &SandboxConfig, host: &Host) -> Self {
        let mut support = Support::default();
        let as_root = host.root && config.user.is_none();
        let rlimits = [
            ("memory", config.memory.is_some()),
            ("open_files", config.open_files.is_some()),
            ("cpu", config.cpu.is_some()),
            ("user", config.user.is_some()),
        ];
        support.applied.extend(rlimits.iter().filter(|(_, set)| *set).map(|(name, _)| *name));
        if config.processes.is_some() {
            if as_root {
                let reason = "the kernel does not hold root to RLIMIT_NPROC; set `user`".to_owned();
                support.unavailable.push(Unavailable { name: "processes", reason });
            } else {
                support.applied.push("processes");
            }
        }
        support.applied.push("no_new_privs");
        for (name, paths) in [("read", &config.read), ("write", &config.write)] {
            if paths.is_empty() {
                continue;
            }
            match &host.landlock_missing {
                None => support.applied.push(name),
                Some(why) => support.unavailable.push(Unavailable { name, reason: why.clone() }),
            }
        }
        support
    }

    /// `applied: memory, cpu, no_new_privs; cannot enforce here: read (…)`.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("applied: {}", self.applied.join(", "));
        if !self.unavailable.is_empty() {
            let missing: Vec<String> = self.unavailable.iter().map(|u| format!("{} ({})", u.name, u.reason)).collect();
            text.push_str(&format!("; cannot enforce here: {}", missing.join(", ")));
        }
        text
    }
}

impl Host {
    /// The host as it is; Landlock is asked of the kernel through `keel __sandbox --probe` (once
    /// per process, and only when some function restricts paths).
    pub(crate) fn detect(config: &SandboxConfig, trampoline: Option<&Path>) -> Host {
        let root = rustix::process::geteuid().is_root();
        let landlock_missing = match trampoline {
            _ if !config.restricts_paths() => None,
            Some(trampoline) => landlock_missing(trampoline),
            None => Some("no `keel` binary to ask the kernel about Landlock".to_owned()),
        };
        Host { root, landlock_missing }
    }
}

fn landlock_missing(trampoline: &Path) -> Option<String> {
    static PROBED: OnceLock<Option<String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let output = std::process::Command::new(trampoline).args(["__sandbox", "--probe"]).env_clear().output();
            let answer = output.map_err(|e| e.to_string()).and_then(|out| {
                serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .map_err(|_| String::from_utf8_lossy(&out.stderr).trim().to_owned())
            });
            match answer {
                Ok(json) if json["landlock"] == "enforced" || json["landlock"] == "partial" => None,
                Ok(_) => Some("this kernel has no Landlock, so read/write cannot be enforced".to_owned()),
                Err(e) => Some(format!("could not ask the kernel about Landlock: {e}")),
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use keel_core::config::SandboxUser;

    use super::*;

    fn host(root: bool, landlock: bool) -> Host {
        Host { root, landlock_missing: (!landlock).then(|| "no Landlock".to_owned()) }
    }

    fn full() -> SandboxConfig {
        SandboxConfig {
            memory: Some(1 << 29),
            open_files: Some(256),
            processes: Some(32),
            cpu: Some(60),
            read: vec!["/srv/assets".into()],
            write: vec!["/srv/scratch".into()],
            user: None,
        }
    }

    #[test]
    fn everything_applies_for_a_user_on_a_kernel_with_landlock() {
        let support = Support::of(&full(), &host(false, true));
        let applied = ["memory", "open_files", "cpu", "processes", "no_new_privs", "read", "write"];
        assert_eq!(support.applied, applied);
        assert!(support.unavailable.is_empty());
    }

    #[test]
    fn processes_does_not_bind_root_unless_a_user_is_set() {
        let support = Support::of(&full(), &host(true, true));
        assert_eq!(support.unavailable.iter().map(|u| u.name).collect::<Vec<_>>(), ["processes"]);
        let nobody =
            SandboxConfig { user: Some(SandboxUser { name: "nobody".into(), uid: 65534, gid: 65534 }), ..full() };
        let support = Support::of(&nobody, &host(true, true));
        assert!(support.applied.contains(&"processes") && support.applied.contains(&"user"));
        assert!(support.unavailable.is_empty());
    }

    #[test]
    fn without_landlock_read_and_write_are_said_to_be_unenforced() {
        let support = Support::of(&full(), &host(false, false));
        assert_eq!(support.unavailable.iter().map(|u| u.name).collect::<Vec<_>>(), ["read", "write"]);
        assert_eq!(
            support.describe(),
            "applied: memory, open_files, cpu, processes, no_new_privs; \
             cannot enforce here: read (no Landlock), write (no Landlock)"
        );
    }

    #[test]
    fn only_what_is_set_is_listed() {
        let config = SandboxConfig { cpu: Some(1), ..SandboxConfig::default() };
        assert_eq!(Support::of(&config, &host(true, false)).applied, ["cpu", "no_new_privs"]);
    }
}
