//! report: a static HTML page for a campaign (`capisan::report`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ReportArgs {
    /// Campaign directory written by `cargo xtask fuzz` / `fuzz-ext`.
    pub campaign: PathBuf,
    /// Output HTML file.
    #[arg(short, long, default_value = "report.html")]
    pub out: PathBuf,
}

pub fn report_cmd(args: ReportArgs) -> Result<()> {
    capisan::report::render(&args.campaign, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
