//! atheris 3.x, the Python fuzzing engine, built from PyPI against a variant's own interpreter:
//! the baseline for the bench's exec/s comparison.
//!
//! Three steps, cached under `<cache>/atheris/<variant key>-<atheris version>/`:
//! 1. a venv of the variant's build-tree interpreter (pip comes from ensurepip);
//! 2. `pip install --no-binary atheris atheris==3.0.0`: compiled with the variant's clang
//!    (`CLANG_BIN`) against its debug headers, so its native module has the variant's ABI;
//! 3. `bin/python-fuzzer`, the interpreter relinked with libFuzzer (`fuzzer_no_main`). The
//!    variant's `python` carries the sanitizer runtime's empty coverage hooks and exports them,
//!    so atheris' own libFuzzer would get every counter registration and comparison bound to
//!    those (seen: `ft: 1`, no coverage at all). Linked into the interpreter, libFuzzer is the
//!    one atheris finds (`LLVMFuzzerRunDriver`), and it sees CPython's C coverage as well as
//!    the harness's Python coverage, just as capisan's fuzz target does.

use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::source::tail_lines;
use capisan_build::{Cache, Manifest, Variant};

use super::{final_stats, io, BenchError, Result, Stats};

/// The atheris release the baseline uses.
pub const VERSION: &str = "3.0.0";

/// A ready atheris install.
#[derive(Debug, Clone)]
pub struct Atheris {
    /// The relinked interpreter, inside the venv (so the venv's site-packages are its own).
    pub python: PathBuf,
    /// Environment to run it with.
    pub env: Vec<(String, String)>,
    dir: PathBuf,
}

fn run_env(manifest: &Manifest, dir: &Path) -> Vec<(String, String)> {
    // Not PYTHONHOME/PYTHONPATH: the venv finds its prefix and the build tree's stdlib itself.
    let mut env: Vec<(String, String)> = manifest
        .env()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "PYTHONHOME" | "PYTHONPATH" | "UBSAN_OPTIONS" | "ASAN_OPTIONS"
            )
        })
        .collect();
    env.push((
        "ASAN_OPTIONS".into(),
        "detect_leaks=0:halt_on_error=1:abort_on_error=1".into(),
    ));
    // atheris' FuzzedDataProvider reads unaligned ints (compiled here with the variant's
    // -fsanitize=undefined): a known, harmless report that would print on every run.
    env.push((
        "UBSAN_OPTIONS".into(),
        format!(
            "halt_on_error=1:suppressions={}",
            dir.join("ubsan.supp").display()
        ),
    ));
    env
}

fn with_env(mut cmd: duct::Expression, env: &[(String, String)]) -> duct::Expression {
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd
}

/// Run one setup step, its output in `log`; a failure shows the log's tail.
fn step(what: &str, cmd: duct::Expression, log: &Path) -> Result<()> {
    let out = cmd
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(|source| BenchError::Io {
            context: format!("{what}: could not start"),
            source,
        })?;
    io(log, fs::write(log, &out.stdout))?;
    if !out.status.success() {
        return Err(BenchError::Step {
            what: what.to_string(),
            log: log.to_path_buf(),
            tail: tail_lines(&String::from_utf8_lossy(&out.stdout), 30),
        });
    }
    Ok(())
}

/// Find or make the atheris install for `manifest`'s variant (ASan only: the relink needs the
/// sanitizer's link flags). `on_step` hears each slow step before it starts.
pub fn setup(manifest: &Manifest, cache: &Cache, on_step: &mut dyn FnMut(&str)) -> Result<Atheris> {
    if manifest.variant != Variant::Asan {
        return Err(BenchError::Unsupported(
            "the atheris baseline is built for the asan variant only".into(),
        ));
    }
    let dir = cache
        .root()
        .join("atheris")
        .join(format!("{}-{}", manifest.key, VERSION));
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python-fuzzer");
    let stamp = dir.join("ready");
    let env = run_env(manifest, &dir);
    if stamp.exists() && python.exists() {
        return Ok(Atheris { python, env, dir });
    }
    io(&dir, fs::create_dir_all(&dir))?;
    let supp = dir.join("ubsan.supp");
    io(
        &supp,
        fs::write(&supp, "alignment:fuzzed_data_provider.cc\n"),
    )?;
    let _ = fs::remove_dir_all(&venv);
    let what = "atheris: venv of the asan interpreter (ensurepip under ASan, ~30 s)";
    on_step(what);
    step(
        what,
        with_env(duct::cmd!(&manifest.python, "-m", "venv", &venv), &env),
        &dir.join("venv.log"),
    )?;
    let clang = which(&manifest.compiler.cc)?;
    let what = format!(
        "atheris: pip install atheris=={VERSION} from source with {} (~3 min)",
        manifest.compiler.cc
    );
    on_step(&what);
    step(
        &what,
        with_env(
            duct::cmd!(
                venv.join("bin").join("python"),
                "-m",
                "pip",
                "install",
                "--no-binary",
                "atheris",
                format!("atheris=={VERSION}")
            ),
            &env,
        )
        .env("CLANG_BIN", &clang)
        .env("CC", &manifest.compiler.cc)
        .env("CXX", manifest.compiler.cc.replace("clang", "clang++")),
        &dir.join("pip.log"),
    )?;
    // The interpreter again, from its own objects, with libFuzzer inside.
    let runtime_dir = duct::cmd!(&manifest.compiler.cc, "--print-runtime-dir")
        .read()
        .map_err(|source| BenchError::Io {
            context: format!("asking {} for its runtime directory", manifest.compiler.cc),
            source,
        })?;
    let fuzzer = Path::new(runtime_dir.trim()).join("libclang_rt.fuzzer_no_main-x86_64.a");
    if !fuzzer.exists() {
        return Err(BenchError::Unsupported(format!(
            "{} is missing: install libclang-rt-{}-dev (cargo xtask setup does)",
            fuzzer.display(),
            manifest.compiler.clang_major.unwrap_or(22)
        )));
    }
    let mut args: Vec<String> = vec![
        "-fsanitize=undefined".into(),
        "-fsanitize=address".into(),
        "-Xlinker".into(),
        "-export-dynamic".into(),
        "-o".into(),
        python.display().to_string(),
        manifest
            .build_dir
            .join("Programs/python.o")
            .display()
            .to_string(),
        "-Wl,--whole-archive".into(),
        manifest.libpython_static.display().to_string(),
        fuzzer.display().to_string(),
        "-Wl,--no-whole-archive".into(),
    ];
    args.extend(manifest.link_libs.iter().cloned());
    let what = "atheris: relinking the interpreter with libFuzzer";
    on_step(what);
    step(
        what,
        duct::cmd(manifest.compiler.cc.replace("clang", "clang++"), &args),
        &dir.join("link.log"),
    )?;
    io(&stamp, fs::write(&stamp, VERSION))?;
    Ok(Atheris { python, env, dir })
}

/// `program` found on PATH.
fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.exists())
        .ok_or_else(|| BenchError::Unsupported(format!("{program} is not on PATH")))
}

/// What one atheris run left: its log, the edges at each checkpoint, how long it ran, and
/// whether it ended at a crash (a sanitizer report, a fatal error or a deadly signal; libFuzzer
/// then writes a `crash-` artifact).
#[derive(Debug, Clone)]
pub struct Run {
    pub log: String,
    pub covs: Vec<u64>,
    pub seconds: f64,
    pub crashed: bool,
}

impl Atheris {
    /// One atheris campaign of the Python twin of `capi_sequences` (`harness`, a `.py` file;
    /// empty corpus, the same libFuzzer flags as capisan's campaigns); libFuzzer's final stats.
    pub fn campaign(&self, harness: &Path, time: u64, seed: u64) -> Result<Stats> {
        Ok(self.campaign_at(harness, time, seed, &[])?.0)
    }

    /// [`Atheris::campaign`], also reading the edges its log shows at each of `checkpoints`
    /// (seconds of wall time since the interpreter was started, start-up included, as for
    /// capisan's campaigns in [`super::cov_at_checkpoints`]).
    pub fn campaign_at(
        &self,
        harness: &Path,
        time: u64,
        seed: u64,
        checkpoints: &[u64],
    ) -> Result<(Stats, Vec<u64>)> {
        let run = self.run(harness, time, seed, checkpoints, &[])?;
        let stats = final_stats(&run.log).ok_or_else(|| BenchError::NoStats {
            log: self.dir.join("last-campaign.log"),
            tail: tail_lines(&run.log, 30),
        })?;
        Ok((stats, run.covs))
    }

    /// Run the harness for at most `time` seconds with `extra` environment (an extension under
    /// test: `CAPISAN_EXT`, `CAPISAN_EXT_PATH`, `CAPISAN_EXT_FUNCS`, `PYTHONMALLOC`).
    pub fn run(
        &self,
        harness: &Path,
        time: u64,
        seed: u64,
        checkpoints: &[u64],
        extra: &[(String, String)],
    ) -> Result<Run> {
        let corpus = self.dir.join("corpus");
        let _ = fs::remove_dir_all(&corpus);
        io(&corpus, fs::create_dir_all(&corpus))?;
        let artifacts = self.dir.join("artifacts");
        let _ = fs::remove_dir_all(&artifacts);
        io(&artifacts, fs::create_dir_all(&artifacts))?;
        let log = self.dir.join("last-campaign.log");
        let cmd = duct::cmd!(
            &self.python,
            harness,
            &corpus,
            format!("-max_total_time={time}"),
            format!("-seed={seed}"),
            "-print_final_stats=1",
            format!("-artifact_prefix={}/", artifacts.display())
        );
        // `extra` replaces the variant's settings of the same names (duct applies the innermost
        // `env` last, so a later one would not win).
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .chain(extra)
            .cloned()
            .collect();
        let cmd = with_env(cmd, &env);
        let started = std::time::Instant::now();
        let handle = cmd
            .dir(&self.dir)
            .stderr_to_stdout()
            .stdout_path(&log)
            .unchecked()
            .start()
            .map_err(|source| BenchError::Io {
                context: format!("running {}", self.python.display()),
                source,
            })?;
        let read = || fs::read_to_string(&log).unwrap_or_default();
        let covs = super::sample_cov(
            started,
            checkpoints,
            || handle.try_wait().ok().flatten().is_some(),
            read,
        );
        handle.wait().map_err(|source| BenchError::Io {
            context: format!("running {}", self.python.display()),
            source,
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let crashed = fs::read_dir(&artifacts)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("crash-"))
            })
            .unwrap_or(false);
        Ok(Run {
            log: read(),
            covs,
            seconds,
            crashed,
        })
    }
}
