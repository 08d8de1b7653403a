/* erroralloc: extension functions whose bug shows only when an allocation fails (issue 20),
 * each with a clean twin (`..._ok`) that handles the same failure correctly. With every
 * allocation succeeding, bug and twin behave the same and no check can tell them apart;
 * capisan finds the bugs with allocation-failure injection (`FailNext`, `--fail-alloc`,
 * `oom-sweep`). Every function takes and ignores any positional arguments, so each call
 * reaches the allocations.
 *
 * Allocation counts below assume --without-freelists (the asan variant): PyList_New(0),
 * PyDict_New() and PyTuple_New(n > 0) make one allocation each. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Leak when the second allocation fails: the first object is not released. */
static PyObject *leak_on_error(PyObject *self, PyObject *args) {
    PyObject *a = PyList_New(0);
    if (!a)
        return NULL;
    PyObject *b = PyDict_New();
    if (!b)
        return NULL; /* BUG: `a` leaks */
    PyObject *r = PyTuple_Pack(2, a, b);
    Py_DECREF(a);
    Py_DECREF(b);
    return r;
}

static PyObject *leak_on_error_ok(PyObject *self, PyObject *args) {
    PyObject *a = PyList_New(0);
    if (!a)
        return NULL;
    PyObject *b = PyDict_New();
    if (!b) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *r = PyTuple_Pack(2, a, b);
    Py_DECREF(a);
    Py_DECREF(b);
    return r;
}

/* An unchecked PyTuple_New dereferenced. */
static PyObject *unchecked_tuple(PyObject *self, PyObject *args) {
    PyObject *t = PyTuple_New(2);
    /* BUG: `t` is NULL when the allocation failed */
    PyTuple_SET_ITEM(t, 0, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(t, 1, Py_NewRef(Py_True));
    return t;
}

static PyObject *unchecked_tuple_ok(PyObject *self, PyObject *args) {
    PyObject *t = PyTuple_New(2);
    if (!t)
        return NULL;
    PyTuple_SET_ITEM(t, 0, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(t, 1, Py_NewRef(Py_True));
    return t;
}

/* A double DECREF in the error block: `a` is released before the jump and again after it. */
static PyObject *double_decref(PyObject *self, PyObject *args) {
    PyObject *a = PyList_New(0), *b = NULL, *r = NULL;
    if (!a)
        return NULL;
    b = PyList_New(0);
    if (!b) {
        Py_DECREF(a); /* BUG: the error block releases `a` too */
        goto error;
    }
    r = PyTuple_Pack(2, a, b);
    if (!r)
        goto error;
    Py_DECREF(a);
    Py_DECREF(b);
    return r;
error:
    Py_XDECREF(b);
    Py_DECREF(a);
    return NULL;
}

static PyObject *double_decref_ok(PyObject *self, PyObject *args) {
    PyObject *a = PyList_New(0), *b = NULL, *r = NULL;
    if (!a)
        return NULL;
    b = PyList_New(0);
    if (!b)
        goto error;
    r = PyTuple_Pack(2, a, b);
    if (!r)
        goto error;
    Py_DECREF(a);
    Py_DECREF(b);
    return r;
error:
    Py_XDECREF(b);
    Py_DECREF(a);
    return NULL;
}

/* A GC object holding two lists. */
typedef struct {
    PyObject_HEAD
    PyObject *first;
    PyObject *second;
} PairObject;

static int Pair_traverse(PairObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->first);
    Py_VISIT(self->second);
    return 0;
}

static int Pair_clear(PairObject *self) {
    Py_CLEAR(self->first);
    Py_CLEAR(self->second);
    return 0;
}

static void Pair_dealloc(PairObject *self) {
    PyObject_GC_UnTrack(self);
    Pair_clear(self);
    PyObject_GC_Del(self);
}

/* The constructor tracks the object before it is complete and, when the second list cannot be
 * made, returns NULL and leaves it behind half-built: tracked by the GC, holding its first list,
 * owned by nobody (a leak of two objects on every failing call). */
static PyObject *Pair_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PairObject *self = PyObject_GC_New(PairObject, type);
    if (!self)
        return NULL;
    self->first = PyList_New(0);
    if (!self->first) {
        self->second = NULL;
        Py_DECREF(self);
        return NULL;
    }
    self->second = NULL;
    PyObject_GC_Track(self);
    self->second = PyList_New(0);
    if (!self->second)
        return NULL; /* BUG: the half-built, tracked object is left behind */
    return (PyObject *)self;
}

/* The twin: every field is NULL before anything can fail, the object is tracked only when
 * complete, and a failure releases it. */
static PyObject *PairOk_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PairObject *self = PyObject_GC_New(PairObject, type);
    if (!self)
        return NULL;
    self->first = NULL;
    self->second = NULL;
    self->first = PyList_New(0);
    if (!self->first)
        goto error;
    self->second = PyList_New(0);
    if (!self->second)
        goto error;
    PyObject_GC_Track(self);
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static PyTypeObject Pair_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "erroralloc.Pair",
    .tp_basicsize = sizeof(PairObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Pair_new,
    .tp_dealloc = (destructor)Pair_dealloc,
    .tp_traverse = (traverseproc)Pair_traverse,
    .tp_clear = (inquiry)Pair_clear,
};

static PyTypeObject PairOk_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "erroralloc.PairOk",
    .tp_basicsize = sizeof(PairObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PairOk_new,
    .tp_dealloc = (destructor)Pair_dealloc,
    .tp_traverse = (traverseproc)Pair_traverse,
    .tp_clear = (inquiry)Pair_clear,
};

static PyMethodDef methods[] = {
    {"leak_on_error", leak_on_error, METH_VARARGS, "leaks when the second allocation fails"},
    {"leak_on_error_ok", leak_on_error_ok, METH_VARARGS, "clean twin of leak_on_error"},
    {"unchecked_tuple", unchecked_tuple, METH_VARARGS, "dereferences an unchecked PyTuple_New"},
    {"unchecked_tuple_ok", unchecked_tuple_ok, METH_VARARGS, "clean twin of unchecked_tuple"},
    {"double_decref", double_decref, METH_VARARGS, "releases twice in its error block"},
    {"double_decref_ok", double_decref_ok, METH_VARARGS, "clean twin of double_decref"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "erroralloc", "bugs that show only when an allocation fails", -1,
    methods,
};

PyMODINIT_FUNC PyInit_erroralloc(void) {
    if (PyType_Ready(&Pair_Type) < 0 || PyType_Ready(&PairOk_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Pair", (PyObject *)&Pair_Type) < 0 ||
        PyModule_AddObjectRef(m, "PairOk", (PyObject *)&PairOk_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
