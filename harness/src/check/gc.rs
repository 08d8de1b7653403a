//! GC consistency at an object's death: the references its `tp_traverse` visits must equal the
//! references its dealloc releases.
//!
//! Method: take a strong reference to every candidate (GC-capable objects the harness knows) and
//! to every object `tp_traverse` visits (so no visited child dies and cascades), record their
//! refcounts, release the last reference to the object, and compare each candidate's drop with
//! how often it was visited. A drop larger than the visit count is a missing `Py_VISIT`.
//!
//! Objects an extension call returns get the same audit on a twin (the call repeated, its
//! result audited and released), with the objects the result exposes through its attributes
//! as candidates ([`exposed`]: members no slot ever held), and a cycle through the twin's
//! writable attributes that a collection must free ([`release_in_cycle`]).

use std::collections::BTreeMap;
use std::os::raw::{c_int, c_void};

use crate::ffi::raw;
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

/// The `visitproc` handed to `tp_traverse`: collects every visited object.
///
/// # Safety
/// `arg` points to a live `Vec<*mut PyObject>` no one else borrows during the traversal.
unsafe extern "C" fn count_visit(o: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: the caller's contract.
    let visits = unsafe { &mut *(arg as *mut Vec<*mut PyObject>) };
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
    // SAFETY: `o` live (caller's contract); reads its type's flags.
    unsafe { shim_type_has_gc(o) != 0 }
}

/// Whether `o` is a module or a type (subclasses included).
///
/// # Safety
/// `o` must be a live object; GIL held.
unsafe fn is_module_or_type(o: *mut PyObject) -> bool {
    // SAFETY: `o` live (caller's contract); reads its type and the static module type.
    unsafe {
        let t = shim_Py_TYPE(o);
        let flags = raw::PyType_GetFlags(t);
        flags & (raw::Py_TPFLAGS_TYPE_SUBCLASS as std::os::raw::c_ulong) != 0
            || raw::PyType_IsSubtype(t, &raw mut raw::PyModule_Type) != 0
    }
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
    // A death that runs Python code releases what that code touches: no traverse audit then
    // (the tp_clear check below still runs).
    // SAFETY: GIL held, `obj` alive (caller's contract).
    let audit = !unsafe { runs_code_at_death(obj) };
    let mut visits: Vec<*mut PyObject> = Vec::new();
    // SAFETY: GIL held, `obj` alive (caller's contract); `count_visit` gets `visits`, alive
    // and unborrowed for the traversal; every visited object is alive (held by `obj`) and gets
    // a strong reference of ours, released at the end.
    unsafe {
        shim_tp_traverse(obj, Some(count_visit), &mut visits as *mut _ as *mut c_void);
        for &v in &visits {
            shim_Py_INCREF(v);
        }
    }
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for &v in &visits {
        *count.entry(v as usize).or_default() += 1;
    }
    // SAFETY: GIL held; candidates are alive (caller's contract) and each kept one gets a
    // strong reference of ours, released at the end, so none dies while `obj` does.
    let (cands, before) = unsafe {
        let cands: Vec<*mut PyObject> = candidates
            .iter()
            .copied()
            .filter(|&c| audit && is_gc(c) && shim_Py_IsImmortal(c) == 0)
            .collect();
        for &c in &cands {
            shim_Py_INCREF(c);
        }
        let before: Vec<isize> = cands.iter().map(|&c| shim_Py_REFCNT(c)).collect();
        (cands, before)
    };
    let mut leftovers = Vec::new();
    // SAFETY: GIL held; `obj` is alive until the DECREF below; `after` is alive and unborrowed
    // during the traversal; visited objects are alive (held by `obj`), their type names are
    // copied at once.
    if clear_first && unsafe { shim_tp_clear(obj) } == 0 {
        let mut after: Vec<*mut PyObject> = Vec::new();
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        unsafe {
            shim_tp_traverse(obj, Some(count_visit), &mut after as *mut _ as *mut c_void);
            let own_type = shim_Py_TYPE(obj) as *mut PyObject;
            // Only what a cycle can run through counts: GC-capable, mortal objects (Cython's
            // tp_clear leaves None in a cleared field; the type stays until dealloc). Modules
            // and types are left out too: an extension may keep its module (per-instance
            // module state, multidict 7) or a type until dealloc on purpose, and a cycle
            // through one is broken by the module's or type's own tp_clear (it clears its
            // dict).
            for &v in after.iter().filter(|&&v| {
                v != own_type && is_gc(v) && shim_Py_IsImmortal(v) == 0 && !is_module_or_type(v)
            }) {
                let t = std::ffi::CStr::from_ptr(shim_tp_name(v))
                    .to_string_lossy()
                    .into_owned();
                *by_type.entry(t).or_default() += 1;
            }
        }
        leftovers = by_type
            .into_iter()
            .map(|(child_type, count)| ClearLeftover { child_type, count })
            .collect();
    }
    // SAFETY: the caller's last reference to `obj`, given up here; candidates and visited
    // objects stay alive through the references taken above, released last.
    unsafe {
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
}

/// The GC audit's helpers for returned objects (what an object exposes, a cycle through it
/// that a collection must free), loaded on first use.
pub const GC_AUDIT_PY: &str = include_str!("../py/gc_audit.py");

/// The functions of [`GC_AUDIT_PY`], loaded into their own namespace; borrowed forever (the
/// namespace is never released).
struct Helpers {
    exposed: *mut PyObject,
    attach_cycle: *mut PyObject,
    cycle_freed: *mut PyObject,
    runs_code_at_death: *mut PyObject,
}

// SAFETY: the harness holds the GIL for the whole process lifetime and uses one thread.
unsafe impl Send for Helpers {}
unsafe impl Sync for Helpers {}

/// # Safety
/// GIL held, interpreter initialized.
unsafe fn helpers() -> Option<&'static Helpers> {
    static HELPERS: std::sync::OnceLock<Option<Helpers>> = std::sync::OnceLock::new();
    HELPERS
        .get_or_init(|| {
            // SAFETY: GIL held (caller's contract); every object made here is kept forever.
            unsafe {
                let globals = raw::PyDict_New();
                raw::PyDict_SetItemString(
                    globals,
                    c"__builtins__".as_ptr(),
                    raw::PyEval_GetBuiltins(),
                );
                let code = std::ffi::CString::new(GC_AUDIT_PY).ok()?;
                let r = raw::PyRun_StringFlags(
                    code.as_ptr(),
                    raw::Py_file_input as c_int,
                    globals,
                    globals,
                    std::ptr::null_mut(),
                );
                if r.is_null() {
                    eprintln!(
                        "==capisan== gc audit helpers did not load: {}",
                        crate::interp::take_error()
                    );
                    return None;
                }
                shim_Py_DECREF(r);
                // Borrowed from `globals`, which is never released.
                let get = |name: &std::ffi::CStr| raw::PyDict_GetItemString(globals, name.as_ptr());
                Some(Helpers {
                    exposed: get(c"exposed"),
                    attach_cycle: get(c"attach_cycle"),
                    cycle_freed: get(c"cycle_freed"),
                    runs_code_at_death: get(c"runs_code_at_death"),
                })
            }
        })
        .as_ref()
}

/// Whether `obj`'s death runs Python code (a `__del__`, a weak reference's callback): what that
/// code releases is not `obj`'s own, so its dealloc cannot be audited against its traverse. An
/// error in the helper counts as yes (no audit rather than a false finding).
///
/// # Safety
/// GIL held; `obj` alive.
pub unsafe fn runs_code_at_death(obj: *mut PyObject) -> bool {
    // SAFETY: GIL held (caller's contract).
    let Some(h) = (unsafe { helpers() }) else {
        return true;
    };
    // SAFETY: GIL held, `obj` alive; the call returns a new reference (a bool) or NULL.
    unsafe {
        let r = raw::PyObject_CallOneArg(h.runs_code_at_death, obj);
        if r.is_null() {
            raw::PyErr_Clear();
            return true;
        }
        let yes = raw::PyObject_IsTrue(r) != 0;
        shim_Py_DECREF(r);
        yes
    }
}

/// The objects `obj` exposes through the member and getset descriptors of its type (new
/// references, released by the caller): what its dealloc releases and its `tp_traverse` must
/// visit, including objects no caller ever held (an internal list a constructor made).
///
/// # Safety
/// GIL held; `obj` alive.
pub unsafe fn exposed(obj: *mut PyObject) -> Vec<*mut PyObject> {
    // SAFETY: GIL held (caller's contract).
    let Some(h) = (unsafe { helpers() }) else {
        return Vec::new();
    };
    // SAFETY: GIL held, `obj` alive; `exposed(obj)` returns a new list (or NULL) whose items
    // are borrowed from it and INCREF'd into the new references handed to the caller.
    unsafe {
        let list = raw::PyObject_CallOneArg(h.exposed, obj);
        if list.is_null() {
            raw::PyErr_Clear();
            return Vec::new();
        }
        let out = (0..raw::PyList_Size(list))
            .map(|i| {
                let o = raw::PyList_GetItem(list, i);
                shim_Py_INCREF(o);
                o
            })
            .collect();
        shim_Py_DECREF(list);
        out
    }
}

/// An uncollectable cycle: `obj` was put in a cycle through its writable attributes `through`
/// and `gc.collect()` did not free it (its `tp_traverse` does not visit them).
#[derive(Debug)]
pub struct Uncollectable {
    pub through: Vec<String>,
}

/// Make a cycle through `obj` (its `__dict__`, writable members and getsets each set to a list
/// holding `obj`), give up the caller's reference, and check that a collection frees the
/// cycle. `None` when it was freed or no attribute takes a list; the cycle is broken either
/// way, so nothing stays behind.
///
/// # Safety
/// GIL held; the caller owns one reference to `obj` and gives it up.
pub unsafe fn release_in_cycle(obj: *mut PyObject) -> Option<Uncollectable> {
    // SAFETY: GIL held (caller's contract).
    let Some(h) = (unsafe { helpers() }) else {
        // SAFETY: the caller's reference, given up.
        unsafe { shim_Py_DECREF(obj) };
        return None;
    };
    // SAFETY: GIL held; `obj` alive until the caller's reference is given up right after the
    // call; `own` (obj's instance dict, or None) is a new reference released after the call;
    // `attached` is a new reference (or NULL) released last; the weakref, the names list
    // and its items are borrowed from it, the UTF-8 names copied at once; `freed` is new.
    unsafe {
        // The instance dict C code stores attributes in (new, or NULL without one).
        let own = raw::PyObject_GenericGetDict(obj, std::ptr::null_mut());
        let own = if own.is_null() {
            raw::PyErr_Clear();
            raw::Py_BuildValue(c"".as_ptr())
        } else {
            own
        };
        let attached = raw::PyObject_CallFunctionObjArgs(
            h.attach_cycle,
            obj,
            own,
            std::ptr::null_mut::<PyObject>(),
        );
        shim_Py_DECREF(own);
        shim_Py_DECREF(obj);
        if attached.is_null() {
            raw::PyErr_Clear();
            return None;
        }
        if attached == shim_Py_None() {
            shim_Py_DECREF(attached);
            return None;
        }
        // (weakref, names): borrowed from `attached`, alive until it is released below.
        let wr = raw::PyTuple_GetItem(attached, 0);
        let names = raw::PyTuple_GetItem(attached, 1);
        let through: Vec<String> = (0..raw::PyList_Size(names))
            .map(|i| {
                let p = raw::PyUnicode_AsUTF8(raw::PyList_GetItem(names, i));
                if p.is_null() {
                    raw::PyErr_Clear();
                    "?".to_string()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            })
            .collect();
        let freed = raw::PyObject_CallOneArg(h.cycle_freed, wr);
        let uncollectable = if freed.is_null() {
            raw::PyErr_Clear();
            false
        } else {
            let f = raw::PyObject_IsTrue(freed);
            shim_Py_DECREF(freed);
            f == 0
        };
        shim_Py_DECREF(attached);
        uncollectable.then_some(Uncollectable { through })
    }
}
