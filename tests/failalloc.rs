//! Allocation-failure injection (issue 20) on tests/erroralloc: four bugs that show only when
//! an allocation fails (a leak when the second allocation fails, an unchecked PyTuple_New
//! dereferenced, a double DECREF in the error block, a constructor that leaves a half-built GC
//! object behind) are each found by `oom-sweep` on one call and by a `--fail-alloc` campaign
//! without seeds; their clean twins give no finding either way.

mod common;

use std::path::PathBuf;

use capisan::campaign::Totals;
use common::{root, xtask};
use serde_json::Value;

/// tests/erroralloc built for the asan variant (once per test process).
fn erroralloc() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = std::env::temp_dir().join("capisan-failalloc-erroralloc-asan");
            common::ext_build(&root().join("tests/erroralloc/erroralloc.c"), "asan", &out);
            out
        })
        .clone()
}

/// `oom-sweep --call erroralloc.FUNC []`: the report.
fn sweep(func: &str) -> Value {
    let ext = erroralloc();
    let out = std::env::temp_dir().join(format!("capisan-failalloc-sweep-{func}"));
    let _ = std::fs::remove_dir_all(&out);
    let call = format!("erroralloc.{func}");
    let r = xtask(
        &[
            "oom-sweep",
            "--call",
            &call,
            "[]",
            "--ext-path",
            ext.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// A `fuzz-ext erroralloc --fail-alloc --no-seeds` campaign on `funcs`; its directory and
/// buckets.
fn campaign(name: &str, funcs: &str, time: u64, stop_at_first: bool) -> (PathBuf, Vec<Value>) {
    let ext = erroralloc();
    let out = std::env::temp_dir().join(format!("capisan-failalloc-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let time = time.to_string();
    let mut args = vec![
        "fuzz-ext",
        "erroralloc",
        "--ext-path",
        ext.to_str().unwrap(),
        "--funcs",
        funcs,
        "--fail-alloc",
        "--no-seeds",
        "--time",
        &time,
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    if stop_at_first {
        args.push("--stop-at-first-finding");
    }
    let r = xtask(&args, &[]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let buckets = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    (out, buckets)
}

/// The sweep finds exactly `signature` at allocation(s) `nths` of the call, and nothing when
/// nothing fails; a campaign without seeds finds the same bucket (class and frame), and the
/// finding says which allocation failed.
fn found_both_ways(func: &str, signature: &str, nths: &[u64]) {
    let report = sweep(func);
    let buckets = report["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{report:#}");
    assert_eq!(buckets[0]["signature"], signature, "{report:#}");
    let got: Vec<u64> = buckets[0]["nths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(got, nths, "{report:#}");
    assert_eq!(buckets[0]["without_failure"], false, "{report:#}");
    assert!(report["allocations"].as_u64().unwrap() >= nths[nths.len() - 1]);

    let (out, buckets) = campaign(func, func, 70, true);
    let totals = Totals::load(&out).expect("summary.json");
    let class_frame = signature.rsplit_once('|').unwrap().0;
    assert!(
        buckets.iter().any(|b| b["signature"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{class_frame}|"))),
        "{func}: the campaign found no {class_frame} in {:.0} s ({} inputs): {buckets:#?}",
        totals.seconds,
        totals.execs
    );
    let b = &buckets[0];
    let text = format!("{}", b["finding"]);
    assert!(
        text.contains("FailNext(") || text.contains("allocation-failure injection"),
        "the finding names the failing allocation: {b:#}"
    );
    eprintln!(
        "{func}: found by a --fail-alloc campaign without seeds after {} inputs, {:.1} s",
        totals.execs, totals.seconds
    );
}

#[test]
fn leak_when_the_second_allocation_fails() {
    found_both_ways(
        "leak_on_error",
        "reference-leak|leak_on_error|CallExt erroralloc.leak_on_error",
        &[2],
    );
}

#[test]
fn unchecked_tuple_new_dereferenced() {
    found_both_ways(
        "unchecked_tuple",
        "null-deref|unchecked_tuple|CallExt erroralloc.unchecked_tuple",
        &[1],
    );
}

#[test]
fn double_decref_in_the_error_block() {
    found_both_ways(
        "double_decref",
        "use-after-free|double_decref|CallExt erroralloc.double_decref",
        &[2],
    );
}

#[test]
fn constructor_leaves_a_half_built_gc_object() {
    found_both_ways("Pair", "reference-leak|Pair|CallExt erroralloc.Pair", &[3]);
}

#[test]
fn clean_twins_give_no_findings_either_way() {
    for func in [
        "leak_on_error_ok",
        "unchecked_tuple_ok",
        "double_decref_ok",
        "PairOk",
    ] {
        let report = sweep(func);
        assert_eq!(report["buckets"], Value::Array(vec![]), "{report:#}");
        let clean = report["clean"].as_array().unwrap().len() as u64;
        assert!(
            clean >= 1 && clean == report["swept"].as_u64().unwrap(),
            "{report:#}"
        );
    }
    let (out, buckets) = campaign(
        "twins",
        "leak_on_error_ok,unchecked_tuple_ok,double_decref_ok,PairOk",
        30,
        false,
    );
    let totals = Totals::load(&out).expect("summary.json");
    // Thousands on a quiet machine; a loaded 2-core machine runs a few hundred.
    assert!(totals.execs > 300, "the campaign barely ran: {totals:?}");
    assert!(buckets.is_empty(), "{buckets:#?}");
}

/// A sweep point's C reproducer (`repro`) pastes the same allocator wrappers and fails the
/// same allocation of the same call: built and run outside capisan, it shows the bug.
#[test]
fn reproducer_fails_the_same_allocation() {
    let ext = erroralloc();
    for (func, expect) in [
        ("double_decref", "heap-use-after-free"),
        ("leak_on_error", "REFERENCE LEAK"),
    ] {
        let report = sweep(func);
        let input = report["buckets"][0]["input"].as_str().unwrap().to_string();
        let out = std::env::temp_dir().join(format!("capisan-failalloc-repro-{func}"));
        let _ = std::fs::remove_dir_all(&out);
        let r = xtask(&["repro", &input, "-o", out.to_str().unwrap()], &[]);
        assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
        let c = std::fs::read_to_string(out.join("repro.c")).unwrap();
        assert!(c.contains("capisan_fail_next("), "{c}");
        let b = duct::cmd!(out.join("build.sh"), "asan")
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .unwrap();
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stdout));
        let o = duct::cmd!(out.join("run.sh"), "asan")
            .env("EXT_PATH", &ext)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(expect) && !text.contains("finished without the expected failure"),
            "{func}: {text}"
        );
    }
}
