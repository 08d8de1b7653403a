//! Exception-state consistency: a call that signals failure has an exception set; a call that
//! succeeds has none.

use crate::ffi::raw;

/// How a C-API function reports failure.
#[derive(Clone, Copy, Debug)]
pub enum Ret {
    /// Returns an object; NULL means failure with an exception.
    Object(bool),
    /// Returns an object; NULL with or without an exception is allowed (lookups).
    Lookup(bool),
    /// Returns an int; `true` means the error value (-1) was returned.
    Status(bool),
    /// No error convention (macros, void functions).
    Unchecked,
}

/// Check the convention against `PyErr_Occurred()`, then clear the exception so the next op
/// starts clean. Returns a description of the mismatch, if any.
pub fn check_and_clear(ret: Ret) -> Option<String> {
    // SAFETY: GIL held; PyErr_Occurred returns a borrowed pointer or NULL.
    let set = unsafe { !raw::PyErr_Occurred().is_null() };
    let problem = match ret {
        Ret::Object(null) | Ret::Status(null) if null && !set => {
            Some("failed without setting an exception")
        }
        Ret::Object(false) | Ret::Lookup(false) | Ret::Status(false) if set => {
            Some("succeeded but left an exception set")
        }
        Ret::Unchecked if set => Some("left an exception set"),
        _ => None,
    };
    if set {
        // SAFETY: GIL held.
        unsafe { raw::PyErr_Clear() };
    }
    problem.map(str::to_string)
}
