//! glibc's own heap-consistency aborts (`free(): double free detected in tcache 2`, ...), seen
//! when a reproducer runs on a variant without ASan (pydebug, release).

use super::classify::{self, Pattern};
use super::{BugClass, Finding, Tool};

/// glibc malloc's abort messages -> class.
pub const GLIBC: &[Pattern] = &[
    classify::row(
        r"double free",
        Some(BugClass::DoubleFree),
        "glibc malloc: a block was freed twice",
    ),
    classify::row(
        r"invalid (next )?size|corrupted|invalid pointer|invalid chunk",
        Some(BugClass::Crash),
        "glibc malloc: heap metadata corrupted (an overflow, a bad or double free); ambiguous without ASan",
    ),
    classify::row(
        r".",
        Some(BugClass::Crash),
        "glibc malloc: heap-consistency abort with no more specific pattern (e.g. an unaligned tcache chunk: heap metadata overwritten)",
    ),
];

/// One finding per glibc heap abort line.
pub(super) fn parse(lines: &[&str]) -> Vec<Finding> {
    let re = regex::Regex::new(
        r"^(?:\*\*\* )?((?:free|malloc|realloc|munmap_chunk|malloc_consolidate|_int_free|corrupted)[^:]*\(?\)?: .*|double free or corruption.*)$",
    )
    .expect("regex");
    lines
        .iter()
        .filter_map(|l| re.captures(l.trim()))
        .filter_map(|c| {
            let headline = c[1].to_string();
            let (class, reason) = classify::classify(GLIBC, &headline)?;
            let mut f = Finding::new(class, Tool::DebugAllocator, headline);
            f.reason = reason.to_string();
            Some(f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_double_free_is_named() {
        let f = crate::detect::parse("free(): double free detected in tcache 2\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].class, BugClass::DoubleFree);
        assert!(crate::detect::parse("free(): invalid pointer\n")[0].class == BugClass::Crash);
        assert!(crate::detect::parse("nothing to see\n").is_empty());
    }

    /// Before the GLIBC table had a catch-all row, an abort no row matched panicked in
    /// `classify` instead of becoming a finding.
    #[test]
    fn glibc_abort_no_specific_row_matches_is_a_crash() {
        let f = crate::detect::parse(
            "malloc(): unaligned tcache chunk detected\nAborted (core dumped)\n",
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].class, BugClass::Crash);
        assert_eq!(f[0].tool, Tool::DebugAllocator);
        assert!(
            f[0].reason.contains("no more specific pattern"),
            "{}",
            f[0].reason
        );
    }
}
