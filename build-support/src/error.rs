//! Errors a caller can match on. Each message names the path or command and what to do next.

use std::path::PathBuf;

/// Everything that can go wrong while finding source or building a variant.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The requested version is not offered by any Debian suite we look in.
    #[error("unknown CPython version {requested}: Debian's source packages offer {available}; pass one of those to --version, or a checkout with --src PATH")]
    UnknownVersion {
        requested: String,
        available: String,
    },
    /// A version the harness does not bind (see [`crate::versions::SUPPORTED_LINES`]).
    #[error("CPython {requested} is not supported: capisan binds {supported}; pass one of those to --version")]
    UnsupportedVersion {
        requested: String,
        supported: String,
    },
    /// Debian's indexes list the version, but the mirror serves none of its files.
    #[error("Debian's source indexes list {package} {versions}, but the mirror serves none of their files (HTTP 404); pass another --version, or a CPython tree of that version with --src PATH")]
    NotServed { package: String, versions: String },
    /// A version string that is not `X.Y` or `X.Y.Z`.
    #[error("'{0}' is not a CPython version: expected X.Y or X.Y.Z, e.g. 3.13.5")]
    BadVersion(String),
    /// `--src` points at something that is not a CPython source tree.
    #[error("{path} is not a CPython source tree (no {missing}); pass the top of a CPython checkout or unpacked tarball to --src")]
    NotCpythonSource {
        path: PathBuf,
        missing: &'static str,
    },
    /// The source tree was configured in place, which forbids out-of-tree builds.
    #[error("{path} was configured in-tree (it has {marker}); run `make distclean` there, then build again")]
    SourceConfiguredInTree { path: PathBuf, marker: &'static str },
    /// The C compiler is missing or unusable.
    #[error("compiler {cc} not usable ({why}); run `cargo xtask setup` or `apt-get install {package}`, or name another with --cc")]
    MissingCompiler {
        cc: String,
        package: String,
        why: String,
    },
    /// No apt-get: source packages cannot be fetched.
    #[error("no apt-get on this machine, so Debian's source package cannot be fetched: pass --src PATH (or set CPYTHON_SRC) to a CPython source tree")]
    NoApt,
    /// No apt source entry to derive a deb-src line from.
    #[error(
        "no Debian mirror found in {0}: add a `deb` entry for your mirror, or pass --src PATH"
    )]
    NoMirror(String),
    /// Too little free disk for a build.
    #[error("not enough disk space under {path}: {available_mib} MiB free, a {variant} build needs about {needed_mib} MiB; free some space or set CAPISAN_CACHE to a larger disk")]
    DiskFull {
        path: PathBuf,
        available_mib: u64,
        needed_mib: u64,
        variant: String,
    },
    /// A download did not match the checksum in its .dsc.
    #[error("checksum mismatch for {path}: the .dsc says {expected}, the file has {actual}; delete it and fetch again")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A child process failed; the tail of its log is included.
    #[error(
        "`{command}` failed ({status}); full log: {log}\n--- last lines of the log ---\n{tail}"
    )]
    CommandFailed {
        command: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// An I/O error with what we were doing at the time.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A manifest that does not parse.
    #[error("manifest {path} is unreadable ({source}); rebuild the variant with `cargo xtask build-<variant>`")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A variant name we do not know.
    #[error("unknown variant '{0}': expected one of pydebug, asan, valgrind, release")]
    UnknownVariant(String),
    /// A variant that downstream code needs but that has not been built.
    #[error("variant {variant} of CPython {version} is not built in {cache}; run `cargo xtask build-{variant} --version {version}`")]
    NotBuilt {
        variant: String,
        version: String,
        cache: PathBuf,
    },
    /// Another process holds the build lock of this variant.
    #[error("another capisan build of {0} is running (lock held); wait for it or kill it")]
    Locked(PathBuf),
    /// A fuzz target name with no source file in the fuzz crate.
    #[error("no fuzz target {target}: expected {dir}/{target}.rs; name one of the files there")]
    NoFuzzTarget { target: String, dir: PathBuf },
    /// An extension directory without C sources.
    #[error("no .c files in {0}; pass a C file or a directory holding the extension's .c files")]
    NoExtensionSources(PathBuf),
}

impl BuildError {
    /// Wrap an I/O error with a sentence saying what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let context = context.into();
        move |source| BuildError::Io { context, source }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, BuildError>;
