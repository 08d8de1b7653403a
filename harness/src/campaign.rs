//! A fuzzing campaign and its triage: run a built fuzz target under libFuzzer (or libFuzzer
//! under memcheck), follow its progress, and turn what it found — crash artifacts and the
//! findings a keep-going harness recorded — into named buckets.
//!
//! The campaign directory holds `campaign.json` (what [`Campaign::run_once`] needs to re-run an
//! input), `corpus/`, `artifacts/` (libFuzzer's crash/oom/timeout files), `findings/` (the
//! [`FindingStore`] of non-fatal findings), `fuzz.log`, `progress.jsonl` and `buckets.json`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capisan_build::{Manifest, Variant};
use serde::{Deserialize, Serialize};

use crate::detect::{self, BugClass, Finding, Tool};
use crate::env::HarnessEnv;
use crate::findings::{FindingStore, LeakStats};

mod request;
pub use request::{triage_recorded, CampaignRequest, Triage};

/// Why a campaign could not run or be triaged. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A file or directory of the campaign could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A program could not be started at all.
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The extension under test does not import (checked in a child before fuzzing).
    #[error("{module} does not import on the {variant} variant: {message} (sys.path: {path})")]
    Import {
        module: String,
        variant: Variant,
        message: String,
        path: String,
    },
    /// The directory is not a campaign.
    #[error("{0} is not a campaign directory (no campaign.json); run `cargo xtask fuzz` first")]
    NotACampaign(PathBuf),
    /// The fuzzer died without leaving an artifact or a report.
    #[error("the fuzzer exited with {status} and left no artifact; the end of {log}:\n{tail}")]
    FuzzerFailed {
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// memcheck was run but wrote no XML.
    #[error("valgrind wrote no XML to {0}; see fuzz.log beside it")]
    NoValgrindXml(PathBuf),
    /// The spec file cannot be used.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
}

type Result<T> = std::result::Result<T, CampaignError>;

pub(crate) fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| CampaignError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What re-running an input of a campaign needs; stored as `campaign.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Campaign {
    pub target: String,
    pub variant: Variant,
    /// The CPython version of the variant's build (`3.11.2`), so commands that read the
    /// campaign find the same build; absent in campaigns written before it was recorded.
    #[serde(default)]
    pub version: Option<String>,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Campaign {
    /// Read `campaign.json` of a campaign directory.
    pub fn load(dir: &Path) -> Result<Campaign> {
        let meta = dir.join("campaign.json");
        let text = fs::read_to_string(&meta)
            .map_err(|_| CampaignError::NotACampaign(dir.to_path_buf()))?;
        serde_json::from_str(&text).map_err(|e| CampaignError::Io {
            path: meta,
            source: std::io::Error::other(e),
        })
    }

    /// The harness protocol the campaign's processes run with.
    pub fn harness_env(&self) -> HarnessEnv {
        HarnessEnv::from_lookup(|k| {
            self.env
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        })
    }

    /// Run the target once on `input` with extra env, outside the campaign's findings store
    /// (so a violation is printed and aborts, as a reproducer expects); returns whether it
    /// exited cleanly and everything it printed.
    pub fn run_once(&self, input: &Path, extra: &[(&str, String)]) -> Result<(bool, String)> {
        let mut argv = vec!["-runs=1".to_string()];
        argv.extend(LIBFUZZER_LIMITS.map(String::from));
        argv.push(input.display().to_string());
        let mut cmd = duct::cmd(&self.binary, &argv)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked();
        // duct applies the innermost setting last, so the campaign-only variables are left out
        // of the list rather than removed after it.
        let campaign_only = [crate::env::names::FINDINGS, crate::env::names::KNOWN];
        for (k, v) in self
            .env
            .iter()
            .filter(|(k, _)| !campaign_only.contains(&k.as_str()))
        {
            if !extra.iter().any(|(e, _)| e == k) {
                cmd = cmd.env(k, v);
            }
        }
        for (k, v) in extra {
            cmd = cmd.env(k, v);
        }
        let out = cmd.run().map_err(|source| CampaignError::Spawn {
            program: self.binary.display().to_string(),
            source,
        })?;
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
    /// Parse a status line of a single-process campaign
    /// (`#4096 pulse  cov: 834 ft: 1200 corp: 50/1kb exec/s: 2048 rss: ...`) or of fork mode
    /// (`#12000: cov: 834 ft: 1200 corp: 50 exec/s: 400 oom/timeout/crash: 0/0/1 time: 30s ...`).
    pub fn parse(line: &str, seconds: f64) -> Option<Progress> {
        let execs = line
            .strip_prefix('#')?
            .split_whitespace()
            .next()?
            .trim_end_matches(':')
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
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Bucket {
    pub signature: String,
    pub class: String,
    pub count: usize,
    pub artifacts: Vec<PathBuf>,
    pub finding: Finding,
}

/// Add a finding to its bucket (or a new one).
pub fn add(buckets: &mut Vec<Bucket>, f: Finding, artifact: PathBuf) {
    add_hits(buckets, f, artifact, 1);
}

fn add_hits(buckets: &mut Vec<Bucket>, f: Finding, artifact: PathBuf, hits: usize) {
    let sig = f.signature().to_string();
    if let Some(b) = buckets.iter_mut().find(|b| b.signature == sig) {
        b.count += hits;
        b.artifacts.push(artifact);
    } else {
        buckets.push(Bucket {
            signature: sig,
            class: f.class.name().to_string(),
            count: hits,
            artifacts: vec![artifact],
            finding: f,
        });
    }
}

/// What to fuzz and how; the xtask commands fill it from their flags.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    /// Fuzz target name (a file under `fuzz/fuzz_targets/`).
    pub target: String,
    /// The variant the binary was built against.
    pub manifest: Manifest,
    /// The built fuzz binary.
    pub binary: PathBuf,
    /// Campaign directory (see [`default_dir`]).
    pub dir: PathBuf,
    /// Harness protocol: extension under test, checks, known buckets. `findings` is set by
    /// [`run`] to the campaign's store.
    pub harness: HarnessEnv,
    /// PYTHONMALLOC override (default: the variant's).
    pub pythonmalloc: Option<String>,
    /// Campaign length.
    pub seconds: u64,
    /// libFuzzer seed.
    pub seed: Option<u64>,
    /// Parallel processes.
    pub jobs: usize,
    /// End the campaign at its first finding of any kind, in one libFuzzer process (tests,
    /// benchmarks of time-to-detect). By default a campaign keeps going: non-fatal findings
    /// are recorded in-process, and libFuzzer's fork mode (`-fork=jobs -ignore_crashes=1`)
    /// outlives memory-corruption crashes. memcheck campaigns always run in one process
    /// (valgrind does not follow fork-mode children).
    pub stop_at_first_finding: bool,
    /// Seed corpus directories added after the campaign's own corpus.
    pub seeds: Vec<PathBuf>,
    /// Extra libFuzzer arguments.
    pub libfuzzer: Vec<String>,
    /// `capisan.toml` ([`crate::spec`]): narrows the callables and gives argument kinds.
    pub spec_file: Option<PathBuf>,
}

/// The default campaign directory: `<root>/target/capisan/<target>[-<module>]-<variant>`, one
/// per target and extension module, so campaigns of different targets never share artifacts;
/// on a CPython line other than the default one (`line`, `X.Y`) suffixed `-<X.Y>`, as the fuzz
/// binaries are ([`capisan_build::fuzzbin::target_dir`]).
pub fn default_dir(
    root: &Path,
    target: &str,
    module: Option<&str>,
    variant: Variant,
    line: &str,
) -> PathBuf {
    let mut name = match module {
        Some(m) => format!("{target}-{m}-{variant}"),
        None => format!("{target}-{variant}"),
    };
    if line != capisan_build::versions::default_line() {
        name = format!("{name}-{line}");
    }
    root.join("target").join("capisan").join(name)
}

/// What the user sees while a campaign runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub elapsed: Duration,
    pub execs: u64,
    pub exec_per_sec: u64,
    pub cov: u64,
    pub corpus: u64,
    /// Buckets so far: crash artifacts plus recorded non-fatal findings.
    pub buckets: usize,
}

/// The numbers of a finished campaign, written as `summary.json` in its directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Inputs run (libFuzzer's count, over all processes).
    pub execs: u64,
    pub exec_per_sec: u64,
    /// Edges covered.
    pub cov: u64,
    /// Corpus entries.
    pub corpus: u64,
    pub seconds: f64,
    pub buckets: usize,
    pub leak_stats: LeakStats,
    pub known_hits: u64,
}

impl Totals {
    /// Read `summary.json` of a campaign directory.
    pub fn load(dir: &Path) -> Option<Totals> {
        serde_json::from_slice(&fs::read(dir.join("summary.json")).ok()?).ok()
    }
}

/// What a campaign ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dir: PathBuf,
    pub buckets: Vec<Bucket>,
    /// The last status (inputs run, exec/s, coverage, corpus).
    pub last: Option<Progress>,
    /// libFuzzer's final `stat::` lines.
    pub stats: Vec<String>,
    /// Two-stage leak-verdict counters over all processes.
    pub leak_stats: LeakStats,
    /// Sightings of known buckets.
    pub known_hits: u64,
}

/// Check in a child process that the extension under test imports and has callables, with the
/// harness's own loader (the prelude's `ext_callables`), so a broken module is one clear error
/// and never a bucket.
pub fn check_import(manifest: &Manifest, harness: &HarnessEnv) -> Result<()> {
    let Some(module) = &harness.ext else {
        return Ok(());
    };
    let path = harness
        .ext_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let script = format!(
        "{}\nimport sys\ntry:\n    __c = ext_callables({module:?}, {path:?}, {:?})\nexcept BaseException as e:\n    import traceback\n    last = traceback.format_exception_only(e)[-1].strip()\n    print('CAPISAN-IMPORT-ERROR', last, '|', sys.path)\n    raise SystemExit(1)\nif not __c:\n    print('CAPISAN-IMPORT-ERROR', 'no public callables', '|', sys.path)\n    raise SystemExit(1)\n",
        crate::PRELUDE_PY,
        harness.ext_funcs
    );
    let mut cmd = duct::cmd!(&manifest.python, "-c", script)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in manifest.env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().map_err(|source| CampaignError::Spawn {
        program: manifest.python.display().to_string(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (message, path) = text
        .lines()
        .find_map(|l| l.strip_prefix("CAPISAN-IMPORT-ERROR "))
        .and_then(|l| l.split_once(" | "))
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .unwrap_or_else(|| {
            (
                text.lines().last().unwrap_or("no output").to_string(),
                "?".into(),
            )
        });
    Err(CampaignError::Import {
        module: module.clone(),
        variant: manifest.variant,
        message,
        path,
    })
}

/// libFuzzer's limits: a true blow-up (RSS over 2 GiB) is an out-of-memory report; a
/// single request is never stopped by libFuzzer (ASan's `max_allocation_size_mb`, lower,
/// makes it fail like a production malloc: see `capisan_build::variant::ASAN_RUN_OPTIONS`).
pub const LIBFUZZER_LIMITS: [&str; 3] = [
    "-rss_limit_mb=2048",
    "-malloc_limit_mb=8192",
    // An input running 30 s is a hang (libFuzzer's default, 20 minutes, would stall a
    // campaign); fork mode goes on after it, a one-process campaign ends with the artifact.
    "-timeout=30",
];

/// Run a campaign to its end, calling `on_status` every few seconds, then triage it.
pub fn run(spec: &CampaignSpec, mut on_status: impl FnMut(&Status)) -> Result<Outcome> {
    let dir = &spec.dir;
    let corpus = dir.join("corpus");
    let artifacts = dir.join("artifacts");
    let findings = dir.join("findings");
    io(&corpus, fs::create_dir_all(&corpus))?;
    // The artifacts and findings of an earlier campaign in the same directory are not this
    // campaign's: they move to previous/<unix time>/ (nothing is deleted); the corpus stays,
    // so a campaign resumes where the last one stopped.
    if !list_artifacts(&artifacts).is_empty() || findings.is_dir() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prev = dir.join("previous").join(stamp.to_string());
        io(&prev, fs::create_dir_all(&prev))?;
        for d in ["artifacts", "findings", "buckets.json", "summary.json"] {
            let from = dir.join(d);
            if from.exists() {
                io(&from, fs::rename(&from, prev.join(d)))?;
            }
        }
    }
    io(&artifacts, fs::create_dir_all(&artifacts))?;
    let store = io(&findings, FindingStore::open(&findings))?;
    let mut harness = spec.harness.clone();
    if let Some(file) = &spec.spec_file {
        crate::spec::apply(file, &spec.manifest, &mut harness)?;
    }
    check_import(&spec.manifest, &harness)?;

    harness.findings = Some(findings.clone());
    let mut env = spec.manifest.env();
    if let Some(pm) = &spec.pythonmalloc {
        env.retain(|(k, _)| k != "PYTHONMALLOC");
        env.push(("PYTHONMALLOC".into(), pm.clone()));
    }
    env.extend(harness.to_env());
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + spec.seconds;
    env.push((crate::env::names::CAMPAIGN_END.into(), end.to_string()));
    let campaign = Campaign {
        target: spec.target.clone(),
        variant: spec.manifest.variant,
        version: Some(spec.manifest.version.clone()),
        binary: spec.binary.clone(),
        env: env.clone(),
    };
    let meta = dir.join("campaign.json");
    io(
        &meta,
        fs::write(
            &meta,
            serde_json::to_string_pretty(&campaign).expect("serializable"),
        ),
    )?;

    let before: Vec<PathBuf> = list_artifacts(&artifacts);
    let mut fuzz_args: Vec<String> = vec![
        format!("-max_total_time={}", spec.seconds),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".into(),
    ];
    fuzz_args.extend(LIBFUZZER_LIMITS.map(String::from));
    if let Some(seed) = spec.seed {
        fuzz_args.push(format!("-seed={seed}"));
    }
    let fork = spec.manifest.variant != Variant::Valgrind
        && (spec.jobs > 1 || !spec.stop_at_first_finding);
    if fork {
        // Fork mode: the parent merges each child's new inputs into the corpus directory and
        // copies crash artifacts out as children report them, so killing the campaign loses
        // nothing already reported, and a crash ends one child, not the campaign.
        fuzz_args.extend([
            format!("-fork={}", spec.jobs.max(1)),
            "-ignore_crashes=1".into(),
            "-ignore_ooms=1".into(),
            "-ignore_timeouts=1".into(),
        ]);
    }
    fuzz_args.extend(spec.libfuzzer.iter().cloned());
    fuzz_args.push(corpus.display().to_string());
    for s in &spec.seeds {
        if s.is_dir() {
            fuzz_args.push(s.display().to_string());
        }
    }
    let xml = (spec.manifest.variant == Variant::Valgrind).then(|| dir.join("valgrind.xml"));
    let (program, argv) = if let Some(xml) = &xml {
        let _ = fs::remove_file(xml);
        let mut v = vec![
            "--tool=memcheck".to_string(),
            "--xml=yes".into(),
            format!("--xml-file={}", xml.display()),
            "--exit-on-first-error=yes".into(),
            "--error-exitcode=99".into(),
            "--track-origins=yes".into(),
            // The fuzzer never finalizes the interpreter: what is left at exit is not a leak
            // (leaks are capisan's own two-stage checks, `lsan` and `valgrind` commands).
            "--leak-check=no".into(),
        ];
        // libFuzzer's compare hooks in the harness's own instrumented code (see the file).
        let libfuzzer_supp =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../suppressions/valgrind-libfuzzer.supp");
        if libfuzzer_supp.is_file() {
            v.push(format!("--suppressions={}", libfuzzer_supp.display()));
        }
        if let Some(supp) = &spec.manifest.valgrind_suppressions {
            v.push(format!("--suppressions={}", supp.display()));
        }
        v.push(spec.binary.display().to_string());
        v.extend(fuzz_args);
        ("valgrind".to_string(), v)
    } else {
        (spec.binary.display().to_string(), fuzz_args)
    };

    let log_path = dir.join("fuzz.log");
    let mut log = io(&log_path, fs::File::create(&log_path))?;
    let progress_path = dir.join("progress.jsonl");
    let mut progress = io(&progress_path, fs::File::create(&progress_path))?;
    let mut cmd = duct::cmd(&program, &argv).stderr_to_stdout().unchecked();
    for (k, v) in &env {
        cmd = cmd.env(k, v);
    }
    let reader = cmd.reader().map_err(|source| CampaignError::Spawn {
        program: program.clone(),
        source,
    })?;
    let started = Instant::now();
    let mut last: Option<Progress> = None;
    let mut last_status = Instant::now();
    let status_of = |last: &Option<Progress>| Status {
        elapsed: started.elapsed(),
        execs: last.as_ref().map_or(0, |p| p.execs),
        exec_per_sec: last.as_ref().map_or(0, |p| p.exec_per_sec),
        cov: last.as_ref().map_or(0, |p| p.cov),
        corpus: last.as_ref().map_or(0, |p| p.corpus),
        buckets: store.buckets().len() + list_artifacts(&artifacts).len() - before.len(),
    };
    for line in BufReader::new(&reader).split(b'\n') {
        let line = io(&log_path, line)?;
        io(
            &log_path,
            log.write_all(&line).and_then(|_| log.write_all(b"\n")),
        )?;
        let text = String::from_utf8_lossy(&line);
        if let Some(p) = Progress::parse(&text, started.elapsed().as_secs_f64()) {
            let row = serde_json::to_string(&p).expect("serializable");
            io(&progress_path, writeln!(progress, "{row}"))?;
            last = Some(p);
        }
        if last_status.elapsed() >= Duration::from_secs(2) {
            last_status = Instant::now();
            let st = status_of(&last);
            on_status(&st);
            if spec.stop_at_first_finding && st.buckets > 0 {
                let _ = reader.kill();
                break;
            }
        }
    }
    let exit = reader.try_wait().ok().flatten().map(|o| o.status);
    drop(reader);
    on_status(&status_of(&last));

    let log_text = fs::read_to_string(&log_path).unwrap_or_default();
    let mut buckets = triage_dir(dir)?;
    if let Some(xml) = &xml {
        let Ok(text) = fs::read_to_string(xml) else {
            return Err(CampaignError::NoValgrindXml(xml.clone()));
        };
        let found = detect::parse_valgrind_xml(&text).unwrap_or_default();
        let ops = detect::parse(&log_text);
        for mut f in found {
            if let Some(o) = ops.first() {
                f.op_log = o.op_log.clone();
                f.current_op = o.current_op.clone();
            }
            add(&mut buckets, f, xml.clone());
        }
    }
    let new_artifacts = list_artifacts(&artifacts).len() > before.len();
    // Under memcheck the XML is the verdict (valgrind's own exit code also counts errors the
    // parser does not take as findings, such as leak records); it was read above.
    if let Some(status) = exit.filter(|_| xml.is_none()) {
        if !status.success() && !new_artifacts && buckets.is_empty() {
            return Err(CampaignError::FuzzerFailed {
                status: status.to_string(),
                log: log_path.clone(),
                tail: capisan_build::source::tail_lines(&log_text, 30),
            });
        }
    }
    let stats: Vec<String> = log_text
        .lines()
        .filter(|l| l.starts_with("stat::"))
        .map(str::to_string)
        .collect();
    let b = dir.join("buckets.json");
    io(
        &b,
        fs::write(
            &b,
            serde_json::to_vec_pretty(&buckets).expect("serializable"),
        ),
    )?;
    let outcome = Outcome {
        dir: dir.clone(),
        buckets,
        last,
        stats,
        leak_stats: store.stats(),
        known_hits: store.known_hits().values().sum(),
    };
    let totals = outcome.totals();
    let t = dir.join("summary.json");
    io(
        &t,
        fs::write(
            &t,
            serde_json::to_vec_pretty(&totals).expect("serializable"),
        ),
    )?;
    Ok(outcome)
}

fn list_artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut artifacts: Vec<PathBuf> = fs::read_dir(dir)
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
    artifacts
}

/// The buckets of a campaign directory: each crash artifact re-run and parsed, plus every
/// finding the keep-going harness recorded in `findings/` (with its hit count).
pub fn triage_dir(dir: &Path) -> Result<Vec<Bucket>> {
    let campaign = Campaign::load(dir)?;
    let campaign_log = fs::read_to_string(dir.join("fuzz.log")).unwrap_or_default();
    let stored = FindingStore::open(&dir.join("findings"))
        .map(|s| s.buckets())
        .unwrap_or_default();
    let artifacts = list_artifacts(&dir.join("artifacts"));
    let hash_of = |p: &Path| -> String {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        n.split_once('-').map_or(n, |(_, h)| h).to_string()
    };
    let mut buckets: Vec<Bucket> = Vec::new();
    for art in &artifacts {
        let art = art.clone();
        let name = art.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (ok, text) = campaign.run_once(&art, &[])?;
        let log = art.with_extension("log");
        io(&log, fs::write(&log, &text))?;
        let mut findings = detect::parse(&text);
        if findings.is_empty() {
            // The harness recorded the report when the campaign hit it (see exec's sanitizer
            // callback); the artifact is that input.
            let h = hash_of(&art);
            if let Some(b) = stored.iter().find(|b| b.input_hashes.contains(&h)) {
                let mut f = b.finding.clone();
                f.reason = format!(
                    "{}; does not reproduce alone (re-running the artifact printed no report): recorded when the campaign hit it ({}), the bug needs state left by earlier inputs of the same process",
                    f.reason,
                    b.log.display()
                );
                findings.push(f);
            }
        }
        if findings.is_empty() {
            // Some bugs need state an earlier input of the same process left behind (a stale
            // pointer kept in a static, a cache). The report the campaign printed when it
            // wrote the artifact is then the evidence; say that it does not reproduce alone.
            if let Some(report) = report_in_log(&campaign_log, &art) {
                findings = detect::parse(&report);
                for f in &mut findings {
                    f.reason = format!(
                        "{}; does not reproduce alone (re-running the artifact printed no report): taken from the campaign log, the bug needs state left by earlier inputs of the same process",
                        f.reason
                    );
                }
            }
        }
        if findings.is_empty() && name.starts_with("oom-") {
            // libFuzzer's RSS limit: a true blow-up, reported as such (not a memory error).
            let mut f = Finding::new(
                BugClass::OutOfMemory,
                Tool::LibFuzzer,
                "out of memory: the input drove the process over libFuzzer's RSS limit",
            );
            f.reason = format!("libFuzzer oom artifact; see {}", log.display());
            findings.push(f);
        }
        if findings.is_empty() && name.starts_with("timeout-") {
            continue;
        }
        if findings.is_empty() {
            let mut f = Finding::new(
                BugClass::Crash,
                Tool::Capisan,
                "artifact crashed but no known report was printed",
            );
            f.reason = format!(
                "exited {}; see {}",
                if ok { "cleanly" } else { "with an error" },
                log.display()
            );
            findings.push(f);
        }
        for f in findings {
            add(&mut buckets, f, art.clone());
        }
    }
    let artifact_hashes: Vec<String> = artifacts.iter().map(|a| hash_of(a)).collect();
    for b in stored {
        // Sightings that left an artifact were counted above.
        let hits = b
            .input_hashes
            .iter()
            .filter(|h| !artifact_hashes.contains(h))
            .count();
        if hits > 0 || !buckets.iter().any(|x| x.signature == b.signature.0) {
            add_hits(&mut buckets, b.finding, b.input, hits.max(1));
        }
    }
    Ok(buckets)
}

/// The part of a campaign log that ends where libFuzzer wrote `artifact` ("Test unit written
/// to <artifact>") and starts after the previous artifact or at the top: the report that made it.
pub fn report_in_log(log: &str, artifact: &Path) -> Option<String> {
    let name = artifact.file_name()?.to_str()?;
    let lines: Vec<&str> = log.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.contains("Test unit written to") && l.trim_end().ends_with(name))?;
    let start = lines[..end]
        .iter()
        .rposition(|l| l.contains("Test unit written to"))
        .map_or(0, |i| i + 1);
    Some(lines[start..end].join("\n"))
}

impl Outcome {
    /// The campaign's numbers.
    pub fn totals(&self) -> Totals {
        let p = self.last.clone().unwrap_or(Progress {
            seconds: 0.0,
            execs: 0,
            cov: 0,
            features: 0,
            corpus: 0,
            exec_per_sec: 0,
        });
        let stat = |name: &str| {
            self.stats
                .iter()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_start_matches(':').trim().parse::<u64>().ok())
        };
        Totals {
            execs: stat("stat::number_of_executed_units").unwrap_or(p.execs),
            exec_per_sec: stat("stat::average_exec_per_sec").unwrap_or(p.exec_per_sec),
            cov: p.cov,
            corpus: p.corpus,
            seconds: p.seconds,
            buckets: self.buckets.len(),
            leak_stats: self.leak_stats,
            known_hits: self.known_hits,
        }
    }
}

/// The findings summary as text (what `fuzz` and `triage` print).
pub fn summary_text(outcome: &Outcome) -> String {
    let mut s = format!(
        "== capisan findings: {} bucket(s) in {} ==\n",
        outcome.buckets.len(),
        outcome.dir.display()
    );
    if let Some(p) = &outcome.last {
        s.push_str(&format!(
            "   inputs run: {}  exec/s: {}  coverage: {} edges  corpus: {}\n",
            p.execs, p.exec_per_sec, p.cov, p.corpus
        ));
    }
    for st in &outcome.stats {
        if st.starts_with("stat::number_of_executed_units")
            || st.starts_with("stat::average_exec_per_sec")
        {
            s.push_str(&format!("   {st}\n"));
        }
    }
    let l = outcome.leak_stats;
    if l.suspected > 0 {
        s.push_str(&format!(
            "   leak verdicts: {} suspected, {} confirmed by regrtest's procedure, {} rejected (bounded caches), {} of known buckets\n",
            l.suspected, l.confirmed, l.rejected, l.reused
        ));
    }
    if outcome.known_hits > 0 {
        s.push_str(&format!(
            "   known buckets hit {} time(s) (not reported)\n",
            outcome.known_hits
        ));
    }
    s.push_str(&buckets_text(&outcome.buckets));
    s.push_str(&format!(
        "next: cargo xtask report {} -o report.html\n",
        outcome.dir.display()
    ));
    s
}

/// One paragraph per bucket.
pub fn buckets_text(buckets: &[Bucket]) -> String {
    let mut s = String::new();
    for b in buckets {
        s.push_str(&format!(
            "- [{}] {}  (x{})\n",
            b.class, b.signature, b.count
        ));
        s.push_str(&format!("    {}\n", b.finding.summary));
        if let Some(op) = &b.finding.current_op {
            s.push_str(&format!("    op: {op}\n"));
        }
        if !b.finding.reason.is_empty() {
            s.push_str(&format!("    why: {}\n", b.finding.reason));
        }
        if let Some(f) = b.finding.top_frame() {
            s.push_str(&format!(
                "    at: {} {}:{}\n",
                f.function,
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0)
            ));
        }
        s.push_str(&format!("    artifact: {}\n", b.artifacts[0].display()));
    }
    s
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

    #[test]
    fn parses_fork_mode_status_lines() {
        // A real line of `-fork=2` (libFuzzer's FuzzerFork.cpp format).
        let p = Progress::parse(
            "#14071: cov: 10329 ft: 26561 corp: 1322 exec/s: 469 oom/timeout/crash: 0/0/2 time: 31s job: 9 dft_time: 0",
            31.0,
        )
        .unwrap();
        assert_eq!(
            (p.execs, p.cov, p.features, p.corpus, p.exec_per_sec),
            (14071, 10329, 26561, 1322, 469)
        );
    }

    #[test]
    fn the_report_of_an_artifact_is_found_in_the_campaign_log() {
        let log = "INFO: Seed: 1\n==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\nfirst\nartifact_prefix='/c/artifacts/'; Test unit written to /c/artifacts/crash-aaa\n==2==ERROR: AddressSanitizer: double-free on 0x2\nartifact_prefix='/c/artifacts/'; Test unit written to /c/artifacts/crash-bbb\n";
        let a = report_in_log(log, Path::new("/c/artifacts/crash-aaa")).unwrap();
        assert!(a.contains("heap-use-after-free") && !a.contains("double-free"));
        let b = report_in_log(log, Path::new("/x/crash-bbb")).unwrap();
        assert!(b.contains("double-free") && !b.contains("heap-use-after-free"));
        assert!(report_in_log(log, Path::new("/c/artifacts/crash-ccc")).is_none());
    }

    #[test]
    fn one_directory_per_target_and_module() {
        let root = Path::new("/w");
        let a = default_dir(
            root,
            "capi_sequences",
            Some("pkg._speedups"),
            Variant::Asan,
            "3.13",
        );
        let b = default_dir(root, "capi_sequences", None, Variant::Asan, "3.13");
        assert_ne!(a, b);
        assert!(a.ends_with("capi_sequences-pkg._speedups-asan"));
        let c = default_dir(root, "capi_sequences", None, Variant::Asan, "3.11");
        assert!(c.ends_with("capi_sequences-asan-3.11"));
    }
}
