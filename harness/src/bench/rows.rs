//! The rows of a full `cargo xtask bench` run, in the order they are measured: exec/s (checks
//! on, off, collecting per input, against atheris), cold and cached builds, minimization,
//! replay throughput, refleak against regrtest, and (optionally) the zoo's time-to-detect.
//! Each writes `bench/results.md` and `.json` after a slow measurement, so a failure later
//! keeps what was measured.

use std::fs;
use std::time::Instant;

use capisan_build::{extension, fuzzbin, Manifest};
use serde_json::json;

use super::{atheris, io, median, Bench, Result, Table};

/// The full run; returns the Markdown of `bench/results.md`.
pub fn full(bench: &Bench, zoo: bool, log: &mut dyn FnMut(&str)) -> Result<String> {
    let mut t = Table::default();
    exec_rows(bench, &mut t, log)?;
    build_rows(bench, &mut t, log)?;
    minimize_rows(bench, &mut t, log)?;
    replay_rows(bench, &mut t, log)?;
    bench.write(&t, "results")?;
    refleak_rows(bench, &mut t, log)?;
    bench.write(&t, "results")?;
    if zoo {
        zoo_rows(bench, &mut t, log)?;
    }
    bench.write(&t, "results")
}

/// The campaigns' length in seconds.
fn campaign_seconds(bench: &Bench) -> u64 {
    if bench.quick {
        10
    } else {
        30
    }
}

/// exec/s: checks on, atheris, checks off, GC collect per input, alternated A B C D A B C D;
/// atheris is set up first (cached; ~4 min the first time).
fn exec_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> Result<()> {
    let (asan, binary, time) = (&bench.asan, &bench.binary, campaign_seconds(bench));
    let atheris = atheris::setup(asan, &bench.cache, log);
    if let Err(e) = &atheris {
        log(&format!("atheris baseline unavailable: {e:#}"));
    }
    let harness = bench.root.join("fuzz/atheris/capi_sequences.py");
    let (mut on, mut off, mut gc, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut on_cov, mut at_cov) = (Vec::new(), Vec::new());
    for round in 1..=if bench.quick { 2 } else { 3 } {
        log(&format!("exec/s, round {round} ({time} s campaigns)"));
        let c = super::exec_per_sec(asan, binary, time, false, false)?;
        on.push(c.exec_per_sec);
        on_cov.push(c.cov);
        if let Ok(a) = &atheris {
            let c = a.campaign(&harness, time, 11)?;
            at.push(c.exec_per_sec);
            at_cov.push(c.cov);
        }
        off.push(super::exec_per_sec(asan, binary, time, true, false)?.exec_per_sec);
        gc.push(super::exec_per_sec(asan, binary, time, false, true)?.exec_per_sec);
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
    Ok(())
}

/// Cold build-asan vs the same configure && make -j2 by hand (full run only: ~10 min), then
/// the cached rebuild.
fn build_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> Result<()> {
    let asan = &bench.asan;
    if !bench.quick {
        log("cold build-asan vs configure && make -j2 by hand (~10 min)");
        let (ours, hand) = super::cold_build_vs_make(asan)?;
        t.row(
            "build-asan cold vs configure && make -j2 by hand",
            format!("{:.2}x", ours / hand),
            format!("{ours:.0} s vs {hand:.0} s, same source, flags and compiler; target <= 1.1x"),
        );
        t.data(
            "cold_build",
            json!({"capisan_s": ours, "hand_s": hand, "ratio": ours / hand}),
        );
        bench.write(t, "results")?;
    }
    let cached = super::cached_build_seconds(&bench.cache, capisan_build::Variant::Asan)?;
    t.row(
        "build-asan, cached",
        format!("{cached:.2} s"),
        "target < 5 s",
    );
    if bench.quick {
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
    Ok(())
}

/// Minimization of planted crashes padded to 200 ops.
fn minimize_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> Result<()> {
    let zoo = bench.root.join("tests/bugzoo/bugzoo.c");
    let ext = std::env::temp_dir().join("capisan-bench-ext");
    extension::build_extension(&bench.cache, &bench.asan, &zoo, Some(&ext))?;
    let mut mins = Vec::new();
    for (func, core) in super::minimize_cases() {
        log(&format!("minimize {func}"));
        let dir = std::env::temp_dir().join(format!("capisan-bench-min-{func}"));
        // A campaign directory the minimizer can use: a run of no inputs writes campaign.json.
        let spec = super::campaign_spec(&bench.asan, &bench.binary, dir.clone(), 1, 1);
        let mut spec = super::on_zoo(spec, &ext, func, None);
        spec.libfuzzer = vec!["-runs=0".into()];
        super::run_campaign(&spec)?;
        let artifacts = dir.join("artifacts");
        io(&artifacts, fs::create_dir_all(&artifacts))?;
        let art = artifacts.join(format!("crash-padded-{func}"));
        let ops = serde_json::to_vec(&super::padded(&core)).expect("ops serialize");
        io(&art, fs::write(&art, ops))?;
        let m = crate::bundle::minimize_artifact(&art, Some(&dir), &mut |_, _| {})?;
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
    Ok(())
}

/// Replay throughput: the corpus of the first checks-on campaign, fork per input vs batches
/// of 100 per fork, alternated; inputs per second of the whole replay.
fn replay_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> Result<()> {
    let tmp = std::path::Path::new("temporary directory");
    let corpora = io(tmp, tempfile::tempdir())?;
    let corpus = corpora.path().join("capi_sequences");
    io(&corpus, fs::create_dir_all(&corpus))?;
    let from = std::env::temp_dir().join("capisan-bench-false-false/corpus");
    for e in io(&from, fs::read_dir(&from))? {
        let e = io(&from, e)?;
        io(&corpus, fs::copy(e.path(), corpus.join(e.file_name())))?;
    }
    let n_inputs = io(&corpus, fs::read_dir(&corpus))?.count();
    let replay = |batch| super::replay_throughput(&bench.root, &bench.cache, corpora.path(), batch);
    log(&format!("replay of {n_inputs} inputs"));
    replay(100)?; // warm-up: builds capisan-replay
    let (mut single, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        single.push(replay(1)?);
        batched.push(replay(100)?);
    }
    let time = campaign_seconds(bench);
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
    Ok(())
}

/// refleak vs regrtest's own -R 3:3 on test_json, pydebug, alternated.
fn refleak_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> Result<()> {
    log("refleak test_json vs regrtest");
    let rounds = [
        super::refleak_vs_regrtest(&bench.pydebug)?,
        super::refleak_vs_regrtest(&bench.pydebug)?,
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
    Ok(())
}

/// Time-to-detect of each zoo class (no seeds, 3 seeds, 90 s each); one class failing to run
/// must not lose the others' numbers.
fn zoo_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> Result<()> {
    let zoo = bench.root.join("tests/bugzoo/bugzoo.c");
    let mut rows = Vec::new();
    for (func, variant, pm) in super::ZOO_CLASSES {
        let m = Manifest::find(&bench.cache, variant, None)?;
        let binary = fuzzbin::build_fuzz_binary(&bench.root, "capi_sequences", &m)?;
        let ext = std::env::temp_dir().join(format!("capisan-bench-ext-{variant}"));
        extension::build_extension(&bench.cache, &m, &zoo, Some(&ext))?;
        let (mut times, mut class) = (Vec::new(), String::new());
        for seed in 1..=3u64 {
            log(&format!("time-to-detect {func}, seed {seed}"));
            let out = std::env::temp_dir().join(format!("capisan-bench-zoo-{func}-{seed}"));
            let started = Instant::now();
            let spec = super::campaign_spec(&m, &binary, out, 90, seed);
            let spec = super::on_zoo(spec, &ext, func, pm);
            let found = match super::run_campaign(&spec) {
                Ok(o) => o.buckets.first().map(|b| b.class.clone()),
                Err(e) => {
                    log(&format!("{func} seed {seed}: {e:#}"));
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
        bench.write(t, "results")?;
    }
    Ok(())
}
