from crashpkg._native import leaky_pair, pair, read_after_free, total
