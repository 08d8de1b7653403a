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
    let log = std::fs::read_to_string(out.join("fuzz.log")).unwrap();
    let execs: u64 = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("libFuzzer final stats");
    assert!(execs > 1000, "the campaign barely ran: {execs} inputs");
}
