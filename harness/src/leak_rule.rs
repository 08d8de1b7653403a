//! regrtest's leak decision rule (CPython 3.13, `Lib/test/libregrtest/refleak.py`), defined once.
//!
//! regrtest `-R WARMUPS:RUNS` runs a test WARMUPS + RUNS times, clearing caches and collecting
//! between runs, and records how much each run changed three counters. Only the post-warmup
//! deltas are judged, by two checkers:
//!
//! * references (`sys.gettotalrefcount()`) and memory blocks (`sys.getallocatedblocks()`):
//!   `check_rc_deltas`, a leak only when *every* run grew by at least one. bpo-30776: one-off
//!   growth such as `[3, 0, 0]`, `[0, 1, 0]` or `[8, -8, 1]` is a cache filling or a freelist
//!   settling, while `[5, 5, 6]` or `[10, 1, 1]` is a leak.
//! * file descriptors: `check_fd_deltas`, a leak when *any* run changed the count.
//!
//! Pure arithmetic over deltas, so it needs no interpreter: the refleak command
//! ([`crate::leaks::refleak`]), the in-process executor and the reproducers all call it.

use serde::{Deserialize, Serialize};

/// The counters regrtest's `-R` watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeakCounter {
    /// `sys.gettotalrefcount()` (debug builds only).
    References,
    /// `sys.getallocatedblocks()`, minus immortal interned strings.
    MemoryBlocks,
    /// Open file descriptors of the process.
    FileDescriptors,
}

impl LeakCounter {
    /// All three, in regrtest's reporting order.
    pub const ALL: [LeakCounter; 3] = [
        LeakCounter::References,
        LeakCounter::MemoryBlocks,
        LeakCounter::FileDescriptors,
    ];

    /// regrtest's wording in "X leaked [..] references, sum=N".
    pub fn item_name(self) -> &'static str {
        match self {
            LeakCounter::References => "references",
            LeakCounter::MemoryBlocks => "memory blocks",
            LeakCounter::FileDescriptors => "file descriptors",
        }
    }

    /// Whether the post-warmup `deltas` of this counter are a leak under regrtest's rule for it.
    pub fn leaked(self, deltas: &[i64]) -> bool {
        match self {
            LeakCounter::References | LeakCounter::MemoryBlocks => check_rc_deltas(deltas),
            LeakCounter::FileDescriptors => check_fd_deltas(deltas),
        }
    }
}

/// regrtest's `check_rc_deltas`, for references and memory blocks: a leak only when every
/// post-warmup run grew by at least one (`[5, 5, 6]`, `[10, 1, 1]`), never for one-off growth
/// (`[3, 0, 0]`, `[0, 1, 0]`, `[8, -8, 1]`).
///
/// `deltas` must hold only the measured runs (after the warmups), each the change of one run.
/// An empty slice is not a leak (regrtest always has at least one run; Python's `all([])` would
/// say True, but nothing was measured).
pub fn check_rc_deltas(deltas: &[i64]) -> bool {
    !deltas.is_empty() && deltas.iter().all(|&d| d >= 1)
}

/// regrtest's `check_fd_deltas`, for file descriptors: any change in any measured run is a leak
/// (an fd is a scarce resource; no cache legitimately keeps one per run).
pub fn check_fd_deltas(deltas: &[i64]) -> bool {
    deltas.iter().any(|&d| d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrtest_examples() {
        // The examples in refleak.py's comment (bpo-30776).
        assert!(!check_rc_deltas(&[3, 0, 0]));
        assert!(!check_rc_deltas(&[0, 1, 0]));
        assert!(!check_rc_deltas(&[8, -8, 1]));
        assert!(check_rc_deltas(&[5, 5, 6]));
        assert!(check_rc_deltas(&[10, 1, 1]));
        assert!(check_rc_deltas(&[1, 1, 1]));
        assert!(!check_rc_deltas(&[]));
        assert!(check_fd_deltas(&[0, -1, 0]));
        assert!(!check_fd_deltas(&[0, 0, 0]));
    }

    #[test]
    fn each_counter_uses_its_checker() {
        assert!(LeakCounter::MemoryBlocks.leaked(&[2, 1, 1]));
        assert!(!LeakCounter::References.leaked(&[0, 0, 1]));
        assert!(LeakCounter::FileDescriptors.leaked(&[0, 0, 1]));
        assert_eq!(LeakCounter::ALL[2].item_name(), "file descriptors");
    }
}
