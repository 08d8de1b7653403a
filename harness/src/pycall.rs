//! `_capisan_call(f, args, kwargs)`: how the prelude's Python helpers (py/api.py: keyword
//! calls, methods, the hooks of evil subclasses) call extension code.
//!
//! Called from Python bytecode, a C function that returns NULL without setting an exception
//! trips ceval's `assert(_PyErr_Occurred(tstate))` on a debug CPython (CALL_FUNCTION_EX does
//! not pass the result through `_Py_CheckFunctionResult`), which aborts the process: every
//! fork-mode job of a campaign on markupsafe 3.0.2 died that way within seconds, so the
//! campaign ran no input to its end. Called through this C function instead, the bad result
//! is noted for the harness's exception-state check (the same finding as a direct call) and
//! turned into a `SystemError` the Python code can unwind through.

use std::ffi::c_char;
use std::sync::Mutex;

use crate::ffi::{raw, PyObject};

/// What the last call through `_capisan_call` did wrong, if anything.
static BAD: Mutex<Option<&'static str>> = Mutex::new(None);

/// What went wrong since the last `take` (and forget it).
pub fn take() -> Option<&'static str> {
    BAD.lock().ok().and_then(|mut b| b.take())
}

fn note(what: &'static str) {
    if let Ok(mut b) = BAD.lock() {
        b.get_or_insert(what);
    }
}

/// `_capisan_call(f, args, kwargs)`: `f(*args, **kwargs)` (`kwargs` may be None).
///
/// # Safety
/// Called by CPython with the GIL held and a tuple of arguments.
unsafe extern "C" fn capisan_call(_module: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: GIL held; `args` is the call's argument tuple; its items are borrowed.
    unsafe {
        if raw::PyTuple_Size(args) != 3 {
            raw::PyErr_SetString(
                raw::PyExc_TypeError,
                c"_capisan_call(f, args, kwargs)".as_ptr(),
            );
            return std::ptr::null_mut();
        }
        let f = raw::PyTuple_GetItem(args, 0);
        let pos = raw::PyTuple_GetItem(args, 1);
        let kw = raw::PyTuple_GetItem(args, 2);
        let kw = if kw == crate::ffi::shim::shim_Py_None() {
            std::ptr::null_mut()
        } else {
            kw
        };
        let r = raw::PyObject_Call(f, pos, kw);
        let err = !raw::PyErr_Occurred().is_null();
        match (r.is_null(), err) {
            (true, false) => {
                note("failed without setting an exception");
                raw::PyErr_SetString(
                    raw::PyExc_SystemError,
                    c"capisan: an extension call returned NULL without setting an exception"
                        .as_ptr(),
                );
                std::ptr::null_mut()
            }
            (false, true) => {
                note("succeeded but left an exception set");
                raw::PyErr_Clear();
                r
            }
            _ => r,
        }
    }
}

/// The method table entry; CPython keeps a pointer to it for the function's lifetime.
struct Def(raw::PyMethodDef);
// SAFETY: written once at start-up, then only read by CPython under the GIL.
unsafe impl Sync for Def {}

static DEF: Def = Def(raw::PyMethodDef {
    ml_name: c"_capisan_call".as_ptr() as *const c_char,
    // SAFETY: a METH_VARARGS function has exactly this signature.
    ml_meth: Some(capisan_call),
    ml_flags: 1, // METH_VARARGS
    ml_doc: std::ptr::null(),
});

/// Define `_capisan_call` in `globals` (the prelude's namespace).
///
/// # Safety
/// GIL held; `globals` a live dict.
pub unsafe fn install(globals: *mut PyObject) -> Result<(), String> {
    // SAFETY: GIL held; DEF is static (CPython requires the table to outlive the function);
    // the new function is stored in `globals`, which keeps it.
    unsafe {
        let f = raw::PyCFunction_NewEx(
            std::ptr::addr_of!(DEF.0).cast_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if f.is_null() {
            return Err("creating _capisan_call failed".into());
        }
        let rc = raw::PyDict_SetItemString(globals, c"_capisan_call".as_ptr(), f);
        crate::ffi::shim::shim_Py_DECREF(f);
        if rc != 0 {
            return Err("storing _capisan_call failed".into());
        }
    }
    Ok(())
}
