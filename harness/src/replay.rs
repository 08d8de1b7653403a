//! Corpus replay with fork isolation: the interpreter is initialized once, then every input
//! runs in a forked child with a timeout and an RSS limit, so one crash, hang or blow-up does
//! not stop the replay. Driven from the fuzz binary (see `maybe_replay`) by `xtask replay`.

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

/// If `CAPISAN_REPLAY_LIST` is set, replay the inputs it lists (one path a line) and exit,
/// writing one JSON [`Outcome`] a line to `CAPISAN_REPLAY_OUT`. Called from the fuzz target's
/// init hook, before libFuzzer runs anything.
#[cfg(feature = "cpython")]
pub fn maybe_replay() {
    use crate::exec;
    let Ok(list) = std::env::var("CAPISAN_REPLAY_LIST") else {
        return;
    };
    let out =
        std::env::var("CAPISAN_REPLAY_OUT").unwrap_or_else(|_| format!("{list}.results.jsonl"));
    let limits = Limits {
        timeout: Duration::from_secs_f64(
            std::env::var("CAPISAN_REPLAY_TIMEOUT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10.0),
        ),
        rss_mb: std::env::var("CAPISAN_REPLAY_RSS_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2048),
    };
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
    for (i, input) in inputs.iter().enumerate() {
        let o = replay_one(input, &logs.join(format!("{i}.log")), limits);
        let _ = writeln!(file, "{}", serde_json::to_string(&o).unwrap_or_default());
    }
    std::process::exit(0);
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

/// Replay one input in a forked child.
#[cfg(feature = "cpython")]
pub fn replay_one(input: &Path, log: &Path, limits: Limits) -> Outcome {
    use crate::exec;
    use crate::ops::OpSeq;
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
    if bytes.first() == Some(&b'[') {
        if let Err(e) = serde_json::from_slice::<Vec<crate::ops::Op>>(&bytes) {
            return outcome(Status::Corrupt, None, format!("not a capisan op list: {e}"));
        }
    }
    let seq = OpSeq::from_bytes(&bytes);
    let Ok(log_file) = std::fs::File::create(log) else {
        return outcome(
            Status::Corrupt,
            None,
            format!("cannot create {}", log.display()),
        );
    };
    use std::os::fd::AsRawFd;
    // SAFETY: the process is single-threaded here (libFuzzer has not started its threads); the
    // child only runs the sequence and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            libc::dup2(log_file.as_raw_fd(), 2);
        }
        let code = match exec::run(&seq, exec::Config::from_env()) {
            Ok(_) => 0,
            Err(v) => {
                exec::report(&v);
                unsafe { libc::abort() }
            }
        };
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return outcome(Status::Crash, None, "fork failed".into());
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waiting on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        let over_time = started.elapsed() > limits.timeout;
        let over_rss = rss_mb(pid) > limits.rss_mb;
        if over_time || over_rss {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            let (st, why) = if over_time {
                (
                    Status::Timeout,
                    format!("killed after {:?}", limits.timeout),
                )
            } else {
                (Status::Oom, format!("killed over {} MB RSS", limits.rss_mb))
            };
            return outcome(st, Some(log.to_path_buf()), why);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        let _ = std::fs::remove_file(log);
        return outcome(Status::Pass, None, String::new());
    }
    let detail = if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    };
    outcome(Status::Crash, Some(log.to_path_buf()), detail)
}
