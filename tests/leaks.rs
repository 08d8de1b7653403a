//! Leak hunting through the public commands (`refleak`, `tracemalloc-diff`, `lsan`, `valgrind`,
//! `valgrind-supp`), on real runs of the built variants. Every test plants the leak it claims to
//! catch (or runs the clean twin) and asserts what is named and where. Needs the pydebug, asan
//! and valgrind variants, like CI builds them.

mod common;

use std::path::{Path, PathBuf};

use capisan::detect::Finding;
use capisan::leaks::{self, LsanOptions, Target};
use capisan_build::{Cache, Manifest, Variant};
use common::{xtask, Run};
use serde_json::Value;

/// Build the bug zoo for `variant` into a directory of its own.
fn zoo(variant: &str) -> String {
    common::build_zoo(variant, "leaks").display().to_string()
}

/// Write `name` with `text` into `dir`; returns its path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}\nstderr: {}", r.stdout, r.stderr))
}

fn findings(r: &Run) -> Vec<Finding> {
    serde_json::from_value(json(r)["findings"].clone()).expect("findings deserialize")
}

fn top(f: &Finding) -> String {
    f.top_frame()
        .map(|fr| fr.function.clone())
        .unwrap_or_default()
}

/// Post-warmup deltas of one refleak counter ("references", "memory blocks", ...).
fn deltas(report: &Value, item: &str) -> Vec<i64> {
    report["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["item"] == item)
        .unwrap_or_else(|| panic!("no {item} counter: {report:#}"))["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect()
}

/// Every run keeps one more bytes object alive: one reference and one block per run.
const PLANTED: &str = "\
try:
    GROWING
except NameError:
    GROWING = []
GROWING.append(bytes(1000))  # planted leak: line 5
";

const CLEAN: &str = "\
import json
data = json.loads(json.dumps({'a': [1, 2, 3]}))
total = sum(data['a'])
";

#[test]
fn refleak_names_a_planted_global_list() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "planted.py", PLANTED);
    let r = xtask(&["refleak", &script, "-R", "2:3"], &[]);
    assert!(!r.ok, "a leak must exit non-zero: {}", r.stdout);
    assert!(
        r.stdout
            .contains("planted.py leaked [1, 1, 1] references, sum=3"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("LEAKED references, memory blocks"),
        "{}",
        r.stdout
    );
}

#[test]
fn refleak_clean_script_passes() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "clean.py", CLEAN);
    let r = xtask(&["refleak", &script, "-R", "3:3", "--json"], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let report = json(&r);
    assert_eq!(report["leaked"], false, "{report:#}");
    assert_eq!(deltas(&report, "references").len(), 3);
}

#[test]
fn refleak_finds_the_zoo_leak_on_error_through_module_function() {
    let ext = zoo("pydebug");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "zoowrap.py",
        "import bugzoo\n\n\
         def leak():\n    try:\n        bugzoo.leak_on_error('x')\n    except TypeError:\n        pass\n\n\
         def clean():\n    try:\n        bugzoo.leak_on_error_clean('x')\n    except TypeError:\n        pass\n",
    );
    let wrappers = dir.path().display().to_string();
    let run = |func: &str| {
        xtask(
            &[
                "refleak",
                &format!("zoowrap:{func}"),
                "--ext-path",
                &ext,
                "--ext-path",
                &wrappers,
                "--json",
            ],
            &[],
        )
    };
    let r = run("leak");
    assert!(!r.ok, "leak_on_error must be reported: {}", r.stdout);
    let report = json(&r);
    assert_eq!(report["leaked"], true, "{report:#}");
    // One list per call stays alive: every run leaks a reference and a block.
    let refs = deltas(&report, "references");
    assert!(refs.iter().all(|&d| d >= 1), "{refs:?}");
    assert!(deltas(&report, "memory blocks").iter().all(|&d| d >= 1));
    let r = run("clean");
    assert!(
        r.ok,
        "leak_on_error_clean must pass: {}{}",
        r.stdout, r.stderr
    );
    assert_eq!(json(&r)["leaked"], false);
}

#[test]
fn tracemalloc_diff_points_at_the_planted_line() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "planted.py", PLANTED);
    let r = xtask(&["tracemalloc-diff", &script, "-n", "8", "--json"], &[]);
    assert!(!r.ok, "linear growth must exit non-zero: {}", r.stdout);
    let report = json(&r);
    let first = &report["entries"][0];
    assert_eq!(first["traceback"][0]["file"], script.as_str(), "{report:#}");
    assert_eq!(first["traceback"][0]["line"], 5, "{report:#}");
    // Eight iterations, eight more 1000-byte objects (plus the list's growth).
    assert!(first["count_diff"].as_i64().unwrap() >= 8, "{first:#}");
    assert!(first["size_diff"].as_i64().unwrap() >= 8000, "{first:#}");
}

#[test]
fn tracemalloc_diff_clean_target_has_no_linear_growth() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "clean.py", CLEAN);
    let r = xtask(&["tracemalloc-diff", &script, "-n", "8", "--json"], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let report = json(&r);
    assert_eq!(report["linear"], 0, "{report:#}");
    for e in report["entries"].as_array().unwrap() {
        assert!(e["count_diff"].as_i64().unwrap() < 8, "{e:#}");
    }
}

#[test]
fn lsan_unmodified_cpython_json_has_no_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "json_dumps.py",
        "import json\njson.dumps([1])\n",
    );
    let committed = Snapshot::of(&leaks::lsan_suppressions(&asan().version));
    let r = xtask(&["lsan", &script, "--json"], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(findings(&r), Vec::new());
    // The baseline LSan got was generated into the cache; the committed file was only read.
    let used: Vec<PathBuf> = serde_json::from_value(json(&r)["suppressions"].clone()).unwrap();
    let cache = Cache::resolve(None);
    assert!(used.iter().any(|p| p.starts_with(cache.root())), "{used:?}");
    committed.assert_unchanged();
}

/// The newest asan variant.
fn asan() -> Manifest {
    Manifest::find(&Cache::resolve(None), Variant::Asan, None).expect("the asan variant is built")
}

/// A file's bytes and modification time, to prove a run left it alone.
struct Snapshot {
    path: PathBuf,
    state: Option<(Vec<u8>, std::time::SystemTime)>,
}

impl Snapshot {
    fn of(path: &Path) -> Snapshot {
        let state = std::fs::read(path)
            .ok()
            .map(|b| (b, std::fs::metadata(path).unwrap().modified().unwrap()));
        Snapshot {
            path: path.to_path_buf(),
            state,
        }
    }

    fn assert_unchanged(&self) {
        let now = Snapshot::of(&self.path);
        assert!(
            now.state == self.state,
            "{} was written by the run (issue 12: the committed baseline must only be read)",
            self.path.display()
        );
    }
}

/// Issue 12: `lsan` rewrote the committed `suppressions/lsan-<version>.supp` whenever the
/// baseline it generated differed from it. Here the baseline differs: a `sitecustomize` on the
/// extension path leaks one bytes object through the zoo at every start-up, the empty program's
/// included. The baseline (with that leak) must go to the cache, the committed file must keep
/// its bytes and mtime, and the findings must still be right: none for a clean target (the
/// start-up leak is the baseline's), the zoo's leak for a leaking one.
#[test]
fn lsan_never_writes_the_committed_baseline() {
    let zoo_dir = PathBuf::from(zoo("asan"));
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    write(
        &site,
        "sitecustomize.py",
        "import bugzoo\ntry:\n    bugzoo.leak_bytes_on_error('x')\nexcept TypeError:\n    pass\n",
    );
    let clean = write(dir.path(), "clean.py", "x = [1, 2, 3]\n");
    let cache = Cache::resolve(None);
    let manifest = asan();
    let committed = leaks::lsan_suppressions(&manifest.version);
    let before = Snapshot::of(&committed);
    let opts = LsanOptions {
        committed: vec![committed.clone()],
        update_committed: None,
    };

    let ext = leaks::ext_dirs(&[zoo_dir.clone(), site]).unwrap();
    let target = Target::parse(&clean).unwrap();
    let report = leaks::lsan(&cache, &manifest, &target, &ext, &opts).unwrap();
    assert_eq!(report.findings, Vec::new(), "the start-up leak is baseline");
    before.assert_unchanged();
    let generated = report.suppressions.last().unwrap();
    assert!(generated.starts_with(cache.root()), "{generated:?}");
    let text = std::fs::read_to_string(generated).unwrap();
    assert!(text.contains("leak:_PyBytes_FromSize"), "{text}");

    // Only an explicit request writes a baseline outside the cache (here a scratch file, not
    // the committed one).
    let asked = dir.path().join("lsan-asked.supp");
    let update = LsanOptions {
        committed: vec![],
        update_committed: Some(asked.clone()),
    };
    leaks::lsan(&cache, &manifest, &target, &ext, &update).unwrap();
    let text = std::fs::read_to_string(&asked).unwrap();
    assert!(text.ends_with("\nleak:_PyBytes_FromSize\n"), "{text}");
    before.assert_unchanged();

    // Without the leaky start-up, the target's own leak is reported (and the file still alone).
    let leaky = write(
        dir.path(),
        "leaky.py",
        "import bugzoo\ntry:\n    bugzoo.leak_bytes_on_error('x')\nexcept TypeError:\n    pass\n",
    );
    let ext = leaks::ext_dirs(&[zoo_dir]).unwrap();
    let target = Target::parse(&leaky).unwrap();
    let report = leaks::lsan(&cache, &manifest, &target, &ext, &opts).unwrap();
    assert!(!report.findings.is_empty());
    for f in &report.findings {
        assert_eq!(f.class.id(), "reference-leak", "{f:#?}");
        assert_eq!(top(f), "leak_bytes_on_error", "{f:#?}");
    }
    before.assert_unchanged();
}

#[test]
fn lsan_finds_the_zoo_leak_bytes_on_error() {
    let ext = zoo("asan");
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "leak_bytes.py",
        "import bugzoo\nfor _ in range(3):\n    try:\n        bugzoo.leak_bytes_on_error('x')\n    except TypeError:\n        pass\n",
    );
    let r = xtask(&["lsan", &script, "--ext-path", &ext, "--json"], &[]);
    assert!(!r.ok, "a leak must exit non-zero: {}", r.stdout);
    let found = findings(&r);
    assert!(!found.is_empty(), "{}{}", r.stdout, r.stderr);
    for f in &found {
        assert_eq!(f.class.id(), "reference-leak", "{f:#?}");
        assert_eq!(top(f), "leak_bytes_on_error", "{f:#?}");
    }
}

fn uninit_script(dir: &Path, clean: bool) -> String {
    let func = if clean {
        "uninit_read_clean"
    } else {
        "uninit_read"
    };
    write(
        dir,
        &format!("{func}.py"),
        &format!("import bugzoo\nbugzoo.{func}(8)\n"),
    )
}

fn assert_uninit_read_found(r: &Run) {
    let found = findings(r);
    assert!(
        found
            .iter()
            .any(|f| f.class.id() == "uninitialized-read" && top(f) == "uninit_read"),
        "no uninitialized read in uninit_read: {found:#?}\n{}",
        r.stderr
    );
}

#[test]
fn valgrind_finds_the_zoo_uninit_read_and_not_its_twin() {
    let ext = zoo("valgrind");
    let dir = tempfile::tempdir().unwrap();
    let bug = uninit_script(dir.path(), false);
    let r = xtask(&["valgrind", &bug, "--ext-path", &ext, "--json"], &[]);
    assert!(!r.ok, "findings must exit non-zero");
    assert_uninit_read_found(&r);
    let twin = uninit_script(dir.path(), true);
    let r = xtask(&["valgrind", &twin, "--ext-path", &ext, "--json"], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(findings(&r), Vec::new());
}

/// A baseline with real memcheck noise inside CPython: bytes copied from never-written libc
/// memory are hashed and compared by the interpreter (and the block is leaked).
const NOISY_BASELINE: &str = "\
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
data = ctypes.string_at(libc.malloc(64), 64)
hash(data)
data == bytes(64)
";

fn entries(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n{\n")
        .skip(1)
        .map(|e| e.split("\n}").next().unwrap().to_string())
        .collect()
}

#[test]
fn valgrind_supp_gen_merge_minimize_on_real_output() {
    let ext = zoo("valgrind");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let baseline = write(d, "baseline.py", NOISY_BASELINE);
    let bug = uninit_script(d, false);
    let out = |name: &str| d.join(name).display().to_string();

    // Without suppressions the baseline is noisy, so there is something to suppress.
    let r = xtask(&["valgrind", &baseline, "--no-capisan-supp", "--json"], &[]);
    let noise = findings(&r);
    assert!(
        !noise.is_empty(),
        "the baseline must be noisy: {}",
        r.stderr
    );

    let r = xtask(
        &["valgrind-supp", "gen", &baseline, "-o", &out("gen.supp")],
        &[],
    );
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let generated = entries(&d.join("gen.supp"));
    assert!(!generated.is_empty());
    let r = xtask(
        &[
            "valgrind-supp",
            "gen",
            "-c",
            "pass",
            "-o",
            &out("pass.supp"),
        ],
        &[],
    );
    assert!(r.ok, "{}{}", r.stdout, r.stderr);

    let r = xtask(
        &[
            "valgrind-supp",
            "merge",
            &out("gen.supp"),
            &out("pass.supp"),
            &out("gen.supp"),
            "-o",
            &out("merged.supp"),
        ],
        &[],
    );
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let merged = entries(&d.join("merged.supp"));
    let pass = entries(&d.join("pass.supp"));
    assert_eq!(
        merged.len(),
        generated.len() + pass.len(),
        "duplicates dropped"
    );

    let r = xtask(
        &[
            "valgrind-supp",
            "minimize",
            &out("merged.supp"),
            &baseline,
            "--ext-path",
            &ext,
            "--protect",
            &bug,
            "-o",
            &out("min.supp"),
        ],
        &[],
    );
    assert!(r.ok, "minimize failed: {}{}", r.stdout, r.stderr);
    let minimized = entries(&d.join("min.supp"));
    let lines = |es: &[String]| es.iter().map(|e| e.lines().count()).sum::<usize>();
    assert!(
        lines(&minimized) < lines(&merged),
        "nothing was widened:\n{minimized:#?}"
    );

    // The minimized file alone still suppresses every baseline error ...
    let r = xtask(
        &[
            "valgrind",
            &baseline,
            "--no-capisan-supp",
            "--supp",
            &out("min.supp"),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        findings(&r),
        Vec::new(),
        "{}",
        std::fs::read_to_string(d.join("min.supp")).unwrap()
    );
    // ... and does not hide the zoo's planted uninitialized read.
    let r = xtask(
        &[
            "valgrind",
            &bug,
            "--ext-path",
            &ext,
            "--no-capisan-supp",
            "--supp",
            &out("min.supp"),
            "--json",
        ],
        &[],
    );
    assert_uninit_read_found(&r);
}
