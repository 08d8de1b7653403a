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
/// its clean twin (20 s, must find nothing). Writes `bench/api.md` and `.json` after each bug.
/// Then the same for the GC and raw-memory test extension (tests/gcext, [`GC_BUGS`]) into
/// `bench/gc.md` and `.json`, with the cost of the checks on its clean twins. Returns the
/// Markdown of the last table.
pub fn rows(bench: &Bench, log: &mut dyn FnMut(&str)) -> Result<String> {
    planted_rows(bench, "apiext", &API_BUGS, "api", log)?;
    let md = planted_rows(bench, "gcext", &GC_BUGS, "gc", log)?;
    gc_cost_rows(bench, log)?;
    Ok(md)
}

/// The cost of the GC and raw-memory checks on tests/gcext's clean twins (`cargo xtask bench
/// --gc-cost`, also part of `--api`): `bench/gc-cost.md` and `.json`; returns its Markdown.
pub fn gc_cost_rows(bench: &Bench, log: &mut dyn FnMut(&str)) -> Result<String> {
    let mut t = Table::default();
    let ext = bench.test_extension("gcext")?;
    let twins = GC_BUGS.map(|b| b.3).join(",");
    // Three configurations alternated in each round: every check; every check but the GC and
    // raw-memory checks of returned objects (what the issue adds, CAPISAN_GC_RAW=0); none.
    let configs = [
        ("all", true, true),
        ("no-gc-raw", true, false),
        ("none", false, false),
    ];
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 1..=if bench.quick { 1 } else { 3 } {
        for (k, &(label, checks, gc_raw)) in configs.iter().enumerate() {
            log(&format!("gcext clean twins, checks {label}, round {round}"));
            let dir = std::env::temp_dir().join(format!("capisan-bench-gc-cost-{label}"));
            let mut spec = campaign_spec(&bench.asan, &bench.binary, dir, 30, 11);
            spec.harness = HarnessEnv {
                ext: Some("gcext".into()),
                ext_path: Some(ext.clone()),
                ext_funcs: twins.split(',').map(String::from).collect(),
                checks,
                gc_raw,
                ..HarnessEnv::default()
            };
            rates[k].push(super::campaign_stats(&spec)?.exec_per_sec);
        }
    }
    let [all, no_gc_raw, none] = rates;
    let (ratios, text) = super::slowdown(&all, &no_gc_raw);
    t.row(
        "gcext clean twins: exec/s with the GC and raw-memory checks of returned objects vs every other check only (CAPISAN_GC_RAW=0); goal <= 25 % cost".to_string(),
        text,
        format!("alternated 30-s campaigns; ratios {ratios:.2?}; with {all:.0?}, without {no_gc_raw:.0?}"),
    );
    let (all_ratios, all_text) = super::slowdown(&all, &none);
    t.row(
        "gcext clean twins: exec/s with every check vs --no-checks (every extension call repeated for the leak verdicts, refcount predictions, GC audits)".to_string(),
        all_text,
        format!("same rounds; ratios {all_ratios:.2?}; without {none:.0?}"),
    );
    t.data(
        "gc_cost",
        json!({"all": all, "no_gc_raw": no_gc_raw, "none": none, "ratios": ratios, "all_ratios": all_ratios}),
    );
    bench.write(&t, "gc-cost")
}

/// Time-to-detect rows of the planted `bugs` of test extension `ext` (tests/<ext>/<ext>.c),
/// written as `bench/<name>.md` and `.json` after each bug.
fn planted_rows(
    bench: &Bench,
    ext_name: &str,
    bugs: &[(&str, &str, &str, &str)],
    name: &str,
    log: &mut dyn FnMut(&str),
) -> Result<String> {
    let (asan, binary) = (&bench.asan, &bench.binary);
    let mut t = Table::default();
    let ext = bench.test_extension(ext_name)?;
    let mut rows = Vec::new();
    for &(funcs, class, culprit, twin) in bugs {
        let mut times = Vec::new();
        let mut seen = Vec::new();
        for seed in 1..=if bench.quick { 1 } else { 3 } {
            log(&format!("{ext_name} {funcs}, seed {seed}"));
            let d = detect(asan, binary, ext_name, &ext, funcs, seed, 120)?;
            times.push(d.seconds.unwrap_or(f64::INFINITY));
            seen.push(format!("{} ({})", d.signature, d.class));
        }
        let ok = seen
            .iter()
            .all(|s| s.contains(class) && s.split('|').nth(1).is_some_and(|c| c.contains(culprit)));
        log(&format!("{ext_name} {twin} (clean twin)"));
        let clean = detect(asan, binary, ext_name, &ext, twin, 1, 20)?;
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
        t.data(&format!("{name}_time_to_detect"), json!(rows.clone()));
        bench.write(&t, name)?;
    }
    bench.write(&t, name)
}

/// The planted bugs of tests/gcext (issue: GC and raw-memory checks for everything real APIs
/// return): `--funcs`, class, a part of the culprit, clean twin.
pub const GC_BUGS: [(&str, &str, &str, &str); 6] = [
    ("make_box", "gc traversal", "Box", "make_box_clean"),
    (
        "make_clear_box",
        "gc traversal",
        "ClearBox",
        "make_box_clean",
    ),
    ("Node", "gc traversal", "Node", "NodeClean"),
    ("HalfBuilt", "gc traversal", "HalfBuilt", "HalfBuiltClean"),
    (
        "pymem_leak",
        "reference leak",
        "pymem_leak",
        "pymem_leak_clean",
    ),
    (
        "malloc_leak",
        "reference leak",
        "malloc_leak",
        "malloc_leak_clean",
    ),
];

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

/// One campaign without seeds on `funcs` of test extension `ext_name` built in `ext`, ending at
/// its first finding.
pub fn detect(
    manifest: &Manifest,
    binary: &Path,
    ext_name: &str,
    ext: &Path,
    funcs: &str,
    seed: u64,
    seconds: u64,
) -> Result<Detection> {
    let dir = std::env::temp_dir().join(format!("capisan-bench-{ext_name}-{funcs}-{seed}"));
    let mut spec = campaign_spec(manifest, binary, dir, seconds, seed);
    spec.harness = HarnessEnv {
        ext: Some(ext_name.into()),
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
