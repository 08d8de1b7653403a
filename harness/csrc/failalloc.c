/* Allocation-failure injection (issue 20): wraps CPython's three allocator domains (RAW, MEM,
 * OBJ) with PyMem_SetAllocator, chaining to the allocators installed before (so ASan, the
 * debug hooks and the variant's own allocator still see every block), and makes allocations
 * fail on demand: while armed, allocation number `first` .. `last` (counted from 1 over all
 * three domains; `last` 0 = every one from `first` on) returns NULL. Disarmed, the wrappers
 * only forward (one predictable branch per call).
 *
 * The harness (harness/src/failalloc.rs) arms the wrappers around one call and disarms them
 * when it returns; reproducers (harness/src/repro/) paste this file and do the same.
 * One thread drives the interpreter, so the counters are plain (RAW calls from other threads
 * may be counted, never corrupted: every update is a single-word store by the driving thread). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <execinfo.h>
#include <stdio.h>
#include <string.h>

/* The allocators before ours, one per domain (the ctx of our wrappers). */
static PyMemAllocatorEx capisan_fa_prev[3];
static int capisan_fa_installed;
static volatile int capisan_fa_armed;
static unsigned long capisan_fa_count, capisan_fa_first, capisan_fa_last, capisan_fa_failed;
/* Return addresses of the first failed allocation (backtrace(3)), for the finding. */
#define CAPISAN_FA_FRAMES 24
static void *capisan_fa_stack[CAPISAN_FA_FRAMES];
static int capisan_fa_depth;

/* Whether this allocation must fail: counts it while armed. */
static int capisan_fa_should_fail(void) {
    if (!capisan_fa_armed)
        return 0;
    unsigned long n = ++capisan_fa_count;
    if (n < capisan_fa_first || (capisan_fa_last != 0 && n > capisan_fa_last))
        return 0;
    if (capisan_fa_failed++ == 0)
        capisan_fa_depth = backtrace(capisan_fa_stack, CAPISAN_FA_FRAMES);
    return 1;
}

static void *capisan_fa_malloc(void *ctx, size_t size) {
    PyMemAllocatorEx *prev = ctx;
    return capisan_fa_should_fail() ? NULL : prev->malloc(prev->ctx, size);
}
static void *capisan_fa_calloc(void *ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx *prev = ctx;
    return capisan_fa_should_fail() ? NULL : prev->calloc(prev->ctx, nelem, elsize);
}
/* A failed realloc leaves the block as it was, as realloc(3) does. */
static void *capisan_fa_realloc(void *ctx, void *ptr, size_t size) {
    PyMemAllocatorEx *prev = ctx;
    return capisan_fa_should_fail() ? NULL : prev->realloc(prev->ctx, ptr, size);
}
static void capisan_fa_free(void *ctx, void *ptr) {
    PyMemAllocatorEx *prev = ctx;
    prev->free(prev->ctx, ptr);
}

/* Wrap the three domains once (PyMem_GetAllocator + PyMem_SetAllocator, chaining). Valid after
 * Py_Initialize: the new allocators wrap the old ones, as the C-API documentation requires. */
void capisan_failalloc_install(void) {
    if (capisan_fa_installed)
        return;
    const PyMemAllocatorDomain domains[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (int d = 0; d < 3; d++) {
        PyMem_GetAllocator(domains[d], &capisan_fa_prev[d]);
        PyMemAllocatorEx mine = {&capisan_fa_prev[d], capisan_fa_malloc, capisan_fa_calloc,
                                 capisan_fa_realloc, capisan_fa_free};
        PyMem_SetAllocator(domains[d], &mine);
    }
    capisan_fa_installed = 1;
}

int capisan_failalloc_installed(void) { return capisan_fa_installed; }

/* Start counting from 0; fail allocations first..last (last 0: every one from first on). */
void capisan_failalloc_arm(unsigned long first, unsigned long last) {
    capisan_fa_count = 0;
    capisan_fa_failed = 0;
    capisan_fa_depth = 0;
    capisan_fa_first = first;
    capisan_fa_last = last;
    capisan_fa_armed = 1;
}

/* Stop failing; *count = allocations seen while armed, *failed = how many of them failed. */
void capisan_failalloc_disarm(unsigned long *count, unsigned long *failed) {
    capisan_fa_armed = 0;
    *count = capisan_fa_count;
    *failed = capisan_fa_failed;
}

int capisan_failalloc_is_armed(void) { return capisan_fa_armed; }

/* The stack of the first failed allocation since the last arm: return addresses, innermost
 * first (this file's own frames included); returns how many were written. */
int capisan_failalloc_stack(void **out, int max) {
    int n = capisan_fa_depth < max ? capisan_fa_depth : max;
    memcpy(out, capisan_fa_stack, (size_t)n * sizeof(void *));
    return n;
}
