//! `capisan-replay`: corpus replay for `capi_sequences` without libFuzzer.
//!
//! The fuzz binary can replay too (its init hook), but there every comparison in CPython goes
//! through libFuzzer's trace-cmp callbacks (half the replay's time in a profile). Linked
//! without libFuzzer, the same instrumented CPython calls the sanitizer runtime's empty
//! defaults instead. Driven by `cargo xtask replay` through the environment (see
//! `capisan::replay::maybe_replay`).

fn main() {
    if capisan::env::ReplayEnv::from_env().is_none() {
        eprintln!(
            "capisan-replay: nothing to do; run it through `cargo xtask replay` \
             (CAPISAN_REPLAY_LIST names a file listing the inputs)"
        );
        std::process::exit(2);
    }
    capisan::replay::maybe_replay();
}
