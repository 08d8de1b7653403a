//! fuzz-stdlib: one campaign per C module of the variant's standard library (capisan::stdlib).

use anyhow::Result;
use capisan::stdlib::{self, StdlibOptions};
use clap::Args;

#[derive(Args, Clone)]
pub struct FuzzStdlibArgs {
    /// Fuzz only this module (_struct, itertools, builtins…); repeatable; default: every C
    /// module harness/src/stdlib_modules.json includes.
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Campaign length per module, seconds (a whole run takes this times the module count).
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Parallel fuzzing processes per campaign (libFuzzer fork mode).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Campaigns directory (a subdirectory per module, stdlib.json); default
    /// target/capisan/stdlib-<version>-<variant>.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Variant to fuzz (its newest 3.13 build).
    #[arg(long, default_value = "asan")]
    pub variant: capisan_build::Variant,
    /// Only shard K of N (K/N, 1-based) of the planned modules, every N-th from the K-th: a
    /// matrix of N jobs covers every module once (the nightly workflow does).
    #[arg(long, value_name = "K/N", value_parser = stdlib::parse_shard)]
    pub shard: Option<(usize, usize)>,
}

pub fn fuzz_stdlib(a: FuzzStdlibArgs) -> Result<()> {
    let cache = crate::cache().resolve();
    let mut o = StdlibOptions::new(crate::fuzz::workspace_root(), cache, a.variant);
    (o.modules, o.seconds, o.jobs, o.out) = (a.modules, a.time, a.jobs, a.out);
    o.shard = a.shard;
    let outcome = stdlib::run(&o, &mut |line| eprintln!("{line}"))?;
    print!("{}", stdlib::summary_text(&outcome));
    Ok(())
}
