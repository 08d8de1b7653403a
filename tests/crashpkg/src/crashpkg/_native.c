/* A package with one planted use-after-free, reached by one test of its own suite. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

/* Reads a heap block after freeing it: ASan's heap-use-after-free, on every call. */
static PyObject *
read_after_free(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long *block = malloc(4 * sizeof(long));
    if (block == NULL) {
        return PyErr_NoMemory();
    }
    block[0] = n;
    free(block);
    return PyLong_FromLong(block[0]);
}

/* The sum of a list of ints: correct. */
static PyObject *
total(PyObject *self, PyObject *arg)
{
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a list");
        return NULL;
    }
    long sum = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(arg); i++) {
        long v = PyLong_AsLong(PyList_GET_ITEM(arg, i));
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        sum += v;
    }
    return PyLong_FromLong(sum);
}

/* (x, x), with one reference too many on the tuple's first item: leaks a reference to x on
 * every call (the missing Py_DECREF of an error-path-free, ordinary path). */
static PyObject *
leaky_pair(PyObject *self, PyObject *arg)
{
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        return NULL;
    }
    Py_INCREF(arg);
    Py_INCREF(arg);
    Py_INCREF(arg); /* one too many */
    PyTuple_SET_ITEM(t, 0, arg);
    PyTuple_SET_ITEM(t, 1, arg);
    return t;
}

/* The clean twin of leaky_pair. */
static PyObject *
pair(PyObject *self, PyObject *arg)
{
    return PyTuple_Pack(2, arg, arg);
}

static PyMethodDef methods[] = {
    {"leaky_pair", leaky_pair, METH_O, "(x, x), leaking a reference to x"},
    {"pair", pair, METH_O, "(x, x)"},
    {"read_after_free", read_after_free, METH_O, "use-after-free"},
    {"total", total, METH_O, "sum of a list"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "crashpkg._native", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModule_Create(&module);
}
