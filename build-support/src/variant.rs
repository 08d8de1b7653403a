//! The interpreter variants capisan builds, and what each needs at configure, make and run time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::BuildError;

/// One way of building CPython, chosen for one kind of memory-bug signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `--with-pydebug`: `sys.gettotalrefcount()`, debug allocator hooks, refcount asserts.
    Pydebug,
    /// pydebug + ASan + UBSan + libFuzzer coverage (`-fsanitize=fuzzer-no-link`), run with
    /// `PYTHONMALLOC=malloc` so every object allocation is visible to ASan.
    Asan,
    /// pydebug + `--with-valgrind`, for memcheck (uninitialized reads).
    Valgrind,
    /// A plain optimized build, the baseline for benchmarks.
    Release,
}

/// ASan options that let the fresh interpreter run during `make` (LSan would otherwise report
/// interpreter-lifetime allocations and fail the step that runs it).
pub const ASAN_BUILD_OPTIONS: &str = "detect_leaks=0";

/// ASan options at run time: leaks are hunted separately with suppressions (`xtask lsan`);
/// everything else aborts at the first error so a finding is one report.
///
/// Allocation failures behave as on a production build, where `malloc` returns NULL and the
/// code under test raises MemoryError: `allocator_may_return_null=1` (otherwise ASan reports
/// `allocation-size-too-big` / `out-of-memory` and aborts), and `max_allocation_size_mb=1024`
/// makes any single request over 1 GiB fail that way (an extension that allocates a size
/// given by its caller is not a memory bug; on this machine such a request fails or thrashes).
/// True blow-ups (memory actually used) are caught by libFuzzer's `-rss_limit_mb` and reported
/// as out of memory, not as a memory-error class.
pub const ASAN_RUN_OPTIONS: &str = "detect_leaks=0:halt_on_error=1:abort_on_error=1:alloc_dealloc_mismatch=1:symbolize=1:print_summary=1:allocator_may_return_null=1:max_allocation_size_mb=1024";

/// UBSan options at run time. CPython 3.13 calls functions through cast pointers everywhere,
/// so `-fsanitize=function` is disabled at compile time instead of here.
pub const UBSAN_RUN_OPTIONS: &str = "print_stacktrace=1:halt_on_error=1:abort_on_error=1";

impl Variant {
    /// Every variant, in build order for `build-all`.
    pub const ALL: [Variant; 4] = [
        Variant::Pydebug,
        Variant::Asan,
        Variant::Valgrind,
        Variant::Release,
    ];

    /// Lower-case name used on the command line, in cache paths and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Pydebug => "pydebug",
            Variant::Asan => "asan",
            Variant::Valgrind => "valgrind",
            Variant::Release => "release",
        }
    }

    /// Arguments to `configure`, beyond the compiler and CFLAGS.
    pub fn configure_args(self) -> Vec<String> {
        let args: &[&str] = match self {
            Variant::Pydebug => &["--with-pydebug", "--disable-test-modules"],
            // No freelists: a freed float, tuple or list goes back to malloc, so ASan sees a
            // use after free instead of a recycled object.
            Variant::Asan => &[
                "--with-pydebug",
                "--with-address-sanitizer",
                "--with-undefined-behavior-sanitizer",
                "--without-pymalloc",
                "--without-freelists",
                "--disable-test-modules",
            ],
            Variant::Valgrind => &[
                "--with-pydebug",
                "--with-valgrind",
                "--disable-test-modules",
            ],
            Variant::Release => &["--disable-test-modules"],
        };
        args.iter().map(|s| s.to_string()).collect()
    }

    /// CFLAGS passed to `configure`.
    ///
    /// ASan: `-O1` keeps stacks readable while staying fast enough to fuzz; coverage for
    /// libFuzzer comes from `-fsanitize=fuzzer-no-link`; `-fno-sanitize=function` because
    /// CPython's method tables cast function pointers by design (every call would report).
    pub fn cflags(self) -> Vec<String> {
        let flags: &[&str] = match self {
            Variant::Pydebug => &["-O0", "-g3"],
            Variant::Asan => &[
                "-O1",
                "-g",
                "-fno-omit-frame-pointer",
                "-fsanitize=fuzzer-no-link",
                "-fno-sanitize=function",
            ],
            Variant::Valgrind => &["-O0", "-g", "-gdwarf-4"],
            Variant::Release => &["-O2", "-g"],
        };
        flags.iter().map(|s| s.to_string()).collect()
    }

    /// Environment for `configure` and `make`, which run the fresh interpreter.
    pub fn build_env(self) -> Vec<(String, String)> {
        match self {
            Variant::Asan => vec![
                ("ASAN_OPTIONS".into(), ASAN_BUILD_OPTIONS.into()),
                ("UBSAN_OPTIONS".into(), "print_stacktrace=1".into()),
            ],
            _ => Vec::new(),
        }
    }

    /// Environment the built interpreter (or a program embedding it) needs at run time.
    ///
    /// `platstdlib` is the build tree's directory of compiled extension modules
    /// (`build/lib.<platform>-<version>[-pydebug]`, named by `pybuilddir.txt`).
    pub fn runtime_env(self, source: &Path, platstdlib: &Path) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("PYTHONHOME".to_string(), source.display().to_string());
        env.insert(
            "PYTHONPATH".to_string(),
            format!("{}:{}", source.join("Lib").display(), platstdlib.display()),
        );
        match self {
            Variant::Asan => {
                env.insert("PYTHONMALLOC".into(), "malloc".into());
                env.insert("ASAN_OPTIONS".into(), ASAN_RUN_OPTIONS.into());
                env.insert("UBSAN_OPTIONS".into(), UBSAN_RUN_OPTIONS.into());
            }
            Variant::Valgrind => {
                env.insert("PYTHONMALLOC".into(), "malloc".into());
            }
            Variant::Pydebug | Variant::Release => {}
        }
        env
    }

    /// Rough disk need of one build, checked before starting.
    pub fn needed_disk_mib(self) -> u64 {
        match self {
            Variant::Asan => 1500,
            _ => 800,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = BuildError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| BuildError::UnknownVariant(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>().unwrap(), v);
        }
        assert!(matches!(
            "msan".parse::<Variant>(),
            Err(BuildError::UnknownVariant(_))
        ));
    }

    #[test]
    fn asan_runs_with_malloc_and_coverage() {
        let env = Variant::Asan.runtime_env(Path::new("/s"), Path::new("/b"));
        assert_eq!(env["PYTHONMALLOC"], "malloc");
        assert!(Variant::Asan
            .cflags()
            .iter()
            .any(|f| f == "-fsanitize=fuzzer-no-link"));
        assert!(Variant::Asan
            .configure_args()
            .iter()
            .any(|f| f == "--with-address-sanitizer"));
        assert_eq!(env["PYTHONPATH"], "/s/Lib:/b");
    }
}
