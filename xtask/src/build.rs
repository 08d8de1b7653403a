//! setup, fetch-cpython, build-*, variants.

use std::path::PathBuf;

use anyhow::{Context, Result};
use capisan_build::builder::{self, BuildRequest};
use capisan_build::{manifest, setup, source, toolchain, Cache, Manifest, Variant};
use clap::Args;

use crate::ui::{self, spinning};

#[derive(Args)]
pub struct SetupArgs {
    /// Only print the apt command with every package; check and install nothing. Without it,
    /// install the missing packages (as root; apt's output goes to
    /// ~/.cache/capisan/logs/setup-<time>.log).
    #[arg(long)]
    dry_run: bool,
}

/// Which source to use (the version is the global `--version`).
#[derive(Args, Clone)]
pub struct SourceArgs {
    /// Use this CPython source tree (checkout or unpacked tarball) instead of Debian's package.
    #[arg(long, env = "CPYTHON_SRC")]
    src: Option<PathBuf>,
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
}

/// Install the missing system packages: one line per step, apt's output in a log file whose
/// tail is printed on failure (by `main`, from the error).
pub fn setup(args: SetupArgs) -> Result<()> {
    let cache = crate::cache().resolve();
    let outcome = setup::setup(&cache, args.dry_run, &mut |step| println!("setup: {step}"))?;
    print!("{}", outcome.text());
    Ok(())
}

fn resolve_source(args: &SourceArgs) -> Result<(Cache, source::CpythonSource)> {
    let (cache, src) = (crate::cache().resolve(), args.src.as_deref());
    let version = crate::cache().build_version();
    let found = spinning(source::resolving(src, version), || {
        source::resolve(&cache, src, version)
    })?;
    Ok((cache, found))
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
    for &variant in variants {
        let req = BuildRequest::new(variant, &src, &compiler, args.jobs, args.force);
        let template =
            "{prefix:>18} [{elapsed_precise}] {bar:30.cyan/blue} {pos:>4}/{len:4} {wide_msg}";
        let bar = ui::bar(1, ui::style(template).progress_chars("=> "), 250);
        let outcome = builder::build(&cache, &req, &bar);
        bar.finish_and_clear();
        let outcome = outcome.with_context(|| {
            format!("building the {variant} variant of CPython {}", src.version)
        })?;
        print!("{}", outcome.text());
    }
    Ok(())
}

pub fn variants(args: VariantsArgs) -> Result<()> {
    let cache = crate::cache().resolve();
    let all = Manifest::all(&cache);
    ui::emit(args.json, &all, || manifest::table(&all, cache.root()))
}
