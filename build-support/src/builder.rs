//! Configure and make one variant out of tree, in its own cache directory.
//!
//! A build is good only once its manifest exists: the manifest is written last and atomically,
//! so an interrupted build is never taken for a finished one. A rerun after an interruption
//! resumes `make` if configure had finished for the same key (a `.configured` stamp), and
//! otherwise restarts from an empty build directory.
//!
//! After make, the variant is installed (`make altinstall`) into `<variant dir>/install`, so its
//! python is an ordinary interpreter that `python -m venv` and pip's build isolation accept. A
//! variant built before this step existed is installed by the next build call, without a rebuild.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fs4::fs_std::FileExt;
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::manifest::{self, Manifest};
use crate::source::{tail_lines, CpythonSource};
use crate::toolchain::Compiler;
use crate::variant::Variant;

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub variant: Variant,
    pub source: CpythonSource,
    pub compiler: Compiler,
    /// `make -j` jobs.
    pub jobs: usize,
    /// Rebuild even when a good build with the same key exists.
    pub force: bool,
}

impl BuildRequest {
    /// A build of `variant` from `source` with `compiler`, `make -j jobs` (default: every
    /// core), reusing a good cached build unless `force`.
    pub fn new(
        variant: Variant,
        source: &CpythonSource,
        compiler: &Compiler,
        jobs: Option<usize>,
        force: bool,
    ) -> BuildRequest {
        let cores = || std::thread::available_parallelism().map_or(2, |n| n.get());
        BuildRequest {
            variant,
            source: source.clone(),
            compiler: compiler.clone(),
            jobs: jobs.unwrap_or_else(cores),
            force,
        }
    }
}

/// What a build call did.
#[derive(Clone, Debug)]
pub enum BuildOutcome {
    /// A good build with the same key existed; nothing ran.
    Cached(Manifest),
    /// Configure and/or make ran and the manifest was written.
    Built(Manifest),
}

impl BuildOutcome {
    /// The manifest either way.
    pub fn manifest(&self) -> &Manifest {
        match self {
            BuildOutcome::Cached(m) | BuildOutcome::Built(m) => m,
        }
    }

    /// What `cargo xtask build-<variant>` prints for it: cached or built, the interpreter, the
    /// manifest.
    pub fn text(&self) -> String {
        let m = self.manifest();
        let how = match self {
            BuildOutcome::Cached(_) => "cached".to_string(),
            BuildOutcome::Built(_) => format!("built in {:.0} s", m.build_seconds),
        };
        let manifest = m.dir().join(crate::manifest::FILE_NAME);
        format!(
            "{}: {how}, {}\n  python   {}\n  manifest {}\n",
            m.variant,
            m.dir().display(),
            m.python.display(),
            manifest.display()
        )
    }
}

/// The cache key: everything that changes the produced binaries.
pub fn cache_key(req: &BuildRequest) -> String {
    let mut h = Sha256::new();
    h.update(req.source.hash.as_bytes());
    h.update(b"\0");
    h.update(req.variant.name());
    for part in req
        .variant
        .configure_args()
        .iter()
        .chain(req.variant.cflags().iter())
    {
        h.update(b"\0");
        h.update(part.as_bytes());
    }
    h.update(b"\0");
    h.update(req.compiler.cc.as_bytes());
    h.update(b"\0");
    h.update(req.compiler.version.as_bytes());
    h.update(format!("\0schema{}", manifest::SCHEMA));
    hex::encode(&h.finalize()[..8])
}

/// The cache directory a request builds into.
pub fn variant_dir(cache: &Cache, req: &BuildRequest) -> PathBuf {
    cache.variants_dir().join(format!(
        "{}-{}-{}",
        req.variant,
        req.source.version,
        cache_key(req)
    ))
}

/// Build (or find cached) the requested variant. `progress` shows configure and make; pass
/// `ProgressBar::hidden()` for none.
pub fn build(cache: &Cache, req: &BuildRequest, progress: &ProgressBar) -> Result<BuildOutcome> {
    let dir = variant_dir(cache, req);
    let manifest_path = dir.join(manifest::FILE_NAME);
    let good = || {
        Manifest::load(&manifest_path)
            .ok()
            .filter(|m| m.python.exists() && m.schema == manifest::SCHEMA)
    };
    if !req.force {
        if let Some(m) = good().filter(|m| m.installed().is_some()) {
            return Ok(BuildOutcome::Cached(m));
        }
    }
    fs::create_dir_all(&dir).map_err(BuildError::io(format!("creating {}", dir.display())))?;
    check_disk(&dir, req.variant)?;
    let lock = fs::File::create(dir.join(".lock")).map_err(BuildError::io(format!(
        "creating lock in {}",
        dir.display()
    )))?;
    if !FileExt::try_lock_exclusive(&lock).unwrap_or(false) {
        // Another process builds the same key: wait for it, then use what it built.
        progress.set_message(format!(
            "waiting for another build of {} (lock held)",
            dir.display()
        ));
        FileExt::lock_exclusive(&lock).map_err(|_| BuildError::Locked(dir.clone()))?;
    }
    if !req.force {
        if let Some(mut m) = good() {
            // Built before variants were installed: install it, keep the build. The old
            // manifest stays valid until the new one replaces it atomically.
            if m.installed().is_none() {
                let (python, seconds) = install(req, &dir, &m.build_dir, progress)?;
                m.installed_python = Some(python);
                m.install_seconds = Some(seconds);
                m.save(&manifest_path)?;
            }
            return Ok(BuildOutcome::Cached(m));
        }
    }
    // Once we hold the lock, the old manifest (if any) no longer describes what is on disk.
    let _ = fs::remove_file(&manifest_path);

    let key = cache_key(req);
    let build_dir = dir.join("build");
    let stamp = dir.join(".configured");
    let started = Instant::now();
    let configured = fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key)
        && build_dir.join("Makefile").exists();
    if req.force || !configured {
        let _ = fs::remove_file(&stamp);
        if build_dir.exists() {
            fs::remove_dir_all(&build_dir)
                .map_err(BuildError::io(format!("clearing {}", build_dir.display())))?;
        }
        fs::create_dir_all(&build_dir)
            .map_err(BuildError::io(format!("creating {}", build_dir.display())))?;
        configure(req, &build_dir, &dir.join("configure.log"), progress)?;
        fs::write(&stamp, &key).map_err(BuildError::io(format!("writing {}", stamp.display())))?;
    }
    make(req, &build_dir, &dir.join("make.log"), progress)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let (python, install_seconds) = install(req, &dir, &build_dir, progress)?;
    let mut m = describe(req, &key, &build_dir, build_seconds)?;
    m.installed_python = Some(python);
    m.install_seconds = Some(install_seconds);
    m.save(&manifest_path)?;
    Ok(BuildOutcome::Built(m))
}

fn check_disk(dir: &Path, variant: Variant) -> Result<()> {
    let available = fs4::available_space(dir).map_err(BuildError::io(format!(
        "checking free space of {}",
        dir.display()
    )))?;
    let needed_mib = variant.needed_disk_mib();
    let threshold = std::env::var("CAPISAN_MIN_FREE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(needed_mib);
    let available_mib = available / (1024 * 1024);
    if available_mib < threshold {
        return Err(BuildError::DiskFull {
            path: dir.to_path_buf(),
            available_mib,
            needed_mib: threshold,
            variant: variant.to_string(),
        });
    }
    Ok(())
}

fn configure(
    req: &BuildRequest,
    build_dir: &Path,
    log: &Path,
    progress: &ProgressBar,
) -> Result<()> {
    let script = req.source.dir.join("configure");
    let total = fs::read_to_string(&script)
        .map(|t| t.matches("checking ").count() as u64)
        .unwrap_or(800);
    progress.reset();
    progress.set_length(total.max(1));
    progress.set_prefix(format!("{} configure", req.variant));
    let mut args = req.variant.configure_args();
    // The install prefix is not part of the cache key: it is inside the keyed directory.
    let prefix = build_dir
        .parent()
        .unwrap_or(build_dir)
        .join(manifest::INSTALL_DIR);
    args.push(format!("--prefix={}", prefix.display()));
    args.push(format!("CC={}", req.compiler.cc));
    args.push(format!("CFLAGS={}", req.variant.cflags().join(" ")));
    let cmd = duct::cmd(&script, &args).dir(build_dir);
    run_logged(
        cmd,
        req,
        log,
        progress,
        |line| line.starts_with("checking "),
        &format!("{} {}", script.display(), args.join(" ")),
    )
}

fn make(req: &BuildRequest, build_dir: &Path, log: &Path, progress: &ProgressBar) -> Result<()> {
    let jobs = format!("-j{}", req.jobs.max(1));
    // A dry run lists the compile commands still to run: an exact length for the bar.
    let total = duct::cmd!("make", "-n")
        .dir(build_dir)
        .stderr_null()
        .stdout_capture()
        .unchecked()
        .run()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| is_compile(l))
                .count() as u64
        })
        .unwrap_or(0);
    progress.reset();
    progress.set_length(total.max(1));
    progress.set_prefix(format!("{} make", req.variant));
    let cmd = duct::cmd!("make", &jobs).dir(build_dir);
    run_logged(
        cmd,
        req,
        log,
        progress,
        is_compile,
        &format!("make {jobs} (in {})", build_dir.display()),
    )
}

/// `make altinstall prefix=<dir>/install`, from scratch; returns the installed interpreter and
/// the seconds it took. The prefix is passed to make as well as to configure, so variants
/// configured before the install step existed install into the same place. altinstall (not
/// install) because nothing needs the unversioned `python3` names or the man pages.
fn install(
    req: &BuildRequest,
    dir: &Path,
    build_dir: &Path,
    progress: &ProgressBar,
) -> Result<(PathBuf, f64)> {
    let started = Instant::now();
    let prefix = dir.join(manifest::INSTALL_DIR);
    if prefix.exists() {
        fs::remove_dir_all(&prefix)
            .map_err(BuildError::io(format!("clearing {}", prefix.display())))?;
    }
    // One `install` line and one `Compiling` line per module of the standard library.
    let total = walkdir::WalkDir::new(req.source.dir.join("Lib"))
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
        .count() as u64
        * 2;
    progress.reset();
    progress.set_length(total.max(1));
    progress.set_prefix(format!("{} install", req.variant));
    let prefix_arg = format!("prefix={}", prefix.display());
    // ENSUREPIP=no: make would run ensurepip with the build-tree python, whose prefix is the
    // configured one (/usr/local for variants configured before --prefix was passed), and put
    // pip there. The installed python runs it below instead.
    let cmd = duct::cmd!("make", "altinstall", &prefix_arg, "ENSUREPIP=no").dir(build_dir);
    run_logged(
        cmd,
        req,
        &dir.join("install.log"),
        progress,
        |line| line.starts_with("Compiling ") || line.contains("install -c"),
        &format!(
            "make altinstall {prefix_arg} ENSUREPIP=no (in {})",
            build_dir.display()
        ),
    )?;
    let short: Vec<&str> = req.source.version.splitn(3, '.').take(2).collect();
    let python = prefix
        .join("bin")
        .join(format!("python{}", short.join(".")));
    progress.set_prefix(format!("{} ensurepip", req.variant));
    let cmd = duct::cmd!(&python, "-m", "ensurepip", "--altinstall")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH");
    run_logged(
        cmd,
        req,
        &dir.join("ensurepip.log"),
        progress,
        |_| false,
        &format!("{} -m ensurepip --altinstall", python.display()),
    )?;
    // The point of installing: venv and pip work with no PYTHONHOME/PYTHONPATH.
    let shown = format!("{} -m pip --version", python.display());
    let mut cmd = duct::cmd!(&python, "-m", "pip", "--version")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in req.variant.build_env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .run()
        .map_err(BuildError::io(format!("running {shown}")))?;
    if !out.status.success() {
        return Err(BuildError::CommandFailed {
            command: shown,
            status: out.status.to_string(),
            log: dir.join("install.log"),
            tail: tail_lines(&String::from_utf8_lossy(&out.stdout), 30),
        });
    }
    Ok((python, started.elapsed().as_secs_f64()))
}

fn is_compile(line: &str) -> bool {
    line.contains(" -c ") && (line.contains(".c") || line.contains(".S"))
}

/// Run with stdout+stderr merged into `log`, advancing `progress` for each line `counts`.
fn run_logged(
    cmd: duct::Expression,
    req: &BuildRequest,
    log: &Path,
    progress: &ProgressBar,
    counts: impl Fn(&str) -> bool,
    shown: &str,
) -> Result<()> {
    let mut cmd = cmd.stderr_to_stdout().unchecked();
    for (k, v) in req.variant.build_env() {
        cmd = cmd.env(k, v);
    }
    let mut log_file =
        fs::File::create(log).map_err(BuildError::io(format!("creating {}", log.display())))?;
    let reader = cmd
        .reader()
        .map_err(BuildError::io(format!("starting {shown}")))?;
    let mut lines = BufReader::new(&reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = lines
            .read_until(b'\n', &mut line)
            .map_err(BuildError::io(format!("reading output of {shown}")))?;
        if n == 0 {
            break;
        }
        log_file
            .write_all(&line)
            .map_err(BuildError::io(format!("writing {}", log.display())))?;
        let text = String::from_utf8_lossy(&line);
        if counts(&text) {
            if progress.position() + 1 < progress.length().unwrap_or(u64::MAX) {
                progress.inc(1);
            }
            let shown_line: String = text.trim().chars().take(70).collect();
            progress.set_message(shown_line);
        }
    }
    let status = reader
        .try_wait()
        .map_err(BuildError::io(format!("waiting for {shown}")))?
        .map(|o| o.status);
    match status {
        Some(s) if s.success() => {
            progress.set_position(progress.length().unwrap_or(0));
            Ok(())
        }
        other => {
            let text = fs::read_to_string(log).unwrap_or_default();
            Err(BuildError::CommandFailed {
                command: shown.to_string(),
                status: other.map_or("unknown status".into(), |s| s.to_string()),
                log: log.to_path_buf(),
                tail: tail_lines(&text, 30),
            })
        }
    }
}

/// Ask the fresh interpreter where things are, and assemble the manifest.
fn describe(
    req: &BuildRequest,
    key: &str,
    build_dir: &Path,
    build_seconds: f64,
) -> Result<Manifest> {
    let python = build_dir.join("python");
    let pybuilddir =
        fs::read_to_string(build_dir.join("pybuilddir.txt")).map_err(BuildError::io(format!(
            "reading {}/pybuilddir.txt (did make finish?)",
            build_dir.display()
        )))?;
    let platstdlib = build_dir.join(pybuilddir.trim());
    let runtime_env = req.variant.runtime_env(&req.source.dir, &platstdlib);
    let query = "import sysconfig as s; v=s.get_config_var; print(v('LDLIBRARY')); print(v('LIBS') or ''); print(v('SYSLIBS') or ''); print(v('MODLIBS') or '')";
    let mut cmd = duct::cmd!(&python, "-c", query)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in &runtime_env {
        cmd = cmd.env(k, v);
    }
    let out = cmd
        .run()
        .map_err(BuildError::io(format!("running {}", python.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(BuildError::CommandFailed {
            command: format!("{} -c <sysconfig query>", python.display()),
            status: out.status.to_string(),
            log: python.clone(),
            tail: tail_lines(&text, 30),
        });
    }
    let mut lines = text.lines();
    let ldlibrary = lines.next().unwrap_or("").trim().to_string();
    let link_libs: Vec<String> = lines
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect();
    let libpython_static = build_dir.join(ldlibrary.replace(".so", ".a"));
    let libpython_shared = ldlibrary
        .ends_with(".so")
        .then(|| build_dir.join(&ldlibrary));
    let supp = req.source.dir.join("Misc").join("valgrind-python.supp");
    Ok(Manifest {
        schema: manifest::SCHEMA,
        version: req.source.version.clone(),
        variant: req.variant,
        key: key.to_string(),
        source_dir: req.source.dir.clone(),
        source_hash: req.source.hash.clone(),
        origin: req.source.origin.clone(),
        build_dir: build_dir.to_path_buf(),
        python,
        libpython_static,
        libpython_shared,
        include_dirs: vec![req.source.dir.join("Include"), build_dir.to_path_buf()],
        stdlib: req.source.dir.join("Lib"),
        platstdlib,
        configure_args: req.variant.configure_args(),
        cflags: req.variant.cflags(),
        link_libs,
        symbolizer: req.compiler.llvm_symbolizer(),
        compiler: req.compiler.clone(),
        runtime_env,
        valgrind_suppressions: (req.variant == Variant::Valgrind && supp.exists()).then_some(supp),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        build_seconds,
        installed_python: None,
        install_seconds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_says_where_its_python_and_manifest_are() {
        let m = crate::manifest::fixture();
        assert_eq!(
            BuildOutcome::Built(m.clone()).text(),
            "asan: built in 1 s, /c/v\n  python   /c/v/build/python\n  manifest /c/v/manifest.json\n"
        );
        assert!(BuildOutcome::Cached(m)
            .text()
            .starts_with("asan: cached, /c/v\n"));
    }
}
