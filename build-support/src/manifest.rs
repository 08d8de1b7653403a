//! The record of one built variant. Everything downstream reads this; nothing guesses paths.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::source::{write_atomic, Origin};
use crate::toolchain::Compiler;
use crate::variant::Variant;
use crate::versions;

/// Bumped when a field changes meaning; older manifests are then rebuilt.
pub const SCHEMA: u32 = 1;

/// File name of the manifest inside a variant's cache directory. Written last, atomically:
/// its presence is what marks a build good.
pub const FILE_NAME: &str = "manifest.json";

/// Directory inside a variant's cache directory that the variant is installed into.
pub const INSTALL_DIR: &str = "install";

/// A built CPython variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    /// `PY_VERSION`, e.g. `3.13.5`.
    pub version: String,
    pub variant: Variant,
    /// Cache key: source hash + variant flags + compiler.
    pub key: String,
    pub source_dir: PathBuf,
    pub source_hash: String,
    pub origin: Origin,
    /// The out-of-tree build directory.
    pub build_dir: PathBuf,
    /// The interpreter binary.
    pub python: PathBuf,
    /// `libpythonX.Y[d].a`.
    pub libpython_static: PathBuf,
    /// `libpythonX.Y[d].so`, when built with `--enable-shared`.
    pub libpython_shared: Option<PathBuf>,
    /// `-I` directories for `Python.h` (source Include, build dir for pyconfig.h).
    pub include_dirs: Vec<PathBuf>,
    /// Pure-Python standard library (`Lib/` of the source).
    pub stdlib: PathBuf,
    /// Compiled extension modules of the build (`build/lib.<plat>-<ver>`).
    pub platstdlib: PathBuf,
    pub configure_args: Vec<String>,
    pub cflags: Vec<String>,
    /// Libraries a program linking the static libpython also needs (`LIBS`, `SYSLIBS`, `MODLIBS`).
    pub link_libs: Vec<String>,
    pub compiler: Compiler,
    /// `llvm-symbolizer` matching the compiler, for sanitizer stacks.
    pub symbolizer: Option<PathBuf>,
    /// Environment the interpreter needs at run time (PYTHONHOME, PYTHONMALLOC, ASAN_OPTIONS, …).
    pub runtime_env: BTreeMap<String, String>,
    /// CPython's `Misc/valgrind-python.supp`, for the valgrind variant.
    pub valgrind_suppressions: Option<PathBuf>,
    /// Seconds since the epoch when the build finished.
    pub built_at: u64,
    /// Wall time of configure + make, seconds.
    pub build_seconds: f64,
    /// The installed interpreter (`make altinstall` into [`Manifest::install_prefix`]): a normal
    /// python that needs no PYTHONHOME/PYTHONPATH, so `python -m venv` and `pip install` with
    /// build isolation work. `None` in manifests written before variants were installed; the
    /// next `build-*` installs them without rebuilding.
    #[serde(default)]
    pub installed_python: Option<PathBuf>,
    /// Wall time of the install step, seconds.
    #[serde(default)]
    pub install_seconds: Option<f64>,
}

impl Manifest {
    /// Read a manifest.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = fs::read_to_string(path)
            .map_err(BuildError::io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text).map_err(|source| BuildError::Manifest {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Write a manifest atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(
            path,
            serde_json::to_string_pretty(self)
                .expect("manifest serializes")
                .as_bytes(),
        )
    }

    /// The variant's cache directory (parent of `build_dir`).
    pub fn dir(&self) -> &Path {
        self.build_dir.parent().unwrap_or(&self.build_dir)
    }

    /// Where the variant is installed: `<variant dir>/install`.
    pub fn install_prefix(&self) -> PathBuf {
        self.dir().join(INSTALL_DIR)
    }

    /// The installed interpreter, if the install step has run and its binary is still there.
    pub fn installed(&self) -> Option<&Path> {
        self.installed_python.as_deref().filter(|p| p.exists())
    }

    /// Environment for running the installed interpreter (and what it spawns: pip, build
    /// backends): no PYTHONHOME/PYTHONPATH, only what the sanitizers need to let an ordinary
    /// program run (for asan, `ASAN_OPTIONS=detect_leaks=0`). The ASan runtime is linked into
    /// the interpreter statically, so no LD_PRELOAD.
    pub fn installed_env(&self) -> Vec<(String, String)> {
        let mut env = self.variant.build_env();
        if let Some(sym) = &self.symbolizer {
            env.push(("ASAN_SYMBOLIZER_PATH".into(), sym.display().to_string()));
        }
        env
    }

    /// The run-time environment with the symbolizer added, as `(key, value)` pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        // The sanitizer options are today's definition, not the one recorded at build time
        // (they are not part of the build, so a cached variant gets the current ones).
        let current = self.variant.runtime_env(&self.source_dir, &self.platstdlib);
        let mut env: Vec<(String, String)> = self
            .runtime_env
            .iter()
            .map(|(k, v)| match current.get(k) {
                Some(now) if k.ends_with("SAN_OPTIONS") => (k.clone(), now.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        if let Some(sym) = &self.symbolizer {
            env.push(("ASAN_SYMBOLIZER_PATH".into(), sym.display().to_string()));
        }
        env
    }

    /// Every good (manifest-bearing, current-schema) variant in the cache, newest first.
    pub fn all(cache: &Cache) -> Vec<Manifest> {
        let Ok(rd) = fs::read_dir(cache.variants_dir()) else {
            return Vec::new();
        };
        let mut all: Vec<Manifest> = rd
            .flatten()
            .filter_map(|e| Manifest::load(&e.path().join(FILE_NAME)).ok())
            .filter(|m| m.schema == SCHEMA && m.python.exists())
            .collect();
        all.sort_by_key(|m| std::cmp::Reverse(m.built_at));
        all
    }

    /// The newest good build of `variant` of `version` (`X.Y` or `X.Y.Z`); without one, of the
    /// cache's chosen version ([`Cache::version`]: `--version`, else the default line), so a
    /// build of another line never becomes every command's variant by being the newest.
    pub fn find(cache: &Cache, variant: Variant, version: Option<&str>) -> Result<Manifest> {
        let version = version.unwrap_or_else(|| cache.version());
        Manifest::all(cache)
            .into_iter()
            .find(|m| m.variant == variant && versions::is_of_line(&m.version, version))
            .ok_or_else(|| BuildError::NotBuilt {
                variant: variant.to_string(),
                version: version.to_string(),
                cache: cache.root().to_path_buf(),
            })
    }

    /// `X.Y` of this build's version (`3.13` for 3.13.5).
    pub fn line(&self) -> &str {
        versions::line_of(&self.version)
    }
}

/// The built variants as `cargo xtask variants` prints them: one row each (variant, version,
/// key, build seconds, python), or how to build one when there are none in `cache_root`.
pub fn table(all: &[Manifest], cache_root: &Path) -> String {
    if all.is_empty() {
        return format!(
            "no variants built in {}; run `cargo xtask build-asan` (or build-all)\n",
            cache_root.display()
        );
    }
    let mut out = format!(
        "{:<10} {:<9} {:<17} {:>8}  python\n",
        "variant", "version", "key", "build s"
    );
    for m in all {
        out += &format!(
            "{:<10} {:<9} {:<17} {:>8.0}  {}\n",
            m.variant,
            m.version,
            m.key,
            m.build_seconds,
            m.python.display()
        );
    }
    out
}

/// A manifest of an asan build under `/c/v`, as written before variants were installed.
#[cfg(test)]
pub(crate) fn fixture() -> Manifest {
    serde_json::from_str(FIXTURE).expect("the fixture parses")
}

#[cfg(test)]
const FIXTURE: &str = r#"{"schema":1,"version":"3.13.5","variant":"asan","key":"k",
    "source_dir":"/s","source_hash":"h","origin":{"kind":"path","path":"/s"},
    "build_dir":"/c/v/build","python":"/c/v/build/python",
    "libpython_static":"/c/v/build/libpython3.13d.a","libpython_shared":null,
    "include_dirs":[],"stdlib":"/s/Lib","platstdlib":"/c/v/build/build/lib",
    "configure_args":[],"cflags":[],"link_libs":[],
    "compiler":{"cc":"clang-22","version":"clang version 22","clang_major":22},
    "symbolizer":null,"runtime_env":{},"valgrind_suppressions":null,
    "built_at":0,"build_seconds":1.0}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_variant_or_says_how_to_build_one() {
        let t = table(&[fixture()], Path::new("/c"));
        // (Variant's Display ignores width, so the first column is not padded.)
        let row: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["asan", "3.13.5", "k", "1", "/c/v/build/python"]);
        assert!(table(&[], Path::new("/c")).starts_with("no variants built in /c;"));
    }

    /// Two builds of asan in a temporary cache, the 3.14 one newer: lookups without a version
    /// take the default line's, `--version` (the cache's or the call's) picks the other.
    #[test]
    fn find_defaults_to_the_default_line_not_the_newest_build() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        for (version, built_at) in [("3.13.5", 1), ("3.14.9", 2)] {
            let dir = cache.variants_dir().join(format!("asan-{version}-k"));
            fs::create_dir_all(dir.join("build")).unwrap();
            fs::write(dir.join("build/python"), "").unwrap();
            let mut m = fixture();
            (m.version, m.built_at) = (version.into(), built_at);
            (m.build_dir, m.python) = (dir.join("build"), dir.join("build/python"));
            m.save(&dir.join(FILE_NAME)).unwrap();
        }
        let found = |c: &Cache, v| Manifest::find(c, Variant::Asan, v).map(|m| m.version);
        assert_eq!(found(&cache, None).unwrap(), "3.13.5");
        assert_eq!(found(&cache, Some("3.14")).unwrap(), "3.14.9");
        let chosen = cache.clone().with_version(Some("3.14"));
        assert_eq!(found(&chosen, None).unwrap(), "3.14.9");
        assert_eq!(found(&chosen, Some("3.13.5")).unwrap(), "3.13.5");
        let e = found(&cache.with_version(Some("3.11")), None).unwrap_err();
        assert!(e.to_string().contains("build-asan --version 3.11"), "{e}");
    }

    /// A manifest written before variants were installed still loads; the next build installs.
    #[test]
    fn manifest_without_install_fields_loads() {
        let json = FIXTURE;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, json).unwrap();
        let m = Manifest::load(&path).unwrap();
        assert_eq!(m.installed_python, None);
        assert_eq!(m.installed(), None);
        assert_eq!(m.install_prefix(), Path::new("/c/v/install"));
        assert!(m
            .installed_env()
            .iter()
            .any(|(k, v)| k == "ASAN_OPTIONS" && v.contains("detect_leaks=0")));
        assert!(!m.installed_env().iter().any(|(k, _)| k == "PYTHONHOME"));
    }
}
