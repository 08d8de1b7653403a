/* gcext: GC and raw-memory bugs that only show on objects an extension *returns* (or half
 * builds), and memory it mallocs and never frees; each with a clean twin. Not the bug zoo: the
 * zoo plants one bug per class where the slot checks see it; these need the checks of issue 15
 * (tests/gc_raw.rs).
 *
 *   make_box(x)      Box holding x and an internal list `items`; tp_traverse misses `items`,
 *                    which no slot ever holds (reachable only through the returned object).
 *   make_clear_box(x) a Box whose tp_clear clears x and leaves `items`, which tp_traverse
 *                    still visits: a cycle through it is never broken (clean twin: make_box_clean).
 *   Node(value)      `next` is a writable member tp_traverse does not visit: a cycle through it
 *                    is never collected.
 *   HalfBuilt(n)     __init__ fails on a non-int before it allocates `state`; tp_new keeps the
 *                    newest instance alive, and tp_traverse reads state->hook (NULL).
 *   pymem_leak(b)    PyMem_Malloc(GCEXT_PYMEM_LEAK) not freed when b is not bytes.
 *   malloc_leak(x)   malloc(16 + x) for an int x (clamped to 0..4096), else malloc(64), never
 *                    freed.
 *
 * Build: cargo xtask ext-build tests/gcext/gcext.c --variant asan -o DIR
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define GCEXT_PYMEM_LEAK 96
#define GCEXT_MAX_ALLOC 4096

/* Makes `p` escape so the optimiser cannot drop a malloc/free pair. */
static inline void
gcext_escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* ---- Box: tp_traverse misses a member only the returned object reaches ----------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *x;     /* strong, the argument */
    PyObject *items; /* strong, an internal list no caller ever held */
} BoxObject;

static int
box_traverse(PyObject *op, visitproc visit, void *arg)
{
    /* BUG: items is not visited. */
    Py_VISIT(((BoxObject *)op)->x);
    return 0;
}

static int
box_clean_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((BoxObject *)op)->x);
    Py_VISIT(((BoxObject *)op)->items);
    return 0;
}

static int
box_clear(PyObject *op)
{
    Py_CLEAR(((BoxObject *)op)->x);
    Py_CLEAR(((BoxObject *)op)->items);
    return 0;
}

static int
box_clear_x_only(PyObject *op)
{
    /* BUG: items is visited by tp_traverse but not cleared. */
    Py_CLEAR(((BoxObject *)op)->x);
    return 0;
}

static void
box_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    (void)box_clear(op);
    PyObject_GC_Del(op);
}

static PyMemberDef box_members[] = {
    {"x", Py_T_OBJECT_EX, offsetof(BoxObject, x), Py_READONLY, "the argument"},
    {"items", Py_T_OBJECT_EX, offsetof(BoxObject, items), Py_READONLY, "internal list"},
    {NULL},
};

static PyTypeObject Box_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.Box",
    .tp_basicsize = sizeof(BoxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Holds x and an internal list; tp_traverse forgets the list (planted bug).",
    .tp_traverse = box_traverse,
    .tp_clear = box_clear,
    .tp_dealloc = box_dealloc,
    .tp_members = box_members,
};

static PyTypeObject BoxClean_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.BoxClean",
    .tp_basicsize = sizeof(BoxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Holds x and an internal list, and visits both.",
    .tp_traverse = box_clean_traverse,
    .tp_clear = box_clear,
    .tp_dealloc = box_dealloc,
    .tp_members = box_members,
};

static PyTypeObject ClearBox_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.ClearBox",
    .tp_basicsize = sizeof(BoxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Holds x and an internal list, visits both; tp_clear forgets the list (planted bug).",
    .tp_traverse = box_clean_traverse,
    .tp_clear = box_clear_x_only,
    .tp_dealloc = box_dealloc,
    .tp_members = box_members,
};

static PyObject *
new_box(PyTypeObject *type, PyObject *x)
{
    BoxObject *self = PyObject_GC_New(BoxObject, type);
    if (self == NULL) {
        return NULL;
    }
    self->x = Py_NewRef(x);
    self->items = PyList_New(0);
    if (self->items == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
make_box(PyObject *self, PyObject *x)
{
    return new_box(&Box_Type, x);
}

static PyObject *
make_clear_box(PyObject *self, PyObject *x)
{
    return new_box(&ClearBox_Type, x);
}

static PyObject *
make_box_clean(PyObject *self, PyObject *x)
{
    return new_box(&BoxClean_Type, x);
}

/* ---- Node: a writable member tp_traverse does not visit (uncollectable cycle) --------------- */

typedef struct {
    PyObject_HEAD
    PyObject *value; /* strong */
    PyObject *next;  /* strong, writable */
} NodeObject;

static PyObject *
node_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *value = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &value)) {
        return NULL;
    }
    NodeObject *self = (NodeObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->value = Py_NewRef(value);
    self->next = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int
node_traverse(PyObject *op, visitproc visit, void *arg)
{
    /* BUG: next is not visited, so node.next = [node] is a cycle the collector never frees. */
    Py_VISIT(((NodeObject *)op)->value);
    return 0;
}

static int
node_clean_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((NodeObject *)op)->value);
    Py_VISIT(((NodeObject *)op)->next);
    return 0;
}

static int
node_clear(PyObject *op)
{
    Py_CLEAR(((NodeObject *)op)->value);
    Py_CLEAR(((NodeObject *)op)->next);
    return 0;
}

static void
node_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    (void)node_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyMemberDef node_members[] = {
    {"value", Py_T_OBJECT_EX, offsetof(NodeObject, value), Py_READONLY, "the value"},
    {"next", Py_T_OBJECT_EX, offsetof(NodeObject, next), 0, "the next node (writable)"},
    {NULL},
};

static PyTypeObject Node_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.Node",
    .tp_basicsize = sizeof(NodeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A linked node whose tp_traverse forgets `next` (planted bug).",
    .tp_new = node_new,
    .tp_traverse = node_traverse,
    .tp_clear = node_clear,
    .tp_dealloc = node_dealloc,
    .tp_members = node_members,
};

static PyTypeObject NodeClean_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.NodeClean",
    .tp_basicsize = sizeof(NodeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A linked node that visits `next`.",
    .tp_new = node_new,
    .tp_traverse = node_clean_traverse,
    .tp_clear = node_clear,
    .tp_dealloc = node_dealloc,
    .tp_members = node_members,
};

/* ---- HalfBuilt: a failing __init__ leaves a NULL field tp_traverse reads --------------------- */

typedef struct {
    long n;
    PyObject *hook; /* strong */
} HalfState;

typedef struct {
    PyObject_HEAD
    HalfState *state; /* NULL until __init__ succeeds */
} HalfBuiltObject;

/* The newest instance of each type, kept alive like a module-level "current handle". */
static PyObject *newest_half[2];
static PyTypeObject HalfBuilt_Type;

static PyObject *
half_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    HalfBuiltObject *self = (HalfBuiltObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = NULL;
    Py_XSETREF(newest_half[type == &HalfBuilt_Type ? 0 : 1], Py_NewRef((PyObject *)self));
    return (PyObject *)self;
}

static int
half_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    PyObject *n;
    if (!PyArg_ParseTuple(args, "O", &n)) {
        return -1;
    }
    if (!PyLong_Check(n)) {
        /* Fails before state is allocated: the instance stays half built (and alive). */
        PyErr_SetString(PyExc_TypeError, "HalfBuilt expects an int");
        return -1;
    }
    HalfBuiltObject *self = (HalfBuiltObject *)op;
    if (self->state == NULL) {
        self->state = PyMem_Calloc(1, sizeof(HalfState));
        if (self->state == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_XSETREF(self->state->hook, Py_NewRef(n));
    self->state->n = PyLong_AsLong(n);
    if (self->state->n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    return 0;
}

static int
half_traverse(PyObject *op, visitproc visit, void *arg)
{
    /* BUG: state is NULL when __init__ failed. */
    Py_VISIT(((HalfBuiltObject *)op)->state->hook);
    return 0;
}

static int
half_clean_traverse(PyObject *op, visitproc visit, void *arg)
{
    HalfState *state = ((HalfBuiltObject *)op)->state;
    if (state != NULL) {
        Py_VISIT(state->hook);
    }
    return 0;
}

static int
half_clear(PyObject *op)
{
    HalfState *state = ((HalfBuiltObject *)op)->state;
    if (state != NULL) {
        Py_CLEAR(state->hook);
    }
    return 0;
}

static void
half_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    (void)half_clear(op);
    PyMem_Free(((HalfBuiltObject *)op)->state);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject HalfBuilt_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.HalfBuilt",
    .tp_basicsize = sizeof(HalfBuiltObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "HalfBuilt(n): tp_traverse reads state, which a failed __init__ left NULL (planted bug).",
    .tp_new = half_new,
    .tp_init = half_init,
    .tp_traverse = half_traverse,
    .tp_clear = half_clear,
    .tp_dealloc = half_dealloc,
};

static PyTypeObject HalfBuiltClean_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gcext.HalfBuiltClean",
    .tp_basicsize = sizeof(HalfBuiltObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "HalfBuiltClean(n): tp_traverse checks state for NULL.",
    .tp_new = half_new,
    .tp_init = half_init,
    .tp_traverse = half_clean_traverse,
    .tp_clear = half_clear,
    .tp_dealloc = half_dealloc,
};

/* ---- raw memory leaks ------------------------------------------------------------------------ */

static PyObject *
pymem_leak_impl(PyObject *b, int clean)
{
    char *buf = PyMem_Malloc(GCEXT_PYMEM_LEAK);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    gcext_escape(buf);
    if (!PyBytes_Check(b)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes");
        if (clean) {
            PyMem_Free(buf);
        }
        /* BUG (not clean): buf is leaked on this error path. */
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n > GCEXT_PYMEM_LEAK) {
        n = GCEXT_PYMEM_LEAK;
    }
    memcpy(buf, PyBytes_AS_STRING(b), (size_t)n);
    PyObject *r = PyLong_FromLong(n > 0 ? buf[0] : 0);
    PyMem_Free(buf);
    return r;
}

static PyObject *
pymem_leak(PyObject *self, PyObject *b)
{
    return pymem_leak_impl(b, 0);
}

static PyObject *
pymem_leak_clean(PyObject *self, PyObject *b)
{
    return pymem_leak_impl(b, 1);
}

static PyObject *
malloc_leak_impl(PyObject *n, int clean)
{
    /* 16 + n bytes for an int n (clamped to 0..GCEXT_MAX_ALLOC), 64 for anything else. */
    size_t size = 64;
    if (PyLong_Check(n)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(n, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow > 0 || v > GCEXT_MAX_ALLOC) {
            v = GCEXT_MAX_ALLOC;
        }
        if (overflow < 0 || v < 0) {
            v = 0;
        }
        size = 16 + (size_t)v;
    }
    char *p = malloc(size);
    if (p == NULL) {
        return PyErr_NoMemory();
    }
    memset(p, 1, size);
    gcext_escape(p);
    long sum = p[0] + p[size - 1];
    if (clean) {
        free(p);
    }
    /* BUG (not clean): p is never freed. */
    return PyLong_FromLong(sum);
}

static PyObject *
malloc_leak(PyObject *self, PyObject *n)
{
    return malloc_leak_impl(n, 0);
}

static PyObject *
malloc_leak_clean(PyObject *self, PyObject *n)
{
    return malloc_leak_impl(n, 1);
}

static PyMethodDef gcext_methods[] = {
    {"make_box", make_box, METH_O, "Returns Box(x) (tp_traverse misses its internal list)."},
    {"make_box_clean", make_box_clean, METH_O, "Returns BoxClean(x)."},
    {"make_clear_box", make_clear_box, METH_O, "Returns ClearBox(x) (tp_clear leaves its list)."},
    {"pymem_leak", pymem_leak, METH_O, "Leaks a PyMem block when b is not bytes."},
    {"pymem_leak_clean", pymem_leak_clean, METH_O, "Clean twin of pymem_leak."},
    {"malloc_leak", malloc_leak, METH_O, "Leaks malloc(16 + x) (int x) or malloc(64)."},
    {"malloc_leak_clean", malloc_leak_clean, METH_O, "Clean twin of malloc_leak."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef gcext_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gcext",
    .m_doc = "GC and raw-memory bugs on returned and half-built objects, each with a clean twin.",
    .m_size = -1,
    .m_methods = gcext_methods,
};

PyMODINIT_FUNC
PyInit_gcext(void)
{
    PyTypeObject *types[] = {&Box_Type,       &BoxClean_Type,  &ClearBox_Type,      &Node_Type,
                             &NodeClean_Type, &HalfBuilt_Type, &HalfBuiltClean_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&gcext_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Node", (PyObject *)&Node_Type) < 0
        || PyModule_AddObjectRef(m, "NodeClean", (PyObject *)&NodeClean_Type) < 0
        || PyModule_AddObjectRef(m, "HalfBuilt", (PyObject *)&HalfBuilt_Type) < 0
        || PyModule_AddObjectRef(m, "HalfBuiltClean", (PyObject *)&HalfBuiltClean_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
