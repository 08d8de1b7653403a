//! bench: measured side by side in one run (these machines are noisy), reported as medians and
//! ratios in bench/results.md and bench/results.json. The measurements are `capisan::bench`'s;
//! this command orders them and words the rows.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use capisan::bench::{self, atheris, median, trust, Table};
use capisan_build::{extension, Cache, Manifest, Variant};
use clap::Args;
use serde_json::json;

use crate::fuzz::{build_target, workspace_root};

#[derive(Args)]
pub struct BenchArgs {
    /// Shorter runs: 10 s per campaign instead of 30, 2 rounds instead of 3, and no cold-build
    /// comparison (two ASan builds, ~6 min).
    #[arg(long)]
    pub quick: bool,
    /// Also measure the bug zoo's time-to-detect per class (3 seeds each, no seed corpus; slow).
    #[arg(long)]
    pub zoo: bool,
    /// Only the trust rows, written to bench/trust.md and .json: a 10-minute campaign on
    /// unmodified CPython (1 minute with --quick) and exec/s of a campaign that hits a true
    /// leak constantly vs. the same extension without it (alternated, 30-s campaigns).
    #[arg(long)]
    pub trust: bool,
    /// Only the Python-API rows, written to bench/api.md and .json: time-to-detect of each
    /// planted bug of tests/apiext without seeds (median of 3 seeds, 1 with --quick; 120-s
    /// cap) and its clean twin (20 s, must find nothing).
    #[arg(long)]
    pub api: bool,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let (root, quick) = (workspace_root(), args.quick);
    let results = root.join("bench");
    let time = if quick { 10 } else { 30 };
    let mut t = Table::default();
    let cache = Cache::resolve(args.cache.clone());
    // Make sure the variants exist before timing anything against them.
    eprintln!("bench: the asan and pydebug variants (built on first use)");
    let asan = bench::build_variant(&cache, Variant::Asan, None)?;
    let pydebug = bench::build_variant(&cache, Variant::Pydebug, None)?;
    let binary = build_target("capi_sequences", Variant::Asan, &asan)?;
    if args.trust {
        return trust_rows(&cache, &asan, &binary, &results, quick);
    }
    if args.api {
        return api_rows(&cache, &asan, &binary, &results, quick);
    }

    // 1. exec/s: checks on, atheris, checks off, GC collect per input, alternated
    //    A B C D A B C D; atheris is set up first (cached; ~4 min the first time).
    let atheris = atheris::setup(&asan, &cache, &mut |step| eprintln!("bench: {step}"));
    if let Err(e) = &atheris {
        eprintln!("bench: atheris baseline unavailable: {e:#}");
    }
    let harness = root.join("fuzz/atheris/capi_sequences.py");
    let (mut on, mut off, mut gc, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut on_cov, mut at_cov) = (Vec::new(), Vec::new());
    for round in 1..=if quick { 2 } else { 3 } {
        eprintln!("bench: exec/s, round {round} ({time} s campaigns)");
        let c = bench::exec_per_sec(&asan, &binary, time, false, false)?;
        on.push(c.exec_per_sec);
        on_cov.push(c.cov);
        if let Ok(a) = &atheris {
            let c = a.campaign(&harness, time, 11)?;
            at.push(c.exec_per_sec);
            at_cov.push(c.cov);
        }
        off.push(bench::exec_per_sec(&asan, &binary, time, true, false)?.exec_per_sec);
        gc.push(bench::exec_per_sec(&asan, &binary, time, false, true)?.exec_per_sec);
    }
    let (m_on, m_off, m_gc) = (median(on.clone()), median(off.clone()), median(gc.clone()));
    t.row(
        "exec/s, ASan, checks on (median)",
        format!("{m_on:.0}"),
        format!("runs {on:?}"),
    );
    t.row(
        "exec/s, checks off",
        format!("{m_off:.0}"),
        format!("runs {off:?}"),
    );
    t.row(
        "cost of checks (1 - on/off)",
        format!("{:.0} %", 100.0 * (1.0 - m_on / m_off)),
        "target <= 25 %",
    );
    t.row(
        "exec/s with PyGC_Collect per input",
        format!("{m_gc:.0}"),
        format!("{:.2}x of checks-on", m_gc / m_on),
    );
    t.data(
        "exec_per_sec",
        json!({"checks_on": on, "checks_off": off, "gc_collect": gc}),
    );
    match &atheris {
        Ok(_) => {
            let ratios: Vec<f64> = on.iter().zip(&at).map(|(c, a)| c / a).collect();
            t.row(
                format!("exec/s, atheris {} (median)", atheris::VERSION),
                format!("{:.0}", median(at.clone())),
                format!("runs {at:?}; the same ops from Python, same ASan interpreter (relinked with libFuzzer, so it sees CPython's C coverage too), same seed and duration, no ownership checks"),
            );
            t.row(
                "capisan / atheris exec/s (median of per-pair ratios)",
                format!("{:.1}x", median(ratios.clone())),
                format!("pairs {ratios:.2?}; target >= 3x"),
            );
            let covs = |v: &[u64]| median(v.iter().map(|&c| c as f64).collect());
            t.row(
                "edge coverage at the end, capisan vs atheris (median)",
                format!("{:.0} vs {:.0}", covs(&on_cov), covs(&at_cov)),
                format!("capisan {on_cov:?}, atheris {at_cov:?} (libFuzzer's cov: CPython's C edges, plus the harness's own: Rust for capisan, Python bytecode for atheris)"),
            );
            t.data(
                "atheris",
                json!({"version": atheris::VERSION, "exec_per_sec": at, "ratios": ratios, "cov": at_cov, "capisan_cov": on_cov}),
            );
        }
        Err(e) => t.row(
            "exec/s vs atheris",
            "not measured",
            format!("atheris setup failed: {}", e.to_string().replace('\n', " ")),
        ),
    }

    // 2. cold build-asan vs the same configure && make -j2 by hand (full run only: ~10 min),
    //    then the cached rebuild.
    if !quick {
        eprintln!("bench: cold build-asan vs configure && make -j2 by hand (~10 min)");
        let (ours, hand) = bench::cold_build_vs_make(&asan)?;
        t.row(
            "build-asan cold vs configure && make -j2 by hand",
            format!("{:.2}x", ours / hand),
            format!("{ours:.0} s vs {hand:.0} s, same source, flags and compiler; target <= 1.1x"),
        );
        t.data(
            "cold_build",
            json!({"capisan_s": ours, "hand_s": hand, "ratio": ours / hand}),
        );
        t.write(&results, quick)?;
    }
    let cached = bench::cached_build_seconds(&cache, Variant::Asan)?;
    t.row(
        "build-asan, cached",
        format!("{cached:.2} s"),
        "target < 5 s",
    );
    if quick {
        t.row(
            "build-asan, cold (the cached variant's own build, from its manifest)",
            format!("{:.0} s", asan.build_seconds),
            "configure + make -j2; the full bench compares a fresh one with make by hand",
        );
    }
    t.data(
        "build",
        json!({"cached_s": cached, "cold_s": asan.build_seconds}),
    );

    // 3. minimization of planted crashes padded to 200 ops.
    let zoo = root.join("tests/bugzoo/bugzoo.c");
    let ext = std::env::temp_dir().join("capisan-bench-ext");
    extension::build_extension(&cache, &asan, &zoo, Some(&ext))?;
    let mut mins = Vec::new();
    for (func, core) in bench::minimize_cases() {
        eprintln!("bench: minimize {func}");
        let dir = std::env::temp_dir().join(format!("capisan-bench-min-{func}"));
        // A campaign directory the minimizer can use: a run of no inputs writes campaign.json.
        let spec = bench::campaign_spec(&asan, &binary, dir.clone(), 1, 1);
        let mut spec = bench::on_zoo(spec, &ext, func, None);
        spec.libfuzzer = vec!["-runs=0".into()];
        bench::run_campaign(&spec)?;
        fs::create_dir_all(dir.join("artifacts"))?;
        let art = dir.join("artifacts").join(format!("crash-padded-{func}"));
        fs::write(&art, serde_json::to_vec(&bench::padded(&core))?)?;
        let m = capisan::bundle::minimize_artifact(&art, Some(&dir), &mut |_, _| {})?;
        t.row(
            format!("minimize {func}: 200 ops ->"),
            format!("{} ops", m.ops.len()),
            format!(
                "{:.1} s, {} candidates; target <= 5 ops in < 30 s",
                m.seconds, m.tries
            ),
        );
        mins.push(json!({"func": func, "before": m.original_ops, "after": m.ops.len(), "seconds": m.seconds, "candidates": m.tries}));
    }
    t.data("minimize", json!(mins));

    // 4. replay throughput: the corpus of the first checks-on campaign, fork per input vs
    //    batches of 100 per fork, alternated; inputs per second of the whole replay.
    let corpora = tempfile::tempdir()?;
    let corpus = corpora.path().join("capi_sequences");
    fs::create_dir_all(&corpus)?;
    for e in fs::read_dir(std::env::temp_dir().join("capisan-bench-false-false/corpus"))? {
        let e = e?;
        fs::copy(e.path(), corpus.join(e.file_name()))?;
    }
    let n_inputs = fs::read_dir(&corpus)?.count();
    let replay = |batch| bench::replay_throughput(&root, &cache, corpora.path(), batch);
    eprintln!("bench: replay of {n_inputs} inputs");
    replay(100)?; // warm-up: builds capisan-replay
    let (mut single, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        single.push(replay(1)?);
        batched.push(replay(100)?);
    }
    t.row(
        "replay, inputs/s on one core, batches of 100 per fork (default)",
        format!("{:.0}", median(batched.clone())),
        format!("runs {batched:.0?}; {n_inputs} inputs of a {time}-s campaign, whole replay incl. start-up; target >= 500"),
    );
    t.row(
        "replay, inputs/s, a fresh fork per input (--batch 1)",
        format!("{:.0}", median(single.clone())),
        format!(
            "runs {single:.0?}; {:.1}x slower",
            median(batched.clone()) / median(single.clone())
        ),
    );
    t.data(
        "replay",
        json!({"inputs": n_inputs, "batch_100_per_s": batched, "batch_1_per_s": single}),
    );
    t.write(&results, quick)?;

    // 5. refleak vs regrtest's own -R 3:3 on test_json, pydebug, alternated.
    eprintln!("bench: refleak test_json vs regrtest");
    let rounds = [
        bench::refleak_vs_regrtest(&pydebug)?,
        bench::refleak_vs_regrtest(&pydebug)?,
    ];
    let ours: Vec<f64> = rounds.iter().map(|r| r.ours_s).collect();
    let theirs: Vec<f64> = rounds.iter().map(|r| r.regrtest_s).collect();
    let (our_verdict, their_verdict) = (&rounds[1].ours_verdict, &rounds[1].regrtest_verdict);
    t.row(
        "refleak test_json -R 3:3 vs regrtest -R 3:3 (time ratio, median)",
        format!("{:.2}x", median(ours.clone()) / median(theirs.clone())),
        format!("capisan {ours:.1?} s ({our_verdict}) vs regrtest {theirs:.1?} s ({their_verdict}), pydebug"),
    );
    t.data(
        "refleak",
        json!({"capisan_s": ours, "regrtest_s": theirs, "capisan_verdict": our_verdict, "regrtest_verdict": their_verdict}),
    );
    t.write(&results, quick)?;

    if args.zoo {
        zoo_time_to_detect(&cache, &mut t, &results, quick)?;
    }
    print!("{}", t.write(&results, quick)?);
    Ok(())
}

/// Time-to-detect of each zoo class (no seeds, 3 seeds, 90 s each); one class failing to run
/// must not lose the others' numbers.
fn zoo_time_to_detect(
    cache: &Cache,
    t: &mut Table,
    results: &std::path::Path,
    quick: bool,
) -> Result<()> {
    let zoo = workspace_root().join("tests/bugzoo/bugzoo.c");
    let mut rows = Vec::new();
    for (func, variant, pm) in bench::ZOO_CLASSES {
        let m = Manifest::find(cache, variant, None)?;
        let binary = build_target("capi_sequences", variant, &m)?;
        let ext = std::env::temp_dir().join(format!("capisan-bench-ext-{variant}"));
        extension::build_extension(cache, &m, &zoo, Some(&ext))?;
        let (mut times, mut class) = (Vec::new(), String::new());
        for seed in 1..=3u64 {
            eprintln!("bench: time-to-detect {func}, seed {seed}");
            let out = std::env::temp_dir().join(format!("capisan-bench-zoo-{func}-{seed}"));
            let started = Instant::now();
            let spec = bench::campaign_spec(&m, &binary, out, 90, seed);
            let spec = bench::on_zoo(spec, &ext, func, pm);
            let found = match bench::run_campaign(&spec) {
                Ok(o) => o.buckets.first().map(|b| b.class.clone()),
                Err(e) => {
                    eprintln!("bench: {func} seed {seed}: {e:#}");
                    None
                }
            };
            times.push(
                found
                    .as_ref()
                    .map_or(f64::INFINITY, |_| started.elapsed().as_secs_f64()),
            );
            class = found.unwrap_or_else(|| "not found in 90 s".into());
        }
        t.row(
            format!("time-to-detect {func} (no seeds, median of 3)"),
            format!("{:.0} s", median(times.clone())),
            format!("{class}; runs {times:.0?}"),
        );
        rows.push(json!({"func": func, "class": class, "seconds": times}));
        t.data("zoo_time_to_detect", json!(rows.clone()));
        t.write(results, quick)?;
    }
    Ok(())
}

/// The trust rows (`--trust`): bench/trust.md and .json.
fn trust_rows(
    cache: &Cache,
    asan: &Manifest,
    binary: &std::path::Path,
    results: &std::path::Path,
    quick: bool,
) -> Result<()> {
    let mut t = Table::default();
    let ext = cache.root().join("bench").join("realistic");
    let src = workspace_root().join("tests/realistic/realistic.c");
    extension::build_extension(cache, asan, &src, Some(&ext))?;
    let time = if quick { 15 } else { 30 };
    let (mut leaky, mut clean) = (Vec::new(), Vec::new());
    let mut hits = Vec::new();
    for round in 1..=if quick { 1 } else { 3 } {
        eprintln!("bench: leak cost, round {round} ({time} s campaigns)");
        let a = trust::leak_cost_campaign(asan, binary, &ext, time, true)?;
        let b = trust::leak_cost_campaign(asan, binary, &ext, time, false)?;
        eprintln!("bench:   leaky {a:?}\nbench:   clean {b:?}");
        hits.push(a.leak_stats.suspected + a.known_hits);
        leaky.push(a.exec_per_sec as f64);
        clean.push(b.exec_per_sec as f64);
    }
    let ratios: Vec<f64> = leaky
        .iter()
        .zip(&clean)
        .map(|(a, b)| b / a.max(1.0))
        .collect();
    t.row(
        "exec/s, true leak hit constantly vs the same extension without it",
        format!(
            "{:.0} vs {:.0} exec/s ({:.2}x slower)",
            median(leaky.clone()),
            median(clean.clone()),
            median(ratios.clone())
        ),
        format!(
            "tests/realistic, parse_pair vs parse_pair_clean, {time}-s campaigns alternated, one seed calling it, keep going; leak sightings per campaign {hits:?}; target within 2x"
        ),
    );
    t.data(
        "leak_cost",
        json!({"leaky": leaky, "clean": clean, "ratios": ratios, "sightings": hits}),
    );
    t.write_as(results, "trust", quick)?;
    let minutes = if quick { 1 } else { 10 };
    eprintln!("bench: {minutes}-minute campaign on unmodified CPython");
    let seeds = workspace_root().join("corpora/capi_sequences");
    let (totals, sigs) = trust::clean_campaign(asan, binary, &seeds, minutes * 60)?;
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
    print!("{}", t.write_as(results, "trust", quick)?);
    Ok(())
}

/// The Python-API rows (`--api`): bench/api.md and .json.
fn api_rows(
    cache: &Cache,
    asan: &Manifest,
    binary: &std::path::Path,
    results: &std::path::Path,
    quick: bool,
) -> Result<()> {
    let mut t = Table::default();
    let ext = cache.root().join("bench").join("apiext");
    let src = workspace_root().join("tests/apiext/apiext.c");
    extension::build_extension(cache, asan, &src, Some(&ext))?;
    let mut rows = Vec::new();
    for (funcs, class, culprit, twin) in bench::api::API_BUGS {
        let mut times = Vec::new();
        let mut seen = Vec::new();
        for seed in 1..=if quick { 1 } else { 3 } {
            eprintln!("bench: apiext {funcs}, seed {seed}");
            let d = bench::api::detect(asan, binary, &ext, funcs, seed, 120)?;
            times.push(d.seconds.unwrap_or(f64::INFINITY));
            seen.push(format!("{} ({})", d.signature, d.class));
        }
        let ok = seen
            .iter()
            .all(|s| s.contains(class) && s.split('|').nth(1).is_some_and(|c| c.contains(culprit)));
        eprintln!("bench: apiext {twin} (clean twin)");
        let clean = bench::api::detect(asan, binary, &ext, twin, 1, 20)?;
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
        t.write_as(results, "api", quick)?;
    }
    print!("{}", t.write_as(results, "api", quick)?);
    Ok(())
}
