//! minimize, repro, confirm, show: shrink a crash to its op-sequence core and write a standalone
//! reproducer (`capisan::bundle`), re-run it outside the fuzzer on every built variant
//! (`capisan::confirm`), print what an input decodes to.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capisan::bundle::{self, Minimized};
use capisan::confirm;
use capisan::ops::OpSeq;
use capisan::repro::callables;
use clap::Args;

use crate::ui;

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
}

/// Decode an input the way the fuzz target does and print its ops, naming extension callables
/// (`CallExt bugzoo.extra_decref(s0)`) when the input belongs to an extension campaign.
pub fn show_cmd(args: ShowArgs) -> Result<()> {
    let bytes =
        fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let seq = OpSeq::from_bytes(&bytes);
    let cache = crate::cache().resolve();
    ui::emit(args.json, &seq.0, || {
        let names = callables::names_of_input(&args.input, args.campaign.as_deref(), &cache)
            .unwrap_or_else(|e| {
                eprintln!("show: callables by index, their names are unknown: {e}");
                Vec::new()
            });
        callables::listing(&seq.0, &names)
    })
}

#[derive(Args)]
pub struct ConfirmArgs {
    /// A reproducer directory written by `cargo xtask repro`.
    pub dir: PathBuf,
}

/// ddmin the artifact's op sequence (a spinner counts the candidates).
fn minimize_artifact(artifact: &Path, campaign: Option<&Path>) -> Result<Minimized> {
    let bar = ui::bar(0, ui::style("minimize [{elapsed_precise}] {msg}"), 200);
    let m = bundle::minimize_artifact(artifact, campaign, &mut |n, len| {
        bar.set_message(format!("{n} candidates tried, {len} ops"))
    });
    bar.finish_and_clear();
    Ok(m?)
}

pub fn minimize_cmd(args: MinimizeArgs) -> Result<()> {
    let m = minimize_artifact(&args.artifact, args.campaign.as_deref())?;
    print!("{}", m.text(&args.artifact));
    Ok(())
}

pub fn repro_cmd(args: ReproArgs) -> Result<()> {
    let (artifact, campaign) = (&args.artifact, args.campaign.as_deref());
    let m = minimize_artifact(artifact, campaign)?;
    print!(
        "{}",
        bundle::write_reproducer(&m, artifact, campaign, &args.out)?
    );
    Ok(())
}

pub fn confirm_cmd(args: ConfirmArgs) -> Result<()> {
    let results = confirm::confirm_recorded(&args.dir, &crate::cache().resolve())?;
    print!("{}", confirm::table_text(&results));
    Ok(())
}
