/* Allocation-failure injection in the reproducer, as capisan does it (pasted after the
 * allocator wrappers of harness/csrc/failalloc.c and before the runtime): `capisan_fail_next`
 * (a FailNext op) arms the wrappers around every call of the next extension-call op — the first
 * call and its repeats, as the harness arms them — and `capisan_fail_done` ends that op. The
 * calls go through PyObject_Call with an argument tuple built before arming, as the harness
 * makes them, so allocation N is the same allocation in both. */
#include <stdarg.h>

static unsigned long capisan_next_first, capisan_next_last;
static int capisan_next_pending;

__attribute__((unused)) static void capisan_fail_next(unsigned long first, unsigned long last) {
    capisan_next_first = first;
    capisan_next_last = last;
    capisan_next_pending = 1;
}

__attribute__((unused)) static void capisan_fail_done(void) { capisan_next_pending = 0; }

static PyObject *capisan_fa_call(PyObject *f, PyObject *args) {
    if (!capisan_next_pending)
        return PyObject_Call(f, args, NULL);
    unsigned long made, failed;
    capisan_failalloc_arm(capisan_next_first, capisan_next_last);
    PyObject *r = PyObject_Call(f, args, NULL);
    capisan_failalloc_disarm(&made, &failed);
    fprintf(stderr,
            "capisan repro: allocations %lu..%lu of this call fail (0 = no end): it made %lu, "
            "%lu failed\n",
            capisan_next_first, capisan_next_last, made, failed);
    return r;
}

__attribute__((unused)) static PyObject *capisan_fa_vectorcall(PyObject *f, PyObject *const *argv,
                                                               size_t n, PyObject *kwnames) {
    (void)kwnames;
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    if (!t)
        return NULL;
    for (size_t k = 0; k < n; k++)
        PyTuple_SET_ITEM(t, (Py_ssize_t)k, Py_NewRef(argv[k]));
    PyObject *r = capisan_fa_call(f, t);
    Py_DECREF(t);
    return r;
}

__attribute__((unused)) static PyObject *capisan_fa_call_objargs(PyObject *f, ...) {
    PyObject *argv[8];
    size_t n = 0;
    va_list ap;
    va_start(ap, f);
    for (PyObject *a = va_arg(ap, PyObject *); a != NULL && n < 8; a = va_arg(ap, PyObject *))
        argv[n++] = a;
    va_end(ap);
    return capisan_fa_vectorcall(f, argv, n, NULL);
}

/* Every extension call of the runtime and of main() below goes through the wrappers. */
#define PyObject_Vectorcall(f, a, n, k) capisan_fa_vectorcall(f, a, n, k)
#define PyObject_CallFunctionObjArgs capisan_fa_call_objargs
