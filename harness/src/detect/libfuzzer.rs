//! libFuzzer's own crash reports, printed by its signal handlers when no sanitizer diagnosed the
//! crash first (e.g. a pydebug `Fatal Python error` that calls abort()):
//!
//! ```text
//! ==13280== ERROR: libFuzzer: deadly signal
//!     #0 0x55f169723401 in __sanitizer_print_stack_trace .../asan_stack.cpp:87:3
//!     #1 0x55f1697bd39d in fuzzer::PrintStackTrace() .../FuzzerUtil.cpp:210:5
//!     ...
//!     #16 0x7fa318d950ef in extra_decref /work/main/tests/bugzoo/bugzoo.c:136:9
//!
//! NOTE: libFuzzer has rudimentary signal handlers.
//! SUMMARY: libFuzzer: deadly signal
//! ```
//!
//! On its own such a report is a [`BugClass::Crash`](super::BugClass::Crash). When the same text
//! also holds a more specific report (the fatal error that raised the signal, a sanitizer report
//! whose abort libFuzzer then caught), [`super::parse`] drops it and, for reports that print no
//! native stack of their own, moves its stack onto them.

use std::sync::OnceLock;

use regex::Regex;

use super::classify::{self, LIBFUZZER};
use super::frames::parse_stack_block;
use super::{Finding, Tool};

fn header() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^==\d+==\s*ERROR: libFuzzer: (.*?)\s*$").expect("regex"))
}

/// Every libFuzzer report in `lines` that is a finding, each with the frame lines right after its
/// header as the access stack.
pub(super) fn parse(lines: &[&str]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(c) = header().captures(line) else {
            continue;
        };
        let Some((class, reason)) = classify::classify(LIBFUZZER, &c[1]) else {
            continue;
        };
        let mut f = Finding::new(class, Tool::LibFuzzer, format!("libFuzzer: {}", &c[1]));
        f.reason = reason.to_string();
        f.access_stack = parse_stack_block(&lines[i + 1..]);
        findings.push(f);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BugClass;

    #[test]
    fn timeouts_are_not_findings() {
        let lines = ["==7== ERROR: libFuzzer: timeout after 25 seconds"];
        assert!(parse(&lines).is_empty());
    }

    #[test]
    fn deadly_signal_takes_the_following_frames() {
        let text = "==7== ERROR: libFuzzer: deadly signal\n\
    #0 0x1 in __sanitizer_print_stack_trace /x/asan_stack.cpp:87:3\n\
    #1 0x2 in boom /ext/boom.c:3:1\n\
\n\
    #0 0x3 in unrelated /ext/other.c:9:1\n";
        let lines: Vec<&str> = text.lines().collect();
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].class, BugClass::Crash);
        assert_eq!(f[0].access_stack.len(), 2);
        assert_eq!(f[0].top_frame().unwrap().function, "boom");
    }
}
