//! Build the fuzz crate's binaries (`fuzz/`, its own workspace) against a variant, with the
//! flags cargo-fuzz would pass, and bundle a fuzz target with the standard library it needs so
//! it runs without the capisan cache (ClusterFuzzLite / OSS-Fuzz `$OUT`).
//!
//! The harness's build script reads the variant from `CAPISAN_MANIFEST` / `CAPISAN_VARIANT`, so
//! one target directory per variant and CPython line ([`target_dir`]) keeps builds from evicting
//! each other.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{BuildError, Result};
use crate::manifest::{self, Manifest};
use crate::source::tail_lines;
use crate::variant::Variant;
use crate::versions;

/// The Rust target triple every fuzz binary is built for (cargo-fuzz builds for the host triple
/// explicitly, so build scripts and proc macros are not instrumented).
pub const TARGET_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The flags cargo-fuzz passes to rustc for a libFuzzer build on stable Rust: coverage
/// (inline 8-bit counters, PC table), compare tracing, debug assertions, frame pointers and
/// `--cfg fuzzing`.
pub const SANCOV_RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Cforce-frame-pointers --cfg fuzzing";

/// RUSTFLAGS for a fuzz binary linked against `variant`: [`SANCOV_RUSTFLAGS`], plus
/// `-Zsanitizer=address` for asan (the interpreter and the extensions carry ASan, so the Rust
/// side must link the same runtime; this is why the build needs `RUSTC_BOOTSTRAP=1`).
pub fn rustflags(variant: Variant) -> String {
    match variant {
        Variant::Asan => format!("{SANCOV_RUSTFLAGS} -Zsanitizer=address"),
        _ => SANCOV_RUSTFLAGS.to_string(),
    }
}

/// The fuzz crate of the workspace at `workspace_root`.
pub fn fuzz_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("fuzz")
}

/// The cargo target directory of the fuzz crate's binaries for `manifest`'s build:
/// `fuzz/target/<variant>` for the default line ([`versions::default_line`]), and
/// `fuzz/target/<variant>-<X.Y>` for any other (`asan-3.14`), so versions never overwrite each
/// other's binaries.
pub fn target_dir(workspace_root: &Path, manifest: &Manifest) -> PathBuf {
    let variant = manifest.variant.name();
    let name = if manifest.line() == versions::default_line() {
        variant.to_string()
    } else {
        format!("{variant}-{}", manifest.line())
    };
    fuzz_dir(workspace_root).join("target").join(name)
}

/// Build fuzz target `target` (a file `fuzz/fuzz_targets/<target>.rs`) against the variant of
/// `manifest`; returns the binary. Fails with [`BuildError::NoFuzzTarget`] for an unknown name.
pub fn build_fuzz_binary(
    workspace_root: &Path,
    target: &str,
    manifest: &Manifest,
) -> Result<PathBuf> {
    let targets = fuzz_dir(workspace_root).join("fuzz_targets");
    if !targets.join(format!("{target}.rs")).exists() {
        return Err(BuildError::NoFuzzTarget {
            target: target.to_string(),
            dir: targets,
        });
    }
    build_bin(workspace_root, target, manifest)
}

/// Build one binary of the fuzz crate (a fuzz target, or `capisan-replay`) against the variant
/// of `manifest`, with the fuzz targets' flags so the harness build is shared; returns its path.
/// cargo's output goes to `build-<bin>.log` in its [`target_dir`], whose tail a failure shows.
pub fn build_bin(workspace_root: &Path, bin: &str, manifest: &Manifest) -> Result<PathBuf> {
    let variant = manifest.variant;
    let fuzz = fuzz_dir(workspace_root);
    let target_dir = target_dir(workspace_root, manifest);
    fs::create_dir_all(&target_dir)
        .map_err(BuildError::io(format!("creating {}", target_dir.display())))?;
    let args = [
        "build",
        "--release",
        "--target",
        TARGET_TRIPLE,
        "--bin",
        bin,
        "--target-dir",
    ];
    let out = duct::cmd(
        "cargo",
        args.iter()
            .copied()
            .chain([target_dir.to_str().unwrap_or("")]),
    )
    .dir(&fuzz)
    .env("RUSTC_BOOTSTRAP", "1")
    .env("RUSTFLAGS", rustflags(variant))
    .env("CAPISAN_MANIFEST", manifest.dir().join(manifest::FILE_NAME))
    .env("CAPISAN_VARIANT", variant.name())
    .env("CC", &manifest.compiler.cc)
    // valgrind 3.19 cannot read DWARF 5, clang-22's default (libFuzzer is C++ built by cc).
    .env(
        "CXXFLAGS",
        if variant == Variant::Valgrind {
            "-gdwarf-4"
        } else {
            ""
        },
    )
    .env("CXX", manifest.compiler.cc.replace("clang", "clang++"))
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .map_err(BuildError::io(format!(
        "running cargo build for {bin} in {}",
        fuzz.display()
    )))?;
    if !out.status.success() {
        let log = target_dir.join(format!("build-{bin}.log"));
        fs::write(&log, &out.stdout)
            .map_err(BuildError::io(format!("writing {}", log.display())))?;
        return Err(BuildError::CommandFailed {
            command: format!(
                "cargo {} {} (in {})",
                args.join(" "),
                target_dir.display(),
                fuzz.display()
            ),
            status: out.status.to_string(),
            log,
            tail: tail_lines(&String::from_utf8_lossy(&out.stdout), 40),
        });
    }
    Ok(target_dir.join(TARGET_TRIPLE).join("release").join(bin))
}

/// What [`bundle`] wrote.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The fuzzer: `<out>/<target>`.
    pub fuzzer: PathBuf,
    /// Its Python home: `<out>/<target>.python/` with `Lib/` and `lib-dynload/`.
    pub home: PathBuf,
    /// `<out>/<target>_seed_corpus/`, when the checkout has `corpora/<target>/`.
    pub seeds: Option<PathBuf>,
}

/// Directories of the standard library a bundle leaves out: the test suite, IDLE, Tk, caches.
const STDLIB_SKIP: [&str; 5] = ["test", "idlelib", "__pycache__", "tkinter", "turtledemo"];

/// Build fuzz target `target` against `manifest`'s variant and make it self-contained in `out`:
/// the binary, the variant's pure-Python standard library (without [`STDLIB_SKIP`]) and its
/// compiled modules in `<target>.python/`, and the checkout's seeds as `<target>_seed_corpus/`
/// (the names ClusterFuzzLite and OSS-Fuzz look for). An earlier bundle's Python home is
/// replaced.
pub fn bundle(
    workspace_root: &Path,
    target: &str,
    manifest: &Manifest,
    out: &Path,
) -> Result<Bundle> {
    let bin = build_fuzz_binary(workspace_root, target, manifest)?;
    let io = |what: &str, p: &Path| BuildError::io(format!("{what} {}", p.display()));
    fs::create_dir_all(out).map_err(io("creating", out))?;
    let fuzzer = out.join(target);
    fs::copy(&bin, &fuzzer).map_err(io("copying the fuzzer to", &fuzzer))?;
    let home = out.join(format!("{target}.python"));
    let _ = fs::remove_dir_all(&home);
    let stdlib = &manifest.stdlib;
    for entry in walkdir::WalkDir::new(stdlib).into_iter().filter_entry(|e| {
        !(e.file_type().is_dir() && STDLIB_SKIP.iter().any(|s| e.file_name() == *s))
    }) {
        let entry = entry.map_err(|e| BuildError::Io {
            context: format!("walking {}", stdlib.display()),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(stdlib).unwrap_or(entry.path());
        let to = home.join("Lib").join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&to).map_err(io("creating", &to))?;
        } else {
            fs::copy(entry.path(), &to).map_err(io("copying to", &to))?;
        }
    }
    copy_files(&manifest.platstdlib, &home.join("lib-dynload"))?;
    let corpus = workspace_root.join("corpora").join(target);
    let seeds = if corpus.is_dir() {
        let to = out.join(format!("{target}_seed_corpus"));
        copy_files(&corpus, &to)?;
        Some(to)
    } else {
        None
    };
    Ok(Bundle {
        fuzzer,
        home,
        seeds,
    })
}

/// Copy the plain files of `from` (not its subdirectories) into `to`, creating it.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(BuildError::io(format!("creating {}", to.display())))?;
    let entries =
        fs::read_dir(from).map_err(BuildError::io(format!("reading {}", from.display())))?;
    for e in entries.flatten().filter(|e| e.path().is_file()) {
        let dest = to.join(e.file_name());
        fs::copy(e.path(), &dest)
            .map_err(BuildError::io(format!("copying to {}", dest.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asan_links_the_address_sanitizer_and_every_variant_gets_coverage() {
        assert!(rustflags(Variant::Asan).ends_with("-Zsanitizer=address"));
        for v in Variant::ALL {
            assert!(rustflags(v).contains("sanitizer-coverage-trace-compares"));
            assert!(rustflags(v).contains("--cfg fuzzing"));
        }
        assert!(!rustflags(Variant::Valgrind).contains("-Zsanitizer"));
    }

    #[test]
    fn each_line_but_the_default_has_its_own_target_dir() {
        let mut m = crate::manifest::fixture();
        let root = Path::new("/w");
        assert_eq!(target_dir(root, &m), Path::new("/w/fuzz/target/asan"));
        m.version = "3.14.9".into();
        assert_eq!(target_dir(root, &m), Path::new("/w/fuzz/target/asan-3.14"));
        m.version = "3.11.2".into();
        m.variant = Variant::Pydebug;
        assert_eq!(
            target_dir(root, &m),
            Path::new("/w/fuzz/target/pydebug-3.11")
        );
    }
}
