//! corpus merge | min | add: corpus hygiene over `corpora/<name>/` (`capisan::corpus`).

use std::path::PathBuf;

use anyhow::Result;
use capisan::corpus;
use capisan_build::{Cache, Manifest, Variant};
use clap::{Args, Subcommand};

use crate::fuzz::workspace_root;

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

pub fn corpus_cmd(args: CorpusArgs) -> Result<()> {
    let root = workspace_root();
    let asan = || Manifest::find(&Cache::resolve(None), Variant::Asan, None);
    match args.action {
        CorpusAction::Merge { name, dirs } => {
            let r = corpus::merge(&root, &asan()?, &name, &dirs)?;
            println!("corpora/{name}: {} -> {} files", r.before, r.after);
        }
        CorpusAction::Min { name } => {
            let r = corpus::minimize(&root, &asan()?, &name)?;
            println!(
                "corpora/{name}: {} -> {} files ({} kept as regression cases)",
                r.before, r.after, r.kept
            );
        }
        CorpusAction::Add { name, input } => {
            let added = corpus::add(&root, &name, &input)?;
            let shown = added.path.strip_prefix(&root).unwrap_or(&added.path);
            println!("added {} ({})", shown.display(), added.what);
        }
    }
    Ok(())
}
