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
/* _Py_IsImmortal (3.12+); always 0 before immortal objects existed */
int shim_Py_IsImmortal(PyObject *o) {
#if PY_VERSION_HEX >= 0x030C0000
    return _Py_IsImmortal(o);
#else
    (void)o;
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
