//! `--help` is the user's manual: every option and positional argument of every subcommand
//! (nested ones too: `corpus merge`, `valgrind-supp gen`) must say what it does.

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `path: --flag` for every argument of `cmd` and its subcommands that has no help text
    /// (clap's own `--help` / `--version` aside), and `path sub: (no about text)`.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let help = arg.get_help().or(arg.get_long_help());
            if matches!(id, "help" | "version")
                || help.is_some_and(|h| !h.to_string().trim().is_empty())
            {
                continue;
            }
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(long), _) => format!("--{long}"),
                (None, Some(short)) => format!("-{short}"),
                (None, None) => format!("<{id}>"),
            };
            out.push(format!("{path}: {name}"));
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(format!("{path} {}: (no about text)", sub.get_name()));
            }
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_of_every_subcommand_has_help_text() {
        let cmd = crate::Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        undocumented(&cmd, "cargo xtask", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without --help text (add a doc comment that says what it does and its default):\n  {}",
            missing.join("\n  ")
        );
    }
}
