//! What runs in the `keel __sandbox` process, between the watchdog shell and the program: it
//! applies the [`Spec`] to itself and `exec`s the program. It must stay single-threaded (no
//! tokio runtime): the user switch is made per thread, and `exec` keeps only the calling one.
//!
//! The order matters: rlimits first (root may still raise hard limits), then the Landlock
//! paths are opened (as the original user, who can reach them), then the user switch, then
//! `no_new_privs` and the Landlock restriction, then `exec`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use rustix::process::{setrlimit, Resource, Rlimit};

use super::Spec;

/// The newest Landlock ABI this code asks for; older kernels enforce what they can.
const LANDLOCK_ABI: ABI = ABI::V5;
/// Readable and executable for every sandboxed program: where programs, interpreters and
/// shared libraries live, and the system's configuration (time zones, DNS, locales).
const SYSTEM_READ: [&str; 9] = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys"];
/// Readable and writable for every sandboxed program: the devices a program expects to use.
const SYSTEM_DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];
/// The exit code when the sandbox could not be applied, as a shell's "cannot execute".
const CANNOT_APPLY: u8 = 126;

/// Applies `spec` (JSON) to this process and `exec`s `command`; returns only on failure, having
/// said why on stderr (which Keel logs as the instance's).
pub fn run(spec: &str, command: &[OsString]) -> ExitCode {
    let result = serde_json::from_str::<Spec>(spec)
        .map_err(|e| format!("invalid --spec: {e}"))
        .and_then(|spec| apply_and_exec(&spec, command));
    let Err(error) = result;
    eprintln!("keel sandbox: {error}");
    ExitCode::from(CANNOT_APPLY)
}

fn apply_and_exec(spec: &Spec, command: &[OsString]) -> Result<std::convert::Infallible, String> {
    let (program, args) = command.split_first().ok_or("no program to run")?;
    let limits = [
        ("memory", Resource::As, spec.memory, spec.memory),
        ("open_files", Resource::Nofile, spec.open_files, spec.open_files),
        ("processes", Resource::Nproc, spec.processes, spec.processes),
        // A second past the soft limit: SIGXCPU first (a program may catch it), then SIGKILL.
        ("cpu", Resource::Cpu, spec.cpu, spec.cpu.map(|s| s + 1)),
    ];
    for (name, resource, current, maximum) in limits {
        if current.is_some() {
            setrlimit(resource, Rlimit { current, maximum })
                .map_err(|e| format!("cannot set the {name} limit: {e}"))?;
        }
    }
    let ruleset = if spec.read.is_empty() && spec.write.is_empty() {
        None
    } else {
        Some(landlock_ruleset(spec, Path::new(program)).map_err(|e| format!("cannot prepare Landlock rules: {e}"))?)
    };
    if let Some((uid, gid)) = spec.user {
        switch_user(uid, gid)?;
    }
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    if let Some(ruleset) = ruleset {
        // Best effort: a kernel without Landlock runs the program unrestricted, as Keel said at
        // start (see `support`).
        ruleset.restrict_self().map_err(|e| format!("cannot restrict with Landlock: {e}"))?;
    }
    let error = std::process::Command::new(program).args(args).exec();
    Err(format!("cannot run {}: {error}", Path::new(program).display()))
}

/// Supplementary groups first, then the group, then the user: afterwards none can be undone.
fn switch_user(uid: u32, gid: u32) -> Result<(), String> {
    use rustix::process::{Gid, Uid};
    let gid = Gid::from_raw(gid);
    rustix::thread::set_thread_groups(&[gid]).map_err(|e| format!("cannot drop supplementary groups: {e}"))?;
    rustix::thread::set_thread_gid(gid).map_err(|e| format!("cannot switch to group {}: {e}", gid.as_raw()))?;
    // `set_thread_uid` as root sets the real, effective and saved uids: no way back.
    rustix::thread::set_thread_uid(Uid::from_raw(uid)).map_err(|e| format!("cannot switch to user {uid}: {e}"))
}

fn landlock_ruleset(spec: &Spec, program: &Path) -> Result<RulesetCreated, landlock::RulesetError> {
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let all = AccessFs::from_all(LANDLOCK_ABI);
    let device: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::WriteFile;
    let existing = |paths: &[&'static str]| paths.iter().copied().filter(|p| Path::new(p).exists()).collect::<Vec<_>>();
    Ruleset::default()
        .handle_access(all)?
        .create()?
        .add_rules(path_beneath_rules(existing(&SYSTEM_READ), read))?
        .add_rules(path_beneath_rules(existing(&SYSTEM_DEVICES), device))?
        // The program itself, wherever it is.
        .add_rules(path_beneath_rules([program], AccessFs::Execute | AccessFs::ReadFile))?
        .add_rules(path_beneath_rules(&spec.read, read))?
        .add_rules(path_beneath_rules(&spec.write, all))
}

/// `keel __sandbox --probe`: restricts itself with an empty Landlock ruleset and prints what the
/// kernel enforced, as JSON (`{"landlock":"enforced"|"partial"|"unavailable"}`), for Keel to
/// say at start what `read`/`write` will do here.
pub fn probe() -> ExitCode {
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    let landlock = match status.map(|s| s.ruleset) {
        Ok(RulesetStatus::FullyEnforced) => "enforced",
        Ok(RulesetStatus::PartiallyEnforced) => "partial",
        Ok(RulesetStatus::NotEnforced) | Err(_) => "unavailable",
    };
    println!("{}", serde_json::json!({ "landlock": landlock }));
    ExitCode::SUCCESS
}
