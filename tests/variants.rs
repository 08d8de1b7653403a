//! Building CPython variants from real source: fetch, cached build, manifest round-trip, the
//! built interpreters' signals, and every bad-input case. CI builds pydebug and asan first
//! (`.ci/run`), so the builds here hit the cache.

mod common;

use capisan_build::{Cache, Manifest, Variant};
use common::xtask;

#[test]
fn repeated_build_is_a_cached_no_op() {
    let r = xtask(&["build-asan"], &[]);
    assert!(r.ok, "{}", r.stderr);
    let again = xtask(&["build-asan"], &[]);
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again.stdout.contains("asan: cached"),
        "second build must come from the cache: {}",
        again.stdout
    );
}

#[test]
fn fetch_finds_the_unpacked_source() {
    let r = xtask(&["fetch-cpython", "--version", "3.13.5"], &[]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("CPython 3.13.5 at "), "{}", r.stdout);
    let dir = r
        .stdout
        .lines()
        .next()
        .unwrap()
        .split(" at ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(std::path::Path::new(&dir)
        .join("Include/patchlevel.h")
        .exists());
}

#[test]
fn manifest_round_trips_and_points_at_real_files() {
    let cache = Cache::resolve(None);
    for v in [Variant::Pydebug, Variant::Asan] {
        let m = Manifest::find(&cache, v, Some("3.13")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("manifest.json");
        m.save(&p).unwrap();
        assert_eq!(Manifest::load(&p).unwrap(), m);
        assert!(m.python.exists() && m.libpython_static.exists(), "{m:#?}");
        assert!(m.include_dirs.iter().all(|d| d.exists()));
        assert!(m.platstdlib.exists() && m.stdlib.join("os.py").exists());
    }
    let asan = Manifest::find(&cache, Variant::Asan, None).unwrap();
    assert_eq!(asan.runtime_env["PYTHONMALLOC"], "malloc");
    let r = xtask(&["variants", "--json"], &[]);
    let listed: Vec<Manifest> = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        listed.iter().any(|m| m.variant == Variant::Asan)
            && listed.iter().any(|m| m.variant == Variant::Pydebug)
    );
}

fn run_python(variant: Variant, code: &str) -> std::process::Output {
    let m = Manifest::find(&Cache::resolve(None), variant, None).unwrap();
    let mut cmd = duct::cmd!(&m.python, "-c", code)
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    for (k, v) in m.env() {
        cmd = cmd.env(k, v);
    }
    cmd.run().unwrap()
}

#[test]
fn pydebug_python_has_gettotalrefcount() {
    let out = run_python(
        Variant::Pydebug,
        "import sys; print(sys.gettotalrefcount() > 0)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True");
}

#[test]
fn asan_python_reports_a_planted_ctypes_use_after_free() {
    // The buffer (64 bytes: heap-allocated by ctypes) is freed by `del`; string_at reads it.
    let code = "import ctypes\nb = ctypes.create_string_buffer(64)\naddr = ctypes.addressof(b)\ndel b\nprint(ctypes.string_at(addr, 8))";
    let out = run_python(Variant::Asan, code);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the use-after-free must abort the interpreter"
    );
    assert!(
        err.contains("ERROR: AddressSanitizer: heap-use-after-free"),
        "{err}"
    );
    let findings = capisan::detect::parse(&err);
    assert_eq!(findings[0].class, capisan::detect::BugClass::UseAfterFree);
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["fetch-cpython", "--version", "9.9.9"],
            "not a CPython version",
        ),
        (
            &["fetch-cpython", "--version", "3.99.1"],
            "unknown CPython version 3.99.1",
        ),
        (
            &["fetch-cpython", "--src", "/nonexistent/cpython"],
            "is not a CPython source tree",
        ),
        (
            &["build-pydebug", "--cc", "clang-does-not-exist"],
            "compiler clang-does-not-exist not usable",
        ),
        (
            &["build-release", "--src", "/tmp"],
            "is not a CPython source tree",
        ),
    ];
    for (args, expect) in cases {
        let r = xtask(args, &[]);
        assert!(!r.ok, "{args:?} must fail");
        assert!(
            r.stderr.contains(expect),
            "{args:?}: expected {expect:?} in: {}",
            r.stderr
        );
    }
}

#[test]
fn full_disk_is_refused_and_the_cache_stays_good() {
    let cache = Cache::resolve(None);
    let before = Manifest::find(&cache, Variant::Asan, None).unwrap();
    let r = xtask(
        &["build-asan", "--force"],
        &[("CAPISAN_MIN_FREE_MIB", "999999999")],
    );
    assert!(!r.ok);
    assert!(r.stderr.contains("not enough disk space"), "{}", r.stderr);
    let after = Manifest::find(&cache, Variant::Asan, None).unwrap();
    assert_eq!(before, after, "a refused build must not touch the good one");
}
