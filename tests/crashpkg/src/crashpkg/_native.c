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

static PyMethodDef methods[] = {
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
