//! The Python-API vocabulary (keyword arguments, memoryviews, evil subclasses, file-likes,
//! bad `__hash__`, big strings) reaches bugs the C-API ops alone cannot: each planted bug of
//! tests/apiext is found and classified without seeds within 120 s, and each clean twin gives
//! nothing. (The method of a returned object, `open_cursor().advance`, is reached in the
//! bench's rows but not yet reliably within 120 s, so it is not a test here.)

mod common;

use std::path::PathBuf;

use capisan::campaign::Totals;
use common::{root, xtask};
use serde_json::Value;

fn apiext() -> PathBuf {
    let out = std::env::temp_dir().join("capisan-apiext-asan");
    common::ext_build(&root().join("tests/apiext/apiext.c"), "asan", &out);
    out
}

/// A campaign without seeds on `funcs` of apiext, ending at its first finding; asserts that it
/// ran inputs when it found nothing.
fn campaign(funcs: &str, time: u64) -> Vec<Value> {
    let ext = apiext();
    let out = std::env::temp_dir().join(format!("capisan-api-{funcs}"));
    let _ = std::fs::remove_dir_all(&out);
    let time = time.to_string();
    let r = xtask(
        &[
            "fuzz-ext",
            "apiext",
            "--ext-path",
            ext.to_str().unwrap(),
            "--funcs",
            funcs,
            "--time",
            &time,
            "--no-seeds",
            "--stop-at-first-finding",
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
    assert!(
        !buckets.is_empty() || totals.execs >= 250,
        "{funcs}: the campaign barely ran: {totals:?}"
    );
    buckets
}

fn found(funcs: &str, class: &str, culprit: &str) {
    let buckets = campaign(funcs, 120);
    assert!(!buckets.is_empty(), "{funcs}: nothing found in 120 s");
    let b = &buckets[0];
    let sig = b["signature"].as_str().unwrap();
    assert_eq!(b["class"].as_str().unwrap(), class, "{funcs}: {b:#}");
    assert!(
        sig.split('|').nth(1).unwrap().contains(culprit),
        "{funcs}: culprit of {sig} is not {culprit}: {b:#}"
    );
    let clean: Vec<String> = funcs
        .split(',')
        .map(|f| match f {
            "Parser" => "ParserClean".to_string(),
            f => format!("{f}_clean"),
        })
        .collect();
    let twin = campaign(&clean.join(","), 20);
    assert!(twin.is_empty(), "{clean:?} must give nothing: {twin:#?}");
}

#[test]
fn keyword_only_boundary_int() {
    found("window", "buffer overflow", "window");
}

#[test]
fn strided_memoryview() {
    found("checksum", "buffer overflow", "checksum");
}

#[test]
fn subclass_overriding_a_hook_the_c_code_calls() {
    found("Parser", "use-after-free", "parser_feed");
}

#[test]
fn file_like_whose_write_raises() {
    found("dump", "use-after-free", "dump");
}

#[test]
fn hash_returning_a_non_int() {
    found("lookup_key", "use-after-free", "lookup_key");
}

#[test]
fn a_100_kib_string() {
    found("count_a", "buffer overflow", "count_a");
}
