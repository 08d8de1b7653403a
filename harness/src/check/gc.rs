//! GC consistency at an object's death: the references its `tp_traverse` visits must equal the
//! references its dealloc releases.
//!
//! Method: take a strong reference to every candidate (GC-capable objects the harness knows) and
//! to every object `tp_traverse` visits (so no visited child dies and cascades), record their
//! refcounts, release the last reference to the object, and compare each candidate's drop with
//! how often it was visited. A drop larger than the visit count is a missing `Py_VISIT`.

use std::collections::BTreeMap;
use std::os::raw::{c_int, c_void};

use crate::ffi::shim::*;
use crate::ffi::PyObject;

/// A candidate whose drop differs from its visit count.
#[derive(Debug)]
pub struct TraverseMismatch {
    pub child: usize,
    pub child_type: String,
    pub visited: usize,
    pub released: isize,
}

unsafe extern "C" fn count_visit(o: *mut PyObject, arg: *mut c_void) -> c_int {
    let visits = &mut *(arg as *mut Vec<*mut PyObject>);
    if !o.is_null() {
        visits.push(o);
    }
    0
}

/// Whether `o` is GC-capable (its type has `Py_TPFLAGS_HAVE_GC`).
///
/// # Safety
/// `o` must be a live object.
pub unsafe fn is_gc(o: *mut PyObject) -> bool {
    shim_type_has_gc(o) != 0
}

/// What `tp_clear` left behind: references `tp_traverse` still visits after it ran (the
/// object's own heap type excepted: instances keep it until dealloc).
#[derive(Debug)]
pub struct ClearLeftover {
    pub child_type: String,
    pub count: usize,
}

/// Release the harness's last reference to `obj` (refcount exactly 1, not immortal) while
/// auditing its traverse against its dealloc over `candidates`. With `clear_first`, the object
/// dies the way the collector kills a cycle: `tp_clear`, then the last DECREF; references
/// still visited after `tp_clear` are returned as leftovers (a bad `tp_clear`), and the
/// traverse audit compares the visits with what `tp_clear` and dealloc released together.
///
/// # Safety
/// `obj` must be alive with refcount 1 owned by the caller (which gives it up); candidates must
/// be alive and distinct from `obj`.
pub unsafe fn release_audited(
    obj: *mut PyObject,
    candidates: &[*mut PyObject],
    clear_first: bool,
) -> (Vec<TraverseMismatch>, Vec<ClearLeftover>) {
    let mut visits: Vec<*mut PyObject> = Vec::new();
    shim_tp_traverse(obj, Some(count_visit), &mut visits as *mut _ as *mut c_void);
    for &v in &visits {
        shim_Py_INCREF(v);
    }
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for &v in &visits {
        *count.entry(v as usize).or_default() += 1;
    }
    let cands: Vec<*mut PyObject> = candidates
        .iter()
        .copied()
        .filter(|&c| is_gc(c) && shim_Py_IsImmortal(c) == 0)
        .collect();
    for &c in &cands {
        shim_Py_INCREF(c);
    }
    let before: Vec<isize> = cands.iter().map(|&c| shim_Py_REFCNT(c)).collect();
    let mut leftovers = Vec::new();
    if clear_first && shim_tp_clear(obj) == 0 {
        let mut after: Vec<*mut PyObject> = Vec::new();
        shim_tp_traverse(obj, Some(count_visit), &mut after as *mut _ as *mut c_void);
        let own_type = shim_Py_TYPE(obj) as *mut PyObject;
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        for &v in after.iter().filter(|&&v| v != own_type) {
            let t = std::ffi::CStr::from_ptr(shim_tp_name(v))
                .to_string_lossy()
                .into_owned();
            *by_type.entry(t).or_default() += 1;
        }
        leftovers = by_type
            .into_iter()
            .map(|(child_type, count)| ClearLeftover { child_type, count })
            .collect();
    }
    shim_Py_DECREF(obj);
    let mut out = Vec::new();
    for (i, &c) in cands.iter().enumerate() {
        let released = before[i] - shim_Py_REFCNT(c);
        let visited = count.get(&(c as usize)).copied().unwrap_or(0);
        if released != visited as isize {
            let child_type = std::ffi::CStr::from_ptr(shim_tp_name(c))
                .to_string_lossy()
                .into_owned();
            out.push(TraverseMismatch {
                child: c as usize,
                child_type,
                visited,
                released,
            });
        }
    }
    for &c in &cands {
        shim_Py_DECREF(c);
    }
    for &v in &visits {
        shim_Py_DECREF(v);
    }
    (out, leftovers)
}
