//! The trust rows of the bench: a long campaign on unmodified CPython must report nothing (and
//! says how many leak suspicions regrtest's procedure rejected on the way), and a campaign that
//! hits a true leak on almost every input must not be much slower than one on the same
//! extension without the leak (findings are recorded once and counted after, not re-reported
//! or re-confirmed, and they no longer end the process).

use std::path::{Path, PathBuf};

use capisan_build::Manifest;
use serde_json::json;

use super::{campaign_spec, run_campaign, Bench, Result, Table};
use crate::campaign::Totals;
use crate::env::HarnessEnv;

/// The trust rows (`cargo xtask bench --trust`): the leak-cost pair (3 rounds of 30-s
/// campaigns; 1 of 15 s with `quick`), then a 10-minute campaign on unmodified CPython (1
/// minute with `quick`). Writes `bench/trust.md` and `.json`; returns the Markdown.
pub fn rows(bench: &Bench, log: &mut dyn FnMut(&str)) -> Result<String> {
    let (asan, binary, quick) = (&bench.asan, &bench.binary, bench.quick);
    let mut t = Table::default();
    let ext = bench.test_extension("realistic")?;
    let time = if quick { 15 } else { 30 };
    let (mut leaky, mut clean) = (Vec::new(), Vec::new());
    let mut hits = Vec::new();
    for round in 1..=if quick { 1 } else { 3 } {
        log(&format!("leak cost, round {round} ({time} s campaigns)"));
        let a = leak_cost_campaign(asan, binary, &ext, time, true)?;
        let b = leak_cost_campaign(asan, binary, &ext, time, false)?;
        log(&format!("  leaky {a:?}"));
        log(&format!("  clean {b:?}"));
        hits.push(a.leak_stats.suspected + a.known_hits);
        leaky.push(a.exec_per_sec as f64);
        clean.push(b.exec_per_sec as f64);
    }
    let (ratios, cell) = super::slowdown(&leaky, &clean);
    t.row(
        "exec/s, true leak hit constantly vs the same extension without it",
        cell,
        format!(
            "tests/realistic, parse_pair vs parse_pair_clean, {time}-s campaigns alternated, one seed calling it, keep going; leak sightings per campaign {hits:?}; target within 2x"
        ),
    );
    t.data(
        "leak_cost",
        json!({"leaky": leaky, "clean": clean, "ratios": ratios, "sightings": hits}),
    );
    bench.write(&t, "trust")?;
    let minutes = if quick { 1 } else { 10 };
    log(&format!("{minutes}-minute campaign on unmodified CPython"));
    let seeds = bench.root.join("corpora/capi_sequences");
    let (totals, sigs) = clean_campaign(asan, binary, &seeds, minutes * 60)?;
    t.row(
        format!("{minutes}-minute capi_sequences campaign on unmodified CPython 3.13"),
        format!("{} finding(s) in {} inputs", sigs.len(), totals.execs),
        format!(
            "seeds, keep going (fork mode); leak suspicions {} (stage 1), rejected by regrtest's procedure {}, confirmed {}; buckets: {}",
            totals.leak_stats.suspected,
            totals.leak_stats.rejected,
            totals.leak_stats.confirmed,
            if sigs.is_empty() { "none".to_string() } else { sigs.join(", ") }
        ),
    );
    t.data("clean_campaign", json!({"totals": totals, "buckets": sigs}));
    bench.write(&t, "trust")
}

/// A campaign as users run it (seed corpus, keep going, libFuzzer fork mode) on the C API of
/// unmodified CPython.
pub fn clean_campaign(
    manifest: &Manifest,
    binary: &Path,
    seeds: &Path,
    seconds: u64,
) -> Result<(Totals, Vec<String>)> {
    let dir = std::env::temp_dir().join("capisan-bench-trust-clean");
    let mut spec = campaign_spec(manifest, binary, dir, seconds, 23);
    spec.stop_at_first_finding = false;
    spec.seeds = vec![seeds.to_path_buf()];
    let outcome = run_campaign(&spec)?;
    let sigs = outcome
        .buckets
        .iter()
        .map(|b| b.signature.clone())
        .collect();
    Ok((outcome.totals(), sigs))
}

/// The realistic test extension's callables for the leak-cost pair: the same five, with the
/// leaking `parse_pair` or its clean twin in the same position (callables are sorted, and an
/// op picks one by index).
pub fn leak_cost_funcs(leaky: bool) -> Vec<String> {
    let pair = if leaky {
        "parse_pair"
    } else {
        "parse_pair_clean"
    };
    ["alloc", "check", "describe", "lookup", pair]
        .map(String::from)
        .to_vec()
}

/// A seed that calls callable number 4 (`parse_pair` or its twin) on a 3-character string:
/// with it the fuzzer's mutations hit the leak on most inputs. This measures the cost of a
/// constantly hit leak; time-to-detect is measured elsewhere, without seeds.
pub const LEAK_COST_SEED: &str = r#"[{"NewStr":{"dst":0,"text":"abc"}},{"CallExt":{"func":4,"nargs":1,"args":[0,0,0],"dst":1}}]"#;

/// One campaign on the realistic extension built in `ext` (seeded with [`LEAK_COST_SEED`],
/// keep going).
pub fn leak_cost_campaign(
    manifest: &Manifest,
    binary: &Path,
    ext: &Path,
    seconds: u64,
    leaky: bool,
) -> Result<Totals> {
    let dir: PathBuf = std::env::temp_dir().join(format!("capisan-bench-trust-leaky-{leaky}"));
    let seeds = std::env::temp_dir().join("capisan-bench-trust-seed");
    let seed = seeds.join("parse_pair.json");
    super::io(&seeds, std::fs::create_dir_all(&seeds))?;
    super::io(&seed, std::fs::write(&seed, LEAK_COST_SEED))?;
    let mut spec = campaign_spec(manifest, binary, dir, seconds, 29);
    spec.stop_at_first_finding = false;
    spec.seeds = vec![seeds];
    spec.harness = HarnessEnv {
        ext: Some("realistic".into()),
        ext_path: Some(ext.to_path_buf()),
        ext_funcs: leak_cost_funcs(leaky),
        ..HarnessEnv::default()
    };
    Ok(run_campaign(&spec)?.totals())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_differs_only_in_the_leak() {
        let (a, b) = (leak_cost_funcs(true), leak_cost_funcs(false));
        assert_eq!(a.len(), b.len());
        let mut sa = a.clone();
        sa.sort();
        assert_eq!(sa, a, "sorted, as the harness sorts callables");
        let diff: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
        assert_eq!(diff.len(), 1);
        assert_eq!(a.iter().position(|f| f == "parse_pair"), Some(4));
        assert_eq!(b.iter().position(|f| f == "parse_pair_clean"), Some(4));
    }
}
