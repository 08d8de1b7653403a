//! `csrc/shim.c`: one C function per static inline function or macro of the C API.

use super::raw::{visitproc, PyObject, PyTypeObject, Py_ssize_t};
use std::os::raw::{c_char, c_int, c_void};

extern "C" {
    /// `Py_INCREF(o)`; `o` must be a live object.
    pub fn shim_Py_INCREF(o: *mut PyObject);
    /// `Py_DECREF(o)`; the caller gives up one strong reference.
    pub fn shim_Py_DECREF(o: *mut PyObject);
    /// `Py_REFCNT(o)`.
    pub fn shim_Py_REFCNT(o: *mut PyObject) -> Py_ssize_t;
    /// `Py_TYPE(o)` (borrowed).
    pub fn shim_Py_TYPE(o: *mut PyObject) -> *mut PyTypeObject;
    /// `Py_None` (borrowed, immortal on 3.12+).
    pub fn shim_Py_None() -> *mut PyObject;
    /// `PyList_Check(o)`.
    pub fn shim_PyList_Check(o: *mut PyObject) -> c_int;
    /// `PyTuple_Check(o)`.
    pub fn shim_PyTuple_Check(o: *mut PyObject) -> c_int;
    /// `PyDict_Check(o)`.
    pub fn shim_PyDict_Check(o: *mut PyObject) -> c_int;
    /// `PyAnySet_Check(o)`.
    pub fn shim_PyAnySet_Check(o: *mut PyObject) -> c_int;
    /// `PyList_GET_SIZE(o)`; `o` must be a list.
    pub fn shim_PyList_GET_SIZE(o: *mut PyObject) -> Py_ssize_t;
    /// `PyList_GET_ITEM(o, i)` (borrowed); `o` a list, `i` in range.
    pub fn shim_PyList_GET_ITEM(o: *mut PyObject, i: Py_ssize_t) -> *mut PyObject;
    /// `PyTuple_GET_SIZE(o)`; `o` must be a tuple.
    pub fn shim_PyTuple_GET_SIZE(o: *mut PyObject) -> Py_ssize_t;
    /// `PyTuple_SET_ITEM(t, i, v)`: steals `v`; `t` fresh, `i` in range.
    pub fn shim_PyTuple_SET_ITEM(t: *mut PyObject, i: Py_ssize_t, v: *mut PyObject);
    /// `Py_TYPE(o)->tp_name`.
    pub fn shim_tp_name(o: *mut PyObject) -> *const c_char;
    /// `PyType_HasFeature(Py_TYPE(o), Py_TPFLAGS_HAVE_GC)`.
    pub fn shim_type_has_gc(o: *mut PyObject) -> c_int;
    /// `Py_TYPE(o)->tp_traverse(o, visit, arg)` (0 without tp_traverse).
    pub fn shim_tp_traverse(o: *mut PyObject, visit: visitproc, arg: *mut c_void) -> c_int;
    /// `Py_TYPE(o)->tp_clear(o)` (-1 without tp_clear).
    pub fn shim_tp_clear(o: *mut PyObject) -> c_int;
    /// Whether `o` is immortal (3.12+), or on 3.11 one of the interpreter-wide shared objects
    /// 3.12 made immortal (singletons, small ints, empty/one-character str and bytes, the empty
    /// tuple, interned strings, static types), whose refcounts the ownership checks must skip alike.
    pub fn shim_Py_IsImmortal(o: *mut PyObject) -> c_int;
    /// `sys.gettotalrefcount()`, or -1 without `Py_REF_DEBUG`.
    pub fn shim_total_refcount() -> Py_ssize_t;
    /// Type object `t`'s `tp_traverse`, `tp_clear`, `tp_dealloc` into `out[0..3]`.
    pub fn shim_type_slots(t: *mut PyObject, out: *mut *mut c_void);
    /// Type object `t`'s own `tp_name`.
    pub fn shim_type_name(t: *mut PyObject) -> *const c_char;
}
