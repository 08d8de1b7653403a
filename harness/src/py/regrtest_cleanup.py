# regrtest's cleanup between -R runs (Lib/test/libregrtest/refleak.py: dash_R_cleanup), as the
# harness needs it inside a fuzzing process: clear every cache libregrtest clears, then
# sys._clear_internal_caches() (the type attribute cache), then collect like
# test.support.gc_collect(). Bounded caches filled by the code under test (type cache entries
# for fresh attribute names, re/struct/abc caches, linecache) are then gone before a
# measurement, so they never read as a leak.
#
# The cache list is libregrtest's own (test.libregrtest.utils.clear_caches) when the stdlib has
# its test package; a standard library without it (a fuzzer bundled by `fuzz-build`) gets the
# subset below, which covers what the harness's own ops can fill.
import gc as _regrtest_gc
import sys as _regrtest_sys

_regrtest_clear_caches = None


def _regrtest_fallback_clear_caches():
    for name, clear in (
        ('re', lambda m: m.purge()),
        ('struct', lambda m: m._clearcache()),
        ('linecache', lambda m: m.clearcache()),
    ):
        m = _regrtest_sys.modules.get(name)
        if m is not None:
            clear(m)


def _regrtest_abc_caches_clear():
    abc = _regrtest_sys.modules.get('collections.abc')
    if abc is None:
        return
    import inspect
    for name in abc.__all__:
        cls = getattr(abc, name, None)
        if cls is None or not inspect.isabstract(cls):
            continue
        for obj in cls.__subclasses__() + [cls]:
            obj._abc_caches_clear()


def regrtest_cleanup():
    """Clear caches and collect, as regrtest does after each -R run."""
    global _regrtest_clear_caches
    if _regrtest_clear_caches is None:
        try:
            from test.libregrtest.utils import clear_caches
        except ImportError:
            clear_caches = _regrtest_fallback_clear_caches
        _regrtest_clear_caches = clear_caches
    _regrtest_abc_caches_clear()
    _regrtest_clear_caches()
    # capisan's addition: encodings' lookup cache keeps every distinct unknown encoding name
    # (str.encode(name) with a fresh name each run, e.g. a repr with an address, grows it by
    # one entry per run). regrtest never meets that; a fuzzer does.
    encodings = _regrtest_sys.modules.get('encodings')
    if encodings is not None and isinstance(getattr(encodings, '_cache', None), dict):
        encodings._cache.clear()
    clear_internal = getattr(_regrtest_sys, '_clear_internal_caches', None)
    if clear_internal is None:  # 3.11, 3.12
        clear_internal = _regrtest_sys._clear_type_cache
    clear_internal()
    # test.support.gc_collect(): three passes, finalizers can free more.
    _regrtest_gc.collect()
    _regrtest_gc.collect()
    _regrtest_gc.collect()


# What the objects a call touched hold (capisan's addition): a method that stores its argument
# (list.append, a registry, a cache on the instance) raises the argument's refcount and the
# total refcount on every call, with nothing leaked: the receiver holds the reference. The leak
# verdict subtracts the references reachable from the call's receiver and arguments: every
# reference (edge) the objects reachable through the garbage collector's view (tp_traverse,
# gc.get_referents) hold, and how many of them point at each of those objects. Types, modules
# and functions are not followed (their graph is the whole interpreter); references to
# immortal objects are not counted (they do not change the total refcount). The same walk sums
# the objects' sizes: a method that grows its receiver (FrozenList.extend(self, self) doubles
# a list each call) leaves more memory allocated on every call, held, not leaked; the raw-memory
# verdict subtracts it.
_regrtest_not_followed = (type, type(_regrtest_sys), type(regrtest_cleanup))
_REGRTEST_IMMORTAL = 1 << 29
_REGRTEST_HELD_LIMIT = 100_000


def _regrtest_sizeof(o):
    """sys.getsizeof, without running a class's own Python __sizeof__ (an evil one may raise,
    lie or mutate)."""
    if type(getattr(type(o), '__sizeof__', None)) is type(regrtest_cleanup):
        return object.__sizeof__(o)
    try:
        return _regrtest_sys.getsizeof(o, 0)
    except Exception:
        return 0


def held_refs(objs, sizes=True):
    """(references held by everything `objs` reach, [how many point at each of objs],
    bytes of everything `objs` reach as sys.getsizeof counts them, 0 unless `sizes`)."""
    index = {id(o): k for k, o in enumerate(objs)}
    counts = [0] * len(objs)
    seen = set()
    sized = set()
    nbytes = 0
    stack = list(objs)
    edges = 0
    getrefcount = _regrtest_sys.getrefcount
    while stack and len(seen) < _REGRTEST_HELD_LIMIT:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, _regrtest_not_followed):
            continue
        if sizes and id(o) not in sized:
            sized.add(id(o))
            nbytes += _regrtest_sizeof(o)
        for r in _regrtest_gc.get_referents(o):
            if getrefcount(r) < _REGRTEST_IMMORTAL:
                edges += 1
                k = index.get(id(r))
                if k is not None:
                    counts[k] += 1
            if (id(r) not in seen and _regrtest_gc.is_tracked(r)
                    and not isinstance(r, _regrtest_not_followed)):
                stack.append(r)
            elif sizes and id(r) not in sized and not isinstance(r, _regrtest_not_followed):
                sized.add(id(r))
                nbytes += _regrtest_sizeof(r)
    return edges, counts, nbytes
