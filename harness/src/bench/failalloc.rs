//! Allocation-failure injection in the bench (issue 20): what the idle allocator wrappers cost,
//! and how long a `--fail-alloc` campaign without seeds needs for each bug of
//! `tests/erroralloc`. [`rows`] words both as `bench/failalloc.md` and `.json`.

use std::path::Path;

use capisan_build::Manifest;
use serde_json::json;

use super::{campaign_spec, campaign_stats, median, run_campaign, Bench, Result, Stats, Table};
use crate::env::{FailAlloc, HarnessEnv};

/// exec/s of two `time`-second campaigns on the C API alone (seed 11, checks on, as
/// [`super::exec_per_sec`] runs them): without the allocator wrappers, and with them installed
/// but never armed (`CAPISAN_FAIL_ALLOC=idle`). Returns `(without, idle)`.
pub fn failalloc_idle_cost(
    manifest: &Manifest,
    binary: &Path,
    time: u64,
) -> Result<(Stats, Stats)> {
    let run = |mode: FailAlloc| {
        let dir = std::env::temp_dir().join(format!("capisan-bench-failalloc-{mode:?}"));
        let mut spec = campaign_spec(manifest, binary, dir, time, 11);
        spec.harness = HarnessEnv {
            fail_alloc: mode,
            ..HarnessEnv::default()
        };
        campaign_stats(&spec)
    };
    let without = run(FailAlloc::Off)?;
    Ok((without, run(FailAlloc::Idle)?))
}

/// The bugs of `tests/erroralloc` (built in `ext`) for time-to-detect: the callable and the
/// bucket prefix (`class|frame`) its campaign must find.
pub const ERRORALLOC_BUGS: [(&str, &str); 4] = [
    ("leak_on_error", "reference-leak|leak_on_error"),
    ("unchecked_tuple", "null-deref|unchecked_tuple"),
    ("double_decref", "use-after-free|double_decref"),
    ("Pair", "reference-leak|Pair"),
];

/// The cap, in seconds, of one time-to-detect campaign of [`rows`] (the tests find each bug
/// within 70 s).
pub const DETECT_SECONDS: u64 = 90;

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

/// The allocation-failure rows (`cargo xtask bench --failalloc`): exec/s with the wrappers idle
/// vs without (3 rounds of 30-s campaigns, alternated; 1 of 10 s with `quick`), then each
/// erroralloc bug's time-to-detect (median of 3 seeds, 1 with `quick`; [`DETECT_SECONDS`]
/// cap). Writes `bench/failalloc.md` and `.json` after each measurement; returns the Markdown.
pub fn rows(bench: &Bench, log: &mut dyn FnMut(&str)) -> Result<String> {
    let (asan, binary) = (&bench.asan, &bench.binary);
    let (runs, time) = if bench.quick { (1, 10) } else { (3, 30) };
    let mut t = Table::default();
    let (mut without, mut idle) = (Vec::new(), Vec::new());
    for round in 1..=runs {
        log(&format!(
            "allocator wrappers idle vs without, round {round} ({time} s campaigns)"
        ));
        let (a, b) = failalloc_idle_cost(asan, binary, time)?;
        without.push(a.exec_per_sec);
        idle.push(b.exec_per_sec);
    }
    let (ratios, cell) = super::slowdown(&idle, &without);
    t.row(
        "exec/s, allocation-failure wrappers installed but idle vs without",
        cell,
        format!("capi_sequences on the C API alone, checks on, {time}-s campaigns alternated; runs idle {idle:?}, without {without:?}"),
    );
    t.data(
        "idle_cost",
        json!({"idle": idle, "without": without, "ratios": ratios}),
    );
    bench.write(&t, "failalloc")?;
    let ext = bench.test_extension("erroralloc")?;
    let mut rows = Vec::new();
    for (func, bucket) in ERRORALLOC_BUGS {
        let mut times = Vec::new();
        for seed in 1..=runs {
            log(&format!("erroralloc {func} with --fail-alloc, seed {seed}"));
            let found =
                erroralloc_time_to_detect(asan, binary, &ext, func, bucket, DETECT_SECONDS, seed)?;
            times.push(found.unwrap_or(f64::INFINITY));
        }
        let found = times.iter().filter(|s| s.is_finite()).count();
        t.row(
            format!(
                "erroralloc {func}: time-to-detect with --fail-alloc (no seeds, median of {runs})"
            ),
            format!("{:.0} s", median(times.clone())),
            format!(
                "{bucket}: found in {found} of {runs} ({DETECT_SECONDS}-s cap); runs {times:.0?}"
            ),
        );
        rows.push(json!({"func": func, "bucket": bucket, "seconds": times}));
        t.data("erroralloc_time_to_detect", json!(rows.clone()));
        bench.write(&t, "failalloc")?;
    }
    bench.write(&t, "failalloc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_is_a_callable_of_erroralloc_named_in_its_bucket() {
        let src = include_str!("../../../tests/erroralloc/erroralloc.c");
        for (func, bucket) in ERRORALLOC_BUGS {
            assert!(
                src.contains(&format!("\"{func}\",")),
                "{func} is not a callable of tests/erroralloc"
            );
            assert_eq!(bucket.split('|').nth(1), Some(func));
        }
    }
}
