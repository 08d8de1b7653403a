//! Real packages downloaded from PyPI at pinned versions, built against the installed asan
//! variant with `pkg-build` and fuzzed with `fuzz-pkg`: each lists its extension modules by
//! dotted name, imports in the variant's venv python, and a short campaign runs >= 1,000 inputs.
//! Needs the asan variant (`cargo xtask build-asan`, which also installs it) and PyPI.

mod common;

use std::path::{Path, PathBuf};

use capisan::campaign::Campaign;
use capisan_build::package::{self, PackageBuild};
use capisan_build::{Cache, Manifest, Variant};
use common::xtask;

/// `pkg-build REQ --variant asan --json`, asserting it succeeds; returns the record and stderr
/// (the step lines).
fn pkg_build(req: &str) -> (PackageBuild, String) {
    let r = xtask(&["pkg-build", req, "--variant", "asan", "--json"], &[]);
    assert!(r.ok, "pkg-build {req} failed:\n{}\n{}", r.stdout, r.stderr);
    let p: PackageBuild = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("pkg-build --json printed no record ({e}):\n{}", r.stdout));
    (p, r.stderr)
}

/// Import `modules` in the package's venv python, as a user would: no PYTHONHOME/PYTHONPATH,
/// only the variant's own environment (ASAN_OPTIONS=detect_leaks=0; no LD_PRELOAD).
fn assert_imports(p: &PackageBuild, modules: &[&str]) {
    let m = Manifest::find(&Cache::resolve(None), Variant::Asan, None).unwrap();
    let code = format!(
        "import importlib\nfor n in {modules:?}:\n    m = importlib.import_module(n)\n    print(n, m.__file__)\n"
    );
    let mut cmd = duct::cmd!(&p.python, "-c", code)
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in m.installed_env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import in the venv failed:\n{text}");
    for n in modules {
        assert!(
            text.contains(&format!("{n} {}", p.site_packages.display())),
            "{n} imported from outside the venv:\n{text}"
        );
    }
}

/// The extension carries the asan variant's instrumentation: ASan checks and libFuzzer's
/// coverage counters (resolved by the fuzzer binary at load time).
fn assert_instrumented(so: &Path) {
    let out = duct::cmd!("nm", "-D", "--undefined-only", so)
        .read()
        .unwrap();
    assert!(
        out.contains("__asan_"),
        "{} has no ASan calls",
        so.display()
    );
    assert!(
        out.contains("__sanitizer_cov_"),
        "{} has no coverage instrumentation",
        so.display()
    );
}

/// `fuzz-pkg REQ --runs 1000 --time 180` into a temporary directory: each module must run the
/// issue's 1,000 inputs (a quiet machine does in 20-45 s; the time cap is for a loaded one)
/// and reach coverage, and the summary names it; returns each module's bucket signatures.
fn fuzz_pkg(req: &str, modules: &[&str]) -> Vec<Vec<String>> {
    let out = tempfile::tempdir().unwrap();
    fuzz_pkg_in(req, modules, 180, 1000, out.path())
}

/// [`fuzz_pkg`] for at most `seconds`, ending once `min_execs` inputs ran, which it must reach,
/// into `out` (one campaign directory per module), kept for the caller.
fn fuzz_pkg_in(
    req: &str,
    modules: &[&str],
    seconds: u64,
    min_execs: u64,
    out: &Path,
) -> Vec<Vec<String>> {
    let mut buckets = Vec::new();
    let (time, runs) = (seconds.to_string(), min_execs.to_string());
    let mut args = vec![
        "fuzz-pkg",
        req,
        "--time",
        &time,
        "--runs",
        &runs,
        "--out",
        out.to_str().unwrap(),
    ];
    for m in modules {
        args.extend(["--module", m]);
    }
    let r = xtask(&args, &[]);
    assert!(r.ok, "fuzz-pkg {req} failed:\n{}\n{}", r.stdout, r.stderr);
    for m in modules {
        assert!(r.stdout.contains(&format!("  {m}: ")), "{}", r.stdout);
        // libFuzzer's final stats (one process), or the campaign's summary (fork mode, where
        // the parent prints none).
        let dir: PathBuf = out.join(m);
        let log = std::fs::read_to_string(dir.join("fuzz.log")).unwrap_or_default();
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap_or_default())
                .unwrap_or_default();
        let execs: u64 = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| summary["execs"].as_u64())
            .unwrap_or_else(|| panic!("no inputs count in {}:\n{}", dir.display(), r.stdout));
        // A campaign that never gets past start-up runs ~0-40 inputs. Fork-mode jobs are
        // given their time after the interpreter and the extension are imported
        // (`capisan::exec::fuzzer_init`), so a slow start no longer eats a short campaign.
        eprintln!("{m}: {execs} inputs (at most {seconds} s)");
        assert!(
            execs >= min_execs,
            "{m}: the campaign barely ran: {execs} inputs (at least {min_execs})"
        );
        // Past start-up: the extension's code was reached (a harness that dies at start-up
        // covers nothing).
        // The summary's coverage, or libFuzzer's own `cov: N` lines in its log.
        let logged = log
            .split("cov: ")
            .skip(1)
            .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let cov = summary["cov"].as_u64().unwrap_or(0).max(logged);
        assert!(
            cov > 0,
            "{m}: no coverage after {execs} inputs\n{}",
            r.stdout
        );
        let found: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(dir.join("buckets.json")).unwrap_or_default())
                .unwrap_or_default();
        buckets.push(
            found
                .iter()
                .map(|b| b["signature"].as_str().unwrap_or("?").to_string())
                .collect(),
        );
        if !found.is_empty() {
            eprintln!("{m}: {}", r.stdout);
        }
    }
    buckets
}

/// The installed asan python is an ordinary interpreter: it finds its own prefix and standard
/// library (C modules included) with no PYTHONHOME/PYTHONPATH, and the ASan runtime is linked in
/// statically (no LD_PRELOAD), so only ASAN_OPTIONS=detect_leaks=0 is needed.
#[test]
fn installed_asan_python_needs_no_environment() {
    let m = Manifest::find(&Cache::resolve(None), Variant::Asan, None).unwrap();
    let python = m
        .installed()
        .expect("the asan variant is installed: run `cargo xtask build-asan`");
    let mut cmd = duct::cmd!(
        python,
        "-c",
        "import sys, ssl, ctypes, venv, ensurepip; print(sys.prefix); print(hasattr(sys, 'gettotalrefcount'))"
    )
    .env_remove("PYTHONHOME")
    .env_remove("PYTHONPATH")
    .env_remove("LD_PRELOAD")
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked();
    for (k, v) in m.installed_env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let mut lines = text.lines();
    assert_eq!(
        lines.next().map(PathBuf::from),
        Some(m.install_prefix()),
        "{text}"
    );
    assert_eq!(lines.next(), Some("True"), "not the pydebug build: {text}");
    let ldd = duct::cmd!("ldd", python).read().unwrap();
    assert!(
        !ldd.contains("asan"),
        "ASan runtime is a shared library:\n{ldd}"
    );
}

/// Plain C, setuptools, the extension in a package (`markupsafe._speedups`, whose only callable
/// is the private `_escape_inner`).
#[test]
fn markupsafe_builds_imports_and_fuzzes() {
    let (p, _) = pkg_build("markupsafe==3.0.2");
    assert_eq!(
        (p.name.as_str(), p.version.as_str()),
        ("MarkupSafe", "3.0.2")
    );
    let names: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["markupsafe._speedups"]);
    assert_eq!(p.modules[0].import_error, None);
    assert_instrumented(&p.modules[0].path);
    assert_imports(&p, &["markupsafe._speedups"]);

    // The same inputs again: the record is read, nothing is rebuilt.
    let started = std::time::Instant::now();
    let r = xtask(
        &["pkg-build", "markupsafe==3.0.2", "--variant", "asan"],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("cached"), "{}", r.stdout);
    assert!(!r.stderr.contains("[2/4]"), "pip ran again:\n{}", r.stderr);
    assert!(started.elapsed().as_secs() < 60);

    fuzz_pkg("markupsafe==3.0.2", &["markupsafe._speedups"]);
}

/// Cython, the extension in a package submodule that imports its own package
/// (`frozenlist._frozenlist`), built by a PEP 517 in-tree backend over setuptools. Its latest
/// release has no known memory bug, so the campaign must report none: `FrozenList.append`
/// keeps its argument (in the list it holds) on every call, which capisan once reported as a
/// reference leak in the first 20 s; and `fl.extend(fl)` doubles the list it holds on every
/// call, which capisan once reported as a raw-memory leak (the bytes a call's receiver holds
/// are now subtracted, as its references are). That input is also run on its own.
#[test]
fn frozenlist_cython_builds_imports_and_fuzzes_clean() {
    let (p, _) = pkg_build("frozenlist==1.8.0");
    let names: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["frozenlist._frozenlist"]);
    assert_instrumented(&p.modules[0].path);
    assert_imports(&p, &["frozenlist", "frozenlist._frozenlist"]);
    let out = tempfile::tempdir().unwrap();
    let buckets = fuzz_pkg_in(
        "frozenlist==1.8.0",
        &["frozenlist._frozenlist"],
        180,
        1000,
        out.path(),
    );
    assert_eq!(
        buckets,
        [Vec::<String>::new()],
        "frozenlist 1.8.0 has no known memory bug"
    );
    // fl = FrozenList([4 floats]); fl.extend(fl): callable 0 is the type, method 3 `extend`
    // (public names sorted: append, clear, count, extend, ...); the resolved ops say so.
    let camp = Campaign::load(&out.path().join("frozenlist._frozenlist")).unwrap();
    let input = out.path().join("extend-self.json");
    std::fs::write(
        &input,
        r#"[{"NewListOf":{"dst":1,"len":4}},{"CallExt":{"func":0,"nargs":1,"args":[1,1,1],"dst":0,"kw":0}},{"CallMethod":{"recv":0,"method":3,"nargs":1,"args":[0,0,0],"kw":0,"dst":2}}]"#,
    )
    .unwrap();
    let resolved = out.path().join("resolved.json");
    let (ok, text) = camp
        .run_once(
            &input,
            &[("CAPISAN_DUMP_RESOLVED", resolved.display().to_string())],
        )
        .unwrap();
    assert!(ok && !text.contains("VIOLATION"), "{text}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&resolved).unwrap()).unwrap();
    assert_eq!(r["ext"][0], "frozenlist._frozenlist.FrozenList", "{r}");
    assert_eq!(
        r["ops"].as_array().map(Vec::len),
        Some(3),
        "all three ops ran: {r}"
    );
}

/// C++ (clang++ with the same flags) through Cython: `editdistance.bycython` wraps a C++
/// implementation. Its latest release has real bugs, each reproduced with the PyPI wheel on
/// plain python: `eval`, `eval_dp` and `eval_criterion` malloc their item arrays and leak them
/// when an item's `__getitem__` or `hash` raises (`eval([[1]] * 1000, 'x')` leaves 8,016 bytes
/// a call); and the malloc is unchecked and its size `len(a) * 8` unchecked for overflow (a
/// `__len__` of 2**61 wraps to malloc(0), then a heap overflow; 2**31 - 1 under a 4-GiB
/// address-space limit: a NULL store) — both segfault. The campaign must find them, and
/// report nothing else.
#[test]
fn editdistance_cplusplus_builds_imports_and_fuzzes() {
    let (p, _) = pkg_build("editdistance==0.8.1");
    let names: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["editdistance.bycython"]);
    assert!(
        p.compile_env
            .iter()
            .any(|(k, v)| k == "CXX" && v.contains("clang++")),
        "{:?}",
        p.compile_env
    );
    assert_instrumented(&p.modules[0].path);
    assert_imports(&p, &["editdistance", "editdistance.bycython"]);
    let buckets = fuzz_pkg("editdistance==0.8.1", &["editdistance.bycython"]);
    let real = |s: &&String| {
        let mut parts = s.split('|');
        let (class, culprit) = (parts.next().unwrap(), parts.next().unwrap_or(""));
        ["reference-leak", "null-deref", "buffer-overflow"].contains(&class)
            && culprit.contains("eval")
    };
    assert!(
        buckets[0]
            .iter()
            .any(|s| s.starts_with("reference-leak|eval")),
        "{buckets:?}"
    );
    assert!(buckets[0].iter().all(|s| real(&s)), "{buckets:?}");
}

/// meson-python (a PEP 517 backend that drives meson and ninja, not setuptools) and C++ with
/// pybind11: `contourpy._contourpy`, built with the variant's clang++ and flags (meson reads
/// CC/CXX/CFLAGS/CXXFLAGS from the environment pip passes on). Its dependency numpy has no
/// wheel for a debug ABI, so pip builds it from source too (the first build takes minutes).
#[test]
fn contourpy_meson_python_builds_imports_and_fuzzes() {
    let (p, _) = pkg_build("contourpy==1.3.3");
    let names: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["contourpy._contourpy"]);
    let log = std::fs::read_to_string(&p.pip_log).unwrap();
    assert!(log.contains("meson"), "not built by meson-python");
    assert_instrumented(&p.modules[0].path);
    assert_imports(&p, &["contourpy", "contourpy._contourpy"]);
    // Slow inputs (~30-40 a second under ASan): 1,000 take ~45 s on a quiet machine.
    fuzz_pkg("contourpy==1.3.3", &["contourpy._contourpy"]);
}

/// multidict 7.2.1 (the latest release): its campaign reports exactly one bucket, a real bug
/// — a recycled instance shell is tracked by the GC before its `state` is set, and a debug
/// CPython's `PyObject_GC_Track` traverses it: `multidict_tp_traverse` reads `md->state->mod`
/// through NULL (plain python on the asan variant: `a = multidict.CIMultiDict(); del a;
/// multidict.CIMultiDict()`; 6.7.1 has no shell pool and no crash). Nothing else: not its
/// module reference, which tp_clear keeps on purpose (a module breaks its own cycles), not one
/// bucket per evil subclass, and not its `_testcapi` helper module, which is not fuzzed unless
/// named. The bucket names the types whose tp_traverse `multidict_tp_traverse` is (the harness
/// notes each extension type's GC slot functions), one bucket for both.
#[test]
fn multidict_latest_gives_exactly_its_real_gc_bug() {
    let out = tempfile::tempdir().unwrap();
    let r = xtask(
        &[
            "fuzz-pkg",
            "multidict==7.2.1",
            "--time",
            "60",
            "--json",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("  multidict._multidict: "),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("multidict._testcapi:"), "{}", r.stdout);
    let buckets: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(out.path().join("multidict._multidict/buckets.json")).unwrap(),
    )
    .unwrap();
    let sigs: Vec<&str> = buckets
        .iter()
        .map(|b| b["signature"].as_str().unwrap())
        .collect();
    assert_eq!(
        sigs,
        ["gc-traversal|CIMultiDict,MultiDict|-"],
        "{}",
        r.stdout
    );
}

/// Bad input is one clear line and a failure exit, and leaves no directory behind.
#[test]
fn bad_requirements_fail_with_one_clear_line() {
    let cases = [
        (
            "capisan-no-such-package-7f3a==1.0",
            "no release on the package index matches",
        ),
        ("markupsafe==99.0.0", "from versions:"),
        ("six==1.17.0", "installed no extension module"),
        (
            "not a requirement",
            "not an existing path and not a pip requirement",
        ),
    ];
    for (req, expected) in cases {
        let r = xtask(&["pkg-build", req, "--variant", "asan"], &[]);
        assert!(!r.ok, "pkg-build {req} succeeded:\n{}", r.stdout);
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", r.stderr);
        assert!(errors[0].contains(expected), "{req}: {}", errors[0]);
    }
    let dir = package::packages_dir(&Cache::resolve(None));
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".partial-"), "left behind: {name}");
        assert!(
            !(name.starts_with("six-1.17.0") && e.path().is_dir()),
            "a failed build left {name}"
        );
    }
}

/// A fuzz-pkg finding goes through repro and confirm: markupsafe 3.0.4's `_escape_inner`
/// returns NULL without an exception for a non-str (a real bug of the latest release, also in
/// 3.0.2). The reproducer knows the package's venv; confirm builds the package for every other
/// variant (pkg-build, cached) and each one sees it.
#[test]
fn a_package_finding_is_reproduced_and_confirmed_on_every_variant() {
    let out = tempfile::tempdir().unwrap();
    let camp = out.path().join("camp");
    let r = xtask(
        &[
            "fuzz-pkg",
            "markupsafe==3.0.4",
            "--time",
            "60",
            "--stop-at-first-finding",
            "--json",
            "--out",
            camp.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let dir = camp.join("markupsafe._speedups");
    let buckets: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("buckets.json")).unwrap()).unwrap();
    let b = buckets
        .iter()
        .find(|b| b["class"] == "exception state")
        .unwrap_or_else(|| panic!("no exception-state bucket: {buckets:#?}"));
    let artifact = b["artifacts"][0].as_str().unwrap();
    let bundle = out.path().join("repro");
    let r = xtask(&["repro", artifact, "--out", bundle.to_str().unwrap()], &[]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let env = std::fs::read_to_string(bundle.join("campaign.env")).unwrap();
    assert!(env.contains("/venv/lib/python3"), "{env}");
    let r = xtask(&["confirm", bundle.to_str().unwrap()], &[]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let rows: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("malloc") || l.contains("default"))
        .collect();
    assert!(rows.len() >= 2, "{}", r.stdout);
    for row in rows {
        assert!(
            row.contains(" true "),
            "not reproduced: {row}\n{}",
            r.stdout
        );
    }
}

/// A spec file (capisan.toml) on a real package: markupsafe 3.0.4's `_escape_inner` returns
/// NULL without an exception for a non-str argument (found within seconds by a plain
/// campaign, see above). Told that its argument is a `str`, the campaign calls it only with
/// strings of the vocabulary and reports nothing in 1,000 inputs; a typo in the spec is one
/// clear line before anything runs.
#[test]
fn a_spec_gives_argument_kinds_and_catches_typos() {
    let out = tempfile::tempdir().unwrap();
    let spec = out.path().join("capisan.toml");
    std::fs::write(
        &spec,
        "[modules.\"markupsafe._speedups\".args]\n_escape_inner = [\"str\"]\n",
    )
    .unwrap();
    let camp = out.path().join("camp");
    let r = xtask(
        &[
            "fuzz-pkg",
            "markupsafe==3.0.4",
            "--spec",
            spec.to_str().unwrap(),
            "--time",
            "180",
            "--runs",
            "1000",
            "--json",
            "--out",
            camp.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let dir = camp.join("markupsafe._speedups");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert!(summary["execs"].as_u64().unwrap() >= 1000, "{summary:#}");
    let env = std::fs::read_to_string(dir.join("campaign.json")).unwrap();
    assert!(env.contains("CAPISAN_EXT_ARGS"), "{env}");
    let buckets: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("buckets.json")).unwrap()).unwrap();
    assert!(buckets.is_empty(), "{buckets:#?}");

    std::fs::write(
        &spec,
        "[modules.\"markupsafe._speedups\"]\nskip = [\"escape_inner\"]\n",
    )
    .unwrap();
    let r = xtask(
        &[
            "fuzz-pkg",
            "markupsafe==3.0.4",
            "--spec",
            spec.to_str().unwrap(),
            "--time",
            "5",
        ],
        &[],
    );
    assert!(!r.ok);
    let err: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(err.len(), 1, "{}", r.stderr);
    assert!(
        err[0].contains("has no callable `escape_inner`") && err[0].contains("_escape_inner"),
        "{}",
        r.stderr
    );
}
