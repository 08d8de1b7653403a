# Run `module:function` once, as `python -c CALL_TARGET MODULE FUNCTION` (the sanitizer and
# valgrind runs, where no driver sits between the interpreter and the target).
import importlib
import sys

sys.path.insert(0, "")
f = importlib.import_module(sys.argv[1])
for part in sys.argv[2].split("."):
    f = getattr(f, part)
f()
