//! Sequences of C-API calls under the ownership model; every op is checked (refcounts,
//! exception state, GC traversal), and the sequence's total refcount is checked at the end.
//! In a campaign (`CAPISAN_FINDINGS` set) non-fatal violations are recorded and fuzzing goes on.
//!
//! The two entry points libfuzzer-sys's `fuzz_target!` would generate, written out because its
//! `init:` form does not hand libFuzzer's argv on (`capisan::exec::fuzzer_init` sets a fork-mode
//! job's time budget there).
#![no_main]

use std::os::raw::{c_char, c_int};

/// libFuzzer's init hook: before it parses its flags.
///
/// # Safety
/// Called by libFuzzer with its own `argc`/`argv`.
#[no_mangle]
pub unsafe extern "C" fn LLVMFuzzerInitialize(
    argc: *mut c_int,
    argv: *mut *mut *mut c_char,
) -> c_int {
    // The panic hook that aborts before unwinding, as the macro installs it.
    libfuzzer_sys::initialize(argc as *const isize, argv as *const *const *const u8);
    // SAFETY: libFuzzer's argc/argv, not yet read by it.
    unsafe { capisan::exec::fuzzer_init(argc, argv) };
    0
}

/// One input (libfuzzer-sys's `LLVMFuzzerTestOneInput` calls this).
#[no_mangle]
pub extern "C" fn rust_fuzzer_test_input(data: &[u8]) -> i32 {
    capisan::exec::fuzz_one(data);
    0
}
