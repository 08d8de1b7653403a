/* A test extension that behaves like real code on its error paths, for the trust tests.
 *
 * Most of it is correct code whose reference counts move for reasons that are not leaks, the
 * way real extensions do:
 *   - lookup():  a fresh heap type per call, a fresh instance, attribute lookups by C-string
 *                names that are new on every call (the type attribute cache keeps them), a
 *                method called by name, and PyErr_Format with %R on the error path. The heap
 *                type sits in a reference cycle until the collector runs.
 *   - check():   PyErr_Format("... %R") when the argument is not an int.
 *   - alloc():   an allocation sized by an int argument; a request the allocator refuses is a
 *                MemoryError, as on a production build.
 *   - describe(): PyObject_CallMethod by name and PyUnicode_FromFormat("%R").
 *
 * And two true bugs:
 *   - parse_pair(): leaks the tuple it built when the sequence is not a pair (error path).
 *   - stash()/unstash(): stash() keeps a *borrowed* pointer; unstash() returns it with a new
 *     reference. An object released between the two is used after free. Only a longer input
 *     reaches it: make an object, stash it, release it, unstash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static unsigned long counter;
static PyObject *stashed; /* borrowed: the bug */

static PyObject *
lookup(PyObject *self, PyObject *arg)
{
    char tname[64], aname[64];
    snprintf(tname, sizeof tname, "Fresh%lu", counter);
    snprintf(aname, sizeof aname, "attr_%lu", counter);
    counter++;
    PyObject *type = PyObject_CallFunction((PyObject *)&PyType_Type, "s(O){}", tname,
                                           (PyObject *)&PyBaseObject_Type);
    if (type == NULL)
        return NULL;
    PyObject *inst = PyObject_CallNoArgs(type);
    Py_DECREF(type);
    if (inst == NULL)
        return NULL;
    int has = PyObject_HasAttrString(inst, aname);
    int has_arg = PyObject_HasAttrString(arg, aname);
    PyObject *r = PyObject_CallMethod(inst, "__repr__", NULL);
    Py_DECREF(inst);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    if (has || has_arg) {
        PyErr_Format(PyExc_AttributeError, "%R unexpectedly has %s", arg, aname);
        return NULL;
    }
    PyObject *v = PyObject_GetAttrString(arg, aname);
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    Py_DECREF(v);
    Py_RETURN_TRUE;
}

static PyObject *
check(PyObject *self, PyObject *arg)
{
    if (!PyLong_Check(arg))
        return PyErr_Format(PyExc_TypeError, "check() wants an int, not %R", arg);
    return PyNumber_Negative(arg);
}

static PyObject *
alloc(PyObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "negative size %R", arg);
    char *buf = PyMem_Malloc(n ? (size_t)n : 1);
    if (buf == NULL)
        return PyErr_NoMemory();
    buf[0] = 1;
    if (n > 1)
        buf[n - 1] = 1;
    PyMem_Free(buf);
    return PyLong_FromSsize_t(n);
}

static PyObject *
describe(PyObject *self, PyObject *arg)
{
    PyObject *size = PyObject_CallMethod(arg, "__sizeof__", NULL);
    if (size == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("%R of %R bytes", arg, size);
    Py_DECREF(size);
    return r;
}

static PyObject *
parse_pair(PyObject *self, PyObject *arg)
{
    PyObject *t = PySequence_Tuple(arg);
    if (t == NULL)
        return NULL;
    if (PyTuple_GET_SIZE(t) != 2) {
        PyErr_Format(PyExc_ValueError, "expected a pair, got %R", arg);
        return NULL; /* BUG: t is never released on this path */
    }
    PyObject *r = PyTuple_Pack(2, PyTuple_GET_ITEM(t, 1), PyTuple_GET_ITEM(t, 0));
    Py_DECREF(t);
    return r;
}

/* parse_pair's clean twin (the benchmark compares campaigns with one or the other). */
static PyObject *
parse_pair_clean(PyObject *self, PyObject *arg)
{
    PyObject *t = PySequence_Tuple(arg);
    if (t == NULL)
        return NULL;
    if (PyTuple_GET_SIZE(t) != 2) {
        PyErr_Format(PyExc_ValueError, "expected a pair, got %R", arg);
        Py_DECREF(t);
        return NULL;
    }
    PyObject *r = PyTuple_Pack(2, PyTuple_GET_ITEM(t, 1), PyTuple_GET_ITEM(t, 0));
    Py_DECREF(t);
    return r;
}

static PyObject *
stash(PyObject *self, PyObject *arg)
{
    stashed = arg; /* BUG: no Py_INCREF, the caller may release it */
    Py_RETURN_NONE;
}

static PyObject *
unstash(PyObject *self, PyObject *unused)
{
    if (stashed == NULL)
        Py_RETURN_NONE;
    PyObject *o = stashed;
    stashed = NULL;
    return Py_NewRef(o);
}

static PyMethodDef methods[] = {
    {"lookup", lookup, METH_O, "fresh heap type, attribute lookups by fresh names"},
    {"check", check, METH_O, "TypeError with %R unless an int"},
    {"alloc", alloc, METH_O, "allocate n bytes"},
    {"describe", describe, METH_O, "CallMethod by name, FromFormat %R"},
    {"parse_pair", parse_pair, METH_O, "swap a pair (leaks on error)"},
    {"parse_pair_clean", parse_pair_clean, METH_O, "swap a pair"},
    {"stash", stash, METH_O, "keep a borrowed pointer"},
    {"unstash", unstash, METH_NOARGS, "return the stashed object"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "realistic", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit_realistic(void)
{
    return PyModule_Create(&module);
}
