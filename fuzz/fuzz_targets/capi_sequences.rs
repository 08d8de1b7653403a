//! Sequences of C-API calls under the ownership model; every op is checked (refcounts,
//! exception state, GC traversal), and the sequence's total refcount is checked at the end.
//! In a campaign (`CAPISAN_FINDINGS` set) non-fatal violations are recorded and fuzzing goes on.
#![no_main]

use capisan::exec;
use capisan::ops::OpSeq;

libfuzzer_sys::fuzz_target!(init: capisan::replay::maybe_replay(), |data: &[u8]| {
    let seq = OpSeq::from_bytes(data);
    if let Err(v) = exec::run(&seq, exec::Config::from_env()) {
        exec::handle_violation(&v, data);
    }
});
