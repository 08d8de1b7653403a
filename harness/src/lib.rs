//! capisan: drive CPython's C API under an ownership model and name what breaks.
//!
//! Without the `cpython` feature only the interpreter-free parts are built: the op vocabulary
//! and ownership model ([`ops`]) and the report parsers ([`detect`]). With it, [`ffi`],
//! [`interp`] and [`exec`] bind and drive the variant chosen at build time.

pub mod detect;
pub mod ops;

#[cfg(feature = "cpython")]
pub mod check;
#[cfg(feature = "cpython")]
pub mod exec;
#[cfg(feature = "cpython")]
pub mod ffi;
#[cfg(feature = "cpython")]
pub mod interp;
