//! oom-sweep: re-run one input or one call with the failing allocation moved to 1, 2, … K
//! (`capisan::oom`), and print each distinct bucket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use capisan::oom::{self, CallSpec, SweepOptions};
use capisan_build::Variant;
use clap::Args;
use indicatif::ProgressBar;

use crate::fuzz::{build_target, workspace_root};
use crate::ui;

#[derive(Args)]
pub struct OomSweepArgs {
    /// A campaign input (crash artifact, finding input, JSON op list) whose extension call to
    /// sweep (the last one, or --call-index); its campaign is found from it.
    #[arg(required_unless_present = "call")]
    pub artifact: Option<PathBuf>,
    /// The campaign directory, if the input was moved out of its campaign; default: the
    /// nearest directory above the input with a campaign.json.
    #[arg(long)]
    pub campaign: Option<PathBuf>,
    /// Sweep one call instead of an input: MODULE.FUNC and its arguments as a JSON array of
    /// numbers, strings and nulls (`--call mymod.parse '["a,b", 3]'`).
    #[arg(long, num_args = 2, value_names = ["MODULE.FUNC", "ARGS-JSON"], conflicts_with = "artifact")]
    pub call: Vec<String>,
    /// Directory holding the extension of --call (see ext-build); default: the variant's
    /// own sys.path.
    #[arg(long)]
    pub ext_path: Option<PathBuf>,
    /// Variant of --call.
    #[arg(long, default_value = "asan")]
    pub variant: Variant,
    /// Index of the extension call to sweep in the input's ops (see `show`); default: the last.
    #[arg(long)]
    pub call_index: Option<usize>,
    /// Sweep at most this many allocations.
    #[arg(long, default_value_t = 500)]
    pub max: u64,
    /// Fail every allocation from N on (until the call returns) instead of the Nth alone.
    #[arg(long)]
    pub persistent: bool,
    /// Per-point timeout, seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
    /// Where the points and their logs go; default: <input>.oom-sweep/ (or
    /// target/capisan/oom-sweep-<MODULE.FUNC> for --call).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn oom_sweep(args: OomSweepArgs) -> Result<()> {
    let opts = SweepOptions {
        max_allocations: args.max,
        persistent: args.persistent,
        call_index: args.call_index,
        timeout: Duration::from_secs(args.timeout),
    };
    let template = "oom-sweep [{elapsed_precise}] {pos}/{len} {wide_msg}";
    let bar = ProgressBar::new(0).with_style(ui::style(template));
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = if let [target, json] = args.call.as_slice() {
        let call = CallSpec::parse(target, json)?;
        let (_, manifest) = crate::cache().manifest(args.variant)?;
        let binary = build_target("capi_sequences", args.variant, &manifest)?;
        let dir = args
            .out
            .clone()
            .unwrap_or_else(|| oom::call_dir(&workspace_root(), target));
        let ext_path = args.ext_path.as_deref();
        call.sweep(&manifest, &binary, ext_path, &dir, &opts, &mut progress)
    } else {
        let input = args.artifact.clone().expect("clap requires it");
        let (_, c) = capisan::bundle::campaign_of(&input, args.campaign.as_deref())?;
        let dir = args.out.clone().unwrap_or_else(|| oom::input_dir(&input));
        oom::sweep_input(&c, &input, &dir, &opts, &mut progress)
    };
    bar.finish_and_clear();
    let report = report?;
    ui::emit(args.json, &report, || oom::report_text(&report))
}
