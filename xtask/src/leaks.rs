//! refleak, tracemalloc-diff, lsan, valgrind, valgrind-supp: the commands over
//! [`capisan::leaks`], where the engines, rules and report texts live. Each is `args -> one
//! library call -> print -> exit status` (`Ok(false)` when the target leaked).

use std::path::PathBuf;

use anyhow::Result;
use capisan::leaks::{self, suppressions, Target, ValgrindOptions};
use capisan_build::Variant;
use clap::{Args, Subcommand};

use crate::ui::{emit, spinning};

/// What to run, shared by every leak command.
#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// A Python script (`path.py`), `module:function` (module importable from the current
    /// directory or --ext-path), or a CPython test name (`test_json`, from the variant's `test`
    /// package, run with unittest).
    #[arg(required_unless_present = "code")]
    pub target: Option<String>,
    /// Python source to run instead of TARGET (like `python -c`).
    #[arg(short = 'c', long, conflicts_with = "target")]
    pub code: Option<String>,
    /// Directory prepended to PYTHONPATH (a built extension from `ext-build`, helper modules);
    /// repeatable. Native frames from extensions found here are the target's own code.
    #[arg(long)]
    pub ext_path: Vec<PathBuf>,
}

impl TargetArgs {
    /// The parsed target and its canonical extension directories.
    fn resolve(&self) -> Result<(Target, Vec<PathBuf>)> {
        let (t, c) = (self.target.as_deref(), self.code.as_deref());
        Ok(Target::with_ext(t, c, &self.ext_path)?)
    }
}

#[derive(Args, Clone, Debug)]
pub struct RefleakArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// WARMUPS:RUNS, as regrtest's -R (e.g. 3:3).
    #[arg(short = 'R', long = "huntrleaks", default_value = "3:3")]
    pub huntrleaks: String,
    /// Test resources to enable for a CPython test target, as regrtest's -u (e.g. cpu,network);
    /// none by default, like regrtest.
    #[arg(short = 'u', long = "use", value_delimiter = ',')]
    pub use_resources: Vec<String>,
    /// Variant to run on; it must be a debug build (pydebug, asan and valgrind all are).
    #[arg(long, default_value = "pydebug")]
    pub variant: Variant,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cargo xtask refleak`: returns `Ok(false)` when the target leaked or failed.
pub fn refleak(args: RefleakArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let opts = leaks::RefleakOptions::from_args(&args.huntrleaks, args.use_resources)?;
    let (_, m) = crate::cache().manifest(args.variant)?;
    let (w, r, v) = (opts.warmups, opts.runs, &m.version);
    let what = format!(
        "refleak {}: {w} warmups + {r} runs on {} {v}",
        target.label(),
        m.variant
    );
    let report = spinning(what, || leaks::refleak(&m, &target, &ext, &opts))?;
    emit(args.json, &report, || report.text())?;
    Ok(report.passed())
}

#[derive(Args, Clone, Debug)]
pub struct TracemallocArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Frames tracemalloc keeps per allocation.
    #[arg(long, default_value_t = 25)]
    pub frames: u32,
    /// How many growing tracebacks to print.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Iterations between the two snapshots (after one warmup iteration).
    #[arg(short = 'n', long = "iterations", default_value_t = 10)]
    pub iterations: u32,
    /// Variant to run on; any of pydebug, asan, valgrind (tracemalloc works on all).
    #[arg(long, default_value = "pydebug")]
    pub variant: Variant,
    /// Print the growth as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `cargo xtask tracemalloc-diff`: returns `Ok(false)` when a traceback grows by at least one
/// block per iteration.
pub fn tracemalloc_diff(args: TracemallocArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (_, m) = crate::cache().manifest(args.variant)?;
    let (frames, top, iterations) = (args.frames, args.top, args.iterations);
    let opts = leaks::TracemallocOptions {
        frames,
        top,
        iterations,
    };
    let what = format!(
        "tracemalloc-diff {}: 1 warmup + {iterations} iterations",
        target.label()
    );
    let report = spinning(what, || leaks::tracemalloc_diff(&m, &target, &ext, &opts))?;
    emit(args.json, &report, || report.text())?;
    Ok(report.passed())
}

#[derive(Args, Clone, Debug)]
pub struct LsanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the leaks as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also rewrite the committed suppressions/lsan-<version>.supp with the baseline generated
    /// by this run (off by default: a run only reads it and keeps its baseline in the cache).
    #[arg(long)]
    pub update_suppressions: bool,
}

/// `cargo xtask lsan`: returns `Ok(false)` when the target leaks.
pub fn lsan(args: LsanArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (cache, m) = crate::cache().manifest(Variant::Asan)?;
    let opts = leaks::LsanOptions::committed(&m.version, args.update_suppressions);
    let what = format!("lsan: {} on asan {}", target.label(), m.version);
    let report = spinning(what, || leaks::lsan(&cache, &m, &target, &ext, &opts))?;
    emit(args.json, &report, || report.text("lsan"))?;
    Ok(report.passed())
}

#[derive(Args, Clone, Debug)]
pub struct ValgrindArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// More suppression files (besides CPython's and suppressions/valgrind-<version>.supp).
    #[arg(long)]
    pub supp: Vec<PathBuf>,
    /// Skip capisan's own suppressions/valgrind-<version>.supp.
    #[arg(long)]
    pub no_capisan_supp: bool,
    /// Track where uninitialised values come from (slower, better reports).
    #[arg(long)]
    pub track_origins: bool,
    /// Print the findings as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `cargo xtask valgrind`: returns `Ok(false)` when memcheck reports something.
pub fn valgrind(args: ValgrindArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (_, m) = crate::cache().manifest(Variant::Valgrind)?;
    let own = !args.no_capisan_supp;
    let opts = ValgrindOptions::with_supps(&m.version, own, &args.supp, args.track_origins)?;
    let what = format!(
        "valgrind: {} under memcheck on valgrind {} (slow)",
        target.label(),
        m.version
    );
    let report = spinning(what, || leaks::valgrind(&m, &target, &ext, &opts))?;
    emit(args.json, &report, || report.text("valgrind"))?;
    Ok(report.passed())
}

#[derive(Args, Clone, Debug)]
pub struct ValgrindSuppArgs {
    #[command(subcommand)]
    pub action: SuppAction,
}

#[derive(Subcommand, Clone, Debug)]
pub enum SuppAction {
    /// Run a baseline TARGET under memcheck (--gen-suppressions=all) and write a suppression for
    /// every error it reports, except errors in the target's own code (--ext-path).
    Gen(SuppGenArgs),
    /// Merge suppression files, dropping duplicates (same kind and frames).
    Merge(SuppMergeArgs),
    /// Widen the frames of FILE to `...` / `fun:*` where every error of the baseline TARGET
    /// stays suppressed and no error of a --protect target becomes suppressed; verified by
    /// re-running both.
    Minimize(SuppMinimizeArgs),
}

#[derive(Args, Clone, Debug)]
pub struct SuppGenArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where to write the suppressions.
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct SuppMergeArgs {
    /// Suppression files to merge, in priority order (the first copy of a duplicate is kept).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where to write the merged suppressions (required).
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct SuppMinimizeArgs {
    /// The suppression file to minimize.
    pub file: PathBuf,
    /// The baseline whose errors must all stay suppressed.
    #[command(flatten)]
    pub target: TargetArgs,
    /// A target whose currently reported errors must stay reported (e.g. a planted bug in your
    /// extension); repeatable. Run with the same --ext-path.
    #[arg(long)]
    pub protect: Vec<String>,
    /// Where to write the minimized suppressions (required; may be FILE itself).
    #[arg(short, long)]
    pub out: PathBuf,
}

/// `cargo xtask valgrind-supp`.
pub fn valgrind_supp(args: ValgrindSuppArgs) -> Result<()> {
    let text = match args.action {
        SuppAction::Gen(a) => {
            let (target, ext) = a.target.resolve()?;
            let (_, m) = crate::cache().manifest(Variant::Valgrind)?;
            let what = format!("memcheck: baseline {} (slow)", target.label());
            let g = spinning(what, || suppressions::generate(&m, &target, &ext, &a.out))?;
            g.text(&a.out)
        }
        SuppAction::Merge(a) => suppressions::merge(&a.files, &a.out)?.text(&a.out),
        SuppAction::Minimize(a) => {
            let (target, ext) = a.target.resolve()?;
            let protect = Target::parse_all(&a.protect)?;
            let (_, m) = crate::cache().manifest(Variant::Valgrind)?;
            let what = format!("{} against {}", a.file.display(), target.label());
            let min = spinning(
                format!("memcheck: minimizing {what} (several runs, slow)"),
                || suppressions::minimize(&m, &a.file, &target, &protect, &ext, &a.out),
            )?;
            for w in &min.warnings {
                eprintln!("valgrind-supp minimize: warning: {w}");
            }
            min.text(&a.out)
        }
    };
    print!("{text}");
    Ok(())
}
