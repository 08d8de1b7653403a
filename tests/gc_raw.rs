//! GC and raw-memory checks for everything an extension call returns (issue 15), on
//! tests/gcext/gcext.c: each planted bug is found and named by a campaign without seeds that
//! drives only the function (or type) that has it, and the clean twins give no finding.
//!
//! Campaigns keep going (a finding is recorded and fuzzing goes on) for a fixed time, so a
//! finding of another part of the vocabulary cannot end one before the planted bug is seen.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use capisan::campaign::Totals;
use common::{root, xtask};
use serde_json::Value;

/// gcext built for the asan variant, once per test process.
fn gcext() -> &'static PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = std::env::temp_dir().join("capisan-gc-raw-gcext-asan");
        common::ext_build(&root().join("tests/gcext/gcext.c"), "asan", &out);
        out
    })
}

/// A `fuzz-ext gcext --no-seeds` campaign on `funcs` for `time` seconds: its buckets, its
/// totals, and the seconds from its start to each bucket's first record, by signature.
fn campaign(name: &str, funcs: &str, time: u64) -> (Vec<Value>, Totals, Vec<(String, f64)>) {
    let out = std::env::temp_dir().join(format!("capisan-gc-raw-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let time = time.to_string();
    let r = xtask(
        &[
            "fuzz-ext",
            "gcext",
            "--ext-path",
            gcext().to_str().unwrap(),
            "--funcs",
            funcs,
            "--no-seeds",
            "--time",
            &time,
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let buckets: Vec<Value> =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let totals = Totals::load(&out).expect("summary.json");
    let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let start = mtime(out.join("campaign.json")).unwrap_or(SystemTime::UNIX_EPOCH);
    let found = buckets
        .iter()
        .filter_map(|b| {
            let input = PathBuf::from(b["artifacts"][0].as_str()?);
            let at = mtime(input.with_file_name("finding.json"))?;
            let secs = at.duration_since(start).ok()?.as_secs_f64();
            Some((b["signature"].as_str()?.to_string(), secs))
        })
        .collect();
    (buckets, totals, found)
}

/// Runs the campaign and returns the bucket whose signature starts with `want`, asserting it
/// is there; prints how long it took to find.
fn expect_bucket(name: &str, funcs: &str, want: &str) -> Value {
    let (buckets, totals, found) = campaign(name, funcs, 60);
    let bucket = buckets
        .iter()
        .find(|b| b["signature"].as_str().unwrap().starts_with(want))
        .unwrap_or_else(|| {
            panic!(
                "no {want} bucket after {} inputs: {buckets:#?}",
                totals.execs
            )
        })
        .clone();
    eprintln!(
        "{name}: {want} found after {:?} s ({} inputs in the campaign)",
        found
            .iter()
            .find(|(s, _)| s.starts_with(want))
            .map(|(_, t)| t.round()),
        totals.execs
    );
    bucket
}

fn reason(bucket: &Value) -> &str {
    bucket["finding"]["reason"].as_str().unwrap()
}

#[test]
fn a_traverse_that_misses_a_member_only_the_returned_object_holds() {
    // Box's internal list is never in a slot: only the audit of a returned twin, with the
    // objects it exposes as candidates, sees the unvisited reference.
    let b = expect_bucket("box", "make_box", "gc-traversal|Box|");
    assert!(reason(&b).contains("gcext.Box (returned)"), "{b:#}");
    assert!(reason(&b).contains("missing Py_VISIT"), "{b:#}");
    assert!(reason(&b).contains("the list it exposes"), "{b:#}");
}

#[test]
fn a_tp_clear_that_leaves_a_member_of_a_returned_object() {
    let b = expect_bucket("clearbox", "make_clear_box", "gc-traversal|ClearBox|");
    assert!(
        reason(&b).contains("gcext.ClearBox (returned): after tp_clear"),
        "{b:#}"
    );
    assert!(reason(&b).contains("to a list"), "{b:#}");
}

#[test]
fn an_uncollectable_cycle_through_a_returned_object_names_the_type() {
    let b = expect_bucket("node", "Node", "gc-traversal|Node|");
    assert!(reason(&b).contains("attribute(s) next"), "{b:#}");
    assert!(reason(&b).contains("uncollectable cycle"), "{b:#}");
}

#[test]
fn a_failed_init_leaves_a_null_field_that_tp_traverse_reads() {
    // The collection after the failing call reaches the half-built instance HalfBuilt's
    // tp_new kept; UBSan (or ASan) reports the NULL dereference inside half_traverse, which
    // the harness knows as HalfBuilt's tp_traverse: the bucket is the type's.
    let b = expect_bucket("halfbuilt", "HalfBuilt", "gc-traversal|HalfBuilt|");
    assert!(
        reason(&b).contains("NULL dereference inside GC slot"),
        "{b:#}"
    );
    assert!(reason(&b).contains("subtract_refs"), "{b:#}");
    assert!(reason(&b).contains("half_traverse"), "{b:#}");
    assert!(reason(&b).contains("type gcext.HalfBuilt"), "{b:#}");
}

#[test]
fn a_pymem_leak_on_an_error_path_is_a_memory_leak_with_its_size() {
    let b = expect_bucket(
        "pymem",
        "pymem_leak",
        "reference-leak|pymem_leak|CallExt gcext.pymem_leak",
    );
    assert!(reason(&b).contains("memory leak"), "{b:#}");
    // GCEXT_PYMEM_LEAK bytes a call, confirmed by the regrtest procedure.
    assert!(reason(&b).contains("96 bytes per call"), "{b:#}");
    // The allocator's hooks and ASan's allocation stacks name where the growth came from.
    assert!(
        reason(&b).contains("allocation stack of the growth (1 block(s), 96 bytes")
            && reason(&b).contains("pymem_leak_impl"),
        "{b:#}"
    );
}

#[test]
fn a_plain_malloc_leak_is_a_memory_leak_with_its_size() {
    let b = expect_bucket(
        "malloc",
        "malloc_leak",
        "reference-leak|malloc_leak|CallExt gcext.malloc_leak",
    );
    assert!(reason(&b).contains("memory leak"), "{b:#}");
    assert!(reason(&b).contains("bytes per call"), "{b:#}");
    assert!(reason(&b).contains("allocated-bytes deltas"), "{b:#}");
    assert!(
        reason(&b).contains("allocation stack of the growth")
            && reason(&b).contains("malloc_leak_impl"),
        "{b:#}"
    );
}

#[test]
fn clean_twins_give_no_finding() {
    let (buckets, totals, _) = campaign(
        "clean",
        "make_box_clean,NodeClean,HalfBuiltClean,pymem_leak_clean,malloc_leak_clean",
        45,
    );
    // Thousands on a quiet machine; a loaded 2-core machine runs a few hundred.
    assert!(totals.execs > 300, "the campaign barely ran: {totals:?}");
    assert!(buckets.is_empty(), "{buckets:#?}");
    assert_eq!(
        totals.leak_stats.confirmed, 0,
        "no leak confirmed: {totals:?}"
    );
}
