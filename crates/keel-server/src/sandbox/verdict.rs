//! Which sandbox limit, if any, an instance that died ran into: told from how it ended (a signal
//! or an exit code) and what it printed last. A guess made only for limits that were set.

use keel_core::config::SandboxConfig;
use rustix::process::Signal;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) signal: Option<i32>,
    pub(crate) code: Option<i32>,
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Exit { signal: status.signal(), code: status.code() }
    }
}

/// What programs print when an allocation fails (Python, C/glibc, Rust, C++, Go, Node).
const OUT_OF_MEMORY: [&str; 6] = [
    "MemoryError",
    "Cannot allocate memory",
    "memory allocation of",
    "std::bad_alloc",
    "out of memory",
    "JavaScript heap out of memory",
];
/// What programs print when `fork`/`clone` fails for `RLIMIT_NPROC` (EAGAIN).
const NO_MORE_PROCESSES: [&str; 3] = ["Resource temporarily unavailable", "fork: retry", "Cannot fork"];
const TOO_MANY_FILES: &str = "Too many open files";

/// `Some("the cpu limit (2s of CPU time)")` when `exit` and `printed` point at a limit of
/// `sandbox`; `None` when they do not, or the limit was not set.
pub(crate) fn limit_hit(sandbox: &SandboxConfig, exit: Exit, printed: &str) -> Option<String> {
    let cpu = sandbox.cpu.map(|s| format!("the cpu limit ({s}s of CPU time)"));
    let memory = sandbox.memory.map(|b| format!("the memory limit ({b} bytes of address space)"));
    let signal = exit.signal;
    if signal == Some(Signal::XCPU.as_raw()) {
        return cpu;
    }
    if signal == Some(Signal::KILL.as_raw()) {
        // Keel's own SIGKILLs go to instances it is stopping, which are not judged here; the
        // kernel's OOM killer also sends one, so this is a likelihood.
        return cpu.map(|c| format!("{c}, most likely: SIGKILL follows SIGXCPU a second later"));
    }
    let printed_any = |markers: &[&str]| markers.iter().any(|m| printed.contains(m));
    let crashed = [Signal::SEGV, Signal::ABORT, Signal::BUS].iter().any(|s| signal == Some(s.as_raw()));
    if printed_any(&OUT_OF_MEMORY) || (crashed && memory.is_some()) {
        return memory;
    }
    if printed_any(&NO_MORE_PROCESSES) {
        return sandbox.processes.map(|n| format!("the processes limit ({n})"));
    }
    if printed.contains(TOO_MANY_FILES) {
        return sandbox.open_files.map(|n| format!("the open_files limit ({n})"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> SandboxConfig {
        SandboxConfig {
            memory: Some(64 << 20),
            open_files: Some(16),
            processes: Some(8),
            cpu: Some(2),
            ..SandboxConfig::default()
        }
    }

    fn signal(s: Signal) -> Exit {
        Exit { signal: Some(s.as_raw()), code: None }
    }

    const EXIT_1: Exit = Exit { signal: None, code: Some(1) };

    #[test]
    fn sigxcpu_and_sigkill_are_the_cpu_limit() {
        assert_eq!(limit_hit(&all(), signal(Signal::XCPU), "").unwrap(), "the cpu limit (2s of CPU time)");
        assert!(limit_hit(&all(), signal(Signal::KILL), "")
            .unwrap()
            .starts_with("the cpu limit (2s of CPU time), most likely"));
    }

    #[test]
    fn an_allocation_failure_is_the_memory_limit() {
        let memory = "the memory limit (67108864 bytes of address space)";
        assert_eq!(limit_hit(&all(), EXIT_1, "Traceback … | MemoryError").unwrap(), memory);
        assert_eq!(limit_hit(&all(), signal(Signal::ABORT), "memory allocation of 4096 bytes failed").unwrap(), memory);
        assert_eq!(limit_hit(&all(), signal(Signal::SEGV), "").unwrap(), memory);
    }

    #[test]
    fn fork_and_file_failures_name_their_limits() {
        let printed = "BlockingIOError: [Errno 11] Resource temporarily unavailable";
        assert_eq!(limit_hit(&all(), EXIT_1, printed).unwrap(), "the processes limit (8)");
        assert_eq!(
            limit_hit(&all(), EXIT_1, "OSError: [Errno 24] Too many open files").unwrap(),
            "the open_files limit (16)"
        );
    }

    #[test]
    fn nothing_is_blamed_on_a_limit_that_was_not_set_or_on_an_ordinary_exit() {
        let none = SandboxConfig::default();
        assert_eq!(limit_hit(&none, signal(Signal::XCPU), ""), None);
        assert_eq!(limit_hit(&none, signal(Signal::KILL), ""), None);
        assert_eq!(limit_hit(&none, EXIT_1, "MemoryError"), None);
        assert_eq!(limit_hit(&all(), EXIT_1, "ValueError: bad input"), None);
        assert_eq!(limit_hit(&all(), signal(Signal::TERM), ""), None);
    }
}
