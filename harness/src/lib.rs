//! capisan: drive CPython's C API under an ownership model and name what breaks.
//!
//! Without the `cpython` feature only the interpreter-free parts are built: the op vocabulary
//! and ownership model ([`ops`]) and the report parsers ([`detect`]). With it, [`ffi`],
//! [`interp`] and [`exec`] bind and drive the variant chosen at build time.

// Every unsafe operation inside an `unsafe fn` sits in its own `unsafe` block that states the
// contract it relies on (GIL held; which pointers are new, borrowed or stolen).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod bundle;
pub mod campaign;
pub mod confirm;
pub mod corpus;
pub mod detect;
pub mod env;
pub mod findings;
pub mod leak_rule;
pub mod leaks;
pub mod minimize;
pub mod oom;
pub mod ops;
pub mod report;
pub mod repro;
pub mod stdlib;
pub mod testpkg;

/// Python code the ops call into (classes with evil comparisons, mutating callables); the
/// harness runs it at start-up and reproducers embed it.
pub const PRELUDE_PY: &str = concat!(include_str!("prelude.py"), include_str!("py/api.py"));

/// regrtest's cleanup between `-R` runs (cache clearing, then collection), run before every
/// measurement of the two-stage leak verdict; defines `regrtest_cleanup()`.
pub const REGRTEST_CLEANUP_PY: &str = include_str!("py/regrtest_cleanup.py");

#[cfg(feature = "cpython")]
pub mod check;
#[cfg(feature = "cpython")]
pub mod exec;
#[cfg(feature = "cpython")]
pub mod failalloc;
#[cfg(feature = "cpython")]
pub mod ffi;
#[cfg(feature = "cpython")]
pub mod interp;
#[cfg(feature = "cpython")]
pub mod rawmem;
pub mod replay;
pub mod replay_report;
