//! fuzz, fuzz-ext, ext build, triage, report: build a fuzz target against a variant, run a
//! campaign (`capisan::campaign`), turn its crash artifacts into named, bucketed findings, and
//! write its static HTML page (`capisan::report`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use capisan::campaign::{self, Bucket, CampaignRequest};
use capisan_build::{extension, fuzzbin, Manifest, Variant};
use clap::Args;
use indicatif::ProgressBar;

use crate::ui::{self, emit, spinning};
use crate::CacheArgs;

#[derive(Args, Clone)]
pub struct FuzzArgs {
    /// Fuzz target (a file under fuzz/fuzz_targets/).
    #[arg(default_value = "capi_sequences")]
    pub target: String,
    #[command(flatten)]
    pub ext: ExtArgs,
    #[command(flatten)]
    pub run: CampaignArgs,
    /// Turn the property checks off (to measure their cost).
    #[arg(long)]
    pub no_checks: bool,
    /// Run PyGC_Collect after every input.
    #[arg(long)]
    pub collect: bool,
    /// Extra libFuzzer arguments, after `--`.
    #[arg(last = true)]
    pub libfuzzer: Vec<String>,
}

/// What every campaign command (fuzz, fuzz-ext, fuzz-pkg) takes.
#[derive(Args, Clone)]
pub struct CampaignArgs {
    /// Campaign length in seconds (per module, for fuzz-pkg).
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Also end the campaign once it has run this many inputs (checked between fork-mode
    /// jobs, so it may run a few more): "at least N inputs, at most --time seconds".
    #[arg(long, value_name = "N")]
    pub runs: Option<u64>,
    /// Variant to fuzz against: asan (libFuzzer + ASan) or valgrind (libFuzzer under memcheck).
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// Campaign directory (corpus, artifacts, findings, log); default
    /// target/capisan/<target>[-<module>]-<variant> (fuzz-pkg: one subdirectory per module).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// libFuzzer seed, for repeatable campaigns; default: libFuzzer picks one.
    #[arg(long)]
    pub seed: Option<u64>,
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
    /// File of known bucket signatures (one a line, `#` comments, `*` matches any text): their
    /// hits are counted, not reported; default: none.
    #[arg(long)]
    pub known: Option<PathBuf>,
    /// End at the first finding of any kind, in one process (quick checks, time-to-detect);
    /// default: keep going across findings and crashes (libFuzzer fork mode), so one campaign
    /// collects every bucket.
    #[arg(long)]
    pub stop_at_first_finding: bool,
    /// Spec file (capisan.toml): per module, `only` / `skip` callables and argument kinds by
    /// position (`[modules."pkg._mod".args] f = ["int", "str"]`); see the README. Discovery
    /// works without one.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Allocation-failure injection: inputs arm failures of the Nth allocation (or N..) inside
    /// extension calls often, so error paths run and every check applies there (see FailNext).
    #[arg(long)]
    pub fail_alloc: bool,
}

impl CampaignArgs {
    /// A request for `target` with these options.
    pub fn request(&self, target: &str) -> CampaignRequest {
        let mut r = CampaignRequest::new(target, self.variant, self.time);
        (r.out, r.seed, r.seed_corpus) = (self.out.clone(), self.seed, !self.no_seeds);
        (r.jobs, r.known, r.fail_alloc) = (self.jobs, self.known.clone(), self.fail_alloc);
        r.stop_at_first_finding = self.stop_at_first_finding;
        r.libfuzzer.extend(self.runs.map(|n| format!("-runs={n}")));
        r.spec_file = self.spec.clone();
        r
    }
}

/// The extension under test.
#[derive(Args, Clone, Default)]
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
    /// Importable module name of the extension (dotted names too).
    pub module: String,
    /// Directory holding the built extension (or a venv's site-packages).
    #[arg(long, required_unless_present = "venv")]
    pub ext_path: Option<PathBuf>,
    /// A venv the extension is installed in (its site-packages becomes the ext path).
    #[arg(long, conflicts_with = "ext_path")]
    pub venv: Option<PathBuf>,
    /// Only these callables (comma-separated); default: every public callable of the module.
    #[arg(long, value_delimiter = ',')]
    pub funcs: Vec<String>,
    /// PYTHONMALLOC for the campaign, e.g. malloc_debug to add CPython's allocator API checks
    /// (catches PyMem/PyObject mismatches and small overruns; default: the variant's setting).
    #[arg(long)]
    pub pythonmalloc: Option<String>,
    #[command(flatten)]
    pub run: CampaignArgs,
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
}

/// Build a fuzz target and make it self-contained in `out`.
pub fn fuzz_build(args: FuzzBuildArgs) -> Result<()> {
    let (_, m) = crate::cache().manifest(args.variant)?;
    let bundle = spinning(building(&args.target, args.variant), || {
        fuzzbin::bundle(&workspace_root(), &args.target, &m, &args.out)
    })?;
    let (fuzzer, home) = (bundle.fuzzer.display(), bundle.home.display());
    println!("built {fuzzer} (+ {home})");
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

/// The checkout: the directory holding `fuzz/`, `corpora/` and `target/`.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// What the spinner says while cargo builds a fuzz binary.
fn building(target: &str, variant: Variant) -> String {
    format!("building fuzz target {target} against the {variant} variant")
}

/// Build a fuzz target against a variant (a spinner while cargo runs); returns the binary.
pub fn build_target(target: &str, variant: Variant, manifest: &Manifest) -> Result<PathBuf> {
    Ok(spinning(building(target, variant), || {
        fuzzbin::build_fuzz_binary(&workspace_root(), target, manifest)
    })?)
}

impl FuzzArgs {
    fn request(&self) -> CampaignRequest {
        let mut r = self.run.request(&self.target);
        (r.ext, r.ext_path) = (self.ext.ext.clone(), self.ext.ext_path.clone());
        (r.funcs, r.pythonmalloc) = (self.ext.funcs.clone(), self.ext.pythonmalloc.clone());
        (r.checks, r.collect) = (!self.no_checks, self.collect);
        r.libfuzzer.extend(self.libfuzzer.iter().cloned());
        r
    }
}

/// Run a campaign (build the target, check the extension imports, fuzz, triage) and print its
/// findings summary. Returns the buckets.
pub fn fuzz(args: FuzzArgs) -> Result<Vec<Bucket>> {
    run(&args.request(), args.run.json, crate::cache())
}

/// Run the campaign `req` with a progress bar (status lines when stderr is not a terminal).
pub fn run(req: &CampaignRequest, json: bool, cache: &CacheArgs) -> Result<Vec<Bucket>> {
    let (_, manifest) = cache.manifest(req.variant)?;
    let binary = build_target(&req.target, req.variant, &manifest)?;
    let spec = req.spec(&workspace_root(), manifest, binary);
    let bar = status_bar(&req.target, req.seconds);
    let outcome = campaign::run(&spec, |st| match &bar {
        Some(b) => {
            b.set_position(st.elapsed.as_secs().min(req.seconds));
            b.set_message(st.line());
        }
        None => eprintln!("fuzz {}: {}", req.target, st.line()),
    });
    bar.iter().for_each(ProgressBar::finish_and_clear);
    let outcome = outcome?;
    emit(json, &outcome.buckets, || campaign::summary_text(&outcome))?;
    Ok(outcome.buckets)
}

/// A progress bar on a terminal; `None` (plain status lines) otherwise.
fn status_bar(target: &str, seconds: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let template = "fuzz {prefix} [{elapsed_precise}] {bar:30.green/white} {wide_msg}";
    let bar = ui::bar(seconds, ui::style(template), 500);
    bar.set_prefix(target.to_string());
    Some(bar)
}

/// Triage; `Ok(false)` when a bucket is not in `--known` (or any bucket, without it).
pub fn triage(args: TriageArgs) -> Result<bool> {
    let t = campaign::triage_recorded(&args.dir, args.known.as_deref())?;
    emit(args.json, &t.buckets, || t.text())?;
    for s in t.new.iter().flatten() {
        eprintln!("NEW bucket: {s}");
    }
    Ok(t.passed())
}

pub fn fuzz_ext(args: FuzzExtArgs) -> Result<()> {
    let mut r = args.run.request("capi_sequences");
    let site = |v: &PathBuf| capisan_build::package::venv_site_packages(v);
    let path = args
        .ext_path
        .map_or_else(|| site(args.venv.as_ref().unwrap()), Ok);
    (r.ext, r.ext_path, r.funcs) = (
        Some(args.module),
        Some(path.map_err(anyhow::Error::msg)?),
        args.funcs,
    );
    r.pythonmalloc = args.pythonmalloc;
    run(&r, args.run.json, crate::cache()).map(|_| ())
}

/// Compile a C extension against a variant with the variant's flags (ASan + coverage for asan).
pub fn ext_build(args: ExtBuildArgs) -> Result<()> {
    let (cache, m) = crate::cache().manifest(args.variant)?;
    let built = extension::build_extension(&cache, &m, &args.path, args.out.as_deref())?;
    print!("{}", built.text(&m));
    Ok(())
}

#[derive(Args)]
pub struct ReportArgs {
    /// Campaign directory written by `cargo xtask fuzz` / `fuzz-ext`.
    pub campaign: PathBuf,
    /// Output HTML file.
    #[arg(short, long, default_value = "report.html")]
    pub out: PathBuf,
}

pub fn report_cmd(args: ReportArgs) -> Result<()> {
    capisan::report::render(&args.campaign, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
