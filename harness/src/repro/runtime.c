/* Standalone reproducer written by capisan. Build and run with ./build.sh (it reads the
 * variant's manifest). Slots s[i] hold object references; own[i] counts the strong references
 * this program owns in slot i (0 = borrowed or empty). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>

/* The 3.12/3.13 functions this program and the ops below use, on older CPython lines: the same
 * backports (same contracts) as capisan's shim, harness/csrc/shim.c. */
#if PY_VERSION_HEX < 0x030C0000
#define _Py_IsImmortal(o) 0 /* no immortal objects before 3.12 */
#ifdef Py_REF_DEBUG
#define _Py_GetGlobalRefTotal() _Py_GetRefTotal()
#endif
static inline PyObject *PyErr_GetRaisedException(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}
#endif
#if PY_VERSION_HEX < 0x030D0000
static inline int PyDict_GetItemRef(PyObject *d, PyObject *key, PyObject **result) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    Py_XINCREF(v);
    *result = v;
    return v != NULL ? 1 : (PyErr_Occurred() ? -1 : 0);
}
static inline int PyModule_Add(PyObject *m, const char *name, PyObject *value) {
    int r = PyModule_AddObjectRef(m, name, value);
    Py_XDECREF(value);
    return r;
}
#endif

/* capisan's slot count (harness/src/ops/mod.rs NSLOTS; a unit test keeps them equal). */
#define NSLOTS 8

static PyObject *s[NSLOTS];
static int own[NSLOTS];
static PyObject *cls_Plain, *cls_Evil, *make_callable, *ext_module;

/* tp_traverse audit at an object's death, as capisan's GC check does it: hold every object the
 * victim's tp_traverse visits (so none dies and cascades) and every other owned GC object in a
 * slot, release the victim, and compare each candidate's refcount drop with its visit count. */
#define MAX_VISITS 256
struct visits { PyObject *o[MAX_VISITS]; int n; };
static int collect_visit(PyObject *o, void *arg) {
    struct visits *v = arg;
    if (o && v->n < MAX_VISITS) v->o[v->n++] = o;
    return 0;
}
static void release_ref(PyObject *o) {
    if (Py_REFCNT(o) != 1 || !PyObject_IS_GC(o) || _Py_IsImmortal(o)) { Py_DECREF(o); return; }
    struct visits v = {.n = 0};
    traverseproc t = Py_TYPE(o)->tp_traverse;
    if (t) t(o, collect_visit, &v);
    for (int k = 0; k < v.n; k++) Py_INCREF(v.o[k]);
    PyObject *cand[NSLOTS]; Py_ssize_t before[NSLOTS]; int nc = 0;
    for (int i = 0; i < NSLOTS; i++) {
        int seen = 0;
        for (int j = 0; j < nc; j++) seen |= cand[j] == s[i];
        if (own[i] > 0 && s[i] && s[i] != o && !seen && PyObject_IS_GC(s[i]) && !_Py_IsImmortal(s[i])) {
            Py_INCREF(s[i]);
            cand[nc] = s[i];
            before[nc++] = Py_REFCNT(s[i]);
        }
    }
    const char *tname = Py_TYPE(o)->tp_name;
    Py_DECREF(o);
    int bad = 0;
    for (int j = 0; j < nc; j++) {
        Py_ssize_t released = before[j] - Py_REFCNT(cand[j]), visited = 0;
        for (int k = 0; k < v.n; k++) visited += v.o[k] == cand[j];
        if (released != visited) {
            fprintf(stderr, "GC TRAVERSAL BUG: %s released %zd reference(s) to a %s that tp_traverse visited %zd time(s) (missing Py_VISIT)\n",
                    tname, released, Py_TYPE(cand[j])->tp_name, visited);
            bad = 1;
        }
        Py_DECREF(cand[j]);
    }
    for (int k = 0; k < v.n; k++) Py_DECREF(v.o[k]);
    if (bad) exit(1);
}

/* Store a call's result in slot d; release what d owned before (after the call, as capisan does). */
static void put(int d, PyObject *r, int is_new) {
    PyObject *old = s[d];
    int n = own[d];
    s[d] = r;
    own[d] = (r != NULL && is_new) ? 1 : 0;
    while (n-- > 0) release_ref(old);
}
/* Slot i gave one reference away to a stealing call. */
__attribute__((unused)) static void stolen(int i, int rc) {
    if (--own[i] == 0 && rc != 0) s[i] = NULL;
}
static void release_all(int i) {
    PyObject *o = s[i];
    int n = own[i];
    own[i] = 0;
    s[i] = NULL;
    while (n-- > 0) release_ref(o);
}
static void done(int op) {
    if (PyErr_Occurred()) {
        fprintf(stderr, "op #%d raised (as in capisan): ", op);
        PyErr_Print();
    }
}
/* gdb's watch.gdb breaks here to set a watchpoint on the victim's refcount. */
__attribute__((noinline)) void capisan_victim_ready(PyObject *victim) { (void)victim; }

/* Reference leaks, measured with regrtest's -R procedure (CPython 3.13,
 * Lib/test/libregrtest/refleak.py): LEAK_WARMUPS calls that fill caches and freelists, then
 * LEAK_RUNS measured calls; around every call the internal caches are cleared and the GC
 * collects, as regrtest does between runs. A leak only if every measured call grew the total
 * refcount by at least one (regrtest's check_rc_deltas): a bounded cache grows once, a leak every
 * time. The caller looks the callable up once, before measuring: a lookup inside the measured
 * call would be a new reference of its own. */
#define LEAK_WARMUPS 3
#define LEAK_RUNS 3

/* sys._clear_internal_caches (3.13; sys._clear_type_cache before), then a full collection. */
static void settle(PyObject *clear_caches) {
    if (clear_caches) {
        PyObject *r = PyObject_CallNoArgs(clear_caches);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyGC_Collect();
}

/* Call `callable(args[0..nargs])` LEAK_WARMUPS + LEAK_RUNS times, releasing each result and
 * clearing each exception; print the measured deltas and return 1 on a leak. `callable` and
 * `args` are borrowed and must stay alive for the whole measurement. */
__attribute__((unused)) static int check_leak(const char *name, PyObject *callable, PyObject *const *args, size_t nargs) {
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *clear_caches = NULL;
    if (sys) {
        clear_caches = PyObject_GetAttrString(sys, "_clear_internal_caches");
        if (!clear_caches) {
            PyErr_Clear();
            clear_caches = PyObject_GetAttrString(sys, "_clear_type_cache");
        }
    }
    PyErr_Clear();
    Py_ssize_t delta[LEAK_RUNS];
    int leaked = 1;
    for (int k = 0; k < LEAK_WARMUPS + LEAK_RUNS; k++) {
        settle(clear_caches);
        Py_ssize_t before = _Py_GetGlobalRefTotal();
        PyObject *x = PyObject_Vectorcall(callable, args, nargs, NULL);
        Py_XDECREF(x);
        PyErr_Clear();
        settle(clear_caches);
        Py_ssize_t d = _Py_GetGlobalRefTotal() - before;
        if (k >= LEAK_WARMUPS) {
            delta[k - LEAK_WARMUPS] = d;
            leaked &= d >= 1;
        }
    }
    fprintf(stderr, "%s: total refcount delta of each measured call (after %d warm-up calls): [",
            name, LEAK_WARMUPS);
    for (int k = 0; k < LEAK_RUNS; k++) fprintf(stderr, k ? ", %zd" : "%zd", delta[k]);
    fprintf(stderr, "]\n");
    Py_XDECREF(clear_caches);
    Py_XDECREF(sys);
    if (leaked) fprintf(stderr, "REFERENCE LEAK: every measured call of %s leaked\n", name);
    return leaked;
}

