//! The capi_sequences target on unmodified CPython: a one-minute campaign finds nothing but the
//! known CPython bugs of corpora/known-buckets.txt (each a real bug, named there).
//! (The planted-bug side — extra DECREF, missing DECREF, missing Py_VISIT — is in zoo.rs.)

mod common;

use common::xtask;
use serde_json::Value;

#[test]
fn unmodified_cpython_gives_zero_findings_in_60_s() {
    let out = std::env::temp_dir().join("capisan-capi-clean");
    let _ = std::fs::remove_dir_all(&out);
    let known = common::root().join("corpora/known-buckets.txt");
    let r = xtask(
        &[
            "fuzz",
            "capi_sequences",
            "--time",
            "60",
            "--seed",
            "7",
            "--json",
            "--out",
            out.to_str().unwrap(),
            "--known",
            known.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let buckets: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let listed = capisan::findings::read_known(&std::fs::read_to_string(&known).unwrap());
    let new: Vec<&Value> = buckets
        .iter()
        .filter(|b| !capisan::findings::is_known(&listed, b["signature"].as_str().unwrap()))
        .collect();
    assert!(new.is_empty(), "findings on unmodified CPython: {new:#?}");
    let totals = capisan::campaign::Totals::load(&out).expect("summary.json");
    assert!(
        // ~2,000 inputs on a quiet 2-core machine, ~900 at a load average of 8.
        totals.execs > 300,
        "the campaign barely ran: {} inputs",
        totals.execs
    );
}
