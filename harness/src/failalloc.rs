//! Allocation-failure injection: `csrc/failalloc.c` wraps the RAW, MEM and OBJ allocator
//! domains (chaining to the allocators before it, so ASan and the debug hooks see every block)
//! and, while armed, makes the Nth allocation (or N..M) return NULL. The executor arms it
//! around one extension call ([`crate::ops::Op::FailNext`]) and disarms it when the call
//! returns, so the error paths of extension code run on demand and every check applies there.

use std::os::raw::{c_int, c_ulong, c_void};

use crate::ops::FailSpec;

extern "C" {
    fn capisan_failalloc_install();
    fn capisan_failalloc_installed() -> c_int;
    fn capisan_failalloc_arm(first: c_ulong, last: c_ulong);
    fn capisan_failalloc_disarm(count: *mut c_ulong, failed: *mut c_ulong);
    fn capisan_failalloc_is_armed() -> c_int;
    fn capisan_failalloc_stack(out: *mut *mut c_void, max: c_int) -> c_int;
}

/// What one armed call did to the allocators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Allocations the call made (over the three domains), failed ones included.
    pub allocations: u64,
    /// How many of them were made to fail.
    pub failed: u64,
}

/// Wrap the three allocator domains (once; later calls do nothing).
///
/// The caller must hold the GIL of an initialized interpreter and must not be inside an
/// allocation (the wrappers are installed for every later allocation).
pub fn install() {
    // SAFETY: wrapping (not replacing) the current allocators after Py_Initialize is what
    // PyMem_SetAllocator documents as supported; the caller holds the GIL.
    unsafe { capisan_failalloc_install() }
}

/// Whether the wrappers are installed.
pub fn installed() -> bool {
    // SAFETY: reads a flag.
    unsafe { capisan_failalloc_installed() != 0 }
}

/// Whether a failure is armed right now (inside an armed call).
pub fn is_armed() -> bool {
    // SAFETY: reads a flag.
    unsafe { capisan_failalloc_is_armed() != 0 }
}

/// Run `f` with the allocations `spec` names failing (installing the wrappers first if
/// needed), disarmed again before returning; with the allocations `f` made.
pub fn with_failures<R>(spec: FailSpec, f: impl FnOnce() -> R) -> (R, CallStats) {
    install();
    let (first, last) = spec.range();
    // SAFETY: plain stores into the wrapper's counters.
    unsafe { capisan_failalloc_arm(first as c_ulong, last as c_ulong) };
    let r = f();
    let (mut count, mut failed): (c_ulong, c_ulong) = (0, 0);
    // SAFETY: writes the two counters we pass.
    unsafe { capisan_failalloc_disarm(&mut count, &mut failed) };
    (
        r,
        CallStats {
            allocations: count,
            failed,
        },
    )
}

#[cfg(capisan_asan)]
extern "C" {
    fn __sanitizer_symbolize_pc(
        pc: *mut c_void,
        fmt: *const std::os::raw::c_char,
        out: *mut std::os::raw::c_char,
        len: usize,
    );
}

/// The stack of the first allocation that failed since the last arm, one `function file:line`
/// per frame, innermost first, the wrapper's own frames and the allocator entry points
/// (`PyMem_*`, `PyObject_Malloc`, ...) left out. Empty when nothing failed.
pub fn failure_stack() -> Vec<String> {
    let mut pcs = [std::ptr::null_mut::<c_void>(); 24];
    // SAFETY: the buffer holds 24 pointers.
    let n = unsafe { capisan_failalloc_stack(pcs.as_mut_ptr(), pcs.len() as c_int) }.max(0);
    let mut frames: Vec<String> = pcs[..n as usize].iter().map(|&pc| symbolize(pc)).collect();
    let is_allocator = |f: &str| {
        let name = f.split_whitespace().next().unwrap_or("");
        name.starts_with("capisan_fa_")
            || name.starts_with("capisan_failalloc")
            || name.starts_with("backtrace")
            || matches!(
                name,
                "PyMem_RawMalloc"
                    | "PyMem_RawCalloc"
                    | "PyMem_RawRealloc"
                    | "PyMem_Malloc"
                    | "PyMem_Calloc"
                    | "PyMem_Realloc"
                    | "PyObject_Malloc"
                    | "PyObject_Calloc"
                    | "PyObject_Realloc"
            )
            || name.starts_with("_PyMem_")
            || name.starts_with("_PyObject_Malloc")
    };
    let skip = frames.iter().take_while(|f| is_allocator(f)).count();
    frames.drain(..skip);
    frames
}

fn symbolize(pc: *mut c_void) -> String {
    #[cfg(capisan_asan)]
    {
        let mut buf = [0 as std::os::raw::c_char; 512];
        // backtrace(3) gives return addresses: step back into the call instruction.
        let call = (pc as usize).saturating_sub(1) as *mut c_void;
        // SAFETY: NUL-terminated format; the runtime writes at most `len` bytes, NUL included.
        unsafe { __sanitizer_symbolize_pc(call, c"%f %L".as_ptr(), buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated by the runtime.
        let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        if !s.is_empty() {
            return s.into_owned();
        }
    }
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr fills `info` for any address; names are static strings of the loader.
    if unsafe { libc::dladdr(pc, &mut info) } != 0 && !info.dli_sname.is_null() {
        let name = unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }.to_string_lossy();
        return format!("{name} {pc:p}");
    }
    format!("? {pc:p}")
}
