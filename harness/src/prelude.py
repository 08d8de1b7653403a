import gc as _gc
gc_collect = _gc.collect

class Plain:
    pass

class Evil:
    def __eq__(self, other):
        v = self.__dict__.get('victim')
        c = getattr(v, 'clear', None)
        if c is not None:
            c()
        return NotImplemented
    def __lt__(self, other):
        self.__eq__(other)
        return False
    def __hash__(self):
        return 0

def make_callable(kind, target):
    if kind == 0:
        def clearer(*a):
            c = getattr(target, 'clear', None)
            if c is not None:
                c()
        return clearer
    if kind == 1:
        return lambda *a: None
    return lambda *a: 1 / 0

def ext_callables(modname, path, only):
    import importlib, sys
    if path and path not in sys.path:
        sys.path.insert(0, path)
    m = importlib.import_module(modname)
    names = sorted(n for n in dir(m) if not n.startswith('_') and callable(getattr(m, n)))
    if only:
        names = [n for n in names if n in only]
    return [(modname + '.' + n, getattr(m, n)) for n in names]
