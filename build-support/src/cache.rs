//! Where sources and built variants live: outside the checkout, shared by all clones.

use std::path::{Path, PathBuf};

/// The cache root, `$CAPISAN_CACHE` or `~/.cache/capisan`.
///
/// Layout: `sources/<package>_<version>/` (downloads + unpacked tree), `apt/` (private apt
/// state for deb-src look-ups), `variants/<variant>-<version>-<key>/` (one build each).
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
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
        Cache { root }
    }

    /// A cache rooted exactly at `root` (tests use temporary roots).
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
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
