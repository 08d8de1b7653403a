/* A test extension for the Python-API vocabulary: each planted bug is reachable only through
 * one kind of API use the C-API-only fuzzer could not express, and each has a clean twin.
 *
 *   window(data, *, width=0)    keyword-only boundary int: width == 2**31 overflows a buffer
 *   open_cursor() -> Cursor     Cursor.advance(n) is a method of a returned object only (the
 *                               type is not in the module); advancing past the end reads freed
 *                               memory
 *   checksum(buf)               a strided memoryview is read as if it were contiguous
 *   Parser.feed(data)           calls self.handle(data); a subclass whose handle() returns a
 *                               non-int makes feed() release the result twice
 *   dump(obj, file)             when file.write raises, the payload is released twice
 *   lookup_key(key)             when hash(key) fails (a __hash__ returning a non-int or
 *                               raising), the key is released once too often
 *   count_a(text)               a str of 100 KiB or more overflows a fixed stack-sized copy
 *
 * Every function has a twin named <name>_clean (Cursor/Parser: CleanCursor via
 * open_cursor_clean, ParserClean) without the bug.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* ---- keyword-only boundary int ------------------------------------------------------------- */

static PyObject *
window_impl(PyObject *args, PyObject *kwargs, int buggy)
{
    static char *kwlist[] = {"data", "width", NULL};
    PyObject *data;
    Py_ssize_t width = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$n", kwlist, &data, &width))
        return NULL;
    char *buf = PyMem_Malloc(16);
    if (buf == NULL)
        return PyErr_NoMemory();
    /* width is a 31-bit field in the caller's format */
    int w = (int)(width & 0xFFFFFFFF);
    if (!buggy && (width < 0 || width > 15))
        w = 0;
    if (buggy && w < 0)
        buf[16 + ((unsigned)w & 7)] = 1; /* BUG: 2**31 truncates to a negative int */
    else if (w >= 0 && w < 16)
        buf[w] = 1;
    PyMem_Free(buf);
    return PyLong_FromSsize_t(width);
}

static PyObject *window(PyObject *s, PyObject *a, PyObject *k) { return window_impl(a, k, 1); }
static PyObject *window_clean(PyObject *s, PyObject *a, PyObject *k) { return window_impl(a, k, 0); }

/* ---- a method of a returned object --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    char *items;
    Py_ssize_t n, pos;
    int buggy;
} CursorObject;

static void
cursor_dealloc(PyObject *op)
{
    PyMem_Free(((CursorObject *)op)->items);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
cursor_advance(PyObject *op, PyObject *arg)
{
    CursorObject *c = (CursorObject *)op;
    Py_ssize_t k = PyLong_AsSsize_t(arg);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (k < 0 || k > 64)
        return PyErr_Format(PyExc_ValueError, "bad step %R", arg);
    c->pos += k;
    if (c->pos >= c->n) {
        if (c->buggy) {
            PyMem_Free(c->items); /* BUG: freed, then read below and again in dealloc */
            c->pos = 0;
            return PyLong_FromLong(c->items[0]);
        }
        c->pos = c->n - 1;
    }
    return PyLong_FromLong(c->items[c->pos]);
}

static PyMethodDef cursor_methods[] = {
    {"advance", cursor_advance, METH_O, "advance(n): move n items on"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Cursor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "apiext.Cursor",
    .tp_basicsize = sizeof(CursorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = cursor_dealloc,
    .tp_methods = cursor_methods,
};

static PyObject *
open_cursor_impl(int buggy)
{
    CursorObject *c = PyObject_New(CursorObject, &Cursor_Type);
    if (c == NULL)
        return NULL;
    c->n = 8;
    c->pos = 0;
    c->buggy = buggy;
    c->items = PyMem_Malloc(8);
    if (c->items == NULL) {
        Py_DECREF(c);
        return PyErr_NoMemory();
    }
    memcpy(c->items, "cursor!", 8);
    return (PyObject *)c;
}

static PyObject *open_cursor(PyObject *s, PyObject *u) { return open_cursor_impl(1); }
static PyObject *open_cursor_clean(PyObject *s, PyObject *u) { return open_cursor_impl(0); }

/* ---- a strided memoryview ------------------------------------------------------------------ */

static PyObject *
checksum_impl(PyObject *arg, int buggy)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, buggy ? PyBUF_STRIDES : PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned long sum = 0;
    const unsigned char *p = view.buf;
    if (buggy && view.ndim == 1 && view.strides && view.strides[0] > view.itemsize) {
        /* BUG: "the data spans shape*stride bytes, plus the padding after the last item" */
        Py_ssize_t span = view.shape[0] * view.strides[0] + view.strides[0] * 8;
        for (Py_ssize_t i = 0; i < span; i++)
            sum += p[i];
    } else {
        for (Py_ssize_t i = 0; i < view.len; i++)
            sum += p[i];
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(sum);
}

static PyObject *checksum(PyObject *s, PyObject *a) { return checksum_impl(a, 1); }
static PyObject *checksum_clean(PyObject *s, PyObject *a) { return checksum_impl(a, 0); }

/* ---- a hook method a subclass overrides ---------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int buggy;
} ParserObject;

static PyObject *
parser_handle(PyObject *self, PyObject *data)
{
    return PyLong_FromSsize_t(PyObject_Length(data) < 0 ? (PyErr_Clear(), 0) : 1);
}

static PyObject *
parser_feed(PyObject *self, PyObject *data)
{
    PyObject *r = PyObject_CallMethod(self, "handle", "O", data);
    if (r == NULL)
        return NULL;
    long n = PyLong_AsLong(r);
    Py_DECREF(r);
    if (n == -1 && PyErr_Occurred()) {
        if (((ParserObject *)self)->buggy)
            Py_DECREF(r); /* BUG: released twice when handle() returns a non-int */
        return NULL;
    }
    return PyLong_FromLong(n);
}

static PyMethodDef parser_methods[] = {
    {"handle", parser_handle, METH_O, "handle(data): the hook feed() calls; returns an int"},
    {"feed", parser_feed, METH_O, "feed(data): call self.handle(data)"},
    {NULL, NULL, 0, NULL},
};

static PyObject *
parser_new_buggy(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    ParserObject *p = (ParserObject *)type->tp_alloc(type, 0);
    if (p != NULL)
        p->buggy = 1;
    return (PyObject *)p;
}

static PyObject *
parser_new_clean(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    ParserObject *p = (ParserObject *)type->tp_alloc(type, 0);
    if (p != NULL)
        p->buggy = 0;
    return (PyObject *)p;
}

static PyTypeObject Parser_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "apiext.Parser",
    .tp_basicsize = sizeof(ParserObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = parser_new_buggy,
    .tp_methods = parser_methods,
};

static PyTypeObject ParserClean_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "apiext.ParserClean",
    .tp_basicsize = sizeof(ParserObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = parser_new_clean,
    .tp_methods = parser_methods,
};

/* ---- a file-like whose write raises -------------------------------------------------------- */

static PyObject *
dump_impl(PyObject *args, int buggy)
{
    PyObject *obj, *file;
    if (!PyArg_ParseTuple(args, "OO", &obj, &file))
        return NULL;
    PyObject *data = PyObject_Repr(obj);
    if (data == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethod(file, "write", "O", data);
    if (r == NULL) {
        /* BUG: when the file's write raises an OSError, data is released here and below */
        if (buggy && PyErr_ExceptionMatches(PyExc_OSError))
            Py_DECREF(data);
        Py_DECREF(data);
        return NULL;
    }
    Py_DECREF(r);
    Py_DECREF(data);
    Py_RETURN_NONE;
}

static PyObject *dump(PyObject *s, PyObject *a) { return dump_impl(a, 1); }
static PyObject *dump_clean(PyObject *s, PyObject *a) { return dump_impl(a, 0); }

/* ---- a __hash__ that fails ------------------------------------------------------------------ */

static PyObject *
lookup_key_impl(PyObject *key, int buggy)
{
    PyObject *k = PyTuple_Pack(1, key);
    if (k == NULL)
        return NULL;
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1) {
        Py_DECREF(k);
        /* BUG: when a type that defines __hash__ fails to hash (its __hash__ raised or
         * returned a non-int), the tuple is released twice */
        if (buggy && Py_TYPE(key)->tp_hash != PyObject_HashNotImplemented)
            Py_DECREF(k);
        return NULL;
    }
    Py_DECREF(k);
    return PyLong_FromSsize_t(h & 0xFF);
}

static PyObject *lookup_key(PyObject *s, PyObject *a) { return lookup_key_impl(a, 1); }
static PyObject *lookup_key_clean(PyObject *s, PyObject *a) { return lookup_key_impl(a, 0); }

/* ---- a 100-KiB string ----------------------------------------------------------------------- */

static PyObject *
count_a_impl(PyObject *arg, int buggy)
{
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &len);
    if (s == NULL)
        return NULL;
    Py_ssize_t cap = buggy ? 64 * 1024 : len + 1;
    char *copy = PyMem_Malloc(cap);
    if (copy == NULL)
        return PyErr_NoMemory();
    memcpy(copy, s, len); /* BUG (buggy): a string over 64 KiB overflows the copy */
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < len && i < cap; i++)
        n += copy[i] == 'a';
    PyMem_Free(copy);
    return PyLong_FromSsize_t(n);
}

static PyObject *count_a(PyObject *s, PyObject *a) { return count_a_impl(a, 1); }
static PyObject *count_a_clean(PyObject *s, PyObject *a) { return count_a_impl(a, 0); }

static PyMethodDef methods[] = {
    {"window", (PyCFunction)(void (*)(void))window, METH_VARARGS | METH_KEYWORDS,
     "window(data, *, width=0)"},
    {"window_clean", (PyCFunction)(void (*)(void))window_clean, METH_VARARGS | METH_KEYWORDS,
     "window_clean(data, *, width=0)"},
    {"open_cursor", open_cursor, METH_NOARGS, "open_cursor() -> a cursor"},
    {"open_cursor_clean", open_cursor_clean, METH_NOARGS, "open_cursor_clean() -> a cursor"},
    {"checksum", checksum, METH_O, "checksum(buf)"},
    {"checksum_clean", checksum_clean, METH_O, "checksum_clean(buf)"},
    {"dump", dump, METH_VARARGS, "dump(obj, file)"},
    {"dump_clean", dump_clean, METH_VARARGS, "dump_clean(obj, file)"},
    {"lookup_key", lookup_key, METH_O, "lookup_key(key)"},
    {"lookup_key_clean", lookup_key_clean, METH_O, "lookup_key_clean(key)"},
    {"count_a", count_a, METH_O, "count_a(text)"},
    {"count_a_clean", count_a_clean, METH_O, "count_a_clean(text)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "apiext", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit_apiext(void)
{
    if (PyType_Ready(&Cursor_Type) < 0 || PyType_Ready(&Parser_Type) < 0
        || PyType_Ready(&ParserClean_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Parser", (PyObject *)&Parser_Type) < 0
        || PyModule_AddObjectRef(m, "ParserClean", (PyObject *)&ParserClean_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
