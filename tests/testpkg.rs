//! `capisan::testpkg`: a package's own pytest suite on the asan variant (what labeille does),
//! with every test that kills the interpreter filed as a finding and the suite run on past it.
//! Needs the asan variant (`cargo xtask build-asan`) and PyPI (pytest, markupsafe's sdist).

mod common;

use capisan::testpkg::{test_package, TestPkgRequest};
use capisan_build::package::PackageBuild;
use capisan_build::{Cache, Manifest, Variant};
use common::{root, xtask};

fn pkg_build(req: &str) -> PackageBuild {
    let r = xtask(&["pkg-build", req, "--variant", "asan", "--json"], &[]);
    assert!(r.ok, "pkg-build {req} failed:\n{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).expect("pkg-build --json prints the record")
}

fn run(
    pkg: &PackageBuild,
    refleak: Option<(u32, u32)>,
) -> (capisan::testpkg::TestPkgOutcome, tempfile::TempDir) {
    let m = Manifest::find(&Cache::resolve(None), Variant::Asan, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let req = TestPkgRequest {
        out: out.path().to_path_buf(),
        timeout: Some(std::time::Duration::from_secs(600)),
        refleak,
        ..Default::default()
    };
    let outcome = test_package(pkg, &m, &req, &mut |l| eprintln!("{l}"))
        .unwrap_or_else(|e| panic!("test-pkg {}: {e}", pkg.name));
    eprintln!("{}", outcome.text());
    // The pytest logs, for a failing assertion to be read with.
    for r in 1..=outcome.runs {
        let log = std::fs::read_to_string(out.path().join(format!("run-{r}.log")));
        eprintln!("--- run-{r}.log:\n{}", log.unwrap_or_default());
    }
    (outcome, out)
}

/// A planted use-after-free reached by one test of four: the crash is one bucket named after
/// the C function, the test is deselected and the tests after it still run and pass.
#[test]
fn a_test_that_kills_the_interpreter_is_a_finding_and_the_suite_goes_on() {
    let pkg = pkg_build(root().join("tests/crashpkg").to_str().unwrap());
    let (o, _dir) = run(&pkg, None);
    assert_eq!(o.crashed.len(), 1, "{}", o.text());
    let c = &o.crashed[0];
    assert!(
        c.node_id.ends_with("test_native.py::test_read_after_free"),
        "{}",
        c.node_id
    );
    let sig = c.signature.as_deref().expect("the ASan report parses");
    assert!(sig.starts_with("use-after-free|read_after_free|"), "{sig}");
    assert!(c.new_bucket);
    // The other five ran on the second run, after the crash was deselected.
    assert_eq!(o.counts.passed, 5, "{}", o.text());
    assert!(o.leaked.is_empty() && o.refleak_checked == 0);
    assert_eq!(o.runs, 2);
    let buckets: Vec<_> = std::fs::read_dir(&o.findings)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("finding.json").is_file())
        .collect();
    assert_eq!(buckets.len(), 1);
    assert!(buckets[0].path().join("repro.sh").is_file());
}

/// A real package's own suite, from its sdist on PyPI, with `-R 3:3`: it runs to the end on the
/// ASan build, nothing kills the interpreter, and no test leaks (every passing test measured).
#[test]
fn markupsafe_suite_runs_clean_on_asan() {
    let pkg = pkg_build("markupsafe==3.0.2");
    let (o, _dir) = run(&pkg, Some((3, 3)));
    assert!(o.counts.passed >= 50, "{}", o.text());
    assert_eq!(o.counts.failed, 0, "{}", o.text());
    assert!(o.crashed.is_empty(), "{}", o.text());
    assert!(
        o.refleak_checked as u64 >= o.counts.passed / 2,
        "{}",
        o.text()
    );
    assert!(o.leaked.is_empty(), "{}", o.text());
}

/// `-R 3:3`: the test of the leaking function is reported with its test id (the refcount grows
/// on every measured run); its clean twin and the other tests are measured and report nothing.
#[test]
fn refleak_mode_names_the_leaking_test_and_not_its_clean_twin() {
    let pkg = pkg_build(root().join("tests/crashpkg").to_str().unwrap());
    let (o, dir) = run(&pkg, Some((3, 3)));
    let ids: Vec<&str> = o.leaked.iter().map(|l| l.node_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "{}", o.text());
    assert!(
        ids[0].ends_with("test_native.py::test_leaky_pair"),
        "{}",
        o.text()
    );
    assert!(
        o.leaked[0].references.iter().all(|&d| d >= 1),
        "{}",
        o.text()
    );
    assert_eq!(o.leaked[0].signature, "reference-leak|test_leaky_pair|Test");
    // Every passing test was measured: total, its tuple twin, pair, and the one after the crash.
    assert!(o.refleak_checked >= 5, "{}", o.text());
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("test_leaky_pair") && !junit.contains("test_pair\""),
        "{junit}"
    );
}
