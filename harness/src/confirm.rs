//! Confirm a reproducer outside the fuzzer: rebuild its extension (or, for a fuzz-pkg finding,
//! its package) for each built variant,
//! build `repro.c` with the bundle's `build.sh`, run it in a fresh process (under memcheck for
//! valgrind) and record which variants see the finding's class.

use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::{extension, package, BuildError, Cache, Manifest, Variant};
use serde::Serialize;

use crate::detect::{self, BugClass, Finding, Tool};

/// The variants and allocators a reproducer is confirmed on, in order (a variant that is not
/// built is skipped).
pub const RUNS: [(Variant, &str); 4] = [
    (Variant::Pydebug, ""),
    (Variant::Asan, "malloc"),
    (Variant::Asan, "malloc_debug"),
    (Variant::Valgrind, ""),
];

/// Why a reproducer could not be confirmed (a variant not seeing it is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    /// Not a reproducer directory.
    #[error("{0} is not a capisan reproducer directory (no readable finding.json); write one with `cargo xtask repro`")]
    NotABundle(PathBuf),
    /// A file could not be read or written, or a program not started.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The extension could not be rebuilt for a variant.
    #[error("rebuilding the extension for {variant}: {source}")]
    Extension {
        variant: Variant,
        source: BuildError,
    },
    /// The package could not be rebuilt for a variant.
    #[error("rebuilding the package for {variant}: {source}")]
    Package {
        variant: Variant,
        source: capisan_build::package::PackageError,
    },
    /// `build.sh` failed.
    #[error("build.sh {variant} failed:\n{output}")]
    Build { variant: Variant, output: String },
}

type Result<T> = std::result::Result<T, ConfirmError>;

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| ConfirmError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One variant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    pub variant: String,
    pub pythonmalloc: String,
    pub reproduced: bool,
    pub class: Option<String>,
    pub detail: String,
}

/// [`confirm_dir`], then its verdicts recorded as `confirm.json` in `dir`.
pub fn confirm_recorded(dir: &Path, cache: &Cache) -> Result<Vec<Confirmation>> {
    let results = confirm_dir(dir, cache)?;
    let path = dir.join("confirm.json");
    let json = serde_json::to_vec_pretty(&results).expect("verdicts serialize");
    io(&path, fs::write(&path, json))?;
    Ok(results)
}

/// The verdicts as `cargo xtask confirm` prints them: a row per variant and allocator, and a
/// hint when none reproduced.
pub fn table_text(results: &[Confirmation]) -> String {
    let mut out = format!(
        "{:<10} {:<13} {:<11} what it saw\n",
        "variant", "PYTHONMALLOC", "reproduced"
    );
    for r in results {
        out += &format!(
            "{:<10} {:<13} {:<11} {}\n",
            r.variant, r.pythonmalloc, r.reproduced, r.detail
        );
    }
    if !results.iter().any(|r| r.reproduced) {
        out += "only reproduces inside the fuzzer: state carried over from earlier inputs, or a harness problem\n";
    }
    out
}

/// Re-run the reproducer in `dir` in fresh processes on every built variant of [`RUNS`]; each
/// run's output goes to `confirm-<variant>[-<allocator>].log` in `dir`.
pub fn confirm_dir(dir: &Path, cache: &Cache) -> Result<Vec<Confirmation>> {
    let finding: Finding = fs::read(dir.join("finding.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ConfirmError::NotABundle(dir.to_path_buf()))?;
    let env_text = fs::read_to_string(dir.join("campaign.env")).unwrap_or_default();
    let get = |k: &str| {
        env_text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let ext_src = PathBuf::from(get("EXT_PATH")).join(extension::SOURCE_FILE);
    let ext_src = fs::read_to_string(&ext_src).ok();
    let package = package_of(Path::new(&get("EXT_PATH")));
    // The CPython version the finding was made on, when the bundle records it.
    let version = get("CAPISAN_VERSION");
    let version = Some(version.as_str()).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    for (variant, pm) in RUNS {
        let Ok(m) = Manifest::find(cache, variant, version) else {
            continue;
        };
        // Without a recorded source the campaign's own build is all there is (right for its variant).
        let mut ext_path = get("EXT_PATH");
        if let Some(src) = &ext_src {
            let o = dir.join(format!("ext-{variant}"));
            extension::build_extension(cache, &m, Path::new(src.trim()), Some(&o))
                .map_err(|source| ConfirmError::Extension { variant, source })?;
            ext_path = o.display().to_string();
        } else if let Some(p) = &package {
            // A fuzz-pkg finding: the same package built for this variant (cached by pkg-build).
            let built = package::build_package(cache, &m, &p.requirement, &mut |_| {})
                .map_err(|source| ConfirmError::Package { variant, source })?;
            ext_path = built.package().site_packages.display().to_string();
        }
        let build_sh = dir.join("build.sh");
        let b = io(
            &build_sh,
            duct::cmd!(&build_sh, variant.name())
                .dir(dir)
                // The script finds the same build as `m`: this cache, this version.
                .env("CAPISAN_CACHE", cache.root())
                .env("CAPISAN_VERSION", &m.version)
                .stderr_to_stdout()
                .stdout_capture()
                .unchecked()
                .run(),
        )?;
        if !b.status.success() {
            return Err(ConfirmError::Build {
                variant,
                output: String::from_utf8_lossy(&b.stdout).into_owned(),
            });
        }
        let env = run_env(&m, &ext_path, pm);
        let (text, found) = if variant == Variant::Valgrind {
            under_memcheck(dir, &m, &env)?
        } else {
            let program = dir.join(format!("repro-{variant}"));
            let text = output_of(&program, duct::cmd!(&program), dir, &env)?;
            let mut found = detect::parse(&text);
            if text.contains("REFERENCE LEAK:") {
                found.push(Finding::new(
                    BugClass::ReferenceLeak,
                    Tool::Capisan,
                    "repeated calls leak",
                ));
            }
            if text.contains("GC TRAVERSAL BUG:") {
                found.push(Finding::new(
                    BugClass::GcTraversal,
                    Tool::Capisan,
                    "tp_traverse misses a reference",
                ));
            }
            (text, found)
        };
        let suffix = if pm.is_empty() {
            String::new()
        } else {
            format!("-{pm}")
        };
        let log = dir.join(format!("confirm-{variant}{suffix}.log"));
        io(&log, fs::write(&log, &text))?;
        out.push(Confirmation {
            variant: variant.to_string(),
            pythonmalloc: if pm.is_empty() {
                m.runtime_env
                    .get("PYTHONMALLOC")
                    .cloned()
                    .unwrap_or("default".into())
            } else {
                pm.into()
            },
            reproduced: found.iter().any(|f| f.class == finding.class),
            class: found.first().map(|f| f.class.name().to_string()),
            detail: found
                .first()
                .map(|f| f.summary.clone())
                .unwrap_or_else(|| "no report".into()),
        });
    }
    Ok(out)
}

/// The variant's run-time environment with the extension first on PYTHONPATH and `pm` (when
/// set) as PYTHONMALLOC. One list, applied once: duct gives inner `.env` calls precedence.
/// The package record (`pkg-build`) whose venv holds `site_packages`, if it is one:
/// `<package dir>/venv/lib/python3.X/site-packages`, with `package.json` in the package dir.
fn package_of(site_packages: &Path) -> Option<package::PackageBuild> {
    let dir = site_packages.ancestors().nth(4)?;
    package::PackageBuild::load(&dir.join(package::FILE_NAME))
        .ok()
        .filter(|p| p.site_packages == site_packages)
}

fn run_env(m: &Manifest, ext_path: &str, pm: &str) -> Vec<(String, String)> {
    let mut env = m.env();
    for (k, v) in env.iter_mut() {
        if k == "PYTHONPATH" {
            *v = format!("{ext_path}:{v}");
        }
        if k == "PYTHONMALLOC" && !pm.is_empty() {
            *v = pm.to_string();
        }
    }
    if !pm.is_empty() && !env.iter().any(|(k, _)| k == "PYTHONMALLOC") {
        env.push(("PYTHONMALLOC".into(), pm.to_string()));
    }
    env
}

/// Run `cmd` in `dir` with `env`; stdout and stderr together.
fn output_of(
    program: &Path,
    cmd: duct::Expression,
    dir: &Path,
    env: &[(String, String)],
) -> Result<String> {
    let mut cmd = cmd.dir(dir).stderr_to_stdout().stdout_capture().unchecked();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let o = io(program, cmd.run())?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Run `repro-valgrind` under memcheck with the variant's suppressions; its output and the
/// findings of its XML report and its text.
fn under_memcheck(
    dir: &Path,
    m: &Manifest,
    env: &[(String, String)],
) -> Result<(String, Vec<Finding>)> {
    let xml = dir.join("valgrind.xml");
    let supp = m.valgrind_suppressions.clone().unwrap_or_default();
    let cmd = duct::cmd!(
        "valgrind",
        "--tool=memcheck",
        "--xml=yes",
        format!("--xml-file={}", xml.display()),
        "--track-origins=yes",
        format!("--suppressions={}", supp.display()),
        dir.join("repro-valgrind")
    );
    let text = output_of(Path::new("valgrind"), cmd, dir, env)?;
    let mut found = detect::parse_valgrind_xml(&fs::read_to_string(&xml).unwrap_or_default())
        .unwrap_or_default();
    found.extend(detect::parse(&text));
    Ok((text, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_run_and_a_hint_when_nothing_reproduced() {
        let row = |reproduced| Confirmation {
            variant: "asan".into(),
            pythonmalloc: "malloc".into(),
            reproduced,
            class: None,
            detail: "heap-use-after-free".into(),
        };
        let t = table_text(&[row(true)]);
        assert_eq!(
            t.lines().nth(1),
            Some("asan       malloc        true        heap-use-after-free")
        );
        assert_eq!(t.lines().count(), 2);
        assert!(table_text(&[row(false)]).ends_with("or a harness problem\n"));
    }
}
