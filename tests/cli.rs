//! What a user sees of the commands themselves: a quiet `setup`, and `--help` that describes
//! every option.

mod common;

use common::xtask;

/// Every line of a run, stdout then stderr.
fn lines(r: &common::Run) -> Vec<String> {
    r.stdout
        .lines()
        .chain(r.stderr.lines())
        .map(str::to_string)
        .collect()
}

#[test]
fn setup_dry_run_is_short() {
    let r = xtask(&["setup", "--dry-run"], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let out = lines(&r);
    assert!(out.len() <= 20, "{} lines:\n{}", out.len(), out.join("\n"));
    assert!(r.stdout.contains("apt-get install"), "{}", r.stdout);
}

/// Every package is installed on a machine that runs these tests, so a real `setup` only checks;
/// it must still say what it did in a few lines, not stream apt.
#[test]
fn real_setup_prints_one_line_per_step() {
    let r = xtask(&["setup"], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let out = lines(&r);
    assert!(out.len() <= 20, "{} lines:\n{}", out.len(), out.join("\n"));
    assert!(
        out.iter().any(|l| l.contains("packages are installed")),
        "{}",
        out.join("\n")
    );
    assert!(
        out.iter().any(|l| l.contains("compiler")),
        "{}",
        out.join("\n")
    );
}

/// The in-process walk over clap's command tree (xtask/src/help.rs) checks every argument; this
/// checks the rendered text a user reads: no option line of `--help` is a bare flag.
#[test]
fn rendered_help_has_text_for_every_option() {
    let top = xtask(&["--help"], &[]);
    assert!(top.ok, "{}{}", top.stdout, top.stderr);
    // The subcommands listed under "Commands:", each with its description.
    let commands: Vec<String> = top
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let (name, about) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            assert!(!about.trim().is_empty(), "command without description: {l}");
            name.to_string()
        })
        .filter(|n| n != "help")
        .collect();
    assert!(commands.len() > 20, "{}", top.stdout);
    for sub in ["fuzz-ext", "corpus merge", "valgrind-supp merge"] {
        let mut argv: Vec<&str> = sub.split(' ').collect();
        argv.push("--help");
        let r = xtask(&argv, &[]);
        assert!(r.ok, "{sub}: {}{}", r.stdout, r.stderr);
        for l in r.stdout.lines() {
            let t = l.trim_start();
            // `--help` lists one argument per entry; an entry with text has it on the same line
            // (short help) or on the next, indented (long help).
            if (t.starts_with('-') || t.starts_with('<') || t.starts_with('['))
                && l.starts_with("  ")
            {
                let next = r
                    .stdout
                    .lines()
                    .skip_while(|x| *x != l)
                    .nth(1)
                    .unwrap_or("");
                let own = t
                    .split_once("  ")
                    .is_some_and(|(_, text)| !text.trim().is_empty());
                let below = next.starts_with("          ") && !next.trim().is_empty();
                assert!(
                    own || below,
                    "`cargo xtask {sub} --help`: no text for `{t}`"
                );
            }
        }
    }
}
