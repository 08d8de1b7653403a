//! fuzz, fuzz-ext, ext build, triage: build a fuzz target against a variant, run a campaign,
//! and turn its crash artifacts into named, bucketed findings.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use capisan::detect::{self, Finding};
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
    /// Campaign directory (corpus, artifacts, log); default target/capisan/<target>-<variant>.
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
    /// the campaign keeps going after a crash, so one run can collect several buckets.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
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
    /// target/capisan/capi_sequences-<variant>.
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
    /// not in it (nightly fuzzing fails on new bugs, not on known ones); without it, exit 1 on
    /// any bucket.
    #[arg(long)]
    pub known: Option<PathBuf>,
}

/// What `triage` needs to re-run a campaign's artifacts.
#[derive(Serialize, Deserialize)]
pub struct Campaign {
    pub target: String,
    pub variant: Variant,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Campaign {
    /// Read `campaign.json` of a campaign directory.
    pub fn load(dir: &Path) -> Result<Campaign> {
        let meta = dir.join("campaign.json");
        let text = fs::read_to_string(&meta).with_context(|| {
            format!(
                "{} is not a campaign directory (no campaign.json)",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", meta.display()))
    }

    /// Run the target once on `input` with extra env; returns everything it printed.
    pub fn run_once(&self, input: &Path, extra: &[(&str, String)]) -> Result<(bool, String)> {
        let mut cmd = duct::cmd!(&self.binary, "-runs=1", input)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked();
        cmd = crate::with_env(cmd, &self.env);
        cmd = crate::with_env(cmd, extra);
        let out = cmd
            .run()
            .with_context(|| format!("running {}", self.binary.display()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

/// One libFuzzer status line with the campaign's elapsed time (for `report`'s plots).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Progress {
    pub seconds: f64,
    pub execs: u64,
    pub cov: u64,
    pub features: u64,
    pub corpus: u64,
    pub exec_per_sec: u64,
}

impl Progress {
    /// Parse `#4096 pulse  cov: 834 ft: 1200 corp: 50/1kb exec/s: 2048 rss: ...`.
    pub fn parse(line: &str, seconds: f64) -> Option<Progress> {
        let execs = line
            .strip_prefix('#')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let field = |name: &str| -> Option<u64> {
            let mut words = line.split_whitespace();
            words.find(|w| *w == name)?;
            words.next()?.split('/').next()?.parse().ok()
        };
        Some(Progress {
            seconds,
            execs,
            cov: field("cov:")?,
            features: field("ft:").unwrap_or(0),
            corpus: field("corp:").unwrap_or(0),
            exec_per_sec: field("exec/s:").unwrap_or(0),
        })
    }
}

/// One bucket of findings.
#[derive(Serialize, Deserialize)]
pub struct Bucket {
    pub signature: String,
    pub class: String,
    pub count: usize,
    pub artifacts: Vec<PathBuf>,
    pub finding: Finding,
}

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

fn runtime_env(
    manifest: &Manifest,
    ext: &ExtArgs,
    no_checks: bool,
    collect: bool,
) -> Vec<(String, String)> {
    let mut env = manifest.env();
    if let Some(m) = &ext.ext {
        env.push(("CAPISAN_EXT".into(), m.clone()));
    }
    if let Some(p) = &ext.ext_path {
        env.push((
            "CAPISAN_EXT_PATH".into(),
            fs::canonicalize(p)
                .unwrap_or(p.clone())
                .display()
                .to_string(),
        ));
    }
    if !ext.funcs.is_empty() {
        env.push(("CAPISAN_EXT_FUNCS".into(), ext.funcs.join(",")));
    }
    if let Some(pm) = &ext.pythonmalloc {
        env.retain(|(k, _)| k != "PYTHONMALLOC");
        env.push(("PYTHONMALLOC".into(), pm.clone()));
    }
    if no_checks {
        env.push(("CAPISAN_CHECKS".into(), "0".into()));
    }
    if collect {
        env.push(("CAPISAN_COLLECT".into(), "1".into()));
    }
    env
}

/// Run a campaign, then triage it. Returns the buckets.
pub fn fuzz(args: FuzzArgs) -> Result<Vec<Bucket>> {
    let cache = Cache::resolve(args.cache.cache.clone());
    let manifest = Manifest::find(&cache, args.variant, None)?;
    if let (Some(module), Some(path)) = (&args.ext.ext, &args.ext.ext_path) {
        let built = fs::read_dir(path)
            .with_context(|| format!("--ext-path {} is not a directory; build the extension with `cargo xtask ext-build`", path.display()))?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&format!("{module}.")));
        if !built {
            bail!("no built module {module} in {}; run `cargo xtask ext-build SOURCE --variant {} -o {}`", path.display(), args.variant, path.display());
        }
    }
    let binary = build_target(&args.target, args.variant, &manifest)?;
    let dir = args.out.clone().unwrap_or_else(|| {
        workspace_root()
            .join("target")
            .join("capisan")
            .join(format!("{}-{}", args.target, args.variant))
    });
    let corpus = dir.join("corpus");
    let artifacts = dir.join("artifacts");
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    fs::create_dir_all(&artifacts)?;
    let seeds = workspace_root().join("corpora").join(&args.target);
    let env = runtime_env(&manifest, &args.ext, args.no_checks, args.collect);
    let campaign = Campaign {
        target: args.target.clone(),
        variant: args.variant,
        binary: binary.clone(),
        env: env.clone(),
    };
    fs::write(
        dir.join("campaign.json"),
        serde_json::to_string_pretty(&campaign)?,
    )?;

    let mut fuzz_args: Vec<String> = vec![
        format!("-max_total_time={}", args.time),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".into(),
    ];
    if let Some(seed) = args.seed {
        fuzz_args.push(format!("-seed={seed}"));
    }
    if args.jobs > 1 {
        // Fork mode: the parent merges each child's new inputs into the corpus directory and
        // copies crash artifacts out as children report them, so killing the campaign loses
        // nothing already reported.
        fuzz_args.extend([
            format!("-fork={}", args.jobs),
            "-ignore_crashes=1".into(),
            "-ignore_ooms=1".into(),
            "-ignore_timeouts=1".into(),
        ]);
    }
    fuzz_args.extend(args.libfuzzer.iter().cloned());
    fuzz_args.push(corpus.display().to_string());
    if seeds.is_dir() && !args.no_seeds {
        fuzz_args.push(seeds.display().to_string());
    }
    let (program, argv, xml) = if args.variant == Variant::Valgrind {
        let xml = dir.join("valgrind.xml");
        let mut v = vec![
            "--tool=memcheck".to_string(),
            "--xml=yes".into(),
            format!("--xml-file={}", xml.display()),
            "--exit-on-first-error=yes".into(),
            "--error-exitcode=99".into(),
            "--track-origins=yes".into(),
        ];
        if let Some(supp) = &manifest.valgrind_suppressions {
            v.push(format!("--suppressions={}", supp.display()));
        }
        v.push(binary.display().to_string());
        v.extend(fuzz_args);
        ("valgrind".to_string(), v, Some(xml))
    } else {
        (binary.display().to_string(), fuzz_args, None)
    };
    let log_path = dir.join("fuzz.log");
    let mut log = fs::File::create(&log_path)?;
    let mut progress = fs::File::create(dir.join("progress.jsonl"))?;
    let bar = ProgressBar::new(args.time).with_style(
        ProgressStyle::with_template(
            "fuzz {prefix} [{elapsed_precise}] {bar:30.green/white} {wide_msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(args.target.clone());
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut cmd = duct::cmd(&program, &argv).stderr_to_stdout().unchecked();
    cmd = crate::with_env(cmd, &env);
    let reader = cmd
        .reader()
        .with_context(|| format!("starting {program}"))?;
    let started = std::time::Instant::now();
    for line in BufReader::new(&reader).split(b'\n') {
        let line = line?;
        log.write_all(&line)?;
        log.write_all(b"\n")?;
        let text = String::from_utf8_lossy(&line);
        if let Some(p) = Progress::parse(&text, started.elapsed().as_secs_f64()) {
            writeln!(progress, "{}", serde_json::to_string(&p)?)?;
        }
        if text.starts_with('#') && text.contains("cov:") {
            bar.set_message(
                text.split_whitespace()
                    .skip(1)
                    .take(9)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        bar.set_position(started.elapsed().as_secs().min(args.time));
    }
    bar.finish_and_clear();
    let mut buckets = triage_dir(&dir)?;
    if let Some(xml) = xml {
        if let Ok(text) = fs::read_to_string(&xml) {
            let found = detect::parse_valgrind_xml(&text).unwrap_or_default();
            let ops = detect::parse(&fs::read_to_string(&log_path).unwrap_or_default());
            for mut f in found {
                if let Some(o) = ops.first() {
                    f.op_log = o.op_log.clone();
                    f.current_op = o.current_op.clone();
                }
                add(&mut buckets, f, xml.clone());
            }
        }
    }
    let stats: Vec<String> = fs::read_to_string(&log_path)?
        .lines()
        .filter(|l| {
            l.starts_with("stat::number_of_executed_units")
                || l.starts_with("stat::average_exec_per_sec")
        })
        .map(str::to_string)
        .collect();
    fs::write(
        dir.join("buckets.json"),
        serde_json::to_vec_pretty(&buckets)?,
    )?;
    print_summary(&buckets, &dir, args.json, &stats)?;
    Ok(buckets)
}

fn add(buckets: &mut Vec<Bucket>, f: Finding, artifact: PathBuf) {
    let sig = f.signature().to_string();
    if let Some(b) = buckets.iter_mut().find(|b| b.signature == sig) {
        b.count += 1;
        b.artifacts.push(artifact);
    } else {
        buckets.push(Bucket {
            signature: sig,
            class: f.class.name().to_string(),
            count: 1,
            artifacts: vec![artifact],
            finding: f,
        });
    }
}

/// Re-run each crash artifact of a campaign and parse what it prints.
pub fn triage_dir(dir: &Path) -> Result<Vec<Bucket>> {
    let campaign = Campaign::load(dir)?;
    let mut artifacts: Vec<PathBuf> = fs::read_dir(dir.join("artifacts"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    artifacts.retain(|p| {
        // Logs written beside artifacts by an earlier triage are not artifacts.
        p.extension().is_none_or(|e| e != "log")
            && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["crash-", "leak-", "oom-", "timeout-"]
                    .iter()
                    .any(|x| n.starts_with(x))
            })
    });
    artifacts.sort();
    let mut buckets: Vec<Bucket> = Vec::new();
    for art in artifacts {
        let (ok, text) = campaign.run_once(&art, &[])?;
        fs::write(art.with_extension("log"), &text)?;
        let findings = detect::parse(&text);
        if findings.is_empty() {
            let mut f = Finding::new(
                detect::BugClass::Crash,
                detect::Tool::Capisan,
                "artifact crashed but no known report was printed",
            );
            f.reason = format!(
                "exited {}; see {}",
                if ok { "cleanly" } else { "with an error" },
                art.with_extension("log").display()
            );
            add(&mut buckets, f, art.clone());
        }
        for f in findings {
            add(&mut buckets, f, art.clone());
        }
    }
    Ok(buckets)
}

fn print_summary(buckets: &[Bucket], dir: &Path, json: bool, stats: &[String]) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(buckets)?);
        return Ok(());
    }
    println!(
        "== capisan findings: {} bucket(s) in {} ==",
        buckets.len(),
        dir.display()
    );
    for s in stats {
        println!("   {s}");
    }
    for b in buckets {
        println!("- [{}] {}  (x{})", b.class, b.signature, b.count);
        println!("    {}", b.finding.summary);
        if let Some(op) = &b.finding.current_op {
            println!("    op: {op}");
        }
        if !b.finding.reason.is_empty() {
            println!("    why: {}", b.finding.reason);
        }
        if let Some(f) = b.finding.top_frame() {
            println!(
                "    at: {} {}:{}",
                f.function,
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0)
            );
        }
        println!("    artifact: {}", b.artifacts[0].display());
    }
    Ok(())
}

/// Triage; `Ok(false)` when `--known` is given and a bucket is new.
pub fn triage(args: TriageArgs) -> Result<bool> {
    let buckets = triage_dir(&args.dir)?;
    fs::write(
        args.dir.join("buckets.json"),
        serde_json::to_vec_pretty(&buckets)?,
    )?;
    print_summary(&buckets, &args.dir, args.json, &[])?;
    let Some(known) = args.known else {
        return Ok(true);
    };
    let text =
        fs::read_to_string(&known).with_context(|| format!("reading {}", known.display()))?;
    let known: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let new: Vec<&Bucket> = buckets
        .iter()
        .filter(|b| !known.contains(&b.signature.as_str()))
        .collect();
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
    let mut argv: Vec<String> = vec![
        "-shared".into(),
        "-fPIC".into(),
        "-g".into(),
        "-O1".into(),
        "-fno-omit-frame-pointer".into(),
    ];
    if args.variant == Variant::Asan {
        argv.extend(
            [
                "-fsanitize=address,undefined",
                "-fno-sanitize=function",
                "-fsanitize=fuzzer-no-link",
            ]
            .map(String::from),
        );
    } else {
        argv.push("-gdwarf-4".into());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_status_lines() {
        let p = Progress::parse("#3107\tNEW    cov: 6636 ft: 16204 corp: 202/1953b lim: 17 exec/s: 3107 rss: 134Mb L: 17/17", 1.5).unwrap();
        assert_eq!(
            (p.execs, p.cov, p.features, p.corpus, p.exec_per_sec),
            (3107, 6636, 16204, 202, 3107)
        );
        assert!(Progress::parse("INFO: Seed: 1", 0.0).is_none());
        assert!(
            Progress::parse("#2\tINITED exec/s: 0 rss: 119Mb", 0.0).is_none(),
            "no cov: field"
        );
    }
}
