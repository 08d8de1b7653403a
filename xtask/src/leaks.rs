//! refleak, tracemalloc-diff, lsan, valgrind, valgrind-supp: the commands over
//! [`capisan::leaks`], where the engines and rules live. Each is `args -> one library call ->
//! print -> exit status` (`Ok(false)` when the target leaked).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capisan::detect::Finding;
use capisan::leaks::{self, suppressions, Target, ToolReport};
use capisan_build::{Cache, Manifest, Variant};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;

use crate::CacheArgs;

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
        let target = match (&self.target, &self.code) {
            (_, Some(code)) => Target::Code(code.clone()),
            (Some(t), None) => Target::parse(t)?,
            (None, None) => anyhow::bail!("give a TARGET or -c CODE"),
        };
        Ok((target, leaks::ext_dirs(&self.ext_path)?))
    }
}

/// The newest build of `variant` in the cache.
fn manifest(cache: &CacheArgs, variant: Variant) -> Result<(Cache, Manifest)> {
    let cache = Cache::resolve(cache.cache.clone());
    let manifest = Manifest::find(&cache, variant, None)?;
    Ok((cache, manifest))
}

/// Run `f` under a spinner saying `message`.
fn spinning<T>(message: String, f: impl FnOnce() -> T) -> T {
    let s = ProgressBar::new_spinner().with_message(message);
    s.enable_steady_tick(Duration::from_millis(150));
    let out = f();
    s.finish_and_clear();
    out
}

// ---------------------------------------------------------------------------------------------
// refleak

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
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `cargo xtask refleak`: returns `Ok(false)` when the target leaked or failed.
pub fn refleak(args: RefleakArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (warmups, runs) = leaks::parse_huntrleaks(&args.huntrleaks)?;
    let (_, manifest) = manifest(&args.cache, args.variant)?;
    let opts = leaks::RefleakOptions {
        warmups,
        runs,
        use_resources: args.use_resources,
    };
    let report = spinning(
        format!(
            "refleak {}: {warmups} warmups + {runs} runs on {} {}",
            target.label(),
            manifest.variant,
            manifest.version
        ),
        || leaks::refleak(&manifest, &target, &ext, &opts),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_refleak(&report);
    }
    Ok(report.passed())
}

fn print_refleak(r: &leaks::RefleakReport) {
    for c in &r.counters {
        if c.leaked || c.deltas.iter().any(|&d| d != 0) {
            // regrtest's own wording, so the two can be compared line by line.
            let fine = if c.leaked { "" } else { " (this is fine)" };
            println!(
                "{} leaked {:?} {}, sum={}{fine}",
                r.target, c.deltas, c.item, c.sum
            );
        }
    }
    if let Some(e) = &r.first_error {
        println!(
            "{} failed in {} of {} runs; first failure:\n{}",
            r.target,
            r.failed_runs,
            r.warmups + r.runs,
            e.trim_end()
        );
    }
    let leaked: Vec<&str> = r
        .counters
        .iter()
        .filter(|c| c.leaked)
        .map(|c| c.item)
        .collect();
    let how = format!(
        "-R {}:{} on {} {}, {:.1} s",
        r.warmups, r.runs, r.variant, r.version, r.seconds
    );
    if leaked.is_empty() {
        println!("refleak: {}: no leaks ({how})", r.target);
    } else {
        println!("refleak: {} LEAKED {} ({how})", r.target, leaked.join(", "));
    }
}

// ---------------------------------------------------------------------------------------------
// tracemalloc-diff

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
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `cargo xtask tracemalloc-diff`: returns `Ok(false)` when a traceback grows by at least one
/// block per iteration.
pub fn tracemalloc_diff(args: TracemallocArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (_, manifest) = manifest(&args.cache, args.variant)?;
    let opts = leaks::TracemallocOptions {
        frames: args.frames,
        top: args.top,
        iterations: args.iterations,
    };
    let report = spinning(
        format!(
            "tracemalloc-diff {}: 1 warmup + {} iterations",
            target.label(),
            args.iterations
        ),
        || leaks::tracemalloc_diff(&manifest, &target, &ext, &opts),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report.linear == 0);
    }
    println!(
        "tracemalloc-diff {}: 1 warmup + {} iterations, {} frames, {:.1} s",
        report.target, report.iterations, report.frames, report.seconds
    );
    let n = f64::from(report.iterations);
    for (i, e) in report.entries.iter().enumerate() {
        println!(
            "#{} {:+} B in {:+} blocks ({:+.1} B, {:+.2} blocks per iteration; now {} B in {} blocks)",
            i + 1,
            e.size_diff,
            e.count_diff,
            e.size_diff as f64 / n,
            e.count_diff as f64 / n,
            e.size,
            e.count
        );
        for f in &e.traceback {
            println!("    {}:{}", f.file, f.line);
        }
    }
    if report.linear == 0 {
        println!(
            "tracemalloc-diff: no traceback grows by a block per iteration ({} growing at all)",
            report.entries.len()
        );
    } else {
        println!(
            "tracemalloc-diff: {} traceback(s) grow by at least one block per iteration",
            report.linear
        );
    }
    Ok(report.linear == 0)
}

// ---------------------------------------------------------------------------------------------
// lsan, valgrind

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
    #[command(flatten)]
    pub cache: CacheArgs,
}

fn print_findings(tool: &str, r: &ToolReport) {
    for f in &r.findings {
        let top = f
            .top_frame()
            .map(|fr| match (&fr.file, fr.line) {
                (Some(file), Some(line)) => format!("{} ({file}:{line})", fr.function),
                _ => fr.function.clone(),
            })
            .unwrap_or_else(|| "?".into());
        println!("{}: {} in {top}: {}", f.class, tool_name(f), f.summary);
    }
    println!(
        "{tool}: {} finding(s) for {} on {} {} ({:.1} s)",
        r.findings.len(),
        r.target,
        r.variant,
        r.version,
        r.seconds
    );
}

/// The tool as its serde name ("lsan", "valgrind").
fn tool_name(f: &Finding) -> String {
    serde_json::to_value(f.tool)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn print_tool_report(tool: &str, json: bool, report: &ToolReport) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_findings(tool, report);
    }
    Ok(report.findings.is_empty())
}

/// `cargo xtask lsan`: returns `Ok(false)` when the target leaks.
pub fn lsan(args: LsanArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (cache, manifest) = manifest(&args.cache, Variant::Asan)?;
    let committed = leaks::lsan_suppressions(&manifest.version);
    let opts = leaks::LsanOptions {
        committed: vec![committed.clone()],
        update_committed: args.update_suppressions.then_some(committed),
    };
    let report = spinning(
        format!("lsan: {} on asan {}", target.label(), manifest.version),
        || leaks::lsan(&cache, &manifest, &target, &ext, &opts),
    )?;
    print_tool_report("lsan", args.json, &report)
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
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `cargo xtask valgrind`: returns `Ok(false)` when memcheck reports something.
pub fn valgrind(args: ValgrindArgs) -> Result<bool> {
    let (target, ext) = args.target.resolve()?;
    let (_, manifest) = manifest(&args.cache, Variant::Valgrind)?;
    let own = leaks::valgrind_suppressions(&manifest.version);
    let mut supps: Vec<PathBuf> = Vec::new();
    if own.exists() && !args.no_capisan_supp {
        supps.push(own);
    }
    for s in &args.supp {
        supps.push(
            std::fs::canonicalize(s)
                .with_context(|| format!("--supp {} does not exist", s.display()))?,
        );
    }
    let opts = leaks::ValgrindOptions {
        supps,
        track_origins: args.track_origins,
    };
    let report = spinning(
        format!(
            "valgrind: {} under memcheck on valgrind {} (slow)",
            target.label(),
            manifest.version
        ),
        || leaks::valgrind(&manifest, &target, &ext, &opts),
    )?;
    print_tool_report("valgrind", args.json, &report)
}

// ---------------------------------------------------------------------------------------------
// valgrind-supp

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
    #[command(flatten)]
    pub cache: CacheArgs,
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
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `cargo xtask valgrind-supp`.
pub fn valgrind_supp(args: ValgrindSuppArgs) -> Result<()> {
    match args.action {
        SuppAction::Gen(a) => supp_gen(a),
        SuppAction::Merge(a) => supp_merge(a),
        SuppAction::Minimize(a) => supp_minimize(a),
    }
}

fn supp_gen(args: SuppGenArgs) -> Result<()> {
    let (target, ext) = args.target.resolve()?;
    let (_, manifest) = manifest(&args.cache, Variant::Valgrind)?;
    let g = spinning(
        format!("memcheck: baseline {} (slow)", target.label()),
        || suppressions::generate(&manifest, &target, &ext, &args.out),
    )?;
    println!(
        "valgrind-supp gen: {} error(s) -> {} suppression(s) in {}",
        g.baseline_errors,
        g.entries.len(),
        args.out.display()
    );
    if g.own_errors > 0 {
        println!(
            "valgrind-supp gen: {} error(s) in the target's own code left unsuppressed (they are bugs to fix)",
            g.own_errors
        );
    }
    Ok(())
}

fn supp_merge(args: SuppMergeArgs) -> Result<()> {
    let m = suppressions::merge(&args.files, &args.out)?;
    println!(
        "valgrind-supp merge: {} suppression(s) -> {} ({} duplicate(s) dropped) in {}",
        m.read,
        m.entries.len(),
        m.read - m.entries.len(),
        args.out.display()
    );
    Ok(())
}

fn supp_minimize(args: SuppMinimizeArgs) -> Result<()> {
    let (target, ext) = args.target.resolve()?;
    let protect: Vec<Target> = args
        .protect
        .iter()
        .map(|p| Target::parse(p))
        .collect::<Result<_, _>>()?;
    let (_, manifest) = manifest(&args.cache, Variant::Valgrind)?;
    let m = spinning(
        format!(
            "memcheck: minimizing {} against {} (several runs, slow)",
            args.file.display(),
            target.label()
        ),
        || suppressions::minimize(&manifest, &args.file, &target, &protect, &ext, &args.out),
    )?;
    for w in &m.warnings {
        eprintln!("valgrind-supp minimize: warning: {w}");
    }
    println!(
        "valgrind-supp minimize: {} -> {} suppression(s) ({} unused by the baseline), \
         {} -> {} frame line(s); verified by re-running: the {} baseline \
         error(s) FILE suppressed stay suppressed, {} protected error(s) stay reported; wrote {}",
        m.before,
        m.entries.len(),
        m.unused,
        m.frames_before,
        m.frames_after,
        m.covered,
        m.protected,
        args.out.display()
    );
    Ok(())
}
