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

impl Atheris {
    /// One atheris campaign of the Python twin of `capi_sequences` (`harness`, a `.py` file;
    /// empty corpus, the same libFuzzer flags as capisan's campaigns); libFuzzer's final stats.
    pub fn campaign(&self, harness: &Path, time: u64, seed: u64) -> Result<Stats> {
        let corpus = self.dir.join("corpus");
        let _ = fs::remove_dir_all(&corpus);
        io(&corpus, fs::create_dir_all(&corpus))?;
        let cmd = duct::cmd!(
            &self.python,
            harness,
            &corpus,
            format!("-max_total_time={time}"),
            format!("-seed={seed}"),
            "-print_final_stats=1",
            format!("-artifact_prefix={}/", self.dir.display())
        );
        let out = with_env(cmd, &self.env)
            .dir(&self.dir)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .map_err(|source| BenchError::Io {
                context: format!("running {}", self.python.display()),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let log = self.dir.join("last-campaign.log");
        io(&log, fs::write(&log, text.as_bytes()))?;
        final_stats(&text).ok_or_else(|| BenchError::NoStats {
            log,
            tail: tail_lines(&text, 30),
        })
    }
}
