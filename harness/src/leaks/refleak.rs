//! regrtest's `-R` in the target's own process: `refleak.py` mirrors
//! `test.libregrtest.refleak.runtest_refleak` of 3.13 (warm the small-object caches, snapshot the
//! registries tests mutate, and after each run restore them, clear caches and collect before
//! reading the counters); the verdict is [`crate::leak_rule`]'s.

use std::path::PathBuf;
use std::time::Instant;

use capisan_build::Manifest;
use serde::Serialize;

use super::{run_driver, LeakError, Result, Target, REFLEAK_PY};
use crate::leak_rule::LeakCounter;

/// How [`refleak()`] repeats the target.
#[derive(Clone, Debug)]
pub struct RefleakOptions {
    /// Runs whose deltas are thrown away (regrtest's default 3).
    pub warmups: usize,
    /// Measured runs (at least 1; regrtest's default 3).
    pub runs: usize,
    /// Test resources to enable for a CPython test target, as regrtest's `-u`.
    pub use_resources: Vec<String>,
}

/// `WARMUPS:RUNS`, as regrtest's `-R` (e.g. `3:3`); regrtest's optional third part (a report
/// file name) is ignored.
pub fn parse_huntrleaks(text: &str) -> Result<(usize, usize)> {
    let bad = |why: &str| LeakError::BadOption(format!("-R {text}: {why}, e.g. 3:3"));
    let mut parts = text.split(':');
    let (Some(w), Some(r)) = (parts.next(), parts.next()) else {
        return Err(bad("expected WARMUPS:RUNS"));
    };
    let w: usize = w.parse().map_err(|_| bad("bad warmups"))?;
    let r: usize = r.parse().map_err(|_| bad("bad runs"))?;
    if r == 0 {
        return Err(bad("need at least one run after the warmups"));
    }
    Ok((w, r))
}

/// One counter's post-warmup deltas and verdict.
#[derive(Serialize, Debug)]
pub struct Counter {
    /// regrtest's name: "references", "memory blocks", "file descriptors".
    pub item: &'static str,
    pub deltas: Vec<i64>,
    pub sum: i64,
    pub leaked: bool,
}

/// What [`refleak()`] found.
#[derive(Serialize, Debug)]
pub struct RefleakReport {
    /// The test name regrtest would print (a script's file name).
    pub target: String,
    pub variant: String,
    pub version: String,
    pub warmups: usize,
    pub runs: usize,
    pub counters: Vec<Counter>,
    /// Runs whose tests failed or whose target raised.
    pub failed_runs: usize,
    pub first_error: Option<String>,
    pub leaked: bool,
    pub seconds: f64,
}

impl RefleakReport {
    /// The target passed: nothing leaked and every run succeeded.
    pub fn passed(&self) -> bool {
        !self.leaked && self.failed_runs == 0
    }
}

/// Run `target` `warmups + runs` times in one process of `manifest`'s interpreter (a debug
/// build: it needs `sys.gettotalrefcount`) with `ext` on PYTHONPATH, and judge the measured runs
/// with regrtest's rule.
pub fn refleak(
    manifest: &Manifest,
    target: &Target,
    ext: &[PathBuf],
    opts: &RefleakOptions,
) -> Result<RefleakReport> {
    if opts.runs == 0 {
        return Err(LeakError::BadOption(
            "refleak needs at least one run after the warmups".into(),
        ));
    }
    let started = Instant::now();
    let result = run_driver(
        manifest,
        ext,
        REFLEAK_PY,
        target,
        serde_json::json!({
            "warmups": opts.warmups,
            "runs": opts.runs,
            "use_resources": opts.use_resources,
        }),
    )?;
    let ints = |key: &str| -> Vec<i64> {
        result[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
            .unwrap_or_default()
    };
    let label = target.label();
    let name = match target {
        Target::Test(n) => n.clone(),
        Target::Script(p) => p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| label.clone()),
        _ => label,
    };
    let counters: Vec<Counter> = LeakCounter::ALL
        .into_iter()
        .map(|counter| {
            let key = match counter {
                LeakCounter::References => "refs",
                LeakCounter::MemoryBlocks => "blocks",
                LeakCounter::FileDescriptors => "fds",
            };
            let deltas: Vec<i64> = ints(key).into_iter().skip(opts.warmups).collect();
            Counter {
                item: counter.item_name(),
                sum: deltas.iter().sum(),
                leaked: counter.leaked(&deltas),
                deltas,
            }
        })
        .collect();
    Ok(RefleakReport {
        target: name,
        variant: manifest.variant.to_string(),
        version: manifest.version.clone(),
        warmups: opts.warmups,
        runs: opts.runs,
        leaked: counters.iter().any(|c| c.leaked),
        counters,
        failed_runs: ints("failures").iter().filter(|&&f| f > 0).count(),
        first_error: result["errors"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e.as_str())
            .map(str::to_string),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huntrleaks_parses_like_regrtest() {
        assert_eq!(parse_huntrleaks("3:3").unwrap(), (3, 3));
        assert_eq!(parse_huntrleaks("0:1").unwrap(), (0, 1));
        assert!(parse_huntrleaks("3:0").is_err());
        assert!(parse_huntrleaks("3").is_err());
        assert_eq!(parse_huntrleaks("2:4:reflog.txt").unwrap(), (2, 4));
    }
}
