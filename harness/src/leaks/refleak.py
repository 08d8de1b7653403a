# regrtest's refleak loop (see harness/src/leaks/refleak.rs); driver_prelude.py is prepended.
import copyreg, linecache, warnings
import collections.abc
from inspect import isabstract

def main():
    spec = load_spec()
    warmups, runs = spec["warmups"], spec["runs"]
    try:
        from test.libregrtest.utils import clear_caches
    except Exception:
        clear_caches = None
    try:
        from _abc import _get_dump
    except ImportError:
        _get_dump = None
    run = load_target(spec)

    # Warm the small-object caches so their first use is not counted.
    s = bytes(range(256))
    for i in range(256):
        s[i:i+1]
    [chr(i) for i in range(256)]
    list(range(-5, 257))

    fs = warnings.filters[:]
    ps = copyreg.dispatch_table.copy()
    pic = sys.path_importer_cache.copy()
    lcache = linecache.cache.copy()
    linteractive = getattr(linecache, "_interactive_cache", {}).copy()
    try:
        import zipimport
        zdc = zipimport._zip_directory_cache.copy()
    except ImportError:
        zipimport = zdc = None
    abc_classes = [c for c in (getattr(collections.abc, a) for a in collections.abc.__all__)
                   if isabstract(c)]
    abcs = {}
    if _get_dump is not None:
        for abc in abc_classes:
            for obj in abc.__subclasses__() + [abc]:
                abcs[obj] = _get_dump(obj)[0]

    def cleanup():
        warnings.filters[:] = fs
        copyreg.dispatch_table.clear()
        copyreg.dispatch_table.update(ps)
        sys.path_importer_cache.clear()
        sys.path_importer_cache.update(pic)
        linecache.cache.clear()
        linecache.cache.update(lcache)
        if hasattr(linecache, "_interactive_cache"):
            linecache._interactive_cache.clear()
            linecache._interactive_cache.update(linteractive)
        if zipimport is not None:
            zipimport._zip_directory_cache.clear()
            zipimport._zip_directory_cache.update(zdc)
        for abc in abc_classes:
            for obj in abc.__subclasses__() + [abc]:
                refs = abcs.get(obj)
                if refs is not None:
                    obj._abc_registry_clear()
                    for ref in refs:
                        sub = ref()
                        if sub is not None:
                            obj.register(sub)
                obj._abc_caches_clear()
        if clear_caches is not None:
            clear_caches()
        if hasattr(sys, "_clear_internal_caches"):
            sys._clear_internal_caches()
        elif hasattr(sys, "_clear_type_cache"):
            sys._clear_type_cache()
        # test.support.gc_collect(): several passes, finalizers can free more.
        gc.collect(); gc.collect(); gc.collect()

    def interned_immortal():
        # 3.12+: strings interned during a run are immortal and live until shutdown. Their
        # references are already invisible (sys.gettotalrefcount() excludes immortal objects:
        # Py_INCREF/Py_DECREF do not touch _Py_RefTotal for them), but their memory blocks are
        # not, so they are subtracted from getallocatedblocks() as regrtest does.
        try:
            return sys.getunicodeinternedsize(_only_immortal=True)
        except (AttributeError, TypeError):
            return 0

    def fd_count():
        try:
            return len(os.listdir("/proc/self/fd"))
        except OSError:
            return 0

    # Pool ints (regrtest bpo-31217) and preallocate, so bookkeeping allocates no new blocks.
    int_pool = {v: v for v in range(-1000, 1000)}
    total = warmups + runs
    refs, blocks, fds = [0] * total, [0] * total, [0] * total
    failures, errors = [0] * total, []

    cleanup()
    rc_before = sys.gettotalrefcount()
    alloc_before = sys.getallocatedblocks() - interned_immortal()
    fd_before = fd_count()
    for i in range(total):
        try:
            result = run()
            if result is not None and hasattr(result, "failures"):
                failures[i] = len(result.failures) + len(result.errors)
                if failures[i] and not errors:
                    errors.append("".join(t for _, t in (result.failures + result.errors)[:1]))
        except BaseException as e:
            failures[i] = 1
            if not errors:
                import traceback
                errors.append("".join(traceback.format_exception(e)))
        result = None
        cleanup()
        alloc_after = sys.getallocatedblocks() - interned_immortal()
        rc_after = sys.gettotalrefcount()
        fd_after = fd_count()
        refs[i] = int_pool.setdefault(rc_after - rc_before, rc_after - rc_before)
        blocks[i] = int_pool.setdefault(alloc_after - alloc_before, alloc_after - alloc_before)
        fds[i] = int_pool.setdefault(fd_after - fd_before, fd_after - fd_before)
        rc_before, alloc_before, fd_before = rc_after, alloc_after, fd_after
        print("run %d/%d: refs %+d blocks %+d fds %+d" % (i + 1, total, refs[i], blocks[i], fds[i]),
              file=sys.stderr, flush=True)
    write_result({"refs": refs, "blocks": blocks, "fds": fds, "failures": failures,
                  "errors": errors, "clear_caches": clear_caches is not None,
                  "version": sys.version.split()[0]})

main()
