//! The names of the extension callables a campaign fuzzed, so its inputs print as
//! `CallExt bugzoo.extra_decref(s0)` instead of `CallExt #116(s0)`.
//!
//! An input stores only an index (`CallExt::func`); the harness resolves it against the sorted
//! list of the module's callables it builds at start-up (the prelude's `ext_callables`, indexed
//! like `func % len`). This module repeats that discovery in a child process of the campaign's
//! variant, with the campaign's environment, so the names are exactly the harness's.

use std::path::{Path, PathBuf};

use capisan_build::{Cache, Manifest, Variant};

/// The file a campaign directory records its target, variant and environment in.
pub const CAMPAIGN_FILE: &str = "campaign.json";

/// Why the callables could not be named.
#[derive(Debug, thiserror::Error)]
pub enum CallablesError {
    /// `campaign.json` is not readable or not what a campaign writes.
    #[error("{path}: {why}; pass the campaign directory of the input")]
    Campaign {
        /// The campaign file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The campaign's variant is not built (any more).
    #[error(transparent)]
    Variant(#[from] capisan_build::BuildError),
    /// The variant's python could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The interpreter.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The module did not import, or has no callables.
    #[error("importing {module} with {python}: {message}")]
    Import {
        /// The module (`CAPISAN_EXT`).
        module: String,
        /// The interpreter that tried.
        python: String,
        /// The exception's last line, or the output's.
        message: String,
    },
}

/// The extension a campaign fuzzed, from its `CAPISAN_EXT`, `CAPISAN_EXT_PATH` and
/// `CAPISAN_EXT_FUNCS` environment (the variables the harness reads at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtTarget {
    /// Importable module name (may be dotted).
    pub module: String,
    /// Directory put first on `sys.path` (empty: none).
    pub path: String,
    /// Only these callables (empty: all).
    pub funcs: Vec<String>,
}

impl ExtTarget {
    /// The target named by `env`, or `None` when it names no extension (a C-API-only campaign).
    pub fn from_env<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<ExtTarget> {
        let mut module = None;
        let mut path = String::new();
        let mut funcs = Vec::new();
        for (k, v) in env {
            match k {
                "CAPISAN_EXT" if !v.is_empty() => module = Some(v.to_string()),
                "CAPISAN_EXT_PATH" => path = v.to_string(),
                "CAPISAN_EXT_FUNCS" => {
                    funcs = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
        Some(ExtTarget {
            module: module?,
            path,
            funcs,
        })
    }
}

/// What naming needs of a campaign: its variant and the environment its inputs ran with.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignTarget {
    /// The campaign directory.
    pub dir: PathBuf,
    /// The variant it fuzzed.
    pub variant: Variant,
    /// The CPython version of that build, when the campaign recorded it (else the cache's
    /// chosen line is used).
    pub version: Option<String>,
    /// The environment of its runs (the variant's runtime environment plus `CAPISAN_*`).
    pub env: Vec<(String, String)>,
}

impl CampaignTarget {
    /// Read `<dir>/campaign.json`. Its `env` may be a list of `[name, value]` pairs or an object.
    pub fn load(dir: &Path) -> Result<CampaignTarget, CallablesError> {
        let path = dir.join(CAMPAIGN_FILE);
        let bad = |why: String| CallablesError::Campaign {
            path: path.clone(),
            why,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let variant: Variant = v
            .get("variant")
            .and_then(|x| x.as_str())
            .ok_or_else(|| bad("no \"variant\"".into()))?
            .parse()
            .map_err(|e| bad(format!("bad \"variant\": {e}")))?;
        let env = match v.get("env") {
            Some(serde_json::Value::Array(pairs)) => pairs
                .iter()
                .filter_map(|p| {
                    let p = p.as_array()?;
                    Some((
                        p.first()?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect(),
            Some(serde_json::Value::Object(map)) => map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            _ => Vec::new(),
        };
        let version = v
            .get("version")
            .and_then(|x| x.as_str())
            .map(str::to_string);
        Ok(CampaignTarget {
            dir: dir.to_path_buf(),
            variant,
            version,
            env,
        })
    }

    /// The campaign an input belongs to: the nearest directory above it holding
    /// `campaign.json` (an artifact sits in `<campaign>/artifacts/`, a corpus input in
    /// `<campaign>/corpus/`). `None` when there is none.
    pub fn of_input(input: &Path) -> Option<Result<CampaignTarget, CallablesError>> {
        let input = std::fs::canonicalize(input).unwrap_or_else(|_| input.to_path_buf());
        input
            .ancestors()
            .skip(1)
            .take(3)
            .find(|d| d.join(CAMPAIGN_FILE).is_file())
            .map(CampaignTarget::load)
    }

    /// The extension it fuzzed, if any.
    pub fn ext(&self) -> Option<ExtTarget> {
        ExtTarget::from_env(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The qualified names (`module.func`) of the callables its inputs index, in the harness's
    /// order; empty for a campaign without an extension. Runs the variant's python once.
    pub fn callable_names(&self, cache: &Cache) -> Result<Vec<String>, CallablesError> {
        let Some(ext) = self.ext() else {
            return Ok(Vec::new());
        };
        let manifest = Manifest::find(cache, self.variant, self.version.as_deref())?;
        callable_names(&manifest.python, &self.env, &ext)
    }
}

/// The callable names for an input of campaign `campaign` (or of the campaign above `input`):
/// empty when the input belongs to no campaign or its campaign fuzzed no extension.
pub fn names_of_input(
    input: &Path,
    campaign: Option<&Path>,
    cache: &Cache,
) -> Result<Vec<String>, CallablesError> {
    let found = match campaign {
        Some(dir) => Some(CampaignTarget::load(dir)),
        None => CampaignTarget::of_input(input),
    };
    found.map_or(Ok(Vec::new()), |c| c?.callable_names(cache))
}

/// `ops` one a line (`#<index> <op>`), naming extension callees from `names` when known.
pub fn listing(ops: &[crate::ops::Op], names: &[String]) -> String {
    let mut out = String::new();
    for (i, op) in ops.iter().enumerate() {
        if names.is_empty() {
            out += &format!("#{i} {op}\n");
        } else {
            out += &format!("#{i} {}\n", op.describe(names));
        }
    }
    out
}

/// The qualified names of `ext`'s callables as the harness lists them, found by `python` (the
/// campaign's variant) running the prelude's `ext_callables` with `env`.
pub fn callable_names(
    python: &Path,
    env: &[(String, String)],
    ext: &ExtTarget,
) -> Result<Vec<String>, CallablesError> {
    let script = format!(
        "{}\nimport json, sys, traceback\ntry:\n    __c = ext_callables({:?}, {:?}, {:?})\nexcept BaseException as e:\n    print('CAPISAN-IMPORT-ERROR', traceback.format_exception_only(e)[-1].strip())\n    raise SystemExit(1)\nprint('CAPISAN-CALLABLES', json.dumps([n for n, _ in __c]))\n",
        crate::PRELUDE_PY,
        ext.module,
        ext.path,
        ext.funcs
    );
    let mut cmd = duct::cmd!(python, "-c", script)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().map_err(|source| CallablesError::Spawn {
        program: python.display().to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let import_error = |message: String| CallablesError::Import {
        module: ext.module.clone(),
        python: python.display().to_string(),
        message,
    };
    if let Some(json) = text
        .lines()
        .find_map(|l| l.strip_prefix("CAPISAN-CALLABLES "))
    {
        let names: Vec<String> =
            serde_json::from_str(json).map_err(|e| import_error(e.to_string()))?;
        if names.is_empty() {
            return Err(import_error("no callables".into()));
        }
        return Ok(names);
    }
    Err(import_error(
        text.lines()
            .find_map(|l| l.strip_prefix("CAPISAN-IMPORT-ERROR "))
            .or_else(|| text.lines().last())
            .unwrap_or("no output")
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_names_callees_only_when_names_are_known() {
        use crate::ops::{Op, Slot};
        let ops = [
            Op::NewList { dst: Slot(0) },
            Op::CallExt {
                func: 1,
                nargs: 1,
                args: [Slot(0); 3],
                dst: Slot(1),
                kw: 0,
            },
        ];
        let names = ["m.a".to_string(), "m.b".to_string()];
        let named = listing(&ops, &names);
        assert_eq!(named.lines().nth(1), Some("#1 s1 = CallExt m.b(s0)"));
        assert!(named.starts_with("#0 s0 = NewList"));
        assert_eq!(listing(&ops, &[]).lines().count(), 2);
    }

    #[test]
    fn ext_target_from_the_campaign_environment() {
        let env = [
            ("PYTHONMALLOC", "malloc"),
            ("CAPISAN_EXT", "bugzoo"),
            ("CAPISAN_EXT_PATH", "/tmp/zoo"),
            ("CAPISAN_EXT_FUNCS", "double_free,overflow"),
        ];
        let t = ExtTarget::from_env(env).unwrap();
        assert_eq!(t.module, "bugzoo");
        assert_eq!(t.path, "/tmp/zoo");
        assert_eq!(t.funcs, ["double_free", "overflow"]);
        assert_eq!(ExtTarget::from_env([("CAPISAN_EXT_FUNCS", "")]), None);
        let t = ExtTarget::from_env([("CAPISAN_EXT", "m"), ("CAPISAN_EXT_FUNCS", "")]).unwrap();
        assert!(t.funcs.is_empty());
    }

    #[test]
    fn campaign_file_with_pairs_or_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let input = artifacts.join("crash-0");
        std::fs::write(&input, b"x").unwrap();
        std::fs::write(
            dir.path().join(CAMPAIGN_FILE),
            r#"{"target": "capi_sequences", "variant": "asan", "version": "3.11.2", "binary": "/x",
                "env": [["PYTHONMALLOC", "malloc"], ["CAPISAN_EXT", "bugzoo"]]}"#,
        )
        .unwrap();
        let c = CampaignTarget::of_input(&input).unwrap().unwrap();
        assert_eq!(c.variant, Variant::Asan);
        assert_eq!(c.version.as_deref(), Some("3.11.2"));
        assert_eq!(c.ext().unwrap().module, "bugzoo");
        std::fs::write(
            dir.path().join(CAMPAIGN_FILE),
            r#"{"variant": "pydebug", "env": {"CAPISAN_EXT": "m", "CAPISAN_EXT_FUNCS": "f"}}"#,
        )
        .unwrap();
        let c = CampaignTarget::of_input(&input).unwrap().unwrap();
        assert_eq!(c.variant, Variant::Pydebug);
        assert_eq!(c.version, None);
        assert_eq!(c.ext().unwrap().funcs, ["f"]);
        let lone = tempfile::tempdir().unwrap();
        let stray = lone.path().join("input");
        std::fs::write(&stray, b"x").unwrap();
        assert!(CampaignTarget::of_input(&stray).is_none());
    }
}
