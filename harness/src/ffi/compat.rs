//! `csrc/shim.c`'s backports of C-API functions newer than the bound CPython (compiled only on
//! the lines that lack them; re-exported from [`super::raw`] under their real names there).
//! Each has the contract of the function it backports, in the CPython version that added it.

#![allow(non_snake_case)]

use super::raw::PyObject;
use std::os::raw::{c_char, c_int};

#[cfg(not(Py_3_12))]
extern "C" {
    /// `PyErr_GetRaisedException` (3.12): the raised exception (new) or NULL; clears it.
    #[link_name = "capisan_PyErr_GetRaisedException"]
    pub fn PyErr_GetRaisedException() -> *mut PyObject;
    /// `PyErr_SetRaisedException` (3.12): steals `exc`; NULL clears the error indicator.
    #[link_name = "capisan_PyErr_SetRaisedException"]
    pub fn PyErr_SetRaisedException(exc: *mut PyObject);
}

#[cfg(not(Py_3_13))]
extern "C" {
    /// `PyDict_GetItemRef` (3.13): 1 and a new reference in `*result`, 0 when missing, -1 on
    /// error (NULL in `*result` for both).
    #[link_name = "capisan_PyDict_GetItemRef"]
    pub fn PyDict_GetItemRef(
        d: *mut PyObject,
        key: *mut PyObject,
        result: *mut *mut PyObject,
    ) -> c_int;
    /// `PyObject_GetOptionalAttr` (3.13): 1 and a new reference, 0 on AttributeError (cleared),
    /// -1 on any other error.
    #[link_name = "capisan_PyObject_GetOptionalAttr"]
    pub fn PyObject_GetOptionalAttr(
        o: *mut PyObject,
        name: *mut PyObject,
        result: *mut *mut PyObject,
    ) -> c_int;
    /// `PyModule_Add` (3.13): adds `value` as `name`, stealing it even on failure.
    #[link_name = "capisan_PyModule_Add"]
    pub fn PyModule_Add(m: *mut PyObject, name: *const c_char, value: *mut PyObject) -> c_int;
}
