# regrtest's -R procedure (CPython 3.13, Lib/test/libregrtest/refleak.py) on one call: warm-up
# calls that fill caches and freelists, then measured calls, with the internal caches cleared and
# a full collection around each; a leak only if every measured call grew the total refcount by at
# least one (regrtest's check_rc_deltas). Appended to repro.py when the finding is a leak.
LEAK_WARMUPS = 3
LEAK_RUNS = 3


def check_leak(name, func, args):
    import gc
    import sys

    clear_caches = getattr(sys, "_clear_internal_caches", None) or sys._clear_type_cache

    def settle():
        clear_caches()
        gc.collect()

    deltas = []
    for k in range(LEAK_WARMUPS + LEAK_RUNS):
        settle()
        before = sys.gettotalrefcount()
        try:
            func(*args)
        except Exception:
            pass
        settle()
        delta = sys.gettotalrefcount() - before
        if k >= LEAK_WARMUPS:
            deltas.append(delta)
    print(
        "%s: total refcount delta of each measured call (after %d warm-up calls): %s"
        % (name, LEAK_WARMUPS, deltas),
        file=sys.stderr,
    )
    if all(d >= 1 for d in deltas):
        sys.exit("REFERENCE LEAK: every measured call of %s leaked" % name)
