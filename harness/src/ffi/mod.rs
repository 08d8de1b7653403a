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

    // Functions newer than the bound CPython, backported by the C shim under the same names
    // and contracts, so callers are written once against the newest API.
    #[cfg(not(Py_3_13))]
    pub use super::compat::{PyDict_GetItemRef, PyModule_Add, PyObject_GetOptionalAttr};
    // Before 3.13, `Python.h` under PY_SSIZE_T_CLEAN renames `Py_BuildValue` with a macro.
    #[cfg(not(Py_3_13))]
    pub use self::_Py_BuildValue_SizeT as Py_BuildValue;
    #[cfg(not(Py_3_12))]
    pub use super::compat::{PyErr_GetRaisedException, PyErr_SetRaisedException};
}

#[cfg(not(Py_3_13))]
mod compat;
pub mod shim;

pub use raw::PyObject;
