//! Where sources and built variants live: outside the checkout, shared by all clones.

use std::path::{Path, PathBuf};

/// The cache root, `$CAPISAN_CACHE` or `~/.cache/capisan`.
///
/// Layout: `sources/<package>_<version>/` (downloads + unpacked tree), `apt/` (private apt
/// state for deb-src look-ups), `variants/<variant>-<version>-<key>/` (one build each).
///
/// A cache also carries the CPython line its user chose (`--version`): every lookup through it
/// ([`crate::Manifest::find`]) then picks a build of that line, so a library call deep inside a
/// command honours the choice without each function taking a version. Without a choice, lookups
/// use [`crate::versions::default_line`], never whichever build is newest.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    version: Option<String>,
}

impl Cache {
    /// Use `explicit` if given, else `$CAPISAN_CACHE`, else `$XDG_CACHE_HOME/capisan` or `~/.cache/capisan`.
    pub fn resolve(explicit: Option<PathBuf>) -> Cache {
        let root = explicit
            .or_else(|| std::env::var_os("CAPISAN_CACHE").map(PathBuf::from))
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("capisan"))
            })
            .or_else(|| home::home_dir().map(|h| h.join(".cache").join("capisan")))
            .unwrap_or_else(|| std::env::temp_dir().join("capisan-cache"));
        Cache {
            root,
            version: None,
        }
    }

    /// A cache rooted exactly at `root` (tests use temporary roots).
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache {
            root: root.into(),
            version: None,
        }
    }

    /// The same cache, with lookups choosing builds of `version` (`X.Y` or `X.Y.Z`; `None`:
    /// the default line). The caller checks the version ([`crate::versions::check_supported`]).
    pub fn with_version(mut self, version: Option<&str>) -> Cache {
        self.version = version.map(str::to_string);
        self
    }

    /// The version lookups in this cache choose: the one given to [`Cache::with_version`], else
    /// [`crate::versions::default_line`].
    pub fn version(&self) -> &str {
        self.version
            .as_deref()
            .unwrap_or(crate::versions::default_line())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Downloaded and unpacked sources.
    pub fn sources_dir(&self) -> PathBuf {
        self.root.join("sources")
    }

    /// Private apt state used for deb-src look-ups (never touches the system's lists).
    pub fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }

    /// All built variants.
    pub fn variants_dir(&self) -> PathBuf {
        self.root.join("variants")
    }
}
