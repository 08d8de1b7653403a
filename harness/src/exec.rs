//! The executor: performs an [`OpSeq`] on the real interpreter under the ownership [`Model`],
//! running the property checks of [`crate::check`] after every op.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::check::errstate::{check_and_clear, Ret};
use crate::check::refcount::{compare, Prediction, Snapshot};
use crate::check::{gc, Violation, ViolationKind};
use crate::detect::BucketSignature;
use crate::env::HarnessEnv;
use crate::ffi::raw;
use crate::ffi::shim::*;
use crate::ffi::PyObject;
use crate::findings::{is_known, read_known, FindingStore, LeakStats, Recorded};
use crate::interp::{self, Interp};
use crate::leak_rule::check_rc_deltas;
use crate::ops::model::{Hold, Model, Plan, Use};
use crate::ops::{clip_bytes, clip_str, CallableKind, Op, OpSeq, PyClass, Resolved, NSLOTS};

/// Which checks run (benchmarks turn them off to measure their cost).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Per-op refcount prediction, exception state, and GC audits at release.
    pub checks: bool,
    /// Repeat each extension call to tell a leak from a one-time cache fill.
    pub ext_repeats: bool,
    /// End-of-sequence total-refcount comparison (regrtest -R style confirmation).
    pub totals: bool,
    /// `PyGC_Collect()` after every sequence.
    pub collect: bool,
    /// The GC and raw-memory checks of what calls return (see `CAPISAN_GC_RAW`).
    pub gc_raw: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checks: true,
            ext_repeats: true,
            totals: true,
            collect: false,
            gc_raw: true,
        }
    }
}

/// What a completed sequence did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub executed: usize,
    pub skipped: usize,
}

/// The resolved ops of the running sequence (what actually ran), for the op log printed from
/// the sanitizer report callback and by [`report`].
static LOG: Mutex<Vec<Op>> = Mutex::new(Vec::new());
/// Names resolved while ops ran (the method a `CallMethod` picked, the protocol of a
/// `Protocol`), by op index, for the op log: `s3 = CallMethod Box.fill(s1, s2)`.
static RUNTIME_NAMES: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());

/// Remember the runtime name of the running op.
fn note_name(name: String) {
    let i = CURRENT_INDEX.load(Ordering::SeqCst);
    if let Ok(mut names) = RUNTIME_NAMES.lock() {
        if names.len() <= i {
            names.resize(i + 1, None);
        }
        names[i] = Some(name);
    }
}

/// An op as text, with its runtime name when it has one (`CallMethod`, `Protocol`).
fn describe_at(op: &Op, i: usize) -> String {
    let name = RUNTIME_NAMES
        .try_lock()
        .ok()
        .and_then(|n| n.get(i).cloned().flatten());
    match (op, name) {
        (Op::CallMethod { recv, dst, .. }, Some(n)) => {
            let mut args = vec![recv.to_string()];
            args.extend(op.ext_args().iter().map(|a| a.to_string()));
            format!("{dst} = CallMethod {n}({})", args.join(", "))
        }
        (Op::Protocol { obj, arg, dst, .. }, Some(n)) => {
            format!("{dst} = Protocol {n}({obj}, {})", arg.arg_text())
        }
        _ => describe(op),
    }
}

/// Index of the op being executed (`usize::MAX` when none).
static CURRENT_INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Print the op log (ops up to and including the current one) in the `==capisan==` format.
pub fn print_op_log() {
    eprint!("{}", op_log_text());
}

/// The op log (ops up to and including the current one) in the `==capisan==` format; empty
/// when no op is running.
pub fn op_log_text() -> String {
    let idx = CURRENT_INDEX.load(Ordering::SeqCst);
    // try_lock: this may run inside a sanitizer callback while the executor holds the lock.
    let Ok(ops) = LOG.try_lock() else {
        return String::new();
    };
    if idx == usize::MAX || ops.is_empty() {
        return String::new();
    }
    let idx = idx.min(ops.len() - 1);
    let mut text = String::from("==capisan== op-log begin\n");
    for (i, op) in ops.iter().enumerate().take(idx + 1) {
        text.push_str(&format!("==capisan== #{i} {}\n", describe_at(op, i)));
    }
    text.push_str("==capisan== op-log end\n");
    // The extension types met so far by their GC slot functions (`detect` names a crash in
    // one of them after its type).
    text.push_str(&crate::gcslots::lines());
    text.push_str(&format!(
        "==capisan== current-op #{idx} {}\n",
        describe_at(&ops[idx], idx)
    ));
    if crate::failalloc::is_armed() {
        // A report from inside a call under allocation-failure injection: where it failed.
        let stack = crate::failalloc::failure_stack();
        text.push_str(&format!(
            "==capisan== fail-alloc: the running call is under allocation-failure injection; first failed allocation at: {}\n",
            if stack.is_empty() { "(none failed yet)".to_string() } else { stack.iter().take(6).cloned().collect::<Vec<_>>().join(" <- ") }
        ));
    }
    text
}

/// With `CAPISAN_DUMP_RESOLVED=FILE`, rewrite FILE before every op (so it survives a crash).
fn dump_resolved(log: &[Op], interp: &Interp) {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    if let Some(path) = PATH.get_or_init(|| HarnessEnv::from_env().dump_resolved) {
        let r = Resolved {
            ext: interp.ext_names.clone(),
            ops: log.to_vec(),
        };
        let _ = std::fs::write(path, serde_json::to_vec(&r).unwrap_or_default());
    }
}

/// An op as text, with the extension callee's name.
pub fn describe(op: &Op) -> String {
    op.describe(&interp::get().ext_names)
}

#[cfg(capisan_asan)]
extern "C" {
    fn __asan_set_error_report_callback(
        cb: Option<unsafe extern "C" fn(*const std::os::raw::c_char)>,
    );
}

/// ASan's error-report callback: prints the op log and records the report in a campaign.
///
/// # Safety
/// Called by the ASan runtime only, with its NUL-terminated report text (or NULL).
#[cfg(capisan_asan)]
unsafe extern "C" fn on_asan_report(report: *const std::os::raw::c_char) {
    print_op_log();
    // In a campaign, record the report with the input now: the process is about to die, and a
    // bug that needs state left by earlier inputs would not show again when the artifact is
    // re-run alone (in fork mode the child's log is gone too).
    if report.is_null() {
        return;
    }
    // SAFETY: ASan passes its NUL-terminated report text.
    let text = unsafe { std::ffi::CStr::from_ptr(report) }.to_string_lossy();
    record_fatal(&format!("{text}{}", op_log_text()));
}

/// The input being run (for findings recorded from a sanitizer callback).
static CURRENT_INPUT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Record a fatal report of the running input in the campaign's findings store, if any.
fn record_fatal(log: &str) {
    let Some(store) = store() else { return };
    let Some(finding) = crate::detect::parse(log).into_iter().next() else {
        return;
    };
    // try_lock: the report may come from inside an op while nothing else holds the lock.
    let input = CURRENT_INPUT
        .try_lock()
        .map(|i| i.clone())
        .unwrap_or_default();
    if known(&finding.signature().0) {
        let _ = store.record_known(&finding.signature());
    } else {
        let _ = store.record(&finding, &input, log);
    }
}

/// The fuzz target's init hook, called by libFuzzer with its own `argc`/`argv` before it
/// parses its flags and before its clock starts:
/// - a replay request runs and exits ([`crate::replay::maybe_replay`]);
/// - a job a fork-mode campaign spawned gets a useful time budget ([`fork_job_budget`]);
/// - the interpreter starts and the extension under test is imported here, not in the first
///   input, so a job's budget is spent fuzzing (the signal and sanitizer hooks still come with
///   the first input, see [`init`]). The fork-mode parent runs no input and starts no
///   interpreter.
///
/// # Safety
/// `argc`/`argv` are libFuzzer's (`LLVMFuzzerInitialize`'s arguments), not yet read by it.
pub unsafe fn fuzzer_init(argc: *mut libc::c_int, argv: *mut *mut *mut libc::c_char) {
    crate::replay::maybe_replay();
    // SAFETY: the caller's contract: argv holds argc NUL-terminated strings.
    let args: Vec<String> = (0..unsafe { *argc }.max(0) as usize)
        .map(|i| {
            // SAFETY: i < argc.
            let p = unsafe { *(*argv).add(i) };
            // SAFETY: libFuzzer's argv strings are NUL-terminated.
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let end = std::env::var(crate::env::names::CAMPAIGN_END)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some((i, flag)) = fork_job_budget(&args, end.map(|e| e.saturating_sub(now))) {
        // The string lives as long as the process: libFuzzer keeps pointers into argv.
        let flag = CString::new(flag).expect("no NUL").into_raw();
        // SAFETY: i < argc (an index into `args`); libFuzzer reads argv only after this hook.
        unsafe { *(*argv).add(i) = flag };
    }
    if !is_fork_parent(args.into_iter()) {
        start();
    }
}

/// The least time a fork-mode job fuzzes, seconds. libFuzzer gives job N `min(N, 300)`
/// seconds, and every job pays a fixed cost first: the interpreter and the extension's
/// imports, its share of the corpus run again, and the parent's merge run of what it found.
/// On a slow target (contourpy imports numpy under ASan; ~30 inputs/s) that cost took most of
/// the first jobs of a short campaign.
pub const FORK_JOB_MIN_SECONDS: u64 = 10;

/// The rewritten `-max_total_time=` flag of a job libFuzzer's fork mode spawned (its command
/// line has `-stop_file=`): at least [`FORK_JOB_MIN_SECONDS`], and never past the campaign's
/// end (`remaining` seconds, at least 1), so the campaign is not stretched by a job started
/// late and the last job's inputs are still merged. `(index in args, new flag)`, or `None`
/// when nothing changes.
pub fn fork_job_budget(args: &[String], remaining: Option<u64>) -> Option<(usize, String)> {
    if !args.iter().any(|a| a.starts_with("-stop_file=")) {
        return None;
    }
    // The last one counts: a job's command line is the parent's (with the campaign's own
    // `-max_total_time`) plus libFuzzer's flags for the job.
    let (i, n) = args.iter().enumerate().rev().find_map(|(i, a)| {
        a.strip_prefix("-max_total_time=")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| (i, n))
    })?;
    let mut budget = n.max(FORK_JOB_MIN_SECONDS);
    if let Some(r) = remaining {
        budget = budget.min(r.max(1));
    }
    (budget != n).then(|| (i, format!("-max_total_time={budget}")))
}

/// A libFuzzer command line of a fork-mode parent (`-fork=N`, N > 0): it only spawns jobs.
pub fn is_fork_parent(mut args: impl Iterator<Item = String>) -> bool {
    args.any(|a| {
        a.strip_prefix("-fork=")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

/// The fuzz target's body: decode, run with the checks the environment asks for, and handle a
/// violation ([`handle_violation`]).
pub fn fuzz_one(data: &[u8]) {
    if let Ok(mut i) = CURRENT_INPUT.lock() {
        i.clear();
        i.extend_from_slice(data);
    }
    let seq = OpSeq::decode(data, fail_alloc_mode() == crate::env::FailAlloc::On);
    if let Err(v) = run(&seq, Config::from_env()) {
        handle_violation(&v, data);
    }
}

/// The SIGABRT disposition before ours (libFuzzer's crash handler, or the default).
static mut PREV_ABRT: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::uninit();

/// On abort (pydebug fatal errors, debug-allocator reports, capisan violations): print the op
/// log, then hand the signal to the previous handler so libFuzzer still saves the input.
extern "C" fn on_abort(sig: libc::c_int) {
    print_op_log();
    // SAFETY: PREV_ABRT was filled by `install_abort_hook` before this handler was installed.
    unsafe {
        libc::sigaction(sig, (&raw const PREV_ABRT).cast(), std::ptr::null_mut());
        libc::raise(sig);
    }
}

fn install_abort_hook() {
    // SAFETY: plain sigaction calls; runs once, before any op.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_abort as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGABRT, &act, (&raw mut PREV_ABRT).cast());
    }
}

/// This process's allocation-failure mode ([`crate::env::names::FAIL_ALLOC`]), read once.
fn fail_alloc_mode() -> crate::env::FailAlloc {
    static MODE: OnceLock<crate::env::FailAlloc> = OnceLock::new();
    *MODE.get_or_init(|| HarnessEnv::from_env().fail_alloc)
}

/// Initialize the interpreter and hook the op log into sanitizer reports.
pub fn init() -> &'static Interp {
    let i = start();
    // At the first input, not at start-up: libFuzzer installs its SIGABRT handler after its
    // init hook only where none is installed yet, and the abort hook chains to it (installed
    // first, it would chain to the default action and libFuzzer would save no crash input).
    static HOOKED: std::sync::Once = std::sync::Once::new();
    HOOKED.call_once(install_abort_hook);
    if fail_alloc_mode() != crate::env::FailAlloc::Off {
        crate::failalloc::install();
    }
    #[cfg(capisan_asan)]
    // SAFETY: registers a plain function pointer with the ASan runtime.
    unsafe {
        __asan_set_error_report_callback(Some(on_asan_report))
    };
    i
}

/// The interpreter and the extension under test, started once (with the extension's types
/// noted for [`crate::gcslots`]), without the process-wide hooks [`init`] adds.
fn start() -> &'static Interp {
    let i = interp::get();
    static NOTED: std::sync::Once = std::sync::Once::new();
    NOTED.call_once(|| {
        for &(_, f) in &i.ext {
            // SAFETY: GIL held; the prelude keeps the extension's callables alive.
            unsafe { crate::gcslots::note_if_type(f) };
        }
    });
    i
}

/// Run a sequence with the given checks; a violation is returned (the caller prints and aborts).
pub fn run(seq: &OpSeq, config: Config) -> Result<Summary, Violation> {
    let interp = init();
    if config.totals {
        // The type attribute cache holds references to the names looked up through it; it
        // is emptied at both ends of the measurement so its filling never reads as a leak.
        // SAFETY: GIL held.
        unsafe { raw::PyType_ClearCache() };
    }
    let total_before = interp::total_refcount();
    let result = Executor::new(interp, config).run_ops(&seq.0);
    let result = result.and_then(|summary| {
        if config.totals {
            check_totals(seq, config, total_before)?;
        }
        Ok(summary)
    });
    if result.is_ok() {
        CURRENT_INDEX.store(usize::MAX, Ordering::SeqCst);
    }
    result
}

/// Print a violation and the op log that led to it, in the format `detect` parses.
/// The abort that follows prints the op log (from the SIGABRT hook).
pub fn report(v: &Violation) {
    eprint!("{v}");
    CURRENT_INDEX.store(v.op_index, Ordering::SeqCst);
}

impl Config {
    /// The checks the [`HarnessEnv`] of this process asks for (benchmarks and `xtask fuzz`
    /// flags set them). Without checks there is no end-of-sequence check either.
    pub fn from_env() -> Config {
        let e = HarnessEnv::from_env();
        Config {
            checks: e.checks,
            ext_repeats: e.ext_repeats,
            totals: e.totals && e.checks,
            collect: e.collect,
            gc_raw: e.gc_raw,
        }
    }
}

/// `gc.collect(generation)`, any error cleared.
///
/// # Safety
/// GIL held.
unsafe fn collect_generation(generation: std::os::raw::c_long) {
    // SAFETY: GIL held (caller's contract); `g` and the result are new references (or NULL)
    // released here; `gc.collect` is borrowed from the prelude.
    unsafe {
        let g = raw::PyLong_FromLong(generation);
        let r = raw::PyObject_CallOneArg(interp::get().gc_collect, g);
        shim_Py_DECREF(g);
        if r.is_null() {
            raw::PyErr_Clear();
        } else {
            shim_Py_DECREF(r);
        }
    }
}

/// regrtest's cleanup between `-R` runs (py/regrtest_cleanup.py), any error cleared.
fn regrtest_cleanup() {
    // SAFETY: GIL held; regrtest_cleanup() returns a new reference or NULL.
    unsafe {
        let r = raw::PyObject_CallNoArgs(interp::get().regrtest_cleanup);
        if r.is_null() {
            raw::PyErr_Clear();
        } else {
            shim_Py_DECREF(r);
        }
    }
}

/// What the objects `objs` reach hold (py/regrtest_cleanup.py `held_refs`).
#[derive(Debug, Default)]
struct Held {
    /// References held by everything `objs` reach.
    edges: i64,
    /// How many of them point at each of `objs`.
    counts: Vec<i64>,
    /// Bytes of everything `objs` reach, as `sys.getsizeof` counts them.
    bytes: i64,
}

/// What the objects `objs` reach hold: a call that stores its argument in its receiver grows
/// the edges and the argument's count by one, one that grows its receiver grows the bytes; the
/// leak verdicts subtract them. The bytes are summed only when `sizes` (the raw-memory verdict
/// runs: the asan variant with its allocator counters), else 0. All zero if the helper fails.
fn held(objs: &[*mut PyObject], sizes: bool) -> Held {
    let zero = Held {
        counts: vec![0; objs.len()],
        ..Held::default()
    };
    if objs.is_empty() {
        return zero;
    }
    // SAFETY: GIL held; `objs` are alive (the caller holds references); every object made
    // here is released before returning.
    unsafe {
        let t = tuple_of(objs);
        let flag = raw::PyBool_FromLong(std::os::raw::c_long::from(sizes));
        let r = raw::PyObject_CallFunctionObjArgs(
            interp::get().held_refs,
            t,
            flag,
            std::ptr::null_mut::<PyObject>(),
        );
        shim_Py_DECREF(flag);
        shim_Py_DECREF(t);
        if r.is_null() {
            raw::PyErr_Clear();
            return zero;
        }
        let edges = raw::PyLong_AsLongLong(raw::PyTuple_GetItem(r, 0)) as i64;
        let list = raw::PyTuple_GetItem(r, 1);
        let counts = (0..objs.len())
            .map(|k| raw::PyLong_AsLongLong(raw::PyList_GetItem(list, k as isize)) as i64)
            .collect();
        let bytes = raw::PyLong_AsLongLong(raw::PyTuple_GetItem(r, 2)) as i64;
        shim_Py_DECREF(r);
        raw::PyErr_Clear();
        Held {
            edges,
            counts,
            bytes,
        }
    }
}

/// regrtest `-R 3:3`: warm-up runs, then measured runs, in stage 2 of the leak verdict.
const STAGE2_WARMUPS: usize = 3;
const STAGE2_RUNS: usize = 3;

/// Counters of the leak verdict in this process (written to the findings store).
static LEAK_STATS: Mutex<LeakStats> = Mutex::new(LeakStats {
    suspected: 0,
    confirmed: 0,
    rejected: 0,
    reused: 0,
});

/// Signatures of buckets already recorded or known in this campaign: a suspicion that would
/// land in one of them is counted without running stage 2 again.
static SETTLED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn bump(f: impl FnOnce(&mut LeakStats)) {
    if let Ok(mut s) = LEAK_STATS.lock() {
        f(&mut s);
        if let Some(store) = store() {
            let _ = store.write_stats(&s);
        }
    }
}

/// This process's leak-verdict counters.
pub fn leak_stats() -> LeakStats {
    LEAK_STATS.lock().map(|s| *s).unwrap_or_default()
}

/// The findings store of a keep-going campaign (`CAPISAN_FINDINGS`), with the known buckets
/// (`CAPISAN_KNOWN`) and those already in the store marked as settled.
fn store() -> Option<&'static FindingStore> {
    static STORE: OnceLock<Option<FindingStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let env = HarnessEnv::from_env();
            let store = FindingStore::open(&env.findings?).ok()?;
            if let Ok(mut settled) = SETTLED.lock() {
                for b in store.buckets() {
                    settled.insert(b.signature.0);
                }
            }
            Some(store)
        })
        .as_ref()
}

/// Whether `sig` is a known bucket of this campaign (`CAPISAN_KNOWN`, see [`is_known`]).
fn known(sig: &str) -> bool {
    static KNOWN: OnceLock<Vec<BucketSignature>> = OnceLock::new();
    let list = KNOWN.get_or_init(|| {
        HarnessEnv::from_env()
            .known
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| read_known(&t))
            .unwrap_or_default()
    });
    is_known(list, sig)
}

/// The bucket signature a violation will be filed under (as `detect` parses the report).
fn signature_of(v: &Violation, op_log: &str) -> Option<BucketSignature> {
    crate::detect::parse(&format!("{v}{op_log}"))
        .first()
        .map(|f| f.signature())
}

/// Whether the bucket of `v` is already recorded or known, so no stage 2 is needed.
fn settled(v: &Violation) -> bool {
    let _ = store();
    let Some(sig) = signature_of(v, &op_log_text()) else {
        return false;
    };
    known(&sig.0) || SETTLED.lock().is_ok_and(|s| s.contains(&sig.0))
}

/// What to do after `run` returned a violation for `input`.
///
/// A fatal violation (an over-decref: memory may already be corrupt) and any violation outside
/// a keep-going campaign (no `CAPISAN_FINDINGS`) is printed and aborts, so libFuzzer saves the
/// input. Otherwise the finding is written to the store once per bucket (later hits and known
/// buckets are only counted, silently) and the caller goes on with the next input: a shallow
/// leak hit on every other input no longer ends a campaign.
pub fn handle_violation(v: &Violation, input: &[u8]) {
    CURRENT_INDEX.store(v.op_index, Ordering::SeqCst);
    let Some(store) = store().filter(|_| !v.kind.is_fatal()) else {
        report(v);
        if v.kind.is_fatal() {
            record_fatal(&format!("{v}{}", op_log_text()));
        }
        std::process::abort();
    };
    let log = format!("{v}{}", op_log_text());
    CURRENT_INDEX.store(usize::MAX, Ordering::SeqCst);
    let Some(finding) = crate::detect::parse(&log).into_iter().next() else {
        eprint!("{log}");
        return;
    };
    let sig = finding.signature();
    if known(&sig.0) {
        let _ = store.record_known(&sig);
        return;
    }
    match store.record(&finding, input, &log) {
        Ok(Recorded::New) => {
            eprint!("{log}");
            eprintln!(
                "==capisan== finding recorded: {sig} in {} (keeps going)",
                store.dir().display()
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "==capisan== could not record {sig} in {}: {e}",
            store.dir().display()
        ),
    }
    if let Ok(mut s) = SETTLED.lock() {
        s.insert(sig.0);
    }
}

/// Run `f` once per repetition, with regrtest's cleanup (cache clearing + collection) after
/// every run; return the per-run deltas of the total refcount and of each `watched` object's
/// refcount over the measured runs (after `STAGE2_WARMUPS` warm-ups).
///
/// # Safety
/// GIL held; `watched` objects stay alive (the caller holds references).
unsafe fn regrtest_repeat(
    mut f: impl FnMut() -> Result<(), Violation>,
    watched: &[*mut PyObject],
) -> Result<(Vec<i64>, Vec<Vec<i64>>), Violation> {
    let cleanup = regrtest_cleanup;
    // References the watched objects hold are not leaked (see [`held`]): subtracted.
    let read = || {
        let Held { edges, counts, .. } = held(watched, false);
        let t = interp::total_refcount().unwrap_or(0) as i64 - edges;
        // SAFETY: watched objects are alive (caller's contract).
        let a: Vec<i64> = watched
            .iter()
            .zip(counts)
            .map(|(&o, c)| unsafe { shim_Py_REFCNT(o) } as i64 - c)
            .collect();
        (t, a)
    };
    cleanup();
    let (mut t0, mut a0) = read();
    let mut total = Vec::new();
    let mut args = vec![Vec::new(); watched.len()];
    for i in 0..STAGE2_WARMUPS + STAGE2_RUNS {
        f()?;
        cleanup();
        let (t1, a1) = read();
        if i >= STAGE2_WARMUPS {
            total.push(t1 - t0);
            for (k, d) in args.iter_mut().enumerate() {
                d.push(a1[k] - a0[k]);
            }
        }
        (t0, a0) = (t1, a1);
    }
    Ok((total, args))
}

/// Stage 2 of the leak verdict for a stage-1 `suspect`: unless its bucket is settled, run
/// `rerun` under regrtest's procedure and keep the suspicion only if `leaks` says the measured
/// deltas are a leak; the violation's detail then shows them.
///
/// # Safety
/// As [`regrtest_repeat`].
unsafe fn confirm(
    mut suspect: Violation,
    rerun: impl FnMut() -> Result<(), Violation>,
    watched: &[*mut PyObject],
    leaks: impl Fn(&[i64], &[Vec<i64>]) -> bool,
) -> Result<(), Violation> {
    bump(|s| s.suspected += 1);
    if settled(&suspect) {
        bump(|s| s.reused += 1);
        return Err(suspect);
    }
    // SAFETY: the caller's contract, passed on.
    let (total, args) = unsafe { regrtest_repeat(rerun, watched) }?;
    if leaks(&total, &args) {
        bump(|s| s.confirmed += 1);
        suspect.detail.push_str(&format!(
            "\nconfirmed by regrtest's procedure (caches cleared and a collection after every run, -R {STAGE2_WARMUPS}:{STAGE2_RUNS}): total refcount deltas {total:?}"
        ));
        for (k, d) in args.iter().enumerate() {
            if !d.is_empty() && watched.len() > 1 {
                suspect
                    .detail
                    .push_str(&format!("\nargument {k} refcount deltas {d:?}"));
            }
        }
        return Err(suspect);
    }
    bump(|s| s.rejected += 1);
    if std::env::var_os("CAPISAN_TRACE_STAGE2").is_some() {
        eprintln!(
            "==capisan== stage 2 rejected: {} (deltas {total:?})",
            suspect.detail.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// The two-stage leak verdict on the whole sequence. Stage 1: the sequence leaves references
/// behind after its own cycles are collected, and two more runs each leave more. Stage 2
/// ([`confirm`]): regrtest's procedure with cache clearing says so too.
fn check_totals(seq: &OpSeq, config: Config, before: Option<isize>) -> Result<(), Violation> {
    let Some(before) = before else { return Ok(()) };
    // SAFETY: GIL held.
    unsafe { raw::PyType_ClearCache() };
    if interp::total_refcount() == Some(before) {
        return Ok(());
    }
    // Something is left: collect cycles before calling it a leak — the young generations first
    // (cheap; the sequence's own cycles are there), a full collection only if that was not enough.
    for generation in [0, 1, 2] {
        // SAFETY: GIL held.
        unsafe { collect_generation(generation) };
        if interp::total_refcount() == Some(before) {
            return Ok(());
        }
    }
    let after = interp::total_refcount().unwrap_or(before);
    let mut deltas = vec![after - before];
    for _ in 0..2 {
        // SAFETY: GIL held.
        unsafe { raw::PyType_ClearCache() };
        let b = interp::total_refcount().unwrap_or(0);
        Executor::new(
            interp::get(),
            Config {
                totals: false,
                ..config
            },
        )
        .run_ops(&seq.0)?;
        // SAFETY: GIL held.
        unsafe {
            raw::PyType_ClearCache();
            raw::PyGC_Collect();
        }
        deltas.push(interp::total_refcount().unwrap_or(0) - b);
    }
    let quick: Vec<i64> = deltas[1..].iter().map(|&d| d as i64).collect();
    if !check_rc_deltas(&quick) {
        return Ok(());
    }
    // Which op leaks: the shortest prefix of the sequence that still leaks on every quick
    // repeat ends with it (binary search; the whole sequence leaks). Its op names the bucket,
    // so different sequence leaks are different buckets.
    let run_prefix = |n: usize| -> Result<(), Violation> {
        Executor::new(
            interp::get(),
            Config {
                totals: false,
                checks: false,
                ..config
            },
        )
        .run_ops(&seq.0[..n])
        .map(|_| ())
    };
    let leaks_quickly = |n: usize| -> Result<bool, Violation> {
        let mut d = Vec::new();
        for _ in 0..3 {
            // SAFETY: GIL held.
            unsafe {
                raw::PyType_ClearCache();
                raw::PyGC_Collect();
            }
            let b = interp::total_refcount().unwrap_or(0);
            run_prefix(n)?;
            // SAFETY: GIL held.
            unsafe {
                raw::PyType_ClearCache();
                raw::PyGC_Collect();
            }
            d.push((interp::total_refcount().unwrap_or(0) - b) as i64);
        }
        Ok(check_rc_deltas(&d[1..]))
    };
    let (mut lo, mut hi) = (1, seq.0.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if leaks_quickly(mid)? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let n = hi.max(1);
    // The resolved op (what ran) and its runtime name: the log of a run of that prefix.
    run_prefix(n)?;
    let culprit = LOG
        .lock()
        .ok()
        .and_then(|l| l.get(n - 1).cloned())
        .unwrap_or_else(|| seq.0[n - 1].clone());
    let text = describe_at(&culprit, n - 1);
    let at = match &culprit {
        Op::CallExt { .. } | Op::CallMethod { .. } | Op::Protocol { .. } => text
            .split_once(" = ")
            .map_or(text.as_str(), |x| x.1)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.split('(').next())
            .unwrap_or(culprit.name())
            .to_string(),
        other => other.name().to_string(),
    };
    let suspect = Violation {
        kind: ViolationKind::Leak,
        op_index: n - 1,
        op: text,
        detail: format!(
            "total refcount grows on every run of the sequence: deltas {deltas:?} (regrtest -R rule: every repeat >= 1); the shortest leaking prefix ends at op #{}",
            n - 1
        ),
        at: Some(at),
    };
    CURRENT_INDEX.store(n - 1, Ordering::SeqCst);
    let rerun = || run_prefix(n);
    // SAFETY: GIL held; nothing is watched.
    unsafe { confirm(suspect, rerun, &[], |total, _| check_rc_deltas(total)) }
}

/// A young collection right after a call that raised, its exception kept: objects the call
/// left half built (a constructor or `__init__` that failed half-way, still referenced from a
/// cache or a registry) must not crash the collector or read NULL fields in `tp_traverse`.
///
/// # Safety
/// GIL held.
unsafe fn collect_young_after_failure() {
    // SAFETY: GIL held (caller's contract); the raised exception (a new reference or NULL) is
    // set again afterwards, which steals it back.
    unsafe {
        let exc = raw::PyErr_GetRaisedException();
        collect_generation(0);
        raw::PyErr_SetRaisedException(exc);
    }
}

/// The raw-memory leak verdict of an extension call, after the reference checks found
/// nothing: stage 1 suspects a leak when the allocator's allocated bytes grew on both quick
/// repeats (`deltas`); stage 2 reruns the call under regrtest's procedure (warm-ups, cache
/// clearing and a collection after every run) and keeps the suspicion only if every measured
/// run grows too. Both stages subtract the bytes the receiver and arguments hold (`watched`,
/// see [`held`]): a call that grows its receiver holds its memory, it does not leak it.
/// Reported as a leak with the bytes per call. Only the asan variant has the counters (no
/// deltas elsewhere).
///
/// # Safety
/// GIL held.
unsafe fn raw_leak_verdict(
    deltas: &[i64],
    mut rerun: impl FnMut() -> Result<(), Violation>,
    watched: &[*mut PyObject],
    violation: &dyn Fn(ViolationKind, String) -> Violation,
    name: &str,
) -> Result<(), Violation> {
    if deltas.len() < 2 || !crate::rawmem::leaks(deltas) {
        return Ok(());
    }
    let mut suspect = violation(
        ViolationKind::Leak,
        format!("memory leak: each call of {name} leaves memory allocated and never freed (malloc / PyMem blocks; no reference is left behind): allocated-bytes deltas {deltas:?} over repeated calls"),
    );
    bump(|s| s.suspected += 1);
    if settled(&suspect) {
        bump(|s| s.reused += 1);
        return Err(suspect);
    }
    let cleanup = regrtest_cleanup;
    let mut measured = Vec::with_capacity(STAGE2_RUNS);
    // The bytes the receiver and arguments hold are not leaked (see [`held`]): subtracted.
    let read = || {
        let h = held(watched, true).bytes;
        crate::rawmem::allocated_bytes().unwrap_or(0) - h
    };
    cleanup();
    let mut before = read();
    for i in 0..STAGE2_WARMUPS + STAGE2_RUNS {
        rerun()?;
        cleanup();
        let after = read();
        if i >= STAGE2_WARMUPS {
            measured.push(after - before);
        }
        before = after;
    }
    if !crate::rawmem::leaks(&measured) {
        bump(|s| s.rejected += 1);
        if std::env::var_os("CAPISAN_TRACE_STAGE2").is_some() {
            eprintln!("==capisan== stage 2 rejected: raw memory of {name} (deltas {measured:?})");
        }
        return Ok(());
    }
    bump(|s| s.confirmed += 1);
    suspect.detail.push_str(&format!(
        "\nconfirmed by regrtest's procedure (caches cleared and a collection after every run, -R {STAGE2_WARMUPS}:{STAGE2_RUNS}): allocated-bytes deltas {measured:?}, {} bytes per call (heap size {} bytes)",
        crate::rawmem::bytes_per_call(&measured),
        crate::rawmem::heap_size().unwrap_or(0)
    ));
    // One more run with the allocator's hooks on: where the growth was allocated.
    let growth = crate::rawmem::growth_of(|| {
        let _ = rerun();
        cleanup();
    });
    if let Some(g) = growth.filter(|g| !g.stack.is_empty()) {
        suspect.detail.push_str(&format!(
            "\nallocation stack of the growth ({} block(s), {} bytes left by one more run): {}",
            g.blocks,
            g.bytes,
            crate::rawmem::describe_stack(&g.stack)
        ));
    }
    Err(suspect)
}

struct Executor<'a> {
    interp: &'a Interp,
    config: Config,
    model: Model,
    ptrs: [*mut PyObject; NSLOTS],
    scratch: *mut PyObject,
    /// Allocations to fail in the next `CallExt` (armed by `FailNext`).
    fail_next: Option<crate::ops::FailSpec>,
}

/// What one op returned, for the checks.
struct Done {
    ret: Ret,
    /// The result written to the destination slot (NULL on failure / no result).
    result: *mut PyObject,
    /// The op was not performed (an argument had the wrong type): the model is not updated.
    skipped: bool,
}

impl Done {
    /// The op was not performed (see [`Done::skipped`]).
    fn skip() -> Done {
        Done {
            skipped: true,
            ..Done::unchecked()
        }
    }

    /// A performed op with no result and no error convention.
    fn unchecked() -> Done {
        Done {
            ret: Ret::Unchecked,
            result: std::ptr::null_mut(),
            skipped: false,
        }
    }

    /// A call returning an object: NULL is failure with an exception.
    fn object(r: *mut PyObject) -> Done {
        Done {
            ret: Ret::Object(r.is_null()),
            result: r,
            skipped: false,
        }
    }

    /// A call returning a status: -1 is failure with an exception.
    fn status(rc: i32) -> Done {
        Done {
            ret: Ret::Status(rc == -1),
            ..Done::unchecked()
        }
    }
}

impl<'a> Executor<'a> {
    fn new(interp: &'a Interp, config: Config) -> Self {
        // SAFETY: GIL held; PyModule_New returns a new reference released in `finish`.
        let scratch = unsafe { raw::PyModule_New(c"capisan_scratch".as_ptr()) };
        Executor {
            interp,
            config,
            model: Model::default(),
            ptrs: [std::ptr::null_mut(); NSLOTS],
            scratch,
            fail_next: None,
        }
    }

    fn live_objects(&self) -> Vec<*mut PyObject> {
        let set: BTreeSet<usize> = (0..NSLOTS)
            .filter(|&s| self.model.is_live(s))
            .map(|s| self.ptrs[s] as usize)
            .collect();
        set.into_iter().map(|p| p as *mut PyObject).collect()
    }

    /// Run the ops; after a violation that leaves the heap intact, release what the slots
    /// still own (plainly, no audits), so a campaign that keeps going does not pile up objects.
    fn run_ops(mut self, ops: &[Op]) -> Result<Summary, Violation> {
        let r = self.run_checked(ops);
        if let Err(v) = &r {
            if !v.kind.is_fatal() {
                self.abandon();
            }
        }
        r
    }

    /// A `CallMethod`'s receiver, scanning up from the slot it names, is the first live slot
    /// holding an object of the extension's own types, when there is one: their methods are
    /// where an extension's bugs are, and uniformly chosen receivers would mostly be builtins.
    /// The op as logged names the slot used, so a replay of the log does the same.
    fn prefer_ext_receiver(&self, op: Op) -> Op {
        if self.interp.ext_module.is_none() {
            return op;
        }
        let pick = |start: crate::ops::Slot| {
            (0..NSLOTS)
                .map(|k| (start.index() + k) % NSLOTS)
                .find(|&s| {
                    // SAFETY: live slots hold live objects; GIL held.
                    self.model.is_live(s) && unsafe { self.interp.is_ext_type(self.ptrs[s]) }
                })
                .map_or(start, |s| crate::ops::Slot(s as u8))
        };
        match op {
            Op::CallMethod {
                recv,
                method,
                nargs,
                args,
                kw,
                dst,
            } => Op::CallMethod {
                recv: pick(recv),
                method,
                nargs,
                args,
                kw,
                dst,
            },
            Op::Protocol {
                obj,
                which,
                arg,
                dst,
            } => Op::Protocol {
                obj: pick(obj),
                which,
                arg,
                dst,
            },
            other => other,
        }
    }

    /// A call's argument count fitted to what the callee takes (its signature, docstring or a
    /// guess: `(lo, hi)`): `lo + nargs % (hi - lo + 1)`. Most calls are then well formed; the
    /// logged op says the count used, so a replay does the same.
    fn fit_arity(&self, op: Op) -> Op {
        let fit = |nargs: u8, (lo, hi): (u8, u8)| {
            let hi = hi.max(lo).min(3);
            lo.min(hi) + nargs % (hi - lo.min(hi) + 1)
        };
        match op {
            Op::CallExt {
                func,
                nargs,
                args,
                dst,
                kw,
            } if !self.interp.ext.is_empty() => {
                let f = func as usize % self.interp.ext.len();
                let arity = self.interp.ext_arity.get(f).copied().unwrap_or((0, 3));
                Op::CallExt {
                    func,
                    nargs: fit(nargs, arity),
                    args,
                    dst,
                    kw,
                }
            }
            Op::CallMethod {
                recv,
                method,
                nargs,
                args,
                kw,
                dst,
            } if self.model.is_live(recv.index()) => {
                // SAFETY: the receiver slot is live; GIL held.
                let arity = unsafe { self.method_arity(self.ptrs[recv.index()], method) };
                Op::CallMethod {
                    recv,
                    method,
                    nargs: fit(nargs, arity),
                    args,
                    kw,
                    dst,
                }
            }
            other => other,
        }
    }

    /// `method_arity(recv, idx)` from py/api.py, `(0, 3)` when it fails.
    ///
    /// # Safety
    /// GIL held; `recv` a live object.
    unsafe fn method_arity(&self, recv: *mut PyObject, idx: u8) -> (u8, u8) {
        // SAFETY: GIL held, `recv` live (caller's contract); `t` is a fresh 2-tuple whose
        // SET_ITEMs steal the new int and the reference INCREF'd for `recv`; `t` and the
        // result (a new (lo, hi) tuple, items borrowed) are released here.
        unsafe {
            let i = raw::PyLong_FromLong(std::os::raw::c_long::from(idx));
            let t = raw::PyTuple_New(2);
            shim_Py_INCREF(recv);
            shim_PyTuple_SET_ITEM(t, 0, recv);
            shim_PyTuple_SET_ITEM(t, 1, i);
            let r = raw::PyObject_Call(self.interp.method_arity, t, std::ptr::null_mut());
            shim_Py_DECREF(t);
            if r.is_null() {
                raw::PyErr_Clear();
                return (0, 3);
            }
            let lo = raw::PyLong_AsLong(raw::PyTuple_GetItem(r, 0));
            let hi = raw::PyLong_AsLong(raw::PyTuple_GetItem(r, 1));
            shim_Py_DECREF(r);
            raw::PyErr_Clear();
            (lo.clamp(0, 3) as u8, hi.clamp(0, 3) as u8)
        }
    }

    /// Release every owned slot and the scratch module without checks.
    fn abandon(&mut self) {
        for (s, refs) in self.model.owned() {
            let o = self.ptrs[s];
            self.model.slots[s] = Hold::Empty;
            self.ptrs[s] = std::ptr::null_mut();
            for _ in 0..refs {
                // SAFETY: the slot owned `refs` references to `o`; given up here.
                unsafe { shim_Py_DECREF(o) };
            }
        }
        self.model.epoch += 1;
        if !self.scratch.is_null() {
            // SAFETY: the scratch module's only reference, released once.
            unsafe { shim_Py_DECREF(self.scratch) };
            self.scratch = std::ptr::null_mut();
        }
    }

    fn run_checked(&mut self, ops: &[Op]) -> Result<Summary, Violation> {
        let mut summary = Summary::default();
        let n_ext = self.interp.ext.len();
        for (i, op) in ops.iter().enumerate() {
            let resolved = self.prefer_ext_receiver(self.model.resolve(op));
            // Fitting the argument count to the callee may use more arguments: resolve again.
            let resolved = self.model.resolve(&self.fit_arity(resolved));
            let op = &resolved;
            if let Ok(mut log) = LOG.lock() {
                if i == 0 {
                    log.clear();
                    if let Ok(mut n) = RUNTIME_NAMES.lock() {
                        n.clear();
                    }
                }
                log.push(op.clone());
                dump_resolved(&log, self.interp);
            }
            let Some(plan) = self.model.plan(op, n_ext) else {
                summary.skipped += 1;
                continue;
            };
            CURRENT_INDEX.store(i, Ordering::SeqCst);
            summary.executed += 1;
            let violation = |kind, detail: String| Violation {
                kind,
                op_index: i,
                op: describe_at(op, i),
                detail,
                at: None,
            };
            let snap = if self.config.checks {
                // SAFETY: live slots hold live objects (owned, or borrowed within their epoch).
                unsafe { Snapshot::take(self.live_objects()) }
            } else {
                Snapshot::default()
            };
            let mut pred = Prediction::default();
            // SAFETY: `plan` only names live slots for reads and owned slots for steals/decrefs.
            let done = unsafe { self.perform(op, &snap, &mut pred) }?;
            if done.skipped {
                summary.executed -= 1;
                summary.skipped += 1;
                continue;
            }
            let problem = check_and_clear(done.ret);
            if let (Some(p), true) = (problem, self.config.checks) {
                if !done.result.is_null() && plan.result == Some(crate::ops::model::ResultKind::New)
                {
                    // SAFETY: a new reference no slot took; released so the campaign can go on.
                    unsafe { shim_Py_DECREF(done.result) };
                }
                return Err(violation(
                    ViolationKind::ExceptionState,
                    format!("{} {p}", op.name()),
                ));
            }
            // For ops with a result: whether there is none; for the others: whether they failed.
            let null = if plan.result.is_some() {
                done.result.is_null()
            } else {
                matches!(
                    done.ret,
                    Ret::Object(true) | Ret::Lookup(true) | Ret::Status(true)
                )
            };
            if !done.result.is_null() {
                // SAFETY: GIL held; the result was just returned, so it is live.
                unsafe { crate::gcslots::note(done.result) };
            }
            // Result of a new-reference call: +1 on an object we already knew.
            if !done.result.is_null() && plan.result == Some(crate::ops::model::ResultKind::New) {
                pred.add(done.result, 1);
            }
            // Writes release what the destination owned before.
            let old = self.owned_by_written_slots(&plan);
            self.model.apply(op, &plan, null && done.result.is_null());
            for &(s, u) in &plan.uses {
                if u == Use::Write {
                    self.ptrs[s] = if self.model.slots[s] == Hold::Empty {
                        std::ptr::null_mut()
                    } else {
                        done.result
                    };
                }
            }
            if self.config.checks {
                // SAFETY: objects predicted to survive are held by slots or containers.
                let mismatches = unsafe { compare(&snap, &pred) };
                if let Some(m) = mismatches.first() {
                    if m.actual > m.expected {
                        // A leak leaves the heap intact: release the overwritten references
                        // (a keep-going campaign continues after it).
                        for &o in &old {
                            // SAFETY: the written slots owned these references.
                            unsafe { shim_Py_DECREF(o) };
                        }
                    }
                    let kind = if m.actual > m.expected {
                        ViolationKind::Leak
                    } else {
                        ViolationKind::OverDecref
                    };
                    let slot = (0..NSLOTS)
                        .find(|&s| self.ptrs[s] as usize == m.object)
                        .map_or("?".into(), |s| format!("s{s}"));
                    return Err(violation(
                        kind,
                        format!(
                            "refcount of {slot} ({}) expected {} actual {} (before the op: {})",
                            // SAFETY: the object is alive (its count did not drop to 0).
                            unsafe { type_name(m.object as *mut PyObject) },
                            m.expected,
                            m.actual,
                            m.before
                        ),
                    ));
                }
            }
            // Now drop old destination objects (after the comparison, which excluded them).
            for o in old {
                self.release_one(o, i, op)?;
            }
        }
        CURRENT_INDEX.store(ops.len().saturating_sub(1), Ordering::SeqCst);
        self.finish(ops)?;
        Ok(summary)
    }

    /// For each written slot that owned references, collect them (released after the checks).
    /// The references a written slot owned before the op; released after the refcount
    /// comparison (which therefore does not see them).
    fn owned_by_written_slots(&self, plan: &Plan) -> Vec<*mut PyObject> {
        let mut old = Vec::new();
        for &(s, u) in &plan.uses {
            if u == Use::Write {
                if let Hold::Owned { refs } = self.model.slots[s] {
                    for _ in 0..refs {
                        old.push(self.ptrs[s]);
                    }
                }
            }
        }
        old
    }

    /// Release one owned reference; when it is the last, audit GC traversal on the way out.
    fn release_one(&mut self, o: *mut PyObject, i: usize, op: &Op) -> Result<(), Violation> {
        // SAFETY: the caller owned this reference and gives it up here.
        unsafe {
            if self.config.checks
                && shim_Py_REFCNT(o) == 1
                && shim_Py_IsImmortal(o) == 0
                && gc::is_gc(o)
            {
                let candidates: Vec<*mut PyObject> = self
                    .live_objects()
                    .into_iter()
                    .filter(|&c| c != o)
                    .collect();
                let tn = type_name(o);
                // tp_clear leftovers are judged for extension types, not for the interpreter's
                // core types (fuzz-stdlib's `builtins`): those keep references across tp_clear
                // by design (a frame keeps its function and code, which the frame's code reads
                // while the collector runs; a cycle through them is broken by the function's
                // own tp_clear). Their traversal (missing or extra Py_VISIT) is still audited.
                let clear_first = self.interp.is_ext_type(o)
                    && self.interp.ext_module.as_deref() != Some("builtins");
                let (bad, leftovers) = gc::release_audited(o, &candidates, clear_first);
                if let Some(l) = leftovers.first() {
                    return Err(Violation {
                        kind: ViolationKind::GcClear,
                        op_index: i,
                        op: describe(op),
                        detail: format!(
                            "{tn}: after tp_clear, tp_traverse still visits {} reference(s) to a {} (tp_clear must drop every reference a cycle can run through)",
                            l.count, l.child_type
                        ),
                        at: Some(tn.clone()),
                    });
                }
                if let Some(m) = bad.first() {
                    let slot = (0..NSLOTS)
                        .find(|&s| self.ptrs[s] as usize == m.child)
                        .map_or("?".into(), |s| format!("s{s}"));
                    let what = if m.released > m.visited as isize {
                        "missing Py_VISIT"
                    } else {
                        "visits a reference it does not own"
                    };
                    return Err(Violation {
                        kind: ViolationKind::GcTraversal,
                        op_index: i,
                        op: describe(op),
                        detail: format!(
                            "{tn}: dealloc released {} reference(s) to the {} in {slot}, tp_traverse visited it {} time(s) ({what})",
                            m.released, m.child_type, m.visited
                        ),
                        at: Some(tn.clone()),
                    });
                }
            } else {
                shim_Py_DECREF(o);
            }
        }
        Ok(())
    }

    /// Release everything still owned, then clear the scratch module.
    fn finish(&mut self, ops: &[Op]) -> Result<(), Violation> {
        let last = ops.len().saturating_sub(1);
        let end = Op::GcCollect { generation: 2 };
        let op = ops.last().unwrap_or(&end);
        for (s, refs) in self.model.owned() {
            let o = self.ptrs[s];
            self.model.slots[s] = Hold::Empty;
            self.model.epoch += 1;
            self.ptrs[s] = std::ptr::null_mut();
            for _ in 0..refs {
                self.release_one(o, last, op)?;
            }
        }
        // SAFETY: the scratch module was created by `new` and is released once.
        unsafe {
            shim_Py_DECREF(self.scratch);
            self.scratch = std::ptr::null_mut();
            if self.config.collect {
                raw::PyGC_Collect();
            }
        }
        Ok(())
    }

    /// Perform one legal op: dispatch to the method of its family. Fills `pred` with the
    /// refcount changes it should cause.
    ///
    /// # Safety
    /// GIL held; `op` was planned by the model for the current slots: the slots it reads are
    /// live (owned, or borrowed within their epoch), the slots it steals from or releases are
    /// owned; `snap` was taken right before the op.
    unsafe fn perform(
        &mut self,
        op: &Op,
        snap: &Snapshot,
        pred: &mut Prediction,
    ) -> Result<Done, Violation> {
        use Op::*;
        // SAFETY (every arm): the caller's contract, passed on unchanged.
        unsafe {
            match op {
                NewInt { .. } | NewFloat { .. } | NewStr { .. } | NewBytes { .. } => {
                    Ok(Self::new_scalar(op))
                }
                NewTuple { .. }
                | NewList { .. }
                | NewListOf { .. }
                | NewDict { .. }
                | NewSet { .. } => Self::new_container(op),
                NewInstance { .. } | NewCallable { .. } => Ok(self.new_python_object(op, pred)),
                Dup { .. } | Incref { .. } | Decref { .. } | Release { .. } => {
                    self.ownership_op(op, snap, pred)
                }
                ListAppend { .. }
                | ListInsert { .. }
                | ListSetItem { .. }
                | ListGetItem { .. }
                | ListDelSlice { .. }
                | ListSort { .. } => Ok(self.list_op(op, pred)),
                TupleSetItem { .. } | TupleGetItem { .. } => Ok(self.tuple_op(op, pred)),
                DictSetItem { .. }
                | DictGetItem { .. }
                | DictGetItemRef { .. }
                | DictDelItem { .. }
                | DictClear { .. }
                | SetAdd { .. } => Ok(self.dict_set_op(op, pred)),
                SetAttr { .. } | GetAttr { .. } | ModuleAddRef { .. } | ModuleAdd { .. } => {
                    Ok(self.attr_op(op, pred))
                }
                RichCompare { .. } | Hash { .. } | Repr { .. } | Call { .. } => {
                    Ok(self.object_protocol_op(op, pred))
                }
                ErrRoundTrip { .. } | GcCollect { .. } => self.runtime_op(op, pred),
                CallExt { .. }
                | NewValue { .. }
                | CallMethod { .. }
                | Protocol { .. }
                | FailNext { .. } => self.api_op(op, pred),
            }
        }
    }

    /// The object in slot `s`.
    fn ptr(&self, s: &crate::ops::Slot) -> *mut PyObject {
        self.ptrs[s.index()]
    }

    /// `NewInt`, `NewFloat`, `NewStr`, `NewBytes`: a new reference from a C value.
    ///
    /// # Safety
    /// GIL held.
    unsafe fn new_scalar(op: &Op) -> Done {
        // SAFETY: GIL held; each constructor returns a new reference or NULL with an
        // exception; the buffers outlive the calls, which copy them.
        let r = unsafe {
            match op {
                Op::NewInt { value, .. } => raw::PyLong_FromLongLong(*value),
                Op::NewFloat { value, .. } => raw::PyFloat_FromDouble(*value),
                Op::NewStr { text, .. } => {
                    let t = clip_str(text);
                    raw::PyUnicode_FromStringAndSize(t.as_ptr() as *const _, t.len() as isize)
                }
                Op::NewBytes { data, .. } => {
                    let d = clip_bytes(data);
                    raw::PyBytes_FromStringAndSize(d.as_ptr() as *const _, d.len() as isize)
                }
                other => unreachable!("{} is not a scalar constructor", other.name()),
            }
        };
        Done::object(r)
    }

    /// `NewTuple` (of `None`s), `NewList`, `NewListOf` (small floats), `NewDict`, `NewSet`:
    /// a new, freshly filled container.
    ///
    /// # Safety
    /// GIL held.
    unsafe fn new_container(op: &Op) -> Result<Done, Violation> {
        let r = match op {
            Op::NewTuple { len, .. } => {
                let n = (*len % 5) as isize;
                // SAFETY: GIL held; PyTuple_New returns a new reference or NULL.
                let t = unsafe { raw::PyTuple_New(n) };
                if !t.is_null() {
                    for k in 0..n {
                        // SAFETY: GIL held; `t` is a fresh tuple of length `n` we own; None is
                        // borrowed, INCREF'd, and that reference is stolen by SET_ITEM.
                        unsafe {
                            let none = shim_Py_None();
                            shim_Py_INCREF(none);
                            shim_PyTuple_SET_ITEM(t, k, none);
                        }
                    }
                }
                t
            }
            // SAFETY: GIL held; a new reference or NULL.
            Op::NewList { .. } => unsafe { raw::PyList_New(0) },
            Op::NewListOf { len, .. } => {
                // SAFETY: GIL held; a new reference or NULL.
                let l = unsafe { raw::PyList_New(0) };
                for k in 0..(*len % 5) {
                    // SAFETY: GIL held; `item` is a new reference; PyList_Append does not
                    // steal it (checked non-NULL first), so ours is released after it.
                    unsafe {
                        let item = raw::PyFloat_FromDouble(f64::from(k) + 0.5);
                        if l.is_null() || item.is_null() || raw::PyList_Append(l, item) != 0 {
                            return Err(Violation {
                                kind: ViolationKind::ExceptionState,
                                op_index: CURRENT_INDEX.load(Ordering::SeqCst),
                                op: describe(op),
                                detail: "building a small list of floats failed".into(),
                                at: None,
                            });
                        }
                        shim_Py_DECREF(item); // the list holds the only reference now
                    }
                }
                l
            }
            // SAFETY: GIL held; a new reference or NULL.
            Op::NewDict { .. } => unsafe { raw::PyDict_New() },
            // SAFETY: GIL held; NULL iterable = empty set; a new reference or NULL.
            Op::NewSet { .. } => unsafe { raw::PySet_New(std::ptr::null_mut()) },
            other => unreachable!("{} is not a container constructor", other.name()),
        };
        Ok(Done::object(r))
    }

    /// `NewInstance` (a prelude class called) and `NewCallable` (a prelude closure over a
    /// target slot; only the clearer holds a reference to it).
    ///
    /// # Safety
    /// GIL held; the target slot of a `NewCallable` is live.
    unsafe fn new_python_object(&self, op: &Op, pred: &mut Prediction) -> Done {
        match op {
            Op::NewInstance { class, .. } => {
                let cls = match class {
                    PyClass::Plain => self.interp.plain,
                    PyClass::Evil => self.interp.evil,
                };
                // SAFETY: GIL held; the class is borrowed from the prelude (alive forever);
                // a new reference or NULL.
                Done::object(unsafe { raw::PyObject_CallNoArgs(cls) })
            }
            Op::NewCallable { kind, target, .. } => {
                let k = match kind {
                    CallableKind::Clearer => 0,
                    CallableKind::Noop => 1,
                    CallableKind::Raiser => 2,
                };
                // SAFETY: GIL held; `kobj` is a new reference released after the call; the
                // target is live (caller's contract); the result is new or NULL.
                let r = unsafe {
                    let kobj = raw::PyLong_FromLong(k);
                    let r = raw::PyObject_CallFunctionObjArgs(
                        self.interp.make_callable,
                        kobj,
                        self.ptr(target),
                        std::ptr::null_mut::<PyObject>(),
                    );
                    shim_Py_DECREF(kobj);
                    r
                };
                // Only the clearer closes over (holds a reference to) the target.
                if *kind == CallableKind::Clearer {
                    pred.add(self.ptr(target), 1);
                }
                Done::object(r)
            }
            other => unreachable!("{} is not a Python object constructor", other.name()),
        }
    }

    /// `Dup`, `Incref`, `Decref`, `Release`: reference counting by hand; a release that may
    /// drop the last reference goes through [`Self::release_one`] (GC audit on the way out).
    ///
    /// # Safety
    /// GIL held; the slot is live, and owned for `Decref` and `Release`; `snap` was taken
    /// right before the op.
    unsafe fn ownership_op(
        &mut self,
        op: &Op,
        snap: &Snapshot,
        pred: &mut Prediction,
    ) -> Result<Done, Violation> {
        match op {
            Op::Dup { src, .. } => {
                let o = self.ptr(src);
                // SAFETY: GIL held; `o` is live; the new reference goes to the destination.
                unsafe { shim_Py_INCREF(o) };
                Ok(Done {
                    result: o,
                    ..Done::unchecked()
                })
            }
            Op::Incref { slot } => {
                // SAFETY: GIL held; the slot's object is live; the model counts the reference.
                unsafe { shim_Py_INCREF(self.ptr(slot)) };
                pred.add(self.ptr(slot), 1);
                Ok(Done::unchecked())
            }
            Op::Decref { slot } => {
                let o = self.ptr(slot);
                pred.add(o, -1);
                if snap.get(o) == Some(1) {
                    self.release_one(o, CURRENT_INDEX.load(Ordering::SeqCst), op)?;
                } else {
                    // SAFETY: GIL held; the slot owns this reference and gives it up (with
                    // checks on, a last reference goes through the audited release above).
                    unsafe { shim_Py_DECREF(o) };
                }
                Ok(Done::unchecked())
            }
            Op::Release { slot } => {
                let s = slot.index();
                if let Hold::Owned { refs } = self.model.slots[s] {
                    let o = self.ptrs[s];
                    pred.add(o, -(refs as isize));
                    for _ in 0..refs {
                        self.release_one(o, CURRENT_INDEX.load(Ordering::SeqCst), op)?;
                    }
                }
                Ok(Done::unchecked())
            }
            other => unreachable!("{} is not an ownership op", other.name()),
        }
    }

    /// `ListAppend`, `ListInsert`, `ListSetItem` (steals the item), `ListGetItem` (borrowed),
    /// `ListDelSlice`, `ListSort` (runs `__lt__`); skipped when the slot holds no list.
    ///
    /// # Safety
    /// GIL held; the slots read are live; the item of `ListSetItem` is owned (stolen).
    unsafe fn list_op(&self, op: &Op, pred: &mut Prediction) -> Done {
        let l = match op {
            Op::ListAppend { list, .. }
            | Op::ListInsert { list, .. }
            | Op::ListSetItem { list, .. }
            | Op::ListGetItem { list, .. }
            | Op::ListDelSlice { list, .. }
            | Op::ListSort { list } => self.ptr(list),
            other => unreachable!("{} is not a list op", other.name()),
        };
        // SAFETY: GIL held; the slot's object is live.
        if unsafe { shim_PyList_Check(l) } == 0 {
            return Done::skip();
        }
        // SAFETY (every arm): GIL held; `l` is a live list, `it` a live object; the item
        // accessors return borrowed references, read before the op changes the list.
        unsafe {
            match op {
                Op::ListAppend { item, .. } | Op::ListInsert { item, .. } => {
                    let it = self.ptr(item);
                    let rc = match op {
                        Op::ListInsert { index, .. } => raw::PyList_Insert(l, *index as isize, it),
                        _ => raw::PyList_Append(l, it),
                    };
                    if rc == 0 {
                        pred.add(it, 1);
                    }
                    Done::status(rc)
                }
                Op::ListSetItem { index, item, .. } => {
                    let it = self.ptr(item);
                    let i = *index as isize;
                    let in_range = i >= 0 && i < shim_PyList_GET_SIZE(l);
                    if in_range {
                        pred.drop_ref(shim_PyList_GET_ITEM(l, i));
                    } else {
                        pred.drop_ref(it); // stolen even on failure
                    }
                    Done::status(raw::PyList_SetItem(l, i, it))
                }
                Op::ListGetItem { index, .. } => {
                    Done::object(raw::PyList_GetItem(l, *index as isize))
                }
                Op::ListDelSlice { lo, hi, .. } => {
                    let n = shim_PyList_GET_SIZE(l);
                    let (a, b) = ((*lo as isize).clamp(0, n), (*hi as isize).clamp(0, n));
                    for k in a..b.max(a) {
                        pred.drop_ref(shim_PyList_GET_ITEM(l, k));
                    }
                    Done::status(raw::PyList_SetSlice(
                        l,
                        *lo as isize,
                        *hi as isize,
                        std::ptr::null_mut(),
                    ))
                }
                Op::ListSort { .. } => {
                    pred.give_up(); // runs __lt__
                    Done::status(raw::PyList_Sort(l))
                }
                other => unreachable!("{} is not a list op", other.name()),
            }
        }
    }

    /// `TupleSetItem` (steals the item; the old item is released only when the tuple is not
    /// shared) and `TupleGetItem` (borrowed); skipped when the slot holds no tuple.
    ///
    /// # Safety
    /// GIL held; the slots read are live; the item of `TupleSetItem` is owned (stolen).
    unsafe fn tuple_op(&self, op: &Op, pred: &mut Prediction) -> Done {
        match op {
            Op::TupleSetItem { tuple, index, item } => {
                let (t, it) = (self.ptr(tuple), self.ptr(item));
                // SAFETY: GIL held; `t` and `it` are live; the tuple's items are borrowed and
                // read before PyTuple_SetItem steals `it`.
                unsafe {
                    if shim_PyTuple_Check(t) == 0 {
                        return Done::skip();
                    }
                    let i = *index as isize;
                    if i >= 0 && i < shim_PyTuple_GET_SIZE(t) && shim_Py_REFCNT(t) == 1 {
                        pred.drop_ref(raw::PyTuple_GetItem(t, i));
                    } else {
                        pred.drop_ref(it);
                    }
                    Done::status(raw::PyTuple_SetItem(t, i, it))
                }
            }
            Op::TupleGetItem { tuple, index, .. } => {
                let t = self.ptr(tuple);
                // SAFETY: GIL held; `t` is live; the item is borrowed.
                unsafe {
                    if shim_PyTuple_Check(t) == 0 {
                        return Done::skip();
                    }
                    Done::object(raw::PyTuple_GetItem(t, *index as isize))
                }
            }
            other => unreachable!("{} is not a tuple op", other.name()),
        }
    }

    /// `DictSetItem` (predicted only for plain keys, whose hashing and comparison run no
    /// Python code), `DictGetItem` (borrowed), `DictGetItemRef` (new), `DictDelItem`,
    /// `DictClear`, `SetAdd`; skipped when the slot holds no dict (no set for `SetAdd`).
    ///
    /// # Safety
    /// GIL held; the slots read are live.
    unsafe fn dict_set_op(&self, op: &Op, pred: &mut Prediction) -> Done {
        let (d, is_kind): (_, unsafe extern "C" fn(*mut PyObject) -> _) = match op {
            Op::DictSetItem { dict, .. }
            | Op::DictGetItem { dict, .. }
            | Op::DictGetItemRef { dict, .. }
            | Op::DictDelItem { dict, .. }
            | Op::DictClear { dict } => (self.ptr(dict), shim_PyDict_Check),
            Op::SetAdd { set, .. } => (self.ptr(set), shim_PyAnySet_Check),
            other => unreachable!("{} is not a dict or set op", other.name()),
        };
        // SAFETY: GIL held; the slot's object is live.
        if unsafe { is_kind(d) } == 0 {
            return Done::skip();
        }
        // SAFETY (every arm): GIL held; `d` is a live dict (a set for `SetAdd`), keys and
        // values live; none of these calls steals a reference; GetItemWithError returns a
        // borrowed reference, GetItemRef a new one into `out`.
        unsafe {
            match op {
                Op::DictSetItem { key, value, .. } => {
                    let (k, v) = (self.ptr(key), self.ptr(value));
                    if self.plain_dict(d) && is_plain_key(k) {
                        let old = raw::PyDict_GetItemWithError(d, k);
                        if old.is_null() {
                            pred.add(k, 1);
                        } else {
                            pred.drop_ref(old);
                        }
                        pred.add(v, 1);
                    } else {
                        pred.give_up();
                    }
                    let rc = raw::PyDict_SetItem(d, k, v);
                    if rc != 0 {
                        pred.give_up();
                    }
                    Done::status(rc)
                }
                Op::DictGetItem { key, .. } => {
                    pred.give_up();
                    let r = raw::PyDict_GetItemWithError(d, self.ptr(key));
                    Done {
                        ret: Ret::Lookup(r.is_null()),
                        result: r,
                        skipped: false,
                    }
                }
                Op::DictGetItemRef { key, .. } => {
                    pred.give_up();
                    let mut out: *mut PyObject = std::ptr::null_mut();
                    let rc = raw::PyDict_GetItemRef(d, self.ptr(key), &mut out);
                    // 1 found, 0 missing (no exception), -1 error.
                    Done {
                        ret: if rc == 1 {
                            Ret::Object(out.is_null())
                        } else {
                            Ret::Status(rc == -1)
                        },
                        result: out,
                        skipped: false,
                    }
                }
                Op::DictDelItem { key, .. } => {
                    pred.give_up();
                    Done::status(raw::PyDict_DelItem(d, self.ptr(key)))
                }
                Op::DictClear { .. } => {
                    pred.give_up();
                    raw::PyDict_Clear(d);
                    Done::unchecked()
                }
                Op::SetAdd { item, .. } => {
                    pred.give_up();
                    Done::status(raw::PySet_Add(d, self.ptr(item)))
                }
                other => unreachable!("{} is not a dict or set op", other.name()),
            }
        }
    }

    /// `SetAttr`, `GetAttr` (predicted only on prelude instances, whose attributes are plain
    /// `__dict__` entries), `ModuleAddRef` and `ModuleAdd` (steals the value, even on
    /// failure) on the scratch module.
    ///
    /// # Safety
    /// GIL held; the slots read are live; the value of `ModuleAdd` is owned (stolen).
    unsafe fn attr_op(&self, op: &Op, pred: &mut Prediction) -> Done {
        match op {
            Op::SetAttr { obj, name, value } => {
                let (o, v) = (self.ptr(obj), self.ptr(value));
                let n = self.interp.names[*name as usize];
                // SAFETY: GIL held; `o`, `v` live; `n` an interned name kept forever;
                // GetOptionalAttr gives a new reference into `prev`, released at once.
                unsafe {
                    if self.is_instance(o) {
                        // The old value (if any) loses the instance's reference.
                        let mut prev: *mut PyObject = std::ptr::null_mut();
                        if raw::PyObject_GetOptionalAttr(o, n, &mut prev) == 1 {
                            // Give back GetOptionalAttr's reference first, so drop_ref sees the
                            // count from before the op (the instance's reference keeps it
                            // alive).
                            shim_Py_DECREF(prev);
                            pred.drop_ref(prev);
                        }
                        raw::PyErr_Clear();
                        pred.add(v, 1);
                    } else {
                        pred.give_up();
                    }
                    Done::status(raw::PyObject_SetAttr(o, n, v))
                }
            }
            Op::GetAttr { obj, name, .. } => {
                let o = self.ptr(obj);
                // SAFETY: GIL held; `o` live; the result is a new reference or NULL.
                unsafe {
                    if !self.is_instance(o) {
                        pred.give_up();
                    }
                    Done::object(raw::PyObject_GetAttr(o, self.interp.names[*name as usize]))
                }
            }
            Op::ModuleAddRef { obj, name } | Op::ModuleAdd { obj, name } => {
                let o = self.ptr(obj);
                let n = self.interp.names[*name as usize];
                let cname = CString::new(name.as_str()).unwrap();
                // SAFETY: GIL held; the scratch module is alive until `finish`; its dict and
                // the previous value are borrowed; PyModule_Add steals `o` (owned),
                // PyModule_AddObjectRef takes a new reference of its own.
                unsafe {
                    let md = raw::PyModule_GetDict(self.scratch);
                    let prev = raw::PyDict_GetItemWithError(md, n);
                    pred.drop_ref(prev);
                    let rc = if let Op::ModuleAdd { .. } = op {
                        raw::PyModule_Add(self.scratch, cname.as_ptr(), o)
                    } else {
                        pred.add(o, 1);
                        raw::PyModule_AddObjectRef(self.scratch, cname.as_ptr(), o)
                    };
                    Done::status(rc)
                }
            }
            other => unreachable!("{} is not an attribute op", other.name()),
        }
    }

    /// `RichCompare`, `Hash`, `Repr`, `Call`: the abstract object protocol, which runs Python
    /// code (nothing is predicted).
    ///
    /// # Safety
    /// GIL held; the slots read are live.
    unsafe fn object_protocol_op(&self, op: &Op, pred: &mut Prediction) -> Done {
        // SAFETY (every arm): GIL held; the operands are live and borrowed; the results are
        // new references or NULL (-1 for the hash) with an exception.
        unsafe {
            match op {
                Op::RichCompare { a, b, op: cmp, .. } => {
                    pred.give_up();
                    Done::object(raw::PyObject_RichCompare(
                        self.ptr(a),
                        self.ptr(b),
                        (*cmp % 6) as i32,
                    ))
                }
                Op::Hash { obj } => {
                    pred.give_up();
                    let h = raw::PyObject_Hash(self.ptr(obj));
                    Done {
                        ret: Ret::Status(h == -1),
                        ..Done::unchecked()
                    }
                }
                Op::Repr { obj, .. } => {
                    let o = self.ptr(obj);
                    // repr(repr(...)) of a string doubles its escapes: cap it before it eats
                    // memory.
                    if shim_Py_TYPE(o) == &raw mut raw::PyUnicode_Type
                        && raw::PyUnicode_GetLength(o) > 256
                    {
                        return Done::skip();
                    }
                    pred.give_up();
                    Done::object(raw::PyObject_Repr(o))
                }
                Op::Call { callable, arg, .. } => {
                    pred.give_up();
                    let c = self.ptr(callable);
                    if raw::PyCallable_Check(c) == 0 {
                        return Done::skip();
                    }
                    Done::object(raw::PyObject_CallOneArg(c, self.ptr(arg)))
                }
                other => unreachable!("{} is not an object protocol op", other.name()),
            }
        }
    }

    /// `ErrRoundTrip` (raise, fetch: the exception is the result) and `GcCollect`.
    ///
    /// # Safety
    /// GIL held.
    unsafe fn runtime_op(&self, op: &Op, pred: &mut Prediction) -> Result<Done, Violation> {
        match op {
            Op::ErrRoundTrip { .. } => {
                // SAFETY: GIL held; the exception type and message are static; PyErr_Occurred
                // is borrowed; PyErr_GetRaisedException hands over a new reference.
                unsafe {
                    raw::PyErr_SetString(raw::PyExc_ValueError, c"capisan".as_ptr());
                    if raw::PyErr_Occurred().is_null() {
                        return Err(Violation {
                            kind: ViolationKind::ExceptionState,
                            op_index: CURRENT_INDEX.load(Ordering::SeqCst),
                            op: describe(op),
                            detail: "PyErr_SetString left no exception set".into(),
                            at: None,
                        });
                    }
                    Ok(Done::object(raw::PyErr_GetRaisedException()))
                }
            }
            Op::GcCollect { generation } => {
                pred.give_up();
                // SAFETY: GIL held; `g` and the result are new references released here.
                unsafe {
                    let g = raw::PyLong_FromLong((*generation % 3) as std::os::raw::c_long);
                    let r = raw::PyObject_CallOneArg(self.interp.gc_collect, g);
                    shim_Py_DECREF(g);
                    if r.is_null() {
                        raw::PyErr_Clear();
                    } else {
                        shim_Py_DECREF(r);
                    }
                }
                Ok(Done::unchecked())
            }
            other => unreachable!("{} is not a runtime op", other.name()),
        }
    }

    /// The API vocabulary: `CallExt` and `CallMethod` (checked calls, see
    /// [`Self::call_checked`]), `NewValue` (a vocabulary value), `Protocol` (a protocol of
    /// py/api.py), and `FailNext` (arms allocation failures for the next `CallExt`). Nothing
    /// is predicted: these run Python code.
    ///
    /// # Safety
    /// GIL held; the slots read are live.
    unsafe fn api_op(&mut self, op: &Op, pred: &mut Prediction) -> Result<Done, Violation> {
        match op {
            Op::CallExt { func, kw, .. } => {
                pred.give_up();
                let f = *func as usize % self.interp.ext.len();
                // SAFETY: GIL held; the argument slots are live (caller's contract).
                unsafe { self.call_ext(op, f, op.ext_args(), *kw) }
            }
            Op::NewValue { code, .. } => {
                // Factories run Python code (a collection may run too): nothing is predicted.
                pred.give_up();
                // SAFETY: GIL held; `c` is a new reference released here; the result is new
                // or NULL.
                let r = unsafe {
                    let c = raw::PyLong_FromLong(std::os::raw::c_long::from(*code));
                    let r = raw::PyObject_CallOneArg(self.interp.make_value, c);
                    shim_Py_DECREF(c);
                    r
                };
                Ok(Done::object(r))
            }
            // With an extension under test, methods of CPython's own objects are CPython
            // fuzzing: the fuzzer would chase their coverage instead of the extension's.
            Op::CallMethod { recv, .. }
                if self.interp.ext_module.is_some()
                    // SAFETY: GIL held; the receiver slot is live.
                    && !unsafe { self.interp.is_ext_type(self.ptr(recv)) } =>
            {
                Ok(Done::skip())
            }
            Op::CallMethod {
                recv, method, kw, ..
            } => {
                pred.give_up();
                // SAFETY: GIL held; the receiver and argument slots are live.
                unsafe { self.call_method(op, *recv, *method, op.ext_args(), *kw) }
            }
            Op::Protocol {
                obj, which, arg, ..
            } => {
                pred.give_up();
                // SAFETY: GIL held; the object slot is live, and so is the argument's unless it
                // names a fresh vocabulary value (a new reference in `temps`, released here).
                unsafe {
                    let (argv, temps) = self.call_args(&[*arg]);
                    let done = self.call_protocol(self.ptr(obj), *which, argv[0]);
                    release_all(&temps);
                    Ok(done)
                }
            }
            Op::FailNext { nth, count } => {
                self.fail_next = Some(crate::ops::FailSpec {
                    nth: *nth,
                    count: *count,
                });
                Ok(Done::unchecked())
            }
            other => unreachable!("{} is not an API op", other.name()),
        }
    }

    /// `protocol(which, o, a)` of py/api.py, its name noted for the op log.
    ///
    /// # Safety
    /// GIL held; `o` and `a` live.
    unsafe fn call_protocol(&self, o: *mut PyObject, which: u8, a: *mut PyObject) -> Done {
        // SAFETY: GIL held; `protocol_name` is borrowed from the prelude.
        let name = unsafe { self.py_name(self.interp.protocol_name, None, which) };
        // Setting or deleting every data attribute of a CPython object, or a weak reference to
        // one, is CPython fuzzing, not the extension's (as for `CallMethod`): with an extension
        // under test these run on that extension's objects only.
        let own_only = matches!(name.as_str(), "setattrs" | "delattrs" | "weakref");
        note_name(name);
        // SAFETY: GIL held; `o` live (caller's contract).
        if own_only && self.interp.ext_module.is_some() && !unsafe { self.interp.is_ext_type(o) } {
            return Done::skip();
        }
        // SAFETY: GIL held; `t` is a fresh 3-tuple we own: SET_ITEM steals the new int and the
        // references INCREF'd for it; `t` is released after the call, whose result is new or
        // NULL.
        let r = unsafe {
            let t = raw::PyTuple_New(3);
            shim_PyTuple_SET_ITEM(
                t,
                0,
                raw::PyLong_FromLong(std::os::raw::c_long::from(which)),
            );
            shim_Py_INCREF(o);
            shim_PyTuple_SET_ITEM(t, 1, o);
            shim_Py_INCREF(a);
            shim_PyTuple_SET_ITEM(t, 2, a);
            let r = raw::PyObject_Call(self.interp.protocol, t, std::ptr::null_mut());
            shim_Py_DECREF(t);
            r
        };
        Done::object(r)
    }

    /// `str(helper(idx))` or `str(helper(recv, idx))` — a name for the op log — or `"?"`.
    ///
    /// # Safety
    /// GIL held; `recv` (when given) a live object.
    unsafe fn py_name(
        &self,
        helper: *mut PyObject,
        recv: Option<*mut PyObject>,
        idx: u8,
    ) -> String {
        // SAFETY: GIL held, `recv` live (caller's contract); `helper` is borrowed from the
        // prelude; the new int is stolen by SET_ITEM (or released after the one-argument call),
        // `t`, `r` and `u` are new references released here; the UTF-8 text is borrowed from
        // `u` and copied before `u` is released.
        unsafe {
            let i = raw::PyLong_FromLong(std::os::raw::c_long::from(idx));
            let r = match recv {
                Some(o) => {
                    let t = raw::PyTuple_New(2);
                    shim_Py_INCREF(o);
                    shim_PyTuple_SET_ITEM(t, 0, o);
                    shim_PyTuple_SET_ITEM(t, 1, i);
                    let r = raw::PyObject_Call(helper, t, std::ptr::null_mut());
                    shim_Py_DECREF(t);
                    r
                }
                None => {
                    let r = raw::PyObject_CallOneArg(helper, i);
                    shim_Py_DECREF(i);
                    r
                }
            };
            if r.is_null() {
                raw::PyErr_Clear();
                return "?".into();
            }
            let u = raw::PyObject_Str(r);
            shim_Py_DECREF(r);
            if u.is_null() {
                raw::PyErr_Clear();
                return "?".into();
            }
            let c = raw::PyUnicode_AsUTF8(u);
            let name = if c.is_null() {
                raw::PyErr_Clear();
                "?".to_string()
            } else {
                std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned()
            };
            shim_Py_DECREF(u);
            name
        }
    }

    /// The argument objects of a call: slot objects, and fresh vocabulary values for argument
    /// bytes of 0x80 or more ([`crate::ops::Slot::value_code`]); the values are returned
    /// again as `temps`, new references the caller releases after the call.
    ///
    /// # Safety
    /// GIL held; the argument slots that name no value code are live.
    unsafe fn call_args(
        &self,
        args: &[crate::ops::Slot],
    ) -> (Vec<*mut PyObject>, Vec<*mut PyObject>) {
        let mut argv = Vec::new();
        let mut temps = Vec::new();
        for a in args.iter().take(3) {
            match a.value_code() {
                None => argv.push(self.ptrs[a.index()]),
                Some(code) => {
                    // SAFETY: GIL held; `c` is a new reference released here; `v` is a new
                    // reference (the value, or an empty tuple) handed to the caller in `temps`.
                    let v = unsafe {
                        let c = raw::PyLong_FromLong(std::os::raw::c_long::from(code));
                        let v = raw::PyObject_CallOneArg(self.interp.make_value, c);
                        shim_Py_DECREF(c);
                        if v.is_null() {
                            raw::PyErr_Clear();
                            raw::Py_BuildValue(c"()".as_ptr())
                        } else {
                            v
                        }
                    };
                    temps.push(v);
                    argv.push(v);
                }
            }
        }
        (argv, temps)
    }

    /// Method number `method` of `recv`'s type (py/api.py `method_call`), checked like an
    /// extension call when the receiver is one of the extension's own types (a method of
    /// CPython's own types gets the exception-state check and the sequence's leak check).
    ///
    /// # Safety
    /// GIL held; the receiver and argument slots are live.
    unsafe fn call_method(
        &mut self,
        op: &Op,
        recv: crate::ops::Slot,
        method: u8,
        args: &[crate::ops::Slot],
        kw: u8,
    ) -> Result<Done, Violation> {
        let r = self.ptrs[recv.index()];
        // SAFETY: GIL held; `r` is live (caller's contract).
        let (tname, mname) = unsafe {
            (
                type_name(r),
                self.py_name(self.interp.method_name, Some(r), method),
            )
        };
        let short = tname.rsplit('.').next().unwrap_or(&tname).to_string();
        let name = format!("{short}.{mname}");
        note_name(name.clone());
        // SAFETY: GIL held; the argument slots are live.
        let (argv, temps) = unsafe { self.call_args(args) };
        // SAFETY: GIL held; `r` and `argv` are live; `call` is a fresh 4-tuple we own: its
        // SET_ITEMs steal the reference INCREF'd for `r`, the new ints and the new argument
        // tuple (see [`tuple_of`]).
        let call = unsafe {
            let tuple = tuple_of(&argv);
            let call = raw::PyTuple_New(4);
            shim_Py_INCREF(r);
            shim_PyTuple_SET_ITEM(call, 0, r);
            shim_PyTuple_SET_ITEM(
                call,
                1,
                raw::PyLong_FromLong(std::os::raw::c_long::from(method)),
            );
            shim_PyTuple_SET_ITEM(call, 2, tuple);
            shim_PyTuple_SET_ITEM(
                call,
                3,
                raw::PyLong_FromLong(std::os::raw::c_long::from(kw)),
            );
            call
        };
        let mut watched = vec![r];
        watched.extend(&argv);
        let mut slots = vec![recv];
        slots.extend_from_slice(args);
        // SAFETY: GIL held; `r` is live.
        let leak_checks = unsafe { self.interp.is_ext_type(r) };
        let callable = self.interp.method_call;
        // SAFETY: GIL held; `callable` is borrowed from the prelude, `call` a new tuple handed
        // over, `watched` live (held by slots and by `call`).
        let r =
            unsafe { self.call_checked(op, name, callable, call, &watched, &slots, leak_checks) };
        // SAFETY: the value references `call_args` made, no longer used.
        unsafe { release_all(&temps) };
        r
    }

    /// Call extension callable `f` with `args` (keywords by `kw`, see [`crate::ops::KwMask`]).
    ///
    /// # Safety
    /// GIL held; the argument slots are live.
    unsafe fn call_ext(
        &mut self,
        op: &Op,
        f: usize,
        args: &[crate::ops::Slot],
        kw: u8,
    ) -> Result<Done, Violation> {
        // SAFETY: GIL held; the argument slots are live.
        let (argv, temps) = unsafe { self.call_args(args) };
        // SAFETY: GIL held; `argv` live; the argument tuple is new (see [`tuple_of`]); with
        // keywords it is stolen by SET_ITEM into a fresh 4-tuple we own, with the references
        // INCREF'd for the callable and the keyword names (borrowed from the prelude) and new
        // ones for the mask and an empty name list.
        let (callable, call) = unsafe {
            let mut tuple = tuple_of(&argv);
            if !self.interp.kinds_tuple.is_null() {
                // A spec's argument kinds: kinds_tuple(f, args), a new tuple (or NULL: the
                // arguments as drawn).
                let k = raw::PyObject_CallFunctionObjArgs(
                    self.interp.kinds_tuple,
                    self.interp.ext[f].1,
                    tuple,
                    std::ptr::null_mut::<PyObject>(),
                );
                if k.is_null() {
                    raw::PyErr_Clear();
                } else {
                    shim_Py_DECREF(tuple);
                    tuple = k;
                }
            }
            if kw == 0 {
                (self.interp.ext[f].1, tuple)
            } else {
                // api_call(f, args, kw, kwnames)
                let t = raw::PyTuple_New(4);
                shim_Py_INCREF(self.interp.ext[f].1);
                shim_PyTuple_SET_ITEM(t, 0, self.interp.ext[f].1);
                shim_PyTuple_SET_ITEM(t, 1, tuple);
                shim_PyTuple_SET_ITEM(t, 2, raw::PyLong_FromLong(std::os::raw::c_long::from(kw)));
                let names = match self.interp.ext_kw.get(f) {
                    Some(&n) if !n.is_null() => {
                        shim_Py_INCREF(n);
                        n
                    }
                    _ => raw::PyList_New(0),
                };
                shim_PyTuple_SET_ITEM(t, 3, names);
                (self.interp.api_call, t)
            }
        };
        let name = self.interp.ext[f].0.clone();
        // SAFETY: GIL held; `callable` is borrowed from the prelude, `call` a new tuple handed
        // over, `argv` live (held by slots, `temps` and `call`).
        let r = unsafe { self.call_checked(op, name, callable, call, &argv, args, true) };
        // SAFETY: the value references `call_args` made, no longer used.
        unsafe { release_all(&temps) };
        r
    }

    /// `callable(*tuple)` (the tuple is a new reference, released here), named `name` in
    /// findings; with `leak_checks` (and `ext_repeats`), call it twice more and apply the
    /// two-stage leak verdict to the total refcount and to each of `argv`'s refcounts (named by
    /// `args`).
    ///
    /// # Safety
    /// GIL held; `callable` alive; `tuple` a new reference handed over; `argv` alive.
    #[allow(clippy::too_many_arguments)]
    unsafe fn call_checked(
        &mut self,
        op: &Op,
        name: String,
        callable: *mut PyObject,
        tuple: *mut PyObject,
        argv: &[*mut PyObject],
        args: &[crate::ops::Slot],
        leak_checks: bool,
    ) -> Result<Done, Violation> {
        // A FailNext arms the next positional CallExt only: that calls the extension's C code
        // directly, so allocation N is the extension's own (method and keyword calls go
        // through Python helpers, whose allocations would fail first, and Python code may
        // retry forever when every allocation fails).
        let fail = match op {
            Op::CallExt { kw: 0, .. } => self.fail_next.take(),
            _ => None,
        };
        crate::pycall::take();
        // SAFETY: GIL held; `callable` and `tuple` alive (caller's contract).
        let (first, fail_note) = unsafe { self.call_failing(callable, tuple, fail) };
        let done = Done::object(first);
        // On every violation below the first call's result is released: the campaign may keep
        // going after the violation, and the result has no slot to own it.
        let give_up = |v: Violation| {
            // SAFETY: `tuple` and `first` (if not NULL) are new references owned here.
            unsafe {
                shim_Py_DECREF(tuple);
                if !first.is_null() {
                    shim_Py_DECREF(first);
                }
            }
            Err(v)
        };
        let exception_state = |p: &str| Violation {
            kind: ViolationKind::ExceptionState,
            op_index: CURRENT_INDEX.load(Ordering::SeqCst),
            op: describe_at(op, CURRENT_INDEX.load(Ordering::SeqCst)),
            detail: format!("{name} {p}{}", fail_note.as_deref().unwrap_or("")),
            at: Some(name.clone()),
        };
        // Extension code a Python helper called (keywords, methods, evil hooks) through
        // `_capisan_call`: a bad result is the same finding as from a direct call.
        if let Some(p) = crate::pycall::take().filter(|_| self.config.checks) {
            // SAFETY: GIL held; the helper's SystemError (or nothing) is dropped.
            unsafe { raw::PyErr_Clear() };
            return give_up(exception_state(p));
        }
        if !(self.config.checks && self.config.ext_repeats && leak_checks) {
            // SAFETY: GIL held; `tuple` is ours (caller's contract), given up here.
            unsafe {
                if self.config.checks && self.config.gc_raw && first.is_null() {
                    collect_young_after_failure();
                }
                shim_Py_DECREF(tuple);
            }
            return Ok(done);
        }
        if let Some(p) = check_and_clear(done.ret) {
            return give_up(exception_state(&p));
        }
        let distinct: Vec<*mut PyObject> = {
            let s: BTreeSet<usize> = argv.iter().map(|&a| a as usize).collect();
            s.into_iter()
                .map(|a| a as *mut PyObject)
                // SAFETY: GIL held; the arguments are alive (caller's contract).
                .filter(|&a| unsafe { shim_Py_IsImmortal(a) } == 0)
                .collect()
        };
        let mut total_deltas = Vec::new();
        let mut byte_deltas: Vec<i64> = Vec::new();
        let mut arg_deltas: Vec<Vec<isize>> = vec![Vec::new(); distinct.len()];
        let call_once = || {
            // SAFETY: GIL held; `tuple` is alive until released below.
            unsafe {
                let r = match fail {
                    Some(spec) => {
                        crate::failalloc::with_failures(spec, || {
                            raw::PyObject_Call(callable, tuple, std::ptr::null_mut())
                        })
                        .0
                    }
                    None => raw::PyObject_Call(callable, tuple, std::ptr::null_mut()),
                };
                if !r.is_null() {
                    shim_Py_DECREF(r);
                }
                raw::PyErr_Clear();
            }
            Ok(())
        };
        // Stage 1, cheap: two more calls, each measured with the type attribute cache emptied
        // (a call that looks up fresh names fills it for thousands of calls) and the young
        // generation collected (a call that makes a heap type or an exception with a traceback
        // leaves a cycle behind) before and after it.
        let settle = || {
            // SAFETY: GIL held; gc.collect(0) returns a new reference or NULL.
            unsafe {
                raw::PyType_ClearCache();
                collect_generation(0);
            }
        };
        // What the receiver and arguments hold is subtracted (a call that stores its argument
        // keeps it alive on purpose, see [`held`]).
        // The bytes they hold matter only where the raw-memory verdict runs.
        let sizes = self.config.gc_raw && crate::rawmem::allocated_bytes().is_some();
        for _ in 0..2 {
            settle();
            let h0 = held(&distinct, sizes);
            let t0 = interp::total_refcount();
            // SAFETY: GIL held; the arguments are alive (held by `tuple`).
            let a0: Vec<isize> = distinct
                .iter()
                .map(|&a| unsafe { shim_Py_REFCNT(a) })
                .collect();
            let b0 = crate::rawmem::allocated_bytes();
            let _ = call_once();
            settle();
            let b1 = crate::rawmem::allocated_bytes();
            let t1 = interp::total_refcount();
            // SAFETY: as above.
            let a1: Vec<isize> = distinct
                .iter()
                .map(|&a| unsafe { shim_Py_REFCNT(a) })
                .collect();
            let h1 = held(&distinct, sizes);
            if let (Some(b0), Some(b1)) = (b0, b1) {
                byte_deltas.push(b1 - b0 - (h1.bytes - h0.bytes));
            }
            if let (Some(t0), Some(t1)) = (t0, t1) {
                total_deltas.push(t1 - t0 - (h1.edges - h0.edges) as isize);
            }
            for k in 0..distinct.len() {
                arg_deltas[k].push(a1[k] - a0[k] - (h1.counts[k] - h0.counts[k]) as isize);
            }
        }
        let name = &name;
        let violation = |kind, detail: String| Violation {
            kind,
            op_index: CURRENT_INDEX.load(Ordering::SeqCst),
            op: describe_at(op, CURRENT_INDEX.load(Ordering::SeqCst)),
            detail: format!("{detail}{}", fail_note.as_deref().unwrap_or("")),
            at: Some(name.clone()),
        };
        for (k, d) in arg_deltas.iter().enumerate() {
            let slot = args
                .iter()
                .find(|s| self.ptrs[s.index()] == distinct[k])
                .map_or("?".into(), |s| s.to_string());
            // SAFETY: GIL held; the argument is alive (held by `tuple`).
            let tn = unsafe { type_name(distinct[k]) };
            if d.iter().all(|&x| x >= 1) {
                let suspect = violation(
                    ViolationKind::Leak,
                    format!("each call of {name} keeps another reference to its argument {slot} ({tn}): refcount deltas {d:?} (missing Py_DECREF)"),
                );
                // SAFETY: GIL held; the watched arguments stay alive (held by `tuple`).
                if let Err(v) = unsafe {
                    confirm(suspect, call_once, &distinct, |_, args| {
                        check_rc_deltas(&args[k])
                    })
                } {
                    return give_up(v);
                }
            }
            if d.iter().all(|&x| x <= -1) {
                return give_up(violation(
                    ViolationKind::OverDecref,
                    format!("each call of {name} releases a reference to its argument {slot} ({tn}) it does not own: refcount deltas {d:?} (extra Py_DECREF)"),
                ));
            }
        }
        if total_deltas.len() == 2 && total_deltas.iter().all(|&x| x >= 1) {
            let suspect = violation(
                ViolationKind::Leak,
                format!("each call of {name} leaks references: total refcount deltas {total_deltas:?} over repeated calls (regrtest -R rule)"),
            );
            // SAFETY: GIL held; the watched arguments stay alive (held by `tuple`).
            if let Err(v) = unsafe {
                confirm(suspect, call_once, &distinct, |total, _| {
                    check_rc_deltas(total)
                })
            } {
                return give_up(v);
            }
        }
        if self.config.gc_raw {
            // SAFETY: GIL held.
            if let Err(v) =
                unsafe { raw_leak_verdict(&byte_deltas, call_once, &distinct, &violation, name) }
            {
                return give_up(v);
            }
            // SAFETY: GIL held; `first` NULL or a new reference of ours, `callable` and `tuple`
            // alive.
            if let Err(v) = unsafe { self.audit_returned(first, callable, tuple, &violation) } {
                return give_up(v);
            }
        }
        // SAFETY: `tuple` is ours (caller's contract), given up here.
        unsafe { shim_Py_DECREF(tuple) };
        // The exception state of the first call was checked (and cleared) above.
        Ok(Done {
            ret: Ret::Lookup(first.is_null()),
            result: first,
            skipped: false,
        })
    }

    /// The GC audit of what a call returns, when `first` (the call's result) is a GC object of
    /// the extension's own types: the call is repeated twice and each twin result is audited
    /// in place of `first` (which goes on to its slot): released with its `tp_traverse`
    /// checked against what it exposes ([`gc::exposed`]: members no slot holds) and `tp_clear`
    /// checked for leftovers, then put in a cycle through its writable attributes that a
    /// collection must free ([`gc::release_in_cycle`]). A twin that is not fresh (refcount
    /// above 1: a cached or registered object) is only released.
    ///
    /// # Safety
    /// GIL held; `first` NULL or alive; `callable` and `tuple` alive.
    unsafe fn audit_returned(
        &self,
        first: *mut PyObject,
        callable: *mut PyObject,
        tuple: *mut PyObject,
        violation: &dyn Fn(ViolationKind, String) -> Violation,
    ) -> Result<(), Violation> {
        // SAFETY: GIL held; `first` is alive when not NULL (caller's contract).
        if first.is_null() || unsafe { !gc::is_gc(first) || !self.interp.is_ext_type(first) } {
            return Ok(());
        }
        // SAFETY: as above.
        let tn = unsafe { type_name(first) };
        let blame = |kind, detail: String| Violation {
            at: Some(tn.clone()),
            ..violation(kind, detail)
        };
        let twin = || {
            // SAFETY: GIL held; a new reference or NULL.
            let r = unsafe { raw::PyObject_Call(callable, tuple, std::ptr::null_mut()) };
            if r.is_null() {
                // SAFETY: GIL held.
                unsafe { raw::PyErr_Clear() };
                return None;
            }
            // SAFETY: `r` is alive (a new reference).
            let fresh = unsafe { shim_Py_REFCNT(r) == 1 && shim_Py_IsImmortal(r) == 0 };
            if !fresh {
                // SAFETY: our new reference, given up.
                unsafe { shim_Py_DECREF(r) };
                return None;
            }
            Some(r)
        };
        if let Some(r) = twin() {
            // SAFETY: GIL held; `r` is a fresh new reference of ours, given up here (audited
            // only when it is the last one); `members` are new references, released after the
            // audit.
            let (bad, leftovers) = unsafe {
                let members: Vec<*mut PyObject> = gc::exposed(r);
                // A getter may return the object itself or keep a reference to it; the audit
                // needs the caller's reference to be the last one.
                let audit = if members.contains(&r) || shim_Py_REFCNT(r) != 1 {
                    shim_Py_DECREF(r);
                    (Vec::new(), Vec::new())
                } else {
                    gc::release_audited(r, &members, true)
                };
                release_all(&members);
                audit
            };
            if let Some(l) = leftovers.first() {
                return Err(blame(
                    ViolationKind::GcClear,
                    format!(
                        "{tn} (returned): after tp_clear, tp_traverse still visits {} reference(s) to a {} (tp_clear must drop every reference a cycle can run through)",
                        l.count, l.child_type
                    ),
                ));
            }
            if let Some(m) = bad.first() {
                let what = if m.released > m.visited as isize {
                    "missing Py_VISIT"
                } else {
                    "visits a reference it does not own"
                };
                return Err(blame(
                    ViolationKind::GcTraversal,
                    format!(
                        "{tn} (returned): dealloc released {} reference(s) to the {} it exposes as an attribute, tp_traverse visited it {} time(s) ({what})",
                        m.released, m.child_type, m.visited
                    ),
                ));
            }
        }
        if let Some(r) = twin() {
            // SAFETY: GIL held; `r` is a fresh new reference of ours, given up.
            if let Some(u) = unsafe { gc::release_in_cycle(r) } {
                return Err(blame(
                    ViolationKind::GcTraversal,
                    format!(
                        "{tn} (returned): a cycle through its attribute(s) {} is not freed by gc.collect() (tp_traverse does not visit them: an uncollectable cycle)",
                        u.through.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `PyObject_Call(callable, args)`; with `fail`, under allocation-failure injection, and
    /// then also the note a finding in this call carries: which allocations failed, how many
    /// the call made, where the first failed one was. Outside a campaign the note is printed
    /// (`==capisan== fail-alloc:`, what `oom::sweep` reads the allocation count from).
    ///
    /// # Safety
    /// GIL held; `callable` and `args` (a tuple) alive.
    unsafe fn call_failing(
        &self,
        callable: *mut PyObject,
        args: *mut PyObject,
        fail: Option<crate::ops::FailSpec>,
    ) -> (*mut PyObject, Option<String>) {
        let Some(spec) = fail else {
            // SAFETY: GIL held, `callable` and `args` alive (caller's contract); a new
            // reference or NULL.
            let r = unsafe { raw::PyObject_Call(callable, args, std::ptr::null_mut()) };
            return (r, None);
        };
        let (r, stats) = crate::failalloc::with_failures(spec, || {
            // SAFETY: the caller's contract.
            unsafe { raw::PyObject_Call(callable, args, std::ptr::null_mut()) }
        });
        let stack = crate::failalloc::failure_stack();
        let mut note = format!(
            "\nallocation-failure injection: {spec} (FailNext nth={} count={}); the call made {} allocation(s), {} failed",
            spec.nth, spec.count, stats.allocations, stats.failed
        );
        if !stack.is_empty() {
            let frames: Vec<String> = stack
                .iter()
                .take(6)
                .enumerate()
                .map(|(k, f)| format!("#{k} {f}"))
                .collect();
            note.push_str(&format!(
                "\nfirst failed allocation at: {}",
                frames.join(" <- ")
            ));
        }
        if store().is_none() {
            eprintln!(
                "==capisan== fail-alloc: op #{}: {spec}; the call made {} allocation(s), {} failed",
                CURRENT_INDEX.load(Ordering::SeqCst),
                stats.allocations,
                stats.failed
            );
        }
        (r, Some(note))
    }

    /// Whether `o` is an instance of a prelude class (`Plain`, `Evil`): its attributes live
    /// in its `__dict__`, so setting one is predictable.
    ///
    /// # Safety
    /// GIL held; `o` live.
    unsafe fn is_instance(&self, o: *mut PyObject) -> bool {
        // SAFETY: `o` live (caller's contract); its type is borrowed from it.
        let t = unsafe { shim_Py_TYPE(o) } as *mut PyObject;
        t == self.interp.plain || t == self.interp.evil
    }

    /// A dict whose keys are all exact str/int/bytes/float: lookups run no Python code.
    ///
    /// # Safety
    /// GIL held; `d` a live dict.
    unsafe fn plain_dict(&self, d: *mut PyObject) -> bool {
        let mut pos: isize = 0;
        let mut k: *mut PyObject = std::ptr::null_mut();
        let mut v: *mut PyObject = std::ptr::null_mut();
        // SAFETY: GIL held, `d` a live dict; PyDict_Next yields borrowed keys and values,
        // alive while the dict is not changed (nothing here changes it).
        while unsafe { raw::PyDict_Next(d, &mut pos, &mut k, &mut v) } != 0 {
            // SAFETY: `k` is a live key borrowed from `d`.
            if !unsafe { is_plain_key(k) } {
                return false;
            }
        }
        true
    }
}

/// A new tuple of `items` (each INCREF'd for the tuple, whose SET_ITEM steals it).
///
/// # Safety
/// GIL held; `items` live.
unsafe fn tuple_of(items: &[*mut PyObject]) -> *mut PyObject {
    // SAFETY: GIL held, items live (caller's contract); the tuple is fresh and ours, so
    // SET_ITEM fills it, stealing the reference INCREF'd for each item.
    unsafe {
        let t = raw::PyTuple_New(items.len() as isize);
        for (k, &o) in items.iter().enumerate() {
            shim_Py_INCREF(o);
            shim_PyTuple_SET_ITEM(t, k as isize, o);
        }
        t
    }
}

/// Give up one owned reference to each of `objs`.
///
/// # Safety
/// GIL held; the caller owns one reference to each object (and gives them up).
unsafe fn release_all(objs: &[*mut PyObject]) {
    for &o in objs {
        // SAFETY: the caller's contract.
        unsafe { shim_Py_DECREF(o) };
    }
}

/// Whether `k` is an exact str, int, bytes or float: hashing and comparing it runs no Python
/// code.
///
/// # Safety
/// `k` live.
unsafe fn is_plain_key(k: *mut PyObject) -> bool {
    // SAFETY: `k` live (caller's contract); its type is borrowed from it.
    let t = unsafe { shim_Py_TYPE(k) };
    t == &raw mut raw::PyUnicode_Type
        || t == &raw mut raw::PyLong_Type
        || t == &raw mut raw::PyBytes_Type
        || t == &raw mut raw::PyFloat_Type
}

/// `o`'s type name (`tp_name`), copied.
///
/// # Safety
/// `o` live.
unsafe fn type_name(o: *mut PyObject) -> String {
    // SAFETY: `o` live (caller's contract); `tp_name` is a NUL-terminated string owned by its
    // type, copied at once.
    unsafe { std::ffi::CStr::from_ptr(shim_tp_name(o)) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::{fork_job_budget, is_fork_parent, FORK_JOB_MIN_SECONDS};

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn only_a_fork_mode_parent_skips_the_interpreter() {
        assert!(is_fork_parent(args(&["fuzz", "-fork=1", "corpus"])));
        assert!(is_fork_parent(args(&[
            "fuzz",
            "-max_total_time=9",
            "-fork=2"
        ])));
        // A job libFuzzer spawned (no -fork), a one-process campaign, an explicit -fork=0.
        assert!(!is_fork_parent(args(&[
            "fuzz",
            "-max_total_time=3",
            "-stop_file=x"
        ])));
        assert!(!is_fork_parent(args(&["fuzz", "-fork=0"])));
        assert!(!is_fork_parent(args(&["fuzz", "-fork_corpus_groups=1"])));
    }

    #[test]
    fn a_fork_job_fuzzes_at_least_the_minimum_and_never_past_the_campaign() {
        let job = |n: u64| -> Vec<String> {
            [
                "fuzz",
                &format!("-max_total_time={n}"),
                "-stop_file=/tmp/x/STOP",
                "C1",
            ]
            .map(String::from)
            .to_vec()
        };
        let min = FORK_JOB_MIN_SECONDS;
        // An early job is lengthened; a late one is left alone.
        assert_eq!(
            fork_job_budget(&job(1), None),
            Some((2, format!("-max_total_time={min}")))
        );
        assert_eq!(fork_job_budget(&job(min + 5), None), None);
        assert_eq!(fork_job_budget(&job(min + 5), Some(1000)), None);
        // Capped by the campaign's end, at least one second.
        assert_eq!(
            fork_job_budget(&job(200), Some(30)),
            Some((2, "-max_total_time=30".into()))
        );
        assert_eq!(
            fork_job_budget(&job(3), Some(0)),
            Some((2, "-max_total_time=1".into()))
        );
        // Not a fork-mode job: the user's own command line is not touched.
        let own = ["fuzz", "-max_total_time=1"].map(String::from).to_vec();
        assert_eq!(fork_job_budget(&own, Some(0)), None);
    }
}
