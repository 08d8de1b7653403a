//! capisan: drive CPython's C API under an ownership model and name what breaks.
//!
//! Without the `cpython` feature only the interpreter-free parts are built: the op vocabulary
//! and ownership model ([`ops`]) and the report parsers ([`detect`]). With it, [`ffi`],
//! [`interp`] and [`exec`] bind and drive the variant chosen at build time.

// Every unsafe operation inside an `unsafe fn` sits in its own `unsafe` block that states the
// contract it relies on (GIL held; which pointers are new, borrowed or stolen).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod bundle;
pub mod campaign;
pub mod confirm;
pub mod corpus;
pub mod detect;
pub mod env;
pub mod findings;
pub mod leak_rule;
pub mod leaks;
pub mod minimize;
pub mod oom;
pub mod ops;
pub mod report;
pub mod repro;
pub mod spec;
pub mod stdlib;
pub mod testpkg;

/// Python code the ops call into (classes with evil comparisons, mutating callables); the
/// harness runs it at start-up and reproducers embed it.
pub const PRELUDE_PY: &str = concat!(include_str!("prelude.py"), include_str!("py/api.py"));

/// regrtest's cleanup between `-R` runs (cache clearing, then collection), run before every
/// measurement of the two-stage leak verdict; defines `regrtest_cleanup()`.
pub const REGRTEST_CLEANUP_PY: &str = include_str!("py/regrtest_cleanup.py");

#[cfg(feature = "cpython")]
pub mod check;
#[cfg(feature = "cpython")]
pub mod exec;
#[cfg(feature = "cpython")]
pub mod failalloc;
#[cfg(feature = "cpython")]
pub mod ffi;
#[cfg(feature = "cpython")]
pub mod gcslots;
#[cfg(feature = "cpython")]
pub mod interp;
#[cfg(feature = "cpython")]
pub mod pycall;
#[cfg(feature = "cpython")]
pub mod rawmem;
pub mod replay;
pub mod replay_report;

#[cfg(test)]
mod tests {
    /// Run `code` (the prelude and a test's lines) in the system python with `args` and `env`;
    /// its output, after asserting it exited 0.
    fn prelude_then(code: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = duct::cmd("python3", ["-c", code].iter().chain(args))
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked();
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let out = cmd.run().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text
    }

    /// The API discovery in the prelude (py/api.py) survives what real extension types define:
    /// wrapt's ObjectProxy has `__doc__` as a property, so its class attribute is a descriptor;
    /// reading it as a string once stopped every wrapt campaign at start-up. Run with the
    /// system python (the prelude needs no capisan interpreter for discovery).
    #[test]
    fn discovery_survives_descriptor_dunders() {
        let code = format!(
            "{}\n{}",
            crate::PRELUDE_PY,
            r#"
class ObjectProxy:
    # No signature inspect can read (as for a C type without __text_signature__).
    __signature__ = "unreadable"
    @property
    def __doc__(self):
        return "proxy"
    def __init__(self, wrapped):
        pass
class Odd:
    __name__ = property(lambda self: "odd")
    __doc__ = "Odd(a, b)"
    def __init__(self, a, b=1):
        pass
pairs = [("m.ObjectProxy", ObjectProxy), ("m.Odd", Odd)]
print(ext_arities(pairs), ext_keywords(pairs))
"#
        );
        let text = prelude_then(&code, &[], &[]);
        assert_eq!(text.trim(), "[(0, 3), (1, 2)] [[], ['a', 'b']]", "{text}");
    }

    /// A spec's argument kinds (`CAPISAN_EXT_ARGS`, see [`crate::spec`]) reach every call of
    /// the callable through the prelude (keyword calls through `api_call`, direct calls from C
    /// through `kinds_tuple`): an argument of another kind is replaced by a vocabulary
    /// value of the kind; `any` and unnamed callables keep what the fuzzer drew.
    #[test]
    fn spec_argument_kinds_replace_arguments_of_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kindmod.py"),
            "def f(a, b, c):\n    return (a, b, c)\ndef g(a):\n    return a\n",
        )
        .unwrap();
        let code = format!(
            "{}\n{}",
            crate::PRELUDE_PY,
            r#"
import sys
c = dict(ext_callables('kindmod', sys.argv[1], []))
f, g = c['kindmod.f'], c['kindmod.g']
drawn = [make_value(i) for i in range(value_count())] + [None, 3, 'x', b'y']
seen = set()
for a in drawn:
    x, y, z = api_call(f, [a, a, a], 0, [])
    assert kinds_tuple(f, (a, a, a))[2] is a
    assert isinstance(kinds_tuple(f, (a, a, a))[0], int)
    assert isinstance(x, int) and not isinstance(x, bool), (a, x)
    assert isinstance(y, (bytes, bytearray, memoryview)) or type(y).__name__ == 'array', (a, y)
    assert z is a, (a, z)
    assert api_call(g, [a], 0, []) is a
    seen.add(repr(x))
print('ok', len(seen))
"#
        );
        let text = prelude_then(
            &code,
            &[dir.path().to_str().unwrap()],
            &[("CAPISAN_EXT_ARGS", r#"{"f": ["int", "buffer", "any"]}"#)],
        );
        // Several ints, not one default: the vocabulary's own boundary values.
        let n: usize = text.trim().strip_prefix("ok ").unwrap().parse().unwrap();
        assert!(n >= 5, "{text}");
    }
}
