//! replay: run every committed corpus input on each variant with fork isolation, bucket what
//! fails, and report as text, JSON, JUnit or SARIF 2.1.0. Exit status says whether anything
//! regressed; corrupt or foreign files are reported by name and skipped.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use capisan::detect::{self, Finding};
use capisan::replay::{Outcome, Status};
use capisan_build::{Cache, Manifest, Variant};
use clap::{Args, ValueEnum};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fuzz::{build_bin, build_target};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
    Sarif,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Variants to replay on (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "asan")]
    pub variant: Vec<Variant>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the report here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Corpora root (one directory per corpus); default: the checkout's corpora/.
    #[arg(long)]
    pub corpora: Option<PathBuf>,
    /// Only these corpora (directory names); default: every corpus under the root.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Per-input timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Per-input RSS limit, MB.
    #[arg(long, default_value_t = 2048)]
    pub rss_mb: u64,
    /// Inputs per forked child. A crash, hang or blow-up is charged to the input that was
    /// running (the child says which), and the rest go on in a new child; a crash is re-run
    /// alone in a fresh fork to confirm it. 1 = a fresh fork for every input (~10 ms each on
    /// the ASan variant, several times a typical input).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Use this extension build directory instead of building the corpus's extension source.
    #[arg(long)]
    pub ext_path: Option<PathBuf>,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

/// `corpora/<name>/capisan.json`: which target a corpus belongs to and what it needs.
#[derive(Default, Serialize, Deserialize)]
pub struct CorpusSpec {
    #[serde(default = "default_target")]
    pub target: String,
    /// Extension under test: importable module name and C source (relative to the workspace).
    pub ext: Option<ExtSpec>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct ExtSpec {
    pub module: String,
    pub source: PathBuf,
    #[serde(default)]
    pub funcs: Vec<String>,
    pub pythonmalloc: Option<String>,
}

fn default_target() -> String {
    "capi_sequences".into()
}

/// One replayed input on one variant.
#[derive(Serialize)]
pub struct CaseResult {
    pub corpus: String,
    pub variant: String,
    pub input: PathBuf,
    pub status: Status,
    pub seconds: f64,
    pub detail: String,
    pub signature: Option<String>,
    pub finding: Option<Finding>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Replay everything; returns the cases.
pub fn replay(args: &ReplayArgs) -> Result<Vec<CaseResult>> {
    let cache = Cache::resolve(args.cache.clone());
    let corpora = args
        .corpora
        .clone()
        .unwrap_or_else(|| root().join("corpora"));
    let mut dirs: Vec<PathBuf> = fs::read_dir(&corpora)
        .with_context(|| format!("reading corpora directory {}", corpora.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            args.only.is_empty()
                || args
                    .only
                    .iter()
                    .any(|o| p.file_name().is_some_and(|n| n == o.as_str()))
        })
        .collect();
    dirs.sort();
    let mut cases = Vec::new();
    for variant in &args.variant {
        let manifest = Manifest::find(&cache, *variant, None)?;
        for dir in &dirs {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let spec: CorpusSpec = match fs::read_to_string(dir.join("capisan.json")) {
                Ok(t) => serde_json::from_str(&t)
                    .with_context(|| format!("{}/capisan.json", dir.display()))?,
                Err(_) => CorpusSpec {
                    target: name.clone(),
                    ext: None,
                },
            };
            // capi_sequences corpora replay on ASan in `capisan-replay` (no libFuzzer, so no
            // trace-cmp callbacks: half the time; the ASan runtime has empty defaults for the
            // coverage hooks); the rest replay in the fuzz target's own binary.
            let binary = if spec.target == "capi_sequences" && *variant == Variant::Asan {
                build_bin("capisan-replay", *variant, &manifest)?
            } else {
                build_target(&spec.target, *variant, &manifest)?
            };
            let mut env = manifest.env();
            if let Some(ext) = &spec.ext {
                let ext_dir = match &args.ext_path {
                    Some(p) => p.clone(),
                    None => build_ext(&root().join(&ext.source), *variant, &cache)?,
                };
                env.push(("CAPISAN_EXT".into(), ext.module.clone()));
                env.push(("CAPISAN_EXT_PATH".into(), ext_dir.display().to_string()));
                if !ext.funcs.is_empty() {
                    env.push(("CAPISAN_EXT_FUNCS".into(), ext.funcs.join(",")));
                }
                if let Some(pm) = &ext.pythonmalloc {
                    env.retain(|(k, _)| k != "PYTHONMALLOC");
                    env.push(("PYTHONMALLOC".into(), pm.clone()));
                }
            }
            let mut inputs: Vec<PathBuf> = fs::read_dir(dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n != "capisan.json"))
                .collect();
            inputs.sort();
            let work = tempfile::tempdir()?;
            let list = work.path().join("inputs.txt");
            fs::write(
                &list,
                inputs
                    .iter()
                    .map(|p| format!("{}\n", p.display()))
                    .collect::<String>(),
            )?;
            let out = work.path().join("results.jsonl");
            let mut cmd = duct::cmd!(&binary)
                .stderr_to_stdout()
                .stdout_capture()
                .unchecked();
            cmd = crate::with_env(cmd, &env);
            let run = cmd
                .env("CAPISAN_REPLAY_LIST", &list)
                .env("CAPISAN_REPLAY_OUT", &out)
                .env("CAPISAN_REPLAY_TIMEOUT", args.timeout.to_string())
                .env("CAPISAN_REPLAY_RSS_MB", args.rss_mb.to_string())
                .env("CAPISAN_REPLAY_BATCH", args.batch.to_string())
                .run()?;
            let results = fs::read_to_string(&out).with_context(|| {
                format!(
                    "the replay of {} wrote no results:\n{}",
                    dir.display(),
                    String::from_utf8_lossy(&run.stdout)
                )
            })?;
            for line in results.lines() {
                let o: Outcome = serde_json::from_str(line)?;
                let finding = o
                    .log
                    .as_ref()
                    .and_then(|l| fs::read_to_string(l).ok())
                    .and_then(|t: String| detect::parse(&t).into_iter().next());
                cases.push(CaseResult {
                    corpus: name.clone(),
                    variant: variant.to_string(),
                    input: o
                        .input
                        .strip_prefix(root())
                        .map(Path::to_path_buf)
                        .unwrap_or(o.input.clone()),
                    status: o.status,
                    seconds: o.seconds,
                    detail: o.detail,
                    signature: finding.as_ref().map(|f| f.signature().to_string()),
                    finding,
                });
            }
        }
    }
    Ok(cases)
}

fn build_ext(source: &Path, variant: Variant, cache: &Cache) -> Result<PathBuf> {
    let module = source.file_stem().unwrap().to_string_lossy().into_owned();
    let out = cache.root().join("ext").join(variant.name()).join(&module);
    let r = duct::cmd!(
        std::env::current_exe()?,
        "ext-build",
        source,
        "--variant",
        variant.name(),
        "-o",
        &out
    )
    .stdout_null()
    .stderr_capture()
    .unchecked()
    .run()?;
    if !r.status.success() {
        bail!(
            "building {} for {variant}: {}",
            source.display(),
            String::from_utf8_lossy(&r.stderr)
        );
    }
    Ok(out)
}

fn failed(c: &CaseResult) -> bool {
    matches!(c.status, Status::Crash | Status::Timeout | Status::Oom)
}

pub fn replay_cmd(args: ReplayArgs) -> Result<bool> {
    let cases = replay(&args)?;
    let report = match args.format {
        Format::Text => text(&cases),
        Format::Json => serde_json::to_string_pretty(&cases)?,
        Format::Junit => junit(&cases)?,
        Format::Sarif => serde_json::to_string_pretty(&sarif(&cases))?,
    };
    match &args.output {
        Some(p) => fs::write(p, report).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{report}"),
    }
    let bad = cases.iter().filter(|c| failed(c)).count();
    if args.output.is_some() || !matches!(args.format, Format::Text) {
        eprintln!(
            "replayed {} input(s): {} regressed, {} corrupt",
            cases.len(),
            bad,
            cases.iter().filter(|c| c.status == Status::Corrupt).count()
        );
    }
    Ok(bad == 0)
}

fn text(cases: &[CaseResult]) -> String {
    let mut s = String::new();
    for c in cases {
        let what = match c.status {
            Status::Pass => "pass".to_string(),
            Status::Corrupt => format!("SKIPPED (corrupt: {})", c.detail),
            _ => format!(
                "FAIL {:?} {} [{}]",
                c.status,
                c.detail,
                c.signature.as_deref().unwrap_or("no report")
            ),
        };
        s.push_str(&format!(
            "{:<10} {:<8} {}  {}\n",
            c.corpus,
            c.variant,
            c.input.display(),
            what
        ));
    }
    let bad = cases.iter().filter(|c| failed(c)).count();
    let corrupt = cases.iter().filter(|c| c.status == Status::Corrupt).count();
    s.push_str(&format!(
        "{} passed, {} failed, {} skipped\n",
        cases.len() - bad - corrupt,
        bad,
        corrupt
    ));
    s
}

fn junit(cases: &[CaseResult]) -> Result<String> {
    let mut w = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let failures = cases.iter().filter(|c| failed(c)).count().to_string();
    let skipped = cases
        .iter()
        .filter(|c| c.status == Status::Corrupt)
        .count()
        .to_string();
    let total = cases.len().to_string();
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", "capisan-replay"));
    suite.push_attribute(("tests", total.as_str()));
    suite.push_attribute(("failures", failures.as_str()));
    suite.push_attribute(("skipped", skipped.as_str()));
    w.write_event(Event::Start(suite))?;
    for c in cases {
        let mut tc = BytesStart::new("testcase");
        let classname = format!("{}.{}", c.corpus, c.variant);
        let name = c.input.display().to_string();
        let time = format!("{:.3}", c.seconds);
        tc.push_attribute(("classname", classname.as_str()));
        tc.push_attribute(("name", name.as_str()));
        tc.push_attribute(("time", time.as_str()));
        w.write_event(Event::Start(tc))?;
        if failed(c) {
            let mut f = BytesStart::new("failure");
            let msg = c
                .signature
                .clone()
                .unwrap_or_else(|| format!("{:?}", c.status));
            f.push_attribute(("message", msg.as_str()));
            f.push_attribute(("type", c.finding.as_ref().map_or("crash", |f| f.class.id())));
            w.write_event(Event::Start(f))?;
            let body = c
                .finding
                .as_ref()
                .map_or(c.detail.clone(), |f| format!("{}\n{}", f.summary, f.reason));
            w.write_event(Event::Text(BytesText::new(&body)))?;
            w.write_event(Event::End(BytesEnd::new("failure")))?;
        } else if c.status == Status::Corrupt {
            let mut sk = BytesStart::new("skipped");
            sk.push_attribute(("message", c.detail.as_str()));
            w.write_event(Event::Empty(sk))?;
        }
        w.write_event(Event::End(BytesEnd::new("testcase")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    Ok(String::from_utf8(w.into_inner())?)
}

/// SARIF 2.1.0: one rule per bug class, one result per failing input, located at the top
/// frame's file and line.
pub fn sarif(cases: &[CaseResult]) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = Vec::new();
    let mut results = Vec::new();
    for c in cases.iter().filter(|c| failed(c)) {
        let (rule, text) = match &c.finding {
            Some(f) => (
                f.class.id().to_string(),
                format!(
                    "{}: {} ({})",
                    f.class.name(),
                    f.summary,
                    c.signature.clone().unwrap_or_default()
                ),
            ),
            None => ("crash".to_string(), format!("{:?}: {}", c.status, c.detail)),
        };
        if !rules.iter().any(|r| r["id"] == rule.as_str()) {
            rules.push(json!({"id": rule, "shortDescription": {"text": rule.replace('-', " ")}}));
        }
        let frame = c.finding.as_ref().and_then(|f| f.top_frame().cloned());
        let location = match frame
            .as_ref()
            .and_then(|f| f.file.clone().map(|file| (file, f.line.unwrap_or(1))))
        {
            Some((file, line)) => {
                let uri = Path::new(&file)
                    .strip_prefix(root())
                    .map(|p| p.display().to_string())
                    .unwrap_or(file);
                json!({"physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": line.max(1)}}})
            }
            None => {
                json!({"physicalLocation": {"artifactLocation": {"uri": c.input.display().to_string()}}})
            }
        };
        results.push(json!({
            "ruleId": rule,
            "level": "error",
            "message": {"text": text},
            "locations": [location],
            "partialFingerprints": {"capisanBucket/v1": c.signature.clone().unwrap_or_default()},
            "properties": {"input": c.input.display().to_string(), "variant": c.variant},
        }));
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "capisan", "informationUri": "https://github.com/capisan/capisan", "rules": rules}}, "results": results}],
    })
}
