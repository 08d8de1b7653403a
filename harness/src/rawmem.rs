//! Raw memory the process holds, from the ASan allocator's counters: what an extension mallocs
//! (or `PyMem_Malloc`s: the asan variant runs with `PYTHONMALLOC=malloc`, so every PyMem and
//! PyObject block is a malloc block too) and never frees shows as growth across repeated calls,
//! even when no reference is left behind.
//!
//! Only the asan variant has the counters (`<sanitizer/allocator_interface.h>`); elsewhere
//! [`allocated_bytes`] is `None` and the raw-memory leak check does not run.

use crate::detect::Frame;

#[cfg(capisan_asan)]
use std::os::raw::{c_char, c_int, c_void};
#[cfg(capisan_asan)]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(capisan_asan)]
extern "C" {
    fn __sanitizer_get_current_allocated_bytes() -> usize;
    fn __sanitizer_get_heap_size() -> usize;
    fn __sanitizer_install_malloc_and_free_hooks(
        malloc_hook: Option<unsafe extern "C" fn(*const c_void, usize)>,
        free_hook: Option<unsafe extern "C" fn(*const c_void)>,
    ) -> c_int;
    fn __asan_get_alloc_stack(
        addr: *mut c_void,
        trace: *mut *mut c_void,
        size: usize,
        thread_id: *mut c_int,
    ) -> usize;
    fn __sanitizer_symbolize_pc(
        pc: *mut c_void,
        fmt: *const c_char,
        out_buf: *mut c_char,
        out_buf_size: usize,
    );
}

/// Bytes allocated and not yet freed in the whole process (ASan counts a block as freed when it
/// enters the quarantine, so freed memory never reads as held); `None` without ASan.
pub fn allocated_bytes() -> Option<i64> {
    #[cfg(capisan_asan)]
    {
        // SAFETY: reads the allocator's statistics; no arguments, no preconditions.
        Some(unsafe { __sanitizer_get_current_allocated_bytes() } as i64)
    }
    #[cfg(not(capisan_asan))]
    {
        None
    }
}

/// The size of the allocator's heap (mapped for blocks, free or not); `None` without ASan.
/// Reported beside a leak: it shows whether the growth reached the process's footprint.
pub fn heap_size() -> Option<i64> {
    #[cfg(capisan_asan)]
    {
        // SAFETY: as `allocated_bytes`.
        Some(unsafe { __sanitizer_get_heap_size() } as i64)
    }
    #[cfg(not(capisan_asan))]
    {
        None
    }
}

/// regrtest's rule on allocated-bytes deltas: every measured run leaves more allocated.
/// A leak of N bytes a call reads N on every run; the noise of a growing table (a dict resize,
/// an arena) shows on one run and not the next, so it never passes.
pub fn leaks(deltas: &[i64]) -> bool {
    !deltas.is_empty() && deltas.iter().all(|&d| d >= 1)
}

/// The bytes one call leaves allocated, from the measured deltas: the smallest one (the
/// others may carry noise on top of it).
pub fn bytes_per_call(deltas: &[i64]) -> i64 {
    deltas.iter().copied().min().unwrap_or(0)
}

/// The blocks one run of `f` left allocated, as the allocator's hooks saw them.
#[derive(Debug, Default)]
pub struct Growth {
    /// Blocks allocated during the run and still allocated after it.
    pub blocks: usize,
    /// Their bytes.
    pub bytes: usize,
    /// The allocation stack of the largest block whose stack has a frame outside the
    /// interpreter (the extension's), else of the largest block; innermost first.
    pub stack: Vec<Frame>,
}

/// Events the hooks record during [`growth_of`]: `(address, size)`, size 0 for a free. The hooks
/// run inside malloc and must not allocate, hence a fixed table and an atomic cursor; a run
/// that allocates more than it holds keeps its first events.
#[cfg(capisan_asan)]
const MAX_EVENTS: usize = 1 << 16;
#[cfg(capisan_asan)]
static EVENTS: [(AtomicUsize, AtomicUsize); MAX_EVENTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_EVENTS];
#[cfg(capisan_asan)]
static CURSOR: AtomicUsize = AtomicUsize::new(0);
#[cfg(capisan_asan)]
static RECORDING: AtomicBool = AtomicBool::new(false);

#[cfg(capisan_asan)]
fn record(addr: usize, size: usize) {
    if !RECORDING.load(Ordering::Relaxed) {
        return;
    }
    let i = CURSOR.fetch_add(1, Ordering::Relaxed);
    if let Some((a, s)) = EVENTS.get(i) {
        a.store(addr, Ordering::Relaxed);
        s.store(size, Ordering::Relaxed);
    }
}

/// ASan's malloc hook: records the block while [`growth_of`] runs.
///
/// # Safety
/// Called by the sanitizer runtime only; reads nothing behind `ptr`.
#[cfg(capisan_asan)]
unsafe extern "C" fn on_malloc(ptr: *const c_void, size: usize) {
    record(ptr as usize, size.max(1));
}

/// ASan's free hook: records the free while [`growth_of`] runs.
///
/// # Safety
/// Called by the sanitizer runtime only; reads nothing behind `ptr`.
#[cfg(capisan_asan)]
unsafe extern "C" fn on_free(ptr: *const c_void) {
    record(ptr as usize, 0);
}

/// Run `f` with the allocator's malloc/free hooks recording, and name what it left allocated
/// with ASan's allocation stacks: where a raw-memory leak's growth was allocated. `None`
/// without ASan, when the hooks cannot be installed, or when the run left nothing.
pub fn growth_of(f: impl FnOnce()) -> Option<Growth> {
    #[cfg(capisan_asan)]
    {
        static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: registers two plain functions with the sanitizer runtime, once.
        let installed = *INSTALLED.get_or_init(|| unsafe {
            __sanitizer_install_malloc_and_free_hooks(Some(on_malloc), Some(on_free)) != 0
        });
        if !installed {
            f();
            return None;
        }
        CURSOR.store(0, Ordering::SeqCst);
        RECORDING.store(true, Ordering::SeqCst);
        f();
        RECORDING.store(false, Ordering::SeqCst);
        let n = CURSOR.load(Ordering::SeqCst).min(MAX_EVENTS);
        let mut live: std::collections::BTreeMap<usize, usize> = Default::default();
        for (a, s) in &EVENTS[..n] {
            let (addr, size) = (a.load(Ordering::Relaxed), s.load(Ordering::Relaxed));
            if size == 0 {
                live.remove(&addr);
            } else {
                live.insert(addr, size);
            }
        }
        if live.is_empty() {
            return None;
        }
        let mut blocks: Vec<(usize, usize)> = live.into_iter().collect();
        blocks.sort_by_key(|&(_, size)| std::cmp::Reverse(size));
        let stacks: Vec<Vec<Frame>> = blocks
            .iter()
            .take(16)
            // SAFETY: every block here is still allocated (its free was not seen).
            .map(|&(addr, _)| unsafe { alloc_stack(addr) })
            .collect();
        let outside = |st: &Vec<Frame>| {
            st.iter().any(|fr| {
                !crate::detect::frames::is_machinery(fr)
                    && !crate::detect::frames::is_interpreter_core(fr)
                    && !fr.function.starts_with("capisan::")
            })
        };
        let stack = stacks
            .iter()
            .find(|st| outside(st))
            .or(stacks.first())
            .cloned()
            .unwrap_or_default();
        Some(Growth {
            blocks: blocks.len(),
            bytes: blocks.iter().map(|&(_, size)| size).sum(),
            stack,
        })
    }
    #[cfg(not(capisan_asan))]
    {
        f();
        None
    }
}

/// ASan's allocation stack of the live block at `addr`, symbolized and parsed by
/// [`crate::detect::frames::parse_sanitizer_frame`].
///
/// # Safety
/// `addr` must be the start of a block ASan's allocator still holds.
#[cfg(capisan_asan)]
unsafe fn alloc_stack(addr: usize) -> Vec<Frame> {
    let mut trace = [std::ptr::null_mut::<c_void>(); 32];
    let mut thread: c_int = 0;
    // SAFETY: `addr` is a block ASan still holds (caller's contract); `trace` has room for
    // `trace.len()` frames and `thread` is a valid out-pointer.
    let n = unsafe {
        __asan_get_alloc_stack(
            addr as *mut c_void,
            trace.as_mut_ptr(),
            trace.len(),
            &mut thread,
        )
    };
    let mut out = Vec::new();
    for (i, &pc) in trace.iter().take(n).enumerate() {
        let mut buf = [0 as c_char; 512];
        let fmt = format!("    #{i} %p in %f %s:%l\0");
        // SAFETY: `fmt` is NUL-terminated; the runtime writes at most `buf.len()` bytes,
        // NUL-terminated, into `buf` (zeroed, so terminated even if it writes nothing).
        let line = unsafe {
            __sanitizer_symbolize_pc(pc, fmt.as_ptr().cast(), buf.as_mut_ptr(), buf.len());
            std::ffi::CStr::from_ptr(buf.as_ptr())
        }
        .to_string_lossy();
        if let Some(frame) = crate::detect::frames::parse_sanitizer_frame(&line) {
            out.push(frame);
        }
    }
    out
}

/// A stack on one line for a report: `f (file:line) <- g (file:line) ...`, machinery left out.
pub fn describe_stack(stack: &[Frame]) -> String {
    stack
        .iter()
        .filter(|fr| !crate::detect::frames::is_machinery(fr))
        .take(6)
        .map(|fr| match (&fr.file, fr.line) {
            (Some(file), Some(line)) => format!("{} ({file}:{line})", fr.function),
            _ => fr.function.clone(),
        })
        .collect::<Vec<_>>()
        .join(" <- ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_must_grow() {
        assert!(leaks(&[96, 96, 96]));
        assert!(!leaks(&[96, 0, 96]));
        assert!(!leaks(&[]));
        assert_eq!(bytes_per_call(&[100, 96, 128]), 96);
    }
}
