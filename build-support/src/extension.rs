//! Compile a C extension (one `.c` file, or a directory of them) against a variant with the
//! variant's extension flags ([`extension_cflags`]), the way `cargo xtask ext-build` does; for
//! whole packages with a build backend see [`crate::package`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::manifest::Manifest;
use crate::package::extension_cflags;
use crate::source::tail_lines;

/// Written beside the built module: the absolute path of its source, so `confirm` can rebuild
/// it for other variants.
pub const SOURCE_FILE: &str = "capisan-ext-source.txt";

/// A compiled extension module.
#[derive(Debug, Clone)]
pub struct BuiltExtension {
    /// Importable name: the file stem, or the directory name for a directory of sources.
    pub module: String,
    /// The directory to put on `sys.path` (`CAPISAN_EXT_PATH`).
    pub dir: PathBuf,
    /// The shared object, `<dir>/<module><EXT_SUFFIX>`.
    pub so: PathBuf,
}

impl BuiltExtension {
    /// What `cargo xtask ext-build` prints: the shared object, and how to fuzz it on the build
    /// of `manifest` (its `--version` named off the default line).
    pub fn text(&self, manifest: &Manifest) -> String {
        let version = if manifest.line() == crate::versions::default_line() {
            String::new()
        } else {
            format!("--version {} ", manifest.line())
        };
        format!(
            "built {}\nfuzz it with: cargo xtask {version}fuzz-ext {} --ext-path {} --variant {}\n",
            self.so.display(),
            self.module,
            self.dir.display(),
            manifest.variant
        )
    }
}

/// The default output directory of a build against `manifest`:
/// `<cache>/ext/<variant>[-<X.Y> off the default line]/<module>`, so builds for two CPython
/// lines (different ABIs) never overwrite each other.
pub fn default_dir(cache: &Cache, manifest: &Manifest, module: &str) -> PathBuf {
    let variant = manifest.variant.name();
    let dir = if manifest.line() == crate::versions::default_line() {
        variant.to_string()
    } else {
        format!("{variant}-{}", manifest.line())
    };
    cache.root().join("ext").join(dir).join(module)
}

/// The module name and C sources of `path`: a file is its own module, a directory's `.c`
/// files make the module named after the directory.
pub fn module_sources(path: &Path) -> Result<(String, Vec<PathBuf>)> {
    let path = fs::canonicalize(path).map_err(BuildError::io(format!(
        "{} does not exist; pass a C file or a directory of C files",
        path.display()
    )))?;
    let name = |p: Option<&std::ffi::OsStr>| p.unwrap_or_default().to_string_lossy().into_owned();
    if !path.is_dir() {
        return Ok((name(path.file_stem()), vec![path]));
    }
    let mut sources: Vec<PathBuf> = fs::read_dir(&path)
        .map_err(BuildError::io(format!("reading {}", path.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err(BuildError::NoExtensionSources(path));
    }
    Ok((name(path.file_name()), sources))
}

/// Compile the extension at `path` (see [`module_sources`]) against `manifest`'s variant into
/// `out` (created; default [`default_dir`]). The compiler's output goes to `<out>/build.log`,
/// whose tail a failure shows.
pub fn build_extension(
    cache: &Cache,
    manifest: &Manifest,
    path: &Path,
    out: Option<&Path>,
) -> Result<BuiltExtension> {
    let (module, sources) = module_sources(path)?;
    let dir = out.map_or_else(|| default_dir(cache, manifest, &module), Path::to_path_buf);
    fs::create_dir_all(&dir).map_err(BuildError::io(format!("creating {}", dir.display())))?;
    let so = dir.join(format!("{module}{}", ext_suffix(manifest)?));
    let mut argv: Vec<String> = vec!["-shared".into(), "-fPIC".into()];
    argv.extend(
        extension_cflags(manifest.variant)
            .into_iter()
            .map(String::from),
    );
    argv.extend(
        manifest
            .include_dirs
            .iter()
            .map(|d| format!("-I{}", d.display())),
    );
    argv.extend(sources.iter().map(|s| s.display().to_string()));
    argv.push("-o".into());
    argv.push(so.display().to_string());
    let cc = &manifest.compiler.cc;
    let res = duct::cmd(cc, &argv)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(BuildError::io(format!("running {cc}")))?;
    let log = dir.join("build.log");
    fs::write(&log, &res.stdout).map_err(BuildError::io(format!("writing {}", log.display())))?;
    if !res.status.success() {
        return Err(BuildError::CommandFailed {
            command: format!("{cc} {}", argv.join(" ")),
            status: res.status.to_string(),
            log,
            tail: tail_lines(&String::from_utf8_lossy(&res.stdout), 40),
        });
    }
    let source = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let record = dir.join(SOURCE_FILE);
    fs::write(&record, source.display().to_string())
        .map_err(BuildError::io(format!("writing {}", record.display())))?;
    Ok(BuiltExtension { module, dir, so })
}

/// The variant's `EXT_SUFFIX` (e.g. `.cpython-313d-x86_64-linux-gnu.so`), asked of its python.
pub fn ext_suffix(manifest: &Manifest) -> Result<String> {
    let mut cmd = duct::cmd!(
        &manifest.python,
        "-c",
        "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"
    )
    .stderr_null()
    .stdout_capture();
    for (k, v) in manifest.env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd.read().map_err(BuildError::io(format!(
        "asking {} for EXT_SUFFIX",
        manifest.python.display()
    )))?;
    Ok(out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_extension_says_how_to_fuzz_it() {
        let b = BuiltExtension {
            module: "zoo".into(),
            dir: "/e/zoo".into(),
            so: "/e/zoo/zoo.so".into(),
        };
        let mut m = crate::manifest::fixture();
        assert_eq!(
            b.text(&m),
            "built /e/zoo/zoo.so\nfuzz it with: cargo xtask fuzz-ext zoo --ext-path /e/zoo --variant asan\n"
        );
        assert_eq!(
            default_dir(&Cache::at("/c"), &m, "zoo"),
            Path::new("/c/ext/asan/zoo")
        );
        m.version = "3.11.2".into();
        assert!(b
            .text(&m)
            .contains("cargo xtask --version 3.11 fuzz-ext zoo"));
        assert_eq!(
            default_dir(&Cache::at("/c"), &m, "zoo"),
            Path::new("/c/ext/asan-3.11/zoo")
        );
    }

    #[test]
    fn a_directory_is_one_module_of_its_c_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("zoo");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("b.c"), "").unwrap();
        fs::write(dir.join("a.c"), "").unwrap();
        fs::write(dir.join("a.h"), "").unwrap();
        let (module, sources) = module_sources(&dir).unwrap();
        assert_eq!(module, "zoo");
        let names: Vec<_> = sources.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.c", "b.c"]);
        let (module, sources) = module_sources(&dir.join("a.c")).unwrap();
        assert_eq!((module.as_str(), sources.len()), ("a", 1));
    }

    #[test]
    fn an_empty_directory_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            module_sources(tmp.path()),
            Err(BuildError::NoExtensionSources(_))
        ));
    }
}
