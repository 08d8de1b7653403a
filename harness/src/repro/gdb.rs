//! `watch.gdb`: run the C reproducer under gdb, stop when the victim is known, watch its
//! `ob_refcnt`, and print the C and Python stacks at every change — the ownership history.

/// The gdb script for the reproducer binary at `binary`.
pub fn emit(binary: &str) -> String {
    format!(
        r#"# capisan: reconstruct the victim's ownership history.
# Run: gdb -q -x watch.gdb   (build the pydebug variant of the reproducer first: ./build.sh pydebug)
set pagination off
set confirm off
file {binary}
# py-bt and friends come from CPython's gdb helpers (python-gdb.py in the build directory).
python
import os
p = os.environ.get("CAPISAN_PYTHON_GDB")
if p and os.path.exists(p):
    gdb.execute("source " + p)
end
break capisan_victim_ready
run
set $victim = (PyObject *) victim
printf "victim %p refcount %ld\n", $victim, $victim->ob_refcnt
watch -l $victim->ob_refcnt
commands
  silent
  printf "ob_refcnt of the victim is now %ld\n", $victim->ob_refcnt
  bt 12
  py-bt
  continue
end
continue
"#
    )
}
