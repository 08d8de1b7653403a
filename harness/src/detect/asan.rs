//! AddressSanitizer and LeakSanitizer reports (sanitizer_common text format).
//!
//! An ASan report is `==PID==ERROR: AddressSanitizer: <type> ...`, an optional
//! `READ|WRITE of size N` line, the access stack, then optional "freed by thread T0 here:" and
//! "(previously) allocated by thread T0 here:" stacks, ending at `SUMMARY:` / `==PID==ABORTING`.
//! A LeakSanitizer report is `==PID==ERROR: LeakSanitizer: detected memory leaks` followed by one
//! "Direct leak of ... allocated from:" / "Indirect leak ..." block per leak.

use std::sync::OnceLock;

use regex::Regex;

use super::classify::{self, ASAN, LSAN};
use super::frames::parse_sanitizer_frame;
use super::{BugClass, Finding, Frame, Tool};

struct Patterns {
    header: Regex,
    strip_address: Regex,
    access: Regex,
    freed: Regex,
    allocated: Regex,
    leak: Regex,
    end: Regex,
    zero_page: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        header: Regex::new(r"^==\d+==\s*ERROR: (AddressSanitizer|LeakSanitizer): (.*)$")
            .expect("regex"),
        strip_address: Regex::new(
            r"(?:\s+on\s+(?:unknown\s+)?(?:address\s+)?0x[0-9a-fA-F]+.*|:\s*0x[0-9a-fA-F]+.*|\s+in thread T\d+.*|:)$",
        )
        .expect("regex"),
        access: Regex::new(r"^(READ|WRITE) of size (\d+) at ").expect("regex"),
        freed: Regex::new(r"^freed by thread \S+.* here:$").expect("regex"),
        allocated: Regex::new(r"^(previously )?allocated by thread \S+.* here:$").expect("regex"),
        leak: Regex::new(r"^((Direct|Indirect) leak of \d+ byte\(s\) in \d+ object\(s\)) allocated from:$")
            .expect("regex"),
        end: Regex::new(r"^(SUMMARY: (AddressSanitizer|LeakSanitizer)|==\d+==\s*ABORTING)")
            .expect("regex"),
        zero_page: Regex::new(r"^(SEGV|BUS) on unknown address (?:0x)?([0-9a-fA-F]+)")
            .expect("regex"),
    })
}

#[derive(Clone, Copy)]
enum Section {
    Access,
    Free,
    Alloc,
    Ignore,
}

/// True for the first line of an ASan or LSan report.
pub(super) fn is_header(line: &str) -> bool {
    patterns().header.is_match(line)
}

/// Every ASan and LSan report in `lines`, in order.
pub(super) fn parse(lines: &[&str]) -> Vec<Finding> {
    let p = patterns();
    let mut findings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(c) = p.header.captures(lines[i]) else {
            i += 1;
            continue;
        };
        let body_start = i + 1;
        let body_end = lines[body_start..]
            .iter()
            .position(|l| p.header.is_match(l))
            .map_or(lines.len(), |n| body_start + n);
        let body = &lines[body_start..body_end];
        if &c[1] == "LeakSanitizer" {
            findings.extend(parse_leaks(body));
        } else {
            let mut bug_type = p.strip_address.replace(c[2].trim(), "").into_owned();
            if let Some(address) = zero_page_address(c[2].trim()) {
                // The headline the ASAN table keys NULL dereferences on.
                bug_type = format!("{bug_type} on the zero page (address {address:#x})");
            }
            findings.push(parse_error(&bug_type, body));
        }
        i = body_end;
    }
    findings
}

/// The fault address of a `SEGV on unknown address 0x...` header when it lies in the zero page
/// (below 4096, where a NULL pointer plus a member offset lands).
fn zero_page_address(header: &str) -> Option<u64> {
    let c = patterns().zero_page.captures(header)?;
    let address = u64::from_str_radix(&c[2], 16).ok()?;
    (address < 4096).then_some(address)
}

fn parse_error(bug_type: &str, body: &[&str]) -> Finding {
    let p = patterns();
    let (class, reason) = classify::classify(ASAN, bug_type).expect("ASAN table has no None rows");
    let mut finding = Finding::new(class, Tool::Asan, bug_type);
    finding.reason = reason.to_string();
    let mut section = Section::Access;
    for line in body {
        let trimmed = line.trim();
        if p.end.is_match(trimmed) {
            break;
        }
        if let Some(c) = p.access.captures(trimmed) {
            finding.summary = format!("{bug_type} {} of size {}", &c[1], &c[2]);
        } else if p.freed.is_match(trimmed) {
            section = Section::Free;
        } else if p.allocated.is_match(trimmed) {
            section = Section::Alloc;
        } else if trimmed.starts_with("Thread T") {
            // "Thread T1 created by T0 here:" — a thread-creation stack, not evidence.
            section = Section::Ignore;
        } else if let Some(frame) = parse_sanitizer_frame(line) {
            push(&mut finding, section, frame);
        }
    }
    // An "overflow" off a block ASan also shows a free stack for is a read through a dangling
    // pointer next to freed memory (e.g. pydebug dumping an over-released object's header).
    if class == BugClass::BufferOverflow
        && bug_type.starts_with("heap-buffer-overflow")
        && !finding.free_stack.is_empty()
    {
        finding.class = BugClass::UseAfterFree;
        finding.reason = if finding
            .access_stack
            .iter()
            .any(|f| f.function == "_Py_NegativeRefcount")
        {
            "ASan heap-buffer-overflow next to a freed block, while pydebug reports a negative refcount: an over-released (extra DECREF) object is being read after it was freed".into()
        } else {
            "ASan heap-buffer-overflow next to a block that was already freed (ASan shows its free stack): an access through a dangling pointer".into()
        };
        // Who freed it still decides between an extension's extra DECREF and a borrowed
        // reference outliving a container mutation.
        let (refined, reason) = classify::refine_use_after_free(&finding);
        if refined == BugClass::BorrowedRefMisuse {
            finding.class = refined;
            finding.reason = format!(
                "{reason} (ASan called the access a heap-buffer-overflow next to the freed block)"
            );
        }
    }
    if class == BugClass::NullDereference {
        if let Some(reason) = classify::refine_null_deref(&finding) {
            finding.class = BugClass::GcTraversal;
            finding.reason = reason;
        }
    }
    if class == BugClass::UseAfterFree && bug_type.starts_with("heap-use-after-free") {
        let (class, reason) = classify::refine_use_after_free(&finding);
        finding.class = class;
        finding.reason = reason;
    }
    finding
}

fn push(finding: &mut Finding, section: Section, frame: Frame) {
    match section {
        Section::Access => finding.access_stack.push(frame),
        Section::Free => finding.free_stack.push(frame),
        Section::Alloc => finding.alloc_stack.push(frame),
        Section::Ignore => {}
    }
}

fn parse_leaks(body: &[&str]) -> Vec<Finding> {
    let p = patterns();
    let mut findings = Vec::new();
    // The finding the frames currently belong to; `None` inside an ignored (indirect) leak.
    let mut current: Option<Finding> = None;
    for line in body {
        let trimmed = line.trim();
        if p.end.is_match(trimmed) {
            break;
        }
        if let Some(c) = p.leak.captures(trimmed) {
            findings.extend(current.take());
            current = classify::classify(LSAN, &c[1]).map(|(class, reason)| {
                let mut f = Finding::new(class, Tool::Lsan, &c[1]);
                f.reason = reason.to_string();
                f
            });
        } else if let Some(frame) = parse_sanitizer_frame(line) {
            if let Some(f) = current.as_mut() {
                f.alloc_stack.push(frame);
            }
        }
    }
    findings.extend(current);
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_type_strips_the_address() {
        let p = patterns();
        for (header, want) in [
            (
                "heap-use-after-free on address 0x7b34 at pc 0x55 bp 0x7f sp 0x7f",
                "heap-use-after-free",
            ),
            (
                "attempting double-free on 0x7b7f76fe1af0 in thread T0:",
                "attempting double-free",
            ),
            (
                "SEGV on unknown address 0x000000000010 (pc 0x55 bp 0x7 sp 0x7 T0)",
                "SEGV",
            ),
            (
                "alloc-dealloc-mismatch (malloc vs operator delete) on 0x602000000010",
                "alloc-dealloc-mismatch (malloc vs operator delete)",
            ),
            (
                "attempting free on address which was not malloc()-ed: 0x602000000011 in thread T0",
                "attempting free on address which was not malloc()-ed",
            ),
        ] {
            assert_eq!(p.strip_address.replace(header, ""), want);
        }
    }

    #[test]
    fn a_weakref_reading_its_freed_referent_blames_the_referents_dealloc() {
        // gh-157621 on CPython 3.13.15 (a real report, paths and harness frames cut):
        // ParamSpecArgs' dealloc does not clear its weak references.
        let log = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x7c1a5ac78b88 at pc 0x5635ce6a823c bp 0x7ffe60036010 sp 0x7ffe60036008
READ of size 8 at 0x7c1a5ac78b88 thread T0
    #0 0x5635ce6a823b in Py_TYPE /s/Include/object.h:336:16
    #1 0x5635ce6a823b in PyType_Check /s/Include/object.h:1257:32
    #2 0x5635ce6a823b in _PyObject_GET_WEAKREFS_LISTPTR /s/Include/internal/pycore_object.h:686:9
    #3 0x5635ce6a86ae in clear_weakref_lock_held /s/Objects/weakrefobject.c:82:34
    #4 0x5635ce6a9145 in clear_weakref /s/Objects/weakrefobject.c:113:5
    #5 0x5635ce6a9145 in weakref_dealloc /s/Objects/weakrefobject.c:142:5
    #6 0x5635ce439c6d in _Py_Dealloc /s/Objects/object.c:2939:5
0x7c1a5ac78b88 is located 40 bytes inside of 56-byte region [0x7c1a5ac78b60,0x7c1a5ac78b98)
freed by thread T0 here:
    #0 0x5635cd646186 in free /rustc/llvm/src/llvm-project/compiler-rt/lib/asan/asan_malloc_linux.cpp:51:3
    #1 0x5635ce5a0046 in paramspecattr_dealloc /s/Objects/typevarobject.c:696:5
    #2 0x5635ce439c6d in _Py_Dealloc /s/Objects/object.c:2939:5
SUMMARY: AddressSanitizer: heap-use-after-free /s/Include/object.h:336:16 in Py_TYPE";
        let lines: Vec<&str> = log.lines().collect();
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].culprit().as_deref(), Some("paramspecattr_dealloc"));
    }

    #[test]
    fn only_the_zero_page_is_a_null_dereference() {
        assert_eq!(
            zero_page_address("SEGV on unknown address 0x000000000008 (pc 0x1 bp 0x2 sp 0x3 T0)"),
            Some(8)
        );
        assert_eq!(
            zero_page_address("SEGV on unknown address 0x7f0000001000 (pc 0x1 bp 0x2 sp 0x3 T0)"),
            None
        );
        assert_eq!(
            zero_page_address("heap-use-after-free on address 0x10"),
            None
        );
    }

    #[test]
    fn report_without_symbolizer_still_parses() {
        let text = "==7==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000010 (pc 0x1 bp 0x2 sp 0x3 T0)\n\
==7==The signal is caused by a READ memory access.\n\
    #0 0x7f12 (/tmp/ext.so+0x1234)\n\
    #1 0x55aa (/tmp/python+0x99)\n\
SUMMARY: AddressSanitizer: SEGV (/tmp/ext.so+0x1234)\n";
        let lines: Vec<&str> = text.lines().collect();
        let f = parse(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].class, BugClass::NullDereference);
        assert_eq!(f[0].summary, "SEGV on the zero page (address 0x10)");
        assert_eq!(f[0].access_stack.len(), 2);
        assert_eq!(
            f[0].top_frame().unwrap().object.as_deref(),
            Some("/tmp/ext.so")
        );
    }
}
