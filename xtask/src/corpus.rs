//! corpus merge | min | add: corpus hygiene over `corpora/<name>/` (files named by content hash,
//! as libFuzzer names them), wrapping libFuzzer's `-merge=1`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use capisan_build::{Cache, Manifest, Variant};
use clap::{Args, Subcommand};
use sha1::{Digest, Sha1};

use crate::fuzz::build_target;
use crate::replay::CorpusSpec;

#[derive(Args)]
pub struct CorpusArgs {
    #[command(subcommand)]
    pub action: CorpusAction,
}

#[derive(Subcommand)]
pub enum CorpusAction {
    /// Add the inputs of DIRS that cover something new to corpora/NAME (libFuzzer -merge=1).
    Merge {
        /// Corpus to grow: the folder corpora/NAME (also the fuzz target it belongs to).
        name: String,
        /// Directories of new inputs, e.g. a campaign's corpus/ (none: nothing to merge).
        dirs: Vec<PathBuf>,
    },
    /// Shrink corpora/NAME to a subset with the same coverage (libFuzzer -merge=1 into an empty dir).
    Min {
        /// Corpus to shrink: the folder corpora/NAME.
        name: String,
    },
    /// Add a (minimized) input as a regression case of corpora/NAME, named by its content hash.
    Add {
        /// Corpus to add to: the folder corpora/NAME.
        name: String,
        /// The input file (libFuzzer bytes or a JSON op list); it is copied, not moved.
        input: PathBuf,
    },
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// libFuzzer's naming: SHA-1 of the content, hex.
pub fn content_name(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn merge(name: &str, into: &Path, from: &[PathBuf]) -> Result<()> {
    let dir = root().join("corpora").join(name);
    let spec: CorpusSpec = fs::read_to_string(dir.join("capisan.json"))
        .ok()
        .map(|t| serde_json::from_str(&t))
        .transpose()?
        .unwrap_or(CorpusSpec {
            target: name.to_string(),
            ext: None,
        });
    if spec.ext.is_some() {
        bail!("corpus {name} needs an extension; merge it through a fuzz-ext campaign directory instead");
    }
    let m = Manifest::find(&Cache::resolve(None), Variant::Asan, None)?;
    let bin = build_target(&spec.target, Variant::Asan, &m)?;
    let mut args = vec!["-merge=1".to_string(), into.display().to_string()];
    args.extend(from.iter().map(|p| p.display().to_string()));
    let mut cmd = duct::cmd(&bin, &args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    cmd = crate::with_env(cmd, &m.env());
    let out = cmd.run()?;
    if !out.status.success() {
        bail!(
            "libFuzzer -merge=1 failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

pub fn corpus_cmd(args: CorpusArgs) -> Result<()> {
    match args.action {
        CorpusAction::Merge { name, dirs } => {
            let dir = root().join("corpora").join(&name);
            let before = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
            merge(&name, &dir, &dirs)?;
            let after = fs::read_dir(&dir)?.count();
            println!("corpora/{name}: {before} -> {after} files");
        }
        CorpusAction::Min { name } => {
            let dir = root().join("corpora").join(&name);
            let tmp = tempfile::tempdir_in(root().join("corpora"))?;
            let fresh = tmp.path().join("min");
            fs::create_dir(&fresh)?;
            merge(&name, &fresh, std::slice::from_ref(&dir))?;
            // JSON regression cases are kept whatever their coverage: they guard fixed bugs.
            let mut kept = 0;
            for e in fs::read_dir(&dir)?.flatten() {
                let p = e.path();
                let keep_anyway = p.file_name().is_some_and(|n| n == "capisan.json")
                    || fs::read(&p).is_ok_and(|b| {
                        matches!(
                            capisan::ops::classify_input(&p, &b),
                            Ok(capisan::ops::InputKind::Json(_))
                        )
                    });
                if keep_anyway {
                    fs::copy(&p, fresh.join(e.file_name()))?;
                    kept += 1;
                }
            }
            let before = fs::read_dir(&dir)?.count();
            let old = tmp.path().join("old");
            fs::rename(&dir, &old).context("moving the old corpus aside")?;
            fs::rename(&fresh, &dir).context("moving the minimized corpus in")?;
            println!(
                "corpora/{name}: {before} -> {} files ({kept} kept as regression cases)",
                fs::read_dir(&dir)?.count()
            );
        }
        CorpusAction::Add { name, input } => {
            let bytes = fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let kind = capisan::ops::classify_input(&input, &bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
            let dir = root().join("corpora").join(&name);
            fs::create_dir_all(&dir)?;
            let dest = dir.join(content_name(&bytes));
            fs::write(&dest, &bytes)?;
            let what = match kind {
                capisan::ops::InputKind::Json(ops) => format!("JSON op list, {} ops", ops.len()),
                capisan::ops::InputKind::Raw => format!(
                    "raw fuzzer bytes, decoding to {} ops",
                    capisan::ops::OpSeq::from_bytes(&bytes).0.len()
                ),
            };
            println!(
                "added {} ({what})",
                dest.strip_prefix(root()).unwrap_or(&dest).display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_match_libfuzzer() {
        // libFuzzer names an input by the SHA-1 of its bytes.
        assert_eq!(
            super::content_name(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
