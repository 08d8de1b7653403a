//! fuzz, fuzz-ext, ext build, triage: build a fuzz target against a variant, run a campaign,
//! and turn its crash artifacts into named, bucketed findings.

use std::fs;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use capisan::campaign::{self, CampaignSpec};
use capisan::env::HarnessEnv;
use capisan::findings::read_known;
use capisan_build::{Cache, Manifest, Variant};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::CacheArgs;

/// Flags cargo-fuzz passes for a libFuzzer build (coverage, compares, ASan), on stable Rust.
const SANCOV_FLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Cforce-frame-pointers --cfg fuzzing";

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
    let m = Manifest::find(
        &Cache::resolve(args.cache.cache.clone()),
        args.variant,
        None,
    )?;
    let bin = build_target(&args.target, args.variant, &m)?;
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let dest = args.out.join(&args.target);
    fs::copy(&bin, &dest).with_context(|| format!("copying the fuzzer to {}", dest.display()))?;
    let home = args.out.join(format!("{}.python", args.target));
    let _ = fs::remove_dir_all(&home);
    // The pure-Python stdlib without its test suite, and the build's compiled modules.
    let skip = ["test", "idlelib", "__pycache__", "tkinter", "turtledemo"];
    for entry in walkdir::WalkDir::new(&m.stdlib)
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && skip.iter().any(|s| e.file_name() == *s)))
    {
        let entry = entry?;
        let rel = entry.path().strip_prefix(&m.stdlib)?;
        let to = home.join("Lib").join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&to)?;
        } else {
            fs::copy(entry.path(), &to)?;
        }
    }
    let dynload = home.join("lib-dynload");
    fs::create_dir_all(&dynload)?;
    for e in fs::read_dir(&m.platstdlib)?
        .flatten()
        .filter(|e| e.path().is_file())
    {
        fs::copy(e.path(), dynload.join(e.file_name()))?;
    }
    let seeds = workspace_root().join("corpora").join(&args.target);
    if seeds.is_dir() {
        let to = args.out.join(format!("{}_seed_corpus", args.target));
        fs::create_dir_all(&to)?;
        for e in fs::read_dir(&seeds)?
            .flatten()
            .filter(|e| e.path().is_file())
        {
            fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    println!("built {} (+ {})", dest.display(), home.display());
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

pub use capisan::campaign::{Bucket, Campaign, Progress};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Build a fuzz target against a variant; returns the binary.
pub fn build_target(target: &str, variant: Variant, manifest: &Manifest) -> Result<PathBuf> {
    if !workspace_root()
        .join("fuzz")
        .join("fuzz_targets")
        .join(format!("{target}.rs"))
        .exists()
    {
        bail!("no fuzz target {target}: expected fuzz/fuzz_targets/{target}.rs");
    }
    build_bin(target, variant, manifest)
}

/// Build one binary of the fuzz crate (a fuzz target or `capisan-replay`) against a variant,
/// with the fuzz targets' flags (so the harness build is shared); returns its path.
pub fn build_bin(target: &str, variant: Variant, manifest: &Manifest) -> Result<PathBuf> {
    let fuzz = workspace_root().join("fuzz");
    let target_dir = fuzz.join("target").join(variant.name());
    let rustflags = match variant {
        Variant::Asan => format!("{SANCOV_FLAGS} -Zsanitizer=address"),
        _ => SANCOV_FLAGS.to_string(),
    };
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "building fuzz target {target} against the {variant} variant"
    ));
    spinner.enable_steady_tick(Duration::from_millis(150));
    let out = duct::cmd!(
        "cargo",
        "build",
        "--release",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--bin",
        target,
        "--target-dir",
        &target_dir
    )
    .dir(&fuzz)
    .env("RUSTC_BOOTSTRAP", "1")
    .env("RUSTFLAGS", rustflags)
    .env(
        "CAPISAN_MANIFEST",
        manifest.dir().join(capisan_build::manifest::FILE_NAME),
    )
    .env("CAPISAN_VARIANT", variant.name())
    .env("CC", &manifest.compiler.cc)
    // valgrind 3.19 cannot read DWARF 5, clang-22's default (libFuzzer is C++ built by cc).
    .env(
        "CXXFLAGS",
        if variant == Variant::Valgrind {
            "-gdwarf-4"
        } else {
            ""
        },
    )
    .env("CXX", manifest.compiler.cc.replace("clang", "clang++"))
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .context("running cargo build for the fuzz target")?;
    spinner.finish_and_clear();
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        bail!(
            "building fuzz target {target} failed:\n{}",
            capisan_build::source::tail_lines(&text, 40)
        );
    }
    Ok(target_dir
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join(target))
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
            None => println!("fuzz {}: {line}", args.target),
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
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(seconds).with_style(
        ProgressStyle::with_template("fuzz {prefix} [{elapsed_precise}] {bar:30.green/white} {wide_msg}")
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
        Some(k) => read_known(
            &fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?,
        ),
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
        cache: args.cache,
        libfuzzer: Vec::new(),
    })
    .map(|_| ())
}

/// Compile a C extension against a variant with the variant's flags (ASan + coverage for asan).
pub fn ext_build(args: ExtBuildArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache.cache.clone());
    let m = Manifest::find(&cache, args.variant, None)?;
    let path = fs::canonicalize(&args.path)
        .with_context(|| format!("{} does not exist", args.path.display()))?;
    let (module, sources): (String, Vec<PathBuf>) = if path.is_dir() {
        let srcs: Vec<PathBuf> = fs::read_dir(&path)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "c"))
            .collect();
        (
            path.file_name().unwrap().to_string_lossy().into_owned(),
            srcs,
        )
    } else {
        (
            path.file_stem().unwrap().to_string_lossy().into_owned(),
            vec![path.clone()],
        )
    };
    if sources.is_empty() {
        bail!("no .c files in {}", path.display());
    }
    let out = args.out.unwrap_or_else(|| {
        cache
            .root()
            .join("ext")
            .join(args.variant.name())
            .join(&module)
    });
    fs::create_dir_all(&out)?;
    let suffix = ext_suffix(&m)?;
    let so = out.join(format!("{module}{suffix}"));
    let mut argv: Vec<String> = vec!["-shared".into(), "-fPIC".into()];
    argv.extend(
        capisan_build::package::extension_cflags(args.variant)
            .into_iter()
            .map(String::from),
    );
    argv.extend(m.include_dirs.iter().map(|d| format!("-I{}", d.display())));
    argv.extend(sources.iter().map(|s| s.display().to_string()));
    argv.push("-o".into());
    argv.push(so.display().to_string());
    let res = duct::cmd(&m.compiler.cc, &argv)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
    if !res.status.success() {
        bail!(
            "compiling {module} failed:\n{}",
            String::from_utf8_lossy(&res.stdout)
        );
    }
    // Remember the source, so `confirm` can rebuild it for other variants.
    fs::write(
        out.join("capisan-ext-source.txt"),
        path.display().to_string(),
    )?;
    println!("built {}", so.display());
    println!(
        "fuzz it with: cargo xtask fuzz-ext {module} --ext-path {} --variant {}",
        out.display(),
        args.variant
    );
    Ok(())
}

fn ext_suffix(m: &Manifest) -> Result<String> {
    let mut cmd = duct::cmd!(
        &m.python,
        "-c",
        "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"
    )
    .stderr_null()
    .stdout_capture();
    cmd = crate::with_env(cmd, &m.env());
    Ok(cmd
        .read()
        .context("asking the variant's python for EXT_SUFFIX")?
        .trim()
        .to_string())
}
