//! Which C compiler builds the variants, and why: the one whose LLVM matches rustc's, so the
//! Rust and C halves of a fuzz target share one sanitizer runtime and one coverage ABI.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{BuildError, Result};

/// A probed C compiler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiler {
    /// Command name or path, as passed to `CC`.
    pub cc: String,
    /// First line of `cc --version`; part of the cache key.
    pub version: String,
    /// Major version, when it is clang.
    pub clang_major: Option<u32>,
}

impl Compiler {
    /// `llvm-symbolizer` of the same LLVM, for readable sanitizer stacks.
    pub fn llvm_symbolizer(&self) -> Option<PathBuf> {
        let major = self.clang_major?;
        let p = PathBuf::from(format!("/usr/lib/llvm-{major}/bin/llvm-symbolizer"));
        p.exists().then_some(p)
    }
}

/// The LLVM major version rustc was built with (`rustc -vV`), if rustc is on PATH.
pub fn rustc_llvm_major() -> Option<u32> {
    let out = duct::cmd!("rustc", "-vV").stderr_null().read().ok()?;
    parse_llvm_major(&out)
}

fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

/// The compiler to use when none is named: `$CAPISAN_CC`, else `clang-<rustc's LLVM major>`,
/// else `clang-22`.
pub fn default_cc() -> String {
    if let Ok(cc) = std::env::var("CAPISAN_CC") {
        return cc;
    }
    format!("clang-{}", rustc_llvm_major().unwrap_or(22))
}

/// Run `cc --version` and describe the compiler, or say how to install it.
pub fn probe(cc: &str) -> Result<Compiler> {
    let package = cc.rsplit('/').next().unwrap_or(cc).to_string();
    let out = duct::cmd!(cc, "--version")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(|e| BuildError::MissingCompiler {
            cc: cc.to_string(),
            package: package.clone(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BuildError::MissingCompiler {
            cc: cc.to_string(),
            package,
            why: format!("`{cc} --version` exited with {}", out.status),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next().unwrap_or("").trim().to_string();
    Ok(Compiler {
        cc: cc.to_string(),
        clang_major: parse_clang_major(&version),
        version,
    })
}

fn parse_clang_major(version_line: &str) -> Option<u32> {
    let rest = version_line.split("clang version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_llvm_major("rustc 1.95.0\nLLVM version: 22.1.2\n"),
            Some(22)
        );
        assert_eq!(
            parse_clang_major("Debian clang version 22.1.8 (1~deb12u1)"),
            Some(22)
        );
        assert_eq!(parse_clang_major("gcc (Debian 12.2.0-14) 12.2.0"), None);
    }

    #[test]
    fn missing_compiler_names_package() {
        let err = probe("clang-does-not-exist-99").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("clang-does-not-exist-99"), "{msg}");
        assert!(msg.contains("apt-get install"), "{msg}");
    }
}
