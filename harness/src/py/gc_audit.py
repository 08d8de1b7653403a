# The Python half of the GC audit of objects an extension call returns (capisan::check::gc):
# what the object exposes (its tp_traverse must visit what it holds), and a cycle through it
# that gc.collect() must free. Loaded once into its own namespace; only the three functions
# below are called from Rust.
import gc as _gc
import types as _types
import weakref as _weakref

_DESCRIPTORS = (_types.MemberDescriptorType, _types.GetSetDescriptorType)


def _attributes(obj):
    # Names of the member and getset descriptors of obj's type and its bases (object's excepted):
    # the C fields an extension type exposes.
    seen = set()
    for cls in type(obj).__mro__:
        if cls is object:
            continue
        for name, d in vars(cls).items():
            if name.startswith('__') or name in seen or not isinstance(d, _DESCRIPTORS):
                continue
            seen.add(name)
            yield name


def exposed(obj):
    # The objects obj exposes through its attributes: references its dealloc releases, which
    # tp_traverse must visit.
    out = []
    for name in _attributes(obj):
        try:
            out.append(getattr(obj, name))
        except Exception:
            pass
    return out


class _CycleList(list):
    # A list that can be weakly referenced: the probe's handle on the cycle.
    pass


def attach_cycle(obj, own_dict=None):
    # Make obj -> probe -> obj through every writable attribute of obj (its __dict__, writable
    # members and getsets). Returns (weakref to the probe, attribute names), or None when obj
    # has no attribute that takes a list. own_dict is obj's instance dict as C code stores it
    # (PyObject_GenericGetDict), or None: an attribute set that does not land there (a proxy
    # forwards it to the object it wraps, which others may hold) makes no cycle through obj and
    # is undone.
    probe = _CycleList([obj])
    names = []
    try:
        obj.__capisan_cycle__ = probe
        if own_dict is not None and own_dict.get('__capisan_cycle__') is probe:
            names.append('__dict__')
        else:
            try:
                del obj.__capisan_cycle__
            except Exception:
                pass
    except Exception:
        pass
    for name in list(_attributes(obj)):
        try:
            setattr(obj, name, probe)
            names.append(name)
        except Exception:
            pass
    if not names:
        probe.clear()
        return None
    return _weakref.ref(probe), names


def cycle_freed(ref):
    # After the caller dropped obj: whether the collector freed the cycle. The young
    # generation first (the cycle was just made); a full collection only when that was not
    # enough (an automatic collection may have moved it to an older generation). An
    # uncollectable cycle is broken here so the process can go on.
    _gc.collect(0)
    if ref() is None:
        return True
    _gc.collect()
    probe = ref()
    if probe is None:
        return True
    probe.clear()
    return False


def runs_code_at_death(obj):
    # Whether obj's death runs Python code: a __del__, or a callback of a weak reference to it
    # (a proxy's callback cannot be read without touching obj, so any proxy counts). That code
    # may release anything (the callback itself, whatever it clears), which is not obj's own.
    if getattr(type(obj), '__del__', None) is not None:
        return True
    for r in _weakref.getweakrefs(obj):
        if not isinstance(r, _weakref.ref) or r.__callback__ is not None:
            return True
    return False
