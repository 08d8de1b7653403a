//! replay: run every committed corpus input on each variant with fork isolation
//! (`capisan::replay_report`) and report as text, JSON, JUnit or SARIF 2.1.0. Exit status says
//! whether anything regressed.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capisan::replay::Limits;
use capisan::replay_report::{self, ReplayRequest};
use capisan_build::{Cache, Variant};
use clap::{Args, ValueEnum};

use crate::fuzz::workspace_root;

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

/// Replay and print the report; `Ok(false)` when an input regressed.
pub fn replay_cmd(args: ReplayArgs) -> Result<bool> {
    let root = workspace_root();
    let req = ReplayRequest {
        variants: args.variant.clone(),
        corpora: args.corpora.clone().unwrap_or_else(|| root.join("corpora")),
        only: args.only.clone(),
        limits: Limits {
            timeout: Duration::try_from_secs_f64(args.timeout)
                .context("--timeout must be a non-negative number of seconds")?,
            rss_mb: args.rss_mb,
        },
        batch: args.batch,
        ext_path: args.ext_path.clone(),
    };
    let cases = replay_report::replay_corpora(&root, &Cache::resolve(args.cache.clone()), &req)?;
    let report = match args.format {
        Format::Text => replay_report::text(&cases),
        Format::Json => serde_json::to_string_pretty(&cases)?,
        Format::Junit => replay_report::junit(&cases),
        Format::Sarif => serde_json::to_string_pretty(&replay_report::sarif(&cases, &root))?,
    };
    match &args.output {
        Some(p) => fs::write(p, report).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{report}"),
    }
    let t = replay_report::tally(&cases);
    if args.output.is_some() || !matches!(args.format, Format::Text) {
        eprintln!(
            "replayed {} input(s): {} regressed, {} corrupt",
            cases.len(),
            t.failed,
            t.corrupt
        );
    }
    Ok(t.failed == 0)
}
