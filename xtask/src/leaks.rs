//! refleak, tracemalloc-diff, lsan, valgrind, valgrind-supp: leak hunting without noise.
//!
//! Every command runs a TARGET (a `.py` script, `module:function`, a CPython test name such as
//! `test_json`, or `-c CODE`) on one built variant and reports only what the target adds:
//!
//! * `refleak` repeats the target in one pydebug process with regrtest's `-R` bookkeeping and
//!   decision rule (references, memory blocks, file descriptors).
//! * `tracemalloc-diff` diffs two tracemalloc snapshots taken around N runs, by traceback.
//! * `lsan` subtracts the interpreter's own exit-time leaks (a per-version suppression file made
//!   from an empty program) from a LeakSanitizer run on the asan variant.
//! * `valgrind` runs memcheck on the valgrind variant with CPython's and capisan's suppressions;
//!   `valgrind-supp` generates, merges and minimizes those suppression files.
//!
//! The Python side of each command is a driver script embedded below, written to a temporary
//! directory at run time; it talks back through a JSON file, never through the target's stdout.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use capisan::detect::{self, frames as frame_tables, Finding, Frame};
use capisan_build::{Cache, Manifest, Variant};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::CacheArgs;

// ---------------------------------------------------------------------------------------------
// Targets

/// What to run, shared by every leak command.
#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// A Python script (`path.py`), `module:function` (module importable from the current
    /// directory or --ext-path), or a CPython test name (`test_json`, from the variant's `test`
    /// package, run with unittest).
    #[arg(required_unless_present = "code")]
    pub target: Option<String>,
    /// Python source to run instead of TARGET (like `python -c`).
    #[arg(short = 'c', long, conflicts_with = "target")]
    pub code: Option<String>,
    /// Directory prepended to PYTHONPATH (a built extension from `ext-build`, helper modules);
    /// repeatable. Native frames from extensions found here are the target's own code.
    #[arg(long)]
    pub ext_path: Vec<PathBuf>,
}

/// A parsed TARGET.
#[derive(Clone, Debug, PartialEq)]
enum Target {
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
    fn parse(text: &str) -> Result<Target> {
        let path = Path::new(text);
        if text.ends_with(".py") || path.is_file() {
            let path = fs::canonicalize(path)
                .with_context(|| format!("target script {text} does not exist"))?;
            return Ok(Target::Script(path));
        }
        if let Some((module, function)) = text.split_once(':') {
            if module.is_empty() || function.is_empty() {
                bail!("target {text}: expected module:function, e.g. mymod:main");
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
        bail!(
            "cannot tell what target {text} is: give a .py script, module:function, a CPython \
             test name (test_json) or -c CODE"
        )
    }

    fn from_args(args: &TargetArgs) -> Result<Target> {
        match (&args.target, &args.code) {
            (_, Some(code)) => Ok(Target::Code(code.clone())),
            (Some(t), None) => Target::parse(t),
            (None, None) => bail!("give a TARGET or -c CODE"),
        }
    }

    /// How the target is named in reports (regrtest prints the test name).
    fn label(&self) -> String {
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
    fn python_argv(&self) -> Vec<String> {
        match self {
            Target::Script(p) => vec![p.display().to_string()],
            Target::Code(code) => vec!["-c".into(), code.clone()],
            Target::Call { module, function } => vec![
                "-c".into(),
                format!(
                    "import sys, importlib; sys.path.insert(0, ''); f = importlib.import_module({module:?})\n\
                     for part in {function:?}.split('.'): f = getattr(f, part)\nf()"
                ),
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

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn spinner(message: String) -> ProgressBar {
    let s = ProgressBar::new_spinner().with_message(message);
    s.enable_steady_tick(Duration::from_millis(150));
    s
}

/// Canonical extension directories, checked to exist.
fn ext_dirs(args: &TargetArgs) -> Result<Vec<PathBuf>> {
    args.ext_path
        .iter()
        .map(|p| {
            fs::canonicalize(p).with_context(|| {
                format!(
                    "--ext-path {} does not exist (build the extension with `cargo xtask ext-build`)",
                    p.display()
                )
            })
        })
        .collect()
}

/// The variant's run-time environment with `ext` prepended to PYTHONPATH.
fn python_env(manifest: &Manifest, ext: &[PathBuf]) -> Vec<(String, String)> {
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
fn run_captured(program: &OsStr, argv: &[String], env: &[(String, String)]) -> Result<RunOutput> {
    let mut cmd = duct::cmd(program, argv)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    cmd = crate::with_env(cmd, env);
    let out = cmd
        .run()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    Ok(RunOutput {
        ok: out.status.success(),
        code: out.status.code(),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn tail(text: &str, n: usize) -> String {
    capisan_build::source::tail_lines(text, n)
}

/// Run an embedded driver on `manifest`'s python with the target spec (+ `extra` fields), and
/// read the JSON it writes.
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
        .context("creating a temporary directory for the driver")?;
    let script = dir.path().join("capisan_driver.py");
    fs::write(&script, format!("{DRIVER_PRELUDE}\n{driver}"))
        .with_context(|| format!("writing {}", script.display()))?;
    let mut spec = target.spec();
    if let (Some(spec), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    let spec_path = dir.path().join("spec.json");
    let result_path = dir.path().join("result.json");
    fs::write(&spec_path, spec.to_string())?;
    let argv = vec![
        script.display().to_string(),
        spec_path.display().to_string(),
        result_path.display().to_string(),
    ];
    let out = run_captured(
        manifest.python.as_os_str(),
        &argv,
        &python_env(manifest, ext),
    )?;
    let Ok(text) = fs::read_to_string(&result_path) else {
        bail!(
            "the driver gave no result for {} (exit {:?}); its output ends with:\n{}\nReproduce with: {} {}",
            target.label(),
            out.code,
            tail(&out.text, 30),
            manifest.python.display(),
            argv.join(" ")
        );
    };
    serde_json::from_str(&text).with_context(|| format!("reading the driver's result {text}"))
}

/// Shared by the Python drivers: `load_target(spec)` returns a no-argument callable that runs
/// the target once.
const DRIVER_PRELUDE: &str = r#"
import gc, importlib, json, os, sys

def load_target(spec):
    kind = spec["kind"]
    if kind in ("script", "code"):
        if kind == "script":
            path = spec["path"]
            with open(path, "rb") as f:
                code = compile(f.read(), path, "exec")
            sys.path.insert(0, os.path.dirname(path))
            ns = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
        else:
            code = compile(spec["code"], "<capisan -c>", "exec")
            ns = {"__name__": "__main__", "__builtins__": __builtins__}
        # One namespace for every run: like a module, the script's globals outlive a run.
        def run():
            exec(code, ns)
        return run
    if kind == "call":
        sys.path.insert(0, os.getcwd())
        obj = importlib.import_module(spec["module"])
        for part in spec["function"].split("."):
            obj = getattr(obj, part)
        return obj
    if kind == "test":
        import unittest
        from test import support
        support.verbose = 0
        # Like regrtest: resource-gated tests (-u cpu, network, ...) run only when asked for.
        support.use_resources = list(spec.get("use_resources", []))
        module = importlib.import_module("test." + spec["test"])
        def run():
            # A suite forgets its tests once run; load a fresh one every time, as regrtest does.
            suite = unittest.defaultTestLoader.loadTestsFromModule(module)
            result = unittest.TestResult()
            suite.run(result)
            return result
        return run
    raise SystemExit("unknown target kind %r" % kind)

def load_spec():
    with open(sys.argv[1]) as f:
        return json.load(f)

def write_result(result):
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
"#;

// ---------------------------------------------------------------------------------------------
// refleak

#[derive(Args, Clone, Debug)]
pub struct RefleakArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// WARMUPS:RUNS, as regrtest's -R (e.g. 3:3).
    #[arg(short = 'R', long = "huntrleaks", default_value = "3:3")]
    pub huntrleaks: String,
    /// Test resources to enable for a CPython test target, as regrtest's -u (e.g. cpu,network);
    /// none by default, like regrtest.
    #[arg(short = 'u', long = "use", value_delimiter = ',')]
    pub use_resources: Vec<String>,
    /// Variant to run on; it must be a debug build (pydebug, asan and valgrind all are).
    #[arg(long, default_value = "pydebug")]
    pub variant: Variant,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// regrtest's refleak loop, run inside the target's process. It mirrors
/// `test.libregrtest.refleak.runtest_refleak` of 3.13: warm the small-object caches, snapshot
/// the registries tests mutate, and after each run restore them, clear caches and collect before
/// reading the counters. The decision rule is applied by the caller (Rust).
const REFLEAK_DRIVER: &str = r#"
import copyreg, linecache, warnings
import collections.abc
from inspect import isabstract

def main():
    spec = load_spec()
    warmups, runs = spec["warmups"], spec["runs"]
    try:
        from test.libregrtest.utils import clear_caches
    except Exception:
        clear_caches = None
    try:
        from _abc import _get_dump
    except ImportError:
        _get_dump = None
    run = load_target(spec)

    # Warm the small-object caches so their first use is not counted.
    s = bytes(range(256))
    for i in range(256):
        s[i:i+1]
    [chr(i) for i in range(256)]
    list(range(-5, 257))

    fs = warnings.filters[:]
    ps = copyreg.dispatch_table.copy()
    pic = sys.path_importer_cache.copy()
    lcache = linecache.cache.copy()
    linteractive = getattr(linecache, "_interactive_cache", {}).copy()
    try:
        import zipimport
        zdc = zipimport._zip_directory_cache.copy()
    except ImportError:
        zipimport = zdc = None
    abc_classes = [c for c in (getattr(collections.abc, a) for a in collections.abc.__all__)
                   if isabstract(c)]
    abcs = {}
    if _get_dump is not None:
        for abc in abc_classes:
            for obj in abc.__subclasses__() + [abc]:
                abcs[obj] = _get_dump(obj)[0]

    def cleanup():
        warnings.filters[:] = fs
        copyreg.dispatch_table.clear()
        copyreg.dispatch_table.update(ps)
        sys.path_importer_cache.clear()
        sys.path_importer_cache.update(pic)
        linecache.cache.clear()
        linecache.cache.update(lcache)
        if hasattr(linecache, "_interactive_cache"):
            linecache._interactive_cache.clear()
            linecache._interactive_cache.update(linteractive)
        if zipimport is not None:
            zipimport._zip_directory_cache.clear()
            zipimport._zip_directory_cache.update(zdc)
        for abc in abc_classes:
            for obj in abc.__subclasses__() + [abc]:
                refs = abcs.get(obj)
                if refs is not None:
                    obj._abc_registry_clear()
                    for ref in refs:
                        sub = ref()
                        if sub is not None:
                            obj.register(sub)
                obj._abc_caches_clear()
        if clear_caches is not None:
            clear_caches()
        if hasattr(sys, "_clear_internal_caches"):
            sys._clear_internal_caches()
        elif hasattr(sys, "_clear_type_cache"):
            sys._clear_type_cache()
        # test.support.gc_collect(): several passes, finalizers can free more.
        gc.collect(); gc.collect(); gc.collect()

    def interned_immortal():
        # 3.12+: strings interned during a run are immortal and live until shutdown. Their
        # references are already invisible (sys.gettotalrefcount() excludes immortal objects:
        # Py_INCREF/Py_DECREF do not touch _Py_RefTotal for them), but their memory blocks are
        # not, so they are subtracted from getallocatedblocks() as regrtest does.
        try:
            return sys.getunicodeinternedsize(_only_immortal=True)
        except (AttributeError, TypeError):
            return 0

    def fd_count():
        try:
            return len(os.listdir("/proc/self/fd"))
        except OSError:
            return 0

    # Pool ints (regrtest bpo-31217) and preallocate, so bookkeeping allocates no new blocks.
    int_pool = {v: v for v in range(-1000, 1000)}
    total = warmups + runs
    refs, blocks, fds = [0] * total, [0] * total, [0] * total
    failures, errors = [0] * total, []

    cleanup()
    rc_before = sys.gettotalrefcount()
    alloc_before = sys.getallocatedblocks() - interned_immortal()
    fd_before = fd_count()
    for i in range(total):
        try:
            result = run()
            if result is not None and hasattr(result, "failures"):
                failures[i] = len(result.failures) + len(result.errors)
                if failures[i] and not errors:
                    errors.append("".join(t for _, t in (result.failures + result.errors)[:1]))
        except BaseException as e:
            failures[i] = 1
            if not errors:
                import traceback
                errors.append("".join(traceback.format_exception(e)))
        result = None
        cleanup()
        alloc_after = sys.getallocatedblocks() - interned_immortal()
        rc_after = sys.gettotalrefcount()
        fd_after = fd_count()
        refs[i] = int_pool.setdefault(rc_after - rc_before, rc_after - rc_before)
        blocks[i] = int_pool.setdefault(alloc_after - alloc_before, alloc_after - alloc_before)
        fds[i] = int_pool.setdefault(fd_after - fd_before, fd_after - fd_before)
        rc_before, alloc_before, fd_before = rc_after, alloc_after, fd_after
        print("run %d/%d: refs %+d blocks %+d fds %+d" % (i + 1, total, refs[i], blocks[i], fds[i]),
              file=sys.stderr, flush=True)
    write_result({"refs": refs, "blocks": blocks, "fds": fds, "failures": failures,
                  "errors": errors, "clear_caches": clear_caches is not None,
                  "version": sys.version.split()[0]})

main()
"#;

/// regrtest's rule for references and memory blocks: a leak only when *every* post-warmup run
/// leaked at least one (bpo-30776: `[3, 0, 0]` or `[8, -8, 1]` is noise, `[5, 5, 6]` a leak).
pub fn counts_leak(deltas: &[i64]) -> bool {
    !deltas.is_empty() && deltas.iter().all(|&d| d >= 1)
}

/// regrtest's rule for file descriptors: any change at all is a leak.
pub fn fds_leak(deltas: &[i64]) -> bool {
    deltas.iter().any(|&d| d != 0)
}

/// One counter's post-warmup deltas and verdict.
#[derive(Serialize, Debug)]
pub struct Counter {
    pub item: &'static str,
    pub deltas: Vec<i64>,
    pub sum: i64,
    pub leaked: bool,
}

/// What `refleak` found.
#[derive(Serialize, Debug)]
pub struct RefleakReport {
    pub target: String,
    pub variant: String,
    pub version: String,
    pub warmups: usize,
    pub runs: usize,
    pub counters: Vec<Counter>,
    /// Runs whose tests failed or whose target raised.
    pub failed_runs: usize,
    pub first_error: Option<String>,
    pub leaked: bool,
    pub seconds: f64,
}

fn parse_huntrleaks(text: &str) -> Result<(usize, usize)> {
    let mut parts = text.split(':');
    let (Some(w), Some(r)) = (parts.next(), parts.next()) else {
        bail!("-R {text}: expected WARMUPS:RUNS, e.g. 3:3");
    };
    let w: usize = w
        .parse()
        .with_context(|| format!("-R {text}: bad warmups"))?;
    let r: usize = r.parse().with_context(|| format!("-R {text}: bad runs"))?;
    if r == 0 {
        bail!("-R {text}: need at least one run after the warmups");
    }
    Ok((w, r))
}

/// `cargo xtask refleak`: returns `Ok(false)` when the target leaked.
pub fn refleak(args: RefleakArgs) -> Result<bool> {
    let target = Target::from_args(&args.target)?;
    let ext = ext_dirs(&args.target)?;
    let (warmups, runs) = parse_huntrleaks(&args.huntrleaks)?;
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, args.variant, None)?;
    let label = target.label();
    let started = Instant::now();
    let bar = spinner(format!(
        "refleak {label}: {warmups} warmups + {runs} runs on {} {}",
        manifest.variant, manifest.version
    ));
    let result = run_driver(
        &manifest,
        &ext,
        REFLEAK_DRIVER,
        &target,
        serde_json::json!({"warmups": warmups, "runs": runs, "use_resources": args.use_resources}),
    );
    bar.finish_and_clear();
    let result = result?;
    let seconds = started.elapsed().as_secs_f64();
    let ints = |key: &str| -> Vec<i64> {
        result[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
            .unwrap_or_default()
    };
    let name = match &target {
        Target::Test(n) => n.clone(),
        Target::Script(p) => p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| label.clone()),
        _ => label.clone(),
    };
    let mut counters = Vec::new();
    for (key, item, fd) in [
        ("refs", "references", false),
        ("blocks", "memory blocks", false),
        ("fds", "file descriptors", true),
    ] {
        let all = ints(key);
        let deltas: Vec<i64> = all.iter().skip(warmups).copied().collect();
        let leaked = if fd {
            fds_leak(&deltas)
        } else {
            counts_leak(&deltas)
        };
        counters.push(Counter {
            item,
            sum: deltas.iter().sum(),
            deltas,
            leaked,
        });
    }
    let failed_runs = ints("failures").iter().filter(|&&f| f > 0).count();
    let report = RefleakReport {
        target: name,
        variant: manifest.variant.to_string(),
        version: manifest.version.clone(),
        warmups,
        runs,
        leaked: counters.iter().any(|c| c.leaked),
        counters,
        failed_runs,
        first_error: result["errors"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e.as_str())
            .map(str::to_string),
        seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_refleak(&report);
    }
    Ok(!report.leaked && report.failed_runs == 0)
}

fn print_refleak(r: &RefleakReport) {
    for c in &r.counters {
        if c.leaked || c.deltas.iter().any(|&d| d != 0) {
            // regrtest's own wording, so the two can be compared line by line.
            let fine = if c.leaked { "" } else { " (this is fine)" };
            println!(
                "{} leaked {:?} {}, sum={}{fine}",
                r.target, c.deltas, c.item, c.sum
            );
        }
    }
    if let Some(e) = &r.first_error {
        println!(
            "{} failed in {} of {} runs; first failure:\n{}",
            r.target,
            r.failed_runs,
            r.warmups + r.runs,
            e.trim_end()
        );
    }
    let leaked: Vec<&str> = r
        .counters
        .iter()
        .filter(|c| c.leaked)
        .map(|c| c.item)
        .collect();
    let how = format!(
        "-R {}:{} on {} {}, {:.1} s",
        r.warmups, r.runs, r.variant, r.version, r.seconds
    );
    if leaked.is_empty() {
        println!("refleak: {}: no leaks ({how})", r.target);
    } else {
        println!("refleak: {} LEAKED {} ({how})", r.target, leaked.join(", "));
    }
}

// ---------------------------------------------------------------------------------------------
// tracemalloc-diff

#[derive(Args, Clone, Debug)]
pub struct TracemallocArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Frames tracemalloc keeps per allocation.
    #[arg(long, default_value_t = 25)]
    pub frames: u32,
    /// How many growing tracebacks to print.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Iterations between the two snapshots (after one warmup iteration).
    #[arg(short = 'n', long = "iterations", default_value_t = 10)]
    pub iterations: u32,
    /// Variant to run on; any of pydebug, asan, valgrind (tracemalloc works on all).
    #[arg(long, default_value = "pydebug")]
    pub variant: Variant,
    /// Print the growth as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

const TRACEMALLOC_DRIVER: &str = r#"
import tracemalloc

def main():
    spec = load_spec()
    n, top = spec["iterations"], spec["top"]
    run = load_target(spec)
    tracemalloc.start(spec["frames"])
    # Iteration 0 is the warmup (first-call caches, lazy imports, specialization). Every run is
    # called from this one line, so warmup and measured allocations share their tracebacks.
    before = None
    for i in range(n + 1):
        if i == 1:
            gc.collect()
            before = tracemalloc.take_snapshot()
        run()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Only the innermost frame is tested (all_frames=False): the driver is on every stack.
    filters = [
        tracemalloc.Filter(False, __file__),
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, os.path.join(os.path.dirname(importlib.__file__), "*")),
    ]
    before = before.filter_traces(filters)
    after = after.filter_traces(filters)
    stats = [s for s in after.compare_to(before, "traceback") if s.size_diff > 0]
    stats.sort(key=lambda s: (s.size_diff, s.count_diff), reverse=True)
    entries = []
    for s in stats[:top]:
        frames = [{"file": f.filename, "line": f.lineno}
                  for f in reversed(s.traceback) if f.filename != __file__]
        entries.append({"size_diff": s.size_diff, "count_diff": s.count_diff,
                        "size": s.size, "count": s.count, "traceback": frames})
    write_result({"entries": entries, "growing_tracebacks": len(stats)})

main()
"#;

/// One growing traceback.
#[derive(Serialize, Deserialize, Debug)]
pub struct Growth {
    pub size_diff: i64,
    pub count_diff: i64,
    pub size: i64,
    pub count: i64,
    /// Innermost frame first; the driver's own frames are left out.
    pub traceback: Vec<PyFrame>,
}

/// A Python source position.
#[derive(Serialize, Deserialize, Debug)]
pub struct PyFrame {
    pub file: String,
    pub line: u32,
}

/// What `tracemalloc-diff` found.
#[derive(Serialize, Debug)]
pub struct TracemallocReport {
    pub target: String,
    pub iterations: u32,
    pub frames: u32,
    pub entries: Vec<Growth>,
    /// Entries growing by at least one block per iteration (what a leak looks like).
    pub linear: usize,
    pub seconds: f64,
}

/// `cargo xtask tracemalloc-diff`: returns `Ok(false)` when a traceback grows by at least one
/// block per iteration.
pub fn tracemalloc_diff(args: TracemallocArgs) -> Result<bool> {
    let target = Target::from_args(&args.target)?;
    let ext = ext_dirs(&args.target)?;
    if args.iterations == 0 {
        bail!("-n must be at least 1");
    }
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, args.variant, None)?;
    let started = Instant::now();
    let bar = spinner(format!(
        "tracemalloc-diff {}: 1 warmup + {} iterations",
        target.label(),
        args.iterations
    ));
    let result = run_driver(
        &manifest,
        &ext,
        TRACEMALLOC_DRIVER,
        &target,
        serde_json::json!({"iterations": args.iterations, "top": args.top, "frames": args.frames}),
    );
    bar.finish_and_clear();
    let result = result?;
    let entries: Vec<Growth> = serde_json::from_value(result["entries"].clone())
        .context("reading the tracemalloc driver's entries")?;
    let n = i64::from(args.iterations);
    let report = TracemallocReport {
        target: target.label(),
        iterations: args.iterations,
        frames: args.frames,
        linear: entries.iter().filter(|e| e.count_diff >= n).count(),
        entries,
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "tracemalloc-diff {}: 1 warmup + {} iterations, {} frames, {:.1} s",
            report.target, report.iterations, report.frames, report.seconds
        );
        for (i, e) in report.entries.iter().enumerate() {
            println!(
                "#{} {:+} B in {:+} blocks ({:+.1} B, {:+.2} blocks per iteration; now {} B in {} blocks)",
                i + 1,
                e.size_diff,
                e.count_diff,
                e.size_diff as f64 / n as f64,
                e.count_diff as f64 / n as f64,
                e.size,
                e.count
            );
            for f in &e.traceback {
                println!("    {}:{}", f.file, f.line);
            }
        }
        if report.linear == 0 {
            println!(
                "tracemalloc-diff: no traceback grows by a block per iteration ({} growing at all)",
                report.entries.len()
            );
        } else {
            println!(
                "tracemalloc-diff: {} traceback(s) grow by at least one block per iteration",
                report.linear
            );
        }
    }
    Ok(report.linear == 0)
}

// ---------------------------------------------------------------------------------------------
// LeakSanitizer

#[derive(Args, Clone, Debug)]
pub struct LsanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the leaks as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The committed, version-tagged baseline file for LSan.
pub fn lsan_suppressions(version: &str) -> PathBuf {
    workspace_root()
        .join("suppressions")
        .join(format!("lsan-{version}.supp"))
}

/// The manifest's ASAN_OPTIONS with leak detection switched on; every other option is kept.
fn with_leak_detection(env: &mut Vec<(String, String)>) {
    let old = env
        .iter()
        .position(|(k, _)| k == "ASAN_OPTIONS")
        .map(|i| env.remove(i).1)
        .unwrap_or_default();
    let mut opts: Vec<String> = old
        .split(':')
        .filter(|o| !o.is_empty() && !o.starts_with("detect_leaks="))
        .map(str::to_string)
        .collect();
    opts.insert(0, "detect_leaks=1".into());
    env.push(("ASAN_OPTIONS".into(), opts.join(":")));
}

/// `leak:` lines for every leak LSan reports in `text`: the innermost frame of each allocation
/// stack that is not allocator / sanitizer machinery, deduplicated and sorted.
pub fn lsan_suppression_lines(text: &str) -> Vec<String> {
    let set: BTreeSet<String> = detect::parse(text)
        .iter()
        .filter(|f| f.tool == detect::Tool::Lsan)
        .filter_map(|f| {
            f.alloc_stack
                .iter()
                .find(|fr| !frame_tables::is_machinery(fr) && fr.function != "??")
        })
        .map(|fr| format!("leak:{}", fr.function))
        .collect();
    set.into_iter().collect()
}

/// What `lsan` / `valgrind` found.
#[derive(Serialize, Debug)]
pub struct ToolReport {
    pub target: String,
    pub variant: String,
    pub version: String,
    pub suppressions: Vec<PathBuf>,
    pub findings: Vec<Finding>,
    pub seconds: f64,
}

fn print_findings(tool: &str, r: &ToolReport) {
    for f in &r.findings {
        let top = f
            .top_frame()
            .map(|fr| match (&fr.file, fr.line) {
                (Some(file), Some(line)) => format!("{} ({file}:{line})", fr.function),
                _ => fr.function.clone(),
            })
            .unwrap_or_else(|| "?".into());
        println!("{}: {} in {top}: {}", f.class, tool_name(f), f.summary);
    }
    println!(
        "{tool}: {} finding(s) for {} on {} {} ({:.1} s)",
        r.findings.len(),
        r.target,
        r.variant,
        r.version,
        r.seconds
    );
}

/// The tool as its serde name ("lsan", "valgrind").
fn tool_name(f: &Finding) -> String {
    serde_json::to_value(f.tool)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `cargo xtask lsan`: returns `Ok(false)` when the target leaks.
pub fn lsan(args: LsanArgs) -> Result<bool> {
    let target = Target::from_args(&args.target)?;
    let ext = ext_dirs(&args.target)?;
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, Variant::Asan, None)?;
    let started = Instant::now();
    let mut env = python_env(&manifest, &ext);
    with_leak_detection(&mut env);

    // 1. The interpreter's own leaks: an empty program on the same variant.
    let bar = spinner(format!(
        "lsan: baseline (python -c pass) on asan {}",
        manifest.version
    ));
    let mut base_env = env.clone();
    base_env.push(("LSAN_OPTIONS".into(), "print_suppressions=0".into()));
    let base = run_captured(
        manifest.python.as_os_str(),
        &["-c".into(), "pass".into()],
        &base_env,
    );
    bar.finish_and_clear();
    let base = base?;
    let lines = lsan_suppression_lines(&base.text);
    if !base.ok && lines.is_empty() {
        bail!(
            "the empty program failed on the asan variant (exit {:?}) without a leak report:\n{}",
            base.code,
            tail(&base.text, 30)
        );
    }
    let supp = lsan_suppressions(&manifest.version);
    let content = format!(
        "# LeakSanitizer suppressions for CPython {} (capisan asan variant): every leak an empty\n\
         # program (`python -c pass`) reports at exit, one `leak:` line per innermost non-allocator\n\
         # frame. Regenerated by `cargo xtask lsan`; {} baseline leak(s).\n{}",
        manifest.version,
        lines.len(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    if fs::read_to_string(&supp).ok().as_deref() != Some(content.as_str()) {
        fs::create_dir_all(supp.parent().expect("suppressions/ has a parent"))?;
        fs::write(&supp, &content).with_context(|| format!("writing {}", supp.display()))?;
        eprintln!("lsan: wrote {} ({} line(s))", supp.display(), lines.len());
    }

    // 2. The target, minus the baseline.
    let bar = spinner(format!(
        "lsan: {} on asan {}",
        target.label(),
        manifest.version
    ));
    env.push((
        "LSAN_OPTIONS".into(),
        format!("suppressions={}:print_suppressions=0", supp.display()),
    ));
    let out = run_captured(manifest.python.as_os_str(), &target.python_argv(), &env);
    bar.finish_and_clear();
    let out = out?;
    let findings = detect::parse(&out.text);
    if findings.is_empty() && !out.ok {
        bail!(
            "{} failed on the asan variant (exit {:?}) without a sanitizer report:\n{}",
            target.label(),
            out.code,
            tail(&out.text, 30)
        );
    }
    let report = ToolReport {
        target: target.label(),
        variant: manifest.variant.to_string(),
        version: manifest.version.clone(),
        suppressions: vec![supp],
        findings,
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_findings("lsan", &report);
    }
    Ok(report.findings.is_empty())
}

// ---------------------------------------------------------------------------------------------
// valgrind

#[derive(Args, Clone, Debug)]
pub struct ValgrindArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// More suppression files (besides CPython's and suppressions/valgrind-<version>.supp).
    #[arg(long)]
    pub supp: Vec<PathBuf>,
    /// Skip capisan's own suppressions/valgrind-<version>.supp.
    #[arg(long)]
    pub no_capisan_supp: bool,
    /// Track where uninitialised values come from (slower, better reports).
    #[arg(long)]
    pub track_origins: bool,
    /// Print the findings as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// capisan's own, committed valgrind suppressions for a CPython version.
pub fn valgrind_suppressions(version: &str) -> PathBuf {
    workspace_root()
        .join("suppressions")
        .join(format!("valgrind-{version}.supp"))
}

/// One memcheck run of a target.
struct Memcheck<'a> {
    manifest: &'a Manifest,
    ext: &'a [PathBuf],
    supps: Vec<PathBuf>,
    gen_suppressions: bool,
    track_origins: bool,
}

struct MemcheckRun {
    xml: String,
    log: String,
}

impl Memcheck<'_> {
    fn new<'a>(manifest: &'a Manifest, ext: &'a [PathBuf]) -> Memcheck<'a> {
        Memcheck {
            manifest,
            ext,
            supps: manifest.valgrind_suppressions.iter().cloned().collect(),
            gen_suppressions: false,
            track_origins: false,
        }
    }

    fn run(&self, target: &Target) -> Result<MemcheckRun> {
        let dir = tempfile::Builder::new()
            .prefix("capisan-memcheck-")
            .tempdir()?;
        let xml_path = dir.path().join("memcheck.xml");
        let mut argv = vec![
            "--tool=memcheck".to_string(),
            "--xml=yes".into(),
            format!("--xml-file={}", xml_path.display()),
            "--leak-check=full".into(),
            "--show-leak-kinds=definite,indirect".into(),
            "--errors-for-leak-kinds=definite,indirect".into(),
        ];
        if self.gen_suppressions {
            argv.push("--gen-suppressions=all".into());
        }
        if self.track_origins {
            argv.push("--track-origins=yes".into());
        }
        for s in &self.supps {
            argv.push(format!("--suppressions={}", s.display()));
        }
        argv.push(self.manifest.python.display().to_string());
        argv.extend(target.python_argv());
        let env = python_env(self.manifest, self.ext);
        let out = run_captured(OsStr::new("valgrind"), &argv, &env)
            .context("running valgrind (install it with `cargo xtask setup`)")?;
        let xml = fs::read_to_string(&xml_path).with_context(|| {
            format!(
                "valgrind wrote no XML (exit {:?}):\n{}",
                out.code,
                tail(&out.text, 30)
            )
        })?;
        Ok(MemcheckRun { xml, log: out.text })
    }
}

/// `cargo xtask valgrind`: returns `Ok(false)` when memcheck reports something.
pub fn valgrind(args: ValgrindArgs) -> Result<bool> {
    let target = Target::from_args(&args.target)?;
    let ext = ext_dirs(&args.target)?;
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, Variant::Valgrind, None)?;
    let started = Instant::now();
    let mut mc = Memcheck::new(&manifest, &ext);
    let own = valgrind_suppressions(&manifest.version);
    if own.exists() && !args.no_capisan_supp {
        mc.supps.push(own);
    }
    for s in &args.supp {
        mc.supps.push(
            fs::canonicalize(s)
                .with_context(|| format!("--supp {} does not exist", s.display()))?,
        );
    }
    mc.track_origins = args.track_origins;
    let bar = spinner(format!(
        "valgrind: {} under memcheck on valgrind {} (slow)",
        target.label(),
        manifest.version
    ));
    let run = mc.run(&target);
    bar.finish_and_clear();
    let run = run?;
    let mut findings = detect::parse_valgrind_xml(&run.xml)
        .context("parsing memcheck's XML (was valgrind killed?)")?;
    // A pydebug fatal error (e.g. a negative refcount) is printed on stderr, not in the XML.
    findings.extend(detect::parse(&run.log));
    let report = ToolReport {
        target: target.label(),
        variant: manifest.variant.to_string(),
        version: manifest.version.clone(),
        suppressions: mc.supps.clone(),
        findings,
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_findings("valgrind", &report);
    }
    Ok(report.findings.is_empty())
}

// ---------------------------------------------------------------------------------------------
// valgrind suppressions: the file format, matching, generation, merging, minimization

#[derive(Args, Clone, Debug)]
pub struct ValgrindSuppArgs {
    #[command(subcommand)]
    pub action: SuppAction,
}

#[derive(Subcommand, Clone, Debug)]
pub enum SuppAction {
    /// Run a baseline TARGET under memcheck (--gen-suppressions=all) and write a suppression for
    /// every error it reports, except errors in the target's own code (--ext-path).
    Gen(SuppGenArgs),
    /// Merge suppression files, dropping duplicates (same kind and frames).
    Merge(SuppMergeArgs),
    /// Widen the frames of FILE to `...` / `fun:*` where every error of the baseline TARGET
    /// stays suppressed and no error of a --protect target becomes suppressed; verified by
    /// re-running both.
    Minimize(SuppMinimizeArgs),
}

#[derive(Args, Clone, Debug)]
pub struct SuppGenArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where to write the suppressions.
    #[arg(short, long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Clone, Debug)]
pub struct SuppMergeArgs {
    /// Suppression files to merge, in priority order (the first copy of a duplicate is kept).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where to write the merged suppressions (required).
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct SuppMinimizeArgs {
    /// The suppression file to minimize.
    pub file: PathBuf,
    /// The baseline whose errors must all stay suppressed.
    #[command(flatten)]
    pub target: TargetArgs,
    /// A target whose currently reported errors must stay reported (e.g. a planted bug in your
    /// extension); repeatable. Run with the same --ext-path.
    #[arg(long)]
    pub protect: Vec<String>,
    /// Where to write the minimized suppressions (required; may be FILE itself).
    #[arg(short, long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// One `{ ... }` entry of a valgrind suppression file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppression {
    pub name: String,
    /// `Memcheck:Cond`, `Memcheck:Leak`, `Memcheck:Param`, ...
    pub kind: String,
    /// Lines between the kind and the frames (`match-leak-kinds: definite`, a syscall param).
    pub extra: Vec<String>,
    /// `fun:NAME`, `obj:PATH` or `...`, innermost first.
    pub frames: Vec<String>,
}

impl Suppression {
    /// Kind, extra lines and frames: two entries with the same key suppress the same errors.
    fn key(&self) -> (String, Vec<String>, Vec<String>) {
        (self.kind.clone(), self.extra.clone(), self.frames.clone())
    }

    fn render(&self) -> String {
        let mut s = format!("{{\n   {}\n   {}\n", self.name, self.kind);
        for l in self.extra.iter().chain(&self.frames) {
            s.push_str(&format!("   {l}\n"));
        }
        s.push_str("}\n");
        s
    }
}

/// Parse valgrind suppression text. Comments (`#`) and blank lines are skipped.
pub fn parse_suppressions(text: &str) -> Result<Vec<Suppression>> {
    let mut out = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match (&mut block, line) {
            (None, "{") => block = Some(Vec::new()),
            (None, _) => bail!("line {}: expected `{{`, found {line:?}", n + 1),
            (Some(b), "}") => {
                if b.len() < 2 {
                    bail!("line {}: a suppression needs a name and a kind", n + 1);
                }
                let name = b[0].clone();
                let kind = b[1].clone();
                let (mut extra, mut frames) = (Vec::new(), Vec::new());
                for l in &b[2..] {
                    if l == "..." || l.starts_with("fun:") || l.starts_with("obj:") {
                        frames.push(l.clone());
                    } else if frames.is_empty() {
                        extra.push(l.clone());
                    } else {
                        bail!("line {}: unexpected {l:?} among frames", n + 1);
                    }
                }
                out.push(Suppression {
                    name,
                    kind,
                    extra,
                    frames,
                });
                block = None;
            }
            (Some(b), _) => b.push(line.to_string()),
        }
    }
    if block.is_some() {
        bail!("unterminated suppression at end of file");
    }
    Ok(out)
}

fn render_file(header: &str, entries: &[Suppression]) -> String {
    let mut s: String = header.lines().map(|l| format!("# {l}\n")).collect();
    for e in entries {
        s.push('\n');
        s.push_str(&e.render());
    }
    s
}

/// Entries with the same kind, extra lines and frames as an earlier one are dropped.
pub fn dedup_suppressions(entries: Vec<Suppression>) -> Vec<Suppression> {
    let mut seen = BTreeSet::new();
    entries
        .into_iter()
        .filter(|e| seen.insert(e.key()))
        .collect()
}

/// valgrind's `*` / `?` wildcard match.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|k| glob(rest, &text[k..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// One frame of a memcheck error, as the XML gives it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VgFrame {
    pub function: Option<String>,
    pub object: Option<String>,
    pub file: Option<String>,
}

fn frame_matches(pattern: &str, f: &VgFrame) -> bool {
    if let Some(p) = pattern.strip_prefix("fun:") {
        glob(
            p.as_bytes(),
            f.function.as_deref().unwrap_or("???").as_bytes(),
        )
    } else if let Some(p) = pattern.strip_prefix("obj:") {
        glob(
            p.as_bytes(),
            f.object.as_deref().unwrap_or("???").as_bytes(),
        )
    } else {
        false
    }
}

/// valgrind's matching: the pattern list must match a prefix of the stack (innermost first);
/// `...` matches any number of frames, including none.
fn stack_matches(patterns: &[String], stack: &[VgFrame]) -> bool {
    match patterns.split_first() {
        None => true,
        Some((p, rest)) if p == "..." => {
            (0..=stack.len()).any(|k| stack_matches(rest, &stack[k..]))
        }
        Some((p, rest)) => {
            !stack.is_empty() && frame_matches(p, &stack[0]) && stack_matches(rest, &stack[1..])
        }
    }
}

/// One error of a memcheck run with the suppression valgrind generated for it.
#[derive(Clone, Debug)]
pub struct VgError {
    pub kind: String,
    pub stack: Vec<VgFrame>,
    /// From `--gen-suppressions=all`.
    pub generated: Option<Suppression>,
}

impl VgError {
    fn suppressed_by(&self, s: &Suppression) -> bool {
        let Some(g) = &self.generated else {
            return false;
        };
        s.kind == g.kind
            && (s.extra.is_empty() || s.extra == g.extra)
            && stack_matches(&s.frames, &self.stack)
    }

    /// Identity across runs: the kind and the function / object of every frame.
    fn key(&self) -> String {
        let frames: Vec<String> = self
            .stack
            .iter()
            .map(|f| {
                f.function
                    .clone()
                    .or_else(|| f.object.clone())
                    .unwrap_or_default()
            })
            .collect();
        format!("{}|{}", self.kind, frames.join("<"))
    }

    /// True when a frame is in one of the extension directories (its object, or its source when
    /// the extension was built by `ext-build`).
    fn in_own_code(&self, own: &OwnCode) -> bool {
        self.stack.iter().any(|f| own.contains(f))
    }
}

/// The target's own native code: extension objects under --ext-path and their sources. A Python
/// script has no native frames; its errors surface through CPython or an extension.
struct OwnCode {
    dirs: Vec<PathBuf>,
    sources: Vec<String>,
}

impl OwnCode {
    fn new(dirs: &[PathBuf]) -> OwnCode {
        let sources = dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("capisan-ext-source.txt")).ok())
            .map(|s| s.trim().to_string())
            .collect();
        OwnCode {
            dirs: dirs.to_vec(),
            sources,
        }
    }

    fn contains(&self, f: &VgFrame) -> bool {
        f.object
            .as_deref()
            .is_some_and(|o| self.dirs.iter().any(|d| Path::new(o).starts_with(d)))
            || f.file.as_deref().is_some_and(|file| {
                self.sources
                    .iter()
                    .any(|s| s == file || Path::new(s).starts_with(file))
            })
    }
}

/// Every `<error>` of memcheck's XML with its first stack and generated suppression. (Findings
/// come from `detect::parse_valgrind_xml`; this keeps what suppression work needs: all error
/// kinds, object paths, and the raw suppression.)
pub fn parse_memcheck_errors(xml: &str) -> Result<Vec<VgError>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut errors = Vec::new();
    let mut cur: Option<VgError> = None;
    let mut frame: Option<VgFrame> = None;
    let mut stacks = 0;
    let mut dir: Option<String> = None;
    loop {
        let ev = reader
            .read_event()
            .with_context(|| format!("memcheck XML at byte {}", reader.buffer_position()))?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match (name.as_str(), path.last().map(String::as_str)) {
                    ("error", Some("valgrindoutput")) => {
                        cur = Some(VgError {
                            kind: String::new(),
                            stack: Vec::new(),
                            generated: None,
                        });
                        stacks = 0;
                    }
                    ("stack", Some("error")) => stacks += 1,
                    ("frame", Some("stack")) => {
                        frame = Some(VgFrame::default());
                        dir = None;
                    }
                    _ => {}
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().unwrap_or_default()),
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(c.as_ref())),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else if let Ok(name) = r.decode() {
                    text.push_str(
                        quick_xml::escape::resolve_predefined_entity(&name).unwrap_or(""),
                    );
                }
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str);
                let value = std::mem::take(&mut text);
                match (name.as_str(), parent) {
                    ("kind", Some("error")) => {
                        if let Some(e) = cur.as_mut() {
                            e.kind = value;
                        }
                    }
                    ("fn", Some("frame")) => {
                        if let Some(f) = frame.as_mut() {
                            f.function = Some(value);
                        }
                    }
                    ("obj", Some("frame")) => {
                        if let Some(f) = frame.as_mut() {
                            f.object = Some(value);
                        }
                    }
                    ("dir", Some("frame")) => dir = Some(value),
                    ("file", Some("frame")) => {
                        if let Some(f) = frame.as_mut() {
                            f.file = Some(match &dir {
                                Some(d) if !value.starts_with('/') => format!("{d}/{value}"),
                                _ => value,
                            });
                        }
                    }
                    ("frame", Some("stack")) => {
                        if let (Some(f), Some(e)) = (frame.take(), cur.as_mut()) {
                            if stacks == 1 {
                                e.stack.push(f);
                            }
                        }
                    }
                    ("rawtext", Some("suppression")) => {
                        if let Some(e) = cur.as_mut() {
                            e.generated = parse_suppressions(&value)?.into_iter().next();
                        }
                    }
                    ("error", Some("valgrindoutput")) => errors.extend(cur.take()),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(errors)
}

/// Name generated suppressions after what they suppress.
fn name_generated(version: &str, s: &mut Suppression, n: usize) {
    let first = s
        .frames
        .iter()
        .find_map(|f| f.strip_prefix("fun:"))
        .unwrap_or("unknown");
    s.name = format!("capisan-{version}-{n}-{}-{first}", s.kind.replace(':', "-"));
}

fn run_memcheck_errors(mc: &Memcheck, target: &Target, what: &str) -> Result<Vec<VgError>> {
    let bar = spinner(format!("memcheck: {what} {} (slow)", target.label()));
    let run = mc.run(target);
    bar.finish_and_clear();
    parse_memcheck_errors(&run?.xml)
}

/// `cargo xtask valgrind-supp`.
pub fn valgrind_supp(args: ValgrindSuppArgs) -> Result<()> {
    match args.action {
        SuppAction::Gen(a) => supp_gen(a),
        SuppAction::Merge(a) => supp_merge(a),
        SuppAction::Minimize(a) => supp_minimize(a),
    }
}

fn supp_gen(args: SuppGenArgs) -> Result<()> {
    let target = Target::from_args(&args.target)?;
    let ext = ext_dirs(&args.target)?;
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, Variant::Valgrind, None)?;
    let mut mc = Memcheck::new(&manifest, &ext);
    mc.gen_suppressions = true;
    let errors = run_memcheck_errors(&mc, &target, "baseline")?;
    let own = OwnCode::new(&ext);
    let (mine, baseline): (Vec<&VgError>, Vec<&VgError>) =
        errors.iter().partition(|e| e.in_own_code(&own));
    let mut entries: Vec<Suppression> = baseline
        .iter()
        .filter_map(|e| e.generated.clone())
        .collect();
    entries = dedup_suppressions(entries);
    for (i, e) in entries.iter_mut().enumerate() {
        name_generated(&manifest.version, e, i + 1);
    }
    let header = format!(
        "valgrind memcheck suppressions for CPython {} (capisan valgrind variant, on top of\n\
         CPython's Misc/valgrind-python.supp), generated by\n\
         `cargo xtask valgrind-supp gen {}`: {} error(s) in the baseline, {} suppression(s).",
        manifest.version,
        target.label(),
        baseline.len(),
        entries.len()
    );
    fs::write(&args.out, render_file(&header, &entries))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "valgrind-supp gen: {} error(s) -> {} suppression(s) in {}",
        baseline.len(),
        entries.len(),
        args.out.display()
    );
    if !mine.is_empty() {
        println!(
            "valgrind-supp gen: {} error(s) in the target's own code left unsuppressed (they are bugs to fix)",
            mine.len()
        );
    }
    Ok(())
}

fn supp_merge(args: SuppMergeArgs) -> Result<()> {
    let mut all = Vec::new();
    for f in &args.files {
        let text = fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        all.extend(parse_suppressions(&text).with_context(|| format!("parsing {}", f.display()))?);
    }
    let before = all.len();
    let merged = dedup_suppressions(all);
    let names: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let header = format!(
        "valgrind suppressions merged by `cargo xtask valgrind-supp merge` from:\n{}",
        names.join("\n")
    );
    fs::write(&args.out, render_file(&header, &merged))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "valgrind-supp merge: {before} suppression(s) -> {} ({} duplicate(s) dropped) in {}",
        merged.len(),
        before - merged.len(),
        args.out.display()
    );
    Ok(())
}

/// True when `frames` still names a concrete location: at least one `fun:` frame without
/// wildcards that is not allocator / sanitizer machinery and not in `weak` (functions of libc or
/// valgrind's preload, e.g. `bcmp`). A suppression of only wildcards, or of `fun:malloc` or
/// `fun:bcmp`, would swallow every error of its kind, the target's own included.
fn anchored(frames: &[String], weak: &BTreeSet<String>) -> bool {
    frames.iter().any(|f| {
        f.strip_prefix("fun:").is_some_and(|name| {
            !name.contains(['*', '?'])
                && !weak.contains(name)
                && !frame_tables::is_machinery(&Frame::named(name))
        })
    })
}

/// Functions of the C library, the dynamic loader and valgrind's preloaded replacements: shared
/// by every caller, so they never anchor a suppression.
fn weak_functions(errors: &[&VgError]) -> BTreeSet<String> {
    errors
        .iter()
        .flat_map(|e| &e.stack)
        .filter(|f| {
            f.object.as_deref().is_some_and(|o| {
                let base = o.rsplit('/').next().unwrap_or(o);
                base.starts_with("vgpreload_")
                    || base.starts_with("libc.so")
                    || base.starts_with("libc-")
                    || base.starts_with("ld-linux")
            })
        })
        .filter_map(|f| f.function.clone())
        .collect()
}

/// Make one suppression as general as the evidence allows: it must still suppress every error in
/// `covered`, suppress nothing in `protected`, and stay [`anchored`] (a frame that is neither
/// machinery nor libc / valgrind preload). The innermost frame is never widened, so the
/// suppression stays tied to where the error happens.
pub fn widen(entry: &Suppression, covered: &[&VgError], protected: &[&VgError]) -> Suppression {
    let weak = weak_functions(covered);
    let ok = |frames: &[String]| {
        let cand = Suppression {
            frames: frames.to_vec(),
            ..entry.clone()
        };
        anchored(frames, &weak)
            && covered.iter().all(|e| e.suppressed_by(&cand))
            && !protected.iter().any(|e| e.suppressed_by(&cand))
    };
    let mut frames = entry.frames.clone();
    if !ok(&frames) {
        return entry.clone();
    }
    // 1. The shortest prefix (a suppression matches a prefix of the stack).
    if let Some(k) = (1..=frames.len()).find(|&k| ok(&frames[..k])) {
        frames.truncate(k);
    }
    // 2. Each remaining frame (outermost first) -> `...`, else `fun:*`.
    let mut i = frames.len();
    while i > 1 {
        i -= 1;
        if frames[i] == "..." {
            continue;
        }
        let mut wider = frames.clone();
        wider[i] = "...".into();
        wider.dedup_by(|a, b| a == "..." && b == "...");
        while wider.last().is_some_and(|f| f == "...") {
            wider.pop();
        }
        if ok(&wider) {
            frames = wider;
            i = i.min(frames.len());
            continue;
        }
        let mut star = frames.clone();
        star[i] = "fun:*".into();
        if ok(&star) {
            frames = star;
        }
    }
    Suppression {
        frames,
        ..entry.clone()
    }
}

fn supp_minimize(args: SuppMinimizeArgs) -> Result<()> {
    let target = Target::from_args(&args.target)?;
    let ext = ext_dirs(&args.target)?;
    let protect: Vec<Target> = args
        .protect
        .iter()
        .map(|p| Target::parse(p))
        .collect::<Result<_>>()?;
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, Variant::Valgrind, None)?;
    let text = fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let original =
        parse_suppressions(&text).with_context(|| format!("parsing {}", args.file.display()))?;
    let own = OwnCode::new(&ext);

    // Evidence: the baseline's errors and the protected targets' errors, without FILE.
    let mut mc = Memcheck::new(&manifest, &ext);
    mc.gen_suppressions = true;
    let baseline = run_memcheck_errors(&mc, &target, "baseline")?;
    let mut protected: Vec<VgError> = Vec::new();
    for p in &protect {
        for e in run_memcheck_errors(&mc, p, "protected target")? {
            let by_original = original.iter().any(|s| e.suppressed_by(s));
            if by_original && e.in_own_code(&own) {
                eprintln!(
                    "valgrind-supp minimize: warning: {} already suppresses an error in the target's own code ({})",
                    args.file.display(),
                    e.key()
                );
            }
            if !by_original {
                protected.push(e);
            }
        }
    }
    let protected_refs: Vec<&VgError> = protected.iter().collect();
    let covered_count = baseline
        .iter()
        .filter(|e| original.iter().any(|s| e.suppressed_by(s)))
        .count();
    let uncovered: BTreeSet<String> = baseline
        .iter()
        .filter(|e| !original.iter().any(|s| e.suppressed_by(s)))
        .map(VgError::key)
        .collect();

    // Widen every entry against the errors it suppresses; drop entries the baseline never uses.
    let mut widened: Vec<(Suppression, Vec<usize>)> = Vec::new();
    let mut unused = 0;
    for s in &original {
        let covered: Vec<usize> = (0..baseline.len())
            .filter(|&i| baseline[i].suppressed_by(s))
            .collect();
        if covered.is_empty() {
            unused += 1;
            continue;
        }
        let refs: Vec<&VgError> = covered.iter().map(|&i| &baseline[i]).collect();
        let w = widen(s, &refs, &protected_refs);
        let now: Vec<usize> = (0..baseline.len())
            .filter(|&i| baseline[i].suppressed_by(&w))
            .collect();
        widened.push((w, now));
    }
    // Drop duplicates, then entries whose errors the others already cover.
    let mut seen = BTreeSet::new();
    widened.retain(|(s, _)| seen.insert(s.key()));
    let mut k = 0;
    while k < widened.len() {
        let rest_cover = |i: usize| {
            widened
                .iter()
                .enumerate()
                .any(|(j, (_, c))| j != k && c.contains(&i))
        };
        if widened[k].1.iter().all(|&i| rest_cover(i)) {
            widened.remove(k);
        } else {
            k += 1;
        }
    }
    let entries: Vec<Suppression> = widened.into_iter().map(|(s, _)| s).collect();

    // Verify by re-running with the candidate file instead of FILE.
    let tmp = tempfile::Builder::new().prefix("capisan-supp-").tempdir()?;
    let candidate = tmp.path().join("candidate.supp");
    let header = format!(
        "{} minimized by `cargo xtask valgrind-supp minimize` against the baseline {}{}",
        args.file.display(),
        target.label(),
        if protect.is_empty() {
            String::new()
        } else {
            format!(
                ",\nkeeping reported: {}",
                protect
                    .iter()
                    .map(Target::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    fs::write(&candidate, render_file(&header, &entries))?;
    let mut check = Memcheck::new(&manifest, &ext);
    check.supps.push(candidate.clone());
    let left = run_memcheck_errors(&check, &target, "verify baseline")?;
    let leaked: Vec<String> = left
        .iter()
        .map(VgError::key)
        .filter(|k| !uncovered.contains(k))
        .collect();
    if !leaked.is_empty() {
        bail!(
            "the minimized suppressions no longer suppress {} baseline error(s), e.g. {}; \
             {} is unchanged and nothing was written",
            leaked.len(),
            leaked[0],
            args.file.display()
        );
    }
    let mut still = BTreeSet::new();
    for p in &protect {
        still.extend(
            run_memcheck_errors(&check, p, "verify protected")?
                .iter()
                .map(VgError::key),
        );
    }
    let hidden: Vec<String> = protected
        .iter()
        .map(VgError::key)
        .filter(|k| !still.contains(k))
        .collect();
    if !hidden.is_empty() {
        bail!(
            "the minimized suppressions hide {} error(s) of the protected targets, e.g. {}; nothing was written",
            hidden.len(),
            hidden[0]
        );
    }
    fs::copy(&candidate, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let frames_before: usize = original.iter().map(|s| s.frames.len()).sum();
    let frames_after: usize = entries.iter().map(|s| s.frames.len()).sum();
    println!(
        "valgrind-supp minimize: {} -> {} suppression(s) ({unused} unused by the baseline), \
         {frames_before} -> {frames_after} frame line(s); verified by re-running: the {} baseline \
         error(s) FILE suppressed stay suppressed, {} protected error(s) stay reported; wrote {}",
        original.len(),
        entries.len(),
        covered_count,
        protected.len(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrtest_decision_rule() {
        assert!(counts_leak(&[1, 1, 1]));
        assert!(counts_leak(&[5, 5, 6]));
        assert!(!counts_leak(&[3, 0, 0]));
        assert!(!counts_leak(&[8, -8, 1]));
        assert!(!counts_leak(&[]));
        assert!(fds_leak(&[0, -1, 0]));
        assert!(!fds_leak(&[0, 0, 0]));
    }

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

    fn frame(f: &str) -> VgFrame {
        VgFrame {
            function: Some(f.into()),
            object: Some("/x/python".into()),
            file: None,
        }
    }

    fn error(kind: &str, stack: &[&str]) -> VgError {
        let frames: Vec<String> = stack.iter().map(|f| format!("fun:{f}")).collect();
        VgError {
            kind: "UninitCondition".into(),
            stack: stack.iter().map(|f| frame(f)).collect(),
            generated: Some(Suppression {
                name: "g".into(),
                kind: kind.into(),
                extra: vec![],
                frames,
            }),
        }
    }

    #[test]
    fn suppression_files_round_trip_and_match() {
        let text = "# c\n{\n   n1\n   Memcheck:Leak\n   match-leak-kinds: definite\n   fun:malloc\n   ...\n   fun:f*\n}\n";
        let s = parse_suppressions(text).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].extra, vec!["match-leak-kinds: definite"]);
        assert_eq!(parse_suppressions(&s[0].render()).unwrap(), s);
        assert!(stack_matches(
            &s[0].frames,
            &[frame("malloc"), frame("a"), frame("foo"), frame("main")]
        ));
        assert!(!stack_matches(&s[0].frames, &[frame("malloc"), frame("a")]));
        assert!(glob(b"a?c*", b"abcdef"));
    }

    #[test]
    fn libc_and_preload_frames_never_anchor() {
        let mut e = error(
            "Memcheck:Cond",
            &["bcmp", "bytes_compare_eq", "bytes_richcompare", "eval"],
        );
        e.stack[0].object = Some("/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so".into());
        let w = widen(e.generated.as_ref().unwrap(), &[&e], &[]);
        assert_eq!(w.frames, vec!["fun:bcmp", "fun:bytes_compare_eq"]);
    }

    #[test]
    fn lsan_baseline_lines_name_the_innermost_non_allocator_frame() {
        let text = include_str!("../../harness/src/detect/fixtures/lsan_leak_bytes_on_error.txt");
        assert_eq!(lsan_suppression_lines(text), vec!["leak:_PyBytes_FromSize"]);
        assert!(lsan_suppression_lines("").is_empty());
        let mut env = vec![(
            "ASAN_OPTIONS".to_string(),
            "detect_leaks=0:halt_on_error=1".to_string(),
        )];
        with_leak_detection(&mut env);
        assert_eq!(env[0].1, "detect_leaks=1:halt_on_error=1");
    }

    #[test]
    fn widening_keeps_baseline_and_spares_protected() {
        let base = error(
            "Memcheck:Cond",
            &[
                "_Py_HashBytes",
                "bytes_hash",
                "PyObject_Hash",
                "builtin_hash",
                "eval",
            ],
        );
        let mine = error(
            "Memcheck:Cond",
            &[
                "_Py_HashBytes",
                "bytes_hash",
                "PyObject_Hash",
                "uninit_read",
                "eval",
            ],
        );
        let s = base.generated.clone().unwrap();
        let w = widen(&s, &[&base], &[&mine]);
        assert!(base.suppressed_by(&w), "{w:?}");
        assert!(!mine.suppressed_by(&w), "{w:?}");
        assert!(w.frames.len() < s.frames.len() || w.frames.contains(&"...".to_string()));
        // Without anything to protect, the innermost frame alone is enough.
        let w = widen(&s, &[&base], &[]);
        assert_eq!(w.frames, vec!["fun:_Py_HashBytes"]);
        // A leak is never suppressed by the allocator alone.
        let leak = error("Memcheck:Leak", &["malloc", "PyBytes_FromSize", "eval"]);
        let w = widen(leak.generated.as_ref().unwrap(), &[&leak], &[]);
        assert_eq!(w.frames, vec!["fun:malloc", "fun:PyBytes_FromSize"]);
    }
}
