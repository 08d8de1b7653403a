"""capi_sequences for atheris: the same operations as capisan's fuzz target, driven from Python.

The baseline for `cargo xtask bench`'s exec/s comparison. Each input is a sequence of at most
64 ops over 8 slots, as in capisan's `capi_sequences`: constructors (int, float, str, bytes,
tuple, list, a list owning fresh floats, dict, set, instances of a plain class and of a class
with evil __eq__/__lt__/__hash__, callables that clear their target, do nothing or raise),
copies and releases, list/tuple/dict/set operations, attributes, rich comparison, hash, repr,
calls, module attributes, an exception round trip and gc.collect of a generation. Where the
C API has no Python spelling (Py_INCREF, PyTuple_SetItem on a fresh tuple, a borrowed
reference) the nearest Python operation stands in. Python exceptions the operations raise are
expected and swallowed, as capisan's target clears them; no ownership checks are made (atheris
has none to make), so this measures the bare cost of driving the operations.

Run with the ASan variant's interpreter and atheris built against it:
    python capi_sequences.py -max_total_time=30 -seed=11
"""

import gc
import os
import sys
import types

import atheris

NSLOTS = 8
MAX_OPS = 64
NOPS = 39

# An extension under test, named as capisan's target names it (CAPISAN_EXT, CAPISAN_EXT_PATH,
# CAPISAN_EXT_FUNCS): one more op calls one of its functions with 0-3 slot arguments, as
# capisan's CallExt does. Without it the ops are the C API's alone.
EXT_FUNCS = []
if os.environ.get("CAPISAN_EXT"):
    import importlib
    if os.environ.get("CAPISAN_EXT_PATH"):
        sys.path.insert(0, os.environ["CAPISAN_EXT_PATH"])
    _ext = importlib.import_module(os.environ["CAPISAN_EXT"])
    _names = [n for n in os.environ.get("CAPISAN_EXT_FUNCS", "").split(",") if n]
    if not _names:
        _names = sorted(n for n in dir(_ext) if not n.startswith("_") and callable(getattr(_ext, n)))
    EXT_FUNCS = [getattr(_ext, n) for n in _names]
    NOPS += 1


# The same prelude classes and callables capisan's harness uses (Plain, Evil, make_callable).
_PRELUDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "harness", "src", "prelude.py")
with open(_PRELUDE) as _f:
    exec(compile(_f.read(), _PRELUDE, "exec"))


ATTRS = ("victim", "payload", "other")
SCRATCH = types.ModuleType("capisan_scratch")
COMPARE = (
    lambda a, b: a < b,
    lambda a, b: a <= b,
    lambda a, b: a == b,
    lambda a, b: a != b,
    lambda a, b: a > b,
    lambda a, b: a >= b,
)


def run(data):
    fdp = atheris.FuzzedDataProvider(data)
    s = [None] * NSLOTS

    def slot():
        return fdp.ConsumeIntInRange(0, NSLOTS - 1)

    for _ in range(MAX_OPS):
        if fdp.remaining_bytes() == 0:
            break
        op = fdp.ConsumeIntInRange(0, NOPS - 1)
        try:
            if op == 0:
                s[slot()] = fdp.ConsumeInt(8)
            elif op == 1:
                s[slot()] = fdp.ConsumeFloat()
            elif op == 2:
                s[slot()] = fdp.ConsumeUnicodeNoSurrogates(16)
            elif op == 3:
                s[slot()] = fdp.ConsumeBytes(32)
            elif op == 4:
                s[slot()] = (None,) * (fdp.ConsumeIntInRange(0, 255) % 5)
            elif op == 5:
                s[slot()] = []
            elif op == 6:
                n = fdp.ConsumeIntInRange(0, 255) % 5
                s[slot()] = [float(i) + 0.5 for i in range(n)]
            elif op == 7:
                s[slot()] = {}
            elif op == 8:
                s[slot()] = set()
            elif op == 9:
                s[slot()] = Evil() if fdp.ConsumeBool() else Plain()
            elif op == 10:
                d, kind, t = slot(), fdp.ConsumeIntInRange(0, 2), slot()
                s[d] = make_callable(kind, s[t])
            elif op == 11:
                src, d = slot(), slot()
                s[d] = s[src]
            elif op == 12:  # Py_INCREF: no Python spelling; a reference is taken and dropped
                x = s[slot()]
                del x
            elif op == 13:  # Py_DECREF of one of several owned references
                x = s[slot()]
                del x
            elif op == 14:
                s[slot()] = None
            elif op == 15:
                lst, item = s[slot()], s[slot()]
                if type(lst) is list:
                    lst.append(item)
            elif op == 16:
                lst, i, item = s[slot()], fdp.ConsumeIntInRange(-128, 127), s[slot()]
                if type(lst) is list:
                    lst.insert(i, item)
            elif op == 17:
                lst, i, item = s[slot()], fdp.ConsumeIntInRange(-128, 127), s[slot()]
                if type(lst) is list:
                    lst[i] = item
            elif op == 18:
                lst, i, d = s[slot()], fdp.ConsumeIntInRange(-128, 127), slot()
                if type(lst) is list:
                    s[d] = lst[i]
            elif op == 19:
                lst, lo, hi = s[slot()], fdp.ConsumeIntInRange(-128, 127), fdp.ConsumeIntInRange(-128, 127)
                if type(lst) is list:
                    del lst[lo:hi]
            elif op == 20:
                lst = s[slot()]
                if type(lst) is list:
                    lst.sort()
            elif op == 21:  # PyTuple_SetItem: a fresh tuple with the item in place
                t, i, item = slot(), fdp.ConsumeIntInRange(-128, 127), s[slot()]
                if type(s[t]) is tuple:
                    items = list(s[t])
                    items[i] = item
                    s[t] = tuple(items)
            elif op == 22:
                t, i, d = s[slot()], fdp.ConsumeIntInRange(-128, 127), slot()
                if type(t) is tuple:
                    s[d] = t[i]
            elif op == 23:
                dct, k, v = s[slot()], s[slot()], s[slot()]
                if type(dct) is dict:
                    dct[k] = v
            elif op in (24, 25):
                dct, k, d = s[slot()], s[slot()], slot()
                if type(dct) is dict:
                    s[d] = dct.get(k)
            elif op == 26:
                dct, k = s[slot()], s[slot()]
                if type(dct) is dict:
                    del dct[k]
            elif op == 27:
                dct = s[slot()]
                if type(dct) is dict:
                    dct.clear()
            elif op == 28:
                st, item = s[slot()], s[slot()]
                if type(st) is set:
                    st.add(item)
            elif op == 29:
                o, name, v = s[slot()], ATTRS[fdp.ConsumeIntInRange(0, 2)], s[slot()]
                setattr(o, name, v)
            elif op == 30:
                o, name, d = s[slot()], ATTRS[fdp.ConsumeIntInRange(0, 2)], slot()
                s[d] = getattr(o, name)
            elif op == 31:
                a, b, cmp, d = s[slot()], s[slot()], fdp.ConsumeIntInRange(0, 5), slot()
                s[d] = COMPARE[cmp](a, b)
            elif op == 32:
                hash(s[slot()])
            elif op == 33:
                o, d = s[slot()], slot()
                s[d] = repr(o)[:1024]
            elif op == 34:
                f, a, d = s[slot()], s[slot()], slot()
                s[d] = f(a)
            elif op in (35, 36):
                o, name = s[slot()], ATTRS[fdp.ConsumeIntInRange(0, 2)]
                setattr(SCRATCH, name, o)
            elif op == 39:
                f = EXT_FUNCS[fdp.ConsumeIntInRange(0, len(EXT_FUNCS) - 1)]
                d, n = slot(), fdp.ConsumeIntInRange(0, 3)
                s[d] = f(*[s[slot()] for _ in range(n)])
            elif op == 37:
                try:
                    raise ValueError("capisan")
                except ValueError as e:
                    s[slot()] = e
            elif op == 38:
                gc.collect(fdp.ConsumeIntInRange(0, 255) % 3)
        except Exception:
            pass


def main():
    atheris.Setup(sys.argv, atheris.instrument_func(run))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
