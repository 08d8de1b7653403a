//! Raw bindings to the variant's C API: bindgen output for functions ([`raw`]) and the C shim
//! for static inline functions and macros ([`shim`]).

/// bindgen output over `Python.h` of the variant chosen at build time.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unused_imports
)]
#[allow(clippy::all)]
pub mod raw {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub mod shim;

pub use raw::PyObject;
