//! Which CPython lines capisan binds, and which one a command uses when the user names none.
//!
//! One definition of both facts: the harness's version cfgs, the commands' `--version` check
//! and [`crate::Manifest::find`]'s default all read them here.

use crate::error::{BuildError, Result};
use crate::source::validate_version;

/// The `X.Y` lines the harness binds (its version cfgs and C shim cover their API
/// differences), oldest first: Debian 12's 3.11, Debian 13's 3.13, and 3.14.
pub const SUPPORTED_LINES: [&str; 3] = ["3.11", "3.13", "3.14"];

/// `X.Y` of a version string (`3.13.5` -> `3.13`); the string itself when it has no patch part.
pub fn line_of(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// The line a lookup uses when the caller names none: [`crate::DEFAULT_VERSION`]'s `X.Y`,
/// never "the newest build", so building another version does not switch every command.
pub fn default_line() -> &'static str {
    line_of(crate::DEFAULT_VERSION)
}

/// Whether `version` (`X.Y` or `X.Y.Z`) is of `line` (`X.Y`).
pub fn is_of_line(version: &str, line: &str) -> bool {
    version == line
        || version
            .strip_prefix(line)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Check a version a user chose a variant by: well formed and of a [`SUPPORTED_LINES`] line.
pub fn check_supported(version: &str) -> Result<()> {
    validate_version(version)?;
    if SUPPORTED_LINES.contains(&line_of(version)) {
        Ok(())
    } else {
        Err(BuildError::UnsupportedVersion {
            requested: version.to_string(),
            supported: SUPPORTED_LINES.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_the_default() {
        assert_eq!(line_of("3.13.5"), "3.13");
        assert_eq!(line_of("3.14"), "3.14");
        assert_eq!(default_line(), "3.13");
        assert!(is_of_line("3.13.5", "3.13") && is_of_line("3.13", "3.13"));
        assert!(!is_of_line("3.130.1", "3.13") && !is_of_line("3.1.3", "3.13"));
    }

    #[test]
    fn unsupported_versions_name_the_supported_ones() {
        for ok in ["3.11", "3.11.2", "3.13", "3.14.9"] {
            check_supported(ok).unwrap();
        }
        let e = check_supported("3.12").unwrap_err().to_string();
        assert!(e.contains("3.11, 3.13, 3.14"), "{e}");
        assert!(matches!(
            check_supported("banana"),
            Err(BuildError::BadVersion(_))
        ));
    }
}
