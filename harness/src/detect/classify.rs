//! The classification tables: report headline pattern -> bug class, per tool, plus the two
//! stack-based refinements (borrowed-reference misuse, double free seen as use-after-free).
//!
//! First matching row wins. A row whose class is `None` marks text that looks like a report but
//! is not a finding (e.g. UBSan's "incorrect function type" on CPython's own slot calls).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

use super::{BugClass, Finding, Frame};

/// One row of a classification table.
#[derive(Debug)]
pub struct Pattern {
    /// Regex matched against the tool's headline (see each table for what the headline is).
    pub regex: &'static str,
    /// The class, or `None` for "recognised, not a finding".
    pub class: Option<BugClass>,
    /// Why, copied into [`Finding::reason`].
    pub reason: &'static str,
}

pub(crate) const fn row(
    regex: &'static str,
    class: Option<BugClass>,
    reason: &'static str,
) -> Pattern {
    Pattern {
        regex,
        class,
        reason,
    }
}

use BugClass::*;

/// AddressSanitizer: the headline is the bug type after `ERROR: AddressSanitizer: `, with the
/// address part removed (e.g. "heap-use-after-free", "attempting double-free", "SEGV").
pub const ASAN: &[Pattern] = &[
    row(r"^heap-use-after-free", Some(UseAfterFree), "ASan: access to a freed heap block"),
    row(r"^attempting double-free", Some(DoubleFree), "ASan: the same block freed twice"),
    row(
        r"^(heap|stack|global|dynamic-stack)-buffer-(overflow|underflow)|^stack-buffer-underflow|^(container|intra-object)-overflow|^negative-size-param",
        Some(BufferOverflow),
        "ASan: access outside the bounds of a block",
    ),
    row(
        r"^alloc-dealloc-mismatch",
        Some(AllocatorMismatch),
        "ASan: block released by a different allocator family than made it",
    ),
    row(
        r"^attempting free on address which was not malloc",
        Some(AllocatorMismatch),
        "ASan: free() of a pointer malloc never returned, usually a block from another allocator (pymalloc arena, interior pointer)",
    ),
    row(
        r"^(stack-use-after-(return|scope)|use-after-poison)",
        Some(UseAfterFree),
        "ASan: access to memory whose lifetime ended",
    ),
    row(
        r"^(memcpy|memmove|strcpy|strncpy|strcat|strncat)-param-overlap",
        Some(UndefinedBehavior),
        "ASan: overlapping buffers passed to a libc copy",
    ),
    row(
        r"^SEGV on the zero page",
        Some(NullDereference),
        "ASan: SEGV on an address in the zero page (below 4096): a NULL pointer, or a member of a struct through a NULL pointer, was dereferenced",
    ),
    row(
        r"^(SEGV|BUS|FPE|ILL|ABRT)\b",
        Some(Crash),
        "ASan: signal with no memory-error diagnosis",
    ),
    row(
        r"^(allocation-size-too-big|calloc-overflow|requested allocation size|out-of-memory|allocator is out of memory)",
        Some(OutOfMemory),
        "ASan: an allocation request failed and the allocator was told to abort; a production malloc returns NULL (capisan runs with allocator_may_return_null=1, so this shows a run without it)",
    ),
    row(r".", Some(Crash), "ASan: unrecognised report type"),
];

/// LeakSanitizer: the headline is the leak line ("Direct leak of 54 byte(s) in 1 object(s)").
pub const LSAN: &[Pattern] = &[
    row(
        r"^Direct leak",
        Some(ReferenceLeak),
        "LSan: a block nothing points to at exit; for a Python object that is an owned reference never released",
    ),
    row(
        r"^Indirect leak",
        None,
        "LSan: reachable only from a direct leak, which is the finding",
    ),
    row(
        r".",
        Some(ReferenceLeak),
        "LSan: a leak report of a kind with no more specific pattern",
    ),
];

/// UBSan: the headline is the message after `runtime error: `.
pub const UBSAN: &[Pattern] = &[
    row(
        r"through pointer to incorrect function type",
        None,
        "UBSan -fsanitize=function: CPython calls every slot through a generic pointer type; noise unless the build passes -fno-sanitize=function",
    ),
    row(
        r"out of bounds for type|index .* out of bounds|pointer index expression with base .* overflowed",
        Some(BufferOverflow),
        "UBSan: array index or pointer arithmetic out of bounds",
    ),
    row(
        r"(member access within|load of|store to|reference binding to) null pointer",
        Some(NullDereference),
        "UBSan: a NULL pointer (or a member of one) was dereferenced",
    ),
    row(
        r"misaligned address|null pointer|applying (non-)?zero offset",
        Some(UndefinedBehavior),
        "UBSan: invalid pointer use",
    ),
    row(r".", Some(UndefinedBehavior), "UBSan runtime error"),
];

/// CPython debug allocator and pydebug fatal errors: the headline is the text after
/// `Fatal Python error: `, or the `func: Assertion failed: msg` line printed before it.
pub const PYDEBUG: &[Pattern] = &[
    row(
        r"bad ID: Allocated using API '.', verified using API '.'",
        Some(AllocatorMismatch),
        "debug allocator: block released through a different PyMem/PyObject API family than allocated it",
    ),
    row(
        r"bad (trailing|leading) pad byte",
        Some(BufferOverflow),
        "debug allocator: the guard bytes around the block were overwritten",
    ),
    row(
        r"object has negative ref count",
        Some(UseAfterFree),
        "pydebug: refcount went below zero, one DECREF too many (over-decref); the object was freed while still referenced",
    ),
    row(
        r"with an exception set|without setting an exception|exception is set|must be called with an exception set",
        Some(ExceptionState),
        "pydebug: a C function's return value disagrees with the error indicator",
    ),
    row(
        r"_PyErr_Occurred\(tstate\)",
        Some(ExceptionState),
        "pydebug: the interpreter's error path found the error indicator in the wrong state; the C function it just called returned NULL without setting an exception (or a result with one set)",
    ),
    row(
        r"^(Segmentation fault|Aborted|Bus error|Floating[- ]point exception|Illegal instruction)$",
        Some(Crash),
        "faulthandler: fatal signal",
    ),
    row(r".", Some(Crash), "pydebug: fatal error with no more specific pattern"),
];

/// libFuzzer's own reports: the headline is the text after `ERROR: libFuzzer: `. Only reports of
/// a process that died are findings; timeouts and the like are not memory or C-API bugs.
pub const LIBFUZZER: &[Pattern] = &[
    row(
        r"^deadly signal",
        Some(Crash),
        "libFuzzer: fatal signal with no sanitizer or CPython diagnosis",
    ),
    row(
        r"^(out-of-memory|malloc\()",
        Some(OutOfMemory),
        "libFuzzer: over its RSS or single-malloc limit (a blow-up, not a memory error)",
    ),
    row(
        r"^fuzz target exited",
        Some(Crash),
        "libFuzzer: the process exited inside the target",
    ),
    row(
        r".",
        None,
        "libFuzzer: timeout / slow-unit / other report that is not a crash",
    ),
];

/// capisan violation kinds (`kind=` on a VIOLATION line); the headline is the kind.
pub const CAPISAN_KINDS: &[Pattern] = &[
    row(
        r"^leak$",
        Some(ReferenceLeak),
        "capisan: the op left a reference the ownership model says is dead",
    ),
    row(
        r"^over-decref$",
        Some(UseAfterFree),
        "capisan: the op released a reference the ownership model says it did not own",
    ),
    row(
        r"^exception-state$",
        Some(ExceptionState),
        "capisan: return value and error indicator disagree",
    ),
    row(
        r"^gc-(traversal|clear)$",
        Some(GcTraversal),
        "capisan: tp_traverse / tp_clear disagree with the references the object holds",
    ),
    row(r".", Some(Crash), "capisan: unknown violation kind"),
];

/// capisan violations whose first `detail:` line says more than their kind; the headline is
/// that detail line. A matching row replaces the kind's class and reason; no match keeps them.
pub const CAPISAN_DETAILS: &[Pattern] = &[row(
    r"^memory leak:",
    Some(ReferenceLeak),
    "capisan: memory the call allocated (malloc / PyMem blocks) stays allocated after every repeated call, with no reference left behind: a raw-memory leak, measured with the ASan allocator's counters",
)];

/// valgrind memcheck `<kind>`; the headline is the kind. InvalidRead / InvalidWrite are refined
/// by their `<auxwhat>` in [`valgrind_invalid_access`].
pub const VALGRIND_KINDS: &[Pattern] = &[
    row(
        r"^Uninit(Condition|Value)$",
        Some(UninitializedRead),
        "valgrind: a jump or value depends on memory never written",
    ),
    row(
        r"^Invalid(Read|Write)$",
        Some(BufferOverflow),
        "valgrind: access outside any live block",
    ),
    row(
        r"^InvalidFree$",
        Some(DoubleFree),
        "valgrind: free of a block not (or no longer) allocated",
    ),
    row(
        r"^MismatchedFree$",
        Some(AllocatorMismatch),
        "valgrind: malloc/new/new[] released by the wrong deallocator",
    ),
    row(
        r"^Leak_(DefinitelyLost|IndirectlyLost)$",
        Some(ReferenceLeak),
        "valgrind: block unreachable at exit",
    ),
    row(
        r"^Leak_(PossiblyLost|StillReachable)$",
        None,
        "valgrind: still pointed to; CPython keeps caches alive at exit",
    ),
    row(
        r"^Overlap$",
        Some(UndefinedBehavior),
        "valgrind: overlapping memcpy",
    ),
    row(r".", Some(Crash), "valgrind: other memcheck error"),
];

/// Every classification table, by name, so a test can hold each one to the catch-all rule.
pub const TABLES: &[(&str, &[Pattern])] = &[
    ("ASAN", ASAN),
    ("LSAN", LSAN),
    ("UBSAN", UBSAN),
    ("PYDEBUG", PYDEBUG),
    ("LIBFUZZER", LIBFUZZER),
    ("CAPISAN_KINDS", CAPISAN_KINDS),
    ("VALGRIND_KINDS", VALGRIND_KINDS),
    ("GLIBC", super::glibc::GLIBC),
];

/// Classifies `headline` with `table`: `None` when the matching row says "not a finding".
/// Every table ends with a catch-all row (see [`TABLES`]), so an unknown headline still becomes
/// a finding; an empty headline, which even `.` does not match, gets that last row too.
///
/// # Panics
/// When `table` is empty.
pub fn classify(table: &'static [Pattern], headline: &str) -> Option<(BugClass, &'static str)> {
    let row = table
        .iter()
        .find(|p| compiled(p.regex).is_match(headline))
        .or_else(|| table.last())
        .expect("a classification table has rows");
    row.class.map(|c| (c, row.reason))
}

fn compiled(pattern: &'static str) -> Regex {
    // The tables are small and fixed: compile each pattern once. `Regex` clones share the
    // compiled program, so handing out clones is cheap.
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Regex>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern)
        .or_insert_with(|| Regex::new(pattern).expect("classification pattern compiles"))
        .clone()
}

/// Functions that drop references held by a container: if one of them freed the block a C
/// function later touched, the C function was holding a borrowed reference into that container.
pub const CONTAINER_MUTATORS: &[&str] = &[
    r"^_?list_clear(_impl)?$",
    r"^py_list_clear(_impl)?$",
    r"^list_ass_(slice|item|subscript)",
    r"^list_(remove|pop|dealloc)",
    r"^PyList_(SetSlice|SetItem)$",
    r"^dict_(ass_sub|dealloc|popitem|pop|clear)",
    r"^(delitem_common|delitem_knownhash_lock_held|insertdict|setitem_take2_lock_held)$",
    r"^_?PyDict_(DelItem|Clear|SetItem|Pop)",
    r"^set_(clear_internal|discard_entry|dealloc)",
    r"^subtype_setdict$|^_PyObject_SetAttrId$|^PyObject_GenericSetDict$",
];

/// Frames that are a call from C into Python code (or another callable).
pub const PYTHON_CALLS: &[&str] = &[
    r"^_?PyObject_(Call|Vectorcall|MakeTpCall)",
    r"^_PyEval_(EvalFrameDefault|Vector)$",
    r"^PyEval_EvalCode",
    r"^(cfunction_vectorcall|cfunction_call|method_vectorcall)",
    r"^_PyFunction_Vectorcall$",
];

/// Frames that are a type's GC slot (tp_traverse / tp_clear / tp_dealloc) by the names
/// extensions and CPython give them (`Foo_traverse`, `foo_tp_clear`, `subtype_dealloc`).
pub const GC_SLOTS: &[&str] = &[r"(?i)traverse", r"(?i)(^|_)clear$", r"(?i)dealloc"];

/// The collector's own frames that call tp_traverse / tp_clear on every object of a
/// generation: a crash in their callee is a crash inside a GC slot, whatever its name.
pub const GC_INTERNALS: &[&str] = &[
    r"^(visit_decref|visit_reachable|visit_move|subtract_refs|update_refs|move_unreachable|deduce_unreachable|delete_garbage|move_legacy_finalizer_reachable|gc_collect_main|gc_collect_region)$",
    r"^(_PyGC_Collect|PyGC_Collect|_PyObject_GC_Link|gc_collect_impl)$",
];

/// Refines a NULL dereference by where it happened: inside a GC slot (the innermost
/// non-machinery frame is named like one, or is called by the collector) it is a GC traversal
/// bug; the slot's frame names the type. Returns the reason, `None` when it is not in a slot.
pub fn refine_null_deref(f: &Finding) -> Option<String> {
    let mut frames = f
        .access_stack
        .iter()
        .filter(|fr| !super::frames::is_machinery(fr));
    let crash = frames.next()?;
    let caller = frames.next();
    let in_slot = any_match(GC_SLOTS, &crash.function);
    let by_collector = caller.filter(|c| any_match(GC_INTERNALS, &c.function));
    if !in_slot && by_collector.is_none() {
        return None;
    }
    let called = by_collector
        .map(|c| format!(", called by the collector's `{}`", c.function))
        .unwrap_or_default();
    Some(format!(
        "NULL dereference inside GC slot `{}`{called}: the object has a NULL field its tp_traverse / tp_clear / tp_dealloc reads without checking, typically an object half built by a constructor or __init__ that failed before setting it, and the collector reaches it",
        crash.function
    ))
}

/// Refines a capisan violation by its first detail line ([`CAPISAN_DETAILS`]).
pub fn refine_capisan_detail(mut f: Finding) -> Finding {
    let Some((_, details)) = f.reason.split_once("; ") else {
        return f;
    };
    let first = details.split("; ").next().unwrap_or("");
    if let Some(row) = CAPISAN_DETAILS
        .iter()
        .find(|p| compiled(p.regex).is_match(first))
    {
        if let Some(class) = row.class {
            f.class = class;
            f.reason = format!("{}; {details}", row.reason);
        }
    }
    f
}

fn any_match(table: &'static [&'static str], name: &str) -> bool {
    table.iter().any(|p| compiled(p).is_match(name))
}

/// Refines an ASan heap-use-after-free by its stacks; returns the class and the reason.
///
/// * BorrowedRefMisuse: the free stack has a container mutation with a call into Python further
///   out (the C code called out, the callee mutated the container and freed the item), and the
///   extension function that made the bad access (if any) is on the free stack outside that
///   call — it held the item across the call without owning it.
/// * DoubleFree: the access is the CPython debug allocator's free check, and the extension frame
///   that freed the block is the same function now freeing it again.
pub fn refine_use_after_free(f: &Finding) -> (BugClass, String) {
    if let Some(reason) = borrowed_ref_misuse(f) {
        return (BorrowedRefMisuse, reason);
    }
    if let Some(reason) = debug_allocator_double_free(f) {
        return (DoubleFree, reason);
    }
    (
        UseAfterFree,
        "ASan: access to a freed heap block; the free stack shows no container mutation reached through a call into Python".to_string(),
    )
}

fn first_extension_frame(stack: &[Frame]) -> Option<&Frame> {
    stack
        .iter()
        .find(|f| !super::frames::is_machinery(f) && !super::frames::is_interpreter_core(f))
}

fn borrowed_ref_misuse(f: &Finding) -> Option<String> {
    let free = &f.free_stack;
    let mutation = free
        .iter()
        .position(|fr| any_match(CONTAINER_MUTATORS, &fr.function))?;
    let call = free[mutation..]
        .iter()
        .position(|fr| any_match(PYTHON_CALLS, &fr.function))?
        + mutation;
    if let Some(accessor) = first_extension_frame(&f.access_stack) {
        if !free[call..]
            .iter()
            .any(|fr| fr.function == accessor.function)
        {
            return None;
        }
    }
    Some(format!(
        "heap-use-after-free whose block was freed by container mutation `{}` reached through call `{}`: a borrowed reference was used after a call that invalidated it",
        free[mutation].function, free[call].function
    ))
}

fn debug_allocator_double_free(f: &Finding) -> Option<String> {
    static CHECK: OnceLock<Regex> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        Regex::new(r"^_PyMem_Debug(CheckAddress|RawFree|Free|RawRealloc|Realloc)$").expect("regex")
    });
    if !f.access_stack.iter().any(|fr| check.is_match(&fr.function)) {
        return None;
    }
    let accessor = f
        .access_stack
        .iter()
        .find(|fr| !super::frames::is_machinery(fr))?;
    let freer = f
        .free_stack
        .iter()
        .find(|fr| !super::frames::is_machinery(fr))?;
    (accessor.function == freer.function).then(|| {
        format!(
            "heap-use-after-free inside the debug allocator's free check, on a block `{}` already freed: a double free",
            accessor.function
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_compiles_and_ends_with_a_catch_all() {
        for (name, table) in TABLES {
            for p in *table {
                Regex::new(p.regex).unwrap();
            }
            assert_eq!(
                table.last().map(|p| p.regex),
                Some("."),
                "table {name} must end with a catch-all row, or `classify` panics on a headline no row matches"
            );
            // The catch-all really catches: an unknown headline and an empty one get a row.
            classify(table, "a headline no specific row knows");
            classify(table, "");
        }
        for p in CONTAINER_MUTATORS
            .iter()
            .chain(PYTHON_CALLS)
            .chain(GC_SLOTS)
            .chain(GC_INTERNALS)
        {
            Regex::new(p).unwrap();
        }
    }

    #[test]
    fn table_rows() {
        assert_eq!(
            classify(ASAN, "heap-use-after-free").unwrap().0,
            UseAfterFree
        );
        assert_eq!(
            classify(ASAN, "global-buffer-overflow").unwrap().0,
            BufferOverflow
        );
        assert_eq!(classify(ASAN, "SEGV").unwrap().0, Crash);
        assert_eq!(
            classify(ASAN, "alloc-dealloc-mismatch (malloc vs operator delete)")
                .unwrap()
                .0,
            AllocatorMismatch
        );
        assert!(classify(
            UBSAN,
            "call to function long_hash through pointer to incorrect function type 'long (*)(struct _object *)'"
        )
        .is_none());
        assert_eq!(
            classify(
                PYDEBUG,
                "_Py_NegativeRefcount: Assertion failed: object has negative ref count"
            )
            .unwrap()
            .0,
            UseAfterFree
        );
        assert_eq!(classify(LIBFUZZER, "deadly signal").unwrap().0, Crash);
        assert!(classify(LIBFUZZER, "timeout after 25 seconds").is_none());
        assert_eq!(classify(CAPISAN_KINDS, "gc-clear").unwrap().0, GcTraversal);
        assert!(classify(LSAN, "Indirect leak of 8 byte(s) in 1 object(s)").is_none());
        assert_eq!(
            classify(ASAN, "SEGV on the zero page").unwrap().0,
            NullDereference
        );
        assert_eq!(
            classify(
                UBSAN,
                "member access within null pointer of type 'HalfState'"
            )
            .unwrap()
            .0,
            NullDereference
        );
        assert_eq!(
            classify(UBSAN, "load of null pointer of type 'int'")
                .unwrap()
                .0,
            NullDereference
        );
        assert_eq!(
            classify(UBSAN, "applying non-zero offset 8 to null pointer")
                .unwrap()
                .0,
            UndefinedBehavior
        );
    }

    #[test]
    fn null_deref_in_a_gc_slot_or_under_the_collector() {
        let mut f = Finding::new(NullDereference, super::super::Tool::Asan, "SEGV");
        f.access_stack = vec![Frame::named("Thing_traverse"), Frame::named("main")];
        assert!(refine_null_deref(&f).unwrap().contains("Thing_traverse"));
        f.access_stack = vec![Frame::named("get_state"), Frame::named("subtract_refs")];
        assert!(refine_null_deref(&f).unwrap().contains("subtract_refs"));
        f.access_stack = vec![Frame::named("parse_args"), Frame::named("cfunction_call")];
        assert!(refine_null_deref(&f).is_none());
        // Only the innermost frame and its caller count: a clear further out is not a slot.
        f.access_stack = vec![
            Frame::named("parse_args"),
            Frame::named("caller"),
            Frame::named("PyErr_Clear"),
        ];
        assert!(refine_null_deref(&f).is_none());
    }
}
