//! Allocation-failure injection in the bench (issue 20): what the idle allocator wrappers cost,
//! and how long a `--fail-alloc` campaign without seeds needs for each bug of
//! `tests/erroralloc`.

use std::fs;
use std::path::Path;

use capisan_build::Manifest;

use super::{campaign_spec, final_stats, io, run_campaign, BenchError, Result, Stats};
use crate::env::{FailAlloc, HarnessEnv};
use capisan_build::source::tail_lines;

/// exec/s of two `time`-second campaigns on the C API alone (seed 11, checks on, as
/// [`super::exec_per_sec`] runs them): without the allocator wrappers, and with them installed
/// but never armed (`CAPISAN_FAIL_ALLOC=idle`). Returns `(without, idle)`.
pub fn failalloc_idle_cost(
    manifest: &Manifest,
    binary: &Path,
    time: u64,
) -> Result<(Stats, Stats)> {
    let mut out = Vec::new();
    for mode in [FailAlloc::Off, FailAlloc::Idle] {
        let dir = std::env::temp_dir().join(format!("capisan-bench-failalloc-{mode:?}"));
        let mut spec = campaign_spec(manifest, binary, dir.clone(), time, 11);
        spec.harness = HarnessEnv {
            fail_alloc: mode,
            ..HarnessEnv::default()
        };
        run_campaign(&spec)?;
        let log_path = dir.join("fuzz.log");
        let log = io(&log_path, fs::read_to_string(&log_path))?;
        out.push(final_stats(&log).ok_or_else(|| BenchError::NoStats {
            log: log_path,
            tail: tail_lines(&log, 30),
        })?);
    }
    let idle = out.pop().expect("two runs");
    Ok((out.pop().expect("two runs"), idle))
}

/// The bugs of `tests/erroralloc` (built in `ext`) for time-to-detect: the callable and the
/// bucket prefix (`class|frame`) its campaign must find.
pub const ERRORALLOC_BUGS: [(&str, &str); 4] = [
    ("leak_on_error", "reference-leak|leak_on_error"),
    ("unchecked_tuple", "null-deref|unchecked_tuple"),
    ("double_decref", "use-after-free|double_decref"),
    ("Pair", "reference-leak|Pair"),
];

/// Seconds a `--fail-alloc` campaign without seeds (libFuzzer seed `seed`, at most `time`
/// seconds, ending at its first finding) needs to find `bucket` in `func` of the erroralloc
/// extension built in `ext`; `None` when it does not within `time`.
pub fn erroralloc_time_to_detect(
    manifest: &Manifest,
    binary: &Path,
    ext: &Path,
    func: &str,
    bucket: &str,
    time: u64,
    seed: u64,
) -> Result<Option<f64>> {
    let dir = std::env::temp_dir().join(format!("capisan-bench-erroralloc-{func}-{seed}"));
    let mut spec = campaign_spec(manifest, binary, dir, time, seed);
    spec.harness = HarnessEnv {
        ext: Some("erroralloc".into()),
        ext_path: Some(ext.to_path_buf()),
        ext_funcs: vec![func.into()],
        fail_alloc: FailAlloc::On,
        ..HarnessEnv::default()
    };
    let started = std::time::Instant::now();
    let outcome = run_campaign(&spec)?;
    let seconds = started.elapsed().as_secs_f64();
    let found = outcome
        .buckets
        .iter()
        .any(|b| b.signature.starts_with(&format!("{bucket}|")));
    Ok(found.then_some(seconds))
}
