//! Time-to-detect of the Python-API test extension's planted bugs (tests/apiext): each is
//! reachable only through one kind of API use (a keyword at a boundary int, a method of a
//! returned object, a strided memoryview, an evil subclass hook, a raising file-like, a bad
//! `__hash__`, a 100-KiB string), found without seeds; each clean twin must give nothing.

use std::path::Path;
use std::time::Instant;

use capisan_build::Manifest;
use serde_json::json;

use super::{campaign_spec, median, run_campaign, Bench, Result, Table};
use crate::env::HarnessEnv;

/// The Python-API rows (`cargo xtask bench --api`): each planted bug's time-to-detect without
/// seeds (median of 3 seeds, 1 with `quick`; 120-s cap), whether it was classified right, and
/// its clean twin (20 s, must find nothing). Writes `bench/api.md` and `.json` after each bug;
/// returns the Markdown.
pub fn rows(bench: &Bench, log: &mut dyn FnMut(&str)) -> Result<String> {
    let (asan, binary) = (&bench.asan, &bench.binary);
    let mut t = Table::default();
    let ext = bench.test_extension("apiext")?;
    let mut rows = Vec::new();
    for (funcs, class, culprit, twin) in API_BUGS {
        let mut times = Vec::new();
        let mut seen = Vec::new();
        for seed in 1..=if bench.quick { 1 } else { 3 } {
            log(&format!("apiext {funcs}, seed {seed}"));
            let d = detect(asan, binary, &ext, funcs, seed, 120)?;
            times.push(d.seconds.unwrap_or(f64::INFINITY));
            seen.push(format!("{} ({})", d.signature, d.class));
        }
        let ok = seen
            .iter()
            .all(|s| s.contains(class) && s.split('|').nth(1).is_some_and(|c| c.contains(culprit)));
        log(&format!("apiext {twin} (clean twin)"));
        let clean = detect(asan, binary, &ext, twin, 1, 20)?;
        t.row(
            format!(
                "{funcs}: time-to-detect (no seeds, median of {})",
                times.len()
            ),
            format!("{:.0} s", median(times.clone())),
            format!(
                "{}; runs {times:.0?}; classified {}; twin {twin}: {} in {} inputs",
                seen.first().cloned().unwrap_or_default(),
                if ok { "right" } else { "WRONG" },
                if clean.seconds.is_some() {
                    clean.signature.as_str()
                } else {
                    "nothing"
                },
                clean.inputs
            ),
        );
        rows.push(json!({"funcs": funcs, "seconds": times, "found": seen, "classified": ok, "twin": twin, "twin_found": clean.signature, "twin_inputs": clean.inputs}));
        t.data("api_time_to_detect", json!(rows.clone()));
        bench.write(&t, "api")?;
    }
    bench.write(&t, "api")
}

/// The planted bugs: the `--funcs` that reach one, the class it must have, a part of its
/// culprit, and the clean twin's `--funcs`.
pub const API_BUGS: [(&str, &str, &str, &str); 7] = [
    ("window", "buffer overflow", "window", "window_clean"),
    (
        "open_cursor",
        "use-after-free",
        "cursor_advance",
        "open_cursor_clean",
    ),
    ("checksum", "buffer overflow", "checksum", "checksum_clean"),
    ("Parser", "use-after-free", "parser_feed", "ParserClean"),
    ("dump", "use-after-free", "dump", "dump_clean"),
    (
        "lookup_key",
        "use-after-free",
        "lookup_key",
        "lookup_key_clean",
    ),
    ("count_a", "buffer overflow", "count_a", "count_a_clean"),
];

/// What one campaign on apiext found: seconds to the first bucket (None: nothing within
/// `seconds`), and the first bucket's class and signature.
pub struct Detection {
    pub seconds: Option<f64>,
    pub class: String,
    pub signature: String,
    pub inputs: u64,
}

/// One campaign without seeds on `funcs` of apiext built in `ext`, ending at its first finding.
pub fn detect(
    manifest: &Manifest,
    binary: &Path,
    ext: &Path,
    funcs: &str,
    seed: u64,
    seconds: u64,
) -> Result<Detection> {
    let dir = std::env::temp_dir().join(format!("capisan-bench-api-{funcs}-{seed}"));
    let mut spec = campaign_spec(manifest, binary, dir, seconds, seed);
    spec.harness = HarnessEnv {
        ext: Some("apiext".into()),
        ext_path: Some(ext.to_path_buf()),
        ext_funcs: funcs.split(',').map(String::from).collect(),
        ..HarnessEnv::default()
    };
    let started = Instant::now();
    let outcome = run_campaign(&spec)?;
    let first = outcome.buckets.first();
    Ok(Detection {
        seconds: first.map(|_| started.elapsed().as_secs_f64()),
        class: first.map_or_else(|| "nothing".into(), |b| b.class.clone()),
        signature: first.map_or_else(String::new, |b| b.signature.clone()),
        inputs: outcome.totals().execs,
    })
}
