//! Corpus replay with fork isolation: the interpreter is initialized once, then inputs run in
//! forked children with a per-input timeout and an RSS limit, so one crash, hang or blow-up
//! does not stop the replay. Driven from the fuzz binary (see `maybe_replay`) by `xtask replay`.
//!
//! A child runs a batch of inputs one after the other (as libFuzzer's own fork mode does): a
//! fork of the ASan interpreter costs ~20 ms (page tables of a large process, the sanitizer's
//! after-fork bookkeeping, copy-on-write faults), ten times the cost of a typical input. The
//! child publishes which input is running in shared memory, so a crash, timeout or blow-up is
//! charged to that input, and the batch goes on in a new child after it. An input that fails
//! after others ran in the same process is run again alone in a fresh fork: if it fails there
//! too, its log is the clean one; if not, the failure is reported as depending on the inputs
//! before it. A batch of 1 is a fresh fork per input.

#[cfg(feature = "cpython")]
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
#[cfg(feature = "cpython")]
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How one input ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Ran to the end, no violation.
    Pass,
    /// The child died (sanitizer, abort, violation) — its log says why.
    Crash,
    /// Killed after the per-input timeout.
    Timeout,
    /// Killed over the RSS limit.
    Oom,
    /// Not a valid input (unreadable, or a JSON op list that does not parse): skipped.
    Corrupt,
}

/// One replayed input.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub input: PathBuf,
    pub status: Status,
    /// The child's stderr (sanitizer report, violation), for crashes.
    pub log: Option<PathBuf>,
    pub seconds: f64,
    pub detail: String,
}

/// Limits per input.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub rss_mb: u64,
}

impl Limits {
    /// `timeout_s` seconds (non-negative) and `rss_mb` MB per input.
    pub fn new(timeout_s: f64, rss_mb: u64) -> Result<Limits, String> {
        let timeout = Duration::try_from_secs_f64(timeout_s).map_err(|_| {
            format!("--timeout must be a non-negative number of seconds, not {timeout_s}")
        })?;
        Ok(Limits { timeout, rss_mb })
    }
}

/// If the environment names a replay ([`crate::env::ReplayEnv`]), replay the inputs its list
/// names (one path a line) and exit, writing one JSON [`Outcome`] a line to its output file.
/// Called from the fuzz target's init hook, before libFuzzer runs anything.
#[cfg(feature = "cpython")]
pub fn maybe_replay() {
    use crate::exec;
    let Some(req) = crate::env::ReplayEnv::from_env() else {
        return;
    };
    let (list, out) = (req.list, req.out.display().to_string());
    let limits = Limits {
        timeout: req.timeout,
        rss_mb: req.rss_mb,
    };
    let batch = req.batch;
    let inputs: Vec<PathBuf> = std::fs::read_to_string(&list)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from)
        .collect();
    use std::io::Write;
    let logs = PathBuf::from(format!("{out}.logs"));
    let _ = std::fs::create_dir_all(&logs);
    exec::init();
    let mut file =
        std::fs::File::create(&out).unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
    for o in replay_batched(&inputs, &logs, limits, batch) {
        let _ = writeln!(file, "{}", serde_json::to_string(&o).unwrap_or_default());
    }
    std::process::exit(0);
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for parent and child.
#[cfg(feature = "cpython")]
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a batch child shares with the parent: how many inputs it finished (= the index of the
/// running one), when the running one started, and each finished input's time.
#[cfg(feature = "cpython")]
struct Shared {
    ptr: *mut u8,
    len: usize,
}

#[cfg(feature = "cpython")]
impl Shared {
    fn new(slots: usize) -> Shared {
        let len = (2 + slots) * 8;
        // SAFETY: a fresh anonymous shared mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "mmap of the replay's shared page failed"
        );
        Shared {
            ptr: ptr.cast(),
            len,
        }
    }
    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        assert!((i + 1) * 8 <= self.len);
        // SAFETY: in bounds, 8-aligned (page-aligned mapping), lives as long as `self`.
        unsafe { &*(self.ptr.add(i * 8) as *const std::sync::atomic::AtomicU64) }
    }
    fn current(&self) -> &std::sync::atomic::AtomicU64 {
        self.word(0)
    }
    fn started(&self) -> &std::sync::atomic::AtomicU64 {
        self.word(1)
    }
    fn took(&self, k: usize) -> &std::sync::atomic::AtomicU64 {
        self.word(2 + k)
    }
}

#[cfg(feature = "cpython")]
impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Replay `inputs` with `batch` inputs per forked child; one outcome per input, in order.
#[cfg(feature = "cpython")]
pub fn replay_batched(
    inputs: &[PathBuf],
    logs: &Path,
    limits: Limits,
    batch: usize,
) -> Vec<Outcome> {
    use crate::ops::OpSeq;
    use std::sync::atomic::Ordering::SeqCst;
    let mut out: Vec<Option<Outcome>> = vec![None; inputs.len()];
    // Decode everything first; unreadable and broken files are reported, not run.
    let mut runnable: Vec<(usize, OpSeq)> = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let corrupt = |detail: String| Outcome {
            input: input.clone(),
            status: Status::Corrupt,
            log: None,
            seconds: 0.0,
            detail,
        };
        match std::fs::read(input) {
            Err(e) => out[i] = Some(corrupt(format!("unreadable: {e}"))),
            Ok(bytes) => match crate::ops::classify_input(input, &bytes) {
                Err(e) => out[i] = Some(corrupt(e)),
                Ok(_) => runnable.push((i, OpSeq::from_bytes(&bytes))),
            },
        }
    }
    let mut start = 0;
    while start < runnable.len() {
        let end = (start + batch).min(runnable.len());
        let chunk = &runnable[start..end];
        let batch_log = logs.join(format!("batch-{start}.log"));
        let shared = Shared::new(chunk.len());
        shared.current().store(0, SeqCst);
        let run = run_child(&batch_log, &shared, limits, || {
            for (k, (_, seq)) in chunk.iter().enumerate() {
                shared.started().store(now_ns(), SeqCst);
                // SAFETY: fd 2 is the batch log, opened for appending: the log holds only the
                // running input's output.
                unsafe { libc::ftruncate(2, 0) };
                if let Err(v) = crate::exec::run(seq, crate::exec::Config::from_env()) {
                    crate::exec::report(&v);
                    // SAFETY: ends the child the way a sanitizer would.
                    unsafe { libc::abort() }
                }
                shared
                    .took(k)
                    .store(now_ns() - shared.started().load(SeqCst), SeqCst);
                shared.current().store(k as u64 + 1, SeqCst);
            }
        });
        let (status, killed) = match run {
            Ok(r) => r,
            Err(e) => {
                // No child: none of this batch ran. Say so for each input (nothing is lost)
                // and try the next batch.
                for (i, _) in chunk {
                    out[*i] = Some(Outcome {
                        input: inputs[*i].clone(),
                        status: Status::Crash,
                        log: None,
                        seconds: 0.0,
                        detail: format!("not run: {e}"),
                    });
                }
                start = end;
                continue;
            }
        };
        // Inputs finished; when the child died, the next one is the one that was running.
        let finished = (shared.current().load(SeqCst) as usize).min(chunk.len());
        let clean_exit = killed.is_none()
            && libc::WIFEXITED(status)
            && libc::WEXITSTATUS(status) == 0
            && finished == chunk.len();
        for (k, (i, _)) in chunk.iter().enumerate().take(finished) {
            out[*i] = Some(Outcome {
                input: inputs[*i].clone(),
                status: Status::Pass,
                log: None,
                seconds: shared.took(k).load(SeqCst) as f64 / 1e9,
                detail: String::new(),
            });
        }
        if clean_exit {
            let _ = std::fs::remove_file(&batch_log);
            start = end;
            continue;
        }
        // The input that was running; a child that died after its last input (at exit) is
        // charged to that last one.
        let finished = finished.min(chunk.len() - 1);
        let (i, _) = chunk[finished];
        let log = logs.join(format!("{i}.log"));
        let _ = std::fs::rename(&batch_log, &log);
        let seconds = (now_ns().saturating_sub(shared.started().load(SeqCst))) as f64 / 1e9;
        let (st, mut detail) = failure(status, killed, limits);
        if finished > 0 && st != Status::Crash {
            detail = format!(
                "{detail}, after {finished} input(s) in the same process (batch from {})",
                inputs[chunk[0].0].display()
            );
        }
        let mut outcome = Outcome {
            input: inputs[i].clone(),
            status: st,
            log: Some(log.clone()),
            seconds,
            detail,
        };
        if finished > 0 && st == Status::Crash {
            // Others ran before it in this process: does it crash alone? (Hangs and blow-ups
            // are not run again: that would double the replay's slowest inputs.)
            let alone = replay_one(&inputs[i], &logs.join(format!("{i}.alone.log")), limits);
            if alone.status == Status::Pass {
                outcome.detail = format!(
                    "{}; alone in a fresh process it passes: it fails only after the {} input(s) before it in one process ({} .. {})",
                    outcome.detail,
                    finished,
                    inputs[chunk[0].0].display(),
                    inputs[chunk[finished - 1].0].display()
                );
            } else {
                let _ = std::fs::remove_file(&log);
                outcome = alone;
            }
        }
        out[i] = Some(outcome);
        start += finished + 1;
    }
    out.into_iter().flatten().collect()
}

/// Why a child was killed by the parent.
#[cfg(feature = "cpython")]
#[derive(Clone, Copy)]
enum Killed {
    Timeout,
    Oom,
}

#[cfg(feature = "cpython")]
fn failure(status: libc::c_int, killed: Option<Killed>, limits: Limits) -> (Status, String) {
    match killed {
        Some(Killed::Timeout) => (
            Status::Timeout,
            format!("killed after {:?}", limits.timeout),
        ),
        Some(Killed::Oom) => (Status::Oom, format!("killed over {} MB RSS", limits.rss_mb)),
        None if libc::WIFSIGNALED(status) => (
            Status::Crash,
            format!("killed by signal {}", libc::WTERMSIG(status)),
        ),
        None => (
            Status::Crash,
            format!("exit status {}", libc::WEXITSTATUS(status)),
        ),
    }
}

/// Fork; the child writes stderr to `log` (appending), runs `work` and exits 0. The parent
/// waits, killing the child when the running input (`shared.started`) is over the timeout or
/// the child over the RSS limit. Returns the wait status and why it was killed, if it was;
/// an error if there was no child (the log cannot be written, fork fails).
#[cfg(feature = "cpython")]
fn run_child(
    log: &Path,
    shared: &Shared,
    limits: Limits,
    work: impl FnOnce(),
) -> Result<(libc::c_int, Option<Killed>), String> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::SeqCst;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|f| f.set_len(0).map(|()| f))
        .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    shared.started().store(now_ns(), SeqCst);
    // SAFETY: the process is single-threaded here (libFuzzer has not started its threads); the
    // child only runs the inputs and exits without running exit handlers.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::dup2(log_file.as_raw_fd(), 2) };
        work();
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    let mut status: libc::c_int = 0;
    let timeout = limits.timeout.as_nanos() as u64;
    let mut polls = 0u64;
    loop {
        // SAFETY: waiting on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok((status, None));
        }
        polls += 1;
        let over_time = now_ns().saturating_sub(shared.started().load(SeqCst)) > timeout;
        // /proc is read every 50th poll (~10 ms): it costs more than the poll.
        let over_rss = polls.is_multiple_of(50) && rss_mb(pid) > limits.rss_mb;
        if over_time || over_rss {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Ok((
                status,
                Some(if over_time {
                    Killed::Timeout
                } else {
                    Killed::Oom
                }),
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[cfg(feature = "cpython")]
fn rss_mb(pid: libc::pid_t) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
            })
        })
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Replay one input alone in a fresh forked child.
#[cfg(feature = "cpython")]
pub fn replay_one(input: &Path, log: &Path, limits: Limits) -> Outcome {
    let started = Instant::now();
    let outcome = |status, log: Option<PathBuf>, detail: String| Outcome {
        input: input.to_path_buf(),
        status,
        log,
        seconds: started.elapsed().as_secs_f64(),
        detail,
    };
    let bytes = match std::fs::read(input) {
        Ok(b) => b,
        Err(e) => return outcome(Status::Corrupt, None, format!("unreadable: {e}")),
    };
    if let Err(e) = crate::ops::classify_input(input, &bytes) {
        return outcome(Status::Corrupt, None, e);
    }
    let seq = crate::ops::OpSeq::from_bytes(&bytes);
    let shared = Shared::new(0);
    let run = run_child(log, &shared, limits, || {
        if let Err(v) = crate::exec::run(&seq, crate::exec::Config::from_env()) {
            crate::exec::report(&v);
            // SAFETY: ends the child the way a sanitizer would.
            unsafe { libc::abort() }
        }
    });
    let (status, killed) = match run {
        Ok(r) => r,
        Err(e) => return outcome(Status::Crash, None, format!("not run: {e}")),
    };
    if killed.is_none() && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        let _ = std::fs::remove_file(log);
        return outcome(Status::Pass, None, String::new());
    }
    let (st, detail) = failure(status, killed, limits);
    outcome(st, Some(log.to_path_buf()), detail)
}
