from crashpkg._native import read_after_free, total
