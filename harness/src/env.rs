//! The `CAPISAN_*` environment protocol between the side that starts a harness process (xtask,
//! tests, campaigns, reproducers) and the harness inside it. One type, one list of names: the
//! starting side builds a [`HarnessEnv`] and calls [`HarnessEnv::to_env`]; the harness calls
//! [`HarnessEnv::from_env`]. A name is spelled only here.

use std::path::PathBuf;
use std::time::Duration;

/// Names of the variables, for the few callers that must set or clear one alone.
pub mod names {
    /// Importable (possibly dotted) name of the extension module under test.
    pub const EXT: &str = "CAPISAN_EXT";
    /// Directory put first on `sys.path` before importing [`EXT`] (a build dir or site-packages).
    pub const EXT_PATH: &str = "CAPISAN_EXT_PATH";
    /// Comma-separated callables of the extension to drive (all public ones when empty).
    pub const EXT_FUNCS: &str = "CAPISAN_EXT_FUNCS";
    /// Argument kinds by position, by callable short name, as JSON (`{"f": ["int", "str"]}`,
    /// from a spec file, see `capisan::spec`); the prelude replaces an argument of another
    /// kind by a vocabulary value of that kind.
    pub const EXT_ARGS: &str = "CAPISAN_EXT_ARGS";
    /// `0` turns the per-op property checks off.
    pub const CHECKS: &str = "CAPISAN_CHECKS";
    /// With the checks on, `0` turns off only the GC and raw-memory checks of what calls
    /// return (the GC audit of returned objects, the raw-memory leak verdict, the collection
    /// after a failing call), to measure their cost; default on.
    pub const GC_RAW: &str = "CAPISAN_GC_RAW";
    /// `0` turns the repeated extension calls (stage 1 of the leak verdict) off.
    pub const EXT_REPEATS: &str = "CAPISAN_EXT_REPEATS";
    /// `0` turns the end-of-sequence total-refcount check off.
    pub const TOTALS: &str = "CAPISAN_TOTALS";
    /// `1` runs a full collection after every input.
    pub const COLLECT: &str = "CAPISAN_COLLECT";
    /// Directory where non-fatal findings are recorded (one subdirectory a bucket); when set,
    /// the fuzz target keeps going after them instead of aborting.
    pub const FINDINGS: &str = "CAPISAN_FINDINGS";
    /// File of known bucket signatures (one a line, `#` comments): hits are counted, not reported.
    pub const KNOWN: &str = "CAPISAN_KNOWN";
    /// File rewritten before every op with the resolved op list (for `repro`).
    pub const DUMP_RESOLVED: &str = "CAPISAN_DUMP_RESOLVED";
    /// Allocation-failure injection (see [`super::FailAlloc`]): `1` on, `idle` the allocator
    /// wrappers installed but never armed from raw inputs (to measure their cost), `0` off.
    pub const FAIL_ALLOC: &str = "CAPISAN_FAIL_ALLOC";
    /// File listing the inputs to replay, one path a line; when set, the fuzz binary (or
    /// `capisan-replay`) replays them and exits instead of fuzzing.
    pub const REPLAY_LIST: &str = "CAPISAN_REPLAY_LIST";
    /// Where the replay writes one JSON outcome a line (default `<list>.results.jsonl`).
    pub const REPLAY_OUT: &str = "CAPISAN_REPLAY_OUT";
    /// Per-input timeout of the replay, seconds (default 10).
    pub const REPLAY_TIMEOUT: &str = "CAPISAN_REPLAY_TIMEOUT";
    /// Per-input RSS limit of the replay, MB (default 2048).
    pub const REPLAY_RSS_MB: &str = "CAPISAN_REPLAY_RSS_MB";
    /// Inputs per forked replay child (default 100, at least 1).
    pub const REPLAY_BATCH: &str = "CAPISAN_REPLAY_BATCH";
    /// Unix time (seconds) at which a fork-mode campaign's fuzzing ends: no job libFuzzer
    /// spawns is given time past it (see `capisan::exec::fork_job_budget`).
    pub const CAMPAIGN_END: &str = "CAPISAN_CAMPAIGN_END";
}

/// Everything a harness process reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarnessEnv {
    /// See [`names::EXT`].
    pub ext: Option<String>,
    /// See [`names::EXT_PATH`].
    pub ext_path: Option<PathBuf>,
    /// See [`names::EXT_FUNCS`].
    pub ext_funcs: Vec<String>,
    /// See [`names::EXT_ARGS`]; empty: none.
    pub ext_args: String,
    /// See [`names::CHECKS`]; default on.
    pub checks: bool,
    /// See [`names::EXT_REPEATS`]; default on.
    pub ext_repeats: bool,
    /// See [`names::TOTALS`]; default on.
    pub totals: bool,
    /// See [`names::COLLECT`]; default off.
    pub collect: bool,
    /// See [`names::FINDINGS`].
    pub findings: Option<PathBuf>,
    /// See [`names::KNOWN`].
    pub known: Option<PathBuf>,
    /// See [`names::DUMP_RESOLVED`].
    pub dump_resolved: Option<PathBuf>,
    /// See [`names::FAIL_ALLOC`]; default off.
    pub fail_alloc: FailAlloc,
    /// See [`names::GC_RAW`]; default on.
    pub gc_raw: bool,
}

/// Allocation-failure injection in a harness process ([`names::FAIL_ALLOC`]). In every mode a
/// JSON op list's `FailNext` ops are honoured (the wrappers are installed when one first runs),
/// so a finding replays as it was found; the mode decides what raw fuzzer bytes decode to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailAlloc {
    /// Raw inputs never arm a failure.
    #[default]
    Off,
    /// The allocator wrappers are installed at start-up but raw inputs never arm them: the
    /// cost of the idle wrappers (the bench row).
    Idle,
    /// Raw inputs arm failures often (`--fail-alloc`).
    On,
}

impl FailAlloc {
    fn word(self) -> &'static str {
        match self {
            FailAlloc::Off => "0",
            FailAlloc::Idle => "idle",
            FailAlloc::On => "1",
        }
    }

    fn parse(v: Option<String>) -> FailAlloc {
        match v.as_deref() {
            Some("1") => FailAlloc::On,
            Some("idle") => FailAlloc::Idle,
            _ => FailAlloc::Off,
        }
    }
}

impl Default for HarnessEnv {
    fn default() -> Self {
        HarnessEnv {
            ext: None,
            ext_path: None,
            ext_funcs: Vec::new(),
            ext_args: String::new(),
            checks: true,
            ext_repeats: true,
            totals: true,
            collect: false,
            findings: None,
            known: None,
            dump_resolved: None,
            fail_alloc: FailAlloc::Off,
            gc_raw: true,
        }
    }
}

fn flag(v: Option<String>, default: bool) -> bool {
    v.map_or(default, |v| v != "0")
}

fn bit(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

impl HarnessEnv {
    /// Read the protocol through `get` (a lookup by name; [`HarnessEnv::from_env`] passes
    /// `std::env::var`). Unset or empty strings are `None`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> HarnessEnv {
        let d = HarnessEnv::default();
        let text = |k: &str| get(k).filter(|v| !v.is_empty());
        HarnessEnv {
            ext: text(names::EXT),
            ext_path: text(names::EXT_PATH).map(PathBuf::from),
            ext_funcs: text(names::EXT_FUNCS)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            ext_args: text(names::EXT_ARGS).unwrap_or_default(),
            checks: flag(get(names::CHECKS), d.checks),
            ext_repeats: flag(get(names::EXT_REPEATS), d.ext_repeats),
            totals: flag(get(names::TOTALS), d.totals),
            collect: flag(get(names::COLLECT), d.collect),
            findings: text(names::FINDINGS).map(PathBuf::from),
            known: text(names::KNOWN).map(PathBuf::from),
            dump_resolved: text(names::DUMP_RESOLVED).map(PathBuf::from),
            fail_alloc: FailAlloc::parse(get(names::FAIL_ALLOC)),
            gc_raw: flag(get(names::GC_RAW), d.gc_raw),
        }
    }

    /// The protocol as this process's environment sets it.
    pub fn from_env() -> HarnessEnv {
        HarnessEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// The variables to set in a child so that its [`HarnessEnv::from_env`] equals `self`.
    /// Defaults are written out too, so a child never inherits a stale value from its parent.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let opt = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string());
        let mut env = vec![
            (names::CHECKS, bit(self.checks)),
            (names::EXT_REPEATS, bit(self.ext_repeats)),
            (names::TOTALS, bit(self.totals)),
            (names::COLLECT, bit(self.collect)),
            (names::EXT_FUNCS, self.ext_funcs.join(",")),
            (names::EXT_ARGS, self.ext_args.clone()),
            (names::EXT, self.ext.clone().unwrap_or_default()),
            (names::EXT_PATH, opt(&self.ext_path).unwrap_or_default()),
            (names::FINDINGS, opt(&self.findings).unwrap_or_default()),
            (names::KNOWN, opt(&self.known).unwrap_or_default()),
            (
                names::DUMP_RESOLVED,
                opt(&self.dump_resolved).unwrap_or_default(),
            ),
            (names::FAIL_ALLOC, self.fail_alloc.word().to_string()),
            (names::GC_RAW, bit(self.gc_raw)),
        ];
        env.sort();
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// The replay request a harness process reads from its environment (see
/// `capisan::replay::maybe_replay`): present only when [`names::REPLAY_LIST`] is set.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayEnv {
    /// See [`names::REPLAY_LIST`].
    pub list: PathBuf,
    /// See [`names::REPLAY_OUT`].
    pub out: PathBuf,
    /// See [`names::REPLAY_TIMEOUT`].
    pub timeout: Duration,
    /// See [`names::REPLAY_RSS_MB`].
    pub rss_mb: u64,
    /// See [`names::REPLAY_BATCH`].
    pub batch: usize,
}

impl ReplayEnv {
    /// A request for `list` with the default limits and output path.
    pub fn new(list: PathBuf) -> ReplayEnv {
        ReplayEnv {
            out: PathBuf::from(format!("{}.results.jsonl", list.display())),
            list,
            timeout: Duration::from_secs(10),
            rss_mb: 2048,
            batch: 100,
        }
    }

    /// Read the request through `get`; `None` when no list is named. Unparsable numbers fall
    /// back to the defaults of [`ReplayEnv::new`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<ReplayEnv> {
        let list = get(names::REPLAY_LIST).filter(|v| !v.is_empty())?;
        let d = ReplayEnv::new(PathBuf::from(list));
        let num = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
        Some(ReplayEnv {
            out: get(names::REPLAY_OUT)
                .filter(|v| !v.is_empty())
                .map_or(d.out.clone(), PathBuf::from),
            timeout: num(names::REPLAY_TIMEOUT)
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map_or(d.timeout, Duration::from_secs_f64),
            rss_mb: get(names::REPLAY_RSS_MB)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.rss_mb),
            batch: get(names::REPLAY_BATCH)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(d.batch)
                .max(1),
            list: d.list,
        })
    }

    /// The request as this process's environment sets it.
    pub fn from_env() -> Option<ReplayEnv> {
        ReplayEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// The variables to set in a child so that its [`ReplayEnv::from_env`] equals `self`.
    pub fn to_env(&self) -> Vec<(String, String)> {
        [
            (names::REPLAY_LIST, self.list.display().to_string()),
            (names::REPLAY_OUT, self.out.display().to_string()),
            (
                names::REPLAY_TIMEOUT,
                self.timeout.as_secs_f64().to_string(),
            ),
            (names::REPLAY_RSS_MB, self.rss_mb.to_string()),
            (names::REPLAY_BATCH, self.batch.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn round_trips_through_the_environment_text() {
        let e = HarnessEnv {
            ext: Some("pkg._speedups".into()),
            ext_path: Some("/v/site-packages".into()),
            ext_funcs: vec!["a".into(), "b".into()],
            ext_args: r#"{"a": ["int"]}"#.into(),
            checks: false,
            ext_repeats: true,
            totals: false,
            collect: true,
            findings: Some("/c/findings".into()),
            known: None,
            dump_resolved: Some("/tmp/r.json".into()),
            fail_alloc: FailAlloc::On,
            gc_raw: false,
        };
        let map: HashMap<String, String> = e.to_env().into_iter().collect();
        assert_eq!(map["CAPISAN_EXT"], "pkg._speedups");
        assert_eq!(HarnessEnv::from_lookup(|k| map.get(k).cloned()), e);
    }

    #[test]
    fn unset_means_the_defaults() {
        assert_eq!(HarnessEnv::from_lookup(|_| None), HarnessEnv::default());
        let d: HashMap<String, String> = HarnessEnv::default().to_env().into_iter().collect();
        assert_eq!(
            HarnessEnv::from_lookup(|k| d.get(k).cloned()),
            HarnessEnv::default()
        );
    }

    #[test]
    fn replay_request_round_trips_and_is_absent_without_a_list() {
        assert_eq!(ReplayEnv::from_lookup(|_| None), None);
        let r = ReplayEnv {
            list: "/w/inputs.txt".into(),
            out: "/w/results.jsonl".into(),
            timeout: Duration::from_millis(2500),
            rss_mb: 512,
            batch: 1,
        };
        let map: HashMap<String, String> = r.to_env().into_iter().collect();
        assert_eq!(ReplayEnv::from_lookup(|k| map.get(k).cloned()), Some(r));
        let bare = ReplayEnv::from_lookup(|k| (k == names::REPLAY_LIST).then(|| "/l".into()));
        assert_eq!(bare, Some(ReplayEnv::new("/l".into())));
    }
}
