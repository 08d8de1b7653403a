//! `test-pkg`: a package's own test suite, run with pytest on the package as built against a
//! sanitizer variant (`capisan_build::package`), what labeille does for PyPI packages — and then
//! more: a test that kills the interpreter does not end the run. Its report is parsed by
//! [`crate::detect`] into a finding filed in a [`FindingStore`] bucket (class and culprit
//! frame, the test's node id as the input, a one-line reproducer), the test is deselected and
//! the suite runs on, so one crash never hides the next.
//!
//! The tests come from the package's source: the source directory or sdist it was built from,
//! or the sdist pip downloads for an index requirement. The tests directory is copied into the
//! work directory before pytest runs, so the source tree's own (uninstrumented, unbuilt) copy of
//! the package is never the one imported.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capisan_build::package::{PackageBuild, Requirement};
use capisan_build::{Manifest, Variant};

use crate::findings::{FindingStore, Recorded};

/// pytest as installed into the package's venv (pinned: its verbose output is parsed).
pub const PYTEST: &str = "pytest==8.3.5";

/// At most this many crashing tests are deselected and the suite re-run.
pub const MAX_CRASHES: usize = 20;

/// Why a test run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestPkgError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed (exit {status}); its output is in {log}:\n{tail}")]
    Command {
        command: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("no tests directory (tests/, test/ or testing/ with test_*.py files) in {0}; pass --tests DIR")]
    NoTests(PathBuf),
    #[error("test-pkg runs the suite on the asan or pydebug variant, not {0}")]
    Variant(Variant),
}

fn io<T>(what: impl std::fmt::Display, r: std::io::Result<T>) -> Result<T, TestPkgError> {
    r.map_err(|source| TestPkgError::Io {
        what: what.to_string(),
        source,
    })
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct TestPkgRequest {
    /// The tests directory; default: found in the package's source ([`find_tests_dir`]).
    pub tests: Option<PathBuf>,
    /// More requirements the tests import (e.g. `hypothesis`), installed with pytest.
    pub with: Vec<String>,
    /// Extra pytest arguments (e.g. `-k escape`).
    pub pytest_args: Vec<String>,
    /// Output directory: `source/`, `work/`, `findings/`, `run-N.log`.
    pub out: PathBuf,
    /// Limit per pytest run.
    pub timeout: Option<Duration>,
    /// regrtest's `-R WARMUPS:RUNS` per test (see [`PYTEST_REFLEAK_PY`]); `None`: no leak check.
    pub refleak: Option<(u32, u32)>,
}

impl TestPkgRequest {
    /// A request writing into `out`, everything else default.
    pub fn new(out: PathBuf) -> TestPkgRequest {
        TestPkgRequest {
            out,
            ..Default::default()
        }
    }
}

/// The pytest plugin of `-R` (py/pytest_refleak.py), run after py/regrtest_cleanup.py in one
/// module named `capisan_refleak`.
pub const PYTEST_REFLEAK_PY: &str = include_str!("py/pytest_refleak.py");

/// A test whose repeated runs leak under regrtest's rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeakedTest {
    pub node_id: String,
    /// Per measured run: `sys.gettotalrefcount()` and `sys.getallocatedblocks()` changes.
    pub references: Vec<i64>,
    pub memory_blocks: Vec<i64>,
    /// Its bucket signature.
    pub signature: String,
}

/// pytest's verdicts, from its final summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub skipped: u64,
    pub xfailed: u64,
}

/// A test that killed the interpreter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrashedTest {
    /// pytest node id, e.g. `tests/test_escape.py::test_subclass`.
    pub node_id: String,
    /// The bucket signature of its report, if the report parsed.
    pub signature: Option<String>,
    /// Whether this is the first test seen in that bucket.
    pub new_bucket: bool,
    /// The run's log.
    pub log: PathBuf,
}

/// The outcome of [`test_package`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestPkgOutcome {
    pub package: String,
    pub version: String,
    pub variant: Variant,
    /// The tests directory that ran (copied into `work/`).
    pub tests: PathBuf,
    /// Counts of the last run (crashed tests excluded: they are in `crashed`).
    pub counts: TestCounts,
    pub crashed: Vec<CrashedTest>,
    /// Tests that leak under `-R` (empty without it).
    pub leaked: Vec<LeakedTest>,
    /// Tests measured under `-R`.
    pub refleak_checked: usize,
    /// pytest runs made (one more than the crashes, unless [`MAX_CRASHES`] stopped it).
    pub runs: usize,
    /// The findings store (one directory per bucket).
    pub findings: PathBuf,
}

impl TestPkgOutcome {
    /// A summary for people, one line per crash.
    pub fn text(&self) -> String {
        let c = &self.counts;
        let mut s = format!(
            "== test-pkg {} {} on {}: {} passed, {} failed, {} errors, {} skipped, {} crashed ({} pytest run(s)) ==\n",
            self.package,
            self.version,
            self.variant,
            c.passed,
            c.failed,
            c.errors,
            c.skipped,
            self.crashed.len(),
            self.runs
        );
        for t in &self.crashed {
            s += &format!(
                "- {}: {}{}\n    log: {}\n",
                t.node_id,
                t.signature
                    .as_deref()
                    .unwrap_or("no sanitizer report parsed"),
                if t.new_bucket {
                    ""
                } else {
                    " (same bucket as above)"
                },
                t.log.display()
            );
        }
        for t in &self.leaked {
            s += &format!(
                "- {}: {} (references {:?}, memory blocks {:?})\n",
                t.node_id, t.signature, t.references, t.memory_blocks
            );
        }
        if self.refleak_checked > 0 {
            s += &format!(
                "-R: {} test(s) measured, {} leak\n",
                self.refleak_checked,
                self.leaked.len()
            );
        }
        s += &format!("findings: {}\n", self.findings.display());
        s
    }

    /// JUnit XML: a failing testcase per crashed or leaking test (class = bug class, message =
    /// bucket signature), written with [`crate::replay_report::junit`]. pytest's own verdicts
    /// are in its `--junitxml` files beside it.
    pub fn junit(&self) -> String {
        use crate::replay::Status;
        use crate::replay_report::CaseResult;
        let case = |node: &str, sig: Option<&String>, finding: Option<crate::detect::Finding>| {
            CaseResult {
                corpus: format!("test-pkg.{}", self.package),
                variant: self.variant.to_string(),
                input: PathBuf::from(node),
                status: Status::Crash,
                seconds: 0.0,
                detail: sig.cloned().unwrap_or_default(),
                signature: sig.cloned(),
                finding,
            }
        };
        let mut cases: Vec<CaseResult> = self
            .crashed
            .iter()
            .map(|c| case(&c.node_id, c.signature.as_ref(), None))
            .collect();
        cases.extend(
            self.leaked
                .iter()
                .map(|l| case(&l.node_id, Some(&l.signature), Some(leak_finding(l)))),
        );
        crate::replay_report::junit(&cases)
    }
}

/// The finding of a leaking test: class reference leak, named after the test function.
fn leak_finding(l: &LeakedTest) -> crate::detect::Finding {
    use crate::detect::{BugClass, Finding, Frame, Tool};
    let mut f = Finding::new(
        BugClass::ReferenceLeak,
        Tool::Capisan,
        format!(
            "test {} leaks on every repeated run (regrtest -R with its cache clearing): references {:?}, memory blocks {:?}",
            l.node_id, l.references, l.memory_blocks
        ),
    );
    let func = l.node_id.rsplit("::").next().unwrap_or(&l.node_id);
    let func = func.split('[').next().unwrap_or(func);
    f.access_stack.push(Frame {
        function: func.to_string(),
        file: l.node_id.split("::").next().map(str::to_string),
        line: None,
        object: None,
        offset: None,
    });
    f.current_op = Some(format!("Test {}", l.node_id));
    f.reason = "capisan test-pkg -R: every measured run of the test left references or memory blocks behind".into();
    f
}

/// The leaking tests of one `-R` output file (one JSON line per measured test), by
/// [`crate::leak_rule`]; and how many tests it measured.
pub fn judge_refleak(jsonl: &str) -> (Vec<LeakedTest>, usize) {
    use crate::leak_rule::LeakCounter;
    let mut leaked = Vec::new();
    let mut measured = 0;
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        measured += 1;
        let deltas = |k: &str| -> Vec<i64> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
                .unwrap_or_default()
        };
        let (refs, blocks) = (deltas("references"), deltas("memory-blocks"));
        if LeakCounter::References.leaked(&refs) || LeakCounter::MemoryBlocks.leaked(&blocks) {
            let mut l = LeakedTest {
                node_id: v["nodeid"].as_str().unwrap_or("?").to_string(),
                references: refs,
                memory_blocks: blocks,
                signature: String::new(),
            };
            l.signature = leak_finding(&l).signature().to_string();
            leaked.push(l);
        }
    }
    (leaked, measured)
}

/// `-R`'s argument, regrtest's `WARMUPS:RUNS` (e.g. `3:3`); at least one measured run.
pub fn parse_refleak(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("-R takes WARMUPS:RUNS, e.g. 3:3 (got {text:?})");
    let (w, r) = text.split_once(':').ok_or_else(bad)?;
    let (w, r) = (w.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?);
    if r == 0 {
        return Err(bad());
    }
    Ok((w, r))
}

/// Where `test-pkg REQ` writes by default: `test-pkg/` inside the package's campaigns directory
/// for the build of `manifest`.
pub fn default_dir(root: &Path, req: &str, manifest: &Manifest) -> PathBuf {
    capisan_build::package::campaigns_dir(root, req, manifest.variant, manifest.line())
        .join("test-pkg")
}

/// The tests directory of an unpacked source tree: `tests/`, `test/` or `testing/` at the top
/// (or one level down, e.g. `src/pkg/tests`), the first that holds a `test_*.py` or `*_test.py`.
pub fn find_tests_dir(root: &Path) -> Option<PathBuf> {
    let is_tests = |p: &Path| {
        matches!(
            p.file_name().and_then(|n| n.to_str()),
            Some("tests" | "test" | "testing")
        ) && fs::read_dir(p).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".py") && (n.starts_with("test_") || n.ends_with("_test.py"))
            })
        })
    };
    let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .max_depth(3)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir() && is_tests(e.path()))
        .map(|e| e.into_path())
        .collect();
    dirs.sort_by_key(|p| p.components().count());
    dirs.into_iter().next()
}

/// The pytest node id being run when the process died: in verbose mode pytest writes a test's
/// id before running it and its verdict after, so the last id line without a verdict is it.
pub fn running_test(output: &str) -> Option<String> {
    let mut last = None;
    for line in output.lines() {
        let Some((id, rest)) = line.split_once(' ') else {
            if line.contains("::") && !line.contains(' ') {
                last = Some(line.to_string());
            }
            continue;
        };
        if id.contains("::") && !id.starts_with('=') {
            let verdict = ["PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"]
                .iter()
                .any(|v| rest.contains(v));
            last = (!verdict).then(|| id.to_string());
        }
    }
    last
}

/// pytest's final summary line (`== 3 passed, 1 skipped in 0.2s ==`), as counts.
pub fn parse_counts(output: &str) -> TestCounts {
    let mut c = TestCounts::default();
    let Some(line) = output
        .lines()
        .rev()
        .find(|l| l.starts_with('=') && l.contains(" in ") && l.trim_end().ends_with('='))
    else {
        return c;
    };
    let words: Vec<&str> = line
        .split(|ch: char| ch == ',' || ch == '=' || ch.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    for w in words.windows(2) {
        let Ok(n) = w[0].parse::<u64>() else { continue };
        match w[1] {
            "passed" => c.passed = n,
            "failed" => c.failed = n,
            "error" | "errors" => c.errors = n,
            "skipped" => c.skipped = n,
            "xfailed" => c.xfailed = n,
            _ => {}
        }
    }
    c
}

/// The environment the tests run in: the variant's sanitizer options (halt and abort on the
/// first report, production allocator limits), no PYTHONHOME/PYTHONPATH (the installed python
/// finds its own prefix), faulthandler for tracebacks of fatal errors.
fn run_env(m: &Manifest) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = m
        .env()
        .into_iter()
        .filter(|(k, _)| k != "PYTHONHOME" && k != "PYTHONPATH")
        .collect();
    env.push(("PYTHONFAULTHANDLER".into(), "1".into()));
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    // The test id pytest prints before running a test must reach the log before a crash.
    env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    env
}

/// Run `cmd` with `env`, output into `log`; error with the log's tail unless it succeeds.
fn checked(
    what: &str,
    cmd: duct::Expression,
    env: &[(String, String)],
    log: &Path,
) -> Result<(), TestPkgError> {
    let out = run_logged(cmd, env, log)?;
    if out.0.success() {
        return Ok(());
    }
    Err(TestPkgError::Command {
        command: what.to_string(),
        status: format!("{:?}", out.0.code()),
        log: log.to_path_buf(),
        tail: tail(&out.1, 30),
    })
}

fn run_logged(
    cmd: duct::Expression,
    env: &[(String, String)],
    log: &Path,
) -> Result<(std::process::ExitStatus, String), TestPkgError> {
    // The whole environment at once (duct's innermost setting wins, so a removal and a later
    // setting of the same variable do not combine): ours minus PYTHONHOME/PYTHONPATH, plus `env`.
    let mut full: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "PYTHONHOME" && k != "PYTHONPATH")
        .collect();
    full.extend(env.iter().cloned());
    let cmd = cmd.full_env(full);
    let out = io(
        format!("running {}", log.display()),
        cmd.stderr_to_stdout().stdout_capture().unchecked().run(),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    io(format!("writing {}", log.display()), fs::write(log, &text))?;
    Ok((out.status, text))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The package's source tree, unpacked under `dir` when it is an sdist (downloaded by pip from
/// the index for an index requirement).
/// `base_python` is the variant's installed python, which has pip (package venvs have none).
fn source_tree(
    pkg: &PackageBuild,
    base_python: &Path,
    dir: &Path,
) -> Result<PathBuf, TestPkgError> {
    let sdist = match &pkg.requirement {
        Requirement::SourceDir(d) => return Ok(d.clone()),
        Requirement::Sdist(f) => f.clone(),
        Requirement::Index(req) => {
            let dl = dir.join("sdist");
            io("creating the sdist directory", fs::create_dir_all(&dl))?;
            let pin = format!("{}=={}", pkg.name, pkg.version);
            let _ = req;
            checked(
                &format!("pip download {pin}"),
                duct::cmd!(
                    base_python,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "--disable-pip-version-check",
                    &pin,
                    "-d",
                    &dl
                ),
                &[],
                &dir.join("pip-download.log"),
            )?;
            let first = io("listing the sdist", fs::read_dir(&dl))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.is_file());
            first.ok_or_else(|| TestPkgError::NoTests(dl.clone()))?
        }
    };
    let unpacked = dir.join("source");
    let _ = fs::remove_dir_all(&unpacked);
    io(
        "creating the source directory",
        fs::create_dir_all(&unpacked),
    )?;
    let name = sdist.to_string_lossy().into_owned();
    let cmd = if name.ends_with(".zip") {
        duct::cmd!("unzip", "-q", &sdist, "-d", &unpacked)
    } else {
        duct::cmd!("tar", "-xf", &sdist, "-C", &unpacked)
    };
    checked(
        &format!("unpacking {name}"),
        cmd,
        &[],
        &dir.join("unpack.log"),
    )?;
    // An sdist holds one top directory, `name-version/`.
    let entries: Vec<PathBuf> = io("listing the unpacked sdist", fs::read_dir(&unpacked))?
        .flatten()
        .map(|e| e.path())
        .collect();
    Ok(match entries.as_slice() {
        [one] if one.is_dir() => one.clone(),
        _ => unpacked,
    })
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), TestPkgError> {
    for e in walkdir::WalkDir::new(from).into_iter().flatten() {
        let rel = e.path().strip_prefix(from).unwrap_or(e.path());
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            io(
                format!("creating {}", dest.display()),
                fs::create_dir_all(&dest),
            )?;
        } else if e.file_type().is_file() {
            io(
                format!("copying {}", e.path().display()),
                fs::copy(e.path(), &dest),
            )?;
        }
    }
    Ok(())
}

/// Run the test suite of `pkg` (built against `m`'s variant) with pytest; every test that kills
/// the interpreter is filed as a finding and deselected, and the suite runs again, up to
/// [`MAX_CRASHES`] times. `on_step` gets a line per step.
pub fn test_package(
    pkg: &PackageBuild,
    m: &Manifest,
    req: &TestPkgRequest,
    on_step: &mut dyn FnMut(&str),
) -> Result<TestPkgOutcome, TestPkgError> {
    if !matches!(m.variant, Variant::Asan | Variant::Pydebug) {
        return Err(TestPkgError::Variant(m.variant));
    }
    // Package venvs have no pip of their own: the installed variant's pip drives them.
    let base_python = m
        .installed()
        .ok_or(TestPkgError::Variant(m.variant))?
        .to_path_buf();
    let out = &req.out;
    io(
        format!("creating {}", out.display()),
        fs::create_dir_all(out),
    )?;
    let tests = match &req.tests {
        Some(t) => t.clone(),
        None => {
            on_step(&format!("[1/4] the source of {} {}", pkg.name, pkg.version));
            let root = source_tree(pkg, &base_python, out)?;
            find_tests_dir(&root).ok_or(TestPkgError::NoTests(root))?
        }
    };
    // The tests alone (with a top-level conftest.py if the source has one) in the work
    // directory: the source tree's package must not shadow the installed build.
    let work = out.join("work");
    let _ = fs::remove_dir_all(&work);
    let dir_name = tests.file_name().map_or("tests".into(), |n| n.to_owned());
    let copied = work.join(&dir_name);
    copy_tree(&tests, &copied)?;
    if let Some(conftest) = tests.parent().map(|p| p.join("conftest.py")) {
        if conftest.is_file() {
            io(
                "copying conftest.py",
                fs::copy(&conftest, work.join("conftest.py")),
            )?;
        }
    }
    on_step(&format!(
        "[2/4] pip install {PYTEST} {}",
        req.with.join(" ")
    ));
    let mut install = vec![
        "-m".to_string(),
        "pip".into(),
        "--python".into(),
        pkg.python.display().to_string(),
        "install".into(),
        "--disable-pip-version-check".into(),
        PYTEST.into(),
    ];
    install.extend(req.with.iter().cloned());
    let env = run_env(m);
    checked(
        &format!("pip install {PYTEST}"),
        duct::cmd(&base_python, &install).dir(&work),
        &env,
        &out.join("pip-install.log"),
    )?;

    let mut env = env;
    if let Some((warmups, runs)) = req.refleak {
        let plugin = out.join("plugin");
        io("creating the plugin directory", fs::create_dir_all(&plugin))?;
        io(
            "writing the -R plugin",
            fs::write(
                plugin.join("capisan_refleak.py"),
                format!("{}\n{}", crate::REGRTEST_CLEANUP_PY, PYTEST_REFLEAK_PY),
            ),
        )?;
        env.push(("PYTHONPATH".into(), plugin.display().to_string()));
        env.push(("CAPISAN_REFLEAK".into(), format!("{warmups}:{runs}")));
    }
    let store = io(
        "opening the findings store",
        FindingStore::open(&out.join("findings")),
    )?;
    let mut leaked: Vec<LeakedTest> = Vec::new();
    let mut refleak_checked = 0;
    let mut crashed: Vec<CrashedTest> = Vec::new();
    let mut counts = TestCounts::default();
    let mut runs = 0;
    loop {
        runs += 1;
        on_step(&format!(
            "[3/4] pytest run {runs}: {} ({} crashed test(s) deselected)",
            dir_name.to_string_lossy(),
            crashed.len()
        ));
        let mut args: Vec<String> = vec![
            "-m".into(),
            "pytest".into(),
            "-v".into(),
            "-p".into(),
            "no:cacheprovider".into(),
            "--tb=no".into(),
            // Capture at the Python level only: with pytest's default fd capture, a sanitizer
            // report written to fd 2 goes to a capture file that dies with the process.
            "--capture=sys".into(),
            "-o".into(),
            "console_output_style=classic".into(),
            dir_name.to_string_lossy().into_owned(),
        ];
        for c in &crashed {
            args.push(format!("--deselect={}", c.node_id));
        }
        args.push(format!(
            "--junitxml={}",
            out.join(format!("pytest-run-{runs}.xml")).display()
        ));
        let refleak_out = out.join(format!("refleak-run-{runs}.jsonl"));
        let mut run_env = env.clone();
        if req.refleak.is_some() {
            args.extend(["-p".into(), "capisan_refleak".into()]);
            run_env.push((
                "CAPISAN_REFLEAK_OUT".into(),
                refleak_out.display().to_string(),
            ));
        }
        args.extend(req.pytest_args.iter().cloned());
        let log = out.join(format!("run-{runs}.log"));
        let mut cmd = duct::cmd(&pkg.python, &args).dir(&work);
        if let Some(t) = req.timeout {
            // coreutils timeout: SIGTERM at the limit, then SIGKILL 10 s later.
            let mut targs = vec![
                "-k".to_string(),
                "10".into(),
                format!("{}", t.as_secs().max(1)),
                pkg.python.display().to_string(),
            ];
            targs.extend(args.iter().cloned());
            cmd = duct::cmd("timeout", &targs).dir(&work);
        }
        let (status, text) = run_logged(cmd, &run_env, &log)?;
        // Leak verdicts of this run (a run after a crash measures the earlier tests again).
        let (found, measured) =
            judge_refleak(&fs::read_to_string(&refleak_out).unwrap_or_default());
        refleak_checked = refleak_checked.max(measured);
        for l in found {
            if leaked.iter().any(|k| k.node_id == l.node_id) {
                continue;
            }
            let f = leak_finding(&l);
            let log_text = format!("{}\n{}", f.summary, f.reason);
            io(
                "recording the finding",
                store.record(&f, l.node_id.as_bytes(), &log_text),
            )?;
            leaked.push(l);
        }
        // pytest's own exit codes are 0-5; anything else (a signal, ASan's exit) is a death.
        let died = status.code().is_none_or(|c| c > 5);
        // 2: interrupted, 3: internal error, 4: usage error, 5: no tests collected.
        if let Some(code @ 2..=5) = status.code() {
            return Err(TestPkgError::Command {
                command: format!("pytest (run {runs})"),
                status: format!("{code}"),
                log: log.clone(),
                tail: tail(&text, 30),
            });
        }
        if !died {
            // No final summary line: pytest stopped before running tests (e.g. a conftest or
            // plugin that does not import exits 1 with a traceback).
            if !text
                .lines()
                .any(|l| l.starts_with('=') && l.contains(" in "))
            {
                return Err(TestPkgError::Command {
                    command: format!("pytest (run {runs})"),
                    status: format!("{:?}", status.code()),
                    log: log.clone(),
                    tail: tail(&text, 30),
                });
            }
            counts = parse_counts(&text);
            break;
        }
        let Some(node_id) = running_test(&text) else {
            counts = parse_counts(&text);
            crashed.push(CrashedTest {
                node_id: "(outside any test)".into(),
                signature: crate::detect::parse(&text)
                    .first()
                    .map(|f| f.signature().to_string()),
                new_bucket: true,
                log,
            });
            break;
        };
        let mut signature = None;
        let mut new_bucket = false;
        if let Some(mut f) = crate::detect::parse(&text).into_iter().next() {
            f.current_op = Some(format!("Test {node_id}"));
            let recorded = io(
                "recording the finding",
                store.record(&f, node_id.as_bytes(), &text),
            )?;
            new_bucket = recorded == Recorded::New;
            signature = Some(f.signature().to_string());
            let bucket = store
                .dir()
                .join(crate::findings::bucket_dir_name(&f.signature()));
            let repro = format!(
                "#!/bin/sh\n# The test that died, alone, with the environment it ran in.\ncd {:?}\n{}{:?} -m pytest -p no:cacheprovider {:?}\n",
                work,
                env.iter()
                    .map(|(k, v)| format!("{k}={v:?} "))
                    .collect::<String>(),
                pkg.python,
                node_id
            );
            if new_bucket {
                io(
                    "writing repro.sh",
                    fs::write(bucket.join("repro.sh"), repro),
                )?;
            }
        }
        crashed.push(CrashedTest {
            node_id,
            signature,
            new_bucket,
            log,
        });
        if crashed.len() >= MAX_CRASHES {
            break;
        }
    }
    on_step("[4/4] summary");
    let outcome = TestPkgOutcome {
        package: pkg.name.clone(),
        version: pkg.version.clone(),
        variant: m.variant,
        tests,
        counts,
        crashed,
        leaked,
        refleak_checked,
        runs,
        findings: store.dir().to_path_buf(),
    };
    let json = serde_json::to_vec_pretty(&outcome).expect("outcome serializes");
    io(
        "writing summary.json",
        fs::write(out.join("summary.json"), json),
    )?;
    io(
        "writing junit.xml",
        fs::write(out.join("junit.xml"), outcome.junit()),
    )?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_is_the_last_id_without_a_verdict() {
        let out = "\
============================= test session starts ==============================
collected 3 items

tests/test_a.py::test_one PASSED
tests/test_a.py::test_two[x-1] FAILED
tests/test_b.py::test_three Fatal Python error: Segmentation fault
";
        assert_eq!(
            running_test(out).as_deref(),
            Some("tests/test_b.py::test_three")
        );
        assert_eq!(running_test("tests/t.py::a PASSED\n"), None);
    }

    #[test]
    fn r_takes_warmups_and_runs() {
        assert_eq!(parse_refleak("3:3"), Ok((3, 3)));
        assert_eq!(parse_refleak("0:5"), Ok((0, 5)));
        for bad in ["3", "3:0", "a:3", "3:3:3", ""] {
            assert!(parse_refleak(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refleak_lines_are_judged_by_regrtests_rule() {
        let jsonl = r#"{"nodeid": "tests/t.py::test_leaky[a]", "references": [2, 2, 3], "memory-blocks": [0, 0, 0]}
{"nodeid": "tests/t.py::test_cache", "references": [5, 0, 0], "memory-blocks": [1, 0, 0]}
not json
"#;
        let (leaked, measured) = judge_refleak(jsonl);
        assert_eq!(measured, 2);
        assert_eq!(leaked.len(), 1);
        assert_eq!(leaked[0].node_id, "tests/t.py::test_leaky[a]");
        assert_eq!(leaked[0].signature, "reference-leak|test_leaky|Test");
    }

    #[test]
    fn the_refleak_plugin_compiles() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("capisan_refleak.py");
        fs::write(
            &p,
            format!("{}\n{}", crate::REGRTEST_CLEANUP_PY, PYTEST_REFLEAK_PY),
        )
        .unwrap();
        let out = duct::cmd!("python3", "-m", "py_compile", &p)
            .stderr_to_stdout()
            .unchecked()
            .read()
            .unwrap();
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn counts_come_from_the_summary_line() {
        let c = parse_counts(
            "x\n===== 5 passed, 1 failed, 2 skipped, 1 xfailed, 3 errors in 0.52s =====\n",
        );
        assert_eq!(
            c,
            TestCounts {
                passed: 5,
                failed: 1,
                errors: 3,
                skipped: 2,
                xfailed: 1
            }
        );
        assert_eq!(parse_counts("nothing"), TestCounts::default());
    }

    #[test]
    fn tests_dir_is_the_shallowest_with_test_files() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/pkg/tests")).unwrap();
        fs::write(d.path().join("src/pkg/tests/test_x.py"), "").unwrap();
        assert_eq!(
            find_tests_dir(d.path()),
            Some(d.path().join("src/pkg/tests"))
        );
        fs::create_dir_all(d.path().join("tests")).unwrap();
        fs::write(d.path().join("tests/conftest.py"), "").unwrap();
        // No test files: not a tests directory.
        assert_eq!(
            find_tests_dir(d.path()),
            Some(d.path().join("src/pkg/tests"))
        );
        fs::write(d.path().join("tests/test_y.py"), "").unwrap();
        assert_eq!(find_tests_dir(d.path()), Some(d.path().join("tests")));
    }
}
