//! `setup`: install the system packages capisan needs on Debian/Ubuntu, quietly.
//!
//! apt prints hundreds of lines; none of them help unless something fails. So every apt command
//! writes into one log file under the cache (`<cache>/logs/setup-<unix time>.log`), the caller is
//! told one line per step, and a failure carries the log's path and its last 30 lines.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::source::{tail_lines, which};
use crate::toolchain::{self, Compiler};
use crate::{BuildError, Cache};

/// System packages capisan needs on Debian/Ubuntu. `{llvm}` is rustc's LLVM major (see
/// [`packages`]), so Rust and C share one sanitizer runtime.
pub const PACKAGES: &[&str] = &[
    "clang-{llvm}",
    "libclang-{llvm}-dev",
    "libclang-rt-{llvm}-dev",
    "llvm-{llvm}",
    "valgrind",
    "gdb",
    "build-essential",
    "pkg-config",
    "xz-utils",
    "libffi-dev",
    "zlib1g-dev",
    "libssl-dev",
    "libbz2-dev",
    "liblzma-dev",
    "libsqlite3-dev",
    "uuid-dev",
    // Renders `cargo xtask report` pages headless (tests/report.rs).
    "chromium",
];

/// How many lines of a failed command's log an error carries.
pub const TAIL_LINES: usize = 30;

/// [`PACKAGES`] with `{llvm}` replaced by rustc's LLVM major (22 when rustc cannot be asked).
pub fn packages() -> Vec<String> {
    let llvm = toolchain::rustc_llvm_major().unwrap_or(22).to_string();
    PACKAGES
        .iter()
        .map(|p| p.replace("{llvm}", &llvm))
        .collect()
}

/// The command a user runs by hand to install `packages`.
pub fn install_command(packages: &[String]) -> String {
    format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Why setup stopped.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Packages are missing and this process cannot install them.
    #[error("installing {missing} needs root; run:\n  sudo {command}")]
    NeedsRoot {
        /// The missing packages, space-separated.
        missing: String,
        /// The command that installs them.
        command: String,
    },
    /// apt failed, the compiler is unusable, or the log could not be written.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What [`setup`] did.
#[derive(Debug)]
pub enum SetupOutcome {
    /// Not a Debian/Ubuntu machine with apt-get: nothing installed; the user installs the
    /// equivalents of `command`'s packages.
    NotDebian {
        /// The apt command, as a list of what is needed.
        command: String,
    },
    /// `dry_run`: nothing checked or installed.
    DryRun {
        /// The command setup would run.
        command: String,
    },
    /// Every package is installed (now, or already), and the default compiler works.
    Ready {
        /// How many packages were checked.
        packages: usize,
        /// The packages this run installed (empty when all were there).
        installed: Vec<String>,
        /// apt's output, when apt ran.
        log: Option<PathBuf>,
        /// The default compiler (`toolchain::default_cc`), probed.
        compiler: Compiler,
    },
}

impl SetupOutcome {
    /// What `cargo xtask setup` prints after its step lines.
    pub fn text(&self) -> String {
        match self {
            SetupOutcome::NotDebian { command } => format!(
                "This is not a Debian/Ubuntu machine with apt-get. Install the equivalents of:\n  {command}\n"
            ),
            SetupOutcome::DryRun { command } => {
                format!("setup --dry-run: would install what is missing of:\n  {command}\n")
            }
            SetupOutcome::Ready {
                installed,
                log,
                compiler,
                ..
            } => {
                let mut out = String::new();
                if !installed.is_empty() {
                    out += &format!("setup: installed {}\n", installed.join(" "));
                }
                if let Some(log) = log {
                    out += &format!("setup: apt's output is in {}\n", log.display());
                }
                out + &format!("setup: compiler {} ({})\n", compiler.cc, compiler.version)
            }
        }
    }
}

/// Install the missing [`packages`] with apt-get (as root), or with `dry_run` only say how.
///
/// `step` is called once per step with one line saying what is about to happen (for the caller
/// to print); apt's own output goes to a log file under `cache`, whose path and last
/// [`TAIL_LINES`] lines a failure carries ([`BuildError::CommandFailed`]).
pub fn setup(
    cache: &Cache,
    dry_run: bool,
    step: &mut dyn FnMut(&str),
) -> Result<SetupOutcome, SetupError> {
    let pkgs = packages();
    let command = install_command(&pkgs);
    let debian = Path::new("/etc/debian_version").exists() && which("apt-get").is_some();
    if !debian {
        return Ok(SetupOutcome::NotDebian { command });
    }
    if dry_run {
        return Ok(SetupOutcome::DryRun { command });
    }
    step(&format!("checking {} packages with dpkg-query", pkgs.len()));
    let missing: Vec<String> = pkgs.iter().filter(|p| !installed(p)).cloned().collect();
    if missing.is_empty() {
        step(&format!("all {} packages are installed", pkgs.len()));
    } else {
        step(&format!(
            "{} of {} packages missing: {}",
            missing.len(),
            pkgs.len(),
            missing.join(" ")
        ));
    }
    let mut log = None;
    if !missing.is_empty() {
        if !is_root() {
            return Err(SetupError::NeedsRoot {
                missing: missing.join(" "),
                command: install_command(&missing),
            });
        }
        let path = log_path(cache);
        step(&format!("apt-get update (output in {})", path.display()));
        run_to_log(duct::cmd!("apt-get", "update"), "apt-get update", &path)?;
        step(&format!("apt-get install {}", missing.join(" ")));
        let mut argv = vec![
            "install".to_string(),
            "-y".to_string(),
            "--no-install-recommends".to_string(),
        ];
        argv.extend(missing.iter().cloned());
        run_to_log(
            duct::cmd("apt-get", argv).env("DEBIAN_FRONTEND", "noninteractive"),
            &format!(
                "apt-get install -y --no-install-recommends {}",
                missing.join(" ")
            ),
            &path,
        )?;
        log = Some(path);
    }
    let cc = toolchain::default_cc();
    let compiler = toolchain::probe(&cc)?;
    Ok(SetupOutcome::Ready {
        packages: pkgs.len(),
        installed: missing,
        log,
        compiler,
    })
}

fn installed(package: &str) -> bool {
    duct::cmd!("dpkg-query", "-W", "-f=${Status}", package)
        .stderr_null()
        .read()
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn is_root() -> bool {
    duct::cmd!("id", "-u")
        .stderr_null()
        .read()
        .is_ok_and(|u| u.trim() == "0")
}

/// `<cache>/logs/setup-<unix seconds>.log`.
fn log_path(cache: &Cache) -> PathBuf {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cache.root().join("logs").join(format!("setup-{now}.log"))
}

/// Run `cmd` with stdout and stderr appended to `log` (created with its directory), stdin
/// closed. `shown` is the command as the user would type it, for the error.
pub fn run_to_log(cmd: duct::Expression, shown: &str, log: &Path) -> Result<(), BuildError> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(BuildError::io(format!("creating {}", dir.display())))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(BuildError::io(format!("opening {}", log.display())))?;
    let out = cmd
        .stdin_null()
        .stderr_to_stdout()
        .stdout_file(file)
        .unchecked()
        .run()
        .map_err(BuildError::io(format!("starting `{shown}`")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    Err(BuildError::CommandFailed {
        command: shown.to_string(),
        status: out.status.to_string(),
        log: log.to_path_buf(),
        tail: tail_lines(&text, TAIL_LINES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_machine_says_only_what_changed() {
        let compiler = Compiler {
            cc: "clang-22".into(),
            version: "clang version 22".into(),
            clang_major: Some(22),
        };
        let ready = SetupOutcome::Ready {
            packages: 3,
            installed: Vec::new(),
            log: None,
            compiler,
        };
        assert_eq!(
            ready.text(),
            "setup: compiler clang-22 (clang version 22)\n"
        );
        let dry = SetupOutcome::DryRun {
            command: "apt-get install x".into(),
        };
        assert_eq!(
            dry.text(),
            "setup --dry-run: would install what is missing of:\n  apt-get install x\n"
        );
    }

    #[test]
    fn a_failing_command_leaves_its_output_in_the_log_and_its_tail_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs").join("setup-1.log");
        run_to_log(duct::cmd!("echo", "first step"), "echo first step", &log).unwrap();
        let err = run_to_log(
            duct::cmd!("sh", "-c", "seq 1 100; echo broken >&2; exit 3"),
            "seq 1 100",
            &log,
        )
        .unwrap_err();
        let full = fs::read_to_string(&log).unwrap();
        assert!(full.starts_with("first step\n1\n"), "{full}");
        assert!(full.ends_with("100\nbroken\n"), "{full}");
        let BuildError::CommandFailed {
            command,
            log: in_error,
            tail,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(command, "seq 1 100");
        assert_eq!(in_error, &log);
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(
            tail.starts_with("72\n") && tail.ends_with("100\nbroken"),
            "{tail}"
        );
        let shown = err.to_string();
        assert!(shown.contains(&log.display().to_string()), "{shown}");
    }

    #[test]
    fn packages_name_one_llvm() {
        let pkgs = packages();
        assert_eq!(pkgs.len(), PACKAGES.len());
        assert!(pkgs.iter().all(|p| !p.contains('{')), "{pkgs:?}");
        assert!(install_command(&pkgs).contains("clang-"));
    }
}
