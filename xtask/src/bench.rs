//! bench: measured side by side in one run (these machines are noisy), reported as medians and
//! ratios in bench/*.md and .json. The measurements and their rows are `capisan::bench`'s.

use anyhow::Result;
use capisan::bench::{self, real::RealOptions, Suite};
use clap::Args;

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
    /// Only the cost rows of the GC and raw-memory checks (also part of --api), written to
    /// bench/gc-cost.md and .json: exec/s of tests/gcext's clean twins with every check, with
    /// every check but those, and with none (alternated 30-s campaigns, 3 rounds).
    #[arg(long)]
    pub gc_cost: bool,
    /// Only the real-bug rows (bench/real.md, .json, and their section of bench/results.md,
    /// which the full run keeps): without --real-only, first the edges at
    /// 30 s and 120 s against atheris (3 alternated pairs) and the zoo crashes' time-to-detect
    /// against atheris, then every bug of bench/real-bugs.toml (package bugs with fuzz-pkg on
    /// the buggy and the fixed release, CPython bugs with fuzz-stdlib on the CPython builds
    /// found), then two packages' campaign speed and coverage.
    #[arg(long)]
    pub real: bool,
    /// With --real: seconds per campaign (buggy and fixed release, no seeds).
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// With --real: campaigns on each buggy release; time-to-detect is their median (the fixed
    /// release gets one).
    #[arg(long, default_value_t = 3)]
    pub real_runs: u64,
    /// With --real: only this bug id of bench/real-bugs.toml; repeatable.
    #[arg(long = "real-only", value_name = "ID")]
    pub real_only: Vec<String>,
    /// With --real: another cache directory holding CPython builds for the CPython rows (e.g.
    /// `cargo xtask --version 3.13.15 --cache DIR build-asan`, kept out of the default cache
    /// whose newest 3.13 build every command would use); repeatable.
    #[arg(long = "cpython-cache", value_name = "DIR")]
    pub cpython_cache: Vec<std::path::PathBuf>,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let suite = match args.real {
        true => Suite::Real(RealOptions {
            cpython_caches: args.cpython_cache,
            ..RealOptions::new(args.time, args.real_runs, args.real_only)
        }),
        false => Suite::from_flags(args.trust, args.api, args.failalloc, args.gc_cost, args.zoo),
    };
    let (root, cache) = (crate::fuzz::workspace_root(), crate::cache().resolve());
    let log = &mut |s: &str| eprintln!("bench: {s}");
    print!("{}", bench::run(&root, cache, args.quick, suite, log)?);
    Ok(())
}
