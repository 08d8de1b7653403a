//! The committed corpora (`corpora/<name>/`): corpus merge | min | add, their hygiene
//! (`capisan::corpus`), and replay, every input run on each variant with fork isolation
//! (`capisan::replay_report`) and reported as text, JSON, JUnit or SARIF 2.1.0; its exit status
//! says whether anything regressed.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use capisan::corpus;
use capisan::replay::Limits;
use capisan::replay_report::{self, Format, ReplayRequest};
use capisan_build::Variant;
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
    let asan = || crate::cache().manifest(Variant::Asan).map(|(_, m)| m);
    let text = match args.action {
        CorpusAction::Merge { name, dirs } => {
            corpus::merge(&root, &asan()?, &name, &dirs)?.text(&name, false)
        }
        CorpusAction::Min { name } => corpus::minimize(&root, &asan()?, &name)?.text(&name, true),
        CorpusAction::Add { name, input } => corpus::add(&root, &name, &input)?.text(&root),
    };
    print!("{text}");
    Ok(())
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Variants to replay on (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "asan")]
    pub variant: Vec<Variant>,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json", "junit", "sarif"])]
    pub format: String,
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
}

/// Replay and print the report; `Ok(false)` when an input regressed.
pub fn replay_cmd(args: ReplayArgs) -> Result<bool> {
    let root = workspace_root();
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let req = ReplayRequest {
        variants: args.variant.clone(),
        corpora: args.corpora.clone().unwrap_or_else(|| root.join("corpora")),
        only: args.only.clone(),
        limits: Limits::new(args.timeout, args.rss_mb).map_err(anyhow::Error::msg)?,
        batch: args.batch,
        ext_path: args.ext_path.clone(),
    };
    let cases = replay_report::replay_corpora(&root, &crate::cache().resolve(), &req)?;
    let report = replay_report::render(&cases, format, &root);
    match &args.output {
        Some(p) => fs::write(p, report).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{report}"),
    }
    let t = replay_report::tally(&cases);
    if args.output.is_some() || format != Format::Text {
        eprintln!("{}", t.line(cases.len()));
    }
    if t.failed > 0 {
        eprintln!("replay: regressions found");
    }
    Ok(t.failed == 0)
}
