//! `cargo xtask`: capisan's user-facing commands. Each subcommand is a small function over the
//! `capisan-build` and `capisan` crates; the logic lives there.

mod bench;
mod build;
mod corpora;
mod fuzz;
mod help;
mod leaks;
mod oom;
mod pkg;
mod repro;
mod stdlib;
mod ui;

use std::process::ExitCode;

use anyhow::Result;
use capisan_build::{versions, Cache, Manifest, Variant, DEFAULT_VERSION};
use clap::{Args, Parser, Subcommand};

/// Hunt memory bugs in CPython and its C extensions.
///
/// Build interpreter variants (pydebug, ASan+UBSan, valgrind, release) from real CPython source,
/// cached outside the checkout under ~/.cache/capisan (or $CAPISAN_CACHE).
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
#[command(about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    cache: CacheArgs,
}

/// The cache options of this run (`--cache` / $CAPISAN_CACHE and `--version` /
/// $CAPISAN_VERSION, accepted by every command).
static CACHE: std::sync::OnceLock<CacheArgs> = std::sync::OnceLock::new();

/// The cache options every command uses: the one way a command reads `--cache` and `--version`.
pub fn cache() -> &'static CacheArgs {
    CACHE.get_or_init(|| CacheArgs {
        cache: None,
        version: None,
    })
}

#[derive(Subcommand)]
enum Command {
    /// Install (Debian/Ubuntu, as root) or list the system packages capisan needs.
    Setup(build::SetupArgs),
    /// Fetch CPython source (Debian's source package, or check a --src tree) into the cache.
    FetchCpython(build::SourceArgs),
    /// Build the pydebug variant (--with-pydebug, -O0 -g3).
    BuildPydebug(build::BuildArgs),
    /// Build the ASan+UBSan variant (pydebug, -fsanitize=fuzzer-no-link, PYTHONMALLOC=malloc at run time).
    BuildAsan(build::BuildArgs),
    /// Build the valgrind variant (pydebug, --with-valgrind).
    BuildValgrind(build::BuildArgs),
    /// Build the release variant (-O2), the baseline for benchmarks.
    BuildRelease(build::BuildArgs),
    /// Build every variant.
    BuildAll(build::BuildArgs),
    /// List built variants and their manifests.
    Variants(build::VariantsArgs),
    /// Run a fuzz campaign against a variant and print the findings summary.
    Fuzz(fuzz::FuzzArgs),
    /// Fuzz the callables of a C extension (built with ext-build) through the capi_sequences target.
    FuzzExt(fuzz::FuzzExtArgs),
    /// Compile a C extension (file or directory of .c files) against a variant, with its sanitizers.
    ExtBuild(fuzz::ExtBuildArgs),
    /// Re-run one input (or one call) with the failing allocation moved to 1, 2, … K (K = the
    /// allocations the call makes) and print each distinct bucket.
    OomSweep(oom::OomSweepArgs),
    /// Build a Python package (pip requirement, sdist or source dir) in a venv of a variant's
    /// installed python with its compiler and sanitizer flags; list its extension modules.
    PkgBuild(pkg::PkgBuildArgs),
    /// pkg-build, then fuzz each extension module of the package (imported as the package
    /// imports it) with the capi_sequences campaign.
    FuzzPkg(pkg::FuzzPkgArgs),
    /// pkg-build, then run the package's own pytest suite on the variant: a test that kills
    /// the interpreter is a finding and the suite goes on; -R checks each test for leaks.
    TestPkg(pkg::TestPkgArgs),
    /// Fuzz the C modules of the variant's standard library (shared and built-in, builtins
    /// too), one campaign each; which ones is harness/src/stdlib_modules.json.
    FuzzStdlib(stdlib::FuzzStdlibArgs),
    /// Build a fuzz target into a self-contained directory (ClusterFuzzLite / OSS-Fuzz `$OUT`).
    FuzzBuild(fuzz::FuzzBuildArgs),
    /// Re-run a campaign's crash artifacts and print the buckets.
    Triage(fuzz::TriageArgs),
    /// Shrink a crash artifact to its op-sequence core (ddmin), keeping its bucket signature.
    Minimize(repro::MinimizeArgs),
    /// Write a standalone reproducer directory (repro.c, repro.py, watch.gdb, README) for an artifact.
    Repro(repro::ReproArgs),
    /// Re-run a reproducer in fresh processes on every built variant and record which see it.
    Confirm(repro::ConfirmArgs),
    /// Print the ops a fuzz input decodes to (slots as written, before resolution).
    Show(repro::ShowArgs),
    /// Run a target repeatedly in one pydebug process and report leaked references, memory
    /// blocks and file descriptors with regrtest's -R rule (exit 1 on a leak).
    Refleak(leaks::RefleakArgs),
    /// Diff tracemalloc snapshots around N runs of a target and print the top growth by
    /// traceback (exit 1 when a traceback grows by a block per iteration).
    TracemallocDiff(leaks::TracemallocArgs),
    /// Run a target with LeakSanitizer on the asan variant, minus the leaks of an empty program
    /// (suppressions/lsan-<version>.supp); exit 1 on a leak.
    Lsan(leaks::LsanArgs),
    /// Run a target under valgrind memcheck on the valgrind variant with CPython's and capisan's
    /// suppressions and print the findings (exit 1 on any).
    Valgrind(leaks::ValgrindArgs),
    /// Generate, merge and minimize valgrind suppression files.
    ValgrindSupp(leaks::ValgrindSuppArgs),
    /// Corpus hygiene: merge new inputs, minimize, add regression cases (content-hash names).
    Corpus(corpora::CorpusArgs),
    /// Write a static HTML report of a campaign (plots, buckets, stacks, op logs, links).
    Report(fuzz::ReportArgs),
    /// Benchmarks side by side: exec/s vs atheris (built from PyPI against the ASan variant on
    /// first use) and with/without checks, cold and cached builds, minimization, replay,
    /// refleak vs regrtest; writes bench/results.md and bench/results.json.
    Bench(bench::BenchArgs),
    /// Replay every corpus input with fork isolation; non-zero exit if anything regressed.
    Replay(corpora::ReplayArgs),
}

/// Options every command that touches the cache shares.
#[derive(Args, Clone, Debug)]
pub struct CacheArgs {
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE", global = true)]
    pub cache: Option<std::path::PathBuf>,
    /// CPython version, X.Y or X.Y.Z. fetch-cpython and build-* fetch it from Debian's source
    /// packages (default 3.13.5); every other command uses the newest build of that line
    /// (default 3.13: never merely the newest build), one of 3.11, 3.13, 3.14.
    #[arg(long, env = "CAPISAN_VERSION", global = true)]
    pub version: Option<String>,
}

impl CacheArgs {
    /// The cache these options name, its lookups choosing builds of `--version`.
    pub fn resolve(&self) -> Cache {
        Cache::resolve(self.cache.clone()).with_version(self.version.as_deref())
    }

    /// The version to build: `--version`, else [`DEFAULT_VERSION`].
    pub fn build_version(&self) -> &str {
        self.version.as_deref().unwrap_or(DEFAULT_VERSION)
    }

    /// The cache and the newest build of `variant` of the chosen line in it.
    pub fn manifest(&self, variant: Variant) -> Result<(Cache, Manifest)> {
        let cache = self.resolve();
        Ok((cache.clone(), Manifest::find(&cache, variant, None)?))
    }
}

impl Command {
    /// Whether the command builds (or fetches) a version rather than choosing among built
    /// variants: those take any version Debian offers, the others only a supported line.
    fn builds(&self) -> bool {
        matches!(
            self,
            Command::Setup(_)
                | Command::FetchCpython(_)
                | Command::BuildPydebug(_)
                | Command::BuildAsan(_)
                | Command::BuildValgrind(_)
                | Command::BuildRelease(_)
                | Command::BuildAll(_)
                | Command::Variants(_)
        )
    }
}

/// A command without a verdict of its own passes when it does not fail.
fn ran(r: Result<()>) -> Result<bool> {
    r.map(|()| true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let (Some(v), false) = (&cli.cache.version, cli.command.builds()) {
        if let Err(e) = versions::check_supported(v) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let _ = CACHE.set(cli.cache);
    let result = match cli.command {
        Command::Setup(a) => ran(build::setup(a)),
        Command::FetchCpython(a) => ran(build::fetch(a)),
        Command::BuildPydebug(a) => ran(build::build(a, &[Variant::Pydebug])),
        Command::BuildAsan(a) => ran(build::build(a, &[Variant::Asan])),
        Command::BuildValgrind(a) => ran(build::build(a, &[Variant::Valgrind])),
        Command::BuildRelease(a) => ran(build::build(a, &[Variant::Release])),
        Command::BuildAll(a) => ran(build::build(a, &Variant::ALL)),
        Command::Variants(a) => ran(build::variants(a)),
        Command::Fuzz(a) => fuzz::fuzz(a).map(|_| true),
        Command::FuzzExt(a) => ran(fuzz::fuzz_ext(a)),
        Command::FuzzBuild(a) => ran(fuzz::fuzz_build(a)),
        Command::PkgBuild(a) => ran(pkg::pkg_build(a)),
        Command::FuzzPkg(a) => ran(pkg::fuzz_pkg(a)),
        Command::TestPkg(a) => pkg::test_pkg(a),
        Command::FuzzStdlib(a) => ran(stdlib::fuzz_stdlib(a)),
        Command::ExtBuild(a) => ran(fuzz::ext_build(a)),
        Command::OomSweep(a) => ran(oom::oom_sweep(a)),
        Command::Triage(a) => fuzz::triage(a),
        Command::Minimize(a) => ran(repro::minimize_cmd(a)),
        Command::Repro(a) => ran(repro::repro_cmd(a)),
        Command::Confirm(a) => ran(repro::confirm_cmd(a)),
        Command::Show(a) => ran(repro::show_cmd(a)),
        Command::Bench(a) => ran(bench::bench(a)),
        Command::Report(a) => ran(fuzz::report_cmd(a)),
        Command::Corpus(a) => ran(corpora::corpus_cmd(a)),
        Command::Refleak(a) => leaks::refleak(a),
        Command::TracemallocDiff(a) => leaks::tracemalloc_diff(a),
        Command::Lsan(a) => leaks::lsan(a),
        Command::Valgrind(a) => leaks::valgrind(a),
        Command::ValgrindSupp(a) => ran(leaks::valgrind_supp(a)),
        Command::Replay(a) => corpora::replay_cmd(a),
    };
    let passed = result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        false
    });
    ExitCode::from(u8::from(!passed))
}
