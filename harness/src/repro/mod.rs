//! Standalone reproducers from a minimized, resolved op sequence: `repro.c` (embeds CPython and
//! makes the same C-API calls, one line per op with its ownership effect), `repro.py` (the same
//! in Python where every op is expressible), `watch.gdb` (watchpoint on the victim's refcount)
//! and a README.

pub mod c;
pub mod callables;
pub mod gdb;
pub mod python;

use crate::ops::{Op, Resolved};

/// `build.sh [variant]`: compiles `repro.c` against a built variant, reading its manifest.
pub const BUILD_SH: &str = include_str!("build.sh");

/// `run.sh [variant] [c|py]`: runs a reproducer with the variant's run-time environment
/// (`EXT_PATH` for the extension, `PYTHONMALLOC_OVERRIDE` for the campaign's allocator).
pub const RUN_SH: &str = include_str!("run.sh");

/// What the reproducer must demonstrate, from the finding's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A sanitizer / allocator / pydebug abort: the calls alone crash.
    Crash,
    /// A reference leak: repeated calls grow the total refcount.
    Leak,
    /// A GC traversal bug: the victim's tp_traverse misses a reference its dealloc releases.
    GcTraversal,
}

/// The slot the last op mostly concerns (first argument slot), for the gdb watchpoint.
pub fn victim_slot(r: &Resolved) -> usize {
    use Op::*;
    match r.ops.last() {
        Some(CallExt { nargs, args, .. }) if nargs % 4 > 0 => args[0].index(),
        Some(
            ListAppend { list, .. }
            | ListSetItem { list, .. }
            | ListGetItem { list, .. }
            | ListDelSlice { list, .. },
        ) => list.index(),
        Some(Release { slot } | Decref { slot } | Incref { slot }) => slot.index(),
        _ => 0,
    }
}

/// An op as text with the extension callee's name (`s5 = CallExt bugzoo.double_free(s0)`).
pub fn describe(op: &Op, r: &Resolved) -> String {
    op.describe(&r.ext)
}

/// C string literal for arbitrary bytes.
pub fn c_bytes(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\{c:03o}")),
        }
    }
    s.push('"');
    s
}

/// The callee's attribute name in its module (`bugzoo.extra_decref` -> `extra_decref`).
pub fn callee(r: &Resolved, func: u8) -> (String, String) {
    let full = r
        .ext
        .get(func as usize % r.ext.len().max(1))
        .cloned()
        .unwrap_or_else(|| "ext.f".into());
    let (m, f) = full.rsplit_once('.').unwrap_or(("ext", &full));
    (m.to_string(), f.to_string())
}

#[cfg(test)]
mod tests {
    /// The scripts' fallback version is capisan's default line (shell cannot read the constant).
    #[test]
    fn scripts_default_to_the_default_line() {
        let fallback = format!(
            "CAPISAN_VERSION=${{CAPISAN_VERSION:-{}}}",
            capisan_build::versions::default_line()
        );
        for script in [BUILD_SH, RUN_SH] {
            assert!(script.contains(&fallback), "{script}");
        }
    }

    use super::*;
    use crate::ops::{CallableKind, Slot};

    fn sample() -> Resolved {
        Resolved {
            ext: vec!["bugzoo.borrowed_after_mutation".into()],
            ops: vec![
                Op::NewList { dst: Slot(0) },
                Op::NewInt {
                    dst: Slot(1),
                    value: 12345,
                },
                Op::ListAppend {
                    list: Slot(0),
                    item: Slot(1),
                },
                Op::NewCallable {
                    dst: Slot(2),
                    kind: CallableKind::Clearer,
                    target: Slot(0),
                },
                Op::CallExt {
                    func: 0,
                    nargs: 2,
                    args: [Slot(0), Slot(2), Slot(0)],
                    dst: Slot(3),
                    kw: 0,
                },
            ],
        }
    }

    #[test]
    fn c_has_one_commented_line_per_op() {
        let r = sample();
        let src = c::emit(&r, Expect::Crash);
        for op in &r.ops {
            let text = describe(op, &r);
            assert!(
                src.contains(&format!("/* {text} */")),
                "missing op {text} in\n{src}"
            );
        }
        assert!(src.contains("CallExt bugzoo.borrowed_after_mutation(s0, s2)"));
        assert!(
            src.contains("PyList_Append(s[0], s[1]); /* not stolen */"),
            "{src}"
        );
        assert!(src.contains("PyImport_ImportModule(\"bugzoo\")"));
        assert!(src.contains("\"borrowed_after_mutation\""));
    }

    #[test]
    fn python_translates_or_says_why_not() {
        let r = sample();
        let py = python::emit(&r, Expect::Crash).expect("all ops expressible");
        assert!(py.contains("s0.append(s1)"), "{py}");
        assert!(
            py.contains("bugzoo.borrowed_after_mutation(s0, s2)"),
            "{py}"
        );
        let mut r2 = r.clone();
        r2.ops.insert(
            0,
            Op::TupleSetItem {
                tuple: Slot(0),
                index: 0,
                item: Slot(1),
            },
        );
        assert!(python::emit(&r2, Expect::Crash).is_err());
    }

    #[test]
    fn gdb_watches_the_victim() {
        let g = gdb::emit("./repro");
        assert!(g.contains("watch -l"));
        assert!(g.contains("py-bt"));
    }

    #[test]
    fn runtime_uses_capisan_slot_count() {
        assert!(
            c::RUNTIME_C.contains(&format!("\n#define NSLOTS {}\n", crate::ops::NSLOTS)),
            "harness/src/repro/runtime.c must define NSLOTS as ops::NSLOTS"
        );
    }

    /// The callee is looked up once per CallExt, outside the measured calls: before, each call
    /// did `PyObject_GetAttrString(ext_module, ...)` and leaked that reference, so the leak
    /// reproducer reported a leak for any function.
    #[test]
    fn leak_repro_looks_the_callee_up_once_and_measures_like_regrtest() {
        let mut r = sample();
        r.ext = vec!["bugzoo.leak_on_error_clean".into()];
        r.ops = vec![
            Op::NewStr {
                dst: Slot(0),
                text: "x".into(),
            },
            Op::CallExt {
                func: 0,
                nargs: 1,
                args: [Slot(0), Slot(0), Slot(0)],
                dst: Slot(1),
                kw: 0,
            },
        ];
        let src = c::emit(&r, Expect::Leak);
        let main = &src[src.find("int main(void)").expect("main")..];
        assert_eq!(
            main.matches("PyObject_GetAttrString(ext_module").count(),
            1,
            "{main}"
        );
        assert!(
            main.contains("check_leak(\"bugzoo.leak_on_error_clean\", f, argv, 1)"),
            "{main}"
        );
        assert!(src.contains("#define LEAK_WARMUPS 3") && src.contains("#define LEAK_RUNS 3"));
        let py = python::emit(&r, Expect::Leak).expect("expressible");
        assert!(
            py.contains(
                "check_leak(\"bugzoo.leak_on_error_clean\", bugzoo.leak_on_error_clean, (s0, ))"
            ),
            "{py}"
        );
        let file =
            std::env::temp_dir().join(format!("capisan-leak-repro-{}.py", std::process::id()));
        std::fs::write(&file, &py).unwrap();
        let parsed = std::process::Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
            .arg(&file)
            .status();
        let _ = std::fs::remove_file(&file);
        assert!(
            parsed.is_ok_and(|s| s.success()),
            "repro.py does not parse:\n{py}"
        );
        let crash = c::emit(&r, Expect::Crash);
        let main = &crash[crash.find("int main(void)").expect("main")..];
        assert_eq!(
            main.matches("PyObject_GetAttrString(ext_module").count(),
            1,
            "{main}"
        );
    }

    #[test]
    fn bytes_are_escaped() {
        assert_eq!(c_bytes(b"a\"\\\x00\xff"), "\"a\\\"\\\\\\000\\377\"");
    }
}
