//! Replay every committed corpus on each variant and report the result as text, JSON, JUnit or
//! SARIF 2.1.0 (what `cargo xtask replay` prints and CI uploads).
//!
//! The forked replay itself runs inside a fuzz binary ([`crate::replay::maybe_replay`]); this
//! module builds that binary and the corpus's extension, hands it the inputs through
//! [`ReplayEnv`], and names what failed with [`detect`]. Corrupt or foreign files are reported
//! by name and skipped, never failed.

use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::{extension, fuzzbin, BuildError, Cache, Manifest, Variant};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Serialize;
use serde_json::json;

use crate::corpus::{CorpusError, CorpusSpec};
use crate::detect::{self, Finding};
use crate::env::{HarnessEnv, ReplayEnv};
use crate::replay::{Limits, Outcome, Status};

/// Why a replay could not run. Failing inputs are results, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A variant, fuzz binary or extension could not be found or built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A corpus's `capisan.json` is unreadable.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// The replaying binary wrote no results (it died before replaying anything).
    #[error("the replay of {corpus} wrote no results; its output:\n{output}")]
    NoResults { corpus: PathBuf, output: String },
    /// A results line that is not an [`Outcome`].
    #[error("{path}: a results line does not parse ({source}); the replaying binary and this library disagree, rebuild both")]
    BadResult {
        path: PathBuf,
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, ReplayError>;

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Variants to replay on, in order.
    pub variants: Vec<Variant>,
    /// Corpora root: one directory per corpus (the checkout's `corpora/`).
    pub corpora: PathBuf,
    /// Only these corpora (directory names); every corpus when empty.
    pub only: Vec<String>,
    /// Per-input timeout and RSS limit.
    pub limits: Limits,
    /// Inputs per forked child (at least 1; see [`crate::replay`]).
    pub batch: u32,
    /// A built extension directory to use instead of building each corpus's extension source.
    pub ext_path: Option<PathBuf>,
}

/// One replayed input on one variant.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub corpus: String,
    pub variant: String,
    /// The input, relative to the workspace root when under it.
    pub input: PathBuf,
    pub status: Status,
    pub seconds: f64,
    pub detail: String,
    pub signature: Option<String>,
    pub finding: Option<Finding>,
}

impl CaseResult {
    /// A crash, hang or blow-up: a regression.
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Crash | Status::Timeout | Status::Oom)
    }
}

/// How a replay report is written: `text`, `json`, `junit` or `sarif` (2.1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
    Sarif,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Format, String> {
        Ok(match s {
            "text" => Format::Text,
            "json" => Format::Json,
            "junit" => Format::Junit,
            "sarif" => Format::Sarif,
            other => {
                return Err(format!(
                    "unknown report format {other}: text, json, junit or sarif"
                ))
            }
        })
    }
}

/// The report of `cases` in `format` (SARIF names files relative to `workspace_root`).
pub fn render(cases: &[CaseResult], format: Format, workspace_root: &Path) -> String {
    match format {
        Format::Text => text(cases),
        Format::Junit => junit(cases),
        Format::Json => serde_json::to_string_pretty(cases).expect("results serialize"),
        Format::Sarif => {
            serde_json::to_string_pretty(&sarif(cases, workspace_root)).expect("SARIF serializes")
        }
    }
}

/// Counts over a replay, for the one-line summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub corrupt: usize,
}

impl Tally {
    /// The one-line summary of a replay of `inputs` inputs.
    pub fn line(&self, inputs: usize) -> String {
        let (failed, corrupt) = (self.failed, self.corrupt);
        format!("replayed {inputs} input(s): {failed} regressed, {corrupt} corrupt")
    }
}

/// Count passes, failures and skipped (corrupt) inputs.
pub fn tally(cases: &[CaseResult]) -> Tally {
    let failed = cases.iter().filter(|c| c.failed()).count();
    let corrupt = cases.iter().filter(|c| c.status == Status::Corrupt).count();
    Tally {
        passed: cases.len() - failed - corrupt,
        failed,
        corrupt,
    }
}

/// Replay the corpora of `req` under `workspace_root` (the checkout holding `fuzz/`; corpus
/// extension sources are relative to it). `capi_sequences` corpora replay on ASan in
/// `capisan-replay` (no libFuzzer, so no trace-cmp callbacks: half the time); the rest in
/// their fuzz target's own binary.
pub fn replay_corpora(
    workspace_root: &Path,
    cache: &Cache,
    req: &ReplayRequest,
) -> Result<Vec<CaseResult>> {
    let mut dirs: Vec<PathBuf> = io(&req.corpora, fs::read_dir(&req.corpora))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            req.only.is_empty()
                || req
                    .only
                    .iter()
                    .any(|o| p.file_name().is_some_and(|n| n == o.as_str()))
        })
        .collect();
    dirs.sort();
    let mut cases = Vec::new();
    for &variant in &req.variants {
        let manifest = Manifest::find(cache, variant, None)?;
        for dir in &dirs {
            cases.extend(replay_dir(workspace_root, cache, &manifest, dir, req)?);
        }
    }
    Ok(cases)
}

/// Replay one corpus directory on one variant.
fn replay_dir(
    root: &Path,
    cache: &Cache,
    manifest: &Manifest,
    dir: &Path,
    req: &ReplayRequest,
) -> Result<Vec<CaseResult>> {
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let spec = CorpusSpec::load(dir)?;
    let binary = if spec.target == "capi_sequences" && manifest.variant == Variant::Asan {
        fuzzbin::build_bin(root, "capisan-replay", manifest)?
    } else {
        fuzzbin::build_fuzz_binary(root, &spec.target, manifest)?
    };
    let mut env = manifest.env();
    if let Some(ext) = &spec.ext {
        let ext_dir = match &req.ext_path {
            Some(p) => p.clone(),
            None => extension::build_extension(cache, manifest, &root.join(&ext.source), None)?.dir,
        };
        let harness = HarnessEnv {
            ext: Some(ext.module.clone()),
            ext_path: Some(ext_dir),
            ext_funcs: ext.funcs.clone(),
            ..HarnessEnv::default()
        };
        env.extend(harness.to_env());
        if let Some(pm) = &ext.pythonmalloc {
            env.retain(|(k, _)| k != "PYTHONMALLOC");
            env.push(("PYTHONMALLOC".into(), pm.clone()));
        }
    }
    let mut inputs: Vec<PathBuf> = io(dir, fs::read_dir(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != crate::corpus::SPEC_FILE))
        .collect();
    inputs.sort();
    let work = io(Path::new("temporary directory"), tempfile::tempdir())?;
    let list = work.path().join("inputs.txt");
    let listing: String = inputs
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    io(&list, fs::write(&list, listing))?;
    let request = ReplayEnv {
        out: work.path().join("results.jsonl"),
        timeout: req.limits.timeout,
        rss_mb: req.limits.rss_mb,
        batch: req.batch.max(1) as usize,
        ..ReplayEnv::new(list)
    };
    env.extend(request.to_env());
    let mut cmd = duct::cmd!(&binary)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in &env {
        cmd = cmd.env(k, v);
    }
    let run = io(&binary, cmd.run())?;
    let results = fs::read_to_string(&request.out).map_err(|_| ReplayError::NoResults {
        corpus: dir.to_path_buf(),
        output: String::from_utf8_lossy(&run.stdout).into_owned(),
    })?;
    let mut cases = Vec::new();
    for line in results.lines() {
        let o: Outcome = serde_json::from_str(line).map_err(|source| ReplayError::BadResult {
            path: request.out.clone(),
            source,
        })?;
        let finding = o
            .log
            .as_ref()
            .and_then(|l| fs::read_to_string(l).ok())
            .and_then(|t| detect::parse(&t).into_iter().next());
        cases.push(CaseResult {
            corpus: name.clone(),
            variant: manifest.variant.to_string(),
            input: o
                .input
                .strip_prefix(root)
                .map(Path::to_path_buf)
                .unwrap_or(o.input.clone()),
            status: o.status,
            seconds: o.seconds,
            detail: o.detail,
            signature: finding.as_ref().map(|f| f.signature().to_string()),
            finding,
        });
    }
    Ok(cases)
}

/// One line per input, then the counts.
pub fn text(cases: &[CaseResult]) -> String {
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
    let t = tally(cases);
    s.push_str(&format!(
        "{} passed, {} failed, {} skipped\n",
        t.passed, t.failed, t.corrupt
    ));
    s
}

/// JUnit XML: one testsuite, a testcase per input and variant; a regression is a `failure`
/// whose message is its bucket signature, a corrupt input is `skipped`.
pub fn junit(cases: &[CaseResult]) -> String {
    let mut w = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    let t = tally(cases);
    let (total, failures, skipped) = (
        cases.len().to_string(),
        t.failed.to_string(),
        t.corrupt.to_string(),
    );
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", "capisan-replay"));
    suite.push_attribute(("tests", total.as_str()));
    suite.push_attribute(("failures", failures.as_str()));
    suite.push_attribute(("skipped", skipped.as_str()));
    let mut events = vec![
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
        Event::Start(suite),
    ];
    for c in cases {
        let mut tc = BytesStart::new("testcase");
        tc.push_attribute(("classname", format!("{}.{}", c.corpus, c.variant).as_str()));
        tc.push_attribute(("name", c.input.display().to_string().as_str()));
        tc.push_attribute(("time", format!("{:.3}", c.seconds).as_str()));
        events.push(Event::Start(tc));
        if c.failed() {
            let mut f = BytesStart::new("failure");
            let msg = c
                .signature
                .clone()
                .unwrap_or_else(|| format!("{:?}", c.status));
            f.push_attribute(("message", msg.as_str()));
            f.push_attribute(("type", c.finding.as_ref().map_or("crash", |f| f.class.id())));
            events.push(Event::Start(f));
            let body = c
                .finding
                .as_ref()
                .map_or(c.detail.clone(), |f| format!("{}\n{}", f.summary, f.reason));
            events.push(Event::Text(BytesText::new(&body).into_owned()));
            events.push(Event::End(BytesEnd::new("failure")));
        } else if c.status == Status::Corrupt {
            let mut sk = BytesStart::new("skipped");
            sk.push_attribute(("message", c.detail.as_str()));
            events.push(Event::Empty(sk));
        }
        events.push(Event::End(BytesEnd::new("testcase")));
    }
    events.push(Event::End(BytesEnd::new("testsuite")));
    for e in events {
        w.write_event(e)
            .expect("writing XML into memory cannot fail");
    }
    String::from_utf8(w.into_inner()).expect("quick-xml writes the UTF-8 it is given")
}

/// SARIF 2.1.0: one rule per bug class, one result per failing input, located at the top
/// frame's file and line (relative to `workspace_root` when under it), fingerprinted by bucket.
pub fn sarif(cases: &[CaseResult], workspace_root: &Path) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = Vec::new();
    let mut results = Vec::new();
    for c in cases.iter().filter(|c| c.failed()) {
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
                    .strip_prefix(workspace_root)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_their_flag_names() {
        for (name, f) in [
            ("text", Format::Text),
            ("json", Format::Json),
            ("junit", Format::Junit),
            ("sarif", Format::Sarif),
        ] {
            assert_eq!(name.parse::<Format>(), Ok(f));
            assert!(render(&[], f, Path::new("/r")).len() < 2000);
        }
        assert!("xml".parse::<Format>().is_err());
        assert!(Limits::new(-1.0, 2048).is_err());
        assert_eq!(Limits::new(2.5, 9).unwrap().timeout.as_millis(), 2500);
    }

    fn case(input: &str, status: Status) -> CaseResult {
        CaseResult {
            corpus: "zoo".into(),
            variant: "asan".into(),
            input: input.into(),
            status,
            seconds: 0.25,
            detail: "detail <&>".into(),
            signature: None,
            finding: None,
        }
    }

    #[test]
    fn junit_counts_failures_and_skips_and_escapes_text() {
        let cases = [
            case("a", Status::Pass),
            case("b", Status::Crash),
            case("c", Status::Corrupt),
        ];
        let xml = junit(&cases);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(
            xml.contains(r#"tests="3" failures="1" skipped="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="Crash" type="crash">"#),
            "{xml}"
        );
        assert!(xml.contains("detail &lt;&amp;&gt;"), "{xml}");
        assert_eq!(
            tally(&cases),
            Tally {
                passed: 1,
                failed: 1,
                corrupt: 1
            }
        );
    }

    #[test]
    fn sarif_has_one_result_per_failure_located_at_the_input_without_a_frame() {
        let cases = [
            case("a", Status::Pass),
            case("corpora/zoo/b", Status::Timeout),
        ];
        let s = sarif(&cases, Path::new("/w"));
        assert_eq!(s["version"], "2.1.0");
        let results = s["runs"][0]["results"].as_array().unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["ruleId"], "crash");
        assert_eq!(
            results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "corpora/zoo/b"
        );
    }
}
