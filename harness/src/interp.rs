//! The embedded interpreter of the variant chosen at build time: initialized once per process,
//! with the run-time environment from the variant's manifest and capisan's Python prelude.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use crate::ffi::raw;
use crate::ffi::shim::*;
use crate::ffi::PyObject;

/// Path of the manifest the harness was built against.
pub const MANIFEST_PATH: &str = env!("CAPISAN_MANIFEST_PATH");
/// Variant name the harness was built against.
pub const VARIANT: &str = env!("CAPISAN_BUILT_VARIANT");

/// Borrowed-forever handles to prelude objects (the interpreter is never finalized).
pub struct Interp {
    pub plain: *mut PyObject,
    pub evil: *mut PyObject,
    pub make_callable: *mut PyObject,
    /// `gc.collect`.
    pub gc_collect: *mut PyObject,
    /// `regrtest_cleanup()` ([`crate::REGRTEST_CLEANUP_PY`]).
    pub regrtest_cleanup: *mut PyObject,
    /// `held_refs(objs)` ([`crate::REGRTEST_CLEANUP_PY`]): references held by what `objs`
    /// reach, and how many point at each of them.
    pub held_refs: *mut PyObject,
    /// The API vocabulary's helpers (py/api.py): `make_value(code)`, `api_call(f, args,
    /// kwmask, kwnames)`, `method_call(recv, idx, args, kwmask)`, `method_name(recv, idx)`,
    /// `protocol(which, obj, arg)`, `protocol_name(which)`.
    pub make_value: *mut PyObject,
    pub api_call: *mut PyObject,
    pub method_call: *mut PyObject,
    pub method_name: *mut PyObject,
    pub protocol: *mut PyObject,
    pub protocol_name: *mut PyObject,
    /// `kinds_tuple(f, args)` (py/api.py) when a spec gives argument kinds
    /// (`CAPISAN_EXT_ARGS`), else NULL: the positional arguments of a direct extension call,
    /// with those of another kind replaced.
    pub kinds_tuple: *mut PyObject,
    /// Keyword parameter names of each `ext` callable (a list of str, kept alive by globals).
    pub ext_kw: Vec<*mut PyObject>,
    /// (fewest, most) arguments of each `ext` callable (py/api.py `_arity`).
    pub ext_arity: Vec<(u8, u8)>,
    /// `method_arity(recv, idx)`.
    pub method_arity: *mut PyObject,
    /// `(qualified name, callable)` of the extension under test (`CAPISAN_EXT`).
    pub ext: Vec<(String, *mut PyObject)>,
    /// The qualified names of `ext`, for op text.
    pub ext_names: Vec<String>,
    /// The extension module under test (`CAPISAN_EXT`).
    pub ext_module: Option<String>,
    /// The classes that module exposes (prelude `ext_types`), borrowed from a list kept in
    /// globals: its own types whatever their `__module__` says.
    pub ext_types: Vec<*mut PyObject>,
    /// Interned attribute names, indexed like [`crate::ops::AttrName`].
    pub names: [*mut PyObject; 3],
}

// SAFETY: the harness holds the GIL for the whole process lifetime and uses one thread.
unsafe impl Send for Interp {}
unsafe impl Sync for Interp {}

static INTERP: OnceLock<Interp> = OnceLock::new();

/// Set `key` from the manifest unless the user already set it.
fn default_env(key: &str, value: &str) {
    if std::env::var_os(key).is_none() {
        // SAFETY: called once, before the interpreter (and any other thread) starts.
        unsafe { std::env::set_var(key, value) };
    }
}

/// Fetch and clear the current exception as text (for init errors).
pub fn take_error() -> String {
    // SAFETY: GIL held; PyErr_GetRaisedException returns a new reference or NULL.
    unsafe {
        let exc = raw::PyErr_GetRaisedException();
        if exc.is_null() {
            return "no exception set".into();
        }
        let s = raw::PyObject_Str(exc);
        let text = if s.is_null() {
            raw::PyErr_Clear();
            "<unprintable exception>".to_string()
        } else {
            let t = CStr::from_ptr(raw::PyUnicode_AsUTF8(s))
                .to_string_lossy()
                .into_owned();
            shim_Py_DECREF(s);
            t
        };
        let tn = CStr::from_ptr(shim_tp_name(exc))
            .to_string_lossy()
            .into_owned();
        shim_Py_DECREF(exc);
        format!("{tn}: {text}")
    }
}

/// A standard library shipped beside the binary (`<binary>.python/`, written by
/// `cargo xtask fuzz-build`), for fuzzers copied to other machines (ClusterFuzzLite, OSS-Fuzz).
pub fn bundled_home() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.with_file_name(format!("{}.python", exe.file_name()?.to_str()?));
    dir.join("Lib").is_dir().then_some(dir)
}

/// Initialize the interpreter once and return the prelude handles. Panics with a clear
/// message when the manifest or the extension under test cannot be loaded.
pub fn get() -> &'static Interp {
    INTERP.get_or_init(|| {
        if let Some(home) = bundled_home() {
            default_env("PYTHONHOME", &home.display().to_string());
            let path = format!(
                "{}:{}",
                home.join("Lib").display(),
                home.join("lib-dynload").display()
            );
            default_env("PYTHONPATH", &path);
            if VARIANT == "asan" {
                default_env("PYTHONMALLOC", "malloc");
            }
        } else {
            let manifest: capisan_build::Manifest =
                capisan_build::Manifest::load(MANIFEST_PATH.as_ref()).unwrap_or_else(|e| {
                    panic!("capisan was built against {MANIFEST_PATH}, which is gone: {e}; rebuild")
                });
            for (k, v) in manifest.env() {
                default_env(&k, &v);
            }
        }
        // SAFETY: first and only initialization; 0 = leave signal handlers to libFuzzer.
        unsafe { raw::Py_InitializeEx(0) };
        // SAFETY: the interpreter was just initialized and this thread holds the GIL.
        unsafe { init_prelude() }
            .unwrap_or_else(|e| panic!("capisan: initializing the prelude failed: {e}"))
    })
}

/// Run Python statements in `globals`; the exception as text on failure.
///
/// # Safety
/// GIL held; `globals` a live dict.
unsafe fn run_code(code: &str, globals: *mut PyObject) -> Result<(), String> {
    let code = CString::new(code).map_err(|e| e.to_string())?;
    // SAFETY: GIL held, `globals` a live dict (caller's contract); `code` is NUL-terminated
    // and outlives the call; the result is a new reference (None) or NULL.
    unsafe {
        let r = raw::PyRun_StringFlags(
            code.as_ptr(),
            raw::Py_file_input as i32,
            globals,
            globals,
            std::ptr::null_mut(),
        );
        if r.is_null() {
            return Err(take_error());
        }
        shim_Py_DECREF(r);
    }
    Ok(())
}

/// Run the prelude in the `__capisan__` module and collect the handles the ops use (borrowed
/// from its globals, which live forever), loading the extension under test if any.
///
/// # Safety
/// GIL held, interpreter initialized; called once (from [`get`]).
unsafe fn init_prelude() -> Result<Interp, String> {
    // SAFETY: GIL held; the module, its dict and the builtins are borrowed references the
    // interpreter keeps alive (sys.modules holds `__capisan__`).
    let globals = unsafe {
        let main = raw::PyImport_AddModule(c"__capisan__".as_ptr());
        if main.is_null() {
            return Err(take_error());
        }
        let globals = raw::PyModule_GetDict(main);
        let builtins = raw::PyEval_GetBuiltins();
        raw::PyDict_SetItemString(globals, c"__builtins__".as_ptr(), builtins);
        globals
    };
    // SAFETY: GIL held; `globals` is a live dict.
    unsafe {
        crate::pycall::install(globals)?;
        run_code(crate::PRELUDE_PY, globals)?;
        run_code(crate::REGRTEST_CLEANUP_PY, globals)?;
    }
    let get = |name: &CStr| -> Result<*mut PyObject, String> {
        // SAFETY: GIL held; borrowed, kept alive by `globals`.
        let o = unsafe { raw::PyDict_GetItemString(globals, name.as_ptr()) };
        if o.is_null() {
            Err(format!("prelude lacks {name:?}"))
        } else {
            Ok(o)
        }
    };
    let mut names = [std::ptr::null_mut(); 3];
    for (i, n) in ["victim", "payload", "other"].iter().enumerate() {
        let c = CString::new(*n).unwrap();
        // SAFETY: GIL held; `c` is NUL-terminated; a new reference, kept forever.
        names[i] = unsafe { raw::PyUnicode_InternFromString(c.as_ptr()) };
    }
    let mut ext = Vec::new();
    let mut ext_kw = Vec::new();
    let mut ext_arity = Vec::new();
    let mut ext_types = Vec::new();
    let env = crate::env::HarnessEnv::from_env();
    if let Some(module) = &env.ext {
        let path = env
            .ext_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let only = env.ext_funcs.join(",");
        let code = format!(
            "__ext = ext_callables({module:?}, {path:?}, [s for s in {only:?}.split(',') if s])"
        );
        // SAFETY: GIL held; `globals` is a live dict.
        if let Err(e) = unsafe { run_code(&code, globals) } {
            return Err(format!(
                "loading extension {module} (CAPISAN_EXT) from {path:?}: {}",
                e
            ));
        }
        // SAFETY: GIL held; `globals` is a live dict.
        unsafe {
            run_code(
                "__ext_kw = ext_keywords(__ext)\n__ext_arity = ext_arities(__ext)",
                globals,
            )?;
        }
        let arities = get(c"__ext_arity")?;
        // SAFETY: GIL held; `__ext_arity` is a list of (int, int) built by py/api.py; every
        // item is borrowed from it, and it stays in `globals`.
        unsafe {
            for i in 0..raw::PyList_Size(arities) {
                let pair = raw::PyList_GetItem(arities, i);
                let lo = raw::PyLong_AsLong(raw::PyTuple_GetItem(pair, 0));
                let hi = raw::PyLong_AsLong(raw::PyTuple_GetItem(pair, 1));
                ext_arity.push((lo.clamp(0, 3) as u8, hi.clamp(0, 3) as u8));
            }
        }
        let kw_lists = get(c"__ext_kw")?;
        // SAFETY: GIL held; `__ext_kw` is a list; its items are borrowed, kept alive by
        // `globals`.
        unsafe {
            for i in 0..raw::PyList_Size(kw_lists) {
                ext_kw.push(raw::PyList_GetItem(kw_lists, i));
            }
        }
        // SAFETY: GIL held; `globals` is a live dict.
        unsafe { run_code(&format!("__ext_types = ext_types({module:?})"), globals)? };
        let types = get(c"__ext_types")?;
        // SAFETY: GIL held; `__ext_types` is a list of types; its items are borrowed, kept
        // alive by the list in `globals`.
        unsafe {
            for i in 0..raw::PyList_Size(types) {
                ext_types.push(raw::PyList_GetItem(types, i));
            }
        }
        let list = get(c"__ext")?;
        // SAFETY: GIL held; `__ext` is a list of (str, callable) built by py/api.py; the
        // pairs, names and callables are borrowed, kept alive by `__ext` in `globals`; the
        // UTF-8 name is copied before anything can free it.
        unsafe {
            for i in 0..raw::PyList_Size(list) {
                let pair = raw::PyList_GetItem(list, i);
                let name = CStr::from_ptr(raw::PyUnicode_AsUTF8(raw::PyTuple_GetItem(pair, 0)))
                    .to_string_lossy()
                    .into_owned();
                let f = raw::PyTuple_GetItem(pair, 1);
                ext.push((name, f));
            }
        }
        if ext.is_empty() {
            return Err(format!(
                "extension {module} has no public callables (CAPISAN_EXT_FUNCS={only:?})"
            ));
        }
    }
    Ok(Interp {
        plain: get(c"Plain")?,
        evil: get(c"Evil")?,
        make_callable: get(c"make_callable")?,
        gc_collect: get(c"gc_collect")?,
        regrtest_cleanup: get(c"regrtest_cleanup")?,
        held_refs: get(c"held_refs")?,
        make_value: get(c"make_value")?,
        api_call: get(c"api_call")?,
        method_call: get(c"method_call")?,
        method_name: get(c"method_name")?,
        protocol: get(c"protocol")?,
        protocol_name: get(c"protocol_name")?,
        kinds_tuple: if env.ext_args.is_empty() {
            std::ptr::null_mut()
        } else {
            get(c"kinds_tuple")?
        },
        ext_kw,
        ext_arity,
        method_arity: get(c"method_arity")?,
        ext_names: ext.iter().map(|e| e.0.clone()).collect(),
        ext_module: env.ext.clone(),
        ext_types,
        ext,
        names,
    })
}

impl Interp {
    /// Whether `o`'s type belongs to the extension under test (its `__module__` is the
    /// extension module or inside it, or it is, or derives from, a class the module exposes).
    /// Checks meant for the extension's own types (tp_clear) are not run on CPython's, whose
    /// contracts differ (a subclass of a builtin without tp_clear keeps its items after
    /// clearing).
    ///
    /// # Safety
    /// GIL held; `o` a live object.
    pub unsafe fn is_ext_type(&self, o: *mut PyObject) -> bool {
        let Some(module) = self.ext_module.as_deref() else {
            return false;
        };
        // SAFETY: GIL held, `o` live (caller's contract); its type is borrowed from it;
        // `__module__` is a new reference (or NULL), released after its UTF-8 text (owned by
        // it) is copied.
        let name = unsafe {
            let t = shim_Py_TYPE(o) as *mut PyObject;
            let m = raw::PyObject_GetAttrString(t, c"__module__".as_ptr());
            if m.is_null() {
                raw::PyErr_Clear();
                return false;
            }
            // Not a str (a descriptor on some metatypes): AsUTF8 fails, the type is not ours.
            let p = raw::PyUnicode_AsUTF8(m);
            let name = if p.is_null() {
                raw::PyErr_Clear();
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            shim_Py_DECREF(m);
            name
        };
        if name == module || name.starts_with(&format!("{module}.")) {
            return true;
        }
        // SAFETY: GIL held; `o`'s type is borrowed from it; `ext_types` are live types.
        unsafe {
            let t = shim_Py_TYPE(o);
            self.ext_types
                .iter()
                .any(|&e| raw::PyType_IsSubtype(t, e as *mut raw::PyTypeObject) != 0)
        }
    }
}

/// `sys.gettotalrefcount()` of a pydebug variant, `None` otherwise.
pub fn total_refcount() -> Option<isize> {
    // SAFETY: reads a global counter; GIL held.
    let t = unsafe { shim_total_refcount() };
    (t >= 0).then_some(t)
}
