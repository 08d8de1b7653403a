//! fuzz, fuzz-ext, ext build, triage: build a fuzz target against a variant, run a campaign,
//! and turn its crash artifacts into named, bucketed findings.

use std::fs;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capisan::campaign::{self, CampaignSpec};
use capisan::env::HarnessEnv;
use capisan::findings::read_known;
use capisan_build::{extension, fuzzbin, Cache, Manifest, Variant};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::CacheArgs;

#[derive(Args, Clone)]
pub struct FuzzArgs {
    /// Fuzz target (a file under fuzz/fuzz_targets/).
    #[arg(default_value = "capi_sequences")]
    pub target: String,
    /// Campaign length in seconds.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Variant to fuzz against: asan (libFuzzer + ASan) or valgrind (libFuzzer under memcheck).
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    #[command(flatten)]
    pub ext: ExtArgs,
    /// Campaign directory (corpus, artifacts, findings, log); default
    /// target/capisan/<target>[-<module>]-<variant>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// libFuzzer seed, for repeatable campaigns; default: libFuzzer picks one.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Turn the property checks off (to measure their cost).
    #[arg(long)]
    pub no_checks: bool,
    /// Run PyGC_Collect after every input.
    #[arg(long)]
    pub collect: bool,
    /// Print findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Start from an empty corpus, without corpora/<target>/ (to measure time-to-detect).
    #[arg(long)]
    pub no_seeds: bool,
    /// Parallel fuzzing processes (libFuzzer fork mode, shared corpus). With more than one job
    /// the campaign also keeps going after a memory-corruption crash; leaks, exception-state
    /// and GC findings never stop it.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// File of known bucket signatures (one a line, `#` comments): their hits are counted, not
    /// reported; default: none.
    #[arg(long)]
    pub known: Option<PathBuf>,
    /// End at the first finding of any kind, in one process (quick checks, time-to-detect);
    /// default: keep going across findings and crashes (libFuzzer fork mode), so one campaign
    /// collects every bucket.
    #[arg(long)]
    pub stop_at_first_finding: bool,
    /// Allocation-failure injection: inputs arm failures of the Nth allocation (or N..) inside
    /// extension calls often, so error paths run and every check applies there (see FailNext).
    #[arg(long)]
    pub fail_alloc: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Extra libFuzzer arguments, after `--`.
    #[arg(last = true)]
    pub libfuzzer: Vec<String>,
}

/// The extension under test.
#[derive(Args, Clone, Default, Serialize, Deserialize)]
pub struct ExtArgs {
    /// Importable name of the C extension to fuzz (its public callables become CallExt ops);
    /// default: none, the C API alone is fuzzed.
    #[arg(long)]
    pub ext: Option<String>,
    /// Directory holding the built extension (see `cargo xtask ext-build`); default: none, the
    /// module must be importable from the variant's own sys.path.
    #[arg(long)]
    pub ext_path: Option<PathBuf>,
    /// Only these callables of the extension (comma-separated); default: every public callable.
    #[arg(long, value_delimiter = ',')]
    pub funcs: Vec<String>,
    /// PYTHONMALLOC for the campaign (default: the variant's manifest setting).
    #[arg(long)]
    pub pythonmalloc: Option<String>,
}

#[derive(Args, Clone)]
pub struct FuzzExtArgs {
    /// Importable module name of the extension.
    pub module: String,
    /// Directory holding the built extension.
    #[arg(long)]
    pub ext_path: PathBuf,
    /// Only these callables (comma-separated); default: every public callable of the module.
    #[arg(long, value_delimiter = ',')]
    pub funcs: Vec<String>,
    /// Campaign length in seconds.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Variant to fuzz against: asan (libFuzzer + ASan) or valgrind (libFuzzer under memcheck).
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// Campaign directory (corpus, artifacts, log, campaign.json); default
    /// target/capisan/capi_sequences-<module>-<variant>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// libFuzzer seed, for repeatable campaigns; default: libFuzzer picks one.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the findings as JSON instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// PYTHONMALLOC for the campaign, e.g. malloc_debug to add CPython's allocator API checks
    /// (catches PyMem/PyObject mismatches and small overruns; default: the variant's setting).
    #[arg(long)]
    pub pythonmalloc: Option<String>,
    /// Start from an empty corpus, without corpora/capi_sequences/.
    #[arg(long)]
    pub no_seeds: bool,
    /// Parallel fuzzing processes (libFuzzer fork mode).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// File of known bucket signatures (one a line, `#` comments): their hits are counted, not
    /// reported; default: none.
    #[arg(long)]
    pub known: Option<PathBuf>,
    /// End at the first finding of any kind, in one process (quick checks, time-to-detect);
    /// default: keep going across findings and crashes (libFuzzer fork mode).
    #[arg(long)]
    pub stop_at_first_finding: bool,
    /// Allocation-failure injection: inputs arm failures of the Nth allocation (or N..) inside
    /// extension calls often, so error paths run and every check applies there (see FailNext).
    #[arg(long)]
    pub fail_alloc: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Clone)]
pub struct ExtBuildArgs {
    /// A C file, or a directory of C files (module name = file stem / directory name).
    pub path: PathBuf,
    /// Variant to compile against; the extension gets that variant's sanitizer and coverage flags.
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// Output directory (default: <cache>/ext/<variant>/<module>).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Clone)]
pub struct FuzzBuildArgs {
    /// Fuzz target to build.
    #[arg(default_value = "capi_sequences")]
    pub target: String,
    /// Variant whose interpreter the fuzzer links and whose standard library it ships.
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// Copy the fuzzer here, with the standard library it needs in `<target>.python/`, so it runs
    /// without the capisan cache (ClusterFuzzLite / OSS-Fuzz `$OUT`).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Build a fuzz target and make it self-contained in `out`.
pub fn fuzz_build(args: FuzzBuildArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache.cache.clone());
    let m = Manifest::find(&cache, args.variant, None)?;
    let spinner = spinner(&args.target, args.variant);
    let bundle = fuzzbin::bundle(&workspace_root(), &args.target, &m, &args.out);
    spinner.finish_and_clear();
    let bundle = bundle?;
    println!(
        "built {} (+ {})",
        bundle.fuzzer.display(),
        bundle.home.display()
    );
    Ok(())
}

#[derive(Args, Clone)]
pub struct TriageArgs {
    /// Campaign directory written by `cargo xtask fuzz`.
    pub dir: PathBuf,
    /// Print the buckets as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// File of known bucket signatures (one a line, `#` comments): exit 1 only if a bucket is
    /// not in it (nightly fuzzing fails on new bugs, not on known ones); without it, exit 0
    /// whatever was found.
    #[arg(long)]
    pub known: Option<PathBuf>,
}

use capisan::campaign::Bucket;

/// The checkout: the directory holding `fuzz/`, `corpora/` and `target/`.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Build a fuzz target against a variant (a spinner while cargo runs); returns the binary.
pub fn build_target(target: &str, variant: Variant, manifest: &Manifest) -> Result<PathBuf> {
    let spinner = spinner(target, variant);
    let bin = fuzzbin::build_fuzz_binary(&workspace_root(), target, manifest);
    spinner.finish_and_clear();
    Ok(bin?)
}

/// A spinner for the cargo build of a fuzz binary (hidden when stderr is not a terminal).
fn spinner(target: &str, variant: Variant) -> ProgressBar {
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "building fuzz target {target} against the {variant} variant"
    ));
    spinner.enable_steady_tick(Duration::from_millis(150));
    spinner
}

/// Run a campaign (build the target, check the extension imports, fuzz, triage) and print its
/// findings summary. Returns the buckets.
pub fn fuzz(args: FuzzArgs) -> Result<Vec<Bucket>> {
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, args.variant, None)?;
    let binary = build_target(&args.target, args.variant, &manifest)?;
    let ext_path = args
        .ext
        .ext_path
        .as_ref()
        .map(|p| fs::canonicalize(p).unwrap_or(p.clone()));
    let harness = HarnessEnv {
        ext: args.ext.ext.clone(),
        ext_path,
        ext_funcs: args.ext.funcs.clone(),
        checks: !args.no_checks,
        totals: !args.no_checks,
        collect: args.collect,
        fail_alloc: if args.fail_alloc {
            capisan::env::FailAlloc::On
        } else {
            capisan::env::FailAlloc::Off
        },
        known: args
            .known
            .as_ref()
            .map(|p| fs::canonicalize(p).unwrap_or(p.clone())),
        ..HarnessEnv::default()
    };
    let dir = args.out.clone().unwrap_or_else(|| {
        campaign::default_dir(
            &workspace_root(),
            &args.target,
            args.ext.ext.as_deref(),
            args.variant,
        )
    });
    let seeds = workspace_root().join("corpora").join(&args.target);
    let spec = CampaignSpec {
        target: args.target.clone(),
        manifest,
        binary,
        dir,
        harness,
        pythonmalloc: args.ext.pythonmalloc.clone(),
        seconds: args.time,
        seed: args.seed,
        jobs: args.jobs,
        stop_at_first_finding: args.stop_at_first_finding,
        seeds: if args.no_seeds { vec![] } else { vec![seeds] },
        libfuzzer: args.libfuzzer.clone(),
    };
    let bar = status_bar(&args.target, args.time);
    let outcome = campaign::run(&spec, |st| {
        let line = format!(
            "{:>4}s  inputs {}  exec/s {}  cov {}  corpus {}  buckets {}",
            st.elapsed.as_secs(),
            st.execs,
            st.exec_per_sec,
            st.cov,
            st.corpus,
            st.buckets
        );
        match &bar {
            Some(b) => {
                b.set_position(st.elapsed.as_secs().min(args.time));
                b.set_message(line);
            }
            None => eprintln!("fuzz {}: {line}", args.target),
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.buckets)?);
    } else {
        print!("{}", campaign::summary_text(&outcome));
    }
    Ok(outcome.buckets)
}

/// A progress bar on a terminal; `None` (plain status lines) otherwise.
fn status_bar(target: &str, seconds: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(seconds).with_style(
        ProgressStyle::with_template(
            "fuzz {prefix} [{elapsed_precise}] {bar:30.green/white} {wide_msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(target.to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    Some(bar)
}

/// Triage; `Ok(false)` when a bucket is not in `--known` (or any bucket, without it).
pub fn triage(args: TriageArgs) -> Result<bool> {
    let buckets = campaign::triage_dir(&args.dir)?;
    fs::write(
        args.dir.join("buckets.json"),
        serde_json::to_vec_pretty(&buckets)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&buckets)?);
    } else {
        println!(
            "== capisan findings: {} bucket(s) in {} ==",
            buckets.len(),
            args.dir.display()
        );
        print!("{}", campaign::buckets_text(&buckets));
    }
    let known = match &args.known {
        Some(k) => {
            read_known(&fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?)
        }
        None => Vec::new(),
    };
    let new: Vec<&Bucket> = buckets
        .iter()
        .filter(|b| !known.iter().any(|k| k.0 == b.signature))
        .collect();
    if args.known.is_none() {
        return Ok(true);
    }
    for b in &new {
        eprintln!("NEW bucket: {}", b.signature);
    }
    Ok(new.is_empty())
}

pub fn fuzz_ext(args: FuzzExtArgs) -> Result<()> {
    fuzz(FuzzArgs {
        target: "capi_sequences".into(),
        time: args.time,
        variant: args.variant,
        ext: ExtArgs {
            ext: Some(args.module.clone()),
            ext_path: Some(args.ext_path),
            funcs: args.funcs,
            pythonmalloc: args.pythonmalloc,
        },
        out: args.out,
        seed: args.seed,
        no_checks: false,
        collect: false,
        json: args.json,
        no_seeds: args.no_seeds,
        jobs: args.jobs,
        known: args.known,
        stop_at_first_finding: args.stop_at_first_finding,
        fail_alloc: args.fail_alloc,
        cache: args.cache,
        libfuzzer: Vec::new(),
    })
    .map(|_| ())
}

/// Compile a C extension against a variant with the variant's flags (ASan + coverage for asan).
pub fn ext_build(args: ExtBuildArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache.cache.clone());
    let m = Manifest::find(&cache, args.variant, None)?;
    let built = extension::build_extension(&cache, &m, &args.path, args.out.as_deref())?;
    println!("built {}", built.so.display());
    println!(
        "fuzz it with: cargo xtask fuzz-ext {} --ext-path {} --variant {}",
        built.module,
        built.dir.display(),
        args.variant
    );
    Ok(())
}
