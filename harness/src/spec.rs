//! The optional spec file, `capisan.toml`: what capisan may call in each extension module and
//! with which kinds of arguments. Discovery works without it; a spec narrows it.
//!
//! ```toml
//! [modules."markupsafe._speedups"]
//! only = ["_escape_inner"]      # call only these callables (as --funcs)
//! skip = ["soft_str"]           # never call these (functions that exit, block, or fork)
//!
//! [modules."markupsafe._speedups".args]
//! _escape_inner = ["str"]       # argument kinds by position
//! ```
//!
//! Kinds: `any`, `int`, `float`, `str`, `bytes` (bytes or bytearray), `buffer` (bytes,
//! bytearray, memoryview, array), `list`, `tuple`, `dict`, `callable`, `file` (has `read` or
//! `write`), `none`. An argument the fuzzer drew of another kind is replaced by a vocabulary
//! value of the named kind (py/api.py), so every call still gets the evil values of that kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The argument kinds a spec may name.
pub const KINDS: [&str; 12] = [
    "any", "int", "float", "str", "bytes", "buffer", "list", "tuple", "dict", "callable", "file",
    "none",
];

/// A whole `capisan.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// By importable module name (`pkg._speedups`).
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleSpec>,
}

/// What the spec says of one module.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// Call only these callables (short names); empty: all.
    #[serde(default)]
    pub only: Vec<String>,
    /// Never call these.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Argument kinds by position, by callable.
    #[serde(default)]
    pub args: BTreeMap<String, Vec<String>>,
}

/// A spec that cannot be used: one line each.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not readable.
    #[error("cannot read spec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or fields the spec does not have.
    #[error("spec {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A kind not in [`KINDS`].
    #[error("spec {path}: {module}.{func}: unknown argument kind `{kind}` (kinds: {})", KINDS.join(", "))]
    Kind {
        path: PathBuf,
        module: String,
        func: String,
        kind: String,
    },
    /// A name the module does not have.
    #[error("spec {path}: module {module} has no callable `{name}` (it has: {})", have.join(", "))]
    Unknown {
        path: PathBuf,
        module: String,
        name: String,
        have: Vec<String>,
    },
    /// `only` minus `skip` is empty.
    #[error("spec {path}: nothing of module {module} is left to call")]
    Empty { path: PathBuf, module: String },
    /// The module's callables could not be listed (it does not import).
    #[error("spec {path}: listing the callables of {module}: {message}")]
    Discovery {
        path: PathBuf,
        module: String,
        message: String,
    },
}

/// Apply the spec at `path` to the harness protocol of a campaign on `manifest`: its module's
/// callables are listed by the variant's python (as the harness lists them), and `only`,
/// `skip` and `args` become `CAPISAN_EXT_FUNCS` and `CAPISAN_EXT_ARGS`.
pub fn apply(
    path: &Path,
    manifest: &capisan_build::Manifest,
    harness: &mut crate::env::HarnessEnv,
) -> Result<(), SpecError> {
    let spec = Spec::load(path)?;
    let Some(module) = harness.ext.clone() else {
        return Ok(());
    };
    if !spec.modules.contains_key(&module) {
        return Ok(());
    }
    let ext = crate::repro::callables::ExtTarget {
        module: module.clone(),
        path: harness
            .ext_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        funcs: Vec::new(),
    };
    let names = crate::repro::callables::callable_names(&manifest.python, &manifest.env(), &ext)
        .map_err(|e| SpecError::Discovery {
            path: path.to_path_buf(),
            module: module.clone(),
            message: e.to_string(),
        })?;
    let prefix = format!("{module}.");
    // Evil subclasses (`Type~hook~style`) follow their type: not names of their own.
    let have: Vec<String> = names
        .iter()
        .filter(|n| !n.contains('~'))
        .map(|n| n.strip_prefix(&prefix).unwrap_or(n).to_string())
        .collect();
    let (funcs, args) = spec.resolve(path, &module, &have, &harness.ext_funcs)?;
    (harness.ext_funcs, harness.ext_args) = (funcs, args);
    Ok(())
}

impl Spec {
    /// Read and check `path` (kinds are checked here; callable names by [`Spec::resolve`]).
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::parse(&text, path)
    }

    /// [`Spec::load`] of text already read (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            // toml's message spans several lines (the source excerpt): keep the first and
            // the explanation.
            message: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at line {})", text[..s.start].matches('\n').count() + 1))
                    .unwrap_or_default(),
        })?;
        for (module, m) in &spec.modules {
            for (func, kinds) in &m.args {
                if let Some(kind) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
                    return Err(SpecError::Kind {
                        path: path.to_path_buf(),
                        module: module.clone(),
                        func: func.clone(),
                        kind: kind.clone(),
                    });
                }
            }
        }
        Ok(spec)
    }

    /// What the harness gets for `module`, whose callables (short names, as the prelude lists
    /// them) are `have`: the `--funcs` list (`extra` first narrows it, as the command line's
    /// `--funcs`; empty: all) and the argument kinds as the JSON `CAPISAN_EXT_ARGS` carries
    /// (empty: none). A name the module does not have is an error (a typo would silently
    /// change nothing).
    pub fn resolve(
        &self,
        path: &Path,
        module: &str,
        have: &[String],
        extra: &[String],
    ) -> Result<(Vec<String>, String), SpecError> {
        let Some(m) = self.modules.get(module) else {
            return Ok((extra.to_vec(), String::new()));
        };
        let unknown = |name: &String| SpecError::Unknown {
            path: path.to_path_buf(),
            module: module.to_string(),
            name: name.clone(),
            have: have.to_vec(),
        };
        for name in m.only.iter().chain(&m.skip).chain(m.args.keys()) {
            if !have.contains(name) {
                return Err(unknown(name));
            }
        }
        let narrowed = |n: &&String| {
            (m.only.is_empty() || m.only.contains(n))
                && (extra.is_empty() || extra.contains(n))
                && !m.skip.contains(n)
        };
        let keep: Vec<String> = have.iter().filter(narrowed).cloned().collect();
        if keep.is_empty() {
            return Err(SpecError::Empty {
                path: path.to_path_buf(),
                module: module.to_string(),
            });
        }
        let funcs = if keep.len() == have.len() {
            Vec::new()
        } else {
            keep
        };
        let args = if m.args.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&m.args).expect("strings serialize")
        };
        Ok((funcs, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have() -> Vec<String> {
        ["escape", "soft_str", "_escape_inner"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn only_skip_and_kinds_resolve_against_the_module() {
        let p = Path::new("capisan.toml");
        let spec = Spec::parse(
            "[modules.\"m._s\"]\nskip = [\"soft_str\"]\n[modules.\"m._s\".args]\nescape = [\"str\", \"any\"]\n",
            p,
        )
        .unwrap();
        let (funcs, args) = spec.resolve(p, "m._s", &have(), &[]).unwrap();
        assert_eq!(funcs, ["escape", "_escape_inner"]);
        assert_eq!(args, r#"{"escape":["str","any"]}"#);
        // --funcs narrows further; another module is untouched.
        let (funcs, _) = spec
            .resolve(p, "m._s", &have(), &["escape".into()])
            .unwrap();
        assert_eq!(funcs, ["escape"]);
        assert_eq!(
            spec.resolve(p, "other", &have(), &[]).unwrap(),
            (vec![], String::new())
        );
        // `only` naming everything is "all" (no --funcs list).
        let all = Spec::parse(
            "[modules.m]\nonly = [\"escape\", \"soft_str\", \"_escape_inner\"]\n",
            p,
        )
        .unwrap();
        assert_eq!(
            all.resolve(p, "m", &have(), &[]).unwrap().0,
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_specs_are_one_line_errors() {
        let p = Path::new("capisan.toml");
        let typo = Spec::parse("[modules.m]\nonyl = [\"a\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `onyl`"), "{typo}");
        assert!(typo.contains("line 2"), "{typo}");
        assert!(!typo.contains('\n'), "{typo}");
        let kind = Spec::parse("[modules.m.args]\nf = [\"integer\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(kind.contains("unknown argument kind `integer`"), "{kind}");
        let spec = Spec::parse("[modules.m]\nskip = [\"escpae\"]\n", p).unwrap();
        let e = spec.resolve(p, "m", &have(), &[]).unwrap_err().to_string();
        assert!(
            e.contains("no callable `escpae`") && e.contains("escape, soft_str"),
            "{e}"
        );
        let spec =
            Spec::parse("[modules.m]\nonly = [\"escape\"]\nskip = [\"escape\"]\n", p).unwrap();
        let e = spec.resolve(p, "m", &have(), &[]).unwrap_err().to_string();
        assert!(e.contains("nothing of module m is left"), "{e}");
        assert!(Spec::load(Path::new("/nonexistent/capisan.toml")).is_err());
    }
}
