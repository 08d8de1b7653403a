//! Sanitizer / valgrind / debug-allocator report parsers: text in, [`Finding`]s out.
//!
//! Everything that decides *which bug class* a report is lives in tables of patterns
//! ([`classify`]), like ClusterFuzz's stack_analyzer, so a new report shape is a new table row and
//! a new fixture, not new control flow. Every parser is tested against real captured reports in
//! `fixtures/` (see `fixtures/README.md` for how each was produced).
//!
//! The rest of the pipeline (minimizer, replay, reproducers) asks this module for findings and
//! bucket signatures and never reads sanitizer text itself.

use std::fmt;

use serde::{Deserialize, Serialize};

mod asan;
mod capisan;
pub mod classify;
pub mod frames;
mod glibc;
mod libfuzzer;
mod pydebug;
mod ubsan;
mod valgrind;

/// The kind of memory or C-API bug a finding is, independent of the tool that saw it; findings are
/// bucketed and minimized per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BugClass {
    /// An owned reference (or the block behind it) is never released.
    ReferenceLeak,
    /// Memory is read or written after it was freed, incl. one DECREF too many.
    UseAfterFree,
    /// The same block is released twice.
    DoubleFree,
    /// An access outside the bounds of a block.
    BufferOverflow,
    /// A decision depends on memory that was never written.
    UninitializedRead,
    /// A block is released through a different allocator family than the one that made it.
    AllocatorMismatch,
    /// A GC type's tp_traverse / tp_clear disagrees with the references it holds.
    GcTraversal,
    /// A borrowed reference is used after a call that could (and did) invalidate it.
    BorrowedRefMisuse,
    /// The error indicator is set when it must not be, or missing when NULL is returned.
    ExceptionState,
    /// Undefined behaviour that is not one of the memory classes above.
    UndefinedBehavior,
    /// A NULL pointer (or a member of one) was dereferenced: SEGV on the zero page, UBSan's
    /// "member access within null pointer". Inside tp_traverse / tp_clear / tp_dealloc it is a
    /// [`BugClass::GcTraversal`] instead (see [`classify::refine_null_deref`]).
    #[serde(rename = "null-deref")]
    NullDereference,
    /// The process died and nothing more specific is known.
    Crash,
    /// The input drove the process over a memory limit (libFuzzer's RSS or malloc limit, or a
    /// sanitizer allocator that was told to abort on failure): a resource problem to look at,
    /// not a memory-safety class. A production build fails such a request with MemoryError.
    OutOfMemory,
}

impl BugClass {
    /// Every class, in declaration order; handy for reports and exhaustive tests.
    pub const ALL: [BugClass; 13] = [
        BugClass::ReferenceLeak,
        BugClass::UseAfterFree,
        BugClass::DoubleFree,
        BugClass::BufferOverflow,
        BugClass::UninitializedRead,
        BugClass::AllocatorMismatch,
        BugClass::GcTraversal,
        BugClass::BorrowedRefMisuse,
        BugClass::ExceptionState,
        BugClass::UndefinedBehavior,
        BugClass::NullDereference,
        BugClass::Crash,
        BugClass::OutOfMemory,
    ];

    /// The human name used in reports ("use-after-free", "reference leak", ...).
    pub fn name(self) -> &'static str {
        match self {
            BugClass::ReferenceLeak => "reference leak",
            BugClass::UseAfterFree => "use-after-free",
            BugClass::DoubleFree => "double free",
            BugClass::BufferOverflow => "buffer overflow",
            BugClass::UninitializedRead => "uninitialized read",
            BugClass::AllocatorMismatch => "allocator mismatch",
            BugClass::GcTraversal => "gc traversal",
            BugClass::BorrowedRefMisuse => "borrowed reference misuse",
            BugClass::ExceptionState => "exception state",
            BugClass::UndefinedBehavior => "undefined behavior",
            BugClass::NullDereference => "NULL dereference",
            BugClass::Crash => "crash",
            BugClass::OutOfMemory => "out of memory",
        }
    }

    /// The stable machine id (the serde name, e.g. "use-after-free"), used in bucket signatures
    /// so signatures do not change when a human name is reworded.
    pub fn id(self) -> &'static str {
        match self {
            BugClass::ReferenceLeak => "reference-leak",
            BugClass::UseAfterFree => "use-after-free",
            BugClass::DoubleFree => "double-free",
            BugClass::BufferOverflow => "buffer-overflow",
            BugClass::UninitializedRead => "uninitialized-read",
            BugClass::AllocatorMismatch => "allocator-mismatch",
            BugClass::GcTraversal => "gc-traversal",
            BugClass::BorrowedRefMisuse => "borrowed-ref-misuse",
            BugClass::ExceptionState => "exception-state",
            BugClass::UndefinedBehavior => "undefined-behavior",
            BugClass::NullDereference => "null-deref",
            BugClass::Crash => "crash",
            BugClass::OutOfMemory => "out-of-memory",
        }
    }
}

impl fmt::Display for BugClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One native stack frame as a tool reported it. Fields a tool did not print are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Symbol name as printed (C name, demangled C++/Rust name, or "??" when unsymbolized).
    pub function: String,
    /// Source file, as printed (may be relative or contain `..`).
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// The module (executable or .so) when the tool printed it instead of / besides a file.
    pub object: Option<String>,
    /// The pc's offset inside `object` (`(object+0xOFFSET)`), when the tool printed it; with
    /// `object` it names an unsymbolized frame (see [`frames::frame_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl Frame {
    /// A frame that only has a function name.
    pub fn named(function: impl Into<String>) -> Frame {
        Frame {
            function: function.into(),
            file: None,
            line: None,
            object: None,
            offset: None,
        }
    }
}

/// The tool whose output produced a finding; it tells the reader how much to trust the stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    /// AddressSanitizer error report.
    Asan,
    /// UndefinedBehaviorSanitizer runtime error.
    Ubsan,
    /// LeakSanitizer (standalone or inside ASan) leak report.
    Lsan,
    /// CPython's debug memory hooks (PYTHONMALLOC=debug / malloc_debug / pymalloc_debug).
    DebugAllocator,
    /// A pydebug assertion or `Fatal Python error`.
    PydebugFatal,
    /// valgrind memcheck (XML).
    Valgrind,
    /// capisan's own ownership-model checks.
    Capisan,
    /// libFuzzer's own crash handler (`ERROR: libFuzzer: deadly signal`), when nothing more
    /// specific reported the crash.
    #[serde(rename = "libfuzzer")]
    LibFuzzer,
}

/// One bug observed in one run, with everything the minimizer, bucketing and reproducers need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What kind of bug this is.
    pub class: BugClass,
    /// Which tool reported it.
    pub tool: Tool,
    /// One line, e.g. "heap-use-after-free READ of size 8".
    pub summary: String,
    /// Where the bad access (or the bad free, or the leak check) happened, innermost first.
    pub access_stack: Vec<Frame>,
    /// Where the block was freed, when the tool knows.
    pub free_stack: Vec<Frame>,
    /// Where the block was allocated, when the tool knows.
    pub alloc_stack: Vec<Frame>,
    /// capisan op log lines ("#0 NewList(s0)") that led here, oldest first.
    pub op_log: Vec<String>,
    /// The op that was running when it broke ("#3 CallExt bugzoo.extra_decref(s0)").
    pub current_op: Option<String>,
    /// faulthandler-style Python frames (`File "x.py", line 3 in f`), innermost first.
    pub python_frames: Vec<String>,
    /// Why this class was chosen, so an ambiguous classification can be audited.
    pub reason: String,
    /// For a crash inside a GC slot function: the extension type the function belongs to
    /// (the harness's `==capisan== gc-slot` lines), which names the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_type: Option<String>,
}

/// The key findings are bucketed and minimized by:
/// `<class id>|<top frame function>|<op name of current_op>`.
///
/// Two runs of the same bug give the same signature even when addresses, pids, sizes or the
/// Python driver differ, because none of those are part of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketSignature(pub String);

impl fmt::Display for BucketSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Finding {
    /// A finding with empty stacks and context; parsers fill in what their tool reports.
    pub fn new(class: BugClass, tool: Tool, summary: impl Into<String>) -> Finding {
        Finding {
            class,
            tool,
            summary: summary.into(),
            access_stack: Vec::new(),
            free_stack: Vec::new(),
            alloc_stack: Vec::new(),
            op_log: Vec::new(),
            current_op: None,
            python_frames: Vec::new(),
            reason: String::new(),
            gc_type: None,
        }
    }

    /// The bucket key; see [`BucketSignature`]. Missing parts are written as `?` (no frame) and
    /// `-` (no capisan op), so the signature is always three `|`-separated fields.
    pub fn signature(&self) -> BucketSignature {
        let culprit = self.culprit();
        let frame = culprit.as_deref().unwrap_or("?");
        // A GC traversal bug is seen where the object dies, which is incidental (a Release, a
        // slot overwritten by any op, the end of the sequence): the type alone names it.
        let op = match self.class {
            BugClass::GcTraversal => "-".to_string(),
            _ => self
                .current_op
                .as_deref()
                .map(capisan::op_name)
                .unwrap_or_else(|| "-".to_string()),
        };
        BucketSignature(format!("{}|{}|{}", self.class.id(), frame, op))
    }

    /// The name a bucket is keyed by: the top frame's function (`module.so+0xOFFSET` when
    /// unsymbolized, see [`frames::frame_name`]: never a file suffix); but when every frame is
    /// CPython's own (e.g. `list_dealloc` tripping over an object an extension over-released,
    /// with the extension no longer on the stack) and the op being run was an extension call,
    /// the extension callee — the code that was running.
    /// Dotted names (`bugzoo.extra_decref`, `bugzoo.Holder`) keep only their last part, so a
    /// bug named by a stack frame and by the op log lands in the same bucket.
    pub fn culprit(&self) -> Option<String> {
        if let Some(types) = &self.gc_type {
            let short = types.split(',').map(|t| t.rsplit('.').next().unwrap_or(t));
            return Some(short.collect::<Vec<_>>().join(","));
        }
        let top = self.top_frame();
        let top_is_core = top.is_none_or(frames::is_interpreter_core);
        let callee = self
            .current_op
            .as_deref()
            .map(capisan::op_name)
            .and_then(|n| n.strip_prefix("CallExt ").map(str::to_string));
        let name = match (top, callee) {
            (None, Some(callee)) => callee,
            (Some(_), Some(callee)) if top_is_core => callee,
            // `mymod.so+0x1234`: its dots are not a qualified name's.
            (Some(f), _) if frames::is_unsymbolized(f) => return Some(frames::frame_name(f)),
            (Some(f), _) => f.function.clone(),
            (None, None) => return None,
        };
        let last = name.rsplit('.').next().unwrap_or(&name);
        Some(strip_subclass_variant(last).to_string())
    }

    /// The frame that best names *where the bug is*: the innermost frame that is neither
    /// machinery (allocators, sanitizer interceptors, refcount helpers, abort, the capisan harness,
    /// Rust std / libFuzzer) nor CPython's own core, searched in the access stack, then the free
    /// stack, then the allocation stack. When every non-machinery frame is CPython core (e.g. a
    /// `list_dealloc` that touches an object an extension over-released, with no extension frame
    /// in any stack), the innermost non-machinery frame of the same search order is returned.
    ///
    /// Preferring extension frames over CPython frames is what makes a signature point at the
    /// buggy extension function rather than at the runtime that tripped over its mistake.
    pub fn top_frame(&self) -> Option<&Frame> {
        let stacks = [&self.access_stack, &self.free_stack, &self.alloc_stack];
        stacks
            .iter()
            .flat_map(|s| s.iter())
            .find(|f| !frames::is_machinery(f) && !frames::is_interpreter_core(f))
            // A weak reference reading its freed referent: the referent's dealloc skipped
            // PyObject_ClearWeakRefs, so the free stack's dealloc names the bug, not the
            // weakref code that tripped over it (gh-157621, ParamSpecArgs on 3.13.15).
            .or_else(|| {
                let access = self
                    .access_stack
                    .iter()
                    .find(|f| !frames::is_machinery(f))?;
                frames::is_weakref_machinery(access)
                    .then(|| self.free_stack.iter().find(|f| !frames::is_machinery(f)))
                    .flatten()
            })
            .or_else(|| {
                stacks
                    .iter()
                    .flat_map(|s| s.iter())
                    .find(|f| !frames::is_machinery(f))
            })
            // A standalone program's own `main` is its code, not a fuzzer's entry point.
            .or_else(|| {
                stacks
                    .iter()
                    .flat_map(|s| s.iter())
                    .find(|f| f.function == "main")
            })
    }
}

/// `Type~hook~style` (an evil subclass of `Type` the harness made, overriding `hook`) is
/// `Type`: a bug reached through any of a type's evil subclasses is the base type's C code, and
/// one bucket per subclass variant would split one bug into dozens (multidict's heap-type
/// leak: 49 buckets on one release). The finding keeps the full name in its text.
pub fn strip_subclass_variant(name: &str) -> &str {
    name.split('~').next().unwrap_or(name)
}

/// Why a report could not be parsed at all (as opposed to parsing to no findings).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The valgrind XML is not well-formed; usually the run was killed mid-write. Re-run with
    /// `--xml-file=` on a path nothing else writes to and let valgrind exit.
    #[error("valgrind XML is malformed at byte {position}: {message}")]
    ValgrindXml {
        /// Byte offset where the XML reader gave up.
        position: u64,
        /// The reader's message.
        message: String,
    },
}

/// Parses everything textual in one run's stderr / log: ASan, LSan, UBSan, CPython debug
/// allocator and pydebug fatal errors, capisan violation lines, and libFuzzer crash reports.
///
/// capisan's op log and current op, and faulthandler Python frames, are attached to every
/// finding in the same text (they describe the one run), wherever in the text they were printed.
/// Text that contains no report (a clean run, or only the ignored UBSan "incorrect function type"
/// noise) gives an empty vector.
///
/// CPython's fatal errors print no native stack; when the signal they raise is caught by
/// libFuzzer, its `deadly signal` stack (or any frame block) that follows a fatal error becomes
/// that error's access stack. A libFuzzer report is a finding of its own only when nothing else
/// in the text is (a lone `deadly signal` is a crash).
pub fn parse(text: &str) -> Vec<Finding> {
    let lines: Vec<&str> = text.lines().collect();
    let context = capisan::parse_context(&lines);
    let mut findings = Vec::new();
    findings.extend(
        capisan::parse_violations(&lines)
            .into_iter()
            .map(classify::refine_capisan_detail),
    );
    let sanitizer = asan::parse(&lines);
    let has_sanitizer_report = !sanitizer.is_empty();
    findings.extend(sanitizer);
    findings.extend(ubsan::parse(&lines));
    let fatal: Vec<_> = pydebug::parse(&lines)
        .into_iter()
        // A sanitizer report already explains the signal faulthandler then saw.
        .filter(|(_, f)| !(has_sanitizer_report && pydebug::is_signal_only(f)))
        .collect();
    let starts: Vec<usize> = fatal.iter().map(|(range, _)| range.start).collect();
    for (k, (range, mut f)) in fatal.into_iter().enumerate() {
        // One crash, two reports (pydebug's fatal error, then ASan tripping over the dead object
        // while it was being dumped): keep ASan's, which has the stacks, and say both.
        if let Some(a) = findings
            .iter_mut()
            .find(|a| a.tool == Tool::Asan && a.class == f.class)
        {
            a.reason = format!("{}; pydebug also reported: {}", a.reason, f.summary);
            continue;
        }
        let limit = starts.get(k + 1).copied().unwrap_or(lines.len());
        let stack = following_stack(&lines[range.end..limit]);
        if !stack.is_empty() {
            f.access_stack = stack;
        }
        findings.push(f);
    }
    if findings.is_empty() {
        findings.extend(glibc::parse(&lines));
    }
    if findings.is_empty() {
        findings.extend(libfuzzer::parse(&lines));
    }
    let python_frames = pydebug::python_frames(&lines);
    for finding in &mut findings {
        if finding.op_log.is_empty() {
            finding.op_log.clone_from(&context.op_log);
        }
        if finding.current_op.is_none() {
            finding.current_op.clone_from(&context.current_op);
        }
        if finding.python_frames.is_empty() {
            finding.python_frames.clone_from(&python_frames);
        }
        if finding.class == BugClass::GcTraversal && finding.gc_type.is_none() {
            // Every type the function serves, so one bug in a slot several types share
            // (multidict's `multidict_tp_traverse`) is one bucket whichever type hit it.
            finding.gc_type = finding.top_frame().and_then(|top| {
                let (_, types) = context
                    .gc_slots
                    .iter()
                    .find(|(function, _)| *function == top.function)?;
                let mut types = types.clone();
                types.sort();
                Some(types.join(","))
            });
            if let Some(t) = &finding.gc_type {
                finding.reason = format!("{}; the slot is type {t}'s", finding.reason);
            }
        }
    }
    findings
}

/// The first stack block in `lines` (the text after a report that prints no native stack), up to
/// the next report of another tool; libFuzzer report headers and anything else in between (op log
/// lines, the fatal error's object dump, faulthandler's Python stack) are skipped.
fn following_stack(lines: &[&str]) -> Vec<Frame> {
    for (i, line) in lines.iter().enumerate() {
        if asan::is_header(line) || ubsan::is_header(line) || capisan::is_violation(line) {
            break;
        }
        let stack = frames::parse_stack_block(&lines[i..]);
        if !stack.is_empty() {
            return stack;
        }
    }
    Vec::new()
}

/// Parses valgrind memcheck `--xml=yes` output into findings; see [`classify::VALGRIND_KINDS`]
/// for which error kinds map to which class. Errors valgrind reports that are not bugs
/// (still-reachable and possibly-lost leaks) are skipped.
pub fn parse_valgrind_xml(xml: &str) -> Result<Vec<Finding>, DetectError> {
    valgrind::parse(xml)
}

pub use valgrind::{MemcheckError, MemcheckStack};

/// Every `<error>` of memcheck's `--xml=yes` output as memcheck wrote it, unclassified: all kinds,
/// all stacks, object paths and the generated suppression (`--gen-suppressions=all`). The same
/// reader as [`parse_valgrind_xml`]; the valgrind suppression engine works on these.
pub fn parse_memcheck_errors(xml: &str) -> Result<Vec<MemcheckError>, DetectError> {
    valgrind::parse_errors(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixture text by file name; all fixtures are real captures unless fixtures/README.md says
    /// otherwise.
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("fixtures/", $name))
        };
    }

    fn only(text: &str) -> Finding {
        let findings = parse(text);
        assert_eq!(findings.len(), 1, "expected one finding, got {findings:#?}");
        findings.into_iter().next().unwrap()
    }

    fn top(f: &Finding) -> &str {
        f.top_frame().expect("a top frame").function.as_str()
    }

    #[test]
    fn extra_decref_is_use_after_free_in_the_extension() {
        let f = only(fixture!("asan_extra_decref.txt"));
        assert_eq!(f.class, BugClass::UseAfterFree);
        assert_eq!(f.tool, Tool::Asan);
        assert_eq!(f.summary, "heap-use-after-free READ of size 8");
        assert_eq!(f.access_stack[0].function, "Py_DECREF");
        assert_eq!(f.access_stack[2].function, "list_dealloc");
        assert_eq!(f.access_stack[2].line, Some(565));
        // The access is all CPython; the extension frame is where the object was freed.
        assert_eq!(top(&f), "extra_decref");
        assert_eq!(
            f.top_frame().unwrap().file.as_deref(),
            Some("/work/main/tests/bugzoo/bugzoo.c")
        );
        assert_eq!(f.free_stack[0].function, "free");
        assert_eq!(
            f.free_stack[0].object.as_deref(),
            Some("/tmp/exp/asan/python")
        );
        assert_eq!(f.alloc_stack[4].function, "object_new");
        assert_eq!(f.signature().0, "use-after-free|extra_decref|-");
    }

    #[test]
    fn two_captures_of_one_bug_share_a_signature() {
        let pairs = [
            (
                fixture!("asan_extra_decref.txt"),
                fixture!("asan_extra_decref_2.txt"),
            ),
            (
                fixture!("asan_double_free.txt"),
                fixture!("asan_double_free_2.txt"),
            ),
            (
                fixture!("asan_overflow.txt"),
                fixture!("asan_overflow_2.txt"),
            ),
            (
                fixture!("asan_borrowed_after_mutation.txt"),
                fixture!("asan_borrowed_after_mutation_2.txt"),
            ),
            (
                fixture!("asan_extra_decref.txt"),
                fixture!("asan_extra_decref_noisy.txt"),
            ),
        ];
        for (a, b) in pairs {
            assert_eq!(only(a).signature(), only(b).signature());
        }
        assert_ne!(
            only(fixture!("asan_extra_decref.txt")).signature(),
            only(fixture!("asan_double_free.txt")).signature()
        );
    }

    #[test]
    fn double_free_names_the_second_free() {
        let f = only(fixture!("asan_double_free.txt"));
        assert_eq!(f.class, BugClass::DoubleFree);
        assert_eq!(f.summary, "attempting double-free");
        assert_eq!(top(&f), "double_free");
        assert_eq!(f.top_frame().unwrap().line, Some(173));
        assert_eq!(f.free_stack[1].line, Some(172));
        assert_eq!(f.signature().0, "double-free|double_free|-");
    }

    #[test]
    fn overflow_is_a_write_past_the_block() {
        let f = only(fixture!("asan_overflow.txt"));
        assert_eq!(f.class, BugClass::BufferOverflow);
        assert_eq!(f.summary, "heap-buffer-overflow WRITE of size 32");
        assert_eq!(f.access_stack[0].function, "__asan_memcpy");
        assert_eq!(top(&f), "overflow");
        assert_eq!(f.alloc_stack[1].function, "overflow");
    }

    #[test]
    fn borrowed_item_used_after_the_callback_cleared_the_list() {
        for text in [
            fixture!("asan_borrowed_after_mutation.txt"),
            fixture!("asan_borrowed_after_mutation_2.txt"),
        ] {
            let f = only(text);
            assert_eq!(f.class, BugClass::BorrowedRefMisuse, "{}", f.reason);
            assert!(f.reason.contains("list_clear"), "{}", f.reason);
            assert_eq!(top(&f), "borrowed_after_mutation");
            assert_eq!(f.access_stack[1].function, "PyObject_Repr");
        }
    }

    #[test]
    fn pymem_double_free_seen_by_the_debug_hooks_is_a_double_free() {
        let f = only(fixture!("asan_debugalloc_double_free_pymem.txt"));
        assert_eq!(f.class, BugClass::DoubleFree, "{}", f.reason);
        assert_eq!(f.tool, Tool::Asan);
        assert_eq!(f.access_stack[0].function, "_PyMem_DebugCheckAddress");
        assert_eq!(top(&f), "double_free_pymem");
    }

    #[test]
    fn leaked_bytes_object_is_a_reference_leak() {
        let f = only(fixture!("lsan_leak_bytes_on_error.txt"));
        assert_eq!(f.class, BugClass::ReferenceLeak);
        assert_eq!(f.tool, Tool::Lsan);
        assert_eq!(f.summary, "Direct leak of 54 byte(s) in 1 object(s)");
        assert!(f.access_stack.is_empty());
        assert_eq!(f.alloc_stack[2].function, "PyBytes_FromStringAndSize");
        assert_eq!(top(&f), "leak_bytes_on_error");
        assert_eq!(f.signature().0, "reference-leak|leak_bytes_on_error|-");
    }

    #[test]
    fn debug_allocator_api_mismatch() {
        let f = only(fixture!("debugalloc_alloc_mismatch.txt"));
        assert_eq!(f.class, BugClass::AllocatorMismatch);
        assert_eq!(f.tool, Tool::DebugAllocator);
        assert_eq!(
            f.summary,
            "_PyMem_DebugRawFree: bad ID: Allocated using API 'm', verified using API 'o'"
        );
        // The debug hooks print no C stack; the Python stack is all there is.
        assert!(f.top_frame().is_none());
        assert_eq!(
            f.python_frames,
            vec![r#"File "<string>", line 1 in <module>"#]
        );
        assert_eq!(f.signature().0, "allocator-mismatch|?|-");
    }

    #[test]
    fn debug_allocator_trailing_pad_is_an_overflow() {
        let f = only(fixture!("debugalloc_overflow_pymem.txt"));
        assert_eq!(f.class, BugClass::BufferOverflow);
        assert_eq!(f.tool, Tool::DebugAllocator);
        assert!(f.summary.ends_with("bad trailing pad byte"));
    }

    /// A real package bug (markupsafe 3.0.4 `_escape_inner` returns NULL without an exception)
    /// reached through a keyword call, i.e. from Python code: ceval's error path asserts. It is
    /// the same bug, and the same bucket, as the harness's exception-state check on a direct
    /// call: class exception-state, named after the callee, not after `__assert_fail_base`.
    #[test]
    fn ceval_error_path_assertion_is_the_callees_exception_state() {
        let f = only(fixture!("libfuzzer_pydebug_null_without_exception.txt"));
        assert_eq!(f.class, BugClass::ExceptionState, "{f:#?}");
        assert_eq!(
            f.signature().to_string(),
            "exception-state|_escape_inner|CallExt markupsafe._speedups._escape_inner"
        );
    }

    #[test]
    fn ubsan_runtime_errors_with_stacks() {
        let findings = parse(fixture!("ubsan_patterns.txt"));
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(findings[0].class, BugClass::UndefinedBehavior);
        assert_eq!(findings[0].tool, Tool::Ubsan);
        assert!(findings[0].summary.starts_with("signed integer overflow"));
        assert_eq!(top(&findings[0]), "add_counts");
        assert_eq!(findings[1].class, BugClass::BufferOverflow);
        assert_eq!(top(&findings[1]), "main");
        assert_eq!(findings[1].access_stack[0].line, Some(12));
    }

    #[test]
    fn clean_runs_and_noise_give_no_findings() {
        for text in [
            fixture!("clean_twins_asan.txt"),
            fixture!("lsan_leak_on_error_clean.txt"),
            fixture!("ubsan_noise_only.txt"),
        ] {
            assert_eq!(parse(text), Vec::new());
        }
    }

    #[test]
    fn noise_around_a_real_report_is_ignored() {
        let f = only(fixture!("asan_extra_decref_noisy.txt"));
        assert_eq!(f.class, BugClass::UseAfterFree);
        assert_eq!(top(&f), "extra_decref");
    }

    #[test]
    fn capisan_op_log_attaches_to_the_asan_finding() {
        let f = only(fixture!("capisan_oplog_then_asan.txt"));
        assert_eq!(f.tool, Tool::Asan);
        assert_eq!(f.op_log.len(), 4);
        assert_eq!(f.op_log[0], "#0 NewList(s0)");
        assert_eq!(
            f.current_op.as_deref(),
            Some("#3 CallExt bugzoo.extra_decref(s0)")
        );
        assert_eq!(
            f.signature().0,
            "use-after-free|extra_decref|CallExt bugzoo.extra_decref"
        );
    }

    #[test]
    fn overflow_next_to_a_freed_object_is_use_after_free() {
        // Real capture: `replay` of the bugzoo regression corpus with extra_decref reintroduced.
        let f = only(fixture!("asan_overflow_next_to_freed_object.txt"));
        assert_eq!(f.class, BugClass::UseAfterFree);
        assert!(f.reason.contains("negative refcount"), "{}", f.reason);
        assert_eq!(f.top_frame().unwrap().function, "extra_decref");
    }

    #[test]
    fn capisan_violations() {
        // Real captures: the harness's own checks on the bug zoo (triage logs of fuzz-ext runs).
        let f = only(fixture!("capisan_gc_traversal.txt"));
        assert_eq!(f.class, BugClass::GcTraversal);
        assert_eq!(f.tool, Tool::Capisan);
        assert!(f.op_log.len() >= 2, "{:?}", f.op_log);
        assert!(f.reason.contains("missing Py_VISIT"), "{}", f.reason);
        assert_eq!(f.top_frame().unwrap().function, "bugzoo.Holder");
        assert_eq!(f.signature().0, "gc-traversal|Holder|-");
        let f = only(fixture!("capisan_leak.txt"));
        assert_eq!(f.class, BugClass::ReferenceLeak);
        assert_eq!(
            f.current_op.as_deref(),
            Some("#4 s4 = CallExt bugzoo.leak_on_error(s1)")
        );
        assert_eq!(
            f.signature().0,
            "reference-leak|leak_on_error|CallExt bugzoo.leak_on_error"
        );
    }

    #[test]
    fn libfuzzer_stack_attaches_to_the_pydebug_fatal_error() {
        let f = only(fixture!("libfuzzer_pydebug_negative_refcount.txt"));
        assert_eq!(f.class, BugClass::UseAfterFree);
        assert_eq!(f.tool, Tool::PydebugFatal);
        assert_eq!(
            f.summary,
            "_Py_NegativeRefcount: Assertion failed: object has negative ref count"
        );
        // The whole libFuzzer stack, handler frames included; top_frame skips the machinery
        // (sanitizer, libFuzzer, libc, abort, fatal_error, assertion, Py_DECREF) and prefers the
        // extension over list_dealloc.
        assert_eq!(f.access_stack.len(), 38);
        assert_eq!(f.access_stack[0].function, "__sanitizer_print_stack_trace");
        assert_eq!(f.access_stack[14].function, "list_dealloc");
        assert_eq!(top(&f), "extra_decref");
        assert_eq!(f.top_frame().unwrap().line, Some(136));
        assert!(f.op_log.is_empty());
        assert_eq!(f.signature().0, "use-after-free|extra_decref|-");
    }

    /// What capisan's SIGABRT handler prints (`exec::print_op_log`).
    const ABORT_OP_LOG: &str = "\
==capisan== op-log begin
==capisan== #0 s0 = NewList()
==capisan== #1 s1 = NewInt(7)
==capisan== #2 ListAppend(s0, s1)
==capisan== #3 s2 = CallExt bugzoo.extra_decref(s0)
==capisan== op-log end
==capisan== current-op #3 s2 = CallExt bugzoo.extra_decref(s0)
";

    #[test]
    fn op_log_printed_around_the_libfuzzer_stack_attaches() {
        let text = fixture!("libfuzzer_pydebug_negative_refcount.txt");
        let deadly = text.find("==13280== ERROR: libFuzzer").unwrap();
        // After the whole report, between the fatal error and the stack, and before everything.
        for text in [
            format!("{text}{ABORT_OP_LOG}"),
            format!("{}{ABORT_OP_LOG}{}", &text[..deadly], &text[deadly..]),
            format!("{ABORT_OP_LOG}{text}"),
        ] {
            let f = only(&text);
            assert_eq!(f.class, BugClass::UseAfterFree);
            assert_eq!(top(&f), "extra_decref");
            assert_eq!(f.op_log.len(), 4);
            assert_eq!(f.op_log[0], "#0 s0 = NewList()");
            assert_eq!(
                f.current_op.as_deref(),
                Some("#3 s2 = CallExt bugzoo.extra_decref(s0)")
            );
            assert_eq!(
                f.signature().0,
                "use-after-free|extra_decref|CallExt bugzoo.extra_decref"
            );
        }
    }

    #[test]
    fn lone_deadly_signal_is_a_crash_with_its_stack() {
        let text = fixture!("libfuzzer_pydebug_negative_refcount.txt");
        let deadly = &text[text.find("==13280== ERROR: libFuzzer").unwrap()..];
        let f = only(deadly);
        assert_eq!(f.class, BugClass::Crash);
        assert_eq!(f.tool, Tool::LibFuzzer);
        assert_eq!(f.summary, "libFuzzer: deadly signal");
        assert_eq!(f.access_stack.len(), 38);
        assert_eq!(f.signature().0, "crash|extra_decref|-");
    }

    #[test]
    fn deadly_signal_after_a_sanitizer_report_is_not_a_second_finding() {
        let text = format!(
            "{}==1== ERROR: libFuzzer: deadly signal\n    #0 0x1 in abort stdlib/abort.c:79:7\n",
            fixture!("asan_extra_decref.txt")
        );
        let f = only(&text);
        assert_eq!(f.tool, Tool::Asan);
        assert_eq!(f.signature().0, "use-after-free|extra_decref|-");
    }

    #[test]
    fn null_dereference_in_tp_traverse_is_a_gc_traversal_bug() {
        // gcext.HalfBuilt("x") (its __init__ fails before allocating `state`), then
        // gc.collect(0): the collector's subtract_refs calls half_traverse, which reads
        // state->hook. Without -fsanitize=null ASan sees the SEGV; with it UBSan reports first.
        for text in [
            fixture!("asan_null_deref_traverse.txt"),
            fixture!("ubsan_null_member_traverse.txt"),
        ] {
            let f = only(text);
            assert_eq!(f.class, BugClass::GcTraversal, "{}", f.reason);
            assert!(f.reason.contains("half_traverse"), "{}", f.reason);
            assert!(f.reason.contains("subtract_refs"), "{}", f.reason);
            assert_eq!(top(&f), "half_traverse");
            assert_eq!(f.signature().0, "gc-traversal|half_traverse|-");
        }
        // With the harness's gc-slot lines (the types it met), the bucket is the type's.
        for text in [
            fixture!("asan_null_deref_traverse.txt"),
            fixture!("ubsan_null_member_traverse.txt"),
        ] {
            let text = format!(
                "{text}==capisan== gc-slot other_traverse gcext.Other\n==capisan== gc-slot half_traverse gcext.HalfBuilt gcext.Half2\n"
            );
            let f = only(&text);
            // A slot function several types share: one bucket naming them all.
            assert_eq!(f.gc_type.as_deref(), Some("gcext.Half2,gcext.HalfBuilt"));
            assert_eq!(f.signature().0, "gc-traversal|Half2,HalfBuilt|-");
            assert!(
                f.reason.contains("type gcext.Half2,gcext.HalfBuilt"),
                "{}",
                f.reason
            );
            let one = text.replace(" gcext.Half2", "");
            assert_eq!(only(&one).signature().0, "gc-traversal|HalfBuilt|-");
        }
        let f = only(fixture!("asan_null_deref_traverse.txt"));
        assert_eq!(f.summary, "SEGV on the zero page (address 0x8)");
        let f = only(fixture!("ubsan_null_member_traverse.txt"));
        assert_eq!(
            f.summary,
            "member access within null pointer of type 'HalfState'"
        );
    }

    #[test]
    fn null_dereference_outside_gc_slots_has_its_own_class() {
        // ctypes.string_at(16, 1): PyBytes_FromStringAndSize copies from address 0x10.
        let f = only(fixture!("asan_null_deref_ctypes.txt"));
        assert_eq!(f.class, BugClass::NullDereference);
        assert_eq!(f.tool, Tool::Asan);
        assert_eq!(f.summary, "SEGV on the zero page (address 0x10)");
        assert!(f.reason.contains("NULL pointer"), "{}", f.reason);
        assert!(
            f.signature().0.starts_with("null-deref|"),
            "{}",
            f.signature()
        );
    }

    #[test]
    fn a_memory_leak_violation_says_raw_memory() {
        // What exec::raw_leak_verdict prints (tests/gc_raw.rs checks the live text).
        let text = "==capisan== VIOLATION kind=leak op=#1 s1 = CallExt gcext.malloc_leak(s0)
==capisan== detail: memory leak: each call of gcext.malloc_leak leaves memory allocated and never freed (malloc / PyMem blocks; no reference is left behind): allocated-bytes deltas [116, 116] over repeated calls
==capisan== detail: confirmed by regrtest's procedure (caches cleared and a collection after every run, -R 3:3): allocated-bytes deltas [116, 116, 116], 116 bytes per call (heap size 207376384 bytes)
==capisan== detail: at: gcext.malloc_leak
";
        let f = only(text);
        assert_eq!(f.class, BugClass::ReferenceLeak);
        assert!(
            f.reason.starts_with("capisan: memory the call allocated"),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("116 bytes per call"), "{}", f.reason);
        assert_eq!(
            f.signature().0,
            "reference-leak|malloc_leak|CallExt gcext.malloc_leak"
        );
        // A reference leak keeps the kind's reason.
        let f = only(fixture!("capisan_leak.txt"));
        assert!(
            f.reason.starts_with("capisan: the op left a reference"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn class_ids_match_serde_names() {
        for class in BugClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.id()));
        }
    }
}
