//! UndefinedBehaviorSanitizer runtime errors:
//! `file.c:12:3: runtime error: <message>`, then (with `print_stacktrace=1`) frame lines, an
//! optional `note:` line, and `SUMMARY: UndefinedBehaviorSanitizer: ...`.
//!
//! Reports the [`super::classify::UBSAN`] table marks as not-a-finding (the "incorrect function
//! type" noise of builds without `-fno-sanitize=function`) are skipped together with their stacks.

use std::sync::OnceLock;

use regex::Regex;

use super::classify::{self, UBSAN};
use super::frames::parse_sanitizer_frame;
use super::{BugClass, Finding, Frame, Tool};

fn header() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r"^(?:==\d+==)?(\S+?):(\d+):(\d+): runtime error: (.*)$").expect("regex")
    })
}

/// True for the first line of a UBSan runtime error.
pub(super) fn is_header(line: &str) -> bool {
    header().is_match(line)
}

/// A line of the memory dump a UBSan report may print between its header and its stack:
/// `0x7bd0f385a1d2: note: pointer points here`, then hex bytes, then a line of spaces and a
/// caret.
fn is_note_line(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() {
        return false;
    }
    (t.starts_with("0x") && t.contains(": note: "))
        || t.chars().all(|c| c.is_ascii_hexdigit() || c == ' ')
        || t.chars().all(|c| matches!(c, '^' | '~' | ' '))
}

/// Every UBSan runtime error in `lines` that is a finding, in order.
pub(super) fn parse(lines: &[&str]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(c) = header().captures(lines[i]) else {
            i += 1;
            continue;
        };
        let message = c[4].trim();
        // The stack is the run of frame lines right after the header, and after the memory
        // dump some reports print first (a misaligned load: `0x…: note: pointer points here`,
        // the bytes, a caret line).
        let mut stack = Vec::new();
        i += 1;
        while lines.get(i).is_some_and(|l| is_note_line(l)) {
            i += 1;
        }
        while let Some(frame) = lines.get(i).and_then(|l| parse_sanitizer_frame(l)) {
            stack.push(frame);
            i += 1;
        }
        let Some((class, reason)) = classify::classify(UBSAN, message) else {
            continue;
        };
        if stack.is_empty() {
            stack.push(Frame {
                function: "??".to_string(),
                file: Some(c[1].to_string()),
                line: c[2].parse().ok(),
                object: None,
                offset: None,
            });
        }
        let mut finding = Finding::new(class, Tool::Ubsan, message);
        finding.reason = reason.to_string();
        finding.access_stack = stack;
        if class == BugClass::NullDereference {
            if let Some(reason) = classify::refine_null_deref(&finding) {
                finding.class = BugClass::GcTraversal;
                finding.reason = reason;
            }
        }
        findings.push(finding);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misaligned_load_keeps_its_stack_past_the_memory_dump() {
        // mmh3 5.0.1's mmh3_32_digest on an odd memoryview slice (a real report).
        let log = "src/mmh3/murmurhash3.h:109:12: runtime error: load of misaligned address 0x7bd0f385a1d2 for type 'const uint32_t' (aka 'const unsigned int'), which requires 4 byte alignment
0x7bd0f385a1d2: note: pointer points here
 00 00  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  00 00 00 00 00 00 00 00  00 00 00 00 00 00
              ^ 
    #0 0x7fa0f416042e in getblock32 /tmp/pip/./src/mmh3/murmurhash3.h:109:12
    #1 0x7fa0f416042e in murmurhash3_x86_32 /tmp/pip/./src/mmh3/murmurhash3.c:43:23
    #2 0x7fa0f4156628 in mmh3_mmh3_32_digest /tmp/pip/./src/mmh3/mmh3module.c:559:5
SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior src/mmh3/murmurhash3.h:109:12";
        let lines: Vec<&str> = log.lines().collect();
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        let names: Vec<&str> = f[0]
            .access_stack
            .iter()
            .map(|fr| fr.function.as_str())
            .collect();
        assert_eq!(
            names,
            ["getblock32", "murmurhash3_x86_32", "mmh3_mmh3_32_digest"]
        );
        assert!(!is_note_line("    #0 0x7fa0f416042e in getblock32 x.h:1:2"));
        assert!(!is_note_line(
            "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior x.h:1:2"
        ));
    }

    #[test]
    fn a_null_passed_to_a_header_accessor_blames_its_caller() {
        // `del frame.f_trace_opcodes` on CPython 3.13.5 (gh-156189; a real report, paths cut).
        let log = "/s/Python-3.13.5/Include/object.h:336:16: runtime error: member access within null pointer of type 'PyObject' (aka 'struct _object')
    #0 0x56278ff7ebf9 in Py_TYPE /s/Python-3.13.5/Include/object.h:336:16
    #1 0x56278ff7ebf9 in Py_IS_TYPE /s/Python-3.13.5/Include/object.h:369:12
    #2 0x56278ff7ebf9 in frame_settrace_opcodes /s/Python-3.13.5/Objects/frameobject.c:982:10
    #3 0x5627900bc33f in _PyObject_GenericSetAttrWithDict /s/Python-3.13.5/Objects/object.c:1782:19
    #4 0x5627900b755f in PyObject_SetAttr /s/Python-3.13.5/Objects/object.c:1415:15
SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior /s/Python-3.13.5/Include/object.h:336:16";
        let lines: Vec<&str> = log.lines().collect();
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].culprit().as_deref(), Some("frame_settrace_opcodes"));
    }

    #[test]
    fn without_stacktrace_the_location_is_the_frame() {
        let lines =
            ["ext.c:7:9: runtime error: shift exponent 40 is too large for 32-bit type 'int'"];
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].access_stack[0].file.as_deref(), Some("ext.c"));
        assert_eq!(f[0].access_stack[0].line, Some(7));
    }
}
