//! The bug zoo, fuzzed through the public commands (`ext-build`, `fuzz-ext`): every planted
//! bug class is found and named with the zoo function as its top frame, and every clean twin
//! gives zero findings. Needs the asan and valgrind variants (`cargo xtask build-asan`,
//! `build-valgrind`), like CI builds them.

mod common;

use common::xtask;
use serde_json::Value;

fn ext_dir(variant: &str) -> String {
    common::build_zoo(variant, "zoo").display().to_string()
}

/// Fuzz one zoo function (until its first finding) and return the buckets as JSON; asserts
/// that the campaign ran inputs, so "no bucket" means "nothing found", not "nothing ran".
fn fuzz(func: &str, variant: &str, time: u64, extra: &[&str]) -> Vec<Value> {
    let ext = ext_dir(variant);
    let out = std::env::temp_dir().join(format!("capisan-zoo-campaign-{func}-{variant}"));
    let _ = std::fs::remove_dir_all(&out);
    let time = time.to_string();
    let mut args = vec![
        "fuzz-ext",
        "bugzoo",
        "--ext-path",
        &ext,
        "--funcs",
        func,
        "--variant",
        variant,
        "--time",
        &time,
        "--seed",
        "1",
        "--json",
        "--stop-at-first-finding",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = xtask(&args, &[]);
    assert!(r.ok, "fuzz-ext {func} failed: {}", r.stderr);
    let buckets = serde_json::from_str::<Vec<Value>>(&r.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", r.stdout));
    let totals = capisan::campaign::Totals::load(&out).expect("summary.json");
    assert!(
        // memcheck runs a few inputs a second where ASan runs hundreds (fewer on a loaded
        // machine: 359 in one clean-twin campaign at a load average of 5).
        !buckets.is_empty() || totals.execs >= if variant == "valgrind" { 10 } else { 250 },
        "{func}: the campaign barely ran ({} inputs)",
        totals.execs
    );
    buckets
}

fn top_function(bucket: &Value) -> String {
    // signature: class|frame|op
    bucket["signature"]
        .as_str()
        .unwrap()
        .split('|')
        .nth(1)
        .unwrap()
        .to_string()
}

fn assert_found(func: &str, variant: &str, class: &str, frame: &str) {
    let buckets = fuzz(func, variant, 90, &[]);
    assert!(!buckets.is_empty(), "{func}: no finding in 90 s");
    let b = &buckets[0];
    assert_eq!(b["class"].as_str().unwrap(), class, "{func}: {b:#}");
    assert_eq!(top_function(b), frame, "{func}: {b:#}");
    let clean = format!("{func}_clean");
    let twin = fuzz(&clean, variant, 20, &[]);
    assert!(twin.is_empty(), "{clean} must give no finding: {twin:#?}");
}

#[test]
fn extra_decref_is_use_after_free() {
    assert_found("extra_decref", "asan", "use-after-free", "extra_decref");
}

#[test]
fn leak_on_error_path_is_reference_leak() {
    assert_found("leak_on_error", "asan", "reference leak", "leak_on_error");
}

#[test]
fn double_free_is_double_free() {
    assert_found("double_free", "asan", "double free", "double_free");
}

#[test]
fn overflow_is_buffer_overflow() {
    assert_found("overflow", "asan", "buffer overflow", "overflow");
}

#[test]
fn missing_py_visit_is_gc_traversal_bug() {
    assert_found("holder_traverse_bug", "asan", "gc traversal", "Holder");
}

#[test]
fn tp_clear_that_leaves_a_reference_is_gc_traversal_bug() {
    assert_found("clear_bug", "asan", "gc traversal", "ClearBug");
}

#[test]
fn borrowed_item_after_mutation_is_borrowed_ref_misuse() {
    assert_found(
        "borrowed_after_mutation",
        "asan",
        "borrowed reference misuse",
        "borrowed_after_mutation",
    );
}

#[test]
fn pymem_malloc_with_pyobject_free_is_allocator_mismatch() {
    let buckets = fuzz(
        "alloc_mismatch",
        "asan",
        90,
        &["--pythonmalloc", "malloc_debug"],
    );
    assert!(!buckets.is_empty(), "alloc_mismatch: no finding");
    assert_eq!(
        buckets[0]["class"].as_str().unwrap(),
        "allocator mismatch",
        "{:#}",
        buckets[0]
    );
    assert_eq!(
        top_function(&buckets[0]),
        "alloc_mismatch",
        "{:#}",
        buckets[0]
    );
    let twin = fuzz(
        "alloc_mismatch_clean",
        "asan",
        20,
        &["--pythonmalloc", "malloc_debug"],
    );
    assert!(twin.is_empty(), "{twin:#?}");
}

#[test]
fn branch_on_uninitialized_field_is_uninitialized_read() {
    assert_found(
        "uninit_read",
        "valgrind",
        "uninitialized read",
        "uninit_read",
    );
}
