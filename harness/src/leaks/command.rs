//! What the leak commands (`cargo xtask refleak`, `lsan`, …) need besides the engines: the
//! target and options from their arguments, and what they print: each report as text (refleak
//! in regrtest's own wording, so the two can be compared line by line) and the one-line
//! summaries of the suppression tools.

use std::path::{Path, PathBuf};

use super::suppressions::{Generated, Merged, Minimized};
use super::{ext_dirs, lsan_suppressions, parse_huntrleaks, valgrind_suppressions};
use super::{LeakError, LsanOptions, RefleakOptions, Result, Target, ValgrindOptions};
use super::{RefleakReport, ToolReport, TracemallocReport};

impl Target {
    /// The target of a leak command: inline `code` (`-c`) wins over `target` text; one of the
    /// two must be given.
    pub fn from_args(target: Option<&str>, code: Option<&str>) -> Result<Target> {
        match (target, code) {
            (_, Some(code)) => Ok(Target::Code(code.to_string())),
            (Some(t), None) => Target::parse(t),
            (None, None) => Err(LeakError::BadOption("give a TARGET or -c CODE".into())),
        }
    }

    /// [`Target::from_args`] and the canonical `--ext-path` directories ([`ext_dirs`]).
    pub fn with_ext(
        target: Option<&str>,
        code: Option<&str>,
        ext: &[PathBuf],
    ) -> Result<(Target, Vec<PathBuf>)> {
        Ok((Target::from_args(target, code)?, ext_dirs(ext)?))
    }

    /// Each of `texts` parsed (`--protect` targets).
    pub fn parse_all(texts: &[String]) -> Result<Vec<Target>> {
        texts.iter().map(|t| Target::parse(t)).collect()
    }
}

impl RefleakOptions {
    /// regrtest's `-R WARMUPS:RUNS` and `-u` resources.
    pub fn from_args(huntrleaks: &str, use_resources: Vec<String>) -> Result<RefleakOptions> {
        let (warmups, runs) = parse_huntrleaks(huntrleaks)?;
        Ok(RefleakOptions {
            warmups,
            runs,
            use_resources,
        })
    }
}

impl LsanOptions {
    /// capisan's committed baseline for CPython `version` (`suppressions/lsan-<version>.supp`)
    /// read, and rewritten by the run only when `update`.
    pub fn committed(version: &str, update: bool) -> LsanOptions {
        let committed = lsan_suppressions(version);
        LsanOptions {
            committed: vec![committed.clone()],
            update_committed: update.then_some(committed),
        }
    }
}

impl ValgrindOptions {
    /// The suppression files besides CPython's: capisan's own for `version` (when it exists and
    /// `own` is set), then `extra` (each must exist; made absolute).
    pub fn with_supps(
        version: &str,
        own: bool,
        extra: &[PathBuf],
        track_origins: bool,
    ) -> Result<ValgrindOptions> {
        let committed = valgrind_suppressions(version);
        let mut supps: Vec<PathBuf> = Vec::new();
        if own && committed.exists() {
            supps.push(committed);
        }
        for s in extra {
            let path = std::fs::canonicalize(s).map_err(|e| {
                LeakError::BadOption(format!("--supp {} does not exist: {e}", s.display()))
            })?;
            supps.push(path);
        }
        Ok(ValgrindOptions {
            supps,
            track_origins,
        })
    }
}

impl RefleakReport {
    /// The report as `cargo xtask refleak` prints it: regrtest's `leaked [..] references` lines,
    /// the first failure, then a verdict line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.counters {
            if c.leaked || c.deltas.iter().any(|&d| d != 0) {
                let fine = if c.leaked { "" } else { " (this is fine)" };
                out += &format!(
                    "{} leaked {:?} {}, sum={}{fine}\n",
                    self.target, c.deltas, c.item, c.sum
                );
            }
        }
        if let Some(e) = &self.first_error {
            out += &format!(
                "{} failed in {} of {} runs; first failure:\n{}\n",
                self.target,
                self.failed_runs,
                self.warmups + self.runs,
                e.trim_end()
            );
        }
        let leaked: Vec<&str> = self
            .counters
            .iter()
            .filter(|c| c.leaked)
            .map(|c| c.item)
            .collect();
        let how = format!(
            "-R {}:{} on {} {}, {:.1} s",
            self.warmups, self.runs, self.variant, self.version, self.seconds
        );
        if leaked.is_empty() {
            out + &format!("refleak: {}: no leaks ({how})\n", self.target)
        } else {
            let what = leaked.join(", ");
            out + &format!("refleak: {} LEAKED {what} ({how})\n", self.target)
        }
    }
}

impl TracemallocReport {
    /// No traceback grows by a block per iteration.
    pub fn passed(&self) -> bool {
        self.linear == 0
    }

    /// The report as `cargo xtask tracemalloc-diff` prints it: the growth per traceback, then
    /// a verdict line.
    pub fn text(&self) -> String {
        let mut out = format!(
            "tracemalloc-diff {}: 1 warmup + {} iterations, {} frames, {:.1} s\n",
            self.target, self.iterations, self.frames, self.seconds
        );
        let n = f64::from(self.iterations);
        for (i, e) in self.entries.iter().enumerate() {
            out += &format!(
                "#{} {:+} B in {:+} blocks ({:+.1} B, {:+.2} blocks per iteration; now {} B in {} blocks)\n",
                i + 1,
                e.size_diff,
                e.count_diff,
                e.size_diff as f64 / n,
                e.count_diff as f64 / n,
                e.size,
                e.count
            );
            for f in &e.traceback {
                out += &format!("    {}:{}\n", f.file, f.line);
            }
        }
        out + &if self.passed() {
            format!(
                "tracemalloc-diff: no traceback grows by a block per iteration ({} growing at all)\n",
                self.entries.len()
            )
        } else {
            format!(
                "tracemalloc-diff: {} traceback(s) grow by at least one block per iteration\n",
                self.linear
            )
        }
    }
}

impl ToolReport {
    /// The tool found nothing.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    /// The report as `cargo xtask lsan` / `valgrind` print it: one line per finding (class,
    /// reporting tool, top frame, summary), then a count naming `tool`.
    pub fn text(&self, tool: &str) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let top = f
                .top_frame()
                .map(|fr| match (&fr.file, fr.line) {
                    (Some(file), Some(line)) => format!("{} ({file}:{line})", fr.function),
                    _ => fr.function.clone(),
                })
                .unwrap_or_else(|| "?".into());
            // The tool as its serde name ("lsan", "valgrind").
            let by = serde_json::to_value(f.tool)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out += &format!("{}: {by} in {top}: {}\n", f.class, f.summary);
        }
        out + &format!(
            "{tool}: {} finding(s) for {} on {} {} ({:.1} s)\n",
            self.findings.len(),
            self.target,
            self.variant,
            self.version,
            self.seconds
        )
    }
}

impl Generated {
    /// What `valgrind-supp gen` prints after writing `out`.
    pub fn text(&self, out: &Path) -> String {
        let mut text = format!(
            "valgrind-supp gen: {} error(s) -> {} suppression(s) in {}\n",
            self.baseline_errors,
            self.entries.len(),
            out.display()
        );
        if self.own_errors > 0 {
            text += &format!(
                "valgrind-supp gen: {} error(s) in the target's own code left unsuppressed (they are bugs to fix)\n",
                self.own_errors
            );
        }
        text
    }
}

impl Merged {
    /// What `valgrind-supp merge` prints after writing `out`.
    pub fn text(&self, out: &Path) -> String {
        format!(
            "valgrind-supp merge: {} suppression(s) -> {} ({} duplicate(s) dropped) in {}\n",
            self.read,
            self.entries.len(),
            self.read - self.entries.len(),
            out.display()
        )
    }
}

impl Minimized {
    /// What `valgrind-supp minimize` prints after writing `out` (its warnings go to stderr).
    pub fn text(&self, out: &Path) -> String {
        format!(
            "valgrind-supp minimize: {} -> {} suppression(s) ({} unused by the baseline), \
             {} -> {} frame line(s); verified by re-running: the {} baseline \
             error(s) FILE suppressed stay suppressed, {} protected error(s) stay reported; wrote {}\n",
            self.before,
            self.entries.len(),
            self.unused,
            self.frames_before,
            self.frames_after,
            self.covered,
            self.protected,
            out.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Counter;
    use super::*;

    fn refleak_report(leaked: bool) -> RefleakReport {
        RefleakReport {
            target: "test_x".into(),
            variant: "pydebug".into(),
            version: "3.13.5".into(),
            warmups: 3,
            runs: 3,
            counters: vec![
                Counter {
                    item: "references",
                    deltas: if leaked { vec![1, 1, 1] } else { vec![0, 1, 0] },
                    sum: if leaked { 3 } else { 1 },
                    leaked,
                },
                Counter {
                    item: "memory blocks",
                    deltas: vec![0, 0, 0],
                    sum: 0,
                    leaked: false,
                },
            ],
            failed_runs: 0,
            first_error: None,
            leaked,
            seconds: 1.5,
        }
    }

    #[test]
    fn refleak_text_speaks_regrtest() {
        let t = refleak_report(true).text();
        assert_eq!(
            t,
            "test_x leaked [1, 1, 1] references, sum=3\n\
             refleak: test_x LEAKED references (-R 3:3 on pydebug 3.13.5, 1.5 s)\n"
        );
        let t = refleak_report(false).text();
        assert!(t.starts_with("test_x leaked [0, 1, 0] references, sum=1 (this is fine)\n"));
        assert!(t.ends_with("refleak: test_x: no leaks (-R 3:3 on pydebug 3.13.5, 1.5 s)\n"));
    }

    #[test]
    fn tracemalloc_text_gives_growth_per_iteration() {
        let r = TracemallocReport {
            target: "m:f".into(),
            iterations: 10,
            frames: 25,
            entries: vec![super::super::Growth {
                size_diff: 640,
                count_diff: 10,
                size: 700,
                count: 11,
                traceback: vec![super::super::PyFrame {
                    file: "m.py".into(),
                    line: 3,
                }],
            }],
            linear: 1,
            seconds: 0.5,
        };
        assert!(!r.passed());
        let t = r.text();
        assert!(t.contains("#1 +640 B in +10 blocks (+64.0 B, +1.00 blocks per iteration; now 700 B in 11 blocks)\n    m.py:3\n"));
        assert!(t.ends_with("1 traceback(s) grow by at least one block per iteration\n"));
    }

    #[test]
    fn a_target_needs_text_or_code() {
        assert_eq!(
            Target::from_args(Some("test_json"), Some("pass")).unwrap(),
            Target::Code("pass".into())
        );
        assert!(Target::from_args(None, None).is_err());
        let missing = ["/nonexistent.supp".into()];
        assert!(ValgrindOptions::with_supps("0.0", false, &missing, false).is_err());
        let o = RefleakOptions::from_args("2:4", vec!["cpu".into()]).unwrap();
        assert_eq!((o.warmups, o.runs), (2, 4));
        assert!(RefleakOptions::from_args("3", Vec::new()).is_err());
        let o = LsanOptions::committed("3.13.5", false);
        assert!(o.committed[0].ends_with("suppressions/lsan-3.13.5.supp"));
        assert!(o.update_committed.is_none());
    }
}
