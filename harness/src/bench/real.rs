//! The real-bug set of `cargo xtask bench --real` (issue #18): `bench/real-bugs.toml`, a list
//! of historical memory bugs in CPython C extensions on PyPI and in CPython 3.13.x, each with a
//! release that has it, the release that fixed it and the public evidence for both. The bench
//! downloads and builds the releases itself; nothing is vendored.
//!
//! The file is TOML (one `[[bug]]` table per bug), read with the `toml` crate and deserialized
//! into [`RealBug`] with serde; an error names its line, or the entry and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use capisan_build::package::{build_package, Requirement};
use capisan_build::Variant;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Bench, BenchError, Table};
use crate::campaign::CampaignRequest;

/// What kind of memory bug it is: the names the table uses, one per capisan finding class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum BugClass {
    #[serde(rename = "reference-leak")]
    ReferenceLeak,
    #[serde(rename = "use-after-free")]
    UseAfterFree,
    #[serde(rename = "double-free")]
    DoubleFree,
    #[serde(rename = "buffer-overflow")]
    BufferOverflow,
    #[serde(rename = "uninitialized-read")]
    UninitializedRead,
    #[serde(rename = "allocator-mismatch")]
    AllocatorMismatch,
    #[serde(rename = "gc-traversal")]
    GcTraversal,
    #[serde(rename = "borrowed-ref-misuse")]
    BorrowedRefMisuse,
    #[serde(rename = "null-deref/crash")]
    NullDerefCrash,
}

impl BugClass {
    /// Every class, in the order the data file's header lists them.
    pub const ALL: [BugClass; 9] = [
        BugClass::ReferenceLeak,
        BugClass::UseAfterFree,
        BugClass::DoubleFree,
        BugClass::BufferOverflow,
        BugClass::UninitializedRead,
        BugClass::AllocatorMismatch,
        BugClass::GcTraversal,
        BugClass::BorrowedRefMisuse,
        BugClass::NullDerefCrash,
    ];

    /// The name the data file uses: capisan's finding class id ([`crate::detect::BugClass::id`]),
    /// except the one class the table merges (a NULL dereference or another crash).
    pub fn name(self) -> &'static str {
        use crate::detect::BugClass as Found;
        let found = match self {
            BugClass::ReferenceLeak => Found::ReferenceLeak,
            BugClass::UseAfterFree => Found::UseAfterFree,
            BugClass::DoubleFree => Found::DoubleFree,
            BugClass::BufferOverflow => Found::BufferOverflow,
            BugClass::UninitializedRead => Found::UninitializedRead,
            BugClass::AllocatorMismatch => Found::AllocatorMismatch,
            BugClass::GcTraversal => Found::GcTraversal,
            BugClass::BorrowedRefMisuse => Found::BorrowedRefMisuse,
            BugClass::NullDerefCrash => return "null-deref/crash",
        };
        found.id()
    }
}

/// What makes the bug visible, so the bench knows which check must be on to count a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// An ASan/UBSan report or a crash.
    Asan,
    /// `sys.gettotalrefcount()` grows with every call (pydebug).
    Refcount,
    /// A leaked PyMem/PyObject block with every call, which the refcount total does not see: a
    /// tracemalloc snapshot diff or LSan shows it (`sys.getallocatedblocks()` only on a
    /// pymalloc build; the asan variant has none).
    Blocks,
    /// Only after an injected allocation failure (`--fail-alloc`), then a crash.
    FailAlloc,
}

/// How the buggy and fixed releases are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildKind {
    /// A C extension built from its sdist by pip with the variant's compiler.
    C,
    /// A Cython extension: pip's build isolation fetches Cython.
    Cython,
    /// A CPython release: a variant built from that version's source.
    Cpython,
}

/// One historical bug: where it is, how it shows, the releases with and without it, and the
/// public evidence.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealBug {
    /// Stable name, unique in the file.
    pub id: String,
    /// PyPI name, or `cpython`.
    pub package: String,
    /// The dotted extension module the bug lives in.
    pub module: String,
    /// The function or method that has the bug.
    pub function: String,
    /// What kind of bug it is.
    pub class: BugClass,
    /// What shows it.
    pub signal: Signal,
    /// A release that has the bug.
    pub buggy: String,
    /// The first release without it.
    pub fixed: String,
    /// Issue, pull request and commit URLs.
    pub evidence: Vec<String>,
    /// The changelog or NEWS line of the fix, quoted.
    pub changelog: String,
    /// How to reach it from Python, for the reader of the table: the bench must not seed a
    /// campaign with it.
    pub trigger: String,
    /// How the releases are built.
    pub build: BuildKind,
    /// Anything else a runner must know (yanked releases, caveats).
    #[serde(default)]
    pub notes: Option<String>,
    /// How a capisan run reproduced it on `buggy` and not on `fixed`, when one did.
    #[serde(default)]
    pub verified: Option<String>,
}

impl RealBug {
    /// Whether the bug is in CPython itself rather than a PyPI package.
    pub fn is_cpython(&self) -> bool {
        self.package == "cpython"
    }

    /// The pip requirement of the buggy release (`name==version`), for `pkg-build`; `None`
    /// for a CPython bug.
    pub fn buggy_requirement(&self) -> Option<String> {
        (!self.is_cpython()).then(|| format!("{}=={}", self.package, self.buggy))
    }

    /// The pip requirement of the fixed release; `None` for a CPython bug.
    pub fn fixed_requirement(&self) -> Option<String> {
        (!self.is_cpython()).then(|| format!("{}=={}", self.package, self.fixed))
    }
}

/// Why the real-bug file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RealBugsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML with `[[bug]]` tables.
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// An entry does not fit [`RealBug`] (a missing or unknown field, an unknown class).
    #[error("{path}: bug #{index} ({id}): {source}")]
    Schema {
        path: PathBuf,
        index: usize,
        id: String,
        source: Box<toml::de::Error>,
    },
    /// The entries parse but break a rule of the set (duplicate id, buggy == fixed, no URL).
    #[error("{path}: {message}; fix the entry in the file")]
    Invalid { path: PathBuf, message: String },
}

/// Where the set lives in a checkout: `<root>/bench/real-bugs.toml`.
pub fn default_path(root: &Path) -> PathBuf {
    root.join("bench").join("real-bugs.toml")
}

/// Read, parse and check the real-bug file at `path`.
pub fn load(path: &Path) -> Result<Vec<RealBug>, RealBugsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RealBugsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parse and check the text of a real-bug file (TOML, one `[[bug]]` table per bug, read with
/// the `toml` crate); `origin` names it in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Vec<RealBug>, RealBugsError> {
    let syntax = |line: usize, message: String| RealBugsError::Syntax {
        path: origin.to_path_buf(),
        line,
        message,
    };
    let doc: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
        syntax(line, e.message().to_string())
    })?;
    if let Some(other) = doc.keys().find(|k| *k != "bug") {
        return Err(syntax(
            0,
            format!("only [[bug]] tables belong in the file, not `{other}`"),
        ));
    }
    let tables = match doc.get("bug") {
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(syntax(
                0,
                "`bug` must be an array of tables ([[bug]])".into(),
            ))
        }
        None => Vec::new(),
    };
    let mut bugs = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let id = table
            .get("id")
            .and_then(toml::Value::as_str)
            .unwrap_or("no id")
            .to_string();
        let bug = table
            .try_into::<RealBug>()
            .map_err(|source| RealBugsError::Schema {
                path: origin.to_path_buf(),
                index: i + 1,
                id,
                source: Box::new(source),
            })?;
        bugs.push(bug);
    }
    check(&bugs).map_err(|message| RealBugsError::Invalid {
        path: origin.to_path_buf(),
        message,
    })?;
    Ok(bugs)
}

/// The rules every entry keeps: a unique id, two different releases, at least one evidence
/// URL and only URLs as evidence, and a CPython entry built as CPython (and only it).
pub fn check(bugs: &[RealBug]) -> Result<(), String> {
    let mut ids = BTreeSet::new();
    for b in bugs {
        if !ids.insert(b.id.as_str()) {
            return Err(format!("id {:?} appears twice", b.id));
        }
        if b.buggy == b.fixed {
            return Err(format!("{}: buggy and fixed are both {}", b.id, b.buggy));
        }
        if b.evidence.is_empty() {
            return Err(format!("{}: no evidence URL", b.id));
        }
        if let Some(u) = b.evidence.iter().find(|u| !u.starts_with("https://")) {
            return Err(format!("{}: evidence {u:?} is not an https URL", b.id));
        }
        if b.is_cpython() != (b.build == BuildKind::Cpython) {
            return Err(format!(
                "{}: package {:?} with build {:?}",
                b.id, b.package, b.build
            ));
        }
    }
    Ok(())
}

/// How many entries each package has, by name.
pub fn by_package(bugs: &[RealBug]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for b in bugs {
        *counts.entry(b.package.as_str()).or_insert(0) += 1;
    }
    counts
}

/// What `cargo xtask bench --real` runs: the campaign length, how many runs a median takes,
/// and which bugs (by id; empty: all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealOptions {
    /// Seconds per campaign (one per release and run).
    pub seconds: u64,
    /// Campaigns per release; time-to-detect is their median.
    pub runs: u64,
    /// Only these bug ids; empty: every bug of the file.
    pub only: Vec<String>,
    /// More caches to find the CPython builds of the CPython rows in (a build of another
    /// 3.13.y kept apart from the default cache, whose newest 3.13 build every command uses).
    pub cpython_caches: Vec<PathBuf>,
}

impl RealOptions {
    /// `runs` campaigns of `seconds` per release, on the bugs `only` names (all when empty).
    pub fn new(seconds: u64, runs: u64, only: Vec<String>) -> RealOptions {
        RealOptions {
            seconds,
            runs,
            only,
            cpython_caches: Vec::new(),
        }
    }
}

impl Default for RealOptions {
    fn default() -> Self {
        RealOptions::new(60, 1, Vec::new())
    }
}

/// The bugs of `bugs` that `only` names, in file order (every bug when `only` is empty); an id
/// that is not in the file is an error that lists the ids.
pub fn select<'a>(bugs: &'a [RealBug], only: &[String]) -> Result<Vec<&'a RealBug>, String> {
    if let Some(id) = only.iter().find(|id| !bugs.iter().any(|b| &b.id == *id)) {
        let ids: Vec<&str> = bugs.iter().map(|b| b.id.as_str()).collect();
        return Err(format!(
            "no bug {id:?} in bench/real-bugs.toml; its ids: {}",
            ids.join(", ")
        ));
    }
    Ok(bugs
        .iter()
        .filter(|b| only.is_empty() || only.contains(&b.id))
        .collect())
}

/// The capisan bucket class ids (`detect::BugClass::id`, the first `|` field of a signature)
/// that count as the data file's `class`: a crash on a NULL pointer shows as a NULL
/// dereference, a plain crash, or (when the extension returns NULL without an exception rather
/// than crashing) an exception-state finding.
pub fn bucket_classes(class: BugClass) -> &'static [&'static str] {
    match class {
        BugClass::ReferenceLeak => &["reference-leak"],
        BugClass::UseAfterFree => &["use-after-free"],
        BugClass::DoubleFree => &["double-free", "use-after-free"],
        BugClass::BufferOverflow => &["buffer-overflow"],
        BugClass::UninitializedRead => &["uninitialized-read"],
        BugClass::AllocatorMismatch => &["allocator-mismatch"],
        BugClass::GcTraversal => &["gc-traversal"],
        BugClass::BorrowedRefMisuse => &["borrowed-ref-misuse", "use-after-free"],
        BugClass::NullDerefCrash => &["null-deref", "crash", "exception-state"],
    }
}

/// Words of the data file's `function` field that are prose, not names.
const NOT_NAMES: [&str; 20] = [
    "and",
    "the",
    "other",
    "in-place",
    "operators",
    "from",
    "a",
    "sequence",
    "handling",
    "in",
    "encoder",
    "buffer",
    "sizing",
    "error",
    "path",
    "iterator",
    "view",
    "deallocs",
    "indent",
    "12",
];

/// The names a bucket's culprit may contain to name `function` (the data file's field, e.g.
/// `"MultiDict.pop / popone (md_pop_one)"`): each dotted name in it and its last dotted part
/// (`MultiDict.pop`, `pop`, `popone`, `md_pop_one`), prose words left out.
pub fn culprit_names(function: &str) -> Vec<String> {
    let mut names = Vec::new();
    for word in function.split(|c: char| c.is_whitespace() || "/,()".contains(c)) {
        let word = word.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
        if word.is_empty() || NOT_NAMES.contains(&word) {
            continue;
        }
        for name in [word, word.rsplit('.').next().unwrap_or(word)] {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// One bucket of a campaign: its signature and when it was first seen (seconds after the
/// campaign started: the oldest of its finding and artifact files; `None` when none has a time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeenBucket {
    pub signature: String,
    pub seconds: Option<f64>,
}

impl SeenBucket {
    /// The class id (first `|` field).
    pub fn class(&self) -> &str {
        self.signature.split('|').next().unwrap_or("")
    }

    /// The culprit (second `|` field).
    pub fn culprit(&self) -> &str {
        self.signature.split('|').nth(1).unwrap_or("")
    }

    /// Whether the class is one of `bug`'s ([`bucket_classes`]).
    pub fn class_matches(&self, bug: &RealBug) -> bool {
        bucket_classes(bug.class).contains(&self.class())
    }

    /// Whether the culprit names `bug`'s function ([`culprit_names`]).
    pub fn culprit_matches(&self, bug: &RealBug) -> bool {
        let culprit = self.culprit();
        culprit_names(&bug.function)
            .iter()
            .any(|n| culprit.contains(n.as_str()))
    }
}

/// What one campaign on one release found, and its libFuzzer numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseRun {
    pub requirement: String,
    pub module: String,
    pub fail_alloc: bool,
    pub dir: PathBuf,
    pub buckets: Vec<SeenBucket>,
    pub exec_per_sec: u64,
    pub cov: u64,
    pub execs: u64,
    /// When nothing was covered: the harness's panic message from the first crash's triage
    /// log (e.g. the prelude failing on the module).
    pub startup: Option<String>,
}

/// The verdict on one bug in one run of its buggy release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// A bucket of a matching class.
    pub detected: bool,
    /// Every bucket whose culprit names the function has a matching class (`None`: no bucket
    /// names it).
    pub class_right: Option<bool>,
    /// A bucket of a matching class names the function.
    pub culprit_right: bool,
    /// When the best bucket (matching class and culprit, else matching class) was first seen.
    pub seconds: Option<f64>,
    /// That bucket's signature.
    pub signature: Option<String>,
}

/// Judge `buckets` of a campaign on `bug`'s buggy release.
pub fn judge(bug: &RealBug, buckets: &[SeenBucket]) -> Verdict {
    let by_class: Vec<&SeenBucket> = buckets.iter().filter(|b| b.class_matches(bug)).collect();
    let naming: Vec<&SeenBucket> = buckets.iter().filter(|b| b.culprit_matches(bug)).collect();
    let earliest = |v: &[&SeenBucket]| {
        v.iter()
            .min_by(|a, b| {
                let t = |x: &SeenBucket| x.seconds.unwrap_or(f64::INFINITY);
                t(a).total_cmp(&t(b))
            })
            .map(|b| (*b).clone())
    };
    let both: Vec<&SeenBucket> = by_class
        .iter()
        .copied()
        .filter(|b| b.culprit_matches(bug))
        .collect();
    let best = earliest(&both).or_else(|| earliest(&by_class));
    Verdict {
        detected: !by_class.is_empty(),
        class_right: (!naming.is_empty()).then(|| naming.iter().all(|b| b.class_matches(bug))),
        culprit_right: !both.is_empty(),
        seconds: best.as_ref().and_then(|b| b.seconds),
        signature: best.map(|b| b.signature),
    }
}

/// Why a campaign may miss `bug`, when the data file says enough to know.
pub fn known_miss_reason(bug: &RealBug) -> &'static str {
    match bug.signal {
        Signal::Blocks => {
            "a leak of memory blocks on a path the campaign did not reach (the raw-memory verdict of every extension call sees blocks, not only references)"
        }
        Signal::FailAlloc => {
            "needs allocation failure (the campaign ran with --fail-alloc; the failing allocation must be the unchecked one)"
        }
        Signal::Refcount | Signal::Asan => "not reached within the campaign",
    }
}

/// Run one campaign without seeds on `module` of the package built in `site_packages`, with
/// `--fail-alloc` when asked, libFuzzer seed `seed`; keeps going across findings.
fn release_campaign(
    bench: &Bench,
    requirement: &str,
    site_packages: &Path,
    module: &str,
    fail_alloc: bool,
    seconds: u64,
    seed: u64,
) -> super::Result<ReleaseRun> {
    let label = requirement.replace("==", "-");
    let dir = std::env::temp_dir().join(format!(
        "capisan-bench-real-{label}-{module}-{}-{seed}",
        if fail_alloc { "failalloc" } else { "plain" }
    ));
    let mut r = CampaignRequest::new("capi_sequences", Variant::Asan, seconds);
    (r.ext, r.ext_path, r.out) = (
        Some(module.to_string()),
        Some(site_packages.to_path_buf()),
        Some(dir.clone()),
    );
    (r.seed_corpus, r.fail_alloc, r.seed) = (false, fail_alloc, Some(seed));
    let spec = r.spec(&bench.root, bench.asan.clone(), bench.binary.clone());
    let started = SystemTime::now();
    let outcome = super::run_campaign(&spec)?;
    let totals = outcome.totals();
    let first_seen = |paths: &[PathBuf]| {
        paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .filter_map(|t| t.duration_since(started).ok())
            .map(|d| d.as_secs_f64())
            .min_by(f64::total_cmp)
    };
    let buckets = outcome
        .buckets
        .iter()
        .map(|b| SeenBucket {
            signature: b.signature.clone(),
            seconds: first_seen(&b.artifacts),
        })
        .collect();
    let startup = (totals.cov == 0)
        .then(|| outcome.buckets.iter().flat_map(|b| &b.artifacts).next())
        .flatten()
        .and_then(|a| std::fs::read_to_string(a.with_extension("log")).ok())
        .and_then(|log| panic_message(&log));
    Ok(ReleaseRun {
        startup,
        requirement: requirement.to_string(),
        module: module.to_string(),
        fail_alloc,
        dir,
        buckets,
        exec_per_sec: totals.exec_per_sec,
        cov: totals.cov,
        execs: totals.execs,
    })
}

/// The first `n` of `items` joined with `, `, and how many more there are (the JSON has all).
pub fn shortlist(items: &[String], n: usize) -> String {
    let mut s = items[..n.min(items.len())].join(", ");
    if items.len() > n {
        s.push_str(&format!(", ... {} more in real.json", items.len() - n));
    }
    s
}

/// Why `run` says nothing about its release: it covered no edge, so no input got past the
/// harness's start-up (the prelude failed on the module, the import crashed) and its buckets
/// are the start-up's, not the package's bugs.
pub fn stalled(run: &ReleaseRun) -> Option<String> {
    (run.cov == 0).then(|| {
        format!(
            "not run: the campaign on {} {} never got past start-up (cov 0 in {} inputs; buckets {:?}{}); see {}",
            run.requirement,
            run.module,
            run.execs,
            run.buckets.iter().map(|b| &b.signature).collect::<Vec<_>>(),
            run.startup
                .as_deref()
                .map(|m| format!("; the harness said: {m}"))
                .unwrap_or_default(),
            run.dir.join("fuzz.log").display()
        )
    })
}

/// The message of a Rust panic in a harness log: the line after `panicked at`.
pub fn panic_message(log: &str) -> Option<String> {
    let mut lines = log.lines();
    lines.find(|l| l.contains("panicked at"))?;
    lines.next().map(|l| l.trim().to_string())
}

/// Campaigns already run in this suite, by (requirement, module, fail-alloc, seed): bugs of one
/// release share them.
type RunCache = BTreeMap<(String, String, bool, u64), ReleaseRun>;

/// `runs` `fuzz-stdlib --module M` campaigns without seeds (seeds 1..=runs) on CPython
/// `version`'s asan build, found in the bench's cache or one of `opts.cpython_caches`; an
/// error (the row's reason) when no cache has that build.
fn cpython_runs(
    bench: &Bench,
    bug: &RealBug,
    version: &str,
    (opts, runs): (&RealOptions, u64),
    done: &mut RunCache,
    log: &mut dyn FnMut(&str),
) -> std::result::Result<Vec<ReleaseRun>, String> {
    let requirement = format!("cpython=={version}");
    let caches: Vec<capisan_build::Cache> = std::iter::once(bench.cache.clone())
        .chain(opts.cpython_caches.iter().map(capisan_build::Cache::at))
        .collect();
    let cache = caches
        .iter()
        .find(|c| capisan_build::Manifest::find(c, Variant::Asan, Some(version)).is_ok())
        .ok_or_else(|| {
            format!(
                "CPython {version} (asan) is not built in {}: `cargo xtask --version {version} --cache DIR build-asan`, then `bench --real --cpython-cache DIR` (Debian's mirror here serves no source of 3.13.16 to 3.13.18 or of 3.14.x: 404)",
                caches
                    .iter()
                    .map(|c| c.root().display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let mut out = Vec::new();
    for seed in 1..=runs {
        let key = (requirement.clone(), bug.module.clone(), false, seed);
        if let Some(r) = done.get(&key) {
            out.push(r.clone());
            continue;
        }
        log(&format!(
            "CPython {version} {}: fuzz-stdlib campaign {seed} of {runs}, {} s, no seeds",
            bug.module, opts.seconds
        ));
        let dir = std::env::temp_dir().join(format!(
            "capisan-bench-real-cpython-{version}-{}-{seed}",
            bug.module
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut o =
            crate::stdlib::StdlibOptions::new(bench.root.clone(), cache.clone(), Variant::Asan);
        (o.modules, o.seconds, o.no_seeds) = (vec![bug.module.clone()], opts.seconds, true);
        (o.out, o.version, o.seed) = (Some(dir.clone()), Some(version.to_string()), Some(seed));
        let started = SystemTime::now();
        let outcome = crate::stdlib::run(&o, &mut |_| {}).map_err(|e| {
            format!(
                "fuzz-stdlib --module {} on CPython {version} failed: {e}",
                bug.module
            )
        })?;
        let Some(m) = outcome.results.into_iter().next() else {
            return Err(format!("fuzz-stdlib ran no campaign on {}", bug.module));
        };
        let buckets = m
            .buckets
            .iter()
            .map(|b| SeenBucket {
                signature: b.signature.clone(),
                seconds: b
                    .artifacts
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                    .filter_map(|t| t.duration_since(started).ok())
                    .map(|d| d.as_secs_f64())
                    .min_by(f64::total_cmp),
            })
            .collect();
        let run = ReleaseRun {
            startup: None,
            requirement: requirement.clone(),
            module: bug.module.clone(),
            fail_alloc: false,
            dir: m.dir,
            buckets,
            exec_per_sec: m.totals.exec_per_sec,
            cov: m.totals.cov,
            execs: m.totals.execs,
        };
        done.insert(key, run.clone());
        out.push(run);
    }
    Ok(out)
}

/// Build `requirement` on the asan variant (or find it cached) and run `runs` campaigns on
/// `module`, reusing those already in `done`.
fn release_runs(
    bench: &Bench,
    requirement: &str,
    module: &str,
    fail_alloc: bool,
    (seconds, runs): (u64, u64),
    done: &mut RunCache,
    log: &mut dyn FnMut(&str),
) -> std::result::Result<Vec<ReleaseRun>, String> {
    let mut out = Vec::new();
    for seed in 1..=runs {
        let key = (
            requirement.to_string(),
            module.to_string(),
            fail_alloc,
            seed,
        );
        if let Some(r) = done.get(&key) {
            out.push(r.clone());
            continue;
        }
        let req = Requirement::parse(requirement).map_err(|e| e.to_string())?;
        let built = build_package(&bench.cache, &bench.asan, &req, &mut |l| log(l))
            .map_err(|e| format!("pkg-build {requirement} failed: {e}"))?;
        let site = built.package().site_packages.clone();
        log(&format!(
            "{requirement} {module}{}: campaign {seed} of {runs}, {} s, no seeds",
            if fail_alloc { " --fail-alloc" } else { "" },
            seconds
        ));
        let run = release_campaign(bench, requirement, &site, module, fail_alloc, seconds, seed)
            .map_err(|e| format!("campaign on {requirement} {module} failed: {e}"))?;
        done.insert(key, run.clone());
        out.push(run);
    }
    Ok(out)
}

/// The real-bug rows (`cargo xtask bench --real`): for each package bug of `bench/real-bugs.toml`
/// (those `opts.only` names), its buggy and fixed release built on the asan variant, `runs`
/// campaigns on the buggy one and one on the fixed one, on the bug's module without seeds (`--fail-alloc` when the bug's signal is
/// fail-alloc); a row per bug with detected / class / culprit / median time-to-detect and the
/// fixed release's buckets, then exec/s and coverage of two packages' campaigns; a run of the
/// whole set starts with the edges at equal time and the zoo crashes' time-to-detect against
/// atheris. CPython bugs run `fuzz-stdlib` on the builds of their buggy and fixed versions
/// found in the caches, and say which is not built. Writes `bench/real.md` and `.json` after
/// each bug; returns the Markdown.
pub fn rows(bench: &Bench, opts: &RealOptions, log: &mut dyn FnMut(&str)) -> super::Result<String> {
    let path = default_path(&bench.root);
    let bugs = load(&path).map_err(|e| BenchError::Unsupported(e.to_string()))?;
    let chosen = select(&bugs, &opts.only).map_err(BenchError::Unsupported)?;
    let (runs, secs) = (opts.runs, opts.seconds);
    let mut t = Table::default();
    let mut data = Vec::new();
    let mut done = RunCache::new();
    t.data(
        "options",
        json!({"seconds": secs, "runs": runs, "only": opts.only}),
    );
    // A run of the whole set starts with the comparison against atheris (~30 min), so a run
    // cut short still has it.
    if opts.only.is_empty() {
        equal_time_rows(bench, &mut t, log)?;
        bench.write(&t, "real")?;
        zoo_vs_atheris_rows(bench, &mut t, log)?;
        bench.write(&t, "real")?;
    }
    for bug in chosen {
        let measure = format!(
            "{} ({} {} -> {}, {}): detected (no seeds, {secs} s, median of {runs}{})",
            bug.id,
            bug.package,
            bug.buggy,
            bug.fixed,
            bug.class.name(),
            if runs < 3 {
                "; the issue asks for 3"
            } else {
                ""
            }
        );
        let (Some(buggy), Some(fixed)) = (bug.buggy_requirement(), bug.fixed_requirement()) else {
            // CPython: fuzz-stdlib on the buggy build; the fixed one when it is built.
            let on_buggy = match cpython_runs(bench, bug, &bug.buggy, (opts, runs), &mut done, log)
            {
                Ok(r) => r,
                Err(why) => {
                    log(&why);
                    let record = json!({"id": bug.id, "not_run": why});
                    not_run_row(bench, &mut t, &mut data, measure, &why, record)?;
                    continue;
                }
            };
            let (on_fixed, fixed_not_run) =
                match cpython_runs(bench, bug, &bug.fixed, (opts, 1), &mut done, log) {
                    Ok(r) => (r, None),
                    Err(why) => (Vec::new(), Some(why)),
                };
            let (value, notes, json) =
                verdict_row(bug, runs, &on_buggy, &on_fixed, fixed_not_run.as_deref());
            t.row(measure, value, notes);
            data.push(json);
            t.data("bugs", json!(data.clone()));
            bench.write(&t, "real")?;
            continue;
        };
        let fail_alloc = bug.signal == Signal::FailAlloc;
        // The buggy release: `runs` campaigns (time-to-detect is their median); the fixed one:
        // one, whose buckets are each investigated by hand (seed 1, shared with a bug for
        // which that release is the buggy one).
        let both = release_runs(
            bench,
            &buggy,
            &bug.module,
            fail_alloc,
            (secs, runs),
            &mut done,
            log,
        )
        .and_then(|b| {
            let f = release_runs(
                bench,
                &fixed,
                &bug.module,
                fail_alloc,
                (secs, 1),
                &mut done,
                log,
            )?;
            Ok((b, f))
        });
        let (on_buggy, on_fixed) = match both {
            Ok(v) => v,
            Err(why) => {
                log(&why);
                let record = json!({"id": bug.id, "not_run": why});
                not_run_row(bench, &mut t, &mut data, measure, &why, record)?;
                continue;
            }
        };
        if let Some(why) = on_buggy.iter().chain(&on_fixed).find_map(stalled) {
            log(&why);
            let record =
                json!({"id": bug.id, "not_run": why, "buggy": on_buggy, "fixed": on_fixed});
            not_run_row(bench, &mut t, &mut data, measure, &why, record)?;
            continue;
        }
        let (value, notes, json) = verdict_row(bug, runs, &on_buggy, &on_fixed, None);
        t.row(measure, value, notes);
        data.push(json);
        t.data("bugs", json!(data.clone()));
        bench.write(&t, "real")?;
    }
    campaign_rows(&mut t, &done, secs);
    bench.write(&t, "real")
}

/// A bug's "not run" row with `why`, its JSON `record`, and the files written again.
fn not_run_row(
    bench: &Bench,
    t: &mut Table,
    data: &mut Vec<serde_json::Value>,
    measure: String,
    why: &str,
    record: serde_json::Value,
) -> super::Result<()> {
    t.row(measure, "not run", why);
    data.push(record);
    t.data("bugs", json!(data.clone()));
    bench.write(t, "real")?;
    Ok(())
}

/// The row of one bug from its campaigns: the value (detected in how many runs, named, median
/// time-to-detect), the notes (signature, class and culprit right, per-run times, buckets on
/// the buggy and fixed release, or why the fixed one was not run) and the JSON record.
fn verdict_row(
    bug: &RealBug,
    runs: u64,
    on_buggy: &[ReleaseRun],
    on_fixed: &[ReleaseRun],
    fixed_not_run: Option<&str>,
) -> (String, String, serde_json::Value) {
    let verdicts: Vec<Verdict> = on_buggy.iter().map(|r| judge(bug, &r.buckets)).collect();
    let found = verdicts.iter().filter(|v| v.detected).count();
    let times: Vec<f64> = verdicts
        .iter()
        .map(|v| match (v.detected, v.seconds) {
            (true, Some(s)) => s,
            _ => f64::INFINITY,
        })
        .collect();
    let all = |f: &dyn Fn(&Verdict) -> bool| verdicts.iter().all(f);
    let class_right = match verdicts
        .iter()
        .filter_map(|v| v.class_right)
        .collect::<Vec<_>>()
    {
        v if v.is_empty() => "no bucket names the function".to_string(),
        v if v.iter().all(|&r| r) => "right".to_string(),
        _ => "WRONG (a bucket naming the function has another class)".to_string(),
    };
    let culprit = if all(&|v| v.culprit_right) {
        "right"
    } else {
        "WRONG or none"
    };
    let mut fixed_sigs: Vec<String> = Vec::new();
    for r in on_fixed {
        for b in &r.buckets {
            if !fixed_sigs.contains(&b.signature) {
                fixed_sigs.push(b.signature.clone());
            }
        }
    }
    let still = on_fixed
        .iter()
        .flat_map(|r| &r.buckets)
        .any(|b| b.class_matches(bug) && b.culprit_matches(bug));
    let named = verdicts.iter().filter(|v| v.culprit_right).count();
    let value = match (found, named) {
        (0, _) => format!("missed (0 of {runs})"),
        (_, 0) => format!(
            "class only in {found} of {runs}, {:.0} s: no bucket of its class names the function",
            super::median(times.clone())
        ),
        _ => format!(
            "found in {found} of {runs} (named in {named}), {:.0} s",
            super::median(times.clone())
        ),
    };
    let mut notes = match verdicts.iter().find_map(|v| v.signature.clone()) {
        Some(sig) => format!("{sig}; class {class_right}; culprit {culprit}"),
        None => format!("why: {}", known_miss_reason(bug)),
    };
    let fixed_text = match fixed_not_run {
        Some(why) => format!("not run: {why}"),
        None => format!("{} bucket(s)", fixed_sigs.len()),
    };
    notes.push_str(&format!(
        "; runs {:?}; buggy buckets {:?}; fixed {}: {fixed_text}{}{}",
        times
            .iter()
            .map(|s| (s * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        on_buggy.iter().map(|r| r.buckets.len()).collect::<Vec<_>>(),
        bug.fixed,
        if fixed_sigs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", shortlist(&fixed_sigs, 6))
        },
        if still {
            " (the bug's own bucket on the fixed release!)"
        } else {
            ""
        },
    ));
    if bug.signal == Signal::FailAlloc {
        notes.push_str("; --fail-alloc");
    }
    let json = json!({
        "id": bug.id, "package": bug.package, "class": bug.class.name(),
        "verdicts": verdicts, "seconds": times.iter().map(|s| s.is_finite().then_some(*s)).collect::<Vec<_>>(),
        "buggy": on_buggy, "fixed": on_fixed, "fixed_signatures": fixed_sigs,
        "bug_on_fixed": still, "fixed_not_run": fixed_not_run,
    });
    (value, notes, json)
}

/// The zoo bugs atheris can see too (a sanitizer report, a fatal error or a crash, not an
/// ownership violation or a leak), with the PYTHONMALLOC each needs.
pub const ZOO_CRASHES: [(&str, Option<&str>); 5] = [
    ("extra_decref", None),
    ("double_free", None),
    ("overflow", None),
    ("alloc_mismatch", Some("malloc_debug")),
    ("borrowed_after_mutation", None),
];

/// The cap of a zoo time-to-detect campaign against atheris, seconds.
pub const ZOO_CAP: u64 = 60;

/// Time-to-detect of [`ZOO_CRASHES`], capisan against atheris on the same ops (atheris' twin
/// harness with the extension call op, only the bug's function callable, the same
/// PYTHONMALLOC), no seeds, 3 seeds each (1 with `--quick`), the order alternated; wall time
/// from launch to capisan's first bucket / atheris' crash, `inf` when not within the cap.
fn zoo_vs_atheris_rows(
    bench: &Bench,
    t: &mut Table,
    log: &mut dyn FnMut(&str),
) -> super::Result<()> {
    let Some((atheris, harness)) =
        atheris_or_row(bench, t, log, "zoo time-to-detect, capisan vs atheris")
    else {
        return Ok(());
    };
    let zoo = bench.root.join("tests/bugzoo/bugzoo.c");
    let ext = bench.cache.root().join("bench").join("bugzoo-asan");
    capisan_build::extension::build_extension(&bench.cache, &bench.asan, &zoo, Some(&ext))?;
    let seeds = if bench.quick { 1 } else { 3 };
    let mut data = Vec::new();
    for (func, pm) in ZOO_CRASHES {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut class = String::new();
        for seed in 1..=seeds {
            let mut run_ours = |log: &mut dyn FnMut(&str)| -> super::Result<()> {
                log(&format!("zoo {func}: capisan, seed {seed}"));
                let dir = std::env::temp_dir().join(format!("capisan-bench-zoo-vs-{func}-{seed}"));
                let spec = super::campaign_spec(&bench.asan, &bench.binary, dir, ZOO_CAP, seed);
                let spec = super::on_zoo(spec, &ext, func, pm);
                let started = std::time::Instant::now();
                let found = super::run_campaign(&spec)?
                    .buckets
                    .first()
                    .map(|b| b.class.clone());
                ours.push(
                    found
                        .as_ref()
                        .map_or(f64::INFINITY, |_| started.elapsed().as_secs_f64()),
                );
                if let Some(c) = found {
                    class = c;
                }
                Ok(())
            };
            let mut run_theirs = |log: &mut dyn FnMut(&str)| -> super::Result<()> {
                log(&format!("zoo {func}: atheris, seed {seed}"));
                let mut env = vec![
                    ("CAPISAN_EXT".to_string(), "bugzoo".to_string()),
                    ("CAPISAN_EXT_PATH".to_string(), ext.display().to_string()),
                    ("CAPISAN_EXT_FUNCS".to_string(), func.to_string()),
                ];
                if let Some(pm) = pm {
                    env.push(("PYTHONMALLOC".to_string(), pm.to_string()));
                }
                let r = atheris.run(&harness, ZOO_CAP, seed, &[], &env)?;
                theirs.push(if r.crashed { r.seconds } else { f64::INFINITY });
                Ok(())
            };
            alternated(seed % 2 == 1, &mut run_ours, &mut run_theirs, log)?;
        }
        let (a, b) = (super::median(ours.clone()), super::median(theirs.clone()));
        t.row(
            format!("time-to-detect {func}, capisan vs atheris (no seeds, median of {seeds}, {ZOO_CAP}-s cap)"),
            format!("{a:.0} s vs {b:.0} s"),
            format!(
                "capisan {:.1?} ({}), atheris {:.1?} (a crash: atheris has no ownership checks or bug classes); the same ops, the zoo's function alone, PYTHONMALLOC={}",
                ours,
                if class.is_empty() { "no bucket" } else { class.as_str() },
                theirs,
                pm.unwrap_or("malloc")
            ),
        );
        data.push(json!({"func": func, "capisan": ours.iter().map(|s| s.is_finite().then_some(*s)).collect::<Vec<_>>(), "atheris": theirs.iter().map(|s| s.is_finite().then_some(*s)).collect::<Vec<_>>(), "class": class}));
        t.data("zoo_vs_atheris", json!(data.clone()));
        bench.write(t, "real")?;
    }
    Ok(())
}

/// The atheris baseline (cached after its first setup) and its harness, or a "not measured"
/// row named `measure` saying why it could not be set up.
fn atheris_or_row(
    bench: &Bench,
    t: &mut Table,
    log: &mut dyn FnMut(&str),
    measure: &str,
) -> Option<(super::atheris::Atheris, PathBuf)> {
    match super::atheris::setup(&bench.asan, &bench.cache, log) {
        Ok(a) => Some((a, bench.root.join("fuzz/atheris/capi_sequences.py"))),
        Err(e) => {
            t.row(
                measure,
                "not measured",
                format!("atheris setup failed: {}", e.to_string().replace('\n', " ")),
            );
            None
        }
    }
}

/// One campaign of a pair, given the progress log.
type OneRun<'a> = dyn FnMut(&mut dyn FnMut(&str)) -> super::Result<()> + 'a;

/// One pair of campaigns, capisan's first when `ours_first`, else atheris' (alternated pairs
/// share out the machine's drift).
fn alternated(
    ours_first: bool,
    ours: &mut OneRun,
    theirs: &mut OneRun,
    log: &mut dyn FnMut(&str),
) -> super::Result<()> {
    if ours_first {
        ours(log)?;
        theirs(log)
    } else {
        theirs(log)?;
        ours(log)
    }
}

/// Checkpoints of the equal-time comparison against atheris, in seconds of wall time.
pub const EQUAL_TIME: [u64; 2] = [30, 120];

/// Coverage against atheris at equal time: capisan's `capi_sequences` and atheris running its
/// Python twin of the C-API ops (the API ops are capisan's alone; the same ASan interpreter,
/// relinked with libFuzzer for atheris), each a 120-s
/// campaign without seeds stopping at its first finding, their edges read at 30 s and 120 s of
/// wall time (start-up included); 3 pairs (1 with `--quick`), the order alternated (capisan
/// first, then atheris first); medians. exec/s is kept as a secondary row.
fn equal_time_rows(bench: &Bench, t: &mut Table, log: &mut dyn FnMut(&str)) -> super::Result<()> {
    let Some((atheris, harness)) =
        atheris_or_row(bench, t, log, "edges at equal time, capisan vs atheris")
    else {
        return Ok(());
    };
    let end = EQUAL_TIME[EQUAL_TIME.len() - 1];
    let rounds = if bench.quick { 1 } else { 3 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_eps, mut their_eps) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let seed = 11 + round;
        let mut run_ours = |log: &mut dyn FnMut(&str)| -> super::Result<()> {
            log(&format!("equal time: capisan, {end} s, seed {seed}"));
            let dir = std::env::temp_dir().join(format!("capisan-bench-equal-time-{seed}"));
            let spec = super::campaign_spec(&bench.asan, &bench.binary, dir, end, seed);
            let (stats, covs) = super::cov_at_checkpoints(&spec, &EQUAL_TIME)?;
            ours.push(covs);
            our_eps.push(stats.exec_per_sec);
            Ok(())
        };
        let mut run_theirs = |log: &mut dyn FnMut(&str)| -> super::Result<()> {
            log(&format!("equal time: atheris, {end} s, seed {seed}"));
            let (stats, covs) = atheris.campaign_at(&harness, end, seed, &EQUAL_TIME)?;
            theirs.push(covs);
            their_eps.push(stats.exec_per_sec);
            Ok(())
        };
        alternated(round % 2 == 0, &mut run_ours, &mut run_theirs, log)?;
    }
    let mut data = Vec::new();
    for (k, at) in EQUAL_TIME.iter().enumerate() {
        let a: Vec<f64> = ours.iter().map(|c| c[k] as f64).collect();
        let b: Vec<f64> = theirs.iter().map(|c| c[k] as f64).collect();
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y.max(1.0)).collect();
        t.row(
            format!("edges after {at} s, capisan vs atheris (median of {rounds} alternated pairs)"),
            format!("{:.0} vs {:.0}", super::median(a.clone()), super::median(b.clone())),
            format!(
                "capisan {a:?}, atheris {b:?}; per-pair ratio {:.2?} (median {:.2}x); libFuzzer's cov: CPython's C edges plus the harness's own (Rust for capisan, Python bytecode for atheris); the same ASan interpreter, no seeds, wall time from launch; atheris runs fuzz/atheris/capi_sequences.py, the Python twin of capisan's 39 C-API ops, while capisan's target also has its API ops (the value vocabulary with evil objects, methods, protocol operations) that the twin does not copy: the tools as shipped, not op for op",
                ratios,
                super::median(ratios.clone())
            ),
        );
        data.push(json!({"seconds": at, "capisan": a, "atheris": b, "ratios": ratios}));
    }
    t.row(
        format!("exec/s over {end} s, capisan vs atheris (secondary)"),
        format!(
            "{:.0} vs {:.0}",
            super::median(our_eps.clone()),
            super::median(their_eps.clone())
        ),
        format!("capisan {our_eps:?}, atheris {their_eps:?}"),
    );
    t.data(
        "equal_time",
        json!({"checkpoints": data, "exec_per_sec": {"capisan": our_eps, "atheris": their_eps}}),
    );
    Ok(())
}

/// "real-package campaign rows": exec/s and coverage of the campaigns (without
/// `--fail-alloc`) of the first two PyPI packages run (by requirement), medians over their
/// runs.
fn campaign_rows(t: &mut Table, done: &RunCache, secs: u64) {
    let mut packages: Vec<(String, String)> = Vec::new();
    for (req, module, fail_alloc, _) in done.keys() {
        let pkg = req.split("==").next().unwrap_or(req).to_string();
        // CPython rows are fuzz-stdlib campaigns, not a package's.
        if pkg != "cpython"
            && !fail_alloc
            && !packages
                .iter()
                .any(|(r, _)| r.split("==").next() == Some(&pkg))
        {
            packages.push((req.clone(), module.clone()));
        }
    }
    let mut data = Vec::new();
    for (req, module) in packages.into_iter().take(2) {
        let runs: Vec<&ReleaseRun> = done
            .iter()
            .filter(|((r, m, f, _), _)| r == &req && m == &module && !f)
            .map(|(_, v)| v)
            .collect();
        let eps: Vec<f64> = runs.iter().map(|r| r.exec_per_sec as f64).collect();
        let cov: Vec<f64> = runs.iter().map(|r| r.cov as f64).collect();
        t.row(
            format!("real-package campaign rows: {req} {module}, {secs}-s fuzz-pkg campaign without seeds"),
            format!(
                "{:.0} exec/s, cov {:.0}",
                super::median(eps.clone()),
                super::median(cov.clone())
            ),
            format!(
                "median of {}; exec/s {eps:?}, cov {cov:?}, inputs {:?}",
                runs.len(),
                runs.iter().map(|r| r.execs).collect::<Vec<_>>()
            ),
        );
        data.push(json!({"requirement": req, "module": module, "exec_per_sec": eps, "cov": cov}));
    }
    t.data("campaigns", json!(data));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> Vec<RealBug> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        load(&default_path(&root)).unwrap()
    }

    #[test]
    fn the_committed_set_parses_and_keeps_the_issue_s_rules() {
        let bugs = committed();
        assert!(bugs.len() >= 15, "only {} bugs", bugs.len());
        let packages = by_package(&bugs);
        assert!(
            packages.len() >= 8,
            "only {} packages: {packages:?}",
            packages.len()
        );
        for b in &bugs {
            assert_ne!(b.buggy, b.fixed, "{}", b.id);
            assert!(!b.evidence.is_empty(), "{}", b.id);
            assert!(BugClass::ALL.contains(&b.class), "{}", b.id);
            assert!(!b.trigger.is_empty() && !b.changelog.is_empty(), "{}", b.id);
            if b.is_cpython() {
                // CPython entries are 3.13.x bugs fixed in a later 3.13.y.
                assert!(
                    b.buggy.starts_with("3.13.") && b.fixed.starts_with("3.13."),
                    "{}",
                    b.id
                );
                assert!(b.buggy_requirement().is_none());
            } else {
                let req = b.buggy_requirement().unwrap();
                assert_eq!(req, format!("{}=={}", b.package, b.buggy));
                assert_ne!(b.build, BuildKind::Cpython, "{}", b.id);
            }
        }
    }

    fn seen(signature: &str, seconds: f64) -> SeenBucket {
        SeenBucket {
            signature: signature.into(),
            seconds: Some(seconds),
        }
    }

    fn bug(id: &str) -> RealBug {
        committed().into_iter().find(|b| b.id == id).unwrap()
    }

    #[test]
    fn culprit_names_are_the_function_s_names_not_its_prose() {
        assert_eq!(
            culprit_names("MultiDict.pop / popone (md_pop_one)"),
            ["MultiDict.pop", "pop", "popone", "md_pop_one"]
        );
        assert_eq!(
            culprit_names("ObjectProxy.__iadd__ and the other 12 in-place operators"),
            ["ObjectProxy.__iadd__", "__iadd__"]
        );
        assert_eq!(
            culprit_names("dumps / encode (indent handling in the encoder buffer sizing)"),
            ["dumps", "encode"]
        );
        for b in committed() {
            assert!(!culprit_names(&b.function).is_empty(), "{}", b.id);
            assert!(!bucket_classes(b.class).is_empty(), "{}", b.id);
        }
    }

    #[test]
    fn judging_a_campaign_takes_class_and_culprit_from_the_signature() {
        let round = bug("wrapt-objectproxy-round-refleak");
        let buckets = [
            seen(
                "exception-state|WraptObjectProxy_round|CallMethod __round__",
                3.0,
            ),
            seen("reference-leak|__round__|CallMethod __round__", 20.0),
            seen("reference-leak|other|CallExt other", 9.0),
        ];
        let v = judge(&round, &buckets);
        assert!(v.detected && v.culprit_right);
        assert_eq!(
            v.class_right,
            Some(false),
            "the exception-state bucket names it"
        );
        assert_eq!(v.seconds, Some(20.0));
        assert_eq!(
            v.signature.as_deref(),
            Some("reference-leak|__round__|CallMethod __round__")
        );
        let v = judge(&round, &buckets[2..]);
        assert!(v.detected && !v.culprit_right);
        assert_eq!((v.class_right, v.seconds), (None, Some(9.0)));
        let v = judge(&round, &[]);
        assert!(!v.detected && v.signature.is_none());
        let null = bug("wrapt-inplace-uninit-other-null");
        for class in ["null-deref", "crash", "exception-state"] {
            let sig = format!("{class}|WraptObjectProxy___iadd__|-");
            assert!(judge(&null, &[seen(&sig, 1.0)]).culprit_right, "{sig}");
        }
        assert!(!judge(&null, &[seen("use-after-free|__iadd__|-", 1.0)]).detected);
    }

    #[test]
    fn a_campaign_that_covered_nothing_says_so_instead_of_judging() {
        let mut run = ReleaseRun {
            requirement: "wrapt==2.1.2".into(),
            module: "wrapt._wrappers".into(),
            fail_alloc: false,
            dir: PathBuf::from("/tmp/c"),
            buckets: vec![seen("crash|?|-", 1.0)],
            exec_per_sec: 1,
            cov: 0,
            execs: 23,
            startup: panic_message(
                "thread '<unnamed>' panicked at harness/src/interp.rs:132:33:\ncapisan: initializing the prelude failed: AttributeError\nstack backtrace:\n",
            ),
        };
        let why = stalled(&run).unwrap();
        assert!(why.contains("never got past start-up") && why.contains("/tmp/c/fuzz.log"));
        assert!(why.contains("the harness said: capisan: initializing the prelude failed"));
        assert_eq!(
            shortlist(&["a".into(), "b".into(), "c".into()], 2),
            "a, b, ... 1 more in real.json"
        );
        run.cov = 2500;
        assert!(stalled(&run).is_none());
    }

    #[test]
    fn only_picks_bugs_by_id_and_names_the_ids_it_does_not_know() {
        let bugs = committed();
        assert_eq!(select(&bugs, &[]).unwrap().len(), bugs.len());
        let one = vec!["ujson-dumps-indent-overflow".to_string()];
        let chosen = select(&bugs, &one).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].id, one[0]);
        let err = select(&bugs, &["nope".to_string()]).unwrap_err();
        assert!(err.contains("\"nope\"") && err.contains("ujson-dumps-indent-overflow"));
        assert!(known_miss_reason(&bug("ujson-loads-bigint-buffer-leak"))
            .contains("raw-memory verdict"));
        assert!(bug("cpython-array-iter-setstate-exhausted").is_cpython());
    }

    #[test]
    fn class_names_are_the_ones_the_file_uses() {
        for class in BugClass::ALL {
            let json = serde_json::Value::String(class.name().into());
            assert_eq!(serde_json::from_value::<BugClass>(json).unwrap(), class);
        }
        assert!(
            serde_json::from_value::<BugClass>(serde_json::Value::String("memory-leak".into()))
                .is_err()
        );
    }

    const ONE: &str = r#"
# a comment
[[bug]]   # trailing comment
id = "x-1"
package = 'x'
module = "x._x"
function = "f"
class = "use-after-free"
signal = "fail-alloc"
buggy = "1.0"
fixed = "1.1"
evidence = [
    "https://example.org/1",  # why
    "https://example.org/2",
]
changelog = "Fix a \"crash\" in f\u00e9\\"
trigger = "x.f([])"
build = "c"
"#;

    #[test]
    fn the_file_reads_strings_escapes_and_optional_fields() {
        let bugs = parse(ONE, Path::new("one.toml")).unwrap();
        assert_eq!(bugs.len(), 1);
        let b = &bugs[0];
        assert_eq!(b.package, "x");
        assert_eq!(b.class, BugClass::UseAfterFree);
        assert_eq!(b.signal, Signal::FailAlloc);
        assert_eq!(b.evidence.len(), 2);
        assert_eq!(b.changelog, "Fix a \"crash\" in f\u{e9}\\");
        assert_eq!(b.fixed_requirement().as_deref(), Some("x==1.1"));
        assert!(b.notes.is_none() && b.verified.is_none());
    }

    #[test]
    fn bad_toml_and_foreign_tables_are_errors_with_their_line() {
        for (text, line) in [
            ("[[bug]]\n\nid = \"a\n", 3),
            ("[[bug]]\nid = \"a\"\nid = \"b\"\n", 3),
            ("[[other]]\nid = \"a\"\n", 0),
            ("[bug]\nid = \"a\"\n", 0),
        ] {
            match parse(text, Path::new("t.toml")) {
                Err(RealBugsError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn entries_that_break_the_rules_are_refused() {
        let unknown_class = ONE.replace("use-after-free", "memory-leak");
        let unknown_field = ONE.replace("build = \"c\"", "build = \"c\"\nseverity = \"high\"");
        for text in [unknown_class, unknown_field] {
            let err = parse(&text, Path::new("t.toml")).unwrap_err();
            assert!(
                matches!(err, RealBugsError::Schema { ref id, .. } if id == "x-1"),
                "{err}"
            );
        }
        let same = ONE.replace("fixed = \"1.1\"", "fixed = \"1.0\"");
        let no_url = ONE.replace(
            "\"https://example.org/1\",  # why\n",
            "\"see the issue\",\n",
        );
        let cpython = ONE.replace("build = \"c\"", "build = \"cpython\"");
        let twice = format!("{ONE}{ONE}");
        for (text, what) in [
            (same, "both 1.0"),
            (no_url, "not an https URL"),
            (cpython, "with build"),
            (twice, "twice"),
        ] {
            let err = parse(&text, Path::new("t.toml")).unwrap_err();
            assert!(
                matches!(err, RealBugsError::Invalid { .. }) && err.to_string().contains(what),
                "{err}"
            );
        }
    }
}
