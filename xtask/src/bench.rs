//! bench: measured side by side in one run (these machines are noisy), reported as medians and
//! ratios in bench/*.md and .json. The measurements and their rows are `capisan::bench`'s.

use anyhow::Result;
use capisan::bench::{self, Suite};
use clap::Args;

use crate::fuzz::workspace_root;

#[derive(Args)]
pub struct BenchArgs {
    /// Shorter runs: 10 s per campaign instead of 30, 2 rounds instead of 3, and no cold-build
    /// comparison (two ASan builds, ~6 min).
    #[arg(long)]
    pub quick: bool,
    /// Also measure the bug zoo's time-to-detect per class (3 seeds each, no seed corpus; slow).
    #[arg(long)]
    pub zoo: bool,
    /// Only the trust rows, written to bench/trust.md and .json: a 10-minute campaign on
    /// unmodified CPython (1 minute with --quick) and exec/s of a campaign that hits a true
    /// leak constantly vs. the same extension without it (alternated, 30-s campaigns).
    #[arg(long)]
    pub trust: bool,
    /// Only the Python-API rows, written to bench/api.md and .json: time-to-detect of each
    /// planted bug of tests/apiext without seeds (median of 3 seeds, 1 with --quick; 120-s
    /// cap) and its clean twin (20 s, must find nothing).
    #[arg(long)]
    pub api: bool,
    /// Only the allocation-failure rows, written to bench/failalloc.md and .json: exec/s with
    /// the allocator wrappers installed but idle vs without (alternated, 30-s campaigns), and
    /// time-to-detect of each bug of tests/erroralloc by a --fail-alloc campaign without seeds
    /// (median of 3 seeds, 1 with --quick; 90-s cap).
    #[arg(long)]
    pub failalloc: bool,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let suite = Suite::from_flags(args.trust, args.api, args.failalloc, args.zoo);
    let (root, cache) = (workspace_root(), crate::cache().resolve());
    let md = bench::run(&root, cache, args.quick, suite, &mut |s| {
        eprintln!("bench: {s}")
    })?;
    print!("{md}");
    Ok(())
}
