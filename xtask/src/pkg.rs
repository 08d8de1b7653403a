//! pkg-build, fuzz-pkg: build a Python package against a variant (capisan_build::package) and
//! fuzz its extension modules with the capi_sequences campaign, one module at a time.

use std::path::PathBuf;

use anyhow::Result;
use capisan::campaign::CampaignRequest;
use capisan_build::package::{self, PackageOutcome, Requirement};
use capisan_build::Variant;
use clap::Args;

use crate::fuzz::{self, workspace_root};
use crate::{ui, CacheArgs};

/// What REQ may be, for both commands' help.
const REQ_HELP: &str = "What to build: a pip requirement resolved on PyPI (`markupsafe==3.0.2`; \
pin the version, the build is cached by this text), a source distribution file (`.tar.gz`, \
`.zip`), or a source directory with pyproject.toml or setup.py. pip builds it from source in a \
venv of the variant's installed python, with the variant's clang and sanitizer flags";

#[derive(Args, Clone)]
pub struct PkgBuildArgs {
    #[arg(help = REQ_HELP)]
    pub req: String,
    /// Variant to build against (the package gets its sanitizer and coverage flags).
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// Print the build record (package.json) instead of the text summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Clone)]
pub struct FuzzPkgArgs {
    #[arg(help = REQ_HELP)]
    pub req: String,
    /// Fuzz only this extension module (dotted name, e.g. markupsafe._speedups); repeatable;
    /// default: every extension module of the package that imports.
    #[arg(long = "module", value_name = "DOTTED")]
    pub modules: Vec<String>,
    /// Campaign length per module, seconds.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Parallel fuzzing processes per campaign (libFuzzer fork mode).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Directory of the campaigns, one subdirectory per module (its dotted name); default
    /// target/capisan/pkg-<requirement>-<variant>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Variant to build against and fuzz on.
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// PYTHONMALLOC for the campaigns (default: the variant's setting).
    #[arg(long)]
    pub pythonmalloc: Option<String>,
    /// Start from an empty corpus, without corpora/capi_sequences/.
    #[arg(long)]
    pub no_seeds: bool,
    /// File of known bucket signatures (one a line, `#` comments): their hits are counted, not
    /// reported; default: none.
    #[arg(long)]
    pub known: Option<PathBuf>,
    /// Allocation-failure injection inside the package's calls (see `fuzz --fail-alloc`).
    #[arg(long)]
    pub fail_alloc: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Build (or find cached) `req` against `variant`, with a progress line per step.
fn build(req: &str, variant: Variant, cache: &CacheArgs) -> Result<PackageOutcome> {
    let (cache, m) = cache.manifest(variant)?;
    let req = Requirement::parse(req)?;
    let style = ui::style("{spinner} [{elapsed_precise}] {wide_msg}");
    let bar = ui::bar(0, style, 200);
    let outcome = package::build_package(&cache, &m, &req, &mut |line| {
        bar.suspend(|| eprintln!("{line}"));
        bar.set_message(line.to_string());
    });
    bar.finish_and_clear();
    Ok(outcome?)
}

pub fn pkg_build(args: PkgBuildArgs) -> Result<()> {
    let outcome = build(&args.req, args.variant, &args.cache)?;
    let (req, variant) = (&args.req, args.variant);
    let next = format!("fuzz it with: cargo xtask fuzz-pkg {req} --variant {variant}\n");
    ui::emit(args.json, outcome.package(), || outcome.text() + &next)
}

pub fn fuzz_pkg(args: FuzzPkgArgs) -> Result<()> {
    let outcome = build(&args.req, args.variant, &args.cache)?;
    print!("{}", outcome.text());
    let p = outcome.package();
    let modules = p.modules_to_fuzz(&args.modules)?;
    let out = args.out.clone();
    let out =
        out.unwrap_or_else(|| package::campaigns_dir(&workspace_root(), &args.req, args.variant));
    let mut r = CampaignRequest::new("capi_sequences", args.variant, args.time);
    (r.ext_path, r.pythonmalloc) = (Some(p.site_packages.clone()), args.pythonmalloc);
    (r.seed_corpus, r.jobs, r.known, r.fail_alloc) =
        (!args.no_seeds, args.jobs, args.known, args.fail_alloc);
    let mut summary = Vec::new();
    for module in &modules {
        println!("== fuzzing {module} for {} s ==", args.time);
        (r.ext, r.out) = (Some(module.clone()), Some(out.join(module)));
        let buckets = fuzz::run(&r, false, &args.cache)?;
        summary.push((module, buckets.len(), out.join(module)));
    }
    println!("== {} {} on {}: ==", p.name, p.version, p.variant);
    for (module, n, dir) in summary {
        println!("  {module}: {n} bucket(s), {}", dir.display());
    }
    Ok(())
}
