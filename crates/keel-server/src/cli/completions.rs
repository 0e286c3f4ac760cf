//! `keel completions SHELL` and `keel man`: a shell's completion script and the roff man page,
//! both generated from the clap definition in [`super`], so they cannot drift from the commands.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The completion script of `shell` for `keel`.
pub(crate) fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "keel", &mut script);
    script
}

/// [`Cli`] without its hidden commands (`__sandbox`): clap_complete offers hidden subcommands
/// like any other, and clap has no way to remove one, so the rest are copied into a new root.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut public = clap::Command::new("keel")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(full.is_subcommand_required_set())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|command| !command.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    public
}

/// `keel`'s man page (section 1), in roff.
pub(crate) fn man_page() -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    Ok(page)
}

/// Writes `text` to stdout: 0, or 1 with the reason when stdout is gone (`keel man | head`).
pub(crate) fn print(text: std::io::Result<Vec<u8>>) -> ExitCode {
    let written = text.and_then(|text| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&text)?;
        stdout.flush()
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: writing to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// Subcommands a user completes most; each script must offer them.
    const COMMANDS: [&str; 6] = ["serve", "invoke", "invocations", "dlq", "workflows", "completions"];

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in Shell::value_variants() {
            let script = String::from_utf8(completion_script(*shell)).unwrap();
            for command in COMMANDS {
                assert!(script.contains(command), "{shell}: no `{command}` in\n{script}");
            }
            assert!(!script.contains("__sandbox"), "{shell}: the internal command is not offered");
        }
    }

    #[test]
    fn the_public_command_keeps_the_surface_but_the_internal_command() {
        let (full, public) = (Cli::command(), public_command());
        let names = |c: &clap::Command, hidden: bool| -> Vec<String> {
            c.get_subcommands().filter(|s| hidden || !s.is_hide_set()).map(|s| s.get_name().to_owned()).collect()
        };
        assert_eq!(names(&public, true), names(&full, false));
        assert!(!names(&public, true).contains(&"__sandbox".to_owned()));
        let ids = |c: &clap::Command| -> Vec<String> { c.get_arguments().map(|a| a.get_id().to_string()).collect() };
        assert_eq!(ids(&public), ids(&full));
        public.debug_assert();
    }

    #[test]
    fn bash_completes_the_flags_of_a_subcommand() {
        let script = String::from_utf8(completion_script(Shell::Bash)).unwrap();
        assert!(script.starts_with("_keel()"), "{script}");
        assert!(script.contains("--idempotency-key"), "invoke's flags are completed");
        assert!(script.contains("complete -F _keel"), "{script}");
    }

    #[test]
    fn the_man_page_is_roff_and_lists_the_commands() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains(".TH keel 1"), "section 1: {page}");
        for command in COMMANDS {
            assert!(page.contains(&format!("keel\\-{command}")), "{command}: {page}");
        }
        assert!(!page.contains("__sandbox"), "the internal command is not documented");
        assert!(page.contains("\\-\\-url"), "the global flags are in the page: {page}");
    }
}
