//! Properties checked after each op. A failed check is a [`Violation`], printed in the
//! `==capisan==` format that [`crate::detect`] parses, then the process aborts so the fuzzer
//! (or replay) records the input.

pub mod errstate;
pub mod gc;
pub mod refcount;

use std::fmt;

/// Which property failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// References that are never released (missing `Py_DECREF`).
    Leak,
    /// References released that were not owned (extra `Py_DECREF`).
    OverDecref,
    /// NULL/-1 without an exception, or a result with one set.
    ExceptionState,
    /// `tp_traverse` and dealloc disagree about the references an object holds.
    GcTraversal,
    /// `tp_clear` leaves references that `tp_traverse` still visits: a cycle through them
    /// is never broken.
    GcClear,
}

impl ViolationKind {
    /// Whether the process must stop: after an over-decref the object's count is below the
    /// references still held, so memory may already be (or soon be) corrupt. The others leave
    /// the heap intact, and a keep-going campaign continues after them.
    pub fn is_fatal(self) -> bool {
        self == ViolationKind::OverDecref
    }

    /// The `kind=` word in the report.
    pub fn word(self) -> &'static str {
        match self {
            ViolationKind::Leak => "leak",
            ViolationKind::OverDecref => "over-decref",
            ViolationKind::ExceptionState => "exception-state",
            ViolationKind::GcTraversal => "gc-traversal",
            ViolationKind::GcClear => "gc-clear",
        }
    }
}

/// A failed property, with the op that failed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// Index of the op in the sequence.
    pub op_index: usize,
    /// The op as text (with the extension callee's name).
    pub op: String,
    /// Expected vs actual, in words.
    pub detail: String,
    /// The C function or type the violation points at (an extension callable, a GC type),
    /// printed as a `detail: at: NAME` line that the report parser turns into the top frame.
    pub at: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "==capisan== VIOLATION kind={} op=#{} {}",
            self.kind.word(),
            self.op_index,
            self.op
        )?;
        for line in self.detail.lines() {
            writeln!(f, "==capisan== detail: {line}")?;
        }
        if let Some(at) = &self.at {
            writeln!(f, "==capisan== detail: at: {at}")?;
        }
        Ok(())
    }
}
