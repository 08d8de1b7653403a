//! The committed corpora, `corpora/<name>/`: one folder per corpus, inputs named by the SHA-1 of
//! their content (as libFuzzer names them), and an optional [`SPEC_FILE`] saying which fuzz
//! target the corpus belongs to and which extension it needs. Hygiene — merge new inputs, shrink
//! to the same coverage, add a regression case — goes through libFuzzer's `-merge=1`.

use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::{fuzzbin, BuildError, Manifest};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::ops::{classify_input, InputKind, OpSeq};

/// The corpus description inside a corpus folder.
pub const SPEC_FILE: &str = "capisan.json";

/// Why a corpus operation failed. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A [`SPEC_FILE`] that does not parse.
    #[error("{path}: not a corpus description ({source}); expected {{\"target\": ..., \"ext\": {{\"module\": ..., \"source\": ...}}}}")]
    Spec {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// libFuzzer cannot merge a corpus whose target needs an extension it is not given.
    #[error(
        "corpus {0} needs an extension; merge it through a fuzz-ext campaign directory instead"
    )]
    NeedsExtension(String),
    /// The fuzz binary could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// libFuzzer's `-merge=1` failed.
    #[error("libFuzzer -merge=1 failed:\n{0}")]
    MergeFailed(String),
    /// The file is not a capisan input.
    #[error("{path}: {message}")]
    NotAnInput { path: PathBuf, message: String },
}

type Result<T> = std::result::Result<T, CorpusError>;

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `corpora/<name>/capisan.json`: which target a corpus belongs to and what it needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CorpusSpec {
    #[serde(default = "default_target")]
    pub target: String,
    /// Extension under test: importable module name and C source (relative to the workspace).
    pub ext: Option<ExtSpec>,
}

/// The extension a corpus drives.
#[derive(Debug, Serialize, Deserialize, Clone)]
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

impl CorpusSpec {
    /// The spec of the corpus in `dir`; without a [`SPEC_FILE`], the corpus belongs to the
    /// fuzz target named like the folder and needs no extension.
    pub fn load(dir: &Path) -> Result<CorpusSpec> {
        let path = dir.join(SPEC_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| CorpusError::Spec { path, source })
            }
            Err(_) => Ok(CorpusSpec {
                target: dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                ext: None,
            }),
        }
    }
}

/// The folder of corpus `name` in the checkout at `workspace_root`.
pub fn corpus_dir(workspace_root: &Path, name: &str) -> PathBuf {
    workspace_root.join("corpora").join(name)
}

/// libFuzzer's naming: SHA-1 of the content, hex.
pub fn content_name(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Files in a corpus folder before and after an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resized {
    pub before: usize,
    pub after: usize,
    /// JSON regression cases kept whatever their coverage (minimize only).
    pub kept: usize,
}

impl Resized {
    /// What `cargo xtask corpus merge` (or `min`, when `minimized`) prints for corpus `name`.
    pub fn text(&self, name: &str, minimized: bool) -> String {
        let (before, after, kept) = (self.before, self.after, self.kept);
        let kept = if minimized {
            format!(" ({kept} kept as regression cases)")
        } else {
            String::new()
        };
        format!("corpora/{name}: {before} -> {after} files{kept}\n")
    }
}

/// Run libFuzzer's `-merge=1` of `from` into `into` with the fuzz target of corpus `name`,
/// built against `manifest` (the asan variant).
fn merge_into(
    root: &Path,
    manifest: &Manifest,
    name: &str,
    into: &Path,
    from: &[PathBuf],
) -> Result<()> {
    let spec = CorpusSpec::load(&corpus_dir(root, name))?;
    if spec.ext.is_some() {
        return Err(CorpusError::NeedsExtension(name.to_string()));
    }
    let bin = fuzzbin::build_fuzz_binary(root, &spec.target, manifest)?;
    let mut args = vec!["-merge=1".to_string(), into.display().to_string()];
    args.extend(from.iter().map(|p| p.display().to_string()));
    let mut cmd = duct::cmd(&bin, &args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in manifest.env() {
        cmd = cmd.env(k, v);
    }
    let out = io(&bin, cmd.run())?;
    if !out.status.success() {
        return Err(CorpusError::MergeFailed(
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    Ok(())
}

/// Add the inputs of `dirs` that cover something new to corpus `name`.
pub fn merge(root: &Path, manifest: &Manifest, name: &str, dirs: &[PathBuf]) -> Result<Resized> {
    let dir = corpus_dir(root, name);
    let before = count(&dir);
    merge_into(root, manifest, name, &dir, dirs)?;
    Ok(Resized {
        before,
        after: io(&dir, fs::read_dir(&dir))?.count(),
        kept: 0,
    })
}

/// Shrink corpus `name` to a subset with the same coverage. JSON regression cases (and the
/// [`SPEC_FILE`]) are kept whatever their coverage: they guard fixed bugs. The old folder is
/// swapped out only after the new one is complete.
pub fn minimize(root: &Path, manifest: &Manifest, name: &str) -> Result<Resized> {
    let dir = corpus_dir(root, name);
    let corpora = root.join("corpora");
    let tmp = io(&corpora, tempfile::tempdir_in(&corpora))?;
    let fresh = tmp.path().join("min");
    io(&fresh, fs::create_dir(&fresh))?;
    merge_into(root, manifest, name, &fresh, std::slice::from_ref(&dir))?;
    let mut kept = 0;
    for e in io(&dir, fs::read_dir(&dir))?.flatten() {
        let p = e.path();
        let keep_anyway = p.file_name().is_some_and(|n| n == SPEC_FILE)
            || fs::read(&p).is_ok_and(|b| matches!(classify_input(&p, &b), Ok(InputKind::Json(_))));
        if keep_anyway {
            let to = fresh.join(e.file_name());
            io(&to, fs::copy(&p, &to))?;
            kept += 1;
        }
    }
    let before = io(&dir, fs::read_dir(&dir))?.count();
    let old = tmp.path().join("old");
    io(&dir, fs::rename(&dir, &old))?;
    io(&dir, fs::rename(&fresh, &dir))?;
    Ok(Resized {
        before,
        after: io(&dir, fs::read_dir(&dir))?.count(),
        kept,
    })
}

/// A regression case added by [`add`].
#[derive(Debug, Clone)]
pub struct Added {
    /// Where it was written: `corpora/<name>/<sha1>`.
    pub path: PathBuf,
    /// What it is: a JSON op list of so many ops, or raw bytes decoding to so many.
    pub what: String,
}

impl Added {
    /// What `cargo xtask corpus add` prints (the path relative to the checkout `root`).
    pub fn text(&self, root: &Path) -> String {
        let shown = self.path.strip_prefix(root).unwrap_or(&self.path);
        format!("added {} ({})\n", shown.display(), self.what)
    }
}

/// Copy `input` (libFuzzer bytes or a JSON op list) into corpus `name`, named by its content
/// hash; a `.json` file that is not an op list is refused.
pub fn add(root: &Path, name: &str, input: &Path) -> Result<Added> {
    let bytes = io(input, fs::read(input))?;
    let kind = classify_input(input, &bytes).map_err(|message| CorpusError::NotAnInput {
        path: input.to_path_buf(),
        message,
    })?;
    let dir = corpus_dir(root, name);
    io(&dir, fs::create_dir_all(&dir))?;
    let path = dir.join(content_name(&bytes));
    io(&path, fs::write(&path, &bytes))?;
    let what = match kind {
        InputKind::Json(ops) => format!("JSON op list, {} ops", ops.len()),
        InputKind::Raw => format!(
            "raw fuzzer bytes, decoding to {} ops",
            OpSeq::from_bytes(&bytes).0.len()
        ),
    };
    Ok(Added { path, what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_and_additions_say_what_changed() {
        let r = Resized {
            before: 10,
            after: 4,
            kept: 2,
        };
        assert_eq!(r.text("c", false), "corpora/c: 10 -> 4 files\n");
        assert_eq!(
            r.text("c", true),
            "corpora/c: 10 -> 4 files (2 kept as regression cases)\n"
        );
        let a = Added {
            path: "/r/corpora/c/ab12".into(),
            what: "JSON op list, 2 ops".into(),
        };
        assert_eq!(
            a.text(Path::new("/r")),
            "added corpora/c/ab12 (JSON op list, 2 ops)\n"
        );
    }

    #[test]
    fn names_match_libfuzzer() {
        // libFuzzer names an input by the SHA-1 of its bytes.
        assert_eq!(
            content_name(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn a_folder_without_a_spec_is_the_target_of_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("capi_sequences");
        fs::create_dir(&dir).unwrap();
        let spec = CorpusSpec::load(&dir).unwrap();
        assert_eq!(spec.target, "capi_sequences");
        assert!(spec.ext.is_none());
        fs::write(
            dir.join(SPEC_FILE),
            r#"{"ext": {"module": "zoo", "source": "z.c"}}"#,
        )
        .unwrap();
        let spec = CorpusSpec::load(&dir).unwrap();
        assert_eq!(spec.target, "capi_sequences");
        assert_eq!(spec.ext.unwrap().module, "zoo");
        fs::write(dir.join(SPEC_FILE), "{").unwrap();
        assert!(matches!(
            CorpusSpec::load(&dir),
            Err(CorpusError::Spec { .. })
        ));
    }

    #[test]
    fn add_names_by_content_and_refuses_bad_json() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("case.json");
        fs::write(&input, "not json").unwrap();
        assert!(matches!(
            add(tmp.path(), "c", &input),
            Err(CorpusError::NotAnInput { .. })
        ));
        let raw = tmp.path().join("raw");
        fs::write(&raw, b"\x01\x02\x03").unwrap();
        let added = add(tmp.path(), "c", &raw).unwrap();
        assert_eq!(
            added.path,
            corpus_dir(tmp.path(), "c").join(content_name(b"\x01\x02\x03"))
        );
        assert!(added.what.starts_with("raw fuzzer bytes"));
    }
}
