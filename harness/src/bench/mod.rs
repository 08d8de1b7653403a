//! The measurements behind `cargo xtask bench`: campaigns' exec/s with and without checks and
//! against atheris ([`atheris`]), cold and cached variant builds, replay throughput, refleak
//! against regrtest, and time-to-detect on the bug zoo. Each function measures one thing and
//! returns numbers; [`Table`] collects them as rows (medians and ratios: these machines are
//! noisy, so everything compared is measured side by side in one run) and writes
//! `bench/results.md` and `bench/results.json`. [`run`] orders a whole [`Suite`] and words its
//! rows ([`rows`] the full run, [`trust`], [`api`], [`failalloc`] and [`real`] their own
//! files).

pub mod api;
pub mod atheris;
pub mod failalloc;
pub mod real;
pub mod rows;
pub mod trust;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capisan_build::builder::{self, BuildRequest};
use capisan_build::source::tail_lines;
use capisan_build::{source, toolchain, BuildError, Cache, Manifest, Variant};
use serde_json::Value;

use crate::bundle::BundleError;
use crate::campaign::{self, CampaignError, CampaignSpec, Outcome};
use crate::env::HarnessEnv;
use crate::leaks::{self, LeakError, RefleakOptions};
use crate::ops::{Op, Slot};
use crate::replay::Limits;
use crate::replay_report::{self, ReplayError, ReplayRequest};

/// Why a measurement could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file, directory or program failed, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A variant, fuzz binary or extension could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A campaign failed.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// A replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// refleak gave no verdict.
    #[error(transparent)]
    Leak(#[from] LeakError),
    /// A planted crash could not be minimized.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A libFuzzer run ended without its final stats.
    #[error("libFuzzer printed no final stats (log {log}):\n{tail}")]
    NoStats { log: PathBuf, tail: String },
    /// A setup step failed.
    #[error("{what} failed (full log: {log}):\n{tail}")]
    Step {
        what: String,
        log: PathBuf,
        tail: String,
    },
    /// This machine or variant cannot take the measurement.
    #[error("{0}")]
    Unsupported(String),
}

/// Result alias for the bench.
pub type Result<T> = std::result::Result<T, BenchError>;

pub(crate) fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| BenchError::Io {
        context: path.display().to_string(),
        source,
    })
}

fn run_err(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        context: what.to_string(),
        source,
    }
}

/// The median (mean of the middle two for an even count; 0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
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

/// How much slower `slow` runs than `fast` (exec/s of campaigns run in alternated pairs): the
/// per-pair ratios `fast / slow`, and the table cell `<slow> vs <fast> exec/s (<ratio>x slower)`
/// of the medians.
pub fn slowdown(slow: &[f64], fast: &[f64]) -> (Vec<f64>, String) {
    let ratios: Vec<f64> = fast.iter().zip(slow).map(|(f, s)| f / s.max(1.0)).collect();
    let (s, f, r) = (
        median(slow.to_vec()),
        median(fast.to_vec()),
        median(ratios.clone()),
    );
    (ratios, format!("{s:.0} vs {f:.0} exec/s ({r:.2}x slower)"))
}

/// libFuzzer's verdict on a campaign: average exec/s (final stats) and the edge coverage of
/// its `DONE` line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub exec_per_sec: f64,
    pub cov: u64,
}

/// Read [`Stats`] from a libFuzzer log; `None` without `stat::average_exec_per_sec`.
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

/// The edges a libFuzzer log shows so far: the largest `cov: N` of its status lines (printed
/// at every new edge, so the last one is the coverage at the time of reading); 0 before any.
pub fn cov_so_far(log: &str) -> u64 {
    log.split("cov: ")
        .skip(1)
        .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Read a running campaign's edges at each of `checkpoints` (seconds since `started`): sleeps
/// until each one, or until `done()` says the campaign ended (it stopped at a finding, or
/// failed), then reads the log with `read`. A checkpoint past the end reads the final log.
pub fn sample_cov(
    started: Instant,
    checkpoints: &[u64],
    mut done: impl FnMut() -> bool,
    read: impl Fn() -> String,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(checkpoints.len());
    for &at in checkpoints {
        let at = Duration::from_secs(at);
        while started.elapsed() < at && !done() {
            std::thread::sleep(Duration::from_millis(200).min(at - started.elapsed()));
        }
        out.push(cov_so_far(&read()));
    }
    out
}

/// A bench campaign ([`campaign_spec`]: checks on, no seeds, one process stopping at its first
/// finding) of `seconds`, with the edges its `fuzz.log` shows at each of `checkpoints`
/// (seconds of wall time since it was started, start-up included); and libFuzzer's final
/// stats.
pub fn cov_at_checkpoints(spec: &CampaignSpec, checkpoints: &[u64]) -> Result<(Stats, Vec<u64>)> {
    let _ = fs::remove_dir_all(&spec.dir);
    let log_path = spec.dir.join("fuzz.log");
    let started = Instant::now();
    let finished = std::sync::atomic::AtomicBool::new(false);
    let (run, covs) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let r = campaign::run(spec, |_| {});
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        let covs = sample_cov(
            started,
            checkpoints,
            || finished.load(std::sync::atomic::Ordering::SeqCst),
            || fs::read_to_string(&log_path).unwrap_or_default(),
        );
        (runner.join(), covs)
    });
    match run {
        Ok(r) => {
            r?;
        }
        Err(_) => {
            return Err(BenchError::Unsupported(
                "the campaign thread panicked".into(),
            ))
        }
    }
    let log = io(&log_path, fs::read_to_string(&log_path))?;
    let stats = final_stats(&log).ok_or_else(|| BenchError::NoStats {
        log: log_path,
        tail: tail_lines(&log, 30),
    })?;
    Ok((stats, covs))
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub value: String,
    pub notes: String,
}

/// The results: rows for `results.md`, raw numbers for `results.json`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub rows: Vec<Row>,
    pub data: serde_json::Map<String, Value>,
}

impl Table {
    /// Add a row.
    pub fn row(
        &mut self,
        measure: impl Into<String>,
        value: impl Into<String>,
        notes: impl Into<String>,
    ) {
        self.rows.push(Row {
            measure: measure.into(),
            value: value.into(),
            notes: notes.into(),
        });
    }

    /// Set the raw numbers of one measurement.
    pub fn data(&mut self, key: &str, value: Value) {
        self.data.insert(key.to_string(), value);
    }

    /// The table as Markdown.
    pub fn markdown(&self, quick: bool) -> String {
        let mut md = String::from(
            "# capisan benchmarks\n\nMeasured side by side in one run of `cargo xtask bench`",
        );
        md.push_str(if quick { " --quick" } else { "" });
        md.push_str(" (2 cores; ratios and medians, not single absolute times).\n\n| measure | value | notes |\n|---|---|---|\n");
        // A `|` inside a cell (a bucket signature) would end it.
        let cell = |s: &str| s.replace('|', "\\|");
        for r in &self.rows {
            let (m, v, n) = (cell(&r.measure), cell(&r.value), cell(&r.notes));
            md.push_str(&format!("| {m} | {v} | {n} |\n"));
        }
        md
    }

    /// Write `<dir>/results.md` and `<dir>/results.json` (also after each slow measurement, so
    /// a failure later keeps what was measured); returns the Markdown.
    pub fn write(&self, dir: &Path, quick: bool) -> Result<String> {
        self.write_as(dir, "results", quick)
    }

    /// Write `<dir>/<name>.md` and `<dir>/<name>.json`; returns the Markdown. The suites of
    /// [`IN_RESULTS`] also write their table as a section of `<dir>/results.md` (replacing
    /// that section), which the full suite's own writes keep: one file holds every table.
    pub fn write_as(&self, dir: &Path, name: &str, quick: bool) -> Result<String> {
        let md = self.markdown(quick);
        io(dir, fs::create_dir_all(dir))?;
        let path = dir.join(format!("{name}.md"));
        let results = dir.join("results.md");
        let old = fs::read_to_string(&results).unwrap_or_default();
        if name == "results" {
            let kept: String = IN_RESULTS
                .iter()
                .filter_map(|n| section_of(&old, n))
                .collect();
            io(&path, fs::write(&path, format!("{md}{kept}")))?;
        } else {
            io(&path, fs::write(&path, &md))?;
            if IN_RESULTS.contains(&name) {
                let body = md.replacen(
                    "# capisan benchmarks",
                    &format!("## `cargo xtask bench --{name}` (also bench/{name}.md)"),
                    1,
                );
                io(&results, fs::write(&results, splice(&old, name, &body)))?;
            }
        }
        let path = dir.join(format!("{name}.json"));
        let json = serde_json::to_vec_pretty(&Value::Object(self.data.clone()))
            .expect("a JSON map serializes");
        io(&path, fs::write(&path, json))?;
        Ok(md)
    }
}

/// The suites whose table `bench/results.md` also holds, as a section of its own.
pub const IN_RESULTS: &[&str] = &["real"];

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- bench --{name}: written by that run -->\n"),
        format!("<!-- end bench --{name} -->\n"),
    )
}

/// The section `name` of a results file, markers included, or `None`.
pub fn section_of(text: &str, name: &str) -> Option<String> {
    let (open, close) = markers(name);
    let start = text.find(&open)?;
    let end = text[start..].find(&close)? + start + close.len();
    Some(format!("\n{}", &text[start..end]))
}

/// `text` with its section `name` replaced by `body` (appended when it has none).
pub fn splice(text: &str, name: &str, body: &str) -> String {
    let (open, close) = markers(name);
    let section = format!("{open}{body}{close}");
    match section_of(text, name) {
        Some(old) => text.replacen(old.trim_start_matches('\n'), &section, 1),
        None => format!(
            "{}\n{section}",
            text.trim_end_matches('\n').to_string() + "\n"
        ),
    }
}

/// Which rows one `cargo xtask bench` run measures, and so which files it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Suite {
    /// exec/s, builds, minimization, replay, refleak (and the zoo's time-to-detect with
    /// `zoo`): `bench/results.md` and `.json`.
    Full { zoo: bool },
    /// [`trust::rows`]: `bench/trust.md` and `.json`.
    Trust,
    /// [`api::rows`]: `bench/api.md` and `.json`.
    Api,
    /// [`failalloc::rows`]: `bench/failalloc.md` and `.json`.
    Failalloc,
    /// [`api::gc_cost_rows`] alone: `bench/gc-cost.md` and `.json`.
    GcCost,
    /// [`real::rows`] with its options: `bench/real.md` and `.json`.
    Real(real::RealOptions),
}

impl Suite {
    /// The suite of `cargo xtask bench`'s flags: `--trust`, `--api`, `--failalloc` and
    /// `--gc-cost` each measure only their rows (the first given wins); without them, the full
    /// run (with the zoo's time-to-detect when `zoo`).
    pub fn from_flags(trust: bool, api: bool, failalloc: bool, gc_cost: bool, zoo: bool) -> Suite {
        match (trust, api, failalloc, gc_cost) {
            (true, ..) => Suite::Trust,
            (_, true, ..) => Suite::Api,
            (_, _, true, _) => Suite::Failalloc,
            (.., true) => Suite::GcCost,
            _ => Suite::Full { zoo },
        }
    }
}

/// What every suite measures against: the checkout, the cache, the asan and pydebug variants
/// (built on first use) and the `capi_sequences` fuzz binary of the asan variant.
#[derive(Debug, Clone)]
pub struct Bench {
    /// The checkout (holds `fuzz/`, `corpora/`, `tests/` and `bench/`).
    pub root: PathBuf,
    pub cache: Cache,
    /// Shorter runs (the `--quick` flag); each suite says what it shortens.
    pub quick: bool,
    pub asan: Manifest,
    pub pydebug: Manifest,
    /// `capi_sequences` built against `asan`.
    pub binary: PathBuf,
}

impl Bench {
    /// Build (or find cached) the variants and the fuzz binary before timing anything.
    pub fn prepare(
        root: &Path,
        cache: Cache,
        quick: bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<Bench> {
        log("the asan and pydebug variants (built on first use)");
        let asan = build_variant(&cache, Variant::Asan, None)?;
        let pydebug = build_variant(&cache, Variant::Pydebug, None)?;
        let binary = capisan_build::fuzzbin::build_fuzz_binary(root, "capi_sequences", &asan)?;
        Ok(Bench {
            root: root.to_path_buf(),
            cache,
            quick,
            asan,
            pydebug,
            binary,
        })
    }

    /// Write `bench/<name>.md` and `.json` of the checkout; returns the Markdown.
    pub fn write(&self, t: &Table, name: &str) -> Result<String> {
        t.write_as(&self.root.join("bench"), name, self.quick)
    }

    /// The test extension `tests/<name>/<name>.c` built against the asan variant in
    /// `<cache>/bench/<name>`; returns that directory (the campaigns' `ext_path`).
    pub fn test_extension(&self, name: &str) -> Result<PathBuf> {
        let ext = self.cache.root().join("bench").join(name);
        let src = self.root.join("tests").join(name).join(format!("{name}.c"));
        capisan_build::extension::build_extension(&self.cache, &self.asan, &src, Some(&ext))?;
        Ok(ext)
    }
}

/// Measure `suite` in the checkout `root` (progress lines go to `log`) and write its files;
/// returns the Markdown table written last.
pub fn run(
    root: &Path,
    cache: Cache,
    quick: bool,
    suite: Suite,
    log: &mut dyn FnMut(&str),
) -> Result<String> {
    let bench = Bench::prepare(root, cache, quick, log)?;
    match suite {
        Suite::Full { zoo } => rows::full(&bench, zoo, log),
        Suite::Trust => trust::rows(&bench, log),
        Suite::Api => api::rows(&bench, log),
        Suite::Failalloc => failalloc::rows(&bench, log),
        Suite::GcCost => api::gc_cost_rows(&bench, log),
        Suite::Real(opts) => real::rows(&bench, &opts, log),
    }
}

/// Build `variant` (or find it cached) as `cargo xtask build-<variant>` does with no options:
/// Debian's source of the default version (or `src`), the default compiler, all cores.
pub fn build_variant(cache: &Cache, variant: Variant, src: Option<&Path>) -> Result<Manifest> {
    let compiler = toolchain::probe(&toolchain::default_cc())?;
    let source = source::resolve(cache, src, capisan_build::DEFAULT_VERSION)?;
    let req = BuildRequest::new(variant, &source, &compiler, None, false);
    let outcome = builder::build(cache, &req, &indicatif::ProgressBar::hidden())?;
    Ok(outcome.manifest().clone())
}

/// The bench's campaigns: `capi_sequences` with checks on, no seed corpus (what the fuzzer
/// finds on its own), one process ending at the first finding (as atheris runs, so exec/s
/// compare like for like and time-to-detect ends at the first bucket); callers change what
/// they measure.
pub fn campaign_spec(
    manifest: &Manifest,
    binary: &Path,
    dir: PathBuf,
    seconds: u64,
    seed: u64,
) -> CampaignSpec {
    CampaignSpec {
        target: "capi_sequences".into(),
        manifest: manifest.clone(),
        binary: binary.to_path_buf(),
        dir,
        harness: HarnessEnv::default(),
        pythonmalloc: None,
        seconds,
        seed: Some(seed),
        jobs: 1,
        stop_at_first_finding: true,
        seeds: Vec::new(),
        libfuzzer: Vec::new(),
        spec_file: None,
    }
}

/// Run a campaign from a fresh directory.
pub fn run_campaign(spec: &CampaignSpec) -> Result<Outcome> {
    let _ = fs::remove_dir_all(&spec.dir);
    Ok(campaign::run(spec, |_| {})?)
}

/// exec/s and coverage of one `time`-second campaign on the C API alone (seed 11), with the
/// property checks on or off and with or without a collection per input. Its directory is
/// `<tmp>/capisan-bench-<no_checks>-<collect>` ([`replay_throughput`] reuses its corpus).
pub fn exec_per_sec(
    manifest: &Manifest,
    binary: &Path,
    time: u64,
    no_checks: bool,
    collect: bool,
) -> Result<Stats> {
    let dir = std::env::temp_dir().join(format!("capisan-bench-{no_checks}-{collect}"));
    let mut spec = campaign_spec(manifest, binary, dir, time, 11);
    spec.harness = HarnessEnv {
        checks: !no_checks,
        totals: !no_checks,
        collect,
        ..HarnessEnv::default()
    };
    campaign_stats(&spec)
}

/// Run a campaign from a fresh directory and read libFuzzer's [`Stats`] from its `fuzz.log`.
pub fn campaign_stats(spec: &CampaignSpec) -> Result<Stats> {
    run_campaign(spec)?;
    let log_path = spec.dir.join("fuzz.log");
    let log = io(&log_path, fs::read_to_string(&log_path))?;
    final_stats(&log).ok_or_else(|| BenchError::NoStats {
        log: log_path,
        tail: tail_lines(&log, 30),
    })
}

/// `spec` turned on the bug zoo built in `ext`, only `func` callable, with `pythonmalloc`.
pub fn on_zoo(
    mut spec: CampaignSpec,
    ext: &Path,
    func: &str,
    pythonmalloc: Option<&str>,
) -> CampaignSpec {
    spec.harness = HarnessEnv {
        ext: Some("bugzoo".into()),
        ext_path: Some(ext.to_path_buf()),
        ext_funcs: vec![func.into()],
        ..HarnessEnv::default()
    };
    spec.pythonmalloc = pythonmalloc.map(String::from);
    spec
}

/// The zoo's classes for time-to-detect: the function, the variant that sees it, and the
/// PYTHONMALLOC it needs.
pub const ZOO_CLASSES: [(&str, Variant, Option<&str>); 8] = [
    ("leak_on_error", Variant::Asan, None),
    ("extra_decref", Variant::Asan, None),
    ("double_free", Variant::Asan, None),
    ("overflow", Variant::Asan, None),
    ("uninit_read", Variant::Valgrind, None),
    ("alloc_mismatch", Variant::Asan, Some("malloc_debug")),
    ("holder_traverse_bug", Variant::Asan, None),
    ("borrowed_after_mutation", Variant::Asan, None),
];

/// A planted crash padded to 200 ops with benign ops on other slots (the core in the middle).
pub fn padded(core: &[Op]) -> Vec<Op> {
    let pads = 200 - core.len().min(200);
    let mut ops = Vec::with_capacity(200);
    let mut k = 0i64;
    while (k as usize) < pads {
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

/// The minimizer's cases: a zoo function and the op core that crashes it.
pub fn minimize_cases() -> [(&'static str, Vec<Op>); 3] {
    let call = |dst: u8| Op::CallExt {
        func: 0,
        nargs: 1,
        args: [Slot(0); 3],
        dst: Slot(dst),
        kw: 0,
    };
    [
        (
            "double_free",
            vec![
                Op::NewInt {
                    dst: Slot(0),
                    value: 8,
                },
                call(1),
            ],
        ),
        (
            "overflow",
            vec![
                Op::NewBytes {
                    dst: Slot(0),
                    data: vec![7; 32],
                },
                call(1),
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
                call(2),
            ],
        ),
    ]
}

/// A cold build of the asan variant (a fresh cache, `asan`'s own source) vs the same
/// configure and `make -j2` run by hand; seconds of each.
pub fn cold_build_vs_make(asan: &Manifest) -> Result<(f64, f64)> {
    let work = io(Path::new("temporary directory"), tempfile::tempdir())?;
    let t = Instant::now();
    let cache = Cache::resolve(Some(work.path().join("cache")));
    build_variant(&cache, Variant::Asan, Some(&asan.source_dir))?;
    let ours = t.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(work.path().join("cache"));

    let dir = work.path().join("by-hand");
    io(&dir, fs::create_dir_all(&dir))?;
    let mut configure = Variant::Asan.configure_args();
    configure.push(format!("CC={}", asan.compiler.cc));
    configure.push(format!("CFLAGS={}", Variant::Asan.cflags().join(" ")));
    let env = Variant::Asan.build_env();
    let quiet = |mut cmd: duct::Expression| {
        for (k, v) in &env {
            cmd = cmd.env(k, v);
        }
        cmd.dir(&dir).stdout_null().stderr_null()
    };
    let t = Instant::now();
    quiet(duct::cmd(asan.source_dir.join("configure"), &configure))
        .run()
        .map_err(run_err("configure by hand"))?;
    quiet(duct::cmd!("make", "-j2"))
        .run()
        .map_err(run_err("make -j2 by hand"))?;
    Ok((ours, t.elapsed().as_secs_f64()))
}

/// Seconds for a build of `variant` that finds the cached one (the cache key check).
pub fn cached_build_seconds(cache: &Cache, variant: Variant) -> Result<f64> {
    let t = Instant::now();
    build_variant(cache, variant, None)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Replay throughput in inputs per second (the whole replay, start-up included) of the
/// `capi_sequences` corpus `corpus` on the asan variant, `batch` inputs per fork.
pub fn replay_throughput(root: &Path, cache: &Cache, corpora: &Path, batch: u32) -> Result<f64> {
    let req = ReplayRequest {
        variants: vec![Variant::Asan],
        corpora: corpora.to_path_buf(),
        only: Vec::new(),
        limits: Limits {
            timeout: std::time::Duration::from_secs(10),
            rss_mb: 2048,
        },
        batch,
        ext_path: None,
    };
    let t = Instant::now();
    let cases = replay_report::replay_corpora(root, cache, &req)?;
    Ok(cases.len() as f64 / t.elapsed().as_secs_f64())
}

/// One side-by-side round of `refleak test_json -R 3:3` against regrtest's own
/// `-m test test_json -R 3:3` on a pydebug build.
#[derive(Debug, Clone)]
pub struct RefleakRound {
    pub ours_s: f64,
    pub ours_verdict: String,
    pub regrtest_s: f64,
    pub regrtest_verdict: String,
}

/// Run one [`RefleakRound`].
pub fn refleak_vs_regrtest(pydebug: &Manifest) -> Result<RefleakRound> {
    let t = Instant::now();
    let opts = RefleakOptions {
        warmups: 3,
        runs: 3,
        use_resources: Vec::new(),
    };
    let target = leaks::Target::Test("test_json".into());
    let ours_verdict = match leaks::refleak(pydebug, &target, &[], &opts) {
        Ok(r) if r.leaked => "leaks",
        Ok(_) => "no leak",
        Err(_) => "no verdict",
    }
    .to_string();
    let ours_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut cmd = duct::cmd!(&pydebug.python, "-m", "test", "test_json", "-R", "3:3");
    for (k, v) in pydebug.env() {
        cmd = cmd.env(k, v);
    }
    let r = cmd
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(run_err("running regrtest"))?;
    let regrtest_s = t.elapsed().as_secs_f64();
    let regrtest_verdict = if String::from_utf8_lossy(&r.stdout).contains("leaked") {
        "leaks"
    } else if r.status.success() {
        "no leak"
    } else {
        "failed"
    }
    .to_string();
    Ok(RefleakRound {
        ours_s,
        ours_verdict,
        regrtest_s,
        regrtest_verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(value: &str) -> Table {
        let mut t = Table::default();
        t.row("m", value, "n");
        t
    }

    /// `bench --real` puts its table in results.md as a section; the full suite's later write
    /// keeps it, and a second `--real` run replaces it (never two copies).
    #[test]
    fn the_real_table_is_a_section_of_results_md_that_every_write_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let read = || fs::read_to_string(dir.path().join("results.md")).unwrap();
        table("full-1").write(dir.path(), false).unwrap();
        table("real-1").write_as(dir.path(), "real", false).unwrap();
        let text = read();
        assert!(text.contains("full-1") && text.contains("real-1"), "{text}");
        assert!(text.contains("## `cargo xtask bench --real`"), "{text}");
        table("real-2").write_as(dir.path(), "real", false).unwrap();
        table("full-2").write(dir.path(), false).unwrap();
        let text = read();
        assert!(text.contains("full-2") && text.contains("real-2"), "{text}");
        assert!(
            !text.contains("full-1") && !text.contains("real-1"),
            "{text}"
        );
        assert_eq!(
            text.matches("<!-- end bench --real -->").count(),
            1,
            "{text}"
        );
        let real = fs::read_to_string(dir.path().join("real.md")).unwrap();
        assert!(
            real.contains("real-2") && !real.contains("full-2"),
            "{real}"
        );
        // Another suite's file does not touch results.md.
        table("trust").write_as(dir.path(), "trust", false).unwrap();
        assert!(!read().contains("trust"));
    }

    #[test]
    fn final_stats_come_from_libfuzzer_s_last_lines() {
        // The tail of a real 30-s capi_sequences campaign log.
        let log = "#19000\tREDUCE cov: 12688 ft: 51700 corp: 1533/356Kb lim: 384 exec/s: 616 rss: 573Mb\n\
                   #19116\tDONE   cov: 12690 ft: 51729 corp: 1534/356Kb lim: 384 exec/s: 616 rss: 573Mb\n\
                   stat::number_of_executed_units: 19116\n\
                   stat::average_exec_per_sec:     616\n\
                   stat::new_units_added:          1846\n";
        let s = final_stats(log).unwrap();
        assert_eq!(s.exec_per_sec, 616.0);
        assert_eq!(s.cov, 12690);
        assert!(final_stats("#1\tINITED cov: 3\n").is_none());
    }

    #[test]
    fn coverage_at_a_checkpoint_is_the_last_status_line_read_then() {
        assert_eq!(cov_so_far("INFO: Seed: 11\n"), 0);
        let early = "#2\tINITED cov: 3 ft: 3 corp: 1/1b\n#8\tNEW    cov: 120 ft: 130 corp: 2/9b\n";
        assert_eq!(cov_so_far(early), 120);
        // A log read while a line is half written still counts the whole numbers before it.
        assert_eq!(cov_so_far(&format!("{early}#16\tNEW    cov: 1")), 120);
        // Checkpoints: the first read after 0 s, the second once the run says it ended (a
        // stop at a finding), without waiting the 3,600 s.
        let reads = std::cell::Cell::new(0);
        let started = Instant::now();
        let covs = sample_cov(
            started,
            &[0, 3600],
            || reads.get() >= 1,
            || {
                reads.set(reads.get() + 1);
                if reads.get() == 1 {
                    early.to_string()
                } else {
                    format!("{early}#64\tDONE   cov: 400\n")
                }
            },
        );
        assert_eq!(covs, vec![120, 400]);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn padding_keeps_the_core_whole_in_200_ops() {
        for (_, core) in minimize_cases() {
            let ops = padded(&core);
            assert_eq!(ops.len(), 200);
            assert_eq!(&ops[100..100 + core.len()], &core[..]);
        }
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
        let (ratios, cell) = slowdown(&[50.0, 40.0, 0.0], &[100.0, 60.0, 2.0]);
        assert_eq!(ratios, [2.0, 1.5, 2.0]);
        assert_eq!(cell, "40 vs 60 exec/s (2.00x slower)");
    }

    #[test]
    fn the_first_suite_flag_wins() {
        assert_eq!(
            Suite::from_flags(true, true, true, true, false),
            Suite::Trust
        );
        assert_eq!(
            Suite::from_flags(false, true, true, true, false),
            Suite::Api
        );
        assert_eq!(
            Suite::from_flags(false, false, false, true, true),
            Suite::GcCost
        );
        assert_eq!(
            Suite::from_flags(false, false, true, true, true),
            Suite::Failalloc
        );
        assert_eq!(
            Suite::from_flags(false, false, false, false, true),
            Suite::Full { zoo: true }
        );
    }

    #[test]
    fn the_table_writes_markdown_and_json() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Table::default();
        t.row("exec/s", "600", "runs [600.0]");
        t.row("bucket", "1", "use-after-free|f");
        t.data("exec_per_sec", serde_json::json!([600.0]));
        let md = t.write(tmp.path(), true).unwrap();
        assert!(md.contains("`cargo xtask bench` --quick"));
        assert!(md.contains("| exec/s | 600 | runs [600.0] |\n"));
        assert!(md.ends_with("| bucket | 1 | use-after-free\\|f |\n"));
        let json: Value =
            serde_json::from_slice(&fs::read(tmp.path().join("results.json")).unwrap()).unwrap();
        assert_eq!(json["exec_per_sec"][0], 600.0);
    }
}
