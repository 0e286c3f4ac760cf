//! Checks of a `command` function's `sandbox` table: limits in the units config already takes,
//! paths that exist (made absolute against the config file's directory), a user that exists.

use std::path::{Path, PathBuf};

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawDuration, RawSandbox};
use crate::config::{SandboxConfig, SandboxUser};

/// Beyond these a limit is surely a typo; the kernel's own ceilings are lower still.
const MAX_OPEN_FILES: i64 = 1 << 20;
const MAX_PROCESSES: i64 = 1 << 22;
/// Where `user` names are looked up.
const PASSWD: &str = "/etc/passwd";

impl Checker {
    pub(super) fn sandbox(&mut self, name: &str, raw: &RawSandbox) -> Option<SandboxConfig> {
        let at = |field: &str| key(&["functions", name, "sandbox", field]);
        let memory = match &raw.memory {
            Some(_) => self.byte_size(at("memory"), &raw.memory, 0).map(Some),
            None => Some(None),
        };
        let open_files = self.limit(at("open_files"), raw.open_files, MAX_OPEN_FILES);
        let processes = self.limit(at("processes"), raw.processes, MAX_PROCESSES);
        let cpu = self.cpu_seconds(at("cpu"), raw.cpu.as_ref());
        let read = self.sandbox_paths(at("read"), raw.read.as_deref());
        let write = self.sandbox_paths(at("write"), raw.write.as_deref());
        let user = match &raw.user {
            Some(user) => self.sandbox_user(at("user"), user).map(Some),
            None => Some(None),
        };
        Some(SandboxConfig {
            memory: memory?,
            open_files: open_files?,
            processes: processes?,
            cpu: cpu?,
            read: read?,
            write: write?,
            user: user?,
        })
    }

    /// A count of at least 1.
    fn limit(&mut self, path: Vec<String>, raw: Option<i64>, max: i64) -> Option<Option<u64>> {
        match raw {
            None => Some(None),
            Some(n) if (1..=max).contains(&n) => Some(u64::try_from(n).ok()),
            Some(n) => {
                self.report(path, Anchor::Value, format!("must be between 1 and {max} (got {n})"));
                None
            }
        }
    }

    /// A positive duration, in whole seconds rounded up (the kernel counts CPU time in seconds).
    fn cpu_seconds(&mut self, path: Vec<String>, raw: Option<&RawDuration>) -> Option<Option<u64>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let duration = self.positive_duration(path, &Some(raw.clone()), std::time::Duration::ZERO)?;
        let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        Some(Some(seconds))
    }

    /// Existing paths, absolute: Landlock rules are opened by path when an instance starts, and a
    /// missing one is better reported here with its line than by every start.
    fn sandbox_paths(&mut self, path: Vec<String>, raw: Option<&[String]>) -> Option<Vec<PathBuf>> {
        let mut resolved = Vec::new();
        let mut ok = true;
        for text in raw.unwrap_or_default() {
            let file = match &self.dir {
                Some(dir) if Path::new(text).is_relative() => dir.join(text),
                _ => PathBuf::from(text),
            };
            match std::fs::metadata(&file) {
                Ok(_) => resolved.push(file),
                Err(e) => {
                    let message = format!("{text:?}: cannot use {}: {e}", file.display());
                    self.report(path.clone(), Anchor::Value, message);
                    ok = false;
                }
            }
        }
        ok.then_some(resolved)
    }

    fn sandbox_user(&mut self, path: Vec<String>, name: &str) -> Option<SandboxUser> {
        let found = std::fs::read_to_string(PASSWD)
            .map_err(|e| format!("cannot read {PASSWD} to look up user {name:?}: {e}"))
            .and_then(|text| find_user(&text, name).ok_or_else(|| format!("no user {name:?} in {PASSWD}")));
        found.map_err(|message| self.report(path, Anchor::Value, message)).ok()
    }
}

/// The user called `name` in the text of `/etc/passwd` (`name:x:uid:gid:…`).
fn find_user(passwd: &str, name: &str) -> Option<SandboxUser> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(SandboxUser { name: name.to_owned(), uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# a comment\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbroken:x:abc:1::/:/bin/sh\n";

    #[test]
    fn a_user_is_found_by_name_with_its_ids() {
        let nobody = SandboxUser { name: "nobody".into(), uid: 65534, gid: 65534 };
        assert_eq!(find_user(PASSWD, "nobody"), Some(nobody));
        assert_eq!(find_user(PASSWD, "root").map(|u| u.uid), Some(0));
    }

    #[test]
    fn an_unknown_or_unreadable_user_is_none() {
        assert_eq!(find_user(PASSWD, "nob"), None);
        assert_eq!(find_user(PASSWD, "broken"), None);
        assert_eq!(find_user(PASSWD, ""), None);
    }
}
