"""Shared by capisan's leak drivers (refleak.py, tracemalloc.py), prepended to each at run time.

The Rust side (harness/src/leaks/mod.rs) runs `python driver.py SPEC.json RESULT.json`: the spec
names the target, the driver writes its result as JSON, never on the target's stdout.
"""
import gc, importlib, json, os, sys

def load_target(spec):
    kind = spec["kind"]
    if kind in ("script", "code"):
        if kind == "script":
            path = spec["path"]
            with open(path, "rb") as f:
                code = compile(f.read(), path, "exec")
            sys.path.insert(0, os.path.dirname(path))
            ns = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
        else:
            code = compile(spec["code"], "<capisan -c>", "exec")
            ns = {"__name__": "__main__", "__builtins__": __builtins__}
        # One namespace for every run: like a module, the script's globals outlive a run.
        def run():
            exec(code, ns)
        return run
    if kind == "call":
        sys.path.insert(0, os.getcwd())
        obj = importlib.import_module(spec["module"])
        for part in spec["function"].split("."):
            obj = getattr(obj, part)
        return obj
    if kind == "test":
        import unittest
        from test import support
        support.verbose = 0
        # Like regrtest: resource-gated tests (-u cpu, network, ...) run only when asked for.
        support.use_resources = list(spec.get("use_resources", []))
        module = importlib.import_module("test." + spec["test"])
        def run():
            # A suite forgets its tests once run; load a fresh one every time, as regrtest does.
            suite = unittest.defaultTestLoader.loadTestsFromModule(module)
            result = unittest.TestResult()
            suite.run(result)
            return result
        return run
    raise SystemExit("unknown target kind %r" % kind)

def load_spec():
    with open(sys.argv[1]) as f:
        return json.load(f)

def write_result(result):
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
