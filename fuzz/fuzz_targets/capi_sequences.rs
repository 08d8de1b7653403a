//! Sequences of C-API calls under the ownership model; every op is checked (refcounts,
//! exception state, GC traversal), and the sequence's total refcount is checked at the end.
//! In a campaign (`CAPISAN_FINDINGS` set) non-fatal violations are recorded and fuzzing goes on.
#![no_main]

libfuzzer_sys::fuzz_target!(init: capisan::replay::maybe_replay(), |data: &[u8]| {
    capisan::exec::fuzz_one(data);
});
