//! setup, fetch-cpython, build-*, variants.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use capisan_build::builder::{self, BuildOutcome, BuildRequest};
use capisan_build::{source, toolchain, Cache, Manifest, Variant, DEFAULT_VERSION};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::CacheArgs;

/// System packages capisan needs on Debian/Ubuntu. `{llvm}` is rustc's LLVM major.
const PACKAGES: &[&str] = &[
    "clang-{llvm}",
    "libclang-{llvm}-dev",
    "libclang-rt-{llvm}-dev",
    "llvm-{llvm}",
    "valgrind",
    "gdb",
    "build-essential",
    "pkg-config",
    "xz-utils",
    "libffi-dev",
    "zlib1g-dev",
    "libssl-dev",
    "libbz2-dev",
    "liblzma-dev",
    "libsqlite3-dev",
    "uuid-dev",
    // Renders `cargo xtask report` pages headless (tests/report.rs).
    "chromium",
];

#[derive(Args)]
pub struct SetupArgs {
    /// Only print the packages and the command; install nothing.
    #[arg(long)]
    dry_run: bool,
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

fn packages() -> Vec<String> {
    let llvm = toolchain::rustc_llvm_major().unwrap_or(22).to_string();
    PACKAGES
        .iter()
        .map(|p| p.replace("{llvm}", &llvm))
        .collect()
}

pub fn setup(args: SetupArgs) -> Result<()> {
    let pkgs = packages();
    let debian =
        std::path::Path::new("/etc/debian_version").exists() && source::which("apt-get").is_some();
    if !debian || args.dry_run {
        if !debian {
            println!(
                "This is not a Debian/Ubuntu machine with apt-get. Install the equivalents of:"
            );
        }
        println!("  apt-get update && apt-get install -y {}", pkgs.join(" "));
        return Ok(());
    }
    let root = duct::cmd!("id", "-u")
        .read()
        .map(|u| u.trim() == "0")
        .unwrap_or(false);
    if !root {
        bail!("installing packages needs root; run:\n  sudo apt-get update && sudo apt-get install -y {}", pkgs.join(" "));
    }
    let missing: Vec<&String> = pkgs
        .iter()
        .filter(|p| {
            !duct::cmd!("dpkg-query", "-W", "-f=${Status}", p.as_str())
                .stderr_null()
                .read()
                .is_ok_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("all {} packages are installed", pkgs.len());
    } else {
        println!(
            "installing: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        duct::cmd!("apt-get", "update")
            .run()
            .context("apt-get update failed")?;
        let mut argv = vec![
            "install".to_string(),
            "-y".to_string(),
            "--no-install-recommends".to_string(),
        ];
        argv.extend(missing.iter().map(|s| s.to_string()));
        duct::cmd("apt-get", argv)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .context("apt-get install failed")?;
    }
    let cc = toolchain::default_cc();
    let compiler = toolchain::probe(&cc)?;
    println!("compiler: {} ({})", compiler.cc, compiler.version);
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
