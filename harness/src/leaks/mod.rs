//! Leak hunting without noise: run a target on a built variant and report only what it adds.
//!
//! A [`Target`] is a `.py` script, `module:function`, a CPython test name (`test_json`) or inline
//! code. Each engine runs the variant's own interpreter as a child process (no `cpython` feature
//! needed):
//!
//! * [`refleak()`] repeats the target in one pydebug process with regrtest's `-R` bookkeeping and
//!   judges the deltas with [`crate::leak_rule`].
//! * [`tracemalloc_diff()`] diffs two tracemalloc snapshots taken around N runs, by traceback.
//! * [`lsan()`] subtracts the interpreter's own exit-time leaks (an empty program's, generated
//!   into the cache) from a LeakSanitizer run on the asan variant.
//! * [`valgrind()`] runs memcheck on the valgrind variant with CPython's and capisan's
//!   suppressions; [`suppressions`] generates, merges and minimizes suppression files.
//!
//! The Python side of refleak and tracemalloc-diff is a driver (`driver_prelude.py` + one `.py`
//! per engine, beside this file) written to a temporary directory at run time; it talks back
//! through a JSON file, never through the target's stdout.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::{BuildError, Manifest};
use serde::Serialize;

use crate::detect::{DetectError, Finding};

mod command;
mod lsan;
mod refleak;
pub mod suppressions;
mod tracemalloc;
mod valgrind;

pub use lsan::{
    lsan, lsan_baseline_file, lsan_suppression_lines, with_leak_detection, LsanOptions,
};
pub use refleak::{parse_huntrleaks, refleak, Counter, RefleakOptions, RefleakReport};
pub use tracemalloc::{tracemalloc_diff, Growth, PyFrame, TracemallocOptions, TracemallocReport};
pub use valgrind::{valgrind, Memcheck, ValgrindOptions};

/// Shared by the Python drivers: `load_target(spec)` returns a no-argument callable that runs the
/// target once; `load_spec()` / `write_result()` read argv[1] and write argv[2].
pub const DRIVER_PRELUDE_PY: &str = include_str!("driver_prelude.py");
/// regrtest's refleak loop (run after [`DRIVER_PRELUDE_PY`]).
pub const REFLEAK_PY: &str = include_str!("refleak.py");
/// tracemalloc's snapshot diff (run after [`DRIVER_PRELUDE_PY`]).
pub const TRACEMALLOC_PY: &str = include_str!("tracemalloc.py");
/// `python -c CALL_TARGET_PY MODULE FUNCTION` calls `MODULE.FUNCTION()` once.
pub const CALL_TARGET_PY: &str = include_str!("call_target.py");

/// Why a leak engine could not give a verdict (as opposed to finding leaks).
#[derive(Debug, thiserror::Error)]
pub enum LeakError {
    /// The target text names nothing runnable.
    #[error("cannot use target {target}: {why}")]
    BadTarget { target: String, why: String },
    /// `-R` / an option value out of range.
    #[error("{0}")]
    BadOption(String),
    /// An `--ext-path` directory does not exist.
    #[error("--ext-path {} does not exist (build the extension with `cargo xtask ext-build`)", .path.display())]
    MissingExtPath { path: PathBuf },
    /// The variant is not built, its manifest is unreadable, or a cache file could not be written.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A program could not be started at all.
    #[error("could not run {program}: {source}; {hint}")]
    Spawn {
        program: String,
        hint: &'static str,
        source: std::io::Error,
    },
    /// A Python driver exited without writing its result.
    #[error("the driver gave no result for {target} (exit {code:?}); its output ends with:\n{tail}\nReproduce with: {reproduce}")]
    NoResult {
        target: String,
        code: Option<i32>,
        tail: String,
        reproduce: String,
    },
    /// A driver's result is not the JSON it should be.
    #[error("reading the driver's result {path}: {message}")]
    BadResult { path: String, message: String },
    /// The interpreter (or valgrind) failed without any report to explain it.
    #[error("{what} failed on the {variant} variant (exit {code:?}) without a report:\n{tail}\nReproduce with: {reproduce}")]
    Failed {
        what: String,
        variant: String,
        code: Option<i32>,
        tail: String,
        reproduce: String,
    },
    /// valgrind exited without writing its XML.
    #[error("valgrind wrote no XML (exit {code:?}); is it installed (`cargo xtask setup`)? Its output ends with:\n{tail}")]
    NoXml { code: Option<i32>, tail: String },
    /// memcheck's XML is malformed (valgrind killed mid-write).
    #[error("parsing memcheck's XML (was valgrind killed?): {0}")]
    Xml(#[from] DetectError),
    /// A valgrind suppression file is malformed.
    #[error("{}: line {line}: {message}; fix the file or regenerate it with `cargo xtask valgrind-supp gen`", .path.display())]
    SuppressionSyntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Minimized suppressions failed the re-run check; nothing was written.
    #[error("{0}")]
    NotVerified(String),
}

/// Result of the leak engines.
pub type Result<T, E = LeakError> = std::result::Result<T, E>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LeakError {
    let path = path.to_path_buf();
    move |source| LeakError::Io { what, path, source }
}

/// What to run, parsed from the user's TARGET.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A script file, run as `__main__`.
    Script(PathBuf),
    /// `module:function`, called with no arguments.
    Call { module: String, function: String },
    /// A CPython regression test module (`test_json` -> `test.test_json`).
    Test(String),
    /// Inline source (`-c`).
    Code(String),
}

impl Target {
    /// `path.py` (must exist; made absolute), `module:function`, or a CPython test name
    /// (`test_json`, `test.test_json`).
    pub fn parse(text: &str) -> Result<Target> {
        let bad = |why: &str| LeakError::BadTarget {
            target: text.to_string(),
            why: why.to_string(),
        };
        let path = Path::new(text);
        if text.ends_with(".py") || path.is_file() {
            let path = fs::canonicalize(path).map_err(|_| bad("the script does not exist"))?;
            return Ok(Target::Script(path));
        }
        if let Some((module, function)) = text.split_once(':') {
            if module.is_empty() || function.is_empty() {
                return Err(bad("expected module:function, e.g. mymod:main"));
            }
            return Ok(Target::Call {
                module: module.to_string(),
                function: function.to_string(),
            });
        }
        let name = text.strip_prefix("test.").unwrap_or(text);
        if name.starts_with("test_") && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Ok(Target::Test(name.to_string()));
        }
        Err(bad(
            "give a .py script, module:function, a CPython test name (test_json) or -c CODE",
        ))
    }

    /// How the target is named in reports (regrtest prints the test name).
    pub fn label(&self) -> String {
        match self {
            Target::Script(p) => p.display().to_string(),
            Target::Call { module, function } => format!("{module}:{function}"),
            Target::Test(name) => name.clone(),
            Target::Code(code) => format!("-c {code:?}"),
        }
    }

    /// The spec the Python drivers' `load_target` reads.
    fn spec(&self) -> serde_json::Value {
        match self {
            Target::Script(p) => serde_json::json!({"kind": "script", "path": p}),
            Target::Call { module, function } => {
                serde_json::json!({"kind": "call", "module": module, "function": function})
            }
            Target::Test(name) => serde_json::json!({"kind": "test", "test": name}),
            Target::Code(code) => serde_json::json!({"kind": "code", "code": code}),
        }
    }

    /// Interpreter arguments that run the target once, without a driver (for the sanitizer and
    /// valgrind runs, where a script should see the `sys.argv` and `__main__` it expects).
    pub fn python_argv(&self) -> Vec<String> {
        match self {
            Target::Script(p) => vec![p.display().to_string()],
            Target::Code(code) => vec!["-c".into(), code.clone()],
            Target::Call { module, function } => vec![
                "-c".into(),
                CALL_TARGET_PY.into(),
                module.clone(),
                function.clone(),
            ],
            Target::Test(name) => vec![
                "-m".into(),
                "unittest".into(),
                "-q".into(),
                format!("test.{name}"),
            ],
        }
    }
}

/// Canonical extension directories (prepended to PYTHONPATH), checked to exist.
pub fn ext_dirs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    paths
        .iter()
        .map(|p| fs::canonicalize(p).map_err(|_| LeakError::MissingExtPath { path: p.clone() }))
        .collect()
}

/// The capisan checkout's committed `suppressions/` directory (per-version LSan and valgrind
/// baselines). The engines only read it; nothing here writes it unless asked explicitly
/// ([`LsanOptions::update_committed`]).
pub fn committed_suppressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ sits in the workspace")
        .join("suppressions")
}

/// capisan's committed LSan baseline for a CPython version (`suppressions/lsan-<version>.supp`).
pub fn lsan_suppressions(version: &str) -> PathBuf {
    committed_suppressions_dir().join(format!("lsan-{version}.supp"))
}

/// capisan's committed valgrind suppressions for a CPython version.
pub fn valgrind_suppressions(version: &str) -> PathBuf {
    committed_suppressions_dir().join(format!("valgrind-{version}.supp"))
}

/// The variant's run-time environment with `ext` prepended to PYTHONPATH.
pub fn python_env(manifest: &Manifest, ext: &[PathBuf]) -> Vec<(String, String)> {
    let mut env = manifest.env();
    if !ext.is_empty() {
        let mut parts: Vec<String> = ext.iter().map(|p| p.display().to_string()).collect();
        if let Some(i) = env.iter().position(|(k, _)| k == "PYTHONPATH") {
            parts.push(env.remove(i).1);
        }
        env.push(("PYTHONPATH".into(), parts.join(":")));
    }
    env
}

/// Output of one interpreter (or valgrind) run, stdout and stderr interleaved.
struct RunOutput {
    ok: bool,
    code: Option<i32>,
    text: String,
}

/// Run `program` (an absolute path, or a bare name looked up on PATH) and capture its output.
fn run_captured(
    program: &OsStr,
    argv: &[String],
    env: &[(String, String)],
    hint: &'static str,
) -> Result<RunOutput> {
    let mut cmd = duct::cmd(program, argv)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().map_err(|source| LeakError::Spawn {
        program: program.to_string_lossy().into_owned(),
        hint,
        source,
    })?;
    Ok(RunOutput {
        ok: out.status.success(),
        code: out.status.code(),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn tail(text: &str, n: usize) -> String {
    capisan_build::source::tail_lines(text, n)
}

/// `program argv...` as a shell-pastable line (for "Reproduce with:").
fn command_line(program: &Path, argv: &[String]) -> String {
    std::iter::once(program.display().to_string())
        .chain(argv.iter().map(|a| {
            if a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `driver` (after [`DRIVER_PRELUDE_PY`]) on `manifest`'s python with the target spec (+
/// `extra` fields), and read the JSON it writes.
fn run_driver(
    manifest: &Manifest,
    ext: &[PathBuf],
    driver: &str,
    target: &Target,
    extra: serde_json::Value,
) -> Result<serde_json::Value> {
    let dir = tempfile::Builder::new()
        .prefix("capisan-leaks-")
        .tempdir()
        .map_err(io(
            "creating a temporary directory in",
            &std::env::temp_dir(),
        ))?;
    let script = dir.path().join("capisan_driver.py");
    fs::write(&script, format!("{DRIVER_PRELUDE_PY}\n{driver}")).map_err(io("writing", &script))?;
    let mut spec = target.spec();
    if let (Some(spec), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    let spec_path = dir.path().join("spec.json");
    let result_path = dir.path().join("result.json");
    fs::write(&spec_path, spec.to_string()).map_err(io("writing", &spec_path))?;
    let argv = vec![
        script.display().to_string(),
        spec_path.display().to_string(),
        result_path.display().to_string(),
    ];
    let out = run_captured(
        manifest.python.as_os_str(),
        &argv,
        &python_env(manifest, ext),
        "is the variant's build directory intact? `cargo xtask variants` lists it",
    )?;
    let Ok(text) = fs::read_to_string(&result_path) else {
        return Err(LeakError::NoResult {
            target: target.label(),
            code: out.code,
            tail: tail(&out.text, 30),
            reproduce: command_line(&manifest.python, &argv),
        });
    };
    serde_json::from_str(&text).map_err(|e| LeakError::BadResult {
        path: result_path.display().to_string(),
        message: e.to_string(),
    })
}

/// What [`lsan()`] / [`valgrind()`] found.
#[derive(Serialize, Debug)]
pub struct ToolReport {
    pub target: String,
    pub variant: String,
    pub version: String,
    /// Every suppression file the run used (committed ones are only read).
    pub suppressions: Vec<PathBuf>,
    pub findings: Vec<Finding>,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("test_json").unwrap(),
            Target::Test("test_json".into())
        );
        assert_eq!(
            Target::parse("mymod:main").unwrap(),
            Target::Call {
                module: "mymod".into(),
                function: "main".into()
            }
        );
        assert!(Target::parse("/nonexistent/x.py").is_err());
        assert!(Target::parse("json").is_err());
    }

    /// The interpreter that checks the drivers: the pydebug variant's when built (the version
    /// the drivers run on), else the system's python3.
    fn checking_python() -> PathBuf {
        let cache = capisan_build::Cache::resolve(None);
        Manifest::find(&cache, capisan_build::Variant::Pydebug, None)
            .map(|m| m.python)
            .unwrap_or_else(|_| PathBuf::from("python3"))
    }

    #[test]
    fn python_drivers_compile() {
        let dir = tempfile::tempdir().unwrap();
        let python = checking_python();
        let env = capisan_build::Cache::resolve(None);
        let env: Vec<(String, String)> =
            Manifest::find(&env, capisan_build::Variant::Pydebug, None)
                .map(|m| m.env())
                .unwrap_or_default();
        // Each file alone, and each driver as it runs (prelude + driver).
        let files = [
            ("driver_prelude.py", DRIVER_PRELUDE_PY.to_string()),
            ("refleak.py", REFLEAK_PY.to_string()),
            ("tracemalloc.py", TRACEMALLOC_PY.to_string()),
            ("call_target.py", CALL_TARGET_PY.to_string()),
            (
                "refleak_driver.py",
                format!("{DRIVER_PRELUDE_PY}\n{REFLEAK_PY}"),
            ),
            (
                "tracemalloc_driver.py",
                format!("{DRIVER_PRELUDE_PY}\n{TRACEMALLOC_PY}"),
            ),
        ];
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            let argv = vec![
                "-m".to_string(),
                "py_compile".to_string(),
                path.display().to_string(),
            ];
            let out = run_captured(python.as_os_str(), &argv, &env, "").unwrap();
            assert!(
                out.ok,
                "{name} does not compile with {}:\n{}",
                python.display(),
                out.text
            );
        }
    }

    #[test]
    fn call_target_calls_a_dotted_function() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("calltgt.py"),
            "class K:\n    @staticmethod\n    def f():\n        print('called')\n",
        )
        .unwrap();
        let argv = Target::parse("calltgt:K.f").unwrap().python_argv();
        let out = duct::cmd("python3", &argv)
            .dir(dir.path())
            .stdout_capture()
            .run()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "called\n");
    }
}
