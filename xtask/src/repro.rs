//! minimize, repro, confirm, show: shrink a crash to its op-sequence core and write a standalone
//! reproducer (`capisan::bundle`), re-run it outside the fuzzer on every built variant
//! (`capisan::confirm`), print what an input decodes to.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use capisan::bundle::{self, Minimized};
use capisan::confirm;
use capisan::ops::OpSeq;
use capisan::repro;
use capisan::repro::callables::CampaignTarget;
use capisan_build::Cache;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct MinimizeArgs {
    /// A crash artifact written by a campaign (its campaign directory is found from it).
    pub artifact: PathBuf,
    /// The campaign directory, if the artifact was moved out of its campaign; default: the
    /// nearest directory above the artifact with a campaign.json.
    #[arg(long)]
    pub campaign: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReproArgs {
    /// A crash artifact (minimized first if no `.min.json` exists beside it).
    pub artifact: PathBuf,
    /// Output directory for the reproducer.
    #[arg(short, long)]
    pub out: PathBuf,
    /// The campaign directory, if the artifact was moved out of its campaign; default: the
    /// nearest directory above the artifact with a campaign.json.
    #[arg(long)]
    pub campaign: Option<PathBuf>,
}

#[derive(Args)]
pub struct ShowArgs {
    /// A fuzz input (libFuzzer bytes or a JSON op list).
    pub input: PathBuf,
    /// Print the decoded ops as a JSON op list (a replayable input).
    #[arg(long)]
    pub json: bool,
    /// The campaign the input belongs to, for the names of its extension's callables; default:
    /// the nearest directory above the input with a campaign.json (none: callables by index).
    #[arg(long)]
    pub campaign: Option<PathBuf>,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

/// Decode an input the way the fuzz target does and print its ops, naming extension callables
/// (`CallExt bugzoo.extra_decref(s0)`) when the input belongs to an extension campaign.
pub fn show_cmd(args: ShowArgs) -> Result<()> {
    let bytes =
        fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let seq = OpSeq::from_bytes(&bytes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&seq.0)?);
        return Ok(());
    }
    let campaign = match &args.campaign {
        Some(dir) => Some(CampaignTarget::load(dir)),
        None => CampaignTarget::of_input(&args.input),
    };
    let names = match campaign {
        None => Vec::new(),
        Some(c) => match c.and_then(|c| c.callable_names(&Cache::resolve(args.cache.clone()))) {
            Ok(names) => names,
            Err(e) => {
                eprintln!("show: callables by index, their names are unknown: {e}");
                Vec::new()
            }
        },
    };
    for (i, op) in seq.0.iter().enumerate() {
        if names.is_empty() {
            println!("#{i} {op}");
        } else {
            println!("#{i} {}", op.describe(&names));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ConfirmArgs {
    /// A reproducer directory written by `cargo xtask repro`.
    pub dir: PathBuf,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

/// ddmin the artifact's op sequence (a spinner counts the candidates).
fn minimize_artifact(artifact: &Path, campaign: Option<&Path>) -> Result<Minimized> {
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("minimize [{elapsed_precise}] {msg}").unwrap());
    bar.enable_steady_tick(Duration::from_millis(200));
    let m = bundle::minimize_artifact(artifact, campaign, &mut |n, len| {
        bar.set_message(format!("{n} candidates tried, {len} ops"))
    });
    bar.finish_and_clear();
    Ok(m?)
}

pub fn minimize_cmd(args: MinimizeArgs) -> Result<()> {
    let m = minimize_artifact(&args.artifact, args.campaign.as_deref())?;
    println!(
        "{}: {} ops -> {} ops in {:.1} s ({} candidates), signature {}",
        args.artifact.display(),
        m.original_ops,
        m.ops.len(),
        m.seconds,
        m.tries,
        m.finding.signature()
    );
    for (i, op) in m.resolved.ops.iter().enumerate() {
        println!("  #{i} {}", repro::describe(op, &m.resolved));
    }
    println!(
        "minimized input: {} (the original artifact is untouched)",
        m.min_path.display()
    );
    Ok(())
}

pub fn repro_cmd(args: ReproArgs) -> Result<()> {
    let m = minimize_artifact(&args.artifact, args.campaign.as_deref())?;
    let (_, c) = bundle::campaign_of(&args.artifact, args.campaign.as_deref())?;
    bundle::write_bundle(&m, &c, &args.out)?;
    println!(
        "reproducer for {} ({} ops) in {}",
        m.finding.signature(),
        m.resolved.ops.len(),
        args.out.display()
    );
    Ok(())
}

pub fn confirm_cmd(args: ConfirmArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache);
    let results = confirm::confirm_dir(&args.dir, &cache)?;
    println!(
        "{:<10} {:<13} {:<11} what it saw",
        "variant", "PYTHONMALLOC", "reproduced"
    );
    for r in &results {
        println!(
            "{:<10} {:<13} {:<11} {}",
            r.variant, r.pythonmalloc, r.reproduced, r.detail
        );
    }
    if !results.iter().any(|r| r.reproduced) {
        println!("only reproduces inside the fuzzer: state carried over from earlier inputs, or a harness problem");
    }
    fs::write(
        args.dir.join("confirm.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    Ok(())
}
