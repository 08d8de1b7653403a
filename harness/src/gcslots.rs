//! Which type a GC slot function belongs to. A NULL dereference inside a `tp_traverse`,
//! `tp_clear` or `tp_dealloc` is a GC traversal bug of a *type* (an object half built, a
//! member never set); the stack names only the function (`multidict_tp_traverse`), which may
//! serve several types or none by its name. The harness notes every extension type it meets
//! (the module's classes at start-up, the type of every object an op returns) with the names
//! of its slot functions, and prints them with the op log:
//!
//! ```text
//! ==capisan== gc-slot <function> <module.Type> [<module.Type2> …]
//! ```
//!
//! `detect` names a GC-slot crash whose frame is one of those functions after the type (the
//! one the running op called, when the function serves several).
//! Only types whose slots live outside the interpreter (an extension's shared object) are
//! noted: CPython's own types are named by their functions already (`list_traverse`).

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};
use std::sync::Mutex;

use crate::ffi::shim::{shim_Py_TYPE, shim_type_name, shim_type_slots};
use crate::ffi::{raw, PyObject};

/// Types looked at (noted or not), and each noted slot function with the types it serves.
struct Seen {
    types: HashSet<usize>,
    slots: Vec<(String, Vec<String>)>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

/// At most this many types are looked at in one process (an input may create types).
const MAX_TYPES: usize = 4096;
/// At most this many slot functions are printed, with at most this many types each.
const MAX_SLOTS: usize = 64;
const MAX_TYPES_A_SLOT: usize = 8;

#[cfg(capisan_asan)]
extern "C" {
    fn __sanitizer_symbolize_pc(pc: *mut c_void, fmt: *const c_char, out: *mut c_char, n: usize);
}

/// The function containing `addr`, by the sanitizer's symbolizer; `None` without one.
fn function_name(addr: *mut c_void) -> Option<String> {
    #[cfg(capisan_asan)]
    {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the runtime writes at most `buf.len()` bytes, NUL-terminated. It symbolizes
        // the instruction before `pc` (it expects return addresses): hence the +1.
        unsafe {
            __sanitizer_symbolize_pc(
                addr.cast::<u8>().wrapping_add(1).cast(),
                c"%f".as_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        // SAFETY: NUL-terminated by the runtime (zeroed before).
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        (!name.is_empty() && name != "<null>").then_some(name)
    }
    #[cfg(not(capisan_asan))]
    {
        let _ = addr;
        None
    }
}

/// The base address of the object file (executable or shared object) holding `addr`.
fn object_base(addr: *const c_void) -> Option<usize> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    (unsafe { libc::dladdr(addr, &mut info) } != 0).then_some(info.dli_fbase as usize)
}

/// Note `o`'s type.
///
/// # Safety
/// GIL held; `o` live.
pub unsafe fn note(o: *mut PyObject) {
    // SAFETY: `o` live (caller's contract).
    let tp = unsafe { shim_Py_TYPE(o) }.cast::<PyObject>();
    // SAFETY: a type object is live while `o` is.
    unsafe { note_type(tp) };
}

/// Note `o` itself when it is a type (an extension's class).
///
/// # Safety
/// GIL held; `o` live.
pub unsafe fn note_if_type(o: *mut PyObject) {
    // SAFETY: `o` live; PyType_Type is the interpreter's static type object.
    let is_type = unsafe {
        raw::PyType_IsSubtype(shim_Py_TYPE(o), std::ptr::addr_of_mut!(raw::PyType_Type)) != 0
    };
    if is_type {
        // SAFETY: `o` is a live type object.
        unsafe { note_type(o) };
    }
}

/// # Safety
/// GIL held; `tp` a live type object.
unsafe fn note_type(tp: *mut PyObject) {
    let Ok(mut seen) = SEEN.try_lock() else {
        return;
    };
    let seen = seen.get_or_insert_with(|| Seen {
        types: HashSet::new(),
        slots: Vec::new(),
    });
    if seen.types.len() >= MAX_TYPES || !seen.types.insert(tp as usize) {
        return;
    }
    let mut slots = [std::ptr::null_mut::<c_void>(); 3];
    // SAFETY: `tp` is a live type object; three slots written.
    unsafe { shim_type_slots(tp, slots.as_mut_ptr()) };
    let core = object_base(raw::Py_InitializeEx as *const c_void);
    // SAFETY: tp_name of a live type, copied at once.
    let name = unsafe { CStr::from_ptr(shim_type_name(tp)) }
        .to_string_lossy()
        .into_owned();
    for addr in slots.into_iter().filter(|a| !a.is_null()) {
        if object_base(addr) == core {
            continue;
        }
        let Some(function) = function_name(addr) else {
            continue;
        };
        if let Some((_, types)) = seen.slots.iter_mut().find(|(f, _)| *f == function) {
            if types.len() < MAX_TYPES_A_SLOT && !types.contains(&name) {
                types.push(name.clone());
            }
        } else if seen.slots.len() < MAX_SLOTS {
            seen.slots.push((function, vec![name.clone()]));
        }
    }
}

/// The noted slots as `==capisan== gc-slot` lines (empty when none, or when the table is
/// busy: this also runs from a sanitizer's death callback).
pub fn lines() -> String {
    let Ok(seen) = SEEN.try_lock() else {
        return String::new();
    };
    seen.as_ref()
        .map(|s| {
            s.slots
                .iter()
                .map(|(f, t)| format!("==capisan== gc-slot {f} {}\n", t.join(" ")))
                .collect()
        })
        .unwrap_or_default()
}
