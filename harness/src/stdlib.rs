//! Fuzzing CPython's own C modules (`cargo xtask fuzz-stdlib`): the variant's shared modules
//! (the extension modules of its build, lib-dynload when installed) and built-in modules
//! (`sys.builtin_module_names`, `builtins` among them, so the builtin types and functions are
//! callables and the methods of their instances are reached by the method ops), one
//! capi_sequences campaign each.
//!
//! Which modules are fuzzed is data: [`TABLE_JSON`] (`stdlib_modules.json`) has one row per
//! module, with the reason for every exclusion and for every callable it leaves out. A module is
//! imported by name (the prelude's `ext_callables` with an empty path), as CPython imports it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::{fuzzbin, BuildError, Cache, Manifest, Variant};
use serde::{Deserialize, Serialize};

use crate::campaign::{self, Bucket, CampaignError, CampaignSpec, Progress, Totals};
use crate::env::HarnessEnv;

/// The module table: which C modules of the standard library are fuzzed, and why not.
pub const TABLE_JSON: &str = include_str!("stdlib_modules.json");

/// The discovery script, run after the prelude in the variant's python (see [`discover`]).
pub const DISCOVER_PY: &str = include_str!("py/stdlib_modules.py");

/// The CPython minor version the table is written for: the newest build of it is fuzzed.
pub const TABLE_VERSION: &str = "3.13";

/// The fuzz target every module's campaign runs.
pub const TARGET: &str = "capi_sequences";

/// Why a stdlib run could not start or finish. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StdlibError {
    /// The module table does not parse (a bad edit of `stdlib_modules.json`).
    #[error("harness/src/stdlib_modules.json: {0}; fix the table")]
    Table(String),
    /// No variant, or the fuzz binary did not build.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A campaign failed.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The discovery script did not run or printed nothing usable.
    #[error("listing the C modules of {python} failed: {message}")]
    Discover { python: PathBuf, message: String },
    /// `--module` names no C module of the variant.
    #[error(
        "{name} is not a C module of CPython {version} ({variant}): its C modules are {known}"
    )]
    UnknownModule {
        name: String,
        version: String,
        variant: Variant,
        known: String,
    },
    /// The chosen CPython build is not of the table's line.
    #[error("{0}")]
    Version(String),
    /// `--module` names a module the table excludes.
    #[error("{name} is excluded from fuzz-stdlib: {why} (harness/src/stdlib_modules.json)")]
    Excluded { name: String, why: String },
    /// The module does not load, or the table skips every callable it has.
    #[error("{name} cannot be fuzzed: {why}")]
    NotFuzzable { name: String, why: String },
    /// The output directory could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, StdlibError>;

/// One row of the table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Row {
    /// Importable module name.
    pub name: String,
    /// Why the module is not fuzzed at all; `None`: it is.
    #[serde(default)]
    pub exclude: Option<String>,
    /// Callables left out (short name -> why); the evil subclasses of a skipped class go too.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
}

/// The module table ([`TABLE_JSON`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Table {
    pub modules: Vec<Row>,
}

impl Table {
    /// The table shipped with capisan.
    pub fn builtin() -> Result<Table> {
        Table::parse(TABLE_JSON)
    }

    /// Parse a table; every exclusion and skip must give a reason, and a name appears once.
    pub fn parse(text: &str) -> Result<Table> {
        let t: Table = serde_json::from_str(text).map_err(|e| StdlibError::Table(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for r in &t.modules {
            if !seen.insert(&r.name) {
                return Err(StdlibError::Table(format!("{} is listed twice", r.name)));
            }
            let empty_skip = r.skip.iter().find(|(_, why)| why.trim().is_empty());
            if r.exclude.as_deref().is_some_and(|w| w.trim().is_empty()) || empty_skip.is_some() {
                return Err(StdlibError::Table(format!(
                    "{}: an exclusion or skip without a reason",
                    r.name
                )));
            }
        }
        Ok(t)
    }

    /// The row of `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.modules.iter().find(|r| r.name == name)
    }
}

/// Where a C module of the variant lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// Compiled into the interpreter (`sys.builtin_module_names`): no file, imported by name.
    Builtin,
    /// A shared object on the variant's `sys.path` (lib-dynload).
    Shared(PathBuf),
}

/// What the variant's python says about its C modules.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Discovered {
    pub version: String,
    pub builtin: Vec<String>,
    pub shared: BTreeMap<String, PathBuf>,
    /// Qualified callables (`mod.name`, evil subclasses `mod.Type~hook~style`) of the modules
    /// asked for, as the harness loads them.
    pub callables: BTreeMap<String, Vec<String>>,
    /// Modules asked for that did not load, with the exception.
    pub errors: BTreeMap<String, String>,
}

impl Discovered {
    /// Every C module, sorted, with where it lives.
    pub fn modules(&self) -> Vec<(String, ModuleKind)> {
        let mut all: Vec<(String, ModuleKind)> = self
            .builtin
            .iter()
            .map(|n| (n.clone(), ModuleKind::Builtin))
            .chain(
                self.shared
                    .iter()
                    .map(|(n, p)| (n.clone(), ModuleKind::Shared(p.clone()))),
            )
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Run [`DISCOVER_PY`] in the variant's python (its run-time environment, so `sys.path` is the
/// fuzz binary's), loading the callables of `modules`.
pub fn discover(manifest: &Manifest, modules: &[String]) -> Result<Discovered> {
    let script = format!("{}\n{}", crate::PRELUDE_PY, DISCOVER_PY);
    let arg = serde_json::to_string(modules).expect("serializable");
    let mut cmd = duct::cmd!(&manifest.python, "-c", script, arg)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    for (k, v) in manifest.env() {
        cmd = cmd.env(k, v);
    }
    let fail = |message: String| StdlibError::Discover {
        python: manifest.python.clone(),
        message,
    };
    let out = cmd.run().map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CAPISAN-STDLIB "))
        .ok_or_else(|| fail(capisan_build::source::tail_lines(&text, 20)))?;
    serde_json::from_str(line).map_err(|e| fail(e.to_string()))
}

/// A module not fuzzed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub name: String,
    pub why: String,
}

/// The modules to fuzz, in order, and those left out (see [`plan`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub fuzz: Vec<(String, ModuleKind)>,
    pub skipped: Vec<Skipped>,
}

/// The modules to fuzz (in order) and those left out. Without `requested`, every C module the
/// table includes; a module the table does not list is left out (add a row). With it, exactly
/// those: an unknown or excluded name is an error (a module missing from the table is fuzzed,
/// with no callable skipped, since it was asked for by name).
pub fn plan(
    table: &Table,
    found: &Discovered,
    variant: Variant,
    requested: &[String],
) -> Result<Plan> {
    let all = found.modules();
    let mut fuzz = Vec::new();
    let mut skipped = Vec::new();
    if requested.is_empty() {
        for (name, kind) in all {
            match table.row(&name) {
                None => skipped.push(Skipped {
                    why: "not in harness/src/stdlib_modules.json: add a row".into(),
                    name,
                }),
                Some(Row {
                    exclude: Some(why), ..
                }) => skipped.push(Skipped {
                    name,
                    why: why.clone(),
                }),
                Some(_) => fuzz.push((name, kind)),
            }
        }
        return Ok(Plan { fuzz, skipped });
    }
    for name in requested {
        let Some((_, kind)) = all.iter().find(|(n, _)| n == name) else {
            return Err(StdlibError::UnknownModule {
                name: name.clone(),
                version: found.version.clone(),
                variant,
                known: all
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let Some(why) = table.row(name).and_then(|r| r.exclude.clone()) {
            return Err(StdlibError::Excluded {
                name: name.clone(),
                why,
            });
        }
        if !fuzz.iter().any(|(n, _)| n == name) {
            fuzz.push((name.clone(), kind.clone()));
        }
    }
    Ok(Plan { fuzz, skipped })
}

/// The callables of `module` to drive (`CAPISAN_EXT_FUNCS`): empty when the table skips none
/// (all of them), else the short names of its callables minus the skipped ones. `None` when
/// nothing is left.
pub fn funcs_for(row: Option<&Row>, module: &str, callables: &[String]) -> Option<Vec<String>> {
    let prefix = format!("{module}.");
    let names: Vec<String> = callables
        .iter()
        .filter(|q| !q.contains('~'))
        .map(|q| q.strip_prefix(&prefix).unwrap_or(q).to_string())
        .collect();
    let skip = row.map(|r| &r.skip);
    let kept: Vec<String> = names
        .iter()
        .filter(|n| !skip.is_some_and(|s| s.contains_key(*n)))
        .cloned()
        .collect();
    if kept.is_empty() {
        return None;
    }
    Some(if kept.len() == names.len() {
        Vec::new()
    } else {
        kept
    })
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StdlibOptions {
    /// The checkout (holds `fuzz/` and `corpora/`).
    pub root: PathBuf,
    pub cache: Cache,
    pub variant: Variant,
    /// Modules to fuzz; empty: every module the table includes.
    pub modules: Vec<String>,
    /// Campaign length of each module, seconds (a whole run takes about that times the number
    /// of modules).
    pub seconds: u64,
    /// libFuzzer fork-mode jobs per campaign.
    pub jobs: usize,
    /// Output directory, one subdirectory per module; default [`default_out`].
    pub out: Option<PathBuf>,
    /// Start from an empty corpus instead of `corpora/capi_sequences/`.
    pub no_seeds: bool,
    /// The CPython build to fuzz, `X.Y.Z` of the table's line; default the newest build of the
    /// line ([`TABLE_VERSION`]).
    pub version: Option<String>,
    /// libFuzzer's seed; default its own (random).
    pub seed: Option<u64>,
    /// Only shard `k` of `n` (1-based) of the planned modules: those at positions `k - 1`,
    /// `k - 1 + n`, … (see [`parse_shard`]); a matrix of `n` jobs covers every module once.
    pub shard: Option<(usize, usize)>,
}

/// `K/N` (1 <= K <= N) as `fuzz-stdlib --shard` takes it.
pub fn parse_shard(text: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("--shard {text:?}: expected K/N with 1 <= K <= N, e.g. 3/8");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The modules of shard `k` of `n` (1-based) of `modules`, in order.
pub fn shard_of<T: Clone>(modules: &[T], (k, n): (usize, usize)) -> Vec<T> {
    modules
        .iter()
        .skip(k.saturating_sub(1))
        .step_by(n.max(1))
        .cloned()
        .collect()
}

impl StdlibOptions {
    /// Every included module for 60 s each, one job, the default output, seeded.
    pub fn new(root: PathBuf, cache: Cache, variant: Variant) -> StdlibOptions {
        StdlibOptions {
            root,
            cache,
            variant,
            modules: Vec::new(),
            seconds: 60,
            jobs: 1,
            out: None,
            no_seeds: false,
            version: None,
            seed: None,
            shard: None,
        }
    }
}

/// `<root>/target/capisan/stdlib-<version>-<variant>`.
pub fn default_out(root: &Path, version: &str, variant: Variant) -> PathBuf {
    root.join("target")
        .join("capisan")
        .join(format!("stdlib-{version}-{variant}"))
}

/// One module's campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleResult {
    pub name: String,
    pub kind: ModuleKind,
    pub dir: PathBuf,
    /// Callables skipped by the table.
    pub skipped_callables: Vec<String>,
    /// Coverage (edges) at the first status line of the campaign.
    pub first_cov: Option<u64>,
    pub totals: Totals,
    pub buckets: Vec<Bucket>,
}

/// A whole run; written as `stdlib.json` in the output directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StdlibOutcome {
    pub version: String,
    pub variant: Variant,
    pub out: PathBuf,
    pub results: Vec<ModuleResult>,
    pub skipped: Vec<Skipped>,
}

/// Coverage at the first status line of a campaign directory's `progress.jsonl`.
pub fn first_cov(dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(dir.join("progress.jsonl")).ok()?;
    let p: Progress = serde_json::from_str(text.lines().next()?).ok()?;
    Some(p.cov)
}

/// Build the fuzz target against the newest [`TABLE_VERSION`] build of the variant and run one
/// campaign per module; `say` gets the progress lines a user sees.
pub fn run(opts: &StdlibOptions, say: &mut dyn FnMut(&str)) -> Result<StdlibOutcome> {
    let table = Table::builtin()?;
    let version = opts.version.as_deref().unwrap_or(TABLE_VERSION);
    if !capisan_build::versions::is_of_line(version, TABLE_VERSION) {
        return Err(StdlibError::Version(format!(
            "the module table is for CPython {TABLE_VERSION}; {version} is not of that line"
        )));
    }
    let manifest = Manifest::find(&opts.cache, opts.variant, Some(version))?;
    let listed = discover(&manifest, &[])?;
    let Plan {
        fuzz: modules,
        skipped,
    } = plan(&table, &listed, opts.variant, &opts.modules)?;
    let planned = modules.len();
    let modules = match opts.shard {
        Some(shard) => {
            let mine = shard_of(&modules, shard);
            say(&format!(
                "shard {}/{}: {} of the {planned} planned module(s)",
                shard.0,
                shard.1,
                mine.len()
            ));
            mine
        }
        None => modules,
    };
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let found = discover(&manifest, &names)?;
    say(&format!(
        "CPython {} ({}): {} module(s) to fuzz for {} s each, {} left out",
        found.version,
        opts.variant,
        modules.len(),
        opts.seconds,
        skipped.len()
    ));
    say(&format!(
        "building fuzz target {TARGET} against the {} variant",
        opts.variant
    ));
    let binary = fuzzbin::build_fuzz_binary(&opts.root, TARGET, &manifest)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| default_out(&opts.root, &found.version, opts.variant));
    let mut outcome = StdlibOutcome {
        version: found.version.clone(),
        variant: opts.variant,
        out: out.clone(),
        results: Vec::new(),
        skipped,
    };
    for (name, kind) in modules {
        let row = table.row(&name);
        let callables = found.callables.get(&name).cloned().unwrap_or_default();
        let not_fuzzable = |why: String| StdlibError::NotFuzzable {
            name: name.clone(),
            why,
        };
        let funcs = match found.errors.get(&name) {
            Some(e) => Err(not_fuzzable(format!("it does not load: {e}"))),
            None => funcs_for(row, &name, &callables)
                .ok_or_else(|| not_fuzzable("no callable is left after the table's skips".into())),
        };
        let funcs = match funcs {
            Ok(f) => f,
            // With --module, say so; in a whole run, leave it out and go on.
            Err(e) if opts.modules.is_empty() => {
                outcome.skipped.push(Skipped {
                    name: name.clone(),
                    why: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        say(&format!("== fuzzing {name} for {} s ==", opts.seconds));
        let dir = out.join(&name);
        let spec = CampaignSpec {
            target: TARGET.into(),
            manifest: manifest.clone(),
            binary: binary.clone(),
            dir: dir.clone(),
            harness: HarnessEnv {
                ext: Some(name.clone()),
                ext_funcs: funcs,
                ..HarnessEnv::default()
            },
            pythonmalloc: None,
            seconds: opts.seconds,
            seed: opts.seed,
            jobs: opts.jobs,
            stop_at_first_finding: false,
            seeds: if opts.no_seeds {
                vec![]
            } else {
                vec![opts.root.join("corpora").join(TARGET)]
            },
            libfuzzer: Vec::new(),
            spec_file: None,
        };
        let done = campaign::run(&spec, |st| {
            say(&format!(
                "{name} {:>4}s  inputs {}  exec/s {}  cov {}  corpus {}  buckets {}",
                st.elapsed.as_secs(),
                st.execs,
                st.exec_per_sec,
                st.cov,
                st.corpus,
                st.buckets
            ))
        })?;
        say(campaign::summary_text(&done).trim_end());
        outcome.results.push(ModuleResult {
            name: name.clone(),
            kind,
            first_cov: first_cov(&dir),
            totals: done.totals(),
            buckets: done.buckets,
            skipped_callables: row
                .map(|r| r.skip.keys().cloned().collect())
                .unwrap_or_default(),
            dir,
        });
        let path = out.join("stdlib.json");
        fs::write(
            &path,
            serde_json::to_vec_pretty(&outcome).expect("serializable"),
        )
        .map_err(|source| StdlibError::Io { path, source })?;
    }
    Ok(outcome)
}

/// The final summary: one line per module (coverage first -> last, inputs, buckets), the
/// buckets, and the modules left out with why.
pub fn summary_text(o: &StdlibOutcome) -> String {
    let mut s = format!(
        "== fuzz-stdlib: CPython {} ({}), {} module(s), {} ==\n",
        o.version,
        o.variant,
        o.results.len(),
        o.out.display()
    );
    for r in &o.results {
        let kind = match r.kind {
            ModuleKind::Builtin => "built-in",
            ModuleKind::Shared(_) => "shared",
        };
        s.push_str(&format!(
            "  {:<20} {kind:<8} cov {:>6} -> {:<6} edges  inputs {:>8}  buckets {}\n",
            r.name,
            r.first_cov.map_or("?".into(), |c| c.to_string()),
            r.totals.cov,
            r.totals.execs,
            r.buckets.len()
        ));
    }
    for r in o.results.iter().filter(|r| !r.buckets.is_empty()) {
        s.push_str(&format!("== {} buckets ==\n", r.name));
        s.push_str(&campaign::buckets_text(&r.buckets));
    }
    if !o.skipped.is_empty() {
        s.push_str("== left out ==\n");
        for k in &o.skipped {
            s.push_str(&format!("  {:<20} {}\n", k.name, k.why));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Discovered {
        Discovered {
            version: "3.13.5".into(),
            builtin: vec!["itertools".into(), "posix".into(), "builtins".into()],
            shared: [
                ("_struct".to_string(), PathBuf::from("/d/_struct.so")),
                ("_newmod".to_string(), PathBuf::from("/d/_newmod.so")),
            ]
            .into(),
            ..Discovered::default()
        }
    }

    #[test]
    fn shards_of_a_matrix_cover_every_module_once() {
        assert_eq!(parse_shard("3/8"), Ok((3, 8)));
        assert_eq!(parse_shard(" 1 / 1 "), Ok((1, 1)));
        for bad in ["0/8", "9/8", "3", "a/b", "3/0", ""] {
            let e = parse_shard(bad).unwrap_err();
            assert!(e.contains("K/N"), "{bad}: {e}");
        }
        let modules: Vec<u32> = (0..23).collect();
        let mut seen: Vec<u32> = (1..=5).flat_map(|k| shard_of(&modules, (k, 5))).collect();
        seen.sort_unstable();
        assert_eq!(seen, modules);
        assert_eq!(shard_of(&modules, (2, 5)), vec![1, 6, 11, 16, 21]);
        assert_eq!(shard_of(&modules, (1, 1)), modules);
    }

    #[test]
    fn the_shipped_table_parses_and_gives_every_exclusion_a_reason() {
        let t = Table::builtin().unwrap();
        for name in ["_struct", "itertools", "builtins", "_testcapi", "posix"] {
            assert!(t.row(name).is_some(), "{name} has no row");
        }
        for name in [
            "_testcapi",
            "_testinternalcapi",
            "posix",
            "_signal",
            "faulthandler",
        ] {
            assert!(t.row(name).unwrap().exclude.is_some(), "{name} is fuzzed");
        }
        assert!(t.row("builtins").unwrap().skip.contains_key("input"));
    }

    #[test]
    fn a_table_without_reasons_or_with_duplicates_is_refused() {
        let no_reason = r#"{"modules": [{"name": "a", "exclude": " "}]}"#;
        assert!(Table::parse(no_reason).is_err());
        let skip = r#"{"modules": [{"name": "a", "skip": {"f": ""}}]}"#;
        assert!(Table::parse(skip).is_err());
        let twice = r#"{"modules": [{"name": "a"}, {"name": "a"}]}"#;
        assert!(Table::parse(twice).is_err());
    }

    #[test]
    fn a_whole_run_fuzzes_included_modules_and_says_why_others_are_left_out() {
        let t = Table::builtin().unwrap();
        let Plan { fuzz, skipped } = plan(&t, &found(), Variant::Asan, &[]).unwrap();
        let names: Vec<&str> = fuzz.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["_struct", "builtins", "itertools"]);
        assert_eq!(fuzz[1].1, ModuleKind::Builtin);
        assert!(skipped
            .iter()
            .any(|s| s.name == "posix" && s.why.contains("kill")));
        assert!(skipped
            .iter()
            .any(|s| s.name == "_newmod" && s.why.contains("add a row")));
    }

    #[test]
    fn requested_modules_must_exist_and_not_be_excluded() {
        let t = Table::builtin().unwrap();
        let req = |m: &str| plan(&t, &found(), Variant::Asan, &[m.to_string()]);
        assert_eq!(req("_struct").unwrap().fuzz.len(), 1);
        assert!(matches!(req("posix"), Err(StdlibError::Excluded { .. })));
        let e = req("nosuch").unwrap_err().to_string();
        assert!(e.contains("_struct") && e.contains("itertools"), "{e}");
        assert_eq!(req("_newmod").unwrap().fuzz.len(), 1, "asked for by name");
    }

    #[test]
    fn skipped_callables_and_their_subclasses_are_left_out() {
        let t = Table::builtin().unwrap();
        let c: Vec<String> = [
            "itertools.chain",
            "itertools.count",
            "itertools.chain~x~raise",
        ]
        .map(String::from)
        .into();
        let row = t.row("itertools");
        assert_eq!(funcs_for(row, "itertools", &c).unwrap(), ["chain"]);
        assert_eq!(
            funcs_for(None, "itertools", &c).unwrap(),
            Vec::<String>::new(),
            "nothing skipped: all"
        );
        let only_skipped: Vec<String> = vec!["itertools.count".into()];
        assert!(funcs_for(row, "itertools", &only_skipped).is_none());
    }
}
