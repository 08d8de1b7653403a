//! The trust rows of the bench: a long campaign on unmodified CPython must report nothing (and
//! says how many leak suspicions regrtest's procedure rejected on the way), and a campaign that
//! hits a true leak on almost every input must not be much slower than one on the same
//! extension without the leak (findings are recorded once and counted after, not re-reported
//! or re-confirmed, and they no longer end the process).

use std::path::{Path, PathBuf};

use capisan_build::Manifest;

use super::{campaign_spec, run_campaign, Result};
use crate::campaign::Totals;
use crate::env::HarnessEnv;

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
