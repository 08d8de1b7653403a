//! pkg-build, fuzz-pkg: build a Python package against a variant (capisan_build::package) and
//! fuzz its extension modules with the capi_sequences campaign, one module at a time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use capisan_build::package::{self, PackageBuild, PackageOutcome, Requirement};
use capisan_build::{Cache, Manifest, Variant};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::fuzz::{self, ExtArgs, FuzzArgs};
use crate::CacheArgs;

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
fn build(req: &str, variant: Variant, cache: &CacheArgs) -> Result<(PackageBuild, bool)> {
    let cache = Cache::resolve(cache.cache.clone());
    let m = Manifest::find(&cache, variant, None)?;
    let req = Requirement::parse(req)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let outcome = package::build_package(&cache, &m, &req, &mut |line| {
        bar.suspend(|| eprintln!("{line}"));
        bar.set_message(line.to_string());
    });
    bar.finish_and_clear();
    Ok(match outcome? {
        PackageOutcome::Cached(p) => (p, true),
        PackageOutcome::Built(p) => (p, false),
    })
}

fn print_build(p: &PackageBuild, cached: bool) {
    if cached {
        println!(
            "{} {} ({}): cached, {}",
            p.name,
            p.version,
            p.variant,
            p.dir.display()
        );
    } else {
        println!(
            "{} {} ({}): built in {:.0} s, {}",
            p.name,
            p.version,
            p.variant,
            p.build_seconds,
            p.dir.display()
        );
    }
    println!("  python         {}", p.python.display());
    println!("  site-packages  {}", p.site_packages.display());
    for m in &p.modules {
        match &m.import_error {
            None => println!("  module         {}", m.name),
            Some(e) => println!("  module         {} (does not import: {e})", m.name),
        }
    }
    println!(
        "  record         {}",
        p.dir.join(package::FILE_NAME).display()
    );
}

pub fn pkg_build(args: PkgBuildArgs) -> Result<()> {
    let (p, cached) = build(&args.req, args.variant, &args.cache)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print_build(&p, cached);
    println!(
        "fuzz it with: cargo xtask fuzz-pkg {} --variant {}",
        args.req, args.variant
    );
    Ok(())
}

pub fn fuzz_pkg(args: FuzzPkgArgs) -> Result<()> {
    let (p, cached) = build(&args.req, args.variant, &args.cache)?;
    print_build(&p, cached);
    let modules: Vec<String> = if args.modules.is_empty() {
        p.importable().map(|m| m.name.clone()).collect()
    } else {
        for name in &args.modules {
            if !p.modules.iter().any(|m| &m.name == name) {
                let known: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
                bail!(
                    "{} {} has no extension module {name}; it has {}",
                    p.name,
                    p.version,
                    known.join(", ")
                );
            }
        }
        args.modules.clone()
    };
    if modules.is_empty() {
        bail!(
            "no extension module of {} {} imports on the {} variant (see above)",
            p.name,
            p.version,
            p.variant
        );
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let label: String = args
            .req
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace")
            .join("target")
            .join("capisan")
            .join(format!("pkg-{label}-{}", args.variant))
    });
    let mut summary = Vec::new();
    for module in &modules {
        println!("== fuzzing {module} for {} s ==", args.time);
        let dir = out.join(module);
        let buckets = fuzz::fuzz(FuzzArgs {
            target: "capi_sequences".into(),
            time: args.time,
            variant: args.variant,
            ext: ExtArgs {
                ext: Some(module.clone()),
                ext_path: Some(p.site_packages.clone()),
                funcs: Vec::new(),
                pythonmalloc: args.pythonmalloc.clone(),
            },
            out: Some(dir.clone()),
            seed: None,
            no_checks: false,
            collect: false,
            json: false,
            no_seeds: args.no_seeds,
            jobs: args.jobs,
            known: args.known.clone(),
            stop_at_first_finding: false,
            fail_alloc: args.fail_alloc,
            cache: args.cache.clone(),
            libfuzzer: Vec::new(),
        })?;
        summary.push((module, buckets.len(), dir));
    }
    println!("== {} {} on {}: ==", p.name, p.version, p.variant);
    for (module, n, dir) in summary {
        println!("  {module}: {n} bucket(s), {}", dir.display());
    }
    Ok(())
}
