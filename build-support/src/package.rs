//! Build a Python package (a PyPI requirement, an sdist or a source tree) against a variant,
//! and record the extension modules it installed.
//!
//! The package goes into a venv of the variant's installed interpreter (see
//! [`Manifest::installed_python`]), one per (variant, requirement). pip builds it: capisan never
//! reimplements a build backend, it only hands pip the variant's compiler and sanitizer flags
//! ([`extension_cflags`]) through CC/CXX/CFLAGS/CXXFLAGS/LDFLAGS, which setuptools, Cython,
//! meson-python and scikit-build-core all honour. The package itself is compiled from source
//! (`--no-binary NAME`); its build dependencies may be wheels.
//!
//! Layout: `<cache>/packages/<label>-<variant>-<key>/` holds `venv/`, `pip.log` and
//! [`FILE_NAME`]. It is built in a sibling temporary directory and renamed into place, so a
//! failed build leaves no directory behind and never touches an earlier good one; the log of a
//! failed build is kept beside it as `<label>-<variant>-<key>.failed.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::error::BuildError;
use crate::manifest::Manifest;
use crate::source::{tail_lines, write_atomic};
use crate::variant::Variant;

/// Bumped when a field of [`PackageBuild`] changes meaning; older builds are then rebuilt.
pub const SCHEMA: u32 = 1;

/// The record of a package build inside its directory; written last, so its presence marks a
/// good build.
pub const FILE_NAME: &str = "package.json";

/// Run in the venv after pip: site-packages, extension suffixes, modules and their imports.
const MODULES_PY: &str = include_str!("package_modules.py");

/// Compiler flags for C and C++ extension code built against `variant` (by `ext-build` and by
/// pip for packages): debug info and frame pointers for readable stacks at `-O1`; for asan the
/// interpreter's sanitizers and libFuzzer's coverage (`-fsanitize=fuzzer-no-link`; the fuzzer
/// binary provides the runtime), without `-fsanitize=function`, which reports every call through
/// CPython's cast method tables; otherwise DWARF 4, which valgrind 3.19 can read.
pub fn extension_cflags(variant: Variant) -> Vec<&'static str> {
    let mut flags = vec!["-g", "-O1", "-fno-omit-frame-pointer"];
    match variant {
        Variant::Asan => flags.extend([
            "-fsanitize=address,undefined",
            "-fno-sanitize=function",
            "-fsanitize=fuzzer-no-link",
        ]),
        _ => flags.push("-gdwarf-4"),
    }
    flags
}

/// Where package builds live.
pub fn packages_dir(cache: &Cache) -> PathBuf {
    cache.root().join("packages")
}

/// What to build, as the user named it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Requirement {
    /// A pip requirement resolved on the package index, e.g. `markupsafe==3.0.2`.
    Index(String),
    /// A source distribution file (`.tar.gz`, `.zip`).
    Sdist(PathBuf),
    /// A source tree with a `pyproject.toml` or `setup.py`.
    SourceDir(PathBuf),
}

impl Requirement {
    /// An existing directory is a source tree, an existing file an sdist; anything else must
    /// read as a pip requirement (`name`, `name==1.2`, `name[extra]>=1`).
    pub fn parse(text: &str) -> Result<Requirement, PackageError> {
        let path = Path::new(text);
        if path.exists() {
            let abs = fs::canonicalize(path).map_err(|e| PackageError::BadRequirement {
                requirement: text.into(),
                why: format!("cannot resolve the path: {e}"),
            })?;
            if abs.is_dir() {
                if !abs.join("pyproject.toml").exists() && !abs.join("setup.py").exists() {
                    return Err(PackageError::BadRequirement {
                        requirement: text.into(),
                        why: "the directory has neither pyproject.toml nor setup.py".into(),
                    });
                }
                return Ok(Requirement::SourceDir(abs));
            }
            let name = abs.to_string_lossy();
            if name.ends_with(".whl") {
                return Err(PackageError::BadRequirement {
                    requirement: text.into(),
                    why:
                        "a wheel is already compiled; pass its sdist, source tree or name==version"
                            .into(),
                });
            }
            return Ok(Requirement::Sdist(abs));
        }
        let name_len = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .unwrap_or(text.len());
        let rest = text[name_len..].trim_start();
        let looks_like_spec = rest.is_empty()
            || rest.starts_with('[')
            || ["==", ">=", "<=", "~=", "!=", "<", ">", "@", ";"]
                .iter()
                .any(|op| rest.starts_with(op));
        if name_len == 0 || !looks_like_spec || text.contains('/') {
            return Err(PackageError::BadRequirement {
                requirement: text.into(),
                why: "not an existing path and not a pip requirement such as markupsafe==3.0.2"
                    .into(),
            });
        }
        Ok(Requirement::Index(text.trim().to_string()))
    }

    /// The project name pip is told to compile from source, when the requirement names one.
    pub fn project_name(&self) -> Option<&str> {
        match self {
            Requirement::Index(r) => {
                let end = r
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
                    .unwrap_or(r.len());
                Some(&r[..end])
            }
            _ => None,
        }
    }

    /// A short, path-safe label for directory names.
    fn label(&self) -> String {
        let raw = match self {
            Requirement::Index(r) => r.clone(),
            Requirement::Sdist(p) | Requirement::SourceDir(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "package".into()),
        };
        let mut label = String::new();
        for c in raw.chars() {
            let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            };
            if !(c == '-' && label.ends_with('-')) {
                label.push(c);
            }
        }
        label.trim_matches('-').chars().take(60).collect()
    }

    /// What the cache key depends on: the requirement text, or the bytes of the sdist or tree.
    fn fingerprint(&self) -> Result<String, PackageError> {
        let mut h = Sha256::new();
        match self {
            Requirement::Index(r) => h.update(r.as_bytes()),
            Requirement::Sdist(p) => {
                let bytes =
                    fs::read(p).map_err(BuildError::io(format!("reading {}", p.display())))?;
                h.update(&bytes);
            }
            Requirement::SourceDir(dir) => {
                let skip = [".git", "build", "dist", "__pycache__", ".tox", ".venv"];
                let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
                    .into_iter()
                    .filter_entry(|e| {
                        let n = e.file_name().to_string_lossy();
                        !(skip.contains(&n.as_ref()) || n.ends_with(".egg-info"))
                    })
                    .flatten()
                    .filter(|e| e.file_type().is_file())
                    .map(|e| e.into_path())
                    .collect();
                files.sort();
                for f in files {
                    let bytes =
                        fs::read(&f).map_err(BuildError::io(format!("reading {}", f.display())))?;
                    h.update(
                        f.strip_prefix(dir)
                            .unwrap_or(&f)
                            .to_string_lossy()
                            .as_bytes(),
                    );
                    h.update(b"\0");
                    h.update(&bytes);
                }
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The argument pip installs.
    fn pip_arg(&self) -> String {
        match self {
            Requirement::Index(r) => r.clone(),
            Requirement::Sdist(p) | Requirement::SourceDir(p) => p.display().to_string(),
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pip_arg())
    }
}

/// Why a package could not be built. Each message is one line naming the requirement and what
/// to do; a failed pip run adds the tail of its log.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("'{requirement}': {why}")]
    BadRequirement { requirement: String, why: String },
    /// pip found no release matching the requirement, or one of its build dependencies.
    #[error("no release on the package index matches {missing}{} ({detail}); check the name and version on https://pypi.org (full log: {log})", needed_by(.requirement, .missing))]
    NotFound {
        requirement: String,
        /// The requirement pip could not satisfy, as pip printed it.
        missing: String,
        detail: String,
        log: PathBuf,
    },
    #[error("pip could not reach the package index for {requirement} (no network?); connect, or pass an sdist or source directory instead (full log: {log})")]
    NoNetwork { requirement: String, log: PathBuf },
    #[error("building {requirement} for the {variant} variant failed; full log: {log}\n--- last lines of the log ---\n{tail}")]
    BuildFailed {
        requirement: String,
        variant: Variant,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} {version} ({requirement}) installed no extension module for the {variant} variant: nothing for capisan to fuzz (full log: {log})")]
    NoExtension {
        requirement: String,
        name: String,
        version: String,
        variant: Variant,
        log: PathBuf,
    },
    #[error("the {variant} variant in {dir} is not installed; run `cargo xtask build-{variant}` (it installs it without rebuilding)")]
    NotInstalled { variant: Variant, dir: PathBuf },
    #[error("package build record {path} is unreadable ({source}); delete its directory and build again")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A module asked for by name is not one the package installed.
    #[error("{name} {version} has no extension module {module}; it has {known}")]
    NoSuchModule {
        name: String,
        version: String,
        module: String,
        known: String,
    },
    /// None of the package's extension modules imports, so there is nothing to fuzz.
    #[error(
        "no extension module of {name} {version} imports on the {variant} variant (see above)"
    )]
    NothingImports {
        name: String,
        version: String,
        variant: Variant,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// One extension module a package installed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtModule {
    /// Dotted import name, e.g. `markupsafe._speedups`.
    pub name: String,
    /// The shared object.
    pub path: PathBuf,
    /// What importing it in the venv raised; `None` when it imports.
    pub import_error: Option<String>,
}

/// A built package: the record written to [`FILE_NAME`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackageBuild {
    pub schema: u32,
    pub requirement: Requirement,
    /// Distribution name and version, from pip's install report.
    pub name: String,
    pub version: String,
    pub variant: Variant,
    /// Key of the variant's manifest it was built against.
    pub variant_key: String,
    /// Cache key: requirement (or sdist / tree contents) + variant key + flags.
    pub key: String,
    /// The package's directory in the cache.
    pub dir: PathBuf,
    pub venv: PathBuf,
    /// `venv/bin/python`.
    pub python: PathBuf,
    /// The venv's site-packages: put it on sys.path to import the package as it imports itself.
    pub site_packages: PathBuf,
    /// Every extension module the package installed.
    pub modules: Vec<ExtModule>,
    /// CC, CXX, CFLAGS, CXXFLAGS, LDFLAGS as given to pip.
    pub compile_env: Vec<(String, String)>,
    /// pip's full output.
    pub pip_log: PathBuf,
    pub built_at: u64,
    /// Wall time of venv + pip + module scan, seconds.
    pub build_seconds: f64,
}

impl PackageBuild {
    /// Read a record.
    pub fn load(path: &Path) -> Result<PackageBuild, PackageError> {
        let text = fs::read_to_string(path)
            .map_err(BuildError::io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text).map_err(|source| PackageError::Record {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The modules that import in the venv.
    pub fn importable(&self) -> impl Iterator<Item = &ExtModule> {
        self.modules.iter().filter(|m| m.import_error.is_none())
    }

    /// The modules to fuzz: `wanted` (each must be a module of the package), or every module
    /// that imports when `wanted` is empty; never none.
    pub fn modules_to_fuzz(&self, wanted: &[String]) -> Result<Vec<String>, PackageError> {
        let (name, version) = (self.name.clone(), self.version.clone());
        if let Some(module) = wanted
            .iter()
            .find(|w| !self.modules.iter().any(|m| &m.name == *w))
        {
            let known: Vec<&str> = self.modules.iter().map(|m| m.name.as_str()).collect();
            let (module, known) = (module.clone(), known.join(", "));
            return Err(PackageError::NoSuchModule {
                name,
                version,
                module,
                known,
            });
        }
        let modules: Vec<String> = if wanted.is_empty() {
            self.importable()
                .filter(|m| !is_test_helper(&m.name))
                .map(|m| m.name.clone())
                .collect()
        } else {
            wanted.to_vec()
        };
        if modules.is_empty() {
            let variant = self.variant;
            return Err(PackageError::NothingImports {
                name,
                version,
                variant,
            });
        }
        Ok(modules)
    }
}

/// A module that exists to test the package's C API from its test suite (`pkg._testcapi`,
/// `pkg._test_internal`), like CPython's own `_testcapi`: its functions misuse the API on
/// purpose, so it is fuzzed only when named with `--module`.
pub fn is_test_helper(dotted: &str) -> bool {
    dotted
        .rsplit('.')
        .next()
        .is_some_and(|m| m.starts_with("_test"))
}

/// Where `cargo xtask fuzz-pkg` puts the campaigns of requirement `req` by default:
/// `<root>/target/capisan/pkg-<req, other than letters, digits and dots as ->-<variant>`, with
/// `-<X.Y>` on a CPython line (`line`) other than the default one.
pub fn campaigns_dir(root: &Path, req: &str, variant: Variant, line: &str) -> PathBuf {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '.';
    let label: String = req.chars().map(|c| if keep(c) { c } else { '-' }).collect();
    let mut name = format!("pkg-{label}-{variant}");
    if line != crate::versions::default_line() {
        name = format!("{name}-{line}");
    }
    root.join("target").join("capisan").join(name)
}

/// What [`build_package`] did.
#[derive(Clone, Debug)]
pub enum PackageOutcome {
    /// A good build with the same key existed; nothing ran.
    Cached(PackageBuild),
    /// pip ran and the record was written.
    Built(PackageBuild),
}

impl PackageOutcome {
    /// The record either way.
    pub fn package(&self) -> &PackageBuild {
        match self {
            PackageOutcome::Cached(p) | PackageOutcome::Built(p) => p,
        }
    }

    /// What `pkg-build` / `fuzz-pkg` print: cached or built, the interpreter, site-packages,
    /// each module (and why it does not import), the record.
    pub fn text(&self) -> String {
        let p = self.package();
        let how = match self {
            PackageOutcome::Cached(_) => "cached".to_string(),
            PackageOutcome::Built(_) => format!("built in {:.0} s", p.build_seconds),
        };
        let mut out = format!(
            "{} {} ({}): {how}, {}\n",
            p.name,
            p.version,
            p.variant,
            p.dir.display()
        );
        out += &format!("  python         {}\n", p.python.display());
        out += &format!("  site-packages  {}\n", p.site_packages.display());
        for m in &p.modules {
            match &m.import_error {
                None => out += &format!("  module         {}\n", m.name),
                Some(e) => out += &format!("  module         {} (does not import: {e})\n", m.name),
            }
        }
        out + &format!("  record         {}\n", p.dir.join(FILE_NAME).display())
    }
}

/// CC/CXX/CFLAGS/CXXFLAGS/LDFLAGS for building extensions against `m`.
pub fn compile_env(m: &Manifest) -> Vec<(String, String)> {
    let flags = extension_cflags(m.variant).join(" ");
    vec![
        ("CC".into(), m.compiler.cc.clone()),
        ("CXX".into(), m.compiler.cc.replacen("clang", "clang++", 1)),
        ("CFLAGS".into(), flags.clone()),
        ("CXXFLAGS".into(), flags.clone()),
        ("LDFLAGS".into(), flags),
    ]
}

/// The cache key of building `req` against `m`.
fn cache_key(req: &Requirement, m: &Manifest) -> Result<String, PackageError> {
    let mut h = Sha256::new();
    h.update(format!("capisan-package\0schema{SCHEMA}\0"));
    h.update(req.fingerprint()?.as_bytes());
    h.update(b"\0");
    h.update(m.key.as_bytes());
    for (k, v) in compile_env(m) {
        h.update(format!("\0{k}={v}"));
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// The site-packages directory of the venv `venv` (`lib/python3.X/site-packages`), for
/// `fuzz-ext --venv`: the one directory of that shape, or an error saying what was found.
pub fn venv_site_packages(venv: &Path) -> Result<PathBuf, String> {
    let lib = venv.join("lib");
    let found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map_err(|e| format!("{} is not a venv ({}: {e})", venv.display(), lib.display()))?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "{} has no lib/python3.X/site-packages",
            venv.display()
        )),
        _ => Err(format!(
            "{} has several site-packages ({found:?}); pass --ext-path",
            venv.display()
        )),
    }
}

/// Build `req` against the variant of `m` (or read the cached build). `on_step` gets one line
/// per step as it starts (`[2/4] pip install ...`).
///
/// The caller must have installed the variant (`builder::build` does); errors name the
/// requirement and keep pip's log.
pub fn build_package(
    cache: &Cache,
    m: &Manifest,
    req: &Requirement,
    on_step: &mut dyn FnMut(&str),
) -> Result<PackageOutcome, PackageError> {
    let base_python = m
        .installed()
        .ok_or_else(|| PackageError::NotInstalled {
            variant: m.variant,
            dir: m.dir().to_path_buf(),
        })?
        .to_path_buf();
    let key = cache_key(req, m)?;
    let root = packages_dir(cache);
    let name = format!("{}-{}-{key}", req.label(), m.variant);
    let dir = root.join(&name);
    let record = dir.join(FILE_NAME);
    let good = || {
        PackageBuild::load(&record)
            .ok()
            .filter(|p| p.schema == SCHEMA && p.python.exists())
    };
    if let Some(p) = good() {
        return Ok(PackageOutcome::Cached(p));
    }
    fs::create_dir_all(&root).map_err(BuildError::io(format!("creating {}", root.display())))?;
    let lock_path = root.join(format!("{name}.lock"));
    let lock = fs::File::create(&lock_path)
        .map_err(BuildError::io(format!("creating {}", lock_path.display())))?;
    if !FileExt::try_lock_exclusive(&lock).unwrap_or(false) {
        on_step(&format!("waiting for another build of {req} (lock held)"));
        FileExt::lock_exclusive(&lock).map_err(|_| BuildError::Locked(dir.clone()))?;
        if let Some(p) = good() {
            return Ok(PackageOutcome::Cached(p));
        }
    }
    if dir.exists() {
        // A directory without a good record: an interrupted rename or a stale schema.
        fs::remove_dir_all(&dir).map_err(BuildError::io(format!("clearing {}", dir.display())))?;
    }
    let tmp = root.join(format!("{name}.partial-{}", std::process::id()));
    let failed_log = root.join(format!("{name}.failed.log"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(BuildError::io(format!("creating {}", tmp.display())))?;
    let result = build_in(m, req, &base_python, &key, &tmp, &dir, on_step);
    match result {
        Ok(p) => {
            let _ = fs::remove_file(&failed_log);
            fs::rename(&tmp, &dir).map_err(BuildError::io(format!(
                "renaming {} to {}",
                tmp.display(),
                dir.display()
            )))?;
            Ok(PackageOutcome::Built(p))
        }
        Err(e) => {
            let _ = fs::rename(tmp.join("pip.log"), &failed_log);
            let _ = fs::remove_dir_all(&tmp);
            Err(relocate_log(e, &tmp.join("pip.log"), &failed_log))
        }
    }
}

/// The error with the temporary log path replaced by where the log was kept.
fn relocate_log(e: PackageError, from: &Path, to: &Path) -> PackageError {
    let fix = |log: PathBuf| if log == from { to.to_path_buf() } else { log };
    match e {
        PackageError::NotFound {
            requirement,
            missing,
            detail,
            log,
        } => PackageError::NotFound {
            requirement,
            missing,
            detail,
            log: fix(log),
        },
        PackageError::NoNetwork { requirement, log } => PackageError::NoNetwork {
            requirement,
            log: fix(log),
        },
        PackageError::BuildFailed {
            requirement,
            variant,
            log,
            tail,
        } => PackageError::BuildFailed {
            requirement,
            variant,
            log: fix(log),
            tail,
        },
        PackageError::NoExtension {
            requirement,
            name,
            version,
            variant,
            log,
        } => PackageError::NoExtension {
            requirement,
            name,
            version,
            variant,
            log: fix(log),
        },
        other => other,
    }
}

/// The steps, in `tmp`; paths in the returned record already name `dir`, where `tmp` is
/// renamed to on success.
fn build_in(
    m: &Manifest,
    req: &Requirement,
    base_python: &Path,
    key: &str,
    tmp: &Path,
    dir: &Path,
    on_step: &mut dyn FnMut(&str),
) -> Result<PackageBuild, PackageError> {
    let started = Instant::now();
    let venv = tmp.join("venv");
    let log = tmp.join("pip.log");
    let env = m.installed_env();
    let mut step = |n: u32, text: String| on_step(&format!("[{n}/4] {text}"));

    step(
        1,
        format!("venv of {} ({} variant)", base_python.display(), m.variant),
    );
    // Without pip: ensurepip in every venv costs ~30 s under ASan; the installed variant's pip
    // drives the venv instead (`pip --python`).
    let venv_arg = venv.display().to_string();
    run_to_log(
        base_python,
        &["-m", "venv", "--without-pip", &venv_arg],
        &env,
        &log,
        req,
        m.variant,
    )?;
    let python = venv.join("bin").join("python");

    let report = tmp.join("pip-report.json");
    let mut args: Vec<String> = vec![
        "-m".into(),
        "pip".into(),
        "--python".into(),
        python.display().to_string(),
    ];
    args.extend(
        [
            "install",
            "-v",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
        ]
        .map(String::from),
    );
    // No cache: pip's wheel cache is keyed by platform tags, not compiler flags, so a wheel built
    // for another variant (same tags) would be reused. The package itself from source; its build
    // dependencies may be wheels. A local sdist or tree is always built from source.
    if let Some(project) = req.project_name() {
        args.extend(["--no-binary".into(), project.to_string()]);
    }
    args.extend(["--report".into(), report.display().to_string()]);
    args.push(req.pip_arg());
    let mut pip_env = env.clone();
    pip_env.extend(compile_env(m));
    step(
        2,
        format!(
            "pip install {req} with {} (log: {})",
            m.compiler.cc,
            dir.join("pip.log").display()
        ),
    );
    run_to_log(base_python, &args, &pip_env, &log, req, m.variant)?;
    let (name, version) = requested_dist(&report).unwrap_or_else(|| {
        (
            req.project_name().unwrap_or("unknown").to_string(),
            "unknown".to_string(),
        )
    });

    step(
        3,
        format!("extension modules of {name} {version}, and whether they import"),
    );
    let script = tmp.join("package_modules.py");
    let found = tmp.join("modules.json");
    fs::write(&script, MODULES_PY)
        .map_err(BuildError::io(format!("writing {}", script.display())))?;
    run_to_log(
        &python,
        &[
            script.display().to_string(),
            name.clone(),
            found.display().to_string(),
        ],
        &env,
        &log,
        req,
        m.variant,
    )?;
    let scan: Scan = serde_json::from_str(
        &fs::read_to_string(&found)
            .map_err(BuildError::io(format!("reading {}", found.display())))?,
    )
    .map_err(|source| PackageError::Record {
        path: found.clone(),
        source,
    })?;
    let _ = fs::remove_file(&script);
    if scan.modules.is_empty() {
        return Err(PackageError::NoExtension {
            requirement: req.to_string(),
            name,
            version,
            variant: m.variant,
            log,
        });
    }

    step(4, format!("record in {}", dir.join(FILE_NAME).display()));
    relocate_venv(&venv, tmp, dir)?;
    let moved = |p: &Path| dir.join(p.strip_prefix(tmp).unwrap_or(p));
    let package = PackageBuild {
        schema: SCHEMA,
        requirement: req.clone(),
        name,
        version,
        variant: m.variant,
        variant_key: m.key.clone(),
        key: key.to_string(),
        dir: dir.to_path_buf(),
        venv: dir.join("venv"),
        python: dir.join("venv").join("bin").join("python"),
        site_packages: moved(&scan.site_packages),
        modules: scan
            .modules
            .into_iter()
            .map(|e| ExtModule {
                path: moved(&e.path),
                ..e
            })
            .collect(),
        compile_env: compile_env(m),
        pip_log: dir.join("pip.log"),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &tmp.join(FILE_NAME),
        serde_json::to_string_pretty(&package)
            .expect("record serializes")
            .as_bytes(),
    )?;
    Ok(package)
}

/// What package_modules.py writes.
#[derive(Deserialize)]
struct Scan {
    site_packages: PathBuf,
    modules: Vec<ExtModule>,
}

/// Name and version of the distribution pip installed because it was asked to (`--report`).
fn requested_dist(report: &Path) -> Option<(String, String)> {
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(report).ok()?).ok()?;
    let items = json.get("install")?.as_array()?;
    let item = items
        .iter()
        .find(|i| i.get("requested").and_then(|r| r.as_bool()) == Some(true))?;
    let meta = item.get("metadata")?;
    Some((
        meta.get("name")?.as_str()?.to_string(),
        meta.get("version")?.as_str()?.to_string(),
    ))
}

/// Point the venv's scripts and config at `dir`, where `tmp` is about to be renamed to (the
/// interpreter is a symlink and finds its venv by location; `activate` and the package's
/// console scripts name it).
fn relocate_venv(venv: &Path, tmp: &Path, dir: &Path) -> Result<(), PackageError> {
    let (from, to) = (tmp.display().to_string(), dir.display().to_string());
    let bin = fs::read_dir(venv.join("bin"))
        .map_err(BuildError::io(format!("listing {}/bin", venv.display())))?;
    let files = bin
        .flatten()
        .map(|e| e.path())
        .chain([venv.join("pyvenv.cfg")]);
    for path in files {
        if fs::symlink_metadata(&path).is_ok_and(|md| md.is_file()) {
            if let Ok(text) = fs::read_to_string(&path) {
                if text.contains(&from) {
                    fs::write(&path, text.replace(&from, &to))
                        .map_err(BuildError::io(format!("rewriting {}", path.display())))?;
                }
            }
        }
    }
    Ok(())
}

/// Run `program args` with `env` (and no PYTHONHOME/PYTHONPATH), appending its output to
/// `log`; a failure is classified from what pip printed.
fn run_to_log<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    env: &[(String, String)],
    log: &Path,
    req: &Requirement,
    variant: Variant,
) -> Result<(), PackageError> {
    use std::io::Write;
    let shown = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(BuildError::io(format!("opening {}", log.display())))?;
    let _ = writeln!(file, "$ {shown}");
    let mut cmd = duct::cmd(program, args)
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .stderr_to_stdout()
        .stdout_file(
            file.try_clone()
                .map_err(BuildError::io(format!("opening {}", log.display())))?,
        )
        .unchecked();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd
        .run()
        .map_err(BuildError::io(format!("running {shown}")))?;
    if out.status.success() {
        return Ok(());
    }
    let _ = writeln!(file, "$ exited with {}", out.status);
    let text = fs::read_to_string(log).unwrap_or_default();
    Err(classify_failure(&text, req, variant, log))
}

/// Turn pip's output into the error the user can act on.
fn classify_failure(text: &str, req: &Requirement, variant: Variant, log: &Path) -> PackageError {
    let requirement = req.to_string();
    let offline = [
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "No address associated with hostname",
    ]
    .iter()
    .any(|s| text.contains(s));
    // Offline, pip ends with "No matching distribution found" too: the network comes first.
    let not_found = text
        .lines()
        .find_map(|l| l.split_once("No matching distribution found for "))
        .map(|(_, spec)| spec.trim().to_string());
    if offline && (not_found.is_some() || !text.contains("Successfully")) {
        return PackageError::NoNetwork {
            requirement,
            log: log.to_path_buf(),
        };
    }
    if let Some(missing) = not_found {
        let detail = text
            .lines()
            .find(|l| l.contains("Could not find a version that satisfies"))
            .and_then(|l| {
                l.rfind('(')
                    .map(|i| l[i + 1..].trim_end_matches(')').to_string())
            })
            .map(|d| shorten_versions(&d))
            .unwrap_or_else(|| "no matching distribution".into());
        return PackageError::NotFound {
            requirement,
            missing,
            detail,
            log: log.to_path_buf(),
        };
    }
    PackageError::BuildFailed {
        requirement,
        variant,
        log: log.to_path_buf(),
        tail: tail_lines(text, 30),
    }
}

/// `from versions: a, b, c, …` with only the first two and last three of a long list.
fn shorten_versions(detail: &str) -> String {
    let Some(list) = detail.strip_prefix("from versions: ") else {
        return detail.to_string();
    };
    let all: Vec<&str> = list.split(", ").collect();
    if all.len() <= 6 {
        return detail.to_string();
    }
    format!(
        "from versions: {}, …, {}",
        all[..2].join(", "),
        all[all.len() - 3..].join(", ")
    )
}

/// ` (a dependency of REQ)` when what pip could not find is not the requirement itself.
fn needed_by(requirement: &str, missing: &str) -> String {
    let name = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .map(|c| {
                if c == '_' || c == '.' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    };
    if name(requirement) == name(missing) {
        String::new()
    } else {
        format!(" (a dependency of {requirement})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_helper_modules_are_fuzzed_only_by_name() {
        assert!(is_test_helper("multidict._testcapi"));
        assert!(is_test_helper("_testinternalcapi"));
        assert!(!is_test_helper("multidict._multidict"));
        assert!(!is_test_helper("pkg.testing_speedups"));
    }

    #[test]
    fn venv_site_packages_is_the_one_under_lib() {
        let d = tempfile::tempdir().unwrap();
        assert!(venv_site_packages(d.path())
            .unwrap_err()
            .contains("not a venv"));
        std::fs::create_dir_all(d.path().join("lib/python3.13/site-packages")).unwrap();
        assert_eq!(
            venv_site_packages(d.path()).unwrap(),
            d.path().join("lib/python3.13/site-packages")
        );
        std::fs::create_dir_all(d.path().join("lib/python3.14/site-packages")).unwrap();
        assert!(venv_site_packages(d.path())
            .unwrap_err()
            .contains("several"));
    }

    fn built(modules: &[(&str, Option<&str>)]) -> PackageBuild {
        PackageBuild {
            schema: 1,
            requirement: Requirement::Index("p==1.0".into()),
            name: "p".into(),
            version: "1.0".into(),
            variant: Variant::Asan,
            variant_key: "k".into(),
            key: "k".into(),
            dir: "/c/p".into(),
            venv: "/c/p/venv".into(),
            python: "/c/p/venv/bin/python".into(),
            site_packages: "/c/p/site".into(),
            modules: modules
                .iter()
                .map(|(n, e)| ExtModule {
                    name: n.to_string(),
                    path: format!("/c/p/{n}.so").into(),
                    import_error: e.map(String::from),
                })
                .collect(),
            compile_env: Vec::new(),
            pip_log: "/c/p/pip.log".into(),
            built_at: 0,
            build_seconds: 12.4,
        }
    }

    #[test]
    fn the_modules_to_fuzz_are_named_ones_or_every_importable_one() {
        let p = built(&[("p._a", None), ("p._b", Some("ImportError: x"))]);
        assert_eq!(p.modules_to_fuzz(&[]).unwrap(), ["p._a"]);
        assert_eq!(p.modules_to_fuzz(&["p._b".into()]).unwrap(), ["p._b"]);
        let e = p.modules_to_fuzz(&["p._c".into()]).unwrap_err().to_string();
        assert_eq!(e, "p 1.0 has no extension module p._c; it has p._a, p._b");
        let none = built(&[("p._b", Some("ImportError: x"))]);
        assert!(matches!(
            none.modules_to_fuzz(&[]),
            Err(PackageError::NothingImports { .. })
        ));
        let text = PackageOutcome::Built(p).text();
        assert!(text.starts_with("p 1.0 (asan): built in 12 s, /c/p\n"));
        assert!(text.contains("  module         p._b (does not import: ImportError: x)\n"));
        assert_eq!(
            campaigns_dir(Path::new("/r"), "markupsafe==3.0.2", Variant::Asan, "3.13"),
            Path::new("/r/target/capisan/pkg-markupsafe--3.0.2-asan")
        );
        assert_eq!(
            campaigns_dir(Path::new("/r"), "markupsafe==3.0.2", Variant::Asan, "3.11"),
            Path::new("/r/target/capisan/pkg-markupsafe--3.0.2-asan-3.11")
        );
    }

    #[test]
    fn parses_requirements() {
        assert_eq!(
            Requirement::parse("markupsafe==3.0.2").unwrap(),
            Requirement::Index("markupsafe==3.0.2".into())
        );
        assert_eq!(
            Requirement::parse("markupsafe==3.0.2")
                .unwrap()
                .project_name(),
            Some("markupsafe")
        );
        assert!(Requirement::parse("mmh3").is_ok());
        assert!(Requirement::parse("frozenlist[x]>=1.5").is_ok());
        for bad in ["", "/no/such/sdist.tar.gz", "what is this", "==1.0"] {
            assert!(
                matches!(
                    Requirement::parse(bad),
                    Err(PackageError::BadRequirement { .. })
                ),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(Requirement::parse(dir.path().to_str().unwrap()).is_err());
        fs::write(dir.path().join("pyproject.toml"), "").unwrap();
        assert!(matches!(
            Requirement::parse(dir.path().to_str().unwrap()),
            Ok(Requirement::SourceDir(_))
        ));
    }

    #[test]
    fn labels_are_path_safe() {
        assert_eq!(
            Requirement::Index("MarkupSafe==3.0.2".into()).label(),
            "markupsafe-3.0.2"
        );
        assert_eq!(Requirement::Index("a[b]>=1,<2".into()).label(), "a-b-1-2");
    }

    #[test]
    fn asan_flags_carry_sanitizers_and_coverage() {
        let asan = extension_cflags(Variant::Asan);
        for f in [
            "-fsanitize=address,undefined",
            "-fno-sanitize=function",
            "-fsanitize=fuzzer-no-link",
            "-fno-omit-frame-pointer",
        ] {
            assert!(asan.contains(&f), "{f}");
        }
        assert!(extension_cflags(Variant::Valgrind).contains(&"-gdwarf-4"));
    }

    #[test]
    fn classifies_pip_failures() {
        let req = Requirement::Index("nope==1".into());
        let log = Path::new("/l");
        let e = classify_failure(
            "ERROR: Could not find a version that satisfies the requirement nope==1 (from versions: none)\nERROR: No matching distribution found for nope==1\n",
            &req,
            Variant::Asan,
            log,
        );
        let msg = e.to_string();
        assert!(matches!(e, PackageError::NotFound { .. }), "{msg}");
        assert!(msg.contains("from versions: none"), "{msg}");
        assert!(!msg.contains("dependency"), "{msg}");
        assert_eq!(
            shorten_versions("from versions: 1, 2, 3, 4, 5, 6, 7, 8"),
            "from versions: 1, 2, …, 6, 7, 8"
        );
        let dep = classify_failure(
            "  ERROR: Could not find a version that satisfies the requirement setuptools>=999 (from versions: 1.0)\n  ERROR: No matching distribution found for setuptools>=999\n",
            &req,
            Variant::Asan,
            log,
        )
        .to_string();
        assert!(
            dep.contains("matches setuptools>=999 (a dependency of nope==1)"),
            "{dep}"
        );
        assert!(matches!(
            classify_failure(
                "WARNING: Retrying ... Failed to establish a new connection\nERROR: No matching distribution found for nope==1",
                &req,
                Variant::Asan,
                log
            ),
            PackageError::NoNetwork { .. }
        ));
        assert!(matches!(
            classify_failure(
                "WARNING: Retrying ... Failed to establish a new connection: [Errno -3] Temporary failure in name resolution",
                &req,
                Variant::Asan,
                log
            ),
            PackageError::NoNetwork { .. }
        ));
        assert!(matches!(
            classify_failure("error: command 'clang-22' failed", &req, Variant::Asan, log),
            PackageError::BuildFailed { .. }
        ));
    }
}
