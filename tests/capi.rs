//! The capi_sequences target on unmodified CPython: a one-minute campaign finds nothing.
//! (The planted-bug side — extra DECREF, missing DECREF, missing Py_VISIT — is in zoo.rs.)

mod common;

use common::xtask;
use serde_json::Value;

#[test]
fn unmodified_cpython_gives_zero_findings_in_60_s() {
    let out = std::env::temp_dir().join("capisan-capi-clean");
    let _ = std::fs::remove_dir_all(&out);
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
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let buckets: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        buckets.is_empty(),
        "findings on unmodified CPython: {buckets:#?}"
    );
    let totals = capisan::campaign::Totals::load(&out).expect("summary.json");
    assert!(
        totals.execs > 1000,
        "the campaign barely ran: {} inputs",
        totals.execs
    );
}
