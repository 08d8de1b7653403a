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

fn run(pkg: &PackageBuild) -> (capisan::testpkg::TestPkgOutcome, tempfile::TempDir) {
    let m = Manifest::find(&Cache::resolve(None), Variant::Asan, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let req = TestPkgRequest {
        out: out.path().to_path_buf(),
        timeout: Some(std::time::Duration::from_secs(600)),
        ..Default::default()
    };
    let outcome = test_package(pkg, &m, &req, &mut |l| eprintln!("{l}"))
        .unwrap_or_else(|e| panic!("test-pkg {}: {e}", pkg.name));
    eprintln!("{}", outcome.text());
    (outcome, out)
}

/// A planted use-after-free reached by one test of four: the crash is one bucket named after
/// the C function, the test is deselected and the tests after it still run and pass.
#[test]
fn a_test_that_kills_the_interpreter_is_a_finding_and_the_suite_goes_on() {
    let pkg = pkg_build(root().join("tests/crashpkg").to_str().unwrap());
    let (o, _dir) = run(&pkg);
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
    // The other three ran on the second run, after the crash was deselected.
    assert_eq!(o.counts.passed, 3, "{}", o.text());
    assert_eq!(o.runs, 2);
    let buckets: Vec<_> = std::fs::read_dir(&o.findings)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("finding.json").is_file())
        .collect();
    assert_eq!(buckets.len(), 1);
    assert!(buckets[0].path().join("repro.sh").is_file());
}

/// A real package's own suite, from its sdist on PyPI: it runs to the end on the ASan build and
/// nothing kills the interpreter.
#[test]
fn markupsafe_suite_runs_clean_on_asan() {
    let pkg = pkg_build("markupsafe==3.0.2");
    let (o, _dir) = run(&pkg);
    assert!(o.counts.passed >= 50, "{}", o.text());
    assert_eq!(o.counts.failed, 0, "{}", o.text());
    assert!(o.crashed.is_empty(), "{}", o.text());
}
