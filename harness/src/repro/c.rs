//! `repro.c`: a program that embeds the variant's CPython and makes exactly the calls the
//! harness made, in order, one line per op, each commented with its ownership effect.

use std::fmt::Write;

use super::{c_bytes, callee, victim_slot, Expect};
use crate::ops::{clip_bytes, clip_str, CallableKind, Op, PyClass, Resolved};

/// The C code every reproducer starts with: slots and their ownership counts, the tp_traverse
/// audit, the leak measurement (regrtest's -R procedure). A real file, so tests can compile it.
pub const RUNTIME_C: &str = include_str!("runtime.c");

/// Allocation-failure injection, pasted before the runtime when the sequence has a `FailNext`:
/// the harness's own allocator wrappers, then the glue that arms them around the next
/// extension call's calls (real files, so tests can compile them).
pub const FAILALLOC_C: &str = concat!(
    include_str!("../../csrc/failalloc.c"),
    include_str!("failalloc.c")
);

/// The C program for a resolved sequence.
pub fn emit(r: &Resolved, expect: Expect) -> String {
    let fails = r.ops.iter().any(|o| matches!(o, Op::FailNext { .. }));
    let mut out = if fails {
        format!("{FAILALLOC_C}\n{RUNTIME_C}")
    } else {
        RUNTIME_C.to_string()
    };
    out.push_str("\nstatic const char PRELUDE[] =\n");
    for line in crate::PRELUDE_PY.lines() {
        let _ = writeln!(out, "    {}", c_bytes(format!("{line}\n").as_bytes()));
    }
    out.push_str(";\n\nint main(void) {\n    Py_InitializeEx(0);\n");
    out.push_str("    PyObject *g = PyModule_GetDict(PyImport_AddModule(\"__main__\"));\n");
    out.push_str("    PyObject *r0 = PyRun_String(PRELUDE, Py_file_input, g, g);\n    if (!r0) { PyErr_Print(); return 2; }\n    Py_DECREF(r0);\n");
    out.push_str("    cls_Plain = PyDict_GetItemString(g, \"Plain\"); cls_Evil = PyDict_GetItemString(g, \"Evil\");\n");
    out.push_str("    make_callable = PyDict_GetItemString(g, \"make_callable\");\n");
    out.push_str("    PyObject *scratch = PyModule_New(\"capisan_scratch\");\n");
    let mut funcs: Vec<String> = Vec::new();
    if let Some((m, _)) = r.ext.first().map(|_| callee(r, 0)) {
        let _ = writeln!(
            out,
            "    ext_module = PyImport_ImportModule({});",
            c_bytes(m.as_bytes())
        );
        out.push_str("    if (!ext_module) { PyErr_Print(); return 2; }\n");
        for name in &r.ext {
            let f = name.rsplit_once('.').map_or(name.as_str(), |x| x.1);
            funcs.push(f.to_string());
        }
    }
    out.push_str("    Py_ssize_t total0 = 0;\n    (void)total0; (void)scratch;\n\n");
    let victim = victim_slot(r);
    let n = r.ops.len();
    for (i, op) in r.ops.iter().enumerate() {
        if i + 1 == n {
            let _ = writeln!(out, "    capisan_victim_ready(s[{victim}]);");
        }
        let _ = writeln!(out, "    /* {} */", super::describe(op, r));
        out.push_str(&op_c(op, r, expect));
        if fails && matches!(op, Op::CallExt { .. }) {
            out.push_str("    capisan_fail_done(); /* a FailNext arms one extension call */\n");
        }
        let _ = writeln!(out, "    done({i});");
    }
    out.push_str(
        // Newest slots first: an object made from others (a holder of a list made before it)
        // dies while what it holds is still a slot, so the GC audit at its release sees it.
        "\n    for (int i = NSLOTS - 1; i >= 0; i--) release_all(i);\n    Py_DECREF(scratch);\n",
    );
    out.push_str("    fprintf(stderr, \"capisan repro: finished without the expected failure\\n\");\n    return 0;\n}\n");
    out
}

fn op_c(op: &Op, r: &Resolved, expect: Expect) -> String {
    use Op::*;
    let s = |x: &crate::ops::Slot| format!("s[{}]", x.index());
    // A call argument: its slot, or a fresh vocabulary value (a reference the reproducer
    // does not release; it is made before any measurement).
    let arg = |x: &crate::ops::Slot| match x.value_code() {
        Some(c) => {
            format!("PyObject_CallFunction(PyDict_GetItemString(g, \"make_value\"), \"i\", {c})")
        }
        None => s(x),
    };
    let d = |x: &crate::ops::Slot| x.index();
    match op {
        NewInt { dst, value } => format!("    put({}, PyLong_FromLongLong({value}LL), 1); /* new */\n", d(dst)),
        NewFloat { dst, value } => {
            let v = if value.is_nan() {
                "NAN".into()
            } else if value.is_infinite() {
                if *value > 0.0 { "INFINITY".into() } else { "-INFINITY".into() }
            } else {
                format!("{value:?}")
            };
            format!("    put({}, PyFloat_FromDouble({v}), 1); /* new */\n", d(dst))
        }
        NewStr { dst, text } => {
            let t = clip_str(text);
            format!("    put({}, PyUnicode_FromStringAndSize({}, {}), 1); /* new */\n", d(dst), c_bytes(t.as_bytes()), t.len())
        }
        NewBytes { dst, data } => {
            let b = clip_bytes(data);
            format!("    put({}, PyBytes_FromStringAndSize({}, {}), 1); /* new */\n", d(dst), c_bytes(b), b.len())
        }
        NewTuple { dst, len } => format!(
            "    {{ PyObject *t = PyTuple_New({n}); for (int k = 0; k < {n}; k++) {{ Py_INCREF(Py_None); PyTuple_SET_ITEM(t, k, Py_None); }} put({}, t, 1); }} /* new; SET_ITEM steals */\n",
            d(dst),
            n = len % 5
        ),
        NewList { dst } => format!("    put({}, PyList_New(0), 1); /* new */\n", d(dst)),
        NewListOf { dst, len } => format!(
            "    {{ PyObject *l = PyList_New(0); for (int k = 0; k < {n}; k++) {{ PyObject *x = PyFloat_FromDouble(k + 0.5); PyList_Append(l, x); Py_DECREF(x); }} put({}, l, 1); }} /* new; the list alone owns its items */\n",
            d(dst),
            n = len % 5
        ),
        NewDict { dst } => format!("    put({}, PyDict_New(), 1); /* new */\n", d(dst)),
        NewSet { dst } => format!("    put({}, PySet_New(NULL), 1); /* new */\n", d(dst)),
        NewInstance { dst, class } => {
            let c = if *class == PyClass::Evil { "cls_Evil" } else { "cls_Plain" };
            format!("    put({}, PyObject_CallNoArgs({c}), 1); /* new */\n", d(dst))
        }
        NewCallable { dst, kind, target } => {
            let k = match kind {
                CallableKind::Clearer => 0,
                CallableKind::Noop => 1,
                CallableKind::Raiser => 2,
            };
            format!("    put({}, PyObject_CallFunction(make_callable, \"iO\", {k}, {}), 1); /* new */\n", d(dst), s(target))
        }
        Dup { src, dst } => format!("    Py_INCREF({}); put({}, {}, 1); /* Py_NewRef: new */\n", s(src), d(dst), s(src)),
        Incref { slot } => format!("    Py_INCREF({}); own[{}]++; /* now owned */\n", s(slot), d(slot)),
        Decref { slot } => format!(
            "    {{ PyObject *o = {}; if (--own[{i2}] == 0) s[{i2}] = NULL; release_ref(o); }} /* releases one owned reference */\n",
            s(slot),
            i2 = d(slot)
        ),
        Release { slot } => format!("    release_all({}); /* releases every owned reference */\n", d(slot)),
        ListAppend { list, item } => format!("    if (PyList_Check({l})) PyList_Append({l}, {}); /* not stolen */\n", s(item), l = s(list)),
        ListInsert { list, index, item } => {
            format!("    if (PyList_Check({l})) PyList_Insert({l}, {index}, {}); /* not stolen */\n", s(item), l = s(list))
        }
        ListSetItem { list, index, item } => format!(
            "    if (PyList_Check({l})) stolen({}, PyList_SetItem({l}, {index}, {})); /* stolen, even on failure */\n",
            d(item),
            s(item),
            l = s(list)
        ),
        ListGetItem { list, index, dst } => {
            format!("    if (PyList_Check({l})) put({}, PyList_GetItem({l}, {index}), 0); /* borrowed */\n", d(dst), l = s(list))
        }
        ListDelSlice { list, lo, hi } => format!("    if (PyList_Check({l})) PyList_SetSlice({l}, {lo}, {hi}, NULL);\n", l = s(list)),
        ListSort { list } => format!("    if (PyList_Check({l})) PyList_Sort({l}); /* runs __lt__ */\n", l = s(list)),
        TupleSetItem { tuple, index, item } => format!(
            "    if (PyTuple_Check({t})) stolen({}, PyTuple_SetItem({t}, {index}, {})); /* stolen, even on failure */\n",
            d(item),
            s(item),
            t = s(tuple)
        ),
        TupleGetItem { tuple, index, dst } => {
            format!("    if (PyTuple_Check({t})) put({}, PyTuple_GetItem({t}, {index}), 0); /* borrowed */\n", d(dst), t = s(tuple))
        }
        DictSetItem { dict, key, value } => {
            format!("    if (PyDict_Check({m})) PyDict_SetItem({m}, {}, {}); /* not stolen */\n", s(key), s(value), m = s(dict))
        }
        DictGetItem { dict, key, dst } => format!(
            "    if (PyDict_Check({m})) put({}, PyDict_GetItemWithError({m}, {}), 0); /* borrowed */\n",
            d(dst),
            s(key),
            m = s(dict)
        ),
        DictGetItemRef { dict, key, dst } => format!(
            "    if (PyDict_Check({m})) {{ PyObject *v = NULL; PyDict_GetItemRef({m}, {}, &v); put({}, v, 1); }} /* new */\n",
            s(key),
            d(dst),
            m = s(dict)
        ),
        DictDelItem { dict, key } => format!("    if (PyDict_Check({m})) PyDict_DelItem({m}, {});\n", s(key), m = s(dict)),
        DictClear { dict } => format!("    if (PyDict_Check({m})) PyDict_Clear({m});\n", m = s(dict)),
        SetAdd { set, item } => format!("    if (PyAnySet_Check({m})) PySet_Add({m}, {}); /* not stolen */\n", s(item), m = s(set)),
        SetAttr { obj, name, value } => {
            format!("    PyObject_SetAttrString({}, \"{}\", {}); /* not stolen */\n", s(obj), name.as_str(), s(value))
        }
        GetAttr { obj, name, dst } => format!("    put({}, PyObject_GetAttrString({}, \"{}\"), 1); /* new */\n", d(dst), s(obj), name.as_str()),
        RichCompare { a, b, op, dst } => {
            format!("    put({}, PyObject_RichCompare({}, {}, {}), 1); /* new; runs __eq__ */\n", d(dst), s(a), s(b), op % 6)
        }
        Hash { obj } => format!("    PyObject_Hash({}); /* runs __hash__ */\n", s(obj)),
        Repr { obj, dst } => format!("    put({}, PyObject_Repr({}), 1); /* new */\n", d(dst), s(obj)),
        Call { callable, arg, dst } => format!(
            "    if (PyCallable_Check({c})) put({}, PyObject_CallOneArg({c}, {}), 1); /* new */\n",
            d(dst),
            s(arg),
            c = s(callable)
        ),
        ModuleAddRef { obj, name } => format!("    PyModule_AddObjectRef(scratch, \"{}\", {}); /* not stolen */\n", name.as_str(), s(obj)),
        ModuleAdd { obj, name } => {
            format!("    stolen({}, PyModule_Add(scratch, \"{}\", {})); /* stolen */\n", d(obj), name.as_str(), s(obj))
        }
        ErrRoundTrip { dst } => format!(
            "    PyErr_SetString(PyExc_ValueError, \"capisan\"); put({}, PyErr_GetRaisedException(), 1); /* new */\n",
            d(dst)
        ),
        GcCollect { generation } => format!(
            "    {{ PyObject *gc = PyImport_ImportModule(\"gc\"); PyObject *r = PyObject_CallMethod(gc, \"collect\", \"i\", {}); Py_XDECREF(r); Py_DECREF(gc); }}\n",
            generation % 3
        ),
        NewValue { dst, code } => format!(
            "    put({}, PyObject_CallFunction(PyDict_GetItemString(g, \"make_value\"), \"i\", {code}), 1); PyErr_Clear(); /* new */\n",
            d(dst)
        ),
        CallMethod {
            recv,
            method,
            kw,
            dst,
            ..
        } => {
            let argv: Vec<String> = op.ext_args().iter().map(arg).collect();
            format!(
                "    {{ PyObject *a = PyTuple_Pack({}{}); /* new */\n      put({}, PyObject_CallFunction(PyDict_GetItemString(g, \"method_call\"), \"OiOi\", {}, {method}, a, {kw}), 1); PyErr_Clear(); /* new */\n      Py_DECREF(a); }}\n",
                argv.len(),
                argv.iter().map(|a| format!(", {a}")).collect::<String>(),
                d(dst),
                s(recv)
            )
        }
        Protocol {
            obj,
            which,
            arg: a,
            dst,
        } => format!(
            "    put({}, PyObject_CallFunction(PyDict_GetItemString(g, \"protocol\"), \"iOO\", {which}, {}, {}), 1); PyErr_Clear(); /* new */\n",
            d(dst),
            s(obj),
            arg(a)
        ),
        // Arms the allocator wrappers (pasted above main) for the next extension call.
        FailNext { nth, count } => {
            let (first, last) = crate::ops::FailSpec {
                nth: *nth,
                count: *count,
            }
            .range();
            format!("    capisan_failalloc_install(); capisan_fail_next({first}, {last}); /* {op} */\n")
        }
        CallExt { func, dst, kw, .. } if *kw != 0 => {
            let (m, f) = callee(r, *func);
            let argv: Vec<String> = op.ext_args().iter().map(arg).collect();
            format!(
                "    {{ PyObject *f = PyObject_GetAttrString(ext_module, {}); /* new */\n      if (!f) {{ PyErr_Print(); return 2; }}\n      PyObject *a = PyTuple_Pack({}{}); /* new */\n      /* {m}.{f} with keyword mask {kw}: called three times, like capisan */\n      put({}, PyObject_CallFunction(PyDict_GetItemString(g, \"ext_call\"), \"OOi\", f, a, {kw}), 1); PyErr_Clear();\n      for (int k = 0; k < 2; k++) {{ PyObject *x = PyObject_CallFunction(PyDict_GetItemString(g, \"ext_call\"), \"OOi\", f, a, {kw}); Py_XDECREF(x); PyErr_Clear(); }}\n      Py_DECREF(a); Py_DECREF(f); }}\n",
                c_bytes(f.as_bytes()),
                argv.len(),
                argv.iter().map(|a| format!(", {a}")).collect::<String>(),
                d(dst),
            )
        }
        CallExt { func, dst, .. } => {
            let (m, f) = callee(r, *func);
            let argv: Vec<String> = op.ext_args().iter().map(arg).collect();
            let n = argv.len();
            let args: String = argv.iter().map(|a| format!("{a}, ")).collect();
            // The callable is looked up once, before any call: each lookup is a new reference,
            // and inside a measured call it would read as a leak of every function.
            let lookup = format!(
                "      PyObject *f = PyObject_GetAttrString(ext_module, {}); /* new, released below */\n      if (!f) {{ PyErr_Print(); return 2; }}\n",
                c_bytes(f.as_bytes())
            );
            match expect {
                Expect::Leak => format!(
                    "    {{ /* once, then regrtest's -R procedure on the same call (check_leak) */\n{lookup}      PyObject *argv[] = {{{args}NULL}}; /* held while measuring: storing the result may release a slot */\n      for (int k = 0; k < {n}; k++) Py_INCREF(argv[k]);\n      put({}, PyObject_Vectorcall(f, argv, {n}, NULL), 1); PyErr_Clear(); /* new */\n      int leaked = check_leak({}, f, argv, {n});\n      for (int k = 0; k < {n}; k++) Py_DECREF(argv[k]);\n      Py_DECREF(f);\n      if (leaked) return 1; }}\n",
                    d(dst),
                    c_bytes(format!("{m}.{f}").as_bytes()),
                ),
                // capisan calls an extension function three times (its repeat rule).
                _ => format!(
                    "    {{ /* new; called three times, like capisan */\n{lookup}      put({}, PyObject_CallFunctionObjArgs(f, {args}NULL), 1); PyErr_Clear();\n      for (int k = 0; k < 2; k++) {{ PyObject *x = PyObject_CallFunctionObjArgs(f, {args}NULL); Py_XDECREF(x); PyErr_Clear(); }}\n      Py_DECREF(f); }}\n",
                    d(dst),
                ),
            }
        }
    }
}
