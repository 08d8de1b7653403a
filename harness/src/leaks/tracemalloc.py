# tracemalloc snapshot diff around N runs (see harness/src/leaks/tracemalloc.rs); driver_prelude.py
# is prepended.
import tracemalloc

def main():
    spec = load_spec()
    n, top = spec["iterations"], spec["top"]
    run = load_target(spec)
    tracemalloc.start(spec["frames"])
    # Iteration 0 is the warmup (first-call caches, lazy imports, specialization). Every run is
    # called from this one line, so warmup and measured allocations share their tracebacks.
    before = None
    for i in range(n + 1):
        if i == 1:
            gc.collect()
            before = tracemalloc.take_snapshot()
        run()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Only the innermost frame is tested (all_frames=False): the driver is on every stack.
    filters = [
        tracemalloc.Filter(False, __file__),
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, os.path.join(os.path.dirname(importlib.__file__), "*")),
    ]
    before = before.filter_traces(filters)
    after = after.filter_traces(filters)
    stats = [s for s in after.compare_to(before, "traceback") if s.size_diff > 0]
    stats.sort(key=lambda s: (s.size_diff, s.count_diff), reverse=True)
    entries = []
    for s in stats[:top]:
        frames = [{"file": f.filename, "line": f.lineno}
                  for f in reversed(s.traceback) if f.filename != __file__]
        entries.append({"size_diff": s.size_diff, "count_diff": s.count_diff,
                        "size": s.size, "count": s.count, "traceback": frames})
    write_result({"entries": entries, "growing_tracebacks": len(stats)})

main()
