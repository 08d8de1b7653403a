//! pkg-build, fuzz-pkg, test-pkg: build a Python package against a variant
//! (capisan_build::package), fuzz its extension modules one at a time, or run its own test
//! suite (capisan::testpkg).

use std::path::PathBuf;

use anyhow::Result;
use capisan::testpkg::{self, TestPkgRequest};
use capisan_build::package::{self, PackageOutcome, Requirement};
use capisan_build::Variant;
use clap::Args;

use crate::fuzz::{self, workspace_root, CampaignArgs};
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
}

#[derive(Args, Clone)]
pub struct FuzzPkgArgs {
    #[arg(help = REQ_HELP)]
    pub req: String,
    /// Fuzz only this extension module (dotted name, e.g. markupsafe._speedups); repeatable;
    /// default: every extension module of the package that imports, but test helpers (`_test*`).
    #[arg(long = "module", value_name = "DOTTED")]
    pub modules: Vec<String>,
    /// PYTHONMALLOC for the campaigns (default: the variant's setting).
    #[arg(long)]
    pub pythonmalloc: Option<String>,
    #[command(flatten)]
    pub run: CampaignArgs,
}

#[derive(Args, Clone)]
pub struct TestPkgArgs {
    #[arg(help = REQ_HELP)]
    pub req: String,
    /// Variant to build against and run the suite on: asan or pydebug.
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// regrtest's leak check per test, WARMUPS:RUNS (e.g. 3:3): each passing test runs again
    /// with regrtest's cache clearing; one that leaks on every measured run is a finding.
    #[arg(short = 'R', value_name = "WARMUPS:RUNS", value_parser = testpkg::parse_refleak)]
    pub refleak: Option<(u32, u32)>,
    /// The tests directory; default: tests/, test/ or testing/ of the package's source or sdist.
    #[arg(long)]
    pub tests: Option<PathBuf>,
    /// Another requirement the tests import (e.g. hypothesis); repeatable.
    #[arg(long = "with", value_name = "REQ")]
    pub with: Vec<String>,
    /// Output directory (findings/, run logs, summary.json, junit.xml); default
    /// target/capisan/pkg-<requirement>-<variant>/test-pkg.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the outcome as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// pytest arguments, after `--` (e.g. `-- -k escape`).
    #[arg(last = true, value_name = "PYTEST ARGS")]
    pub pytest_args: Vec<String>,
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
    let outcome = build(&args.req, args.variant, crate::cache())?;
    let (req, variant) = (&args.req, args.variant);
    let next = format!("fuzz it with: cargo xtask fuzz-pkg {req} --variant {variant}\n");
    ui::emit(args.json, outcome.package(), || outcome.text() + &next)
}

pub fn fuzz_pkg(args: FuzzPkgArgs) -> Result<()> {
    let outcome = build(&args.req, args.run.variant, crate::cache())?;
    print!("{}", outcome.text());
    let p = outcome.package();
    let modules = p.modules_to_fuzz(&args.modules)?;
    let (_, m) = crate::cache().manifest(args.run.variant)?;
    let dir = || package::campaigns_dir(&workspace_root(), &args.req, m.variant, m.line());
    let out = args.run.out.clone().unwrap_or_else(dir);
    let mut r = args.run.request("capi_sequences");
    (r.ext_path, r.pythonmalloc) = (Some(p.site_packages.clone()), args.pythonmalloc);
    let mut summary = Vec::new();
    for module in &modules {
        println!("== fuzzing {module} for {} s ==", args.run.time);
        (r.ext, r.out) = (Some(module.clone()), Some(out.join(module)));
        let buckets = fuzz::run(&r, args.run.json, crate::cache())?;
        summary.push((module, buckets.len(), out.join(module)));
    }
    println!("== {} {} on {}: ==", p.name, p.version, p.variant);
    for (module, n, dir) in summary {
        println!("  {module}: {n} bucket(s), {}", dir.display());
    }
    Ok(())
}

/// Exit 1 when a test crashed or leaked.
pub fn test_pkg(a: TestPkgArgs) -> Result<bool> {
    let outcome = build(&a.req, a.variant, crate::cache())?;
    let (_, m) = crate::cache().manifest(a.variant)?;
    let dir = || testpkg::default_dir(&workspace_root(), &a.req, &m);
    let mut r = TestPkgRequest::new(a.out.clone().unwrap_or_else(dir));
    (r.tests, r.with, r.pytest_args, r.refleak) = (a.tests, a.with, a.pytest_args, a.refleak);
    let o = testpkg::test_package(outcome.package(), &m, &r, &mut |l| eprintln!("{l}"))?;
    ui::emit(a.json, &o, || o.text())?;
    Ok(o.crashed.is_empty() && o.leaked.is_empty())
}
