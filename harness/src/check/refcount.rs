//! Refcount prediction: before an op, the refcount of every live slot object is read; the op
//! says how it changes each one; after the op, the prediction is compared with `Py_REFCNT`.
//! Immortal objects (3.12+) are never compared.

use std::collections::BTreeMap;

use crate::ffi::shim::*;
use crate::ffi::PyObject;

/// Refcounts read before an op, keyed by object address.
#[derive(Default, Debug)]
pub struct Snapshot {
    pub before: BTreeMap<usize, isize>,
}

impl Snapshot {
    /// Read the refcount of each (live, non-immortal) object.
    ///
    /// # Safety
    /// Every pointer must be a live object; the GIL must be held.
    pub unsafe fn take(objects: impl IntoIterator<Item = *mut PyObject>) -> Snapshot {
        let mut before = BTreeMap::new();
        for o in objects {
            // SAFETY: GIL held, `o` live (caller's contract); reads its header only.
            unsafe {
                if shim_Py_IsImmortal(o) == 0 {
                    before.insert(o as usize, shim_Py_REFCNT(o));
                }
            }
        }
        Snapshot { before }
    }

    /// The refcount read before the op, if the object was snapshotted.
    pub fn get(&self, o: *mut PyObject) -> Option<isize> {
        self.before.get(&(o as usize)).copied()
    }
}

/// Expected refcount changes an op causes, by object address.
#[derive(Default, Debug)]
pub struct Prediction {
    pub delta: BTreeMap<usize, isize>,
    /// Set when the op may run Python code, run the GC, or free an object whose dealloc
    /// releases further references: then nothing is compared for this op.
    pub unpredictable: bool,
}

impl Prediction {
    /// Expect `o`'s refcount to change by `d`.
    pub fn add(&mut self, o: *mut PyObject, d: isize) {
        if !o.is_null() {
            *self.delta.entry(o as usize).or_default() += d;
        }
    }

    /// Expect the op to release one reference to `o` (alive now, before the op). If that may be
    /// its last reference, its dealloc may release others: nothing is compared for this op.
    ///
    /// # Safety
    /// `o` must be NULL or a live object; the GIL must be held.
    pub unsafe fn drop_ref(&mut self, o: *mut PyObject) {
        if o.is_null() {
            return;
        }
        self.add(o, -1);
        let pending = self.delta.get(&(o as usize)).copied().unwrap_or(0);
        // SAFETY: GIL held, `o` live (caller's contract); reads its header only.
        if unsafe { shim_Py_IsImmortal(o) == 0 && shim_Py_REFCNT(o) + pending <= 0 } {
            self.give_up();
        }
    }

    /// Mark the op as not comparable.
    pub fn give_up(&mut self) {
        self.unpredictable = true;
    }
}

/// One object whose refcount is not what the model predicts.
#[derive(Debug)]
pub struct Mismatch {
    pub object: usize,
    pub before: isize,
    pub expected: isize,
    pub actual: isize,
}

/// Compare after the op. Objects predicted to reach 0 were freed and are not read; any freeing
/// makes the op unpredictable for the other objects (their dealloc may release more).
///
/// # Safety
/// Every snapshotted object whose predicted count stays positive must still be alive (the
/// model guarantees it: something the harness knows about holds a reference).
pub unsafe fn compare(snap: &Snapshot, pred: &Prediction) -> Vec<Mismatch> {
    if pred.unpredictable {
        return Vec::new();
    }
    let frees = snap
        .before
        .iter()
        .any(|(o, b)| b + pred.delta.get(o).copied().unwrap_or(0) <= 0);
    if frees {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (&o, &before) in &snap.before {
        let expected = before + pred.delta.get(&o).copied().unwrap_or(0);
        // SAFETY: GIL held; the object's predicted count stays positive, so it is alive
        // (caller's contract).
        let actual = unsafe { shim_Py_REFCNT(o as *mut PyObject) };
        if actual != expected {
            out.push(Mismatch {
                object: o,
                before,
                expected,
                actual,
            });
        }
    }
    out
}
