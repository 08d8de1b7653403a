/* bugzoo: a CPython 3.13 extension with one planted memory bug per class.
 *
 * Every buggy function has a `<name>_clean` twin that does the same work correctly, so a test can
 * assert both "the bug is found" and "the twin is not flagged". Each bug fires only for some
 * argument shapes (an int > 3, a non-empty list, bytes longer than 16, ...) so a fuzzer has to find
 * the shape, but easily. See README.md for the trigger table.
 *
 * Build (outputs go outside the repo):
 *   clang-22 -shared -fPIC -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
 *     -fno-sanitize=function -I<src>/Include -I<builddir> tests/bugzoo/bugzoo.c \
 *     -o <outdir>/bugzoo$(EXT_SUFFIX)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

/* The sizes the int-taking functions allocate are clamped so a huge fuzzed int exercises the bug
 * instead of an allocation failure. */
#define ZOO_MAX_ALLOC 4096

/* Makes `p` escape so the optimiser cannot drop a malloc/free pair (it would, at -O1, and the
 * planted bug with it). */
static inline void
zoo_escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* Returns 1 and stores the clamped size when `n` is an int > 3 (the trigger shape), 0 when it is
 * an int <= 3, -1 with an exception set when it is not an int. */
static int
trigger_size(PyObject *n, size_t *size)
{
    if (!PyLong_Check(n)) {
        PyErr_SetString(PyExc_TypeError, "expected an int");
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(n, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0 || v > ZOO_MAX_ALLOC) {
        v = ZOO_MAX_ALLOC;
    }
    if (overflow < 0 || v <= 3) {
        return 0;
    }
    *size = (size_t)v;
    return 1;
}

/* ---- 1. reference leak on an error path ------------------------------------------------------ */

static PyObject *
leak_on_error(PyObject *self, PyObject *x)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    if (!PyLong_Check(x)) {
        PyErr_SetString(PyExc_TypeError, "leak_on_error: expected an int");
        return NULL; /* BUG: `list` is never released */
    }
    if (PyList_Append(list, x) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *
leak_on_error_clean(PyObject *self, PyObject *x)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    if (!PyLong_Check(x)) {
        Py_DECREF(list);
        PyErr_SetString(PyExc_TypeError, "leak_on_error_clean: expected an int");
        return NULL;
    }
    if (PyList_Append(list, x) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

/* 1b. The same error-path leak with an object the GC does not track (bytes). A leaked list stays
 * reachable from the GC's generation lists, so LeakSanitizer cannot see it (only a refcount-total
 * check can); a leaked bytes object is unreachable and LeakSanitizer reports it at exit. */
static PyObject *
leak_bytes_on_error(PyObject *self, PyObject *x)
{
    PyObject *buf = PyBytes_FromStringAndSize("bugzoo leaked payload", 21);
    if (buf == NULL) {
        return NULL;
    }
    if (!PyLong_Check(x)) {
        PyErr_SetString(PyExc_TypeError, "leak_bytes_on_error: expected an int");
        return NULL; /* BUG: `buf` is never released */
    }
    return buf;
}

static PyObject *
leak_bytes_on_error_clean(PyObject *self, PyObject *x)
{
    PyObject *buf = PyBytes_FromStringAndSize("bugzoo leaked payload", 21);
    if (buf == NULL) {
        return NULL;
    }
    if (!PyLong_Check(x)) {
        Py_DECREF(buf);
        PyErr_SetString(PyExc_TypeError, "leak_bytes_on_error_clean: expected an int");
        return NULL;
    }
    return buf;
}

/* ---- 2. extra DECREF of a borrowed reference ------------------------------------------------- */

static PyObject *
extra_decref(PyObject *self, PyObject *lst)
{
    if (PyList_Check(lst) && PyList_GET_SIZE(lst) > 0) {
        PyObject *item = PyList_GetItem(lst, 0); /* borrowed */
        if (item == NULL) {
            return NULL;
        }
        Py_DECREF(item); /* BUG: we never owned this reference */
    }
    Py_RETURN_NONE;
}

static PyObject *
extra_decref_clean(PyObject *self, PyObject *lst)
{
    if (PyList_Check(lst) && PyList_GET_SIZE(lst) > 0) {
        PyObject *item = PyList_GetItem(lst, 0); /* borrowed */
        if (item == NULL) {
            return NULL;
        }
        Py_INCREF(item);
        Py_DECREF(item); /* balanced: we took our own reference first */
    }
    Py_RETURN_NONE;
}

/* ---- 3. double free (libc allocator, so it is a plain double free under any PYTHONMALLOC) ---- */

static PyObject *
double_free(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        char *p = malloc(size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(p);
        memset(p, 0x5a, size);
        free(p);
        free(p); /* BUG: second free of the same block */
    }
    Py_RETURN_NONE;
}

static PyObject *
double_free_clean(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        char *p = malloc(size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(p);
        memset(p, 0x5a, size);
        free(p);
    }
    Py_RETURN_NONE;
}

/* 3b. The same bug through the PyMem API: under PYTHONMALLOC=malloc_debug the second free is seen
 * inside the debug allocator's address check, which is where `detect` recognises a double free
 * that the sanitizer reports as a use-after-free. */
static PyObject *
double_free_pymem(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        char *p = PyMem_Malloc(size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(p);
        memset(p, 0x5a, size);
        PyMem_Free(p);
        PyMem_Free(p); /* BUG: second free of the same block */
    }
    Py_RETURN_NONE;
}

static PyObject *
double_free_pymem_clean(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        char *p = PyMem_Malloc(size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(p);
        memset(p, 0x5a, size);
        PyMem_Free(p);
    }
    Py_RETURN_NONE;
}

/* ---- 4. heap buffer overflow ------------------------------------------------------------------ */

#define OVERFLOW_BUF 16

static PyObject *
overflow(PyObject *self, PyObject *b)
{
    if (PyBytes_Check(b)) {
        char *buf = malloc(OVERFLOW_BUF);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(buf);
        /* BUG: copies the whole payload into a 16-byte block */
        memcpy(buf, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
        free(buf);
    }
    Py_RETURN_NONE;
}

static PyObject *
overflow_clean(PyObject *self, PyObject *b)
{
    if (PyBytes_Check(b)) {
        char *buf = malloc(OVERFLOW_BUF);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(buf);
        size_t len = (size_t)PyBytes_GET_SIZE(b);
        memcpy(buf, PyBytes_AS_STRING(b), len < OVERFLOW_BUF ? len : OVERFLOW_BUF);
        free(buf);
    }
    Py_RETURN_NONE;
}

/* 4b. The same overflow into a PyMem block: the write lands in the debug allocator's trailing pad
 * (inside the real malloc block, so ASan cannot see it) and PYTHONMALLOC=malloc_debug reports
 * "bad trailing pad byte" when the block is freed. */
static PyObject *
overflow_pymem(PyObject *self, PyObject *b)
{
    if (PyBytes_Check(b)) {
        char *buf = PyMem_Malloc(OVERFLOW_BUF);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(buf);
        /* BUG: up to 8 bytes past the 16-byte block (clamped to stay inside the debug pad) */
        size_t len = (size_t)PyBytes_GET_SIZE(b);
        memcpy(buf, PyBytes_AS_STRING(b), len < OVERFLOW_BUF + 8 ? len : OVERFLOW_BUF + 8);
        PyMem_Free(buf);
    }
    Py_RETURN_NONE;
}

static PyObject *
overflow_pymem_clean(PyObject *self, PyObject *b)
{
    if (PyBytes_Check(b)) {
        char *buf = PyMem_Malloc(OVERFLOW_BUF);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(buf);
        size_t len = (size_t)PyBytes_GET_SIZE(b);
        memcpy(buf, PyBytes_AS_STRING(b), len < OVERFLOW_BUF ? len : OVERFLOW_BUF);
        PyMem_Free(buf);
    }
    Py_RETURN_NONE;
}

/* ---- 5. conditional jump on an uninitialised heap value --------------------------------------- */

struct zoo_state {
    int flag;
    int count;
};

static PyObject *
uninit_read(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    long result = 0;
    if (hit) {
        struct zoo_state *s = malloc(sizeof *s);
        if (s == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(s);
        s->count = (int)size; /* BUG: s->flag is never set */
        if (s->flag == 42) {
            result++;
        }
        result += s->count;
        free(s);
    }
    return PyLong_FromLong(result);
}

static PyObject *
uninit_read_clean(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    long result = 0;
    if (hit) {
        struct zoo_state *s = malloc(sizeof *s);
        if (s == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(s);
        s->flag = 0;
        s->count = (int)size;
        if (s->flag == 42) {
            result++;
        }
        result += s->count;
        free(s);
    }
    return PyLong_FromLong(result);
}

/* ---- 6. allocator-API mismatch ---------------------------------------------------------------- */

static PyObject *
alloc_mismatch(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        void *p = PyMem_Malloc(size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(p);
        memset(p, 0, size);
        PyObject_Free(p); /* BUG: PyMem_Malloc'd memory released through the object API */
    }
    Py_RETURN_NONE;
}

static PyObject *
alloc_mismatch_clean(PyObject *self, PyObject *n)
{
    size_t size = 0;
    int hit = trigger_size(n, &size);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        void *p = PyMem_Malloc(size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        zoo_escape(p);
        memset(p, 0, size);
        PyMem_Free(p);
    }
    Py_RETURN_NONE;
}

/* ---- 7. GC type whose tp_traverse misses its only reference ---------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *obj; /* strong */
} HolderObject;

static PyObject *
holder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "O", &obj)) {
        return NULL;
    }
    HolderObject *self = PyObject_GC_New(HolderObject, type);
    if (self == NULL) {
        return NULL;
    }
    self->obj = Py_NewRef(obj);
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
holder_traverse(PyObject *op, visitproc visit, void *arg)
{
    /* BUG: ((HolderObject *)op)->obj is not visited, so a cycle through it is never collected
     * and the GC's view of the heap is wrong. */
    (void)op;
    (void)visit;
    (void)arg;
    return 0;
}

static int
holder_clean_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((HolderObject *)op)->obj);
    return 0;
}

static int
holder_clear(PyObject *op)
{
    Py_CLEAR(((HolderObject *)op)->obj);
    return 0;
}

static void
holder_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    Py_XDECREF(((HolderObject *)op)->obj);
    PyObject_GC_Del(op);
}

static PyObject *
holder_get_obj(PyObject *op, void *closure)
{
    PyObject *obj = ((HolderObject *)op)->obj;
    return Py_NewRef(obj != NULL ? obj : Py_None);
}

static PyGetSetDef holder_getset[] = {
    {"obj", holder_get_obj, NULL, "the held object", NULL},
    {NULL},
};

static PyTypeObject Holder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bugzoo.Holder",
    .tp_basicsize = sizeof(HolderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Holds one object; its tp_traverse forgets to visit it (planted bug).",
    .tp_new = holder_new,
    .tp_traverse = holder_traverse,
    .tp_clear = holder_clear,
    .tp_dealloc = holder_dealloc,
    .tp_getset = holder_getset,
};

static PyTypeObject HolderClean_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bugzoo.HolderClean",
    .tp_basicsize = sizeof(HolderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Holds one object and visits it in tp_traverse.",
    .tp_new = holder_new,
    .tp_traverse = holder_clean_traverse,
    .tp_clear = holder_clear,
    .tp_dealloc = holder_dealloc,
    .tp_getset = holder_getset,
};

static int
clear_bug_clear(PyObject *op)
{
    /* BUG: obj is visited by tp_traverse but never cleared, so a cycle through it survives
     * every collection. */
    (void)op;
    return 0;
}

static PyTypeObject ClearBug_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bugzoo.ClearBug",
    .tp_basicsize = sizeof(HolderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Holds one object and visits it; its tp_clear forgets to clear it (planted bug).",
    .tp_new = holder_new,
    .tp_traverse = holder_clean_traverse,
    .tp_clear = clear_bug_clear,
    .tp_dealloc = holder_dealloc,
    .tp_getset = holder_getset,
};

static PyObject *
clear_bug(PyObject *self, PyObject *obj)
{
    return PyObject_CallOneArg((PyObject *)&ClearBug_Type, obj);
}

static PyObject *
clear_bug_clean(PyObject *self, PyObject *obj)
{
    return PyObject_CallOneArg((PyObject *)&HolderClean_Type, obj);
}

static PyObject *
holder_traverse_bug(PyObject *self, PyObject *obj)
{
    return PyObject_CallOneArg((PyObject *)&Holder_Type, obj);
}

static PyObject *
holder_traverse_bug_clean(PyObject *self, PyObject *obj)
{
    return PyObject_CallOneArg((PyObject *)&HolderClean_Type, obj);
}

/* ---- 8. borrowed reference used after a call that can mutate its container ------------------- */

static PyObject *
borrowed_after_mutation(PyObject *self, PyObject *args)
{
    PyObject *lst, *f;
    if (!PyArg_ParseTuple(args, "OO", &lst, &f)) {
        return NULL;
    }
    if (!PyList_Check(lst) || PyList_GET_SIZE(lst) < 1 || !PyCallable_Check(f)) {
        Py_RETURN_NONE;
    }
    PyObject *item = PyList_GetItem(lst, 0); /* borrowed from lst */
    if (item == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallNoArgs(f); /* may clear lst and free item */
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    return PyObject_Repr(item); /* BUG: item may be gone */
}

static PyObject *
borrowed_after_mutation_clean(PyObject *self, PyObject *args)
{
    PyObject *lst, *f;
    if (!PyArg_ParseTuple(args, "OO", &lst, &f)) {
        return NULL;
    }
    if (!PyList_Check(lst) || PyList_GET_SIZE(lst) < 1 || !PyCallable_Check(f)) {
        Py_RETURN_NONE;
    }
    PyObject *item = PyList_GetItem(lst, 0);
    if (item == NULL) {
        return NULL;
    }
    Py_INCREF(item); /* own it across the call */
    PyObject *res = PyObject_CallNoArgs(f);
    if (res == NULL) {
        Py_DECREF(item);
        return NULL;
    }
    Py_DECREF(res);
    PyObject *r = PyObject_Repr(item);
    Py_DECREF(item);
    return r;
}

/* ---- module ------------------------------------------------------------------------------------ */

static PyMethodDef bugzoo_methods[] = {
    {"leak_on_error", leak_on_error, METH_O, "Reference leak on the TypeError path (x not int)."},
    {"leak_on_error_clean", leak_on_error_clean, METH_O, "Clean twin of leak_on_error."},
    {"leak_bytes_on_error", leak_bytes_on_error, METH_O, "Leaks a bytes object when x is not an int."},
    {"leak_bytes_on_error_clean", leak_bytes_on_error_clean, METH_O, "Clean twin of leak_bytes_on_error."},
    {"extra_decref", extra_decref, METH_O, "Extra DECREF of lst[0] (non-empty list)."},
    {"extra_decref_clean", extra_decref_clean, METH_O, "Clean twin of extra_decref."},
    {"double_free", double_free, METH_O, "libc double free (int n > 3)."},
    {"double_free_clean", double_free_clean, METH_O, "Clean twin of double_free."},
    {"double_free_pymem", double_free_pymem, METH_O, "PyMem_Free twice (int n > 3)."},
    {"double_free_pymem_clean", double_free_pymem_clean, METH_O, "Clean twin of double_free_pymem."},
    {"overflow", overflow, METH_O, "Heap overflow of a 16-byte block (bytes longer than 16)."},
    {"overflow_clean", overflow_clean, METH_O, "Clean twin of overflow."},
    {"overflow_pymem", overflow_pymem, METH_O, "PyMem block overflow (bytes longer than 16)."},
    {"overflow_pymem_clean", overflow_pymem_clean, METH_O, "Clean twin of overflow_pymem."},
    {"uninit_read", uninit_read, METH_O, "Branch on an uninitialised heap field (int n > 3)."},
    {"uninit_read_clean", uninit_read_clean, METH_O, "Clean twin of uninit_read."},
    {"alloc_mismatch", alloc_mismatch, METH_O, "PyMem_Malloc then PyObject_Free (int n > 3)."},
    {"alloc_mismatch_clean", alloc_mismatch_clean, METH_O, "Clean twin of alloc_mismatch."},
    {"holder_traverse_bug", holder_traverse_bug, METH_O, "Returns Holder(obj) (tp_traverse misses obj)."},
    {"holder_traverse_bug_clean", holder_traverse_bug_clean, METH_O, "Returns HolderClean(obj)."},
    {"clear_bug", clear_bug, METH_O, "Returns ClearBug(obj) (tp_clear leaves obj)."},
    {"clear_bug_clean", clear_bug_clean, METH_O, "Returns HolderClean(obj)."},
    {"borrowed_after_mutation", borrowed_after_mutation, METH_VARARGS,
     "Uses borrowed lst[0] after calling f() (non-empty list, callable f)."},
    {"borrowed_after_mutation_clean", borrowed_after_mutation_clean, METH_VARARGS,
     "Clean twin of borrowed_after_mutation."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef bugzoo_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bugzoo",
    .m_doc = "One planted memory bug per class, each with a clean twin.",
    .m_size = -1,
    .m_methods = bugzoo_methods,
};

PyMODINIT_FUNC
PyInit_bugzoo(void)
{
    if (PyType_Ready(&Holder_Type) < 0 || PyType_Ready(&HolderClean_Type) < 0
        || PyType_Ready(&ClearBug_Type) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&bugzoo_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Holder", (PyObject *)&Holder_Type) < 0
        || PyModule_AddObjectRef(m, "HolderClean", (PyObject *)&HolderClean_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
