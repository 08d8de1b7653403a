
# --- capisan's Python API vocabulary (appended to the prelude) -------------------------------
# What the API ops build and call: a value vocabulary one byte selects (boundary numbers, odd
# strings, buffers, containers, subclass instances, file-likes, iterators, objects with evil
# dunders), keyword names of the callables under test, methods of any object the sequence
# holds, protocol operations, and evil subclasses of the extension's own types. Evil hooks act
# on "victims": the receiver and arguments of the call that is running (set by api_call /
# method_call), so a hook can clear, close or resize the very object the C code works on.

import sys as _sys

_victims = []

try:
    _capisan_call
except NameError:
    # Outside the harness (a plain python running the prelude): a plain call. The harness
    # defines it in C (capisan::pycall) so a C function's NULL without an exception becomes a
    # finding instead of ceval's fatal assertion.
    def _capisan_call(f, args, kwargs):
        return f(*args, **(kwargs or {}))

_big = {}

# CPython leaks the result of a __hash__ that returns a non-int (gh-140406, fixed in 3.13.10 and
# 3.14.1; capisan found it again in 3.13.5). On those versions the vocabulary's bad __hash__
# results are immortal (None), so the interpreter's own leak is not blamed on whatever op or
# extension function hashed the value; the extension's handling of the failure is still
# exercised.
# Before 3.12 nothing is immortal, so any returned non-int leaks a counted reference: there the
# bad __hash__ raises the TypeError the interpreter would raise, which every caller sees alike.
_v = _sys.version_info[:3]
_HASH_RESULT_LEAKS = _v < (3, 13, 10) or (3, 14, 0) <= _v < (3, 14, 1)
_BAD_HASH = None if _HASH_RESULT_LEAKS else 'not an int'


def _bad_hash():
    """What a __hash__ that does not return an int gives (see _HASH_RESULT_LEAKS)."""
    if _v < (3, 12):
        raise TypeError('__hash__ method should return an integer')
    return _BAD_HASH


def _victim(k):
    return _victims[k % len(_victims)] if _victims else None


def _act(k):
    """The side effect of an evil hook, chosen by k: on a victim of the running call."""
    v = _victim(k >> 2)
    a = k & 3
    try:
        if a == 0:
            for name in ('clear', 'close'):
                f = getattr(v, name, None)
                if callable(f):
                    f()
                    break
        elif a == 1:
            if isinstance(v, bytearray):
                v.extend(b'x' * 64)
            elif isinstance(v, list):
                v.extend([None] * 16)
            elif isinstance(v, dict):
                v.update({('k', i): i for i in range(16)})
        elif a == 2:
            if isinstance(v, (bytearray, list)):
                del v[:]
            elif hasattr(v, '__dict__'):
                v.__dict__.clear()
        else:
            raise ValueError('capisan: evil hook')
    except (ValueError, BufferError, TypeError, AttributeError, RuntimeError):
        if a == 3:
            raise


def _misbehave(how, good, wrong, exc):
    """What an evil hook returns, by the low bits of how: the right value, the right value
    after mutating a victim, a value of the wrong type, or an exception."""
    h = how & 3
    if h == 0:
        return good
    if h == 1:
        _act(how >> 2)
        return good
    if h == 2:
        return wrong
    raise exc


class _Evil:
    """An object whose dunders return wrong types, raise, or mutate a victim."""

    def __init__(self, how):
        self.how = how

    def _go(self, good):
        return _misbehave(self.how, good, 'not the right type', ValueError('capisan: evil dunder'))

    def __index__(self):
        return self._go(2 ** 31)

    def __int__(self):
        return self._go(-1)

    def __float__(self):
        return self._go(1e308)

    def __len__(self):
        return self._go(2 ** 31 - 1)

    def __length_hint__(self):
        return self._go(10 ** 6)

    def __hash__(self):
        if self.how & 3 == 2:
            return _bad_hash()
        return self._go(7)

    def __eq__(self, other):
        return self._go(True)

    def __lt__(self, other):
        return self._go(False)

    def __iter__(self):
        _act(self.how >> 2)
        return iter([1, 'x', self])

    def __getitem__(self, i):
        return self._go(i)

    def __fspath__(self):
        return self._go('/nonexistent/capisan')

    def __buffer__(self, flags):
        _act(self.how >> 2)
        return memoryview(b'capisan')

    def __del__(self):
        if self.how & 16:
            _victims.clear()


class _HashNotInt:
    def __hash__(self):
        return _bad_hash()


class _EvilFile:
    """A file-like whose read/write/readinto/seek misbehave by `how`."""

    def __init__(self, how):
        self.how = how
        self.data = bytearray(b'capisan file data\n' * 4)

    def _go(self, good):
        return _misbehave(self.how, good, 'wrong type', OSError('capisan: evil file'))

    def read(self, n=-1):
        return self._go(bytes(self.data[: n if n is not None and n >= 0 else None]))

    def readline(self, n=-1):
        return self._go(b'capisan line\n')

    def write(self, b):
        return self._go(len(b))

    def readinto(self, buf):
        return self._go(2 ** 31)

    def seek(self, pos, whence=0):
        return self._go(-1)

    def tell(self):
        return self._go(0)

    def flush(self):
        return self._go(None)

    def close(self):
        return self._go(None)


def _gen(how):
    yield 1
    _act(how)
    yield 'two'
    if how & 1:
        raise ValueError('capisan: generator')
    yield bytearray(b'three')


def _big_str(n, ch='a'):
    key = ('s', n, ch)
    if key not in _big:
        _big[key] = ch * n
    return _big[key]


def _subclass_values():
    class SubStr(str):
        pass

    class SubInt(int):
        pass

    class SubFloat(float):
        pass

    class SubBytes(bytes):
        pass

    class SubList(list):
        pass

    class SubDict(dict):
        pass

    class SubTuple(tuple):
        pass

    class SubSet(set):
        pass

    def tag(o):
        o.extra = 'capisan'
        return o

    return [
        lambda: tag(SubStr('sub')),
        lambda: tag(SubInt(2 ** 31)),
        lambda: tag(SubFloat(-0.0)),
        lambda: tag(SubBytes(b'sub\0')),
        lambda: tag(SubList([1, 2, 3])),
        lambda: tag(SubDict(a=1)),
        lambda: tag(SubTuple((1, 2))),
        lambda: tag(SubSet({1, 2})),
    ]


def _self_list():
    lst = [1]
    lst.append(lst)
    return lst


def _self_dict():
    d = {}
    d['self'] = d
    return d


def _released_view():
    m = memoryview(bytearray(b'released'))
    m.release()
    return m


def _suspended_frame():
    """The frame of a suspended generator: no caller frame (f_back is None while it is not
    running), and its globals and builtins are its own throwaway dicts, so ops on the frame's
    attributes cannot reach the harness's namespace."""
    g = {'__builtins__': {}}
    exec('def gen():\n    yield 1\n    yield 2\n', g)
    it = g['gen']()
    next(it)
    return it.gi_frame


def _value_factories():
    import array
    ints = [0, 1, -1, 2 ** 7, 2 ** 8, 2 ** 15, 2 ** 16, 2 ** 31 - 1, 2 ** 31, 2 ** 32,
            2 ** 63 - 1, -2 ** 63, 2 ** 64, 10 ** 100, -2 ** 31, 255,
            2, 3, 4, 7, 8, 16, 17, 32, 64, 100, 1000, 4096, 65535]
    floats = [float('nan'), float('inf'), float('-inf'), -0.0, 5e-324, 1e308, 0.5]
    strs = ['', 'ascii', 'n\u00f6n-\u00e4scii \u20ac', '\ud800 lone', 'nul\0inside', '\U0001f600']
    out = [(lambda v=v: v) for v in ints + floats + strs]
    out += [
        lambda: True, lambda: False, lambda: None, lambda: Ellipsis, lambda: NotImplemented,
        lambda: b'', lambda: b'bytes\0\xff', lambda: bytearray(b'bytearray'),
        lambda: _big_str(100 * 1024), lambda: _big_str(1 << 20, 'b'),
        lambda: _big_str(100 * 1024, '\u20ac'), lambda: b'z' * (100 * 1024),
        lambda: bytearray(1 << 20),
        lambda: memoryview(b'0123456789abcdef'),
        lambda: memoryview(bytearray(b'0123456789abcdef'))[2:10],
        lambda: memoryview(bytearray(b'0123456789abcdef'))[::2],
        lambda: memoryview(b'0123456789abcdef').toreadonly(),
        lambda: memoryview(bytearray(16)).cast('B', (4, 4)),
        lambda: memoryview(bytearray(b'abcdefgh')).cast('i'),
        _released_view,
        lambda: array.array('d', [1.0, 2.0, float('nan')]),
        lambda: array.array('b', b'\x01\xff'),
        lambda: [], lambda: [1, [2, [3, []]]], lambda: (), lambda: (1, 'a', None),
        lambda: {}, lambda: {'a': 1, 2: 'b'}, lambda: set(), lambda: frozenset({1}),
        _self_list, _self_dict,
        lambda: iter([1, 2, 3]), lambda: _gen(0), lambda: _gen(1), lambda: _gen(5),
        # Big bounds, few items: a range of 2**31 items would make count()/index() run for
        # minutes, a harness-made hang.
        lambda: range(2 ** 63 - 3, 2 ** 63 + 3), lambda: range(0, 2 ** 70, 2 ** 65),
        lambda: 1 + 2j, lambda: slice(None, None, -1),
        lambda: object(), lambda: _HashNotInt(), lambda: Plain(),
    ]
    out += _subclass_values()
    # 16 of each kind of evil object, so that the whole vocabulary fits the 7 bits a one-byte
    # call argument names (Slot::value_code).
    out += [(lambda h=h: _Evil(h)) for h in range(16)]
    out += [(lambda h=h: _EvilFile(h)) for h in range(16)]
    # Exceptions (to raise, chain, group) and a frame: the last three codes of the 7 bits.
    out += [lambda: ValueError('capisan', 1), lambda: [KeyError('k'), OSError(2, 'x')],
            _suspended_frame]
    return out


_VALUES = _value_factories()


def make_value(code):
    """The vocabulary value `code` selects (a fresh object unless it is immutable)."""
    return _VALUES[code % len(_VALUES)]()


def value_count():
    return len(_VALUES)


def _signature_line(f):
    """The docstring's first line as a one-item list when it is a signature, `name(...)` as
    CPython's own docstrings start; else []. Prose ("Uses lst[0] after calling f().") is not
    read as one."""
    doc = getattr(f, '__doc__', None)
    name = getattr(f, '__name__', None)
    # A class may define __doc__ or __name__ as a property (wrapt's ObjectProxy): the class
    # attribute is then a descriptor, not a string.
    if not isinstance(doc, str) or not isinstance(name, str):
        return []
    doc = doc.strip().splitlines()
    if doc and doc[0].startswith(name + '(') and ')' in doc[0]:
        return doc[:1]
    return []


def _params(f):
    """(positional names, keyword names) of a callable: inspect.signature (which reads
    __text_signature__ too), else the docstring's first line, else none known."""
    import inspect
    try:
        sig = inspect.signature(f)
    except Exception:  # TypeError, ValueError; anything from an odd callable's attributes
        sig = None
    if sig is not None:
        pos, kw = [], []
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                pos.append(p.name)
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                kw.append(p.name)
        return pos, kw
    doc = _signature_line(f)
    if doc:
        inner = doc[0][doc[0].index('(') + 1: doc[0].rindex(')')]
        names = []
        for part in inner.replace('[', ',').replace(']', ',').split(','):
            part = part.strip().lstrip('*').split('=')[0].strip()
            if part.isidentifier() and part not in ('self', '/'):
                names.append(part)
        return names, names
    return [], []


def _arity(f):
    """(fewest, most) arguments a callable takes, at most 3 (keyword-only parameters count in
    the most: a call passes them by keyword): from inspect.signature, else the docstring's
    first line (`name(a, b=1, *, c=2)`), else (0, 3)."""
    import inspect
    try:
        sig = inspect.signature(f)
    except Exception:  # TypeError, ValueError; anything from an odd callable's attributes
        sig = None
    if sig is not None:
        lo = hi = 0
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                hi += 1
                if p.default is p.empty:
                    lo += 1
            elif p.kind == p.VAR_POSITIONAL:
                hi = 3
            elif p.kind == p.KEYWORD_ONLY:
                hi += 1
        return min(lo, 3), min(max(hi, lo), 3)
    doc = _signature_line(f)
    if doc:
        inner = doc[0][doc[0].index('(') + 1: doc[0].index(')')]
        lo = hi = 0
        kwonly = False
        for part in inner.replace('[', ',').replace(']', ',').split(','):
            part = part.strip()
            if part in ('*', '/', '') or part.startswith('**'):
                kwonly = kwonly or part == '*'
                continue
            if kwonly:
                hi += 1
                continue
            if part.startswith('*'):
                hi = 3
                continue
            hi += 1
            if '=' not in part and '[' not in inner:
                lo += 1
        return min(lo, 3), min(max(hi, lo), 3)
    return 0, 3


def ext_arities(callables):
    """(fewest, most) positional arguments of each (qualname, callable) pair, in order."""
    return [_arity(f) for _, f in callables]


# (type, method name) -> (arity, keyword names): inspect.signature is slow, and a campaign
# calls the same few methods millions of times.
_method_info = {}


def _method_info_of(recv, name, attr):
    key = (type(recv), name)
    info = _method_info.get(key)
    if info is None:
        info = (_arity(attr), _params(attr)[1]) if callable(attr) else ((0, 0), [])
        _method_info[key] = info
    return info


def method_arity(recv, idx):
    name = method_name(recv, idx)
    attr = getattr(recv, name, None) if name else None
    return _method_info_of(recv, name, attr)[0]


def ext_keywords(callables):
    """Keyword names of each (qualname, callable) pair, in order."""
    return [_params(f)[1] for _, f in callables]


def evil_subclasses(modname, callables):
    """For each subclassable class of the extension and each of its public methods (the hooks
    its C code may call back), subclasses overriding that one method to raise, return a wrong
    type, or mutate a victim and then defer to the base."""
    out = []
    for qual, cls in callables:
        if not isinstance(cls, type) or not (cls.__flags__ & (1 << 10)):
            continue
        hooks = sorted(n for n, v in vars(cls).items()
                       if callable(v) and not n.startswith('__') and not isinstance(v, type))
        # One subclass per (hook, behaviour), so the other methods stay the C ones that call
        # the overridden hook back.
        for name in hooks[:8]:
            for style in ('raise', 'wrong', 'mutate'):
                def hook(self, *a, _n=name, _s=style, _c=cls, **k):
                    if _s == 'raise':
                        raise ValueError('capisan: evil override of ' + _n)
                    if _s == 'wrong':
                        return 'capisan: wrong type from ' + _n
                    _act(2)
                    return _capisan_call(getattr(_c, _n), (self,) + a, k or None)
                # The extension's module: the subclass is the extension's type to the checks
                # that concern its own types (methods called, tp_clear audited).
                ns = {name: hook, '__module__': cls.__module__}
                try:
                    # Type~hook~style: buckets know the base type by the part before '~'.
                    sub = type(cls.__name__ + '~' + name + '~' + style, (cls,), ns)
                except TypeError:
                    continue
                out.append((qual + '~' + name + '~' + style, sub))
    return out


# Argument kinds a spec gives (capisan.toml, see capisan::spec): id(callable) -> kinds by
# position. An argument of another kind is replaced by a vocabulary value of that kind, picked
# by the argument's type name and position (the same input always calls with the same values).
_ARG_KINDS = {}
_KIND_TEST = {
    'any': lambda a: True,
    'int': lambda a: isinstance(a, int) and not isinstance(a, bool),
    'float': lambda a: isinstance(a, float),
    'str': lambda a: isinstance(a, str),
    'bytes': lambda a: isinstance(a, (bytes, bytearray)),
    'buffer': lambda a: isinstance(a, (bytes, bytearray, memoryview)) or type(a).__name__ == 'array',
    'list': lambda a: isinstance(a, list),
    'tuple': lambda a: isinstance(a, tuple),
    'dict': lambda a: isinstance(a, dict),
    'callable': callable,
    'file': lambda a: hasattr(a, 'read') or hasattr(a, 'write'),
    'none': lambda a: a is None,
}
_KIND_VALUES = {}


def set_arg_kinds(pairs):
    """Register (callable, kinds) pairs, and index the vocabulary by kind."""
    for f, kinds in pairs:
        _ARG_KINDS[id(f)] = list(kinds)
    if pairs and not _KIND_VALUES:
        for k, test in _KIND_TEST.items():
            _KIND_VALUES[k] = [i for i, make in enumerate(_VALUES) if _kind_of(make, test)]
        # Values the vocabulary lacks as plain objects.
        _KIND_VALUES['callable'] = _KIND_VALUES['callable'] or [None]


def _kind_of(make, test):
    try:
        return test(make())
    except Exception:
        return False


def _of_kinds(f, args):
    kinds = _ARG_KINDS.get(id(f))
    if not kinds:
        return args
    import zlib
    out = list(args)
    for i, a in enumerate(out):
        k = kinds[i] if i < len(kinds) else 'any'
        if _KIND_TEST[k](a):
            continue
        idx = _KIND_VALUES.get(k) or [None]
        pick = idx[(zlib.crc32(type(a).__name__.encode()) + i) % len(idx)]
        out[i] = None if pick is None else _VALUES[pick]()
    return out


def kinds_tuple(f, args):
    """The positional arguments of a direct call of `f` (the harness calls the extension from
    C without keywords), those of another kind than the spec's replaced."""
    return tuple(_of_kinds(f, args))


def _call(f, recv, args, kwmask, kwnames):
    args = _of_kinds(f, args)
    pos, kw = [], {}
    for i, a in enumerate(args):
        if kwmask >> i & 1 and kwnames:
            kw[kwnames[(i + (kwmask >> 4 & 7)) % len(kwnames)]] = a
        else:
            pos.append(a)
    if kwmask == 0xff:
        kw['capisan_unknown_keyword'] = None
    _victims[:] = [x for x in (recv,) + tuple(args) if x is not None]
    try:
        return _capisan_call(f, tuple(pos), kw or None)
    finally:
        _victims.clear()


def api_call(f, args, kwmask, kwnames):
    """Call an extension callable with positional and keyword arguments."""
    return _call(f, None, args, kwmask, kwnames)


def ext_call(f, args, kwmask):
    """api_call with the callable's own keyword names (reproducers use it)."""
    return _call(f, None, args, kwmask, _params(f)[1])


_methods = {}


def methods_of(tp):
    """Public methods and properties of a type, sorted (cached per type)."""
    names = _methods.get(tp)
    if names is None:
        names = sorted(n for n in dir(tp) if not n.startswith('_'))
        _methods[tp] = names
    return names


def method_name(recv, idx):
    names = methods_of(type(recv))
    return names[idx % len(names)] if names else None


def method_call(recv, idx, args, kwmask):
    """Call method number idx of the receiver's type (an attribute read when it is not
    callable)."""
    name = method_name(recv, idx)
    if name is None:
        raise TypeError('capisan: no public method')
    attr = _capisan_call(getattr, (recv, name), None)
    if not callable(attr):
        return attr
    return _call(attr, recv, args, kwmask, _method_info_of(recv, name, attr)[1])


def _first(it, n=100):
    # Bounded: a range(2**31 - 1) iterated to the end is a harness-made blow-up, not a bug.
    import itertools
    return list(itertools.islice(it, n))


def _small(x):
    return not isinstance(x, int) or -4096 <= x <= 4096


_PROTOCOLS = [
    ('len', lambda o, a: len(o)),
    ('iter', lambda o, a: _first(iter(o))),
    ('next', lambda o, a: next(o)),
    ('getitem', lambda o, a: o[a]),
    ('setitem', lambda o, a: o.__setitem__(a, a)),
    ('delitem', lambda o, a: o.__delitem__(a)),
    ('contains', lambda o, a: a in o),
    ('bool', lambda o, a: bool(o)),
    ('int', lambda o, a: int(o)),
    ('float', lambda o, a: float(o)),
    ('index', lambda o, a: [0][o:]),
    ('add', lambda o, a: o + a),
    ('mul', lambda o, a: o * a if _small(o) and _small(a) else None),
    ('iadd', lambda o, a: o.__iadd__(a)),
    ('memoryview', lambda o, a: memoryview(o).tobytes()),
    ('with', lambda o, a: o.__enter__() and o.__exit__(None, None, None)),
    ('str', lambda o, a: str(o)),
    ('format', lambda o, a: format(o, '')),
    ('reversed', lambda o, a: _first(reversed(o))),
    ('bytes', lambda o, a: bytes(o) if _small(o) else None),
    ('call', lambda o, a: o(a)),
    ('eq', lambda o, a: o == a),
    ('lt', lambda o, a: o < a),
    ('hash', lambda o, a: hash(o)),
    ('copy', lambda o, a: __import__('copy').copy(o)),
    ('pickle', lambda o, a: __import__('pickle').dumps(o)),
    ('weakref', lambda o, a: _weakref_to(o)),
    ('setattrs', lambda o, a: _set_data_attrs(o, a)),
    ('delattrs', lambda o, a: _set_data_attrs(o, None, delete=True)),
]


def _weak_callback(ref):
    return None


def _weakref_to(o):
    """A weak reference with a callback, as the op's result: the sequence may drop the
    object before the reference, and a type whose dealloc does not clear its weak references
    (PyObject_ClearWeakRefs) leaves the reference pointing at freed memory."""
    import weakref
    return weakref.ref(o, _weak_callback)


_data_attrs = {}


def _set_data_attrs(o, a, delete=False):
    """Set (or delete) every data attribute the object's type defines in C or in Python
    (getset and member descriptors, properties) to `a`, each on its own, then take the
    object's repr: the setters' checks of odd values and of deletion (their value argument is
    NULL), and what reads the attributes later. Not on classes and modules: those are shared by
    every input of the process."""
    import types
    if isinstance(o, (type, types.ModuleType)):
        return None
    tp = type(o)
    names = _data_attrs.get(tp)
    if names is None:
        import inspect
        names = [n for n in dir(tp) if inspect.isdatadescriptor(getattr(tp, n, None))]
        _data_attrs[tp] = names
    done = 0
    for n in names:
        try:
            if delete:
                delattr(o, n)
            else:
                setattr(o, n, a)
            done += 1
        except Exception:
            pass
    # Read the object back: a repr that trusts the fields its setters let through (a NULL
    # left by a deletion, a tuple of the wrong size) reads them here.
    return done, repr(o)


def protocol_name(which):
    return _PROTOCOLS[which % len(_PROTOCOLS)][0]


def protocol(which, obj, arg):
    """A language-level operation on obj (with arg), which can run the object's hooks."""
    _victims[:] = [x for x in (obj, arg) if x is not None]
    try:
        return _PROTOCOLS[which % len(_PROTOCOLS)][1](obj, arg)
    finally:
        _victims.clear()
