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
    /// Shorter runs (10 s per campaign instead of 30).
    #[arg(long)]
    pub quick: bool,
    /// Also measure the bug zoo's time-to-detect per class (3 seeds each, no seed corpus; slow).
    #[arg(long)]
    pub zoo: bool,
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

/// One campaign; its average exec/s from libFuzzer's final stats.
fn exec_per_sec(time: u64, no_checks: bool, collect: bool, cache: &Option<PathBuf>) -> Result<f64> {
    let out = std::env::temp_dir().join(format!("capisan-bench-{no_checks}-{collect}"));
    let _ = fs::remove_dir_all(&out);
    fuzz::fuzz(FuzzArgs {
        target: "capi_sequences".into(),
        time,
        variant: Variant::Asan,
        ext: ExtArgs::default(),
        out: Some(out.clone()),
        seed: Some(11),
        no_checks,
        collect,
        json: true,
        no_seeds: true,
        jobs: 1,
        cache: crate::CacheArgs {
            cache: cache.clone(),
        },
        libfuzzer: vec![],
    })?;
    let log = fs::read_to_string(out.join("fuzz.log"))?;
    log.lines()
        .find_map(|l| l.strip_prefix("stat::average_exec_per_sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no final stats in the campaign log")
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

    // 1. exec/s: checks on, checks off, GC collect per input, alternated A B C A B C.
    let (mut on, mut off, mut gc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..2 {
        on.push(exec_per_sec(time, false, false, &args.cache)?);
        off.push(exec_per_sec(time, true, false, &args.cache)?);
        gc.push(exec_per_sec(time, false, true, &args.cache)?);
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

    // 2. cached rebuild of the asan variant.
    let t = Instant::now();
    let st = duct::cmd!(std::env::current_exe()?, "build-asan")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()?;
    let cached = t.elapsed().as_secs_f64();
    let m = capisan_build::Manifest::find(
        &capisan_build::Cache::resolve(args.cache.clone()),
        Variant::Asan,
        None,
    )?;
    rows.push((
        "build-asan, cached".into(),
        format!("{cached:.2} s"),
        format!("exit {}; target < 5 s", st.status),
    ));
    rows.push((
        "build-asan, cold (recorded in the manifest)".into(),
        format!("{:.0} s", m.build_seconds),
        "configure + make -j2".into(),
    ));
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
            target: "capi_sequences".into(),
            time: 1,
            variant: Variant::Asan,
            ext: ExtArgs {
                ext: Some("bugzoo".into()),
                ext_path: Some(ext.clone()),
                funcs: vec![func.into()],
                pythonmalloc: None,
            },
            out: Some(dir.clone()),
            seed: Some(1),
            no_checks: false,
            collect: false,
            json: true,
            no_seeds: true,
            jobs: 1,
            cache: crate::CacheArgs {
                cache: args.cache.clone(),
            },
            libfuzzer: vec!["-runs=0".into()],
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

    // 4. replay throughput with fork isolation (committed corpora, asan).
    let t = Instant::now();
    let out = duct::cmd!(std::env::current_exe()?, "replay", "--format", "json")
        .stderr_null()
        .stdout_capture()
        .unchecked()
        .run()?;
    let secs = t.elapsed().as_secs_f64();
    let cases: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let per_input: f64 = cases.iter().filter_map(|c| c["seconds"].as_f64()).sum();
    rows.push((
        "replay, inputs/s on one core (fork per input)".into(),
        format!("{:.0}", cases.len() as f64 / per_input.max(1e-9)),
        format!("{} inputs; whole command {secs:.1} s incl. builds and interpreter start-up; target >= 500", cases.len()),
    ));
    data.insert(
        "replay".into(),
        json!({"inputs": cases.len(), "input_seconds": per_input, "command_seconds": secs}),
    );

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
                let run = fuzz::fuzz(FuzzArgs {
                    target: "capi_sequences".into(),
                    time: 90,
                    variant,
                    ext: ExtArgs {
                        ext: Some("bugzoo".into()),
                        ext_path: Some(ext.clone()),
                        funcs: vec![func.into()],
                        pythonmalloc: pm.map(String::from),
                    },
                    out: Some(out),
                    seed: Some(seed),
                    no_checks: false,
                    collect: false,
                    json: true,
                    no_seeds: true,
                    jobs: 1,
                    cache: crate::CacheArgs {
                        cache: args.cache.clone(),
                    },
                    libfuzzer: vec![],
                });
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

    rows.push((
        "exec/s vs atheris".into(),
        "not measured".into(),
        "atheris is not installed against the ASan variant yet".into(),
    ));
    rows.push((
        "refleak test_json -R 3:3 vs regrtest".into(),
        "not in bench".into(),
        "measured once by hand: 30.0 s / 28.9 s vs regrtest 31.4 s / 30.9 s, same verdict".into(),
    ));

    let md = write_results(&rows, &data, args.quick)?;
    print!("{md}");
    Ok(())
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
