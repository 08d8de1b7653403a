//! CPython's own diagnostics: debug-allocator and pydebug fatal errors, assertion failures, and
//! faulthandler's Python stack.
//!
//! ```text
//! Objects/object.c:265: _Py_NegativeRefcount: Assertion failed: object has negative ref count
//! Fatal Python error: _PyMem_DebugRawFree: bad ID: Allocated using API 'm', verified using API 'o'
//! Current thread 0x00007feb388ac080 (most recent call first):
//!   File "<string>", line 1 in <module>
//! ```

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

use super::classify::{self, PYDEBUG};
use super::{Finding, Frame, Tool};

struct Patterns {
    fatal: Regex,
    py_assert: Regex,
    c_assert: Regex,
    signal: Regex,
    thread: Regex,
    py_frame: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        fatal: Regex::new(r"^Fatal Python error: (.*?)\s*$").expect("regex"),
        // _PyObject_AssertFailed: "file:line: func: Assertion failed: msg"
        py_assert: Regex::new(r"^(\S+?):(\d+): (\S+): Assertion failed: (.*?)\s*$").expect("regex"),
        // glibc assert(): "prog: file:line: func: Assertion `expr' failed."
        c_assert: Regex::new(r"^\S+: (\S+?):(\d+): (.+?): Assertion [`'](.*)' failed\.$")
            .expect("regex"),
        signal: Regex::new(
            r"^(Segmentation fault|Aborted|Bus error|Floating[- ]point exception|Illegal instruction)$",
        )
        .expect("regex"),
        thread: Regex::new(
            r"^(Current thread|Thread) 0x[0-9a-fA-F]+ .*\(most recent call first\):$|^Stack \(most recent call first\):$",
        )
        .expect("regex"),
        py_frame: Regex::new(r#"^\s+(File ".*", line \d+ in .*?)\s*$"#).expect("regex"),
    })
}

struct Assertion {
    frame: Frame,
    headline: String,
}

fn assertion(line: &str) -> Option<Assertion> {
    let p = patterns();
    let c = p
        .py_assert
        .captures(line)
        .or_else(|| p.c_assert.captures(line))?;
    Some(Assertion {
        frame: Frame {
            function: c[3].to_string(),
            file: Some(c[1].to_string()),
            line: c[2].parse().ok(),
            object: None,
            offset: None,
        },
        headline: format!("{}: Assertion failed: {}", &c[3], &c[4]),
    })
}

fn finding(headline: &str, assertion: Option<Assertion>) -> Finding {
    let headline = assertion.as_ref().map_or(headline, |a| a.headline.as_str());
    let (class, reason) = classify::classify(PYDEBUG, headline).expect("PYDEBUG has no None rows");
    let tool = if headline.starts_with("_PyMem_Debug") {
        Tool::DebugAllocator
    } else {
        Tool::PydebugFatal
    };
    let mut f = Finding::new(class, tool, headline);
    f.reason = reason.to_string();
    f.access_stack.extend(assertion.map(|a| a.frame));
    f
}

/// Every fatal error / assertion failure in `lines`, with the range of lines its headline spans
/// (the assertion line through the `Fatal Python error` line). An assertion line is merged into
/// the `Fatal Python error` that follows it (the assertion is the more specific headline).
pub(super) fn parse(lines: &[&str]) -> Vec<(Range<usize>, Finding)> {
    let p = patterns();
    let mut findings = Vec::new();
    let mut pending: Option<(usize, Assertion)> = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(a) = assertion(line) {
            if let Some((start, prev)) = pending.replace((i, a)) {
                findings.push((start..start + 1, finding("", Some(prev))));
            }
        } else if let Some(c) = p.fatal.captures(line) {
            let (start, a) = pending.take().map_or((i, None), |(s, a)| (s, Some(a)));
            findings.push((start..i + 1, finding(&c[1], a)));
        }
    }
    findings.extend(pending.map(|(start, a)| (start..start + 1, finding("", Some(a)))));
    findings
}

/// True for a finding that only says "the process got a fatal signal" (faulthandler's
/// `Fatal Python error: Segmentation fault`); a sanitizer report in the same text supersedes it.
pub(super) fn is_signal_only(f: &Finding) -> bool {
    f.tool == Tool::PydebugFatal
        && f.access_stack.is_empty()
        && patterns().signal.is_match(&f.summary)
}

/// The Python frames of the first faulthandler / fatal-error thread dump in `lines`, innermost
/// first, as `File "x.py", line 3 in f`.
pub(super) fn python_frames(lines: &[&str]) -> Vec<String> {
    let p = patterns();
    let Some(start) = lines.iter().position(|l| p.thread.is_match(l)) else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .map_while(|l| p.py_frame.captures(l).map(|c| c[1].to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{parse, BugClass};

    /// Not captured: the ASan build reports the use-after-free before the refcount can go
    /// negative. The text follows `_PyObject_AssertFailed` in CPython 3.13's Objects/object.c.
    /// (A real capture, reached through capisan's fuzz target, is
    /// `fixtures/libfuzzer_pydebug_negative_refcount.txt`.)
    const NEGATIVE_REFCOUNT: &str = "\
../Python-3.13.5/Objects/object.c:265: _Py_NegativeRefcount: Assertion failed: object has negative ref count
Enable tracemalloc to get the memory block allocation traceback

object address  : 0x7f3c2a4e5e30
object refcount : -1
object type     : 0x55d1c1f0a0e0
object type name: list
object repr     : <refcnt -1 at 0x7f3c2a4e5e30>

Fatal Python error: _PyObject_AssertFailed: _PyObject_AssertFailed
Python runtime state: initialized

Current thread 0x00007f3c2b9c1740 (most recent call first):
  File \"/tmp/t.py\", line 4 in go
  File \"/tmp/t.py\", line 6 in <module>
";

    #[test]
    fn negative_refcount_is_an_over_decref() {
        let f = parse(NEGATIVE_REFCOUNT);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].class, BugClass::UseAfterFree);
        assert_eq!(f[0].tool, Tool::PydebugFatal);
        assert_eq!(f[0].access_stack[0].function, "_Py_NegativeRefcount");
        assert_eq!(
            f[0].python_frames,
            vec![
                r#"File "/tmp/t.py", line 4 in go"#,
                r#"File "/tmp/t.py", line 6 in <module>"#
            ]
        );
    }

    #[test]
    fn signal_only_fatal_error_is_a_crash() {
        let f = parse("Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  File \"a.py\", line 1 in <module>\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].class, BugClass::Crash);
        assert!(is_signal_only(&f[0]));
    }

    #[test]
    fn exception_state_fatal_error() {
        let f = parse("Fatal Python error: _Py_CheckSlotResult: Slot __getitem__ of type Foo succeeded with an exception set\n");
        assert_eq!(f[0].class, BugClass::ExceptionState);
    }
}
