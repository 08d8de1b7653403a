//! Where Python-level memory grows: two tracemalloc snapshots around N runs of the target
//! (`tracemalloc.py`), compared by traceback.

use std::path::PathBuf;
use std::time::Instant;

use capisan_build::Manifest;
use serde::{Deserialize, Serialize};

use super::{run_driver, LeakError, Result, Target, TRACEMALLOC_PY};

/// How [`tracemalloc_diff()`] samples.
#[derive(Clone, Debug)]
pub struct TracemallocOptions {
    /// Frames tracemalloc keeps per allocation.
    pub frames: u32,
    /// How many growing tracebacks to keep, largest first.
    pub top: usize,
    /// Runs between the two snapshots (after one warmup run); at least 1.
    pub iterations: u32,
}

/// One growing traceback.
#[derive(Serialize, Deserialize, Debug)]
pub struct Growth {
    pub size_diff: i64,
    pub count_diff: i64,
    pub size: i64,
    pub count: i64,
    /// Innermost frame first; the driver's own frames are left out.
    pub traceback: Vec<PyFrame>,
}

/// A Python source position.
#[derive(Serialize, Deserialize, Debug)]
pub struct PyFrame {
    pub file: String,
    pub line: u32,
}

/// What [`tracemalloc_diff()`] found.
#[derive(Serialize, Debug)]
pub struct TracemallocReport {
    pub target: String,
    pub iterations: u32,
    pub frames: u32,
    pub entries: Vec<Growth>,
    /// Entries growing by at least one block per iteration (what a leak looks like).
    pub linear: usize,
    pub seconds: f64,
}

/// Run `target` once (warmup) and then `iterations` times between two tracemalloc snapshots, in
/// one process of `manifest`'s interpreter with `ext` on PYTHONPATH.
pub fn tracemalloc_diff(
    manifest: &Manifest,
    target: &Target,
    ext: &[PathBuf],
    opts: &TracemallocOptions,
) -> Result<TracemallocReport> {
    if opts.iterations == 0 {
        return Err(LeakError::BadOption("-n must be at least 1".into()));
    }
    let started = Instant::now();
    let result = run_driver(
        manifest,
        ext,
        TRACEMALLOC_PY,
        target,
        serde_json::json!({"iterations": opts.iterations, "top": opts.top, "frames": opts.frames}),
    )?;
    let entries: Vec<Growth> =
        serde_json::from_value(result["entries"].clone()).map_err(|e| LeakError::BadResult {
            path: "entries".into(),
            message: e.to_string(),
        })?;
    let n = i64::from(opts.iterations);
    Ok(TracemallocReport {
        target: target.label(),
        iterations: opts.iterations,
        frames: opts.frames,
        linear: entries.iter().filter(|e| e.count_diff >= n).count(),
        entries,
        seconds: started.elapsed().as_secs_f64(),
    })
}
