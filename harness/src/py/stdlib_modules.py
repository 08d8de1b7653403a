
# --- capisan stdlib discovery (appended to the prelude; see capisan::stdlib) ---------------
# Prints one JSON line: the variant's version, its built-in C modules, its shared C modules
# (a file with an extension-module suffix in a sys.path directory outside site-packages), and,
# for each module named in the JSON list sys.argv[1], its callables as the harness loads them
# (the prelude's ext_callables with an empty path: imported by name) or why it does not load.
import importlib.machinery as _machinery
import json as _json
import os as _os
import sys as _sys


def _shared_modules():
    found = {}
    for d in _sys.path:
        if not d or 'site-packages' in d or not _os.path.isdir(d):
            continue
        for f in sorted(_os.listdir(d)):
            for suffix in _machinery.EXTENSION_SUFFIXES:
                if f.endswith(suffix) and '.' not in f[: -len(suffix)]:
                    found.setdefault(f[: -len(suffix)], _os.path.join(d, f))
    return found


def _callables(names):
    out, errors = {}, {}
    for name in names:
        try:
            out[name] = [q for q, _ in ext_callables(name, '', [])]
        except BaseException as e:  # a module that does not import is reported, not fatal
            errors[name] = '%s: %s' % (type(e).__name__, e)
    return out, errors


_callables_of, _errors = _callables(_json.loads(_sys.argv[1]) if len(_sys.argv) > 1 else [])
print('CAPISAN-STDLIB', _json.dumps({
    'version': '%d.%d.%d' % _sys.version_info[:3],
    'builtin': sorted(_sys.builtin_module_names),
    'shared': _shared_modules(),
    'callables': _callables_of,
    'errors': _errors,
}))
