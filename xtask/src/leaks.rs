//! refleak, tracemalloc-diff, lsan, valgrind, valgrind-supp: leak hunting without noise.
//! (Being written.)

use anyhow::{bail, Result};
use clap::Args;

/// Placeholder arguments until the commands land.
#[derive(Args)]
pub struct LeakArgs {
    /// What to check.
    pub target: String,
}

/// Not implemented yet.
#[allow(dead_code)]
pub fn todo(_args: LeakArgs) -> Result<()> {
    bail!("not implemented yet")
}
