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
        // The stack is the run of frame lines right after the header.
        let mut stack = Vec::new();
        i += 1;
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
    fn without_stacktrace_the_location_is_the_frame() {
        let lines =
            ["ext.c:7:9: runtime error: shift exponent 40 is too large for 32-bit type 'int'"];
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].access_stack[0].file.as_deref(), Some("ext.c"));
        assert_eq!(f[0].access_stack[0].line, Some(7));
    }
}
