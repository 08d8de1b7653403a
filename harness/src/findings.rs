//! The findings store of a campaign that keeps going: one subdirectory per bucket, written
//! atomically the first time the bucket is seen (by any process of the campaign), and a hit
//! counter for every later sighting.
//!
//! Layout of `<dir>/`:
//! - `<hash>/finding.json` — the [`Finding`] (its signature names the bucket), `<hash>/input` —
//!   the fuzz input that produced it, `<hash>/log` — what the harness printed (violation + op log,
//!   or the sanitizer's report), `<hash>/hits` — one line per sighting: the SHA-1 of its input
//!   (libFuzzer's name for an artifact of it), appended (`O_APPEND` writes of a line are atomic,
//!   so concurrent fork-mode children never lose or interleave one);
//! - `known-hits` — one signature a line for each sighting of a bucket listed as known;
//! - `stats/<pid>.json` — the leak-verdict counters of each process ([`LeakStats`]).
//!
//! `<hash>` is the first 16 hex digits of SHA-256 of the signature.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::detect::{BucketSignature, Finding};

/// Where the first sighting of a bucket went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First sighting anywhere in the campaign: the bucket directory was created.
    New,
    /// Already recorded (by this or another process): its hit counter was bumped.
    Seen,
    /// Listed as known: counted in `known-hits`.
    Known,
}

/// Counters of the two-stage leak verdict in one process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakStats {
    /// Stage 1 suspected a leak (every quick repeat grew).
    pub suspected: u64,
    /// Stage 2 (regrtest's procedure with cache clearing) confirmed it.
    pub confirmed: u64,
    /// Stage 2 found no growth on some run: a bounded cache, not a leak.
    pub rejected: u64,
    /// Suspicions of an already-confirmed bucket, counted without running stage 2 again.
    pub reused: u64,
}

impl LeakStats {
    /// Field-wise sum.
    pub fn add(&mut self, o: &LeakStats) {
        self.suspected += o.suspected;
        self.confirmed += o.confirmed;
        self.rejected += o.rejected;
        self.reused += o.reused;
    }
}

/// One bucket as stored.
#[derive(Debug, Clone)]
pub struct StoredBucket {
    pub signature: BucketSignature,
    pub finding: Finding,
    pub input: PathBuf,
    pub log: PathBuf,
    /// Sightings, the first included.
    pub hits: u64,
    /// SHA-1 (hex) of the input of every sighting.
    pub input_hashes: Vec<String>,
}

/// The SHA-1 of an input in hex: libFuzzer's artifact and corpus file name for it.
pub fn input_hash(input: &[u8]) -> String {
    use sha1::Digest as _;
    hex::encode(sha1::Sha1::digest(input))
}

/// A campaign's findings directory.
#[derive(Debug, Clone)]
pub struct FindingStore {
    dir: PathBuf,
}

/// The directory name of a bucket.
pub fn bucket_dir_name(sig: &BucketSignature) -> String {
    let h = Sha256::digest(sig.0.as_bytes());
    hex::encode(&h[..8])
}

fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

impl FindingStore {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> io::Result<FindingStore> {
        fs::create_dir_all(dir)?;
        Ok(FindingStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a bucket directory for `sig` exists (recorded by any process).
    pub fn contains(&self, sig: &BucketSignature) -> bool {
        self.dir
            .join(bucket_dir_name(sig))
            .join("finding.json")
            .is_file()
    }

    /// Count a sighting of a known bucket.
    pub fn record_known(&self, sig: &BucketSignature) -> io::Result<Recorded> {
        append_line(&self.dir.join("known-hits"), &sig.0)?;
        Ok(Recorded::Known)
    }

    /// Record a sighting: the first one writes the bucket (into a temporary directory renamed
    /// into place, so a reader never sees half a bucket and two processes never both win).
    pub fn record(&self, finding: &Finding, input: &[u8], log: &str) -> io::Result<Recorded> {
        let sig = finding.signature();
        let dest = self.dir.join(bucket_dir_name(&sig));
        let hash = input_hash(input);
        if dest.join("finding.json").is_file() {
            append_line(&dest.join("hits"), &hash)?;
            return Ok(Recorded::Seen);
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            bucket_dir_name(&sig)
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        fs::write(tmp.join("input"), input)?;
        fs::write(tmp.join("log"), log)?;
        fs::write(tmp.join("hits"), format!("{hash}\n"))?;
        let json = serde_json::to_vec_pretty(finding).map_err(io::Error::other)?;
        fs::write(tmp.join("finding.json"), json)?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(Recorded::New),
            Err(_) if dest.join("finding.json").is_file() => {
                let _ = fs::remove_dir_all(&tmp);
                append_line(&dest.join("hits"), &hash)?;
                Ok(Recorded::Seen)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// Write this process's leak-verdict counters.
    pub fn write_stats(&self, stats: &LeakStats) -> io::Result<()> {
        let dir = self.dir.join("stats");
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", std::process::id()));
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        fs::write(&tmp, serde_json::to_vec(stats).map_err(io::Error::other)?)?;
        fs::rename(tmp, path)
    }

    /// Every process's counters, summed.
    pub fn stats(&self) -> LeakStats {
        let mut total = LeakStats::default();
        for e in fs::read_dir(self.dir.join("stats")).into_iter().flatten() {
            let Ok(e) = e else { continue };
            if e.path().extension().is_some_and(|x| x == "json") {
                if let Some(s) = fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LeakStats>(&b).ok())
                {
                    total.add(&s);
                }
            }
        }
        total
    }

    /// Sightings of known buckets, by signature.
    pub fn known_hits(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for line in fs::read_to_string(self.dir.join("known-hits"))
            .unwrap_or_default()
            .lines()
        {
            *out.entry(line.to_string()).or_default() += 1;
        }
        out
    }

    /// Every recorded bucket, sorted by signature.
    pub fn buckets(&self) -> Vec<StoredBucket> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') || !p.is_dir() {
                continue;
            }
            let Some(finding) = fs::read(p.join("finding.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Finding>(&b).ok())
            else {
                continue;
            };
            let input_hashes: Vec<String> = fs::read_to_string(p.join("hits"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            out.push(StoredBucket {
                signature: finding.signature(),
                finding,
                input: p.join("input"),
                log: p.join("log"),
                hits: input_hashes.len().max(1) as u64,
                input_hashes,
            });
        }
        out.sort_by(|a, b| a.signature.cmp(&b.signature));
        out
    }
}

/// Signatures listed in a known-buckets file: one a line, `#` comments and blank lines ignored.
pub fn read_known(text: &str) -> Vec<BucketSignature> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| BucketSignature(l.to_string()))
        .collect()
}

/// Whether bucket `sig` is listed in `known`: equal to a line, or matched by it where the line
/// has `*` (any text). One line can so name a known bug that several ops reach, e.g.
/// `use-after-free|*|CallMethod bytearray.*` for a CPython bug shared by bytearray's search
/// methods; a line without `*` names exactly one bucket.
pub fn is_known(known: &[BucketSignature], sig: &str) -> bool {
    known.iter().any(|k| glob_match(&k.0, sig))
}

/// `*`-only glob: `*` matches any run of characters (including `|`), everything else itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{BugClass, Tool};

    #[test]
    fn known_lines_match_exactly_or_by_glob() {
        let k =
            read_known("reference-leak|f|CallExt m.f\nuse-after-free|*|CallMethod bytearray.*\n");
        assert!(is_known(&k, "reference-leak|f|CallExt m.f"));
        assert!(!is_known(&k, "reference-leak|f|CallExt m.g"));
        assert!(!is_known(&k, "reference-leak|f|CallExt m.f2"));
        assert!(is_known(
            &k,
            "use-after-free|stringlib_default_find|CallMethod bytearray.split"
        ));
        assert!(!is_known(&k, "use-after-free|x|CallMethod bytes.split"));
        assert!(!is_known(&k, "double-free|x|CallMethod bytearray.split"));
        assert!(glob_match("a*b*c", "aXbYc") && !glob_match("a*b*c", "aXbY"));
        assert!(glob_match("*", "") && glob_match("ab*", "ab") && !glob_match("a*a", "a"));
    }

    fn finding(op: &str) -> Finding {
        let mut f = Finding::new(BugClass::ReferenceLeak, Tool::Capisan, "leak");
        f.current_op = Some(format!("#1 CallExt m.{op}(s0)"));
        f
    }

    #[test]
    fn first_sighting_writes_the_bucket_later_ones_count() {
        let t = tempfile_dir();
        let store = FindingStore::open(&t).unwrap();
        let f = finding("leaky");
        assert_eq!(store.record(&f, b"in1", "log1").unwrap(), Recorded::New);
        assert_eq!(store.record(&f, b"in2", "log2").unwrap(), Recorded::Seen);
        assert_eq!(store.record(&f, b"in3", "log3").unwrap(), Recorded::Seen);
        assert!(store.contains(&f.signature()));
        let b = store.buckets();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].hits, 3);
        assert_eq!(
            fs::read(&b[0].input).unwrap(),
            b"in1",
            "the first input is kept"
        );
        assert_eq!(b[0].input_hashes[2], input_hash(b"in3"));
        // libFuzzer names an artifact by the SHA-1 of its bytes.
        assert_eq!(input_hash(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(b[0].signature, f.signature());
        store.record_known(&finding("other").signature()).unwrap();
        assert_eq!(store.known_hits().values().sum::<u64>(), 1);
        let _ = fs::remove_dir_all(&t);
    }

    #[test]
    fn stats_of_processes_add_up() {
        let t = tempfile_dir();
        let store = FindingStore::open(&t).unwrap();
        let s = LeakStats {
            suspected: 5,
            confirmed: 1,
            rejected: 4,
            reused: 0,
        };
        store.write_stats(&s).unwrap();
        assert_eq!(store.stats(), s);
        let _ = fs::remove_dir_all(&t);
    }

    #[test]
    fn known_file_ignores_comments() {
        let k = read_known("# known\nreference-leak|f|CallExt\n\n  crash|?|-  \n");
        assert_eq!(k.len(), 2);
        assert_eq!(k[1].0, "crash|?|-");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "capisan-findings-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }
}
