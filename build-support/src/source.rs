//! Finding CPython source: a tree the user names, or Debian's source package.
//!
//! Debian's packages are fetched with `apt-get source --download-only` through a private apt
//! state directory in the cache, with deb-src lines derived from the machine's own mirror, so
//! the system's apt configuration is never touched. Only the upstream `.orig` tarball is used
//! (Debian's patches are not applied), after its SHA-256 is checked against the `.dsc`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::error::{BuildError, Result};

/// Debian suites searched for a version, oldest first. bookworm has 3.11, trixie 3.13, sid newer.
pub const SUITES: [&str; 3] = ["bookworm", "trixie", "sid"];

/// A CPython source tree ready to configure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpythonSource {
    /// Top of the tree (has `configure`).
    pub dir: PathBuf,
    /// `PY_VERSION` from `Include/patchlevel.h`.
    pub version: String,
    /// Content identity: the tarball's SHA-256, or a fingerprint of the user's tree.
    pub hash: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Where a source tree came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// A checkout or unpacked tarball the user gave with `--src` / `CPYTHON_SRC`.
    Path { path: PathBuf },
    /// Debian's source package, upstream tarball only.
    Debian {
        package: String,
        debian_version: String,
        tarball: PathBuf,
        sha256: String,
    },
}

/// What [`resolve`] does with the same arguments, for a progress line.
pub fn resolving(src: Option<&Path>, version: &str) -> String {
    match src {
        Some(p) => format!("checking CPython source at {}", p.display()),
        None => format!("fetching CPython {version} from Debian's source packages"),
    }
}

/// Resolve the source to build: `src` if given, else Debian's package of `version`.
pub fn resolve(cache: &Cache, src: Option<&Path>, version: &str) -> Result<CpythonSource> {
    match src {
        Some(path) => from_path(path),
        None => fetch_debian(cache, version),
    }
}

/// Check that `path` is an unconfigured CPython tree and fingerprint it.
pub fn from_path(path: &Path) -> Result<CpythonSource> {
    if !path.is_dir() {
        return Err(BuildError::NotCpythonSource {
            path: path.to_path_buf(),
            missing: "directory at that path",
        });
    }
    let dir = path
        .canonicalize()
        .map_err(BuildError::io(format!("resolving {}", path.display())))?;
    if !dir.join("configure").is_file() {
        return Err(BuildError::NotCpythonSource {
            path: dir,
            missing: "configure script",
        });
    }
    let version = read_patchlevel(&dir)?;
    for marker in ["pyconfig.h", "Makefile"] {
        if dir.join(marker).exists() {
            return Err(BuildError::SourceConfiguredInTree { path: dir, marker });
        }
    }
    let hash = fingerprint_tree(&dir)?;
    Ok(CpythonSource {
        origin: Origin::Path { path: dir.clone() },
        dir,
        version,
        hash,
    })
}

/// Read `PY_VERSION` from `Include/patchlevel.h`.
pub fn read_patchlevel(dir: &Path) -> Result<String> {
    let header = dir.join("Include").join("patchlevel.h");
    let text = fs::read_to_string(&header).map_err(|_| BuildError::NotCpythonSource {
        path: dir.to_path_buf(),
        missing: "Include/patchlevel.h",
    })?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("#define PY_VERSION"))
        .find_map(|rest| {
            rest.trim()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .ok_or(BuildError::NotCpythonSource {
            path: dir.to_path_buf(),
            missing: "PY_VERSION in Include/patchlevel.h",
        })
}

/// Hash of relative path, size and mtime of every file (skipping `.git`): cheap, and changes
/// whenever the user edits the tree.
fn fingerprint_tree(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let walk = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walk {
        let entry = entry.map_err(|e| BuildError::Io {
            context: format!("walking {}", dir.display()),
            source: e.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| BuildError::Io {
            context: format!("reading {}", entry.path().display()),
            source: e.into(),
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        hasher.update(format!("{}\0{}\0{:?}\n", rel.display(), meta.len(), mtime));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Check a version string: `X.Y` or `X.Y.Z`, numbers only.
pub fn validate_version(version: &str) -> Result<(u32, u32)> {
    let parts: Vec<&str> = version.split('.').collect();
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums {
        Some(n) if (2..=3).contains(&n.len()) && n[0] == 3 => Ok((n[0], n[1])),
        _ => Err(BuildError::BadVersion(version.to_string())),
    }
}

/// Fetch (or find already unpacked in the cache) Debian's source of CPython `version`.
pub fn fetch_debian(cache: &Cache, version: &str) -> Result<CpythonSource> {
    let (major, minor) = validate_version(version)?;
    if let Some(found) = cached_debian(cache, version)? {
        return Ok(found);
    }
    if which("apt-get").is_none() {
        return Err(BuildError::NoApt);
    }
    let package = format!("python{major}.{minor}");
    let apt = PrivateApt::prepare(cache, Path::new("/etc/apt"))?;
    let offered = apt.source_versions(&package)?;
    let candidates = matching_versions(&offered, version);
    if candidates.is_empty() {
        let mut available = Vec::new();
        for m in 9..=16 {
            available.extend(
                apt.source_versions(&format!("python3.{m}"))?
                    .iter()
                    .map(|v| upstream_of(v).to_string()),
            );
        }
        available.dedup();
        return Err(BuildError::UnknownVersion {
            requested: version.to_string(),
            available: if available.is_empty() {
                "nothing".into()
            } else {
                available.join(", ")
            },
        });
    }
    // Newest first; a mirror whose files lag its index answers 404 for some: take the newest
    // it serves.
    let mut served = None;
    for debian_version in &candidates {
        let download = cache
            .sources_dir()
            .join(format!("{package}_{debian_version}"));
        fs::create_dir_all(&download)
            .map_err(BuildError::io(format!("creating {}", download.display())))?;
        match apt.download_source(&package, debian_version, &download) {
            Ok(()) => {
                served = Some((debian_version.clone(), download));
                break;
            }
            Err(BuildError::CommandFailed { tail, .. }) if tail.contains("404") => {
                let _ = fs::remove_dir_all(&download);
            }
            Err(e) => return Err(e),
        }
    }
    let Some((debian_version, download)) = served else {
        return Err(BuildError::NotServed {
            package,
            versions: candidates.join(", "),
        });
    };
    let (tarball, expected) = orig_tarball_from_dsc(&download)?;
    let actual = sha256_file(&tarball)?;
    if actual != expected {
        return Err(BuildError::Checksum {
            path: tarball,
            expected,
            actual,
        });
    }
    let dir = unpack(&tarball, &download)?;
    let version_found = read_patchlevel(&dir)?;
    let source = CpythonSource {
        dir,
        version: version_found,
        hash: actual.clone(),
        origin: Origin::Debian {
            package,
            debian_version,
            tarball,
            sha256: actual,
        },
    };
    let marker = download.join("source.json");
    write_atomic(
        &marker,
        serde_json::to_string_pretty(&source)
            .expect("serializable")
            .as_bytes(),
    )?;
    Ok(source)
}

/// A source already fetched and unpacked, found by its `source.json` marker.
fn cached_debian(cache: &Cache, version: &str) -> Result<Option<CpythonSource>> {
    let Ok(entries) = fs::read_dir(cache.sources_dir()) else {
        return Ok(None);
    };
    let mut found: Vec<CpythonSource> = entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("source.json")).ok())
        .filter_map(|t| serde_json::from_str::<CpythonSource>(&t).ok())
        .filter(|s| version_matches(&s.version, version) && s.dir.join("configure").is_file())
        .collect();
    found.sort_by_key(|s| release_key(&s.version));
    Ok(found.pop())
}

fn version_matches(upstream: &str, requested: &str) -> bool {
    upstream == requested
        || upstream
            .strip_prefix(requested)
            .is_some_and(|r| r.starts_with('.'))
}

fn release_key(v: &str) -> Vec<u32> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Upstream part of a Debian version: no epoch, no Debian revision.
fn upstream_of(debian_version: &str) -> &str {
    let no_epoch = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u)
}

/// The newest Debian version whose upstream part matches `requested` (exactly, or as X.Y prefix).
#[cfg(test)]
fn pick_version(offered: &[String], requested: &str) -> Option<String> {
    matching_versions(offered, requested).into_iter().next()
}

/// Every Debian version whose upstream part matches `requested` (exactly, or as X.Y prefix),
/// newest first.
fn matching_versions(offered: &[String], requested: &str) -> Vec<String> {
    let mut found: Vec<String> = offered
        .iter()
        .filter(|v| version_matches(upstream_of(v), requested))
        .cloned()
        .collect();
    found.sort_by_key(|v| std::cmp::Reverse(release_key(upstream_of(v))));
    found
}

/// apt with its own lists and cache under the capisan cache, and deb-src lines for [`SUITES`].
struct PrivateApt {
    options: Vec<String>,
}

impl PrivateApt {
    fn prepare(cache: &Cache, etc_apt: &Path) -> Result<PrivateApt> {
        let mirror = debian_mirror(etc_apt)?;
        let dir = cache.apt_dir();
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub)).map_err(BuildError::io(format!(
                "creating {}",
                dir.join(sub).display()
            )))?;
        }
        let list: String = SUITES
            .iter()
            .map(|s| format!("deb-src {mirror} {s} main\n"))
            .collect();
        let list_path = dir.join("sources.list");
        fs::write(&list_path, list)
            .map_err(BuildError::io(format!("writing {}", list_path.display())))?;
        let options = [
            format!("Dir::Etc::SourceList={}", list_path.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            format!("Dir::State::Lists={}", dir.join("lists").display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
            "APT::Sandbox::User=root".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        let apt = PrivateApt { options };
        apt.run("apt-get", &["update"], &dir)?;
        Ok(apt)
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Result<String> {
        let mut argv: Vec<String> = self.options.clone();
        argv.extend(args.iter().map(|s| s.to_string()));
        let out = duct::cmd(program, &argv)
            .dir(cwd)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .map_err(BuildError::io(format!("running {program}")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(BuildError::CommandFailed {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.to_string(),
                log: cwd.to_path_buf(),
                tail: tail_lines(&text, 20),
            });
        }
        Ok(text)
    }

    fn source_versions(&self, package: &str) -> Result<Vec<String>> {
        let out = duct::cmd(
            "apt-cache",
            self.options
                .iter()
                .cloned()
                .chain(["showsrc".into(), package.into()]),
        )
        .stderr_null()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(BuildError::io("running apt-cache showsrc"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut versions: Vec<String> = Vec::new();
        let mut current_pkg = String::new();
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                current_pkg = p.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Version: ") {
                if current_pkg == package && !versions.iter().any(|x| x == v.trim()) {
                    versions.push(v.trim().to_string());
                }
            }
        }
        Ok(versions)
    }

    fn download_source(&self, package: &str, debian_version: &str, into: &Path) -> Result<()> {
        self.run(
            "apt-get",
            &[
                "source",
                "--download-only",
                &format!("{package}={debian_version}"),
            ],
            into,
        )
        .map(|_| ())
    }
}

/// The first non-security Debian mirror in the machine's apt sources (deb822 `.sources` files
/// and one-line `.list` files).
pub fn debian_mirror(etc_apt: &Path) -> Result<String> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(rd) = fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let candidates = if name.ends_with(".sources") {
            deb822_uris(&text)
        } else if name.ends_with(".list") {
            one_line_uris(&text)
        } else {
            continue;
        };
        if let Some(uri) = candidates
            .into_iter()
            .find(|(uri, suite)| is_main_debian(uri, suite))
        {
            return Ok(uri.0);
        }
    }
    Err(BuildError::NoMirror(etc_apt.display().to_string()))
}

fn is_main_debian(uri: &str, suite: &str) -> bool {
    uri.trim_end_matches('/').ends_with("/debian") && !suite.contains("security")
}

/// (uri, first suite) of each `Types: deb` stanza.
fn deb822_uris(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if types.split_whitespace().any(|t| t == "deb") {
            let suite = suites.split_whitespace().next().unwrap_or("").to_string();
            out.extend(
                uris.split_whitespace()
                    .map(|u| (u.to_string(), suite.clone())),
            );
        }
    }
    out
}

/// (uri, suite) of each `deb URI SUITE ...` line, options in brackets skipped.
fn one_line_uris(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("deb ")?.trim_start();
            let rest = if rest.starts_with('[') {
                rest.split_once(']')?.1.trim_start()
            } else {
                rest
            };
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// The `.orig.tar.*` named in the `.dsc` of `dir`, with its expected SHA-256.
fn orig_tarball_from_dsc(dir: &Path) -> Result<(PathBuf, String)> {
    let dsc = fs::read_dir(dir)
        .map_err(BuildError::io(format!("listing {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "dsc"))
        .ok_or_else(|| BuildError::Io {
            context: format!("apt-get source left no .dsc in {}", dir.display()),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    let text =
        fs::read_to_string(&dsc).map_err(BuildError::io(format!("reading {}", dsc.display())))?;
    parse_dsc_orig(&text)
        .map(|(name, sum)| (dir.join(name), sum))
        .ok_or_else(|| BuildError::Io {
            context: format!(
                "{} names no .orig tarball under Checksums-Sha256",
                dsc.display()
            ),
            source: std::io::ErrorKind::InvalidData.into(),
        })
}

fn parse_dsc_orig(dsc: &str) -> Option<(String, String)> {
    let section = dsc.split("Checksums-Sha256:").nth(1)?;
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (sum, _size, name) = (w.next()?, w.next()?, w.next()?);
            (name.contains(".orig.tar.") && !name.ends_with(".asc"))
                .then(|| (name.to_string(), sum.to_string()))
        })
        .next()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        fs::File::open(path).map_err(BuildError::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(BuildError::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Unpack into a temporary directory beside the final one, then rename: a crash mid-unpack
/// leaves no half tree where a later run would look.
fn unpack(tarball: &Path, into: &Path) -> Result<PathBuf> {
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(into)
        .map_err(BuildError::io(format!(
            "creating a temporary directory in {}",
            into.display()
        )))?;
    let out = duct::cmd!("tar", "-xf", tarball, "-C", tmp.path())
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(BuildError::io("running tar"))?;
    if !out.status.success() {
        return Err(BuildError::CommandFailed {
            command: format!("tar -xf {}", tarball.display()),
            status: out.status.to_string(),
            log: tarball.to_path_buf(),
            tail: tail_lines(&String::from_utf8_lossy(&out.stdout), 20),
        });
    }
    let top = fs::read_dir(tmp.path())
        .map_err(BuildError::io("listing the unpacked tarball"))?
        .flatten()
        .find(|e| e.path().is_dir())
        .ok_or_else(|| BuildError::Io {
            context: format!("{} unpacked to no directory", tarball.display()),
            source: std::io::ErrorKind::InvalidData.into(),
        })?;
    let dest = into.join(top.file_name());
    if dest.exists() {
        fs::remove_dir_all(&dest)
            .map_err(BuildError::io(format!("removing stale {}", dest.display())))?;
    }
    fs::rename(top.path(), &dest).map_err(BuildError::io(format!(
        "moving source to {}",
        dest.display()
    )))?;
    Ok(dest)
}

/// Write a file so that readers see either the old or the whole new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(BuildError::io(format!("writing into {}", dir.display())))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .map_err(BuildError::io(format!("writing {}", path.display())))?;
    tmp.as_file()
        .sync_all()
        .map_err(BuildError::io(format!("syncing {}", path.display())))?;
    tmp.persist(path).map_err(|e| BuildError::Io {
        context: format!("renaming onto {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

/// Last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Find a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_says_which_source() {
        assert_eq!(
            resolving(None, "3.13"),
            "fetching CPython 3.13 from Debian's source packages"
        );
        assert_eq!(
            resolving(Some(Path::new("/src")), "3.13"),
            "checking CPython source at /src"
        );
    }

    #[test]
    fn picks_matching_upstream() {
        let offered = vec![
            "3.13.5-2+deb13u5".to_string(),
            "3.13.9-1".to_string(),
            "3.11.2-6".to_string(),
        ];
        assert_eq!(
            pick_version(&offered, "3.13.5").as_deref(),
            Some("3.13.5-2+deb13u5")
        );
        assert_eq!(pick_version(&offered, "3.13").as_deref(), Some("3.13.9-1"));
        assert_eq!(pick_version(&offered, "3.13.1"), None);
        assert_eq!(pick_version(&offered, "3.1"), None);
        // Newest first, so a version the mirror does not serve falls back to the next one.
        assert_eq!(
            matching_versions(&offered, "3.13"),
            ["3.13.9-1", "3.13.5-2+deb13u5"]
        );
    }

    #[test]
    fn validates_versions() {
        assert!(validate_version("3.13.5").is_ok());
        assert!(validate_version("3.13").is_ok());
        for bad in ["3", "x.y", "3.13.5.1", "2.7.18", ""] {
            assert!(
                matches!(validate_version(bad), Err(BuildError::BadVersion(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_dsc() {
        let dsc = "Format: 3.0 (quilt)\nChecksums-Sha256:\n 93e5 22856016 python3.13_3.13.5.orig.tar.xz\n da6e 963 python3.13_3.13.5.orig.tar.xz.asc\n a51f 299640 python3.13_3.13.5-2.debian.tar.xz\nFiles:\n";
        assert_eq!(
            parse_dsc_orig(dsc),
            Some(("python3.13_3.13.5.orig.tar.xz".into(), "93e5".into()))
        );
    }

    #[test]
    fn finds_mirror_in_deb822_and_one_line() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sources.list.d")).unwrap();
        fs::write(
            d.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            debian_mirror(d.path()).unwrap(),
            "http://mirror.example/debian"
        );
        fs::write(
            d.path().join("sources.list"),
            "deb [arch=amd64] http://one.example/debian/ bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            debian_mirror(d.path()).unwrap(),
            "http://one.example/debian/"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            debian_mirror(empty.path()),
            Err(BuildError::NoMirror(_))
        ));
    }

    #[test]
    fn rejects_non_source_and_configured_trees() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            from_path(&d.path().join("nope")),
            Err(BuildError::NotCpythonSource { .. })
        ));
        assert!(matches!(
            from_path(d.path()),
            Err(BuildError::NotCpythonSource {
                missing: "configure script",
                ..
            })
        ));
        fs::write(d.path().join("configure"), "#!/bin/sh\n").unwrap();
        assert!(matches!(
            from_path(d.path()),
            Err(BuildError::NotCpythonSource {
                missing: "Include/patchlevel.h",
                ..
            })
        ));
        fs::create_dir(d.path().join("Include")).unwrap();
        fs::write(
            d.path().join("Include/patchlevel.h"),
            "#define PY_VERSION              \"3.13.5\"\n",
        )
        .unwrap();
        let s = from_path(d.path()).unwrap();
        assert_eq!(s.version, "3.13.5");
        fs::write(d.path().join("Makefile"), "all:\n").unwrap();
        assert!(matches!(
            from_path(d.path()),
            Err(BuildError::SourceConfiguredInTree { .. })
        ));
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.c"), "int x;").unwrap();
        let h1 = fingerprint_tree(d.path()).unwrap();
        assert_eq!(h1, fingerprint_tree(d.path()).unwrap());
        fs::write(d.path().join("a.c"), "int xy;").unwrap();
        assert_ne!(h1, fingerprint_tree(d.path()).unwrap());
    }
}
