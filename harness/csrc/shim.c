/* One-line exports of CPython's static inline functions and macros, which bindgen cannot bind.
 * Compiled with the variant's own sanitizer flags. Each function names the macro it wraps. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

void shim_Py_INCREF(PyObject *o) { Py_INCREF(o); }
void shim_Py_DECREF(PyObject *o) { Py_DECREF(o); }
Py_ssize_t shim_Py_REFCNT(PyObject *o) { return Py_REFCNT(o); }
PyTypeObject *shim_Py_TYPE(PyObject *o) { return Py_TYPE(o); }
PyObject *shim_Py_None(void) { return Py_None; }
int shim_PyList_Check(PyObject *o) { return PyList_Check(o); }
int shim_PyTuple_Check(PyObject *o) { return PyTuple_Check(o); }
int shim_PyDict_Check(PyObject *o) { return PyDict_Check(o); }
int shim_PyAnySet_Check(PyObject *o) { return PyAnySet_Check(o); }
Py_ssize_t shim_PyList_GET_SIZE(PyObject *o) { return PyList_GET_SIZE(o); }
PyObject *shim_PyList_GET_ITEM(PyObject *o, Py_ssize_t i) { return PyList_GET_ITEM(o, i); }
Py_ssize_t shim_PyTuple_GET_SIZE(PyObject *o) { return PyTuple_GET_SIZE(o); }
void shim_PyTuple_SET_ITEM(PyObject *t, Py_ssize_t i, PyObject *v) { PyTuple_SET_ITEM(t, i, v); }
const char *shim_tp_name(PyObject *o) { return Py_TYPE(o)->tp_name; }
/* PyType_HasFeature(Py_TYPE(o), Py_TPFLAGS_HAVE_GC) */
int shim_type_has_gc(PyObject *o) { return PyType_HasFeature(Py_TYPE(o), Py_TPFLAGS_HAVE_GC); }
/* Py_TYPE(o)->tp_traverse(o, visit, arg), or 0 when the type has none */
int shim_tp_traverse(PyObject *o, visitproc visit, void *arg) {
    traverseproc t = Py_TYPE(o)->tp_traverse;
    return t ? t(o, visit, arg) : 0;
}
/* Py_TYPE(o)->tp_clear(o), or -1 when the type has none */
int shim_tp_clear(PyObject *o) {
    inquiry c = Py_TYPE(o)->tp_clear;
    return c ? c(o) : -1;
}
/* PyUnstable_IsImmortal (3.14+) / _Py_IsImmortal (3.12, 3.13). Before 3.12 no object is
   immortal, but the objects 3.12 made immortal are already shared by the whole interpreter,
   their refcounts moving with every unrelated reference: the singletons, the small ints, the
   empty and one-character str and bytes, the empty tuple, the interned strings and the static
   (non-heap) types. The
   ownership checks must skip them as they skip immortal objects on 3.12+, so they count here. */
int shim_Py_IsImmortal(PyObject *o) {
#if PY_VERSION_HEX >= 0x030E0000
    return PyUnstable_IsImmortal(o);
#elif PY_VERSION_HEX >= 0x030C0000
    return _Py_IsImmortal(o);
#else
    if (o == Py_None || o == Py_True || o == Py_False || o == Py_Ellipsis || o == Py_NotImplemented)
        return 1;
    if (PyLong_CheckExact(o)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(o, &overflow);
        return !overflow && v >= -5 && v <= 256; /* _PY_NSMALLNEGINTS, _PY_NSMALLPOSINTS */
    }
    if (PyType_Check(o)) return !PyType_HasFeature((PyTypeObject *)o, Py_TPFLAGS_HEAPTYPE);
    if (PyTuple_CheckExact(o)) return PyTuple_GET_SIZE(o) == 0;
    if (PyBytes_CheckExact(o)) return PyBytes_GET_SIZE(o) <= 1;
    if (PyUnicode_CheckExact(o))
        return PyUnicode_CHECK_INTERNED(o) ||
               PyUnicode_GET_LENGTH(o) == 0 ||
               (PyUnicode_GET_LENGTH(o) == 1 && PyUnicode_READ_CHAR(o, 0) < 256);
    return 0;
#endif
}
/* sys.gettotalrefcount(): _Py_GetGlobalRefTotal (3.12+) / _Py_GetRefTotal; -1 without Py_REF_DEBUG */
Py_ssize_t shim_total_refcount(void) {
#if defined(Py_REF_DEBUG) && PY_VERSION_HEX >= 0x030C0000
    return _Py_GetGlobalRefTotal();
#elif defined(Py_REF_DEBUG)
    return _Py_GetRefTotal();
#else
    return -1;
#endif
}

#ifdef CAPISAN_ASAN_DEFAULTS
/* ASan / UBSan read these at start-up, before main: the variant's run-time options. */
const char *__asan_default_options(void) { return CAPISAN_ASAN_DEFAULTS; }
const char *__ubsan_default_options(void) { return CAPISAN_UBSAN_DEFAULTS; }
#endif
/* The GC slots and the deallocator of type `t`: out[0] tp_traverse, out[1] tp_clear,
   out[2] tp_dealloc (NULL when the type has none). */
void shim_type_slots(PyObject *t, void **out) {
    PyTypeObject *tp = (PyTypeObject *)t;
    out[0] = (void *)tp->tp_traverse;
    out[1] = (void *)tp->tp_clear;
    out[2] = (void *)tp->tp_dealloc;
}
/* ((PyTypeObject *)t)->tp_name: the name of type object `t` itself */
const char *shim_type_name(PyObject *t) { return ((PyTypeObject *)t)->tp_name; }

/* Backports of newer C-API functions to older lines, with the same contracts; compiled only
   where CPython lacks them, and bound under the real names on those lines (ffi::compat), the
   way pyo3-ffi backports them. */
#if PY_VERSION_HEX < 0x030C0000
/* PyErr_GetRaisedException (3.12): the raised exception, normalized and with its traceback
   attached (new), or NULL; the error indicator is cleared. */
PyObject *capisan_PyErr_GetRaisedException(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}
/* PyErr_SetRaisedException (3.12): steals exc (NULL clears the error indicator). */
void capisan_PyErr_SetRaisedException(PyObject *exc) {
    if (exc == NULL) { PyErr_Restore(NULL, NULL, NULL); return; }
    PyObject *type = (PyObject *)Py_TYPE(exc);
    Py_INCREF(type);
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
}
#endif
#if PY_VERSION_HEX < 0x030D0000
/* PyDict_GetItemRef (3.13): 1 and a new reference in *result, 0 and NULL when the key is
   missing, -1 and NULL with an exception set. */
int capisan_PyDict_GetItemRef(PyObject *d, PyObject *key, PyObject **result) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    Py_XINCREF(v);
    *result = v;
    return v != NULL ? 1 : (PyErr_Occurred() ? -1 : 0);
}
/* PyObject_GetOptionalAttr (3.13): 1 and a new reference, 0 and NULL on AttributeError
   (cleared), -1 and NULL on any other error. */
int capisan_PyObject_GetOptionalAttr(PyObject *o, PyObject *name, PyObject **result) {
    PyObject *v = PyObject_GetAttr(o, name);
    *result = v;
    if (v != NULL) return 1;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
    PyErr_Clear();
    return 0;
}
/* PyModule_Add (3.13): PyModule_AddObjectRef that steals value, also on failure. */
int capisan_PyModule_Add(PyObject *m, const char *name, PyObject *value) {
    int r = PyModule_AddObjectRef(m, name, value);
    Py_XDECREF(value);
    return r;
}
#endif
