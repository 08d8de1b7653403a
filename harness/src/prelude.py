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
    # modname may be dotted (pkg._speedups): it is imported as its package imports it, so the
    # package's __init__ runs first and the module's own imports of its package resolve.
    # path is a directory holding the module, or a venv's site-packages (CAPISAN_EXT_PATH);
    # it goes first on sys.path, and addsitedir runs its .pth files (namespace packages,
    # editable installs) as site.py would.
    import importlib, site, sys
    if path:
        if path not in sys.path:
            sys.path.insert(0, path)
        site.addsitedir(path)
    m = importlib.import_module(modname)
    names = sorted(n for n in dir(m) if not n.startswith('_') and callable(getattr(m, n)))
    if not names:
        # A private module (markupsafe._speedups has only _escape_inner): its underscored
        # callables are its interface; dunders never are.
        names = sorted(n for n in dir(m) if not n.startswith('__') and callable(getattr(m, n)))
    if only:
        names = [n for n in names if n in only]
    out = [(modname + '.' + n, getattr(m, n)) for n in names]
    # Subclasses of the extension's own types whose hook methods misbehave (api.py), after
    # the module's callables so their indices do not move.
    subs = evil_subclasses(modname, out)
    if only:
        subs = [s for s in subs if s[0].rsplit('.', 1)[-1].split('~')[0] in only]
    # Argument kinds from a spec file (CAPISAN_EXT_ARGS, by short name): api.py's calls
    # replace an argument of another kind by a vocabulary value of that kind.
    import json, os
    kinds = json.loads(os.environ.get('CAPISAN_EXT_ARGS') or '{}')
    set_arg_kinds([(f, kinds[q.rsplit('.', 1)[-1]]) for q, f in out
                   if q.rsplit('.', 1)[-1] in kinds])
    return out + subs


def ext_types(modname):
    """The classes the module under test exposes, whatever their __module__ says
    (typing.ParamSpecArgs is _typing's, xml.etree.ElementTree.Element _elementtree's,
    multidict.MultiDict multidict._multidict's); a builtin it re-exports is not its own,
    unless the module is builtins. object and type never are (every object is an object)."""
    import sys
    m = sys.modules.get(modname)
    if m is None:
        return []
    own = modname == 'builtins'
    return [v for v in vars(m).values()
            if isinstance(v, type) and v not in (object, type)
            and (own or v.__module__ != 'builtins')]
