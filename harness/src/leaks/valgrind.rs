//! valgrind memcheck on the valgrind variant: one run of a target, read with capisan's one
//! memcheck XML reader ([`crate::detect::parse_valgrind_xml`] /
//! [`crate::detect::parse_memcheck_errors`]).

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use capisan_build::Manifest;

use super::{io, python_env, run_captured, tail, LeakError, Result, Target, ToolReport};
use crate::detect;

/// One memcheck configuration: the variant, the extension directories and the suppressions.
#[derive(Clone, Debug)]
pub struct Memcheck<'a> {
    pub manifest: &'a Manifest,
    pub ext: &'a [PathBuf],
    /// Suppression files, in order; starts with CPython's `Misc/valgrind-python.supp`.
    pub supps: Vec<PathBuf>,
    /// `--gen-suppressions=all` (the suppression engine needs each error's suppression).
    pub gen_suppressions: bool,
    /// `--track-origins=yes` (slower, says where uninitialised values come from).
    pub track_origins: bool,
}

/// One memcheck run: its XML and the interpreter's own output.
#[derive(Clone, Debug)]
pub struct MemcheckRun {
    pub xml: String,
    pub log: String,
}

impl Memcheck<'_> {
    /// Memcheck on `manifest`'s interpreter with CPython's own suppressions only.
    pub fn new<'a>(manifest: &'a Manifest, ext: &'a [PathBuf]) -> Memcheck<'a> {
        Memcheck {
            manifest,
            ext,
            supps: manifest.valgrind_suppressions.iter().cloned().collect(),
            gen_suppressions: false,
            track_origins: false,
        }
    }

    /// Run `target` once under memcheck (definite and indirect leaks are errors).
    pub fn run(&self, target: &Target) -> Result<MemcheckRun> {
        let dir = tempfile::Builder::new()
            .prefix("capisan-memcheck-")
            .tempdir()
            .map_err(io(
                "creating a temporary directory in",
                &std::env::temp_dir(),
            ))?;
        let xml_path = dir.path().join("memcheck.xml");
        let mut argv = vec![
            "--tool=memcheck".to_string(),
            "--xml=yes".into(),
            format!("--xml-file={}", xml_path.display()),
            "--leak-check=full".into(),
            "--show-leak-kinds=definite,indirect".into(),
            "--errors-for-leak-kinds=definite,indirect".into(),
        ];
        if self.gen_suppressions {
            argv.push("--gen-suppressions=all".into());
        }
        if self.track_origins {
            argv.push("--track-origins=yes".into());
        }
        for s in &self.supps {
            argv.push(format!("--suppressions={}", s.display()));
        }
        argv.push(self.manifest.python.display().to_string());
        argv.extend(target.python_argv());
        let env = python_env(self.manifest, self.ext);
        let out = run_captured(
            OsStr::new("valgrind"),
            &argv,
            &env,
            "install valgrind with `cargo xtask setup`",
        )?;
        let xml = fs::read_to_string(&xml_path).map_err(|_| LeakError::NoXml {
            code: out.code,
            tail: tail(&out.text, 30),
        })?;
        Ok(MemcheckRun { xml, log: out.text })
    }

    /// Run `target` once and return every memcheck error, unclassified.
    pub fn errors(&self, target: &Target) -> Result<Vec<detect::MemcheckError>> {
        Ok(detect::parse_memcheck_errors(&self.run(target)?.xml)?)
    }
}

/// What [`valgrind()`] adds to CPython's suppressions.
#[derive(Clone, Debug, Default)]
pub struct ValgrindOptions {
    /// More suppression files (e.g. [`super::valgrind_suppressions`]); only read.
    pub supps: Vec<PathBuf>,
    /// `--track-origins=yes`.
    pub track_origins: bool,
}

/// Run `target` once under memcheck on the valgrind variant `manifest`, with CPython's
/// suppressions and `opts.supps`, and report the findings (memcheck's, plus a pydebug fatal
/// error printed on stderr).
pub fn valgrind(
    manifest: &Manifest,
    target: &Target,
    ext: &[PathBuf],
    opts: &ValgrindOptions,
) -> Result<ToolReport> {
    let started = Instant::now();
    let mut mc = Memcheck::new(manifest, ext);
    mc.supps.extend(opts.supps.iter().cloned());
    mc.track_origins = opts.track_origins;
    let run = mc.run(target)?;
    let mut findings = detect::parse_valgrind_xml(&run.xml)?;
    // A pydebug fatal error (e.g. a negative refcount) is printed on stderr, not in the XML.
    findings.extend(detect::parse(&run.log));
    Ok(ToolReport {
        target: target.label(),
        variant: manifest.variant.to_string(),
        version: manifest.version.clone(),
        suppressions: mc.supps,
        findings,
        seconds: started.elapsed().as_secs_f64(),
    })
}
