//! atheris 3.x, the Python fuzzing engine, built from PyPI against a variant's own interpreter:
//! the baseline for `cargo xtask bench`'s exec/s comparison.
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
use std::time::Duration;

use anyhow::{bail, Context, Result};
use capisan_build::{Cache, Manifest, Variant};
use indicatif::ProgressBar;

/// The atheris release the baseline uses.
pub const VERSION: &str = "3.0.0";

/// A ready atheris install.
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
        .filter(|(k, _)| k != "PYTHONHOME" && k != "PYTHONPATH" && k != "UBSAN_OPTIONS")
        .collect();
    env.retain(|(k, _)| k != "ASAN_OPTIONS");
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

fn step(spinner: &ProgressBar, what: &str, cmd: duct::Expression, log: &Path) -> Result<()> {
    spinner.set_message(what.to_string());
    let out = cmd
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("{what}: could not start"))?;
    fs::write(log, &out.stdout)?;
    if !out.status.success() {
        bail!(
            "{what} failed (full log: {}):\n{}",
            log.display(),
            capisan_build::source::tail_lines(&String::from_utf8_lossy(&out.stdout), 30)
        );
    }
    Ok(())
}

/// Find or make the atheris install for `manifest`'s variant (ASan only: the relink needs the
/// sanitizer's link flags).
pub fn setup(manifest: &Manifest, cache: &Cache) -> Result<Atheris> {
    if manifest.variant != Variant::Asan {
        bail!("the atheris baseline is built for the asan variant only");
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
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("ubsan.supp"),
        "alignment:fuzzed_data_provider.cc\n",
    )?;
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(150));
    let _ = fs::remove_dir_all(&venv);
    let with = |cmd: duct::Expression| crate::with_env(cmd, &env);
    step(
        &spinner,
        "atheris: venv of the asan interpreter (ensurepip under ASan, ~30 s)",
        with(duct::cmd!(&manifest.python, "-m", "venv", &venv)),
        &dir.join("venv.log"),
    )?;
    let clang = which_clang(&manifest.compiler.cc)?;
    step(
        &spinner,
        &format!(
            "atheris: pip install atheris=={VERSION} from source with {} (~3 min)",
            manifest.compiler.cc
        ),
        with(duct::cmd!(
            venv.join("bin").join("python"),
            "-m",
            "pip",
            "install",
            "--no-binary",
            "atheris",
            format!("atheris=={VERSION}")
        ))
        .env("CLANG_BIN", &clang)
        .env("CC", &manifest.compiler.cc)
        .env("CXX", manifest.compiler.cc.replace("clang", "clang++")),
        &dir.join("pip.log"),
    )?;
    // The interpreter again, from its own objects, with libFuzzer inside.
    let runtime_dir = duct::cmd!(&manifest.compiler.cc, "--print-runtime-dir")
        .read()
        .context("asking the compiler for its runtime directory")?;
    let fuzzer = Path::new(runtime_dir.trim()).join("libclang_rt.fuzzer_no_main-x86_64.a");
    if !fuzzer.exists() {
        bail!(
            "{} is missing: install libclang-rt-{}-dev (cargo xtask setup does)",
            fuzzer.display(),
            manifest.compiler.clang_major.unwrap_or(22)
        );
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
    step(
        &spinner,
        "atheris: relinking the interpreter with libFuzzer",
        duct::cmd(manifest.compiler.cc.replace("clang", "clang++"), &args),
        &dir.join("link.log"),
    )?;
    fs::write(&stamp, VERSION)?;
    spinner.finish_and_clear();
    Ok(Atheris { python, env, dir })
}

fn which_clang(cc: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(cc))
        .find(|p| p.exists())
        .with_context(|| format!("{cc} is not on PATH"))
}

impl Atheris {
    /// One atheris campaign of the Python twin of `capi_sequences` (empty corpus, the same
    /// libFuzzer flags as capisan's campaigns); libFuzzer's final stats.
    pub fn campaign(&self, harness: &Path, time: u64, seed: u64) -> Result<crate::bench::Stats> {
        let corpus = self.dir.join("corpus");
        let _ = fs::remove_dir_all(&corpus);
        fs::create_dir_all(&corpus)?;
        let out = crate::with_env(
            duct::cmd!(
                &self.python,
                harness,
                &corpus,
                format!("-max_total_time={time}"),
                format!("-seed={seed}"),
                "-print_final_stats=1",
                format!("-artifact_prefix={}/", self.dir.display())
            ),
            &self.env,
        )
        .dir(&self.dir)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
        let log = String::from_utf8_lossy(&out.stdout);
        fs::write(self.dir.join("last-campaign.log"), log.as_bytes())?;
        crate::bench::final_stats(&log).with_context(|| {
            format!(
                "the atheris campaign printed no final stats:\n{}",
                capisan_build::source::tail_lines(&log, 30)
            )
        })
    }
}
