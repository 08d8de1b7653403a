//! bench: measured side by side in one run (these machines are noisy), reported as medians and
//! ratios in bench/results.md and bench/results.json.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use capisan::ops::{Op, Slot};
use capisan_build::Variant;
use clap::Args;
use serde_json::json;

use crate::fuzz::{self, ExtArgs, FuzzArgs};

#[derive(Args)]
pub struct BenchArgs {
    /// Shorter runs: 10 s per campaign instead of 30, 2 rounds instead of 3, and no cold-build
    /// comparison (two ASan builds, ~6 min).
    #[arg(long)]
    pub quick: bool,
    /// Also measure the bug zoo's time-to-detect per class (3 seeds each, no seed corpus; slow).
    #[arg(long)]
    pub zoo: bool,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// libFuzzer's verdict on a campaign: average exec/s (final stats) and the edge coverage of
/// its `DONE` line.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub exec_per_sec: f64,
    pub cov: u64,
}

pub fn final_stats(log: &str) -> Option<Stats> {
    let exec_per_sec = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::average_exec_per_sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let cov = log
        .lines()
        .rev()
        .find(|l| l.contains("\tDONE "))
        .and_then(|l| l.split("cov: ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Stats { exec_per_sec, cov })
}

/// The bench's campaigns: capi_sequences with checks on, no seed corpus (what the fuzzer
/// finds on its own), JSON output; callers change what they measure.
fn bench_campaign(
    time: u64,
    variant: Variant,
    ext: ExtArgs,
    out: PathBuf,
    seed: u64,
    cache: &Option<PathBuf>,
) -> FuzzArgs {
    FuzzArgs {
        target: "capi_sequences".into(),
        time,
        variant,
        ext,
        out: Some(out),
        seed: Some(seed),
        no_checks: false,
        collect: false,
        json: true,
        no_seeds: true,
        jobs: 1,
        known: None,
        cache: crate::CacheArgs {
            cache: cache.clone(),
        },
        libfuzzer: vec![],
    }
}

/// The zoo built at `ext`, only `func` callable.
fn zoo_ext(ext: &std::path::Path, func: &str, pythonmalloc: Option<&str>) -> ExtArgs {
    ExtArgs {
        ext: Some("bugzoo".into()),
        ext_path: Some(ext.to_path_buf()),
        funcs: vec![func.into()],
        pythonmalloc: pythonmalloc.map(String::from),
    }
}

/// One campaign's stats.
fn campaign(time: u64, no_checks: bool, collect: bool, cache: &Option<PathBuf>) -> Result<Stats> {
    let out = std::env::temp_dir().join(format!("capisan-bench-{no_checks}-{collect}"));
    let _ = fs::remove_dir_all(&out);
    fuzz::fuzz(FuzzArgs {
        no_checks,
        collect,
        ..bench_campaign(
            time,
            Variant::Asan,
            ExtArgs::default(),
            out.clone(),
            11,
            cache,
        )
    })?;
    let log = fs::read_to_string(out.join("fuzz.log"))?;
    final_stats(&log).context("no final stats in the campaign log")
}

/// A planted crash padded to 200 ops with benign ops on other slots.
fn padded(core: &[Op]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut k = 0i64;
    while ops.len() + core.len() < 200 {
        let s = Slot(5 + (k % 3) as u8);
        ops.push(match k % 4 {
            0 => Op::NewList { dst: s },
            1 => Op::NewInt {
                dst: s,
                value: 1000 + k,
            },
            2 => Op::NewStr {
                dst: s,
                text: format!("pad{k}"),
            },
            _ => Op::NewDict { dst: s },
        });
        k += 1;
        if ops.len() == 100 {
            ops.extend_from_slice(core);
        }
    }
    ops
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let time = if args.quick { 10 } else { 30 };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut data = serde_json::Map::new();

    let cache = capisan_build::Cache::resolve(args.cache.clone());
    // Make sure the variants exist before timing anything against them.
    for cmd in ["build-asan", "build-pydebug"] {
        duct::cmd!(std::env::current_exe()?, cmd)
            .stdout_null()
            .run()?;
    }
    let asan = capisan_build::Manifest::find(&cache, Variant::Asan, None)?;

    // 1. exec/s: checks on, atheris, checks off, GC collect per input, alternated
    //    A B C D A B C D; atheris is set up first (cached; ~4 min the first time).
    let atheris = crate::atheris::setup(&asan, &cache);
    if let Err(e) = &atheris {
        eprintln!("bench: atheris baseline unavailable: {e:#}");
    }
    let harness = root().join("fuzz/atheris/capi_sequences.py");
    let rounds = if args.quick { 2 } else { 3 };
    let (mut on, mut off, mut gc, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut on_cov, mut at_cov) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let c = campaign(time, false, false, &args.cache)?;
        on.push(c.exec_per_sec);
        on_cov.push(c.cov);
        if let Ok(a) = &atheris {
            let c = a.campaign(&harness, time, 11)?;
            at.push(c.exec_per_sec);
            at_cov.push(c.cov);
        }
        off.push(campaign(time, true, false, &args.cache)?.exec_per_sec);
        gc.push(campaign(time, false, true, &args.cache)?.exec_per_sec);
    }
    let (m_on, m_off, m_gc) = (median(on.clone()), median(off.clone()), median(gc.clone()));
    rows.push((
        "exec/s, ASan, checks on (median)".into(),
        format!("{m_on:.0}"),
        format!("runs {on:?}"),
    ));
    rows.push((
        "exec/s, checks off".into(),
        format!("{m_off:.0}"),
        format!("runs {off:?}"),
    ));
    rows.push((
        "cost of checks (1 - on/off)".into(),
        format!("{:.0} %", 100.0 * (1.0 - m_on / m_off)),
        "target <= 25 %".into(),
    ));
    rows.push((
        "exec/s with PyGC_Collect per input".into(),
        format!("{m_gc:.0}"),
        format!("{:.2}x of checks-on", m_gc / m_on),
    ));
    data.insert(
        "exec_per_sec".into(),
        json!({"checks_on": on, "checks_off": off, "gc_collect": gc}),
    );
    match &atheris {
        Ok(_) => {
            let ratios: Vec<f64> = on.iter().zip(&at).map(|(c, a)| c / a).collect();
            rows.push((
                format!("exec/s, atheris {} (median)", crate::atheris::VERSION),
                format!("{:.0}", median(at.clone())),
                format!("runs {at:?}; the same ops from Python, same ASan interpreter (relinked with libFuzzer, so it sees CPython's C coverage too), same seed and duration, no ownership checks"),
            ));
            rows.push((
                "capisan / atheris exec/s (median of per-pair ratios)".into(),
                format!("{:.1}x", median(ratios.clone())),
                format!("pairs {ratios:.2?}; target >= 3x"),
            ));
            rows.push((
                "edge coverage at the end, capisan vs atheris (median)".into(),
                format!("{:.0} vs {:.0}", median(on_cov.iter().map(|&c| c as f64).collect()), median(at_cov.iter().map(|&c| c as f64).collect())),
                format!("capisan {on_cov:?}, atheris {at_cov:?} (libFuzzer's cov: CPython's C edges, plus the harness's own: Rust for capisan, Python bytecode for atheris)"),
            ));
            data.insert(
                "atheris".into(),
                json!({"version": crate::atheris::VERSION, "exec_per_sec": at, "ratios": ratios, "cov": at_cov, "capisan_cov": on_cov}),
            );
        }
        Err(e) => rows.push((
            "exec/s vs atheris".into(),
            "not measured".into(),
            format!("atheris setup failed: {}", e.to_string().replace('\n', " ")),
        )),
    }

    // 2. cold build-asan vs the same configure && make -j2 by hand (full run only: ~10 min),
    //    then the cached rebuild.
    if !args.quick {
        let (ours, hand) = cold_build_vs_make(&asan)?;
        rows.push((
            "build-asan cold vs configure && make -j2 by hand".into(),
            format!("{:.2}x", ours / hand),
            format!("{ours:.0} s vs {hand:.0} s, same source, flags and compiler; target <= 1.1x"),
        ));
        data.insert(
            "cold_build".into(),
            json!({"capisan_s": ours, "hand_s": hand, "ratio": ours / hand}),
        );
        write_results(&rows, &data, args.quick)?;
    }
    let t = Instant::now();
    let st = duct::cmd!(std::env::current_exe()?, "build-asan")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()?;
    let cached = t.elapsed().as_secs_f64();
    let m = &asan;
    rows.push((
        "build-asan, cached".into(),
        format!("{cached:.2} s"),
        format!("{}; target < 5 s", st.status),
    ));
    if args.quick {
        rows.push((
            "build-asan, cold (the cached variant's own build, from its manifest)".into(),
            format!("{:.0} s", m.build_seconds),
            "configure + make -j2; the full bench compares a fresh one with make by hand".into(),
        ));
    }
    data.insert(
        "build".into(),
        json!({"cached_s": cached, "cold_s": m.build_seconds}),
    );

    // 3. minimization of planted crashes padded to 200 ops.
    let zoo = root().join("tests/bugzoo/bugzoo.c");
    let ext = std::env::temp_dir().join("capisan-bench-ext");
    duct::cmd!(
        std::env::current_exe()?,
        "ext-build",
        &zoo,
        "--variant",
        "asan",
        "-o",
        &ext
    )
    .stdout_null()
    .run()?;
    let cases: [(&str, Vec<Op>); 3] = [
        (
            "double_free",
            vec![
                Op::NewInt {
                    dst: Slot(0),
                    value: 8,
                },
                Op::CallExt {
                    func: 0,
                    nargs: 1,
                    args: [Slot(0); 3],
                    dst: Slot(1),
                },
            ],
        ),
        (
            "overflow",
            vec![
                Op::NewBytes {
                    dst: Slot(0),
                    data: vec![7; 32],
                },
                Op::CallExt {
                    func: 0,
                    nargs: 1,
                    args: [Slot(0); 3],
                    dst: Slot(1),
                },
            ],
        ),
        (
            "extra_decref",
            vec![
                Op::NewList { dst: Slot(0) },
                Op::NewFloat {
                    dst: Slot(1),
                    value: 2.5,
                },
                Op::ListAppend {
                    list: Slot(0),
                    item: Slot(1),
                },
                Op::Release { slot: Slot(1) },
                Op::CallExt {
                    func: 0,
                    nargs: 1,
                    args: [Slot(0); 3],
                    dst: Slot(2),
                },
            ],
        ),
    ];
    let mut mins = Vec::new();
    for (func, core) in cases {
        let dir = std::env::temp_dir().join(format!("capisan-bench-min-{func}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("artifacts"))?;
        // A campaign directory the minimizer can use: 1 s of fuzzing writes campaign.json.
        fuzz::fuzz(FuzzArgs {
            libfuzzer: vec!["-runs=0".into()],
            ..bench_campaign(
                1,
                Variant::Asan,
                zoo_ext(&ext, func, None),
                dir.clone(),
                1,
                &args.cache,
            )
        })?;
        let art = dir.join("artifacts").join(format!("crash-padded-{func}"));
        fs::write(&art, serde_json::to_vec(&padded(&core))?)?;
        let m = crate::repro::minimize_artifact(&art, Some(&dir))?;
        rows.push((
            format!("minimize {func}: 200 ops ->"),
            format!("{} ops", m.ops.len()),
            format!(
                "{:.1} s, {} candidates; target <= 5 ops in < 30 s",
                m.seconds, m.tries
            ),
        ));
        mins.push(json!({"func": func, "before": m.original_ops, "after": m.ops.len(), "seconds": m.seconds, "candidates": m.tries}));
    }
    data.insert("minimize".into(), json!(mins));

    // 4. replay throughput: the corpus of the first checks-on campaign, fork per input vs
    //    batches of 100 per fork, alternated; inputs per second of the whole command.
    let corpora = tempfile::tempdir()?;
    let corpus = corpora.path().join("capi_sequences");
    fs::create_dir_all(&corpus)?;
    for e in fs::read_dir(std::env::temp_dir().join("capisan-bench-false-false/corpus"))? {
        let e = e?;
        fs::copy(e.path(), corpus.join(e.file_name()))?;
    }
    let n_inputs = fs::read_dir(&corpus)?.count();
    let replay = |batch: u32| -> Result<f64> {
        let t = Instant::now();
        duct::cmd!(
            std::env::current_exe()?,
            "replay",
            "--corpora",
            corpora.path(),
            "--batch",
            batch.to_string(),
            "--format",
            "json"
        )
        .stderr_null()
        .stdout_null()
        .run()
        .with_context(|| format!("replay --batch {batch}"))?;
        Ok(n_inputs as f64 / t.elapsed().as_secs_f64())
    };
    replay(100)?; // warm-up: builds capisan-replay
    let (mut single, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        single.push(replay(1)?);
        batched.push(replay(100)?);
    }
    rows.push((
        "replay, inputs/s on one core, batches of 100 per fork (default)".into(),
        format!("{:.0}", median(batched.clone())),
        format!("runs {batched:.0?}; {n_inputs} inputs of a {time}-s campaign, whole command incl. start-up; target >= 500"),
    ));
    rows.push((
        "replay, inputs/s, a fresh fork per input (--batch 1)".into(),
        format!("{:.0}", median(single.clone())),
        format!(
            "runs {single:.0?}; {:.1}x slower",
            median(batched.clone()) / median(single.clone())
        ),
    ));
    data.insert(
        "replay".into(),
        json!({"inputs": n_inputs, "batch_100_per_s": batched, "batch_1_per_s": single}),
    );
    write_results(&rows, &data, args.quick)?;

    // 5. refleak vs regrtest's own -R 3:3 on test_json, pydebug, alternated.
    let pydebug = capisan_build::Manifest::find(&cache, Variant::Pydebug, None)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_verdict, mut their_verdict) = (String::new(), String::new());
    for _ in 0..2 {
        let t = Instant::now();
        let r = duct::cmd!(
            std::env::current_exe()?,
            "refleak",
            "test_json",
            "-R",
            "3:3",
            "--json"
        )
        .stderr_null()
        .stdout_capture()
        .unchecked()
        .run()?;
        ours.push(t.elapsed().as_secs_f64());
        let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_default();
        our_verdict = match report["leaked"].as_bool() {
            Some(true) => "leaks".into(),
            Some(false) => "no leak".into(),
            None => "no verdict".into(),
        };
        let t = Instant::now();
        let r = crate::with_env(
            duct::cmd!(&pydebug.python, "-m", "test", "test_json", "-R", "3:3"),
            &pydebug.env(),
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
        theirs.push(t.elapsed().as_secs_f64());
        let text = String::from_utf8_lossy(&r.stdout);
        their_verdict = if text.contains("leaked") {
            "leaks".into()
        } else if r.status.success() {
            "no leak".into()
        } else {
            "failed".into()
        };
    }
    rows.push((
        "refleak test_json -R 3:3 vs regrtest -R 3:3 (time ratio, median)".into(),
        format!("{:.2}x", median(ours.clone()) / median(theirs.clone())),
        format!("capisan {ours:.1?} s ({our_verdict}) vs regrtest {theirs:.1?} s ({their_verdict}), pydebug"),
    ));
    data.insert(
        "refleak".into(),
        json!({"capisan_s": ours, "regrtest_s": theirs, "capisan_verdict": our_verdict, "regrtest_verdict": their_verdict}),
    );
    write_results(&rows, &data, args.quick)?;

    if args.zoo {
        let classes: [(&str, Variant, Option<&str>); 8] = [
            ("leak_on_error", Variant::Asan, None),
            ("extra_decref", Variant::Asan, None),
            ("double_free", Variant::Asan, None),
            ("overflow", Variant::Asan, None),
            ("uninit_read", Variant::Valgrind, None),
            ("alloc_mismatch", Variant::Asan, Some("malloc_debug")),
            ("holder_traverse_bug", Variant::Asan, None),
            ("borrowed_after_mutation", Variant::Asan, None),
        ];
        let mut zoo_rows = Vec::new();
        for (func, variant, pm) in classes {
            let ext = std::env::temp_dir().join(format!("capisan-bench-ext-{variant}"));
            duct::cmd!(
                std::env::current_exe()?,
                "ext-build",
                &zoo,
                "--variant",
                variant.name(),
                "-o",
                &ext
            )
            .stdout_null()
            .run()?;
            let mut times = Vec::new();
            let mut class = String::new();
            for seed in 1..=3u64 {
                let out = std::env::temp_dir().join(format!("capisan-bench-zoo-{func}-{seed}"));
                let _ = fs::remove_dir_all(&out);
                let t = Instant::now();
                // One class failing to run must not lose the others' numbers.
                let run = fuzz::fuzz(bench_campaign(
                    90,
                    variant,
                    zoo_ext(&ext, func, pm),
                    out,
                    seed,
                    &args.cache,
                ));
                let buckets = match run {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("bench: {func} seed {seed}: {e:#}");
                        Vec::new()
                    }
                };
                let found = buckets.first().map(|b| b.class.clone());
                times.push(if found.is_some() {
                    t.elapsed().as_secs_f64()
                } else {
                    f64::INFINITY
                });
                class = found.unwrap_or_else(|| "not found in 90 s".into());
            }
            rows.push((
                format!("time-to-detect {func} (no seeds, median of 3)"),
                format!("{:.0} s", median(times.clone())),
                format!("{class}; runs {times:.0?}"),
            ));
            zoo_rows.push(json!({"func": func, "class": class, "seconds": times}));
            data.insert("zoo_time_to_detect".into(), json!(zoo_rows.clone()));
            write_results(&rows, &data, args.quick)?;
        }
        data.insert("zoo_time_to_detect".into(), json!(zoo_rows));
    }

    let md = write_results(&rows, &data, args.quick)?;
    print!("{md}");
    Ok(())
}

/// A cold `build-asan` (fresh cache, the asan variant's own source via `--src`) vs the same
/// configure and `make -j2` run by hand; seconds of each.
fn cold_build_vs_make(asan: &capisan_build::Manifest) -> Result<(f64, f64)> {
    let work = tempfile::tempdir()?;
    let t = Instant::now();
    duct::cmd!(
        std::env::current_exe()?,
        "build-asan",
        "--src",
        &asan.source_dir
    )
    .env("CAPISAN_CACHE", work.path().join("cache"))
    .stdout_null()
    .run()
    .context("cold build-asan")?;
    let ours = t.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(work.path().join("cache"));

    let dir = work.path().join("by-hand");
    fs::create_dir_all(&dir)?;
    let mut configure = Variant::Asan.configure_args();
    configure.push(format!("CC={}", asan.compiler.cc));
    configure.push(format!("CFLAGS={}", Variant::Asan.cflags().join(" ")));
    let env = Variant::Asan.build_env();
    let t = Instant::now();
    crate::with_env(
        duct::cmd(asan.source_dir.join("configure"), &configure),
        &env,
    )
    .dir(&dir)
    .stdout_null()
    .stderr_null()
    .run()
    .context("configure by hand")?;
    crate::with_env(duct::cmd!("make", "-j2"), &env)
        .dir(&dir)
        .stdout_null()
        .stderr_null()
        .run()
        .context("make -j2 by hand")?;
    let hand = t.elapsed().as_secs_f64();
    Ok((ours, hand))
}

/// Write bench/results.md and bench/results.json (also after each slow row, so a failure later
/// keeps what was measured).
fn write_results(
    rows: &[(String, String, String)],
    data: &serde_json::Map<String, serde_json::Value>,
    quick: bool,
) -> Result<String> {
    let mut md = String::from(
        "# capisan benchmarks\n\nMeasured side by side in one run of `cargo xtask bench`",
    );
    md.push_str(if quick { " --quick" } else { "" });
    md.push_str(" (2 cores; ratios and medians, not single absolute times).\n\n| measure | value | notes |\n|---|---|---|\n");
    for (a, b, c) in rows {
        md.push_str(&format!("| {a} | {b} | {c} |\n"));
    }
    let dir = root().join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("results.md"), &md)?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&serde_json::Value::Object(data.clone()))?,
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    #[test]
    fn final_stats_come_from_libfuzzer_s_last_lines() {
        // The tail of a real 30-s capi_sequences campaign log.
        let log = "#19000\tREDUCE cov: 12688 ft: 51700 corp: 1533/356Kb lim: 384 exec/s: 616 rss: 573Mb\n\
                   #19116\tDONE   cov: 12690 ft: 51729 corp: 1534/356Kb lim: 384 exec/s: 616 rss: 573Mb\n\
                   stat::number_of_executed_units: 19116\n\
                   stat::average_exec_per_sec:     616\n\
                   stat::new_units_added:          1846\n";
        let s = super::final_stats(log).unwrap();
        assert_eq!(s.exec_per_sec, 616.0);
        assert_eq!(s.cov, 12690);
        assert!(super::final_stats("#1\tINITED cov: 3\n").is_none());
    }
}
