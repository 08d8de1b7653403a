//! Allocation-failure sweeps (`cargo xtask oom-sweep`), like a failmalloc run: re-run one input
//! (or one call) with the failure moved to allocation 1, 2, … K of one extension call, where K is
//! how many allocations the call makes (counted by the allocator wrappers with nothing failing),
//! and report each distinct bucket with the allocations that lead to it.
//!
//! Every point of the sweep is a JSON op list (`nth-<N>.json` in the sweep directory, beside a
//! `campaign.json`), so a bucket's input can be minimized, replayed and turned into a
//! reproducer like any campaign finding. The points run in forked children of one harness
//! process ([`crate::replay`]), one fresh fork each, so no point sees state another left.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::campaign::{io, Campaign, CampaignError};
use crate::detect::{self, Finding};
use crate::env::{FailAlloc, HarnessEnv, ReplayEnv};
use crate::ops::{Op, OpSeq, Slot};
use crate::replay::{Outcome, Status};

/// Why a sweep could not run. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A file of the sweep could not be read or written, or running the harness failed.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The input has no extension call to sweep.
    #[error("{0} makes no extension call (CallExt): nothing to sweep; sweep an input of a fuzz-ext campaign, or use --call")]
    NoCall(String),
    /// The counting run did not report the call's allocations.
    #[error("the counting run (no allocation failing) did not finish the call at op #{index}, so its allocations are unknown; what it printed ends with:\n{tail}")]
    NotCounted { index: usize, tail: String },
    /// `--call` is not `MODULE.FUNC` and a JSON array of arguments.
    #[error("{0}")]
    BadCall(String),
    /// A `--call` argument that the op vocabulary cannot build.
    #[error("argument {0} of --call: only numbers, strings (up to 16 characters) and null are supported")]
    BadArgument(String),
}

type Result<T> = std::result::Result<T, SweepError>;

/// How to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Sweep at most this many allocations (a call that makes more is swept up to here).
    pub max_allocations: u64,
    /// Fail every allocation from N on (until the call returns), instead of the Nth alone.
    pub persistent: bool,
    /// Index (in the input's ops) of the extension call to sweep; default: the last `CallExt`.
    pub call_index: Option<usize>,
    /// Per-point timeout.
    pub timeout: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            max_allocations: 500,
            persistent: false,
            call_index: None,
            timeout: Duration::from_secs(20),
        }
    }
}

/// One distinct outcome of the sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepBucket {
    pub signature: String,
    pub class: String,
    /// The allocations whose failure leads here, ascending.
    pub nths: Vec<u64>,
    /// Whether the input shows this bucket with nothing failing too (not an error-path bug).
    pub without_failure: bool,
    /// The JSON op list of the first of `nths` (replayable, minimizable).
    pub input: PathBuf,
    pub finding: Finding,
}

/// What a sweep found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepReport {
    /// The swept call, as the op log shows it.
    pub call: String,
    /// Allocations the call makes with nothing failing.
    pub allocations: u64,
    /// Allocations swept (1..=swept).
    pub swept: u64,
    /// Whether each point failed every allocation from N on (else the Nth alone).
    pub persistent: bool,
    pub buckets: Vec<SweepBucket>,
    /// Points that ran clean.
    pub clean: Vec<u64>,
    /// Points that hung or blew up (their status and N).
    pub other: Vec<(u64, String)>,
    /// The sweep directory (points, logs, `campaign.json`, `sweep.json`).
    pub dir: PathBuf,
}

/// Decode a campaign input as the campaign's harness does (its allocation-failure mode
/// decides what raw bytes mean; see [`OpSeq::decode`]).
pub fn decode_for(c: &Campaign, bytes: &[u8]) -> OpSeq {
    OpSeq::decode(bytes, c.harness_env().fail_alloc == FailAlloc::On)
}

/// The index of the call to sweep in `ops` and `ops` without the `FailNext` ops that armed it.
fn target_call(ops: &[Op], wanted: Option<usize>) -> Option<(usize, Vec<Op>)> {
    let is_call = |o: &Op| matches!(o, Op::CallExt { .. });
    let idx = match wanted {
        Some(i) => (i < ops.len() && is_call(&ops[i])).then_some(i)?,
        None => ops.iter().rposition(is_call)?,
    };
    let prev = ops[..idx].iter().rposition(is_call).map_or(0, |p| p + 1);
    let mut out = Vec::with_capacity(ops.len());
    let mut target = idx;
    for (i, op) in ops.iter().enumerate() {
        if (prev..idx).contains(&i) && matches!(op, Op::FailNext { .. }) {
            target -= 1;
            continue;
        }
        out.push(op.clone());
    }
    Some((target, out))
}

/// `ops` with a `FailNext` armed for the call at `idx`.
fn armed(ops: &[Op], idx: usize, nth: u16, count: u8) -> Vec<Op> {
    let mut v = ops.to_vec();
    v.insert(idx, Op::FailNext { nth, count });
    v
}

/// The allocation count the harness printed for the armed call at op `index`
/// (`==capisan== fail-alloc: op #<index>: ...; the call made K allocation(s), ...`).
fn counted(text: &str, index: usize) -> Option<u64> {
    let head = format!("==capisan== fail-alloc: op #{index}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|rest| rest.split("the call made ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|k| k.parse().ok())
}

/// Sweep the call of campaign `c` that `input` (a campaign input, raw or JSON) makes, writing
/// the points into `dir`.
pub fn sweep_input(
    c: &Campaign,
    input: &Path,
    dir: &Path,
    opts: &SweepOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SweepReport> {
    let bytes = io(input, fs::read(input))?;
    let ops = decode_for(c, &bytes).0;
    sweep_ops(c, &ops, dir, opts, progress)
}

/// Sweep one call: `ops` are a sequence of campaign `c` (the last `CallExt`, or the one
/// `opts.call_index` names, is swept); the points, their logs and a copy of `c` go to `dir`.
/// `progress(done, total)` hears each step.
pub fn sweep_ops(
    c: &Campaign,
    ops: &[Op],
    dir: &Path,
    opts: &SweepOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SweepReport> {
    let Some((idx, base)) = target_call(ops, opts.call_index) else {
        return Err(SweepError::NoCall(format!("the input ({} ops)", ops.len())));
    };
    io(dir, fs::create_dir_all(dir))?;
    let meta = dir.join("campaign.json");
    io(
        &meta,
        fs::write(
            &meta,
            serde_json::to_string_pretty(c).expect("serializable"),
        ),
    )?;
    let write = |name: &str, ops: &[Op]| -> Result<PathBuf> {
        let p = dir.join(name);
        io(
            &p,
            fs::write(&p, serde_json::to_vec(ops).expect("ops serialize")),
        )?;
        Ok(p)
    };
    // Counting run: the wrappers armed for an allocation the call never reaches.
    let count_input = write("count.json", &armed(&base, idx, u16::MAX, 1))?;
    let dump = dir.join("count.resolved.json");
    let (_, text) = c.run_once(
        &count_input,
        &[(crate::env::names::DUMP_RESOLVED, dump.display().to_string())],
    )?;
    // The armed call runs as op idx + 1 (after its FailNext).
    let allocations = counted(&text, idx + 1).ok_or_else(|| SweepError::NotCounted {
        index: idx + 1,
        tail: capisan_build::source::tail_lines(&text, 20),
    })?;
    let baseline: Vec<String> = detect::parse(&text)
        .iter()
        .map(|f| f.signature().0)
        .collect();
    // The call as the harness resolved it, with its callee's name.
    let call = fs::read(&dump)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::ops::Resolved>(&b).ok())
        .and_then(|r| r.ops.get(idx + 1).map(|op| op.describe(&r.ext)))
        .unwrap_or_else(|| base[idx].to_string());
    let swept = allocations
        .min(opts.max_allocations)
        .min(u64::from(u16::MAX) - 1);
    let count = if opts.persistent { 0 } else { 1 };
    let mut points = Vec::new();
    for n in 1..=swept {
        points.push((
            n,
            write(
                &format!("nth-{n}.json"),
                &armed(&base, idx, n as u16, count),
            )?,
        ));
    }
    progress(0, swept);
    let outcomes = run_points(c, dir, &points, opts.timeout)?;
    let mut buckets: BTreeMap<String, SweepBucket> = BTreeMap::new();
    let (mut clean, mut other) = (Vec::new(), Vec::new());
    for (k, ((n, input), o)) in points.iter().zip(&outcomes).enumerate() {
        progress(k as u64 + 1, swept);
        match o.status {
            Status::Pass => clean.push(*n),
            Status::Crash => {
                let text = o
                    .log
                    .as_ref()
                    .and_then(|l| fs::read_to_string(l).ok())
                    .unwrap_or_default();
                let Some(f) = detect::parse(&text).into_iter().next() else {
                    other.push((*n, format!("crash without a report: {}", o.detail)));
                    continue;
                };
                let sig = f.signature().0;
                buckets
                    .entry(sig.clone())
                    .or_insert_with(|| SweepBucket {
                        without_failure: baseline.contains(&sig),
                        signature: sig,
                        class: f.class.name().to_string(),
                        nths: Vec::new(),
                        input: input.clone(),
                        finding: f,
                    })
                    .nths
                    .push(*n);
            }
            st => other.push((*n, format!("{st:?}: {}", o.detail))),
        }
    }
    let mut buckets: Vec<SweepBucket> = buckets.into_values().collect();
    buckets.sort_by_key(|b| b.nths[0]);
    let report = SweepReport {
        call,
        allocations,
        swept,
        persistent: opts.persistent,
        buckets,
        clean,
        other,
        dir: dir.to_path_buf(),
    };
    let out = dir.join("sweep.json");
    io(
        &out,
        fs::write(
            &out,
            serde_json::to_vec_pretty(&report).expect("serializable"),
        ),
    )?;
    Ok(report)
}

/// Run the points in forked children of one harness process (a fresh fork each).
fn run_points(
    c: &Campaign,
    dir: &Path,
    points: &[(u64, PathBuf)],
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    if points.is_empty() {
        return Ok(Vec::new());
    }
    let list = dir.join("points.txt");
    let text: String = points
        .iter()
        .map(|(_, p)| format!("{}\n", p.display()))
        .collect();
    io(&list, fs::write(&list, text))?;
    let mut req = ReplayEnv::new(list.clone());
    req.timeout = timeout;
    req.batch = 1;
    let extra: Vec<(String, String)> = req.to_env();
    let extra: Vec<(&str, String)> = extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let (_, printed) = c.run_once(&list, &extra)?;
    let results = io(&req.out, fs::read_to_string(&req.out)).map_err(|e| match e {
        CampaignError::Io { path, source } => CampaignError::Io {
            path,
            source: std::io::Error::other(format!(
                "{source}; the harness printed:\n{}",
                capisan_build::source::tail_lines(&printed, 20)
            )),
        },
        e => e,
    })?;
    Ok(results
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The campaign a `--call` sweep runs in: the fuzz `binary` built against `manifest`, the
/// extension `module` (importable from `ext_path`) with `func` its only callable.
pub fn call_campaign(
    manifest: &capisan_build::Manifest,
    binary: &Path,
    module: &str,
    ext_path: Option<&Path>,
    func: &str,
) -> Campaign {
    let harness = HarnessEnv {
        ext: Some(module.to_string()),
        ext_path: ext_path.map(Path::to_path_buf),
        ext_funcs: vec![func.to_string()],
        ..HarnessEnv::default()
    };
    let mut env = manifest.env();
    env.extend(harness.to_env());
    Campaign {
        target: "capi_sequences".into(),
        variant: manifest.variant,
        version: Some(manifest.version.clone()),
        binary: binary.to_path_buf(),
        env,
    }
}

/// A `--call MODULE.FUNC ARGS-JSON` sweep: the call's module, function and ops.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSpec {
    pub module: String,
    pub func: String,
    pub ops: Vec<Op>,
}

impl CallSpec {
    /// `target` is `MODULE.FUNC` (the module may be dotted), `args` a JSON array of numbers,
    /// strings and nulls.
    pub fn parse(target: &str, args: &str) -> Result<CallSpec> {
        let Some((module, func)) = target.rsplit_once('.') else {
            return Err(SweepError::BadCall(format!(
                "--call wants MODULE.FUNC, got {target}"
            )));
        };
        let values: Vec<serde_json::Value> = serde_json::from_str(args).map_err(|e| {
            SweepError::BadCall(format!(
                "--call arguments {args:?} are not a JSON array: {e}"
            ))
        })?;
        let (module, func) = (module.to_string(), func.to_string());
        Ok(CallSpec {
            module,
            func,
            ops: call_ops(&values)?,
        })
    }

    /// Sweep the call on `manifest`'s variant with the fuzz `binary` built against it, the
    /// module importable from `ext_path` (default: the variant's own sys.path); as
    /// [`sweep_ops`].
    pub fn sweep(
        &self,
        manifest: &capisan_build::Manifest,
        binary: &Path,
        ext_path: Option<&Path>,
        dir: &Path,
        opts: &SweepOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<SweepReport> {
        let ext_path = ext_path.map(|p| fs::canonicalize(p).unwrap_or(p.to_path_buf()));
        let c = call_campaign(
            manifest,
            binary,
            &self.module,
            ext_path.as_deref(),
            &self.func,
        );
        sweep_ops(&c, &self.ops, dir, opts, progress)
    }
}

/// The default directory of a sweep of `input`: `<input>.oom-sweep/` beside it.
pub fn input_dir(input: &Path) -> PathBuf {
    PathBuf::from(format!("{}.oom-sweep", input.display()))
}

/// The default directory of a `--call MODULE.FUNC` sweep in the checkout `root`.
pub fn call_dir(root: &Path, target: &str) -> PathBuf {
    root.join("target/capisan")
        .join(format!("oom-sweep-{target}"))
}

/// The ops of one call `func(args...)` of the campaign's only callable: each argument (a JSON
/// number, string or null) built in its own slot, then the call.
pub fn call_ops(args: &[serde_json::Value]) -> Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut slots = Vec::new();
    for (i, a) in args.iter().take(3).enumerate() {
        let dst = Slot(i as u8 + 1);
        let op = match a {
            serde_json::Value::Number(n) if n.is_i64() => Op::NewInt {
                dst,
                value: n.as_i64().unwrap_or(0),
            },
            serde_json::Value::Number(n) => Op::NewFloat {
                dst,
                value: n.as_f64().unwrap_or(0.0),
            },
            serde_json::Value::String(s) if s.chars().count() <= 16 => Op::NewStr {
                dst,
                text: s.clone(),
            },
            serde_json::Value::Null => Op::NewTuple { dst, len: 0 },
            other => return Err(SweepError::BadArgument(other.to_string())),
        };
        ops.push(op);
        slots.push(dst);
    }
    if args.len() > 3 {
        return Err(SweepError::BadArgument(format!(
            "#{} (at most 3 arguments)",
            args.len()
        )));
    }
    let mut argv = [Slot(0); 3];
    argv[..slots.len()].copy_from_slice(&slots);
    let call: Op = serde_json::from_value(serde_json::json!({
        "CallExt": { "func": 0, "nargs": slots.len(), "args": argv, "dst": 0 }
    }))
    .expect("a CallExt op list parses");
    ops.push(call);
    Ok(ops)
}

/// The sweep as text (what `oom-sweep` prints).
pub fn report_text(r: &SweepReport) -> String {
    let mut s = format!(
        "== oom-sweep {}: {} allocation(s), swept 1..={} ({}) ==\n",
        r.call,
        r.allocations,
        r.swept,
        if r.persistent {
            "every allocation from N on fails"
        } else {
            "allocation N alone fails"
        }
    );
    s.push_str(&format!(
        "   {} bucket(s); clean at {} point(s)\n",
        r.buckets.len(),
        r.clean.len()
    ));
    for b in &r.buckets {
        s.push_str(&format!(
            "- [{}] {}  (N = {}){}\n",
            b.class,
            b.signature,
            ranges(&b.nths),
            if b.without_failure {
                "  (also without any failure)"
            } else {
                ""
            }
        ));
        s.push_str(&format!("    {}\n", b.finding.summary));
        if let Some(f) = b.finding.top_frame() {
            s.push_str(&format!(
                "    at: {} {}:{}\n",
                f.function,
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0)
            ));
        }
        s.push_str(&format!("    input: {}\n", b.input.display()));
    }
    for (n, what) in &r.other {
        s.push_str(&format!("- N = {n}: {what}\n"));
    }
    s.push_str(&format!("points and logs: {}\n", r.dir.display()));
    s
}

/// `1-3, 7` for `[1, 2, 3, 7]`.
fn ranges(ns: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ns.len() {
        let mut j = i;
        while j + 1 < ns.len() && ns[j + 1] == ns[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            ns[i].to_string()
        } else {
            format!("{}-{}", ns[i], ns[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_module_dot_func_and_a_json_array() {
        let c = CallSpec::parse("pkg.mod.parse", r#"["a,b", 3]"#).unwrap();
        assert_eq!((c.module.as_str(), c.func.as_str()), ("pkg.mod", "parse"));
        assert_eq!(c.ops.len(), 3);
        assert!(matches!(
            CallSpec::parse("parse", "[]"),
            Err(SweepError::BadCall(_))
        ));
        assert!(matches!(
            CallSpec::parse("m.f", "{}"),
            Err(SweepError::BadCall(_))
        ));
        assert_eq!(
            call_dir(Path::new("/r"), "m.f"),
            Path::new("/r/target/capisan/oom-sweep-m.f")
        );
    }

    fn call(func: u8) -> Op {
        serde_json::from_value(serde_json::json!({
            "CallExt": { "func": func, "nargs": 0, "args": [0, 0, 0], "dst": 0 }
        }))
        .unwrap()
    }

    #[test]
    fn the_swept_call_loses_its_own_arming_only() {
        let ops = vec![
            Op::FailNext { nth: 1, count: 1 },
            call(0),
            Op::NewList { dst: Slot(1) },
            Op::FailNext { nth: 2, count: 1 },
            call(1),
            Op::GcCollect { generation: 0 },
        ];
        let (idx, base) = target_call(&ops, None).unwrap();
        assert_eq!(idx, 3);
        assert_eq!(base.len(), 5);
        assert_eq!(base[0], Op::FailNext { nth: 1, count: 1 });
        assert_eq!(base[idx], call(1));
        let (idx, base) = target_call(&ops, Some(1)).unwrap();
        assert_eq!((idx, base.len()), (0, 5));
        assert!(target_call(&ops, Some(2)).is_none());
        assert!(target_call(&[Op::NewList { dst: Slot(0) }], None).is_none());
        assert_eq!(armed(&base, 0, 7, 0)[0], Op::FailNext { nth: 7, count: 0 });
    }

    #[test]
    fn reads_the_allocation_count_of_the_armed_call() {
        let text = "x\n==capisan== fail-alloc: op #3: allocation 65535 fails; the call made 12 allocation(s), 0 failed\n==capisan== fail-alloc: op #3: allocation 65535 fails; the call made 9 allocation(s), 0 failed\n";
        assert_eq!(counted(text, 3), Some(12));
        assert_eq!(counted(text, 2), None);
    }

    #[test]
    fn call_arguments_become_ops() {
        let ops = call_ops(&[serde_json::json!(3), serde_json::json!("<a>")]).unwrap();
        assert_eq!(ops.len(), 3);
        assert!(matches!(ops[0], Op::NewInt { value: 3, .. }));
        assert_eq!(ops[2].ext_args(), &[Slot(1), Slot(2)]);
        assert!(call_ops(&[serde_json::json!([1])]).is_err());
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
    }
}
