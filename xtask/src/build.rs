//! setup, fetch-cpython, build-*, variants.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capisan_build::builder::{self, BuildOutcome, BuildRequest};
use capisan_build::setup::{self, SetupOutcome};
use capisan_build::{source, toolchain, Cache, Manifest, Variant, DEFAULT_VERSION};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::CacheArgs;

#[derive(Args)]
pub struct SetupArgs {
    /// Only print the apt command with every package; check and install nothing. Without it,
    /// install the missing packages (as root; apt's output goes to
    /// ~/.cache/capisan/logs/setup-<time>.log).
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Which source to use.
#[derive(Args, Clone)]
pub struct SourceArgs {
    /// CPython version to fetch from Debian's source packages (X.Y or X.Y.Z).
    #[arg(long, default_value = DEFAULT_VERSION)]
    version: String,
    /// Use this CPython source tree (checkout or unpacked tarball) instead of Debian's package.
    #[arg(long, env = "CPYTHON_SRC")]
    src: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args, Clone)]
pub struct BuildArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// C compiler; default clang-<rustc's LLVM major> so Rust and C share sanitizer runtimes.
    #[arg(long, env = "CAPISAN_CC")]
    cc: Option<String>,
    /// Parallel make jobs (default: number of CPUs).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Rebuild even if a good cached build exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct VariantsArgs {
    /// Print the manifests as a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Install the missing system packages: one line per step, apt's output in a log file whose
/// tail is printed on failure (by `main`, from the error).
pub fn setup(args: SetupArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache.cache);
    let outcome = setup::setup(&cache, args.dry_run, &mut |step| println!("setup: {step}"))?;
    match outcome {
        SetupOutcome::NotDebian { command } => {
            println!(
                "This is not a Debian/Ubuntu machine with apt-get. Install the equivalents of:"
            );
            println!("  {command}");
        }
        SetupOutcome::DryRun { command } => {
            println!("setup --dry-run: would install what is missing of:");
            println!("  {command}");
        }
        SetupOutcome::Ready {
            installed,
            log,
            compiler,
            ..
        } => {
            if !installed.is_empty() {
                println!("setup: installed {}", installed.join(" "));
            }
            if let Some(log) = log {
                println!("setup: apt's output is in {}", log.display());
            }
            println!("setup: compiler {} ({})", compiler.cc, compiler.version);
        }
    }
    Ok(())
}

fn resolve_source(args: &SourceArgs) -> Result<(Cache, source::CpythonSource)> {
    let cache = Cache::resolve(args.cache.cache.clone());
    let spinner = ProgressBar::new_spinner().with_message(match &args.src {
        Some(p) => format!("checking CPython source at {}", p.display()),
        None => format!(
            "fetching CPython {} from Debian's source packages",
            args.version
        ),
    });
    spinner.enable_steady_tick(Duration::from_millis(120));
    let src = source::resolve(&cache, args.src.as_deref(), &args.version);
    spinner.finish_and_clear();
    Ok((cache, src?))
}

pub fn fetch(args: SourceArgs) -> Result<()> {
    let (_, src) = resolve_source(&args)?;
    println!("CPython {} at {}", src.version, src.dir.display());
    println!("source hash {}", src.hash);
    Ok(())
}

pub fn build(args: BuildArgs, variants: &[Variant]) -> Result<()> {
    let compiler = toolchain::probe(&args.cc.clone().unwrap_or_else(toolchain::default_cc))?;
    let (cache, src) = resolve_source(&args.source)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    for &variant in variants {
        let req = BuildRequest {
            variant,
            source: src.clone(),
            compiler: compiler.clone(),
            jobs,
            force: args.force,
        };
        let bar = ProgressBar::new(1).with_style(
            ProgressStyle::with_template(
                "{prefix:>18} [{elapsed_precise}] {bar:30.cyan/blue} {pos:>4}/{len:4} {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        let outcome = builder::build(&cache, &req, &bar);
        bar.finish_and_clear();
        let outcome = outcome.with_context(|| {
            format!("building the {variant} variant of CPython {}", src.version)
        })?;
        let m = outcome.manifest();
        match &outcome {
            BuildOutcome::Cached(_) => println!("{variant}: cached, {}", m.dir().display()),
            BuildOutcome::Built(_) => println!(
                "{variant}: built in {:.0} s, {}",
                m.build_seconds,
                m.dir().display()
            ),
        }
        println!("  python   {}", m.python.display());
        println!(
            "  manifest {}",
            m.dir().join(capisan_build::manifest::FILE_NAME).display()
        );
    }
    Ok(())
}

pub fn variants(args: VariantsArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache.cache);
    let all = Manifest::all(&cache);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!(
            "no variants built in {}; run `cargo xtask build-asan` (or build-all)",
            cache.root().display()
        );
        return Ok(());
    }
    println!(
        "{:<10} {:<9} {:<17} {:>8}  python",
        "variant", "version", "key", "build s"
    );
    for m in all {
        println!(
            "{:<10} {:<9} {:<17} {:>8.0}  {}",
            m.variant,
            m.version,
            m.key,
            m.build_seconds,
            m.python.display()
        );
    }
    Ok(())
}
