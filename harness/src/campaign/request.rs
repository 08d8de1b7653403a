//! A campaign as a user asks for it (`cargo xtask fuzz`, `fuzz-ext`, `fuzz-pkg`), turned into a
//! [`CampaignSpec`] once its fuzz binary is built; and triage against a known-buckets file,
//! whose verdict nightly fuzzing uses (fail on new bugs, not on known ones).

use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::{Manifest, Variant};

use super::{buckets_text, default_dir, io, triage_dir, Bucket, CampaignSpec, Result, Status};
use crate::env::{FailAlloc, HarnessEnv};
use crate::findings::{is_known, read_known};

/// What to fuzz, with the defaults of `cargo xtask fuzz`: checks on, the seed corpus
/// `corpora/<target>/`, one process, keep going across findings.
#[derive(Clone, Debug)]
pub struct CampaignRequest {
    /// Fuzz target (a file under `fuzz/fuzz_targets/`).
    pub target: String,
    pub variant: Variant,
    /// Importable name of the extension under test; `None`: the C API alone.
    pub ext: Option<String>,
    /// Where the extension is importable from (made absolute in the spec).
    pub ext_path: Option<PathBuf>,
    /// Only these callables of the extension; empty: every public callable.
    pub funcs: Vec<String>,
    /// PYTHONMALLOC override (default: the variant's).
    pub pythonmalloc: Option<String>,
    /// Campaign directory; `None`: [`default_dir`].
    pub out: Option<PathBuf>,
    pub seconds: u64,
    /// libFuzzer seed; `None`: libFuzzer picks one.
    pub seed: Option<u64>,
    /// Property checks (and totals) on.
    pub checks: bool,
    /// PyGC_Collect after every input.
    pub collect: bool,
    /// Start from `corpora/<target>/` of the checkout.
    pub seed_corpus: bool,
    pub jobs: usize,
    /// Known-buckets file (made absolute in the spec).
    pub known: Option<PathBuf>,
    pub stop_at_first_finding: bool,
    /// Inputs arm allocation failures inside extension calls.
    pub fail_alloc: bool,
    /// Extra libFuzzer arguments.
    pub libfuzzer: Vec<String>,
    /// `capisan.toml` ([`crate::spec`]).
    pub spec_file: Option<PathBuf>,
}

impl CampaignRequest {
    /// `seconds` of `target` on `variant` with every default.
    pub fn new(target: &str, variant: Variant, seconds: u64) -> CampaignRequest {
        CampaignRequest {
            target: target.to_string(),
            variant,
            ext: None,
            ext_path: None,
            funcs: Vec::new(),
            pythonmalloc: None,
            out: None,
            seconds,
            seed: None,
            checks: true,
            collect: false,
            seed_corpus: true,
            jobs: 1,
            known: None,
            stop_at_first_finding: false,
            fail_alloc: false,
            libfuzzer: Vec::new(),
            spec_file: None,
        }
    }

    /// The harness protocol of this campaign (paths made absolute).
    pub fn harness_env(&self) -> HarnessEnv {
        let absolute = |p: &PathBuf| fs::canonicalize(p).unwrap_or(p.clone());
        HarnessEnv {
            ext: self.ext.clone(),
            ext_path: self.ext_path.as_ref().map(absolute),
            ext_funcs: self.funcs.clone(),
            checks: self.checks,
            totals: self.checks,
            collect: self.collect,
            fail_alloc: if self.fail_alloc {
                FailAlloc::On
            } else {
                FailAlloc::Off
            },
            known: self.known.as_ref().map(absolute),
            ..HarnessEnv::default()
        }
    }

    /// The campaign directory in the checkout `root` for a build of CPython line `line` (`X.Y`),
    /// and its seed corpora.
    pub fn dir_and_seeds(&self, root: &Path, line: &str) -> (PathBuf, Vec<PathBuf>) {
        let dir = self.out.clone().unwrap_or_else(|| {
            default_dir(root, &self.target, self.ext.as_deref(), self.variant, line)
        });
        let seeds = root.join("corpora").join(&self.target);
        (
            dir,
            if self.seed_corpus {
                vec![seeds]
            } else {
                vec![]
            },
        )
    }

    /// The spec of this campaign in the checkout `root`, on `manifest` (of [`Self::variant`])
    /// with the fuzz `binary` built against it.
    pub fn spec(&self, root: &Path, manifest: Manifest, binary: PathBuf) -> CampaignSpec {
        let (dir, seeds) = self.dir_and_seeds(root, manifest.line());
        CampaignSpec {
            target: self.target.clone(),
            manifest,
            binary,
            dir,
            harness: self.harness_env(),
            pythonmalloc: self.pythonmalloc.clone(),
            seconds: self.seconds,
            seed: self.seed,
            jobs: self.jobs,
            stop_at_first_finding: self.stop_at_first_finding,
            seeds,
            libfuzzer: self.libfuzzer.clone(),
            spec_file: self.spec_file.clone(),
        }
    }
}

impl Status {
    /// One status line: seconds, inputs, exec/s, coverage, corpus, buckets.
    pub fn line(&self) -> String {
        format!(
            "{:>4}s  inputs {}  exec/s {}  cov {}  corpus {}  buckets {}",
            self.elapsed.as_secs(),
            self.execs,
            self.exec_per_sec,
            self.cov,
            self.corpus,
            self.buckets
        )
    }
}

/// A triaged campaign directory and, against a known-buckets file, what is new.
#[derive(Debug, Clone)]
pub struct Triage {
    pub dir: PathBuf,
    pub buckets: Vec<Bucket>,
    /// Signatures not in the known-buckets file; `None` without one.
    pub new: Option<Vec<String>>,
}

impl Triage {
    /// Nothing new: always true without a known-buckets file.
    pub fn passed(&self) -> bool {
        self.new.as_ref().is_none_or(|n| n.is_empty())
    }

    /// The buckets as `cargo xtask triage` prints them.
    pub fn text(&self) -> String {
        format!(
            "== capisan findings: {} bucket(s) in {} ==\n{}",
            self.buckets.len(),
            self.dir.display(),
            buckets_text(&self.buckets)
        )
    }
}

/// Triage `dir` ([`triage_dir`]), record its buckets as `buckets.json`, and compare them with
/// the `known` file (one signature a line, `#` comments).
pub fn triage_recorded(dir: &Path, known: Option<&Path>) -> Result<Triage> {
    let buckets = triage_dir(dir)?;
    let path = dir.join("buckets.json");
    let json = serde_json::to_vec_pretty(&buckets).expect("buckets serialize");
    io(&path, fs::write(&path, json))?;
    let new = match known {
        None => None,
        Some(k) => {
            let known = read_known(&io(k, fs::read_to_string(k))?);
            let new = buckets.iter().map(|b| &b.signature);
            Some(new.filter(|s| !is_known(&known, s)).cloned().collect())
        }
    };
    Ok(Triage {
        dir: dir.to_path_buf(),
        buckets,
        new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_the_seed_corpus_and_default_dir_of_fuzz() {
        let root = Path::new("/checkout");
        let mut r = CampaignRequest::new("capi_sequences", Variant::Asan, 60);
        r.ext = Some("bugzoo".into());
        r.fail_alloc = true;
        let (dir, seeds) = r.dir_and_seeds(root, "3.13");
        assert_eq!(
            dir,
            Path::new("/checkout/target/capisan/capi_sequences-bugzoo-asan")
        );
        assert_eq!(
            seeds,
            vec![PathBuf::from("/checkout/corpora/capi_sequences")]
        );
        let env = r.harness_env();
        assert_eq!(env.fail_alloc, FailAlloc::On);
        assert!(env.checks && env.totals && !env.collect);
        (r.seed_corpus, r.checks) = (false, false);
        assert!(r.dir_and_seeds(root, "3.13").1.is_empty() && !r.harness_env().totals);
    }

    #[test]
    fn triage_passes_without_a_known_file_and_fails_on_a_new_bucket() {
        let t = Triage {
            dir: "/c".into(),
            buckets: Vec::new(),
            new: None,
        };
        assert!(t.passed());
        assert_eq!(t.text(), "== capisan findings: 0 bucket(s) in /c ==\n");
        let t = Triage {
            new: Some(vec!["x|y".into()]),
            ..t
        };
        assert!(!t.passed());
    }
}
