//! The `keel` command's conventions, as a shell and a script see them: exit codes (0 done,
//! 1 failed, 2 usage or configuration), `NO_COLOR`, and the completions and man page it prints;
//! and the allocator it is linked with.

use std::process::{Command, Output};

/// `keel ARGS…` with `env`, from a directory without a `keel.toml`, nothing on stdin.
fn keel(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exit_codes_say_done_failed_or_misused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[functions.a]\nurl = \"http://127.0.0.1:9/a\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[functions.a]\nurl = \"http://127.0.0.1:9/a\"\ntimeout = \"soon\"\n").unwrap();
    let missing = dir.path().join("missing.toml");

    let ok = keel(&["config", "check", "-c", good.to_str().unwrap()], &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    for config in [&bad, &missing] {
        let check = keel(&["config", "check", "-c", config.to_str().unwrap()], &[]);
        assert_eq!(check.status.code(), Some(2), "config check of {config:?}: {}", text(&check.stderr));
        let serve = keel(&["serve", "-c", config.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[]);
        assert_eq!(serve.status.code(), Some(2), "serve of {config:?}: {}", text(&serve.stderr));
        let keys = keel(&["keys", "ls", "-c", config.to_str().unwrap()], &[]);
        assert_eq!(keys.status.code(), Some(2), "keys -c {config:?}: {}", text(&keys.stderr));
    }
    let check = keel(&["config", "check", "-c", bad.to_str().unwrap()], &[]);
    assert!(text(&check.stderr).contains("bad.toml:3:"), "the error names its line: {}", text(&check.stderr));

    for usage in [&["invoke"][..], &["no-such-command"], &["invocations", "ls", "--status", "asleep"]] {
        let output = keel(usage, &[]);
        assert_eq!(output.status.code(), Some(2), "keel {usage:?}: {}", text(&output.stderr));
    }
    // Nothing listens on port 9: a failure, not a misuse.
    let unreachable = keel(&["functions", "ls"], &[("KEEL_URL", "http://127.0.0.1:9")]);
    assert_eq!(unreachable.status.code(), Some(1), "{}", text(&unreachable.stderr));
    assert!(text(&unreachable.stderr).starts_with("error:"), "{}", text(&unreachable.stderr));

    for done in [&["--version"][..], &["--help"], &["invoke", "--help"]] {
        assert_eq!(keel(done, &[]).status.code(), Some(0), "keel {done:?}");
    }
}

/// On Linux mimalloc is the `keel` process's `malloc` (main.rs and build.rs): Rust's allocations
/// reach it through `malloc`, and so do SQLite's. Were the linker to leave mimalloc out (the
/// symbol build.rs asks for, or the crate, dropped), glibc's `malloc` would serve everything,
/// silently; were mimalloc back as Rust's global allocator only, SQLite would be on glibc's.
#[cfg(target_os = "linux")]
#[test]
fn mimalloc_is_the_processs_malloc() {
    let nm = |args: &[&str]| {
        let out = Command::new("nm")
            .args(args)
            .arg(env!("CARGO_BIN_EXE_keel"))
            .output()
            .expect("nm (binutils, which Rust's linker needs too) runs");
        assert!(out.status.success(), "nm {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let address = |table: &str, symbol: &str| {
        table
            .lines()
            .find_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [address, "T" | "t" | "W" | "i", name] if name == symbol => Some(address.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{symbol} is not defined in the keel binary"))
    };
    // Exported, so that calls to `malloc` from glibc and SQLite reach it too…
    let exported = address(&nm(&["-D", "--defined-only"]), "malloc");
    // …and it is mimalloc's.
    assert_eq!(exported, address(&nm(&["--defined-only"]), "mi_malloc"), "keel's malloc is not mimalloc's");
}

#[test]
fn no_color_turns_colour_off_even_when_forced() {
    // Not a terminal: plain text.
    let plain = keel(&["invoke"], &[]);
    assert!(!text(&plain.stderr).contains('\u{1b}'), "{:?}", text(&plain.stderr));
    // CLICOLOR_FORCE stands in for a terminal here: then the usage error is coloured…
    let forced = keel(&["invoke"], &[("CLICOLOR_FORCE", "1")]);
    assert!(text(&forced.stderr).contains('\u{1b}'), "forced colour: {:?}", text(&forced.stderr));
    // …unless NO_COLOR is set to anything non-empty (https://no-color.org).
    let no_color = keel(&["invoke"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!text(&no_color.stderr).contains('\u{1b}'), "{:?}", text(&no_color.stderr));
    assert_eq!(no_color.status.code(), Some(2));
    let help = keel(&["--help"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "yes")]);
    assert!(!text(&help.stdout).contains('\u{1b}'), "{:?}", text(&help.stdout));
}

#[test]
fn completions_and_the_man_page_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = keel(&["completions", shell], &[]);
        assert_eq!(output.status.code(), Some(0), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        for command in ["serve", "invoke", "dlq", "workflows", "completions"] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
        assert!(!script.contains("__sandbox"), "{shell}: the internal command is not offered");
    }
    assert_eq!(keel(&["completions", "tcsh"], &[]).status.code(), Some(2), "an unknown shell is a usage error");
    let man = keel(&["man"], &[]);
    assert_eq!(man.status.code(), Some(0), "{}", text(&man.stderr));
    assert!(text(&man.stdout).contains(".TH keel 1"), "{}", text(&man.stdout));
}
