//! Stack frames: parsing sanitizer frame lines, and telling machinery / CPython-core frames from
//! the frames that name a bug's location.
//!
//! Both judgements are tables of regexes so that growing them is a data change.

use std::sync::OnceLock;

use regex::{Regex, RegexSet};

use super::Frame;

/// Function names that are machinery, never the location of a bug: allocator entry points and
/// their sanitizer interceptors, sanitizer internals, CPython's allocator and refcount helpers,
/// abort / raise, the capisan harness and its C shim, and Rust std / libFuzzer.
pub const MACHINERY_FUNCTIONS: &[&str] = &[
    r"^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc)$",
    r"^operator (new|delete)",
    r"^_{0,3}interceptor_",
    r"^__(asan|lsan|ubsan|sanitizer|msan|tsan)",
    r"^(__asan|__sanitizer|__lsan|__ubsan)::",
    r"^_?PyMem_",
    r"^_?PyObject_(Malloc|Calloc|Realloc|Free)",
    r"^_PyObject_.*Free",
    r"^PyObject_GC_Del$",
    r"^_Py_Dealloc$",
    r"^_?Py_X?DECREF",
    r"^_?Py_(Dec|XDec)Ref$",
    r"^_Py_NegativeRefcount$",
    r"^_PyObject_AssertFailed$",
    r"^(fatal_error|fatal_error_exit|_Py_FatalErrorFunc|_Py_FatalErrorFormat|Py_FatalError|_Py_FatalRefcountErrorFunc)$",
    r"^(__GI_)?(abort|raise)$",
    r"^__assert_fail",
    r"^(__)?pthread_kill",
    r"^__restore_rt$",
    r"^_start$",
    r"^main$",
    r"^__libc_start",
    r"^capisan::",
    r"^<capisan::",
    r"^capisan_replay::",
    r"^capi_sequences::",
    r"^shim_",
    r"^fuzzer::",
    r"^(std|core|alloc)::",
    r"^<(std|core|alloc)::",
    r"^<fn\(.*\) as (std|core|alloc)::",
    r" as (std|core|alloc)::ops::function::Fn(Once|Mut)?<",
    r"^LLVMFuzzer",
    r"^libfuzzer_sys::",
    r"::__libfuzzer_sys_run$",
    r"^rust_fuzzer_test_input$",
    r"^__rust",
    r"^rust_(begin_unwind|panic)",
];

/// Source paths of machinery whose function names are too generic to list: the sanitizer runtimes
/// (compiler-rt), libFuzzer and the `libfuzzer-sys` crate (its `main` is FuzzerMain.cpp's),
/// cargo-fuzz targets (the capisan entry point, not code under test), and CPython's headers
/// (`Py_TYPE`, `Py_IS_TYPE`, `PyTuple_GET_ITEM`…: static inline accessors that notice a bad
/// pointer their caller passed; `del frame.f_trace_opcodes` is `frame_settrace_opcodes`'s
/// bug, not `Py_TYPE`'s).
pub const MACHINERY_FILES: &[&str] = &[
    r"(^|/)Include/",
    r"(^|/)compiler-rt/lib/",
    r"(^|/)libfuzzer-sys-[^/]*/",
    r"(^|/)libfuzzer/Fuzzer[A-Za-z]*\.cpp$",
    r"(^|/)fuzz_targets/",
    r"(^|/)fuzz/replay/",
];

/// Modules that are machinery as a whole: libc (its unsymbolized signal-return trampoline heads
/// every stack printed from a signal handler).
pub const MACHINERY_OBJECTS: &[&str] = &[r"(^|/)libc([-.][^/]*)?\.so[^/]*$"];

/// Source paths and modules that belong to CPython itself (its source tree layout, the python
/// executable, libpython) or to libc's process start-up. A frame there is where a bug was
/// *noticed*, rarely where it *is*, so [`super::Finding::top_frame`] prefers other frames.
pub const INTERPRETER_CORE_FILES: &[&str] = &[
    r"(^|/)(Objects|Python|Include|Parser|Programs|Modules)/",
    r"(^|/)(csu|sysdeps|nptl)/",
];

/// Modules (`object` field) that are CPython or libc.
pub const INTERPRETER_CORE_OBJECTS: &[&str] = &[
    r"(^|/)python3?(\.\d+)?d?$",
    r"(^|/)libpython3[^/]*$",
    r"(^|/)lib(c|m|pthread|dl)([-.][^/]*)?\.so[^/]*$",
    r"(^|/)ld-linux[^/]*$",
];

/// CPython functions that exist only in the core even when no file is printed.
pub const INTERPRETER_CORE_FUNCTIONS: &[&str] = &[r"^_start$", r"^__libc_start"];

fn set(patterns: &'static [&'static str], cell: &'static OnceLock<RegexSet>) -> &'static RegexSet {
    cell.get_or_init(|| RegexSet::new(patterns).expect("frame pattern table compiles"))
}

/// True when `frame` is allocator / sanitizer / refcount / fatal-error / libc / harness / fuzzer
/// machinery.
pub fn is_machinery(frame: &Frame) -> bool {
    static FUNCTIONS: OnceLock<RegexSet> = OnceLock::new();
    static FILES: OnceLock<RegexSet> = OnceLock::new();
    static OBJECTS: OnceLock<RegexSet> = OnceLock::new();
    set(MACHINERY_FUNCTIONS, &FUNCTIONS).is_match(&frame.function)
        || frame
            .file
            .as_deref()
            .is_some_and(|f| set(MACHINERY_FILES, &FILES).is_match(f))
        || frame
            .object
            .as_deref()
            .is_some_and(|o| set(MACHINERY_OBJECTS, &OBJECTS).is_match(o))
}

/// True when `frame` is inside CPython's own code (or libc start-up).
pub fn is_interpreter_core(frame: &Frame) -> bool {
    static FILES: OnceLock<RegexSet> = OnceLock::new();
    static OBJECTS: OnceLock<RegexSet> = OnceLock::new();
    static FUNCTIONS: OnceLock<RegexSet> = OnceLock::new();
    frame
        .file
        .as_deref()
        .is_some_and(|f| set(INTERPRETER_CORE_FILES, &FILES).is_match(f))
        || frame
            .object
            .as_deref()
            .is_some_and(|o| set(INTERPRETER_CORE_OBJECTS, &OBJECTS).is_match(o))
        || set(INTERPRETER_CORE_FUNCTIONS, &FUNCTIONS).is_match(&frame.function)
}

/// True when `frame` is CPython's weak-reference code (Objects/weakrefobject.c).
pub fn is_weakref_machinery(frame: &Frame) -> bool {
    frame
        .file
        .as_deref()
        .is_some_and(|f| f.ends_with("Objects/weakrefobject.c"))
}

/// True when the tool printed no function name for `frame` (a module without symbols, or the
/// symbolizer failed): only its module and offset say where it is.
pub fn is_unsymbolized(frame: &Frame) -> bool {
    matches!(frame.function.trim(), "" | "??")
}

/// A short name for `frame` that is never a file suffix: its function when symbolized, else
/// `module.so+0xOFFSET` (the module's file name without CPython's ABI tag, so the name is the
/// same on every interpreter build), else the module alone, else `??`.
///
/// A bucket keyed by an offset changes when the module is rebuilt; that is the price of an
/// extension without symbols, and the name still says which module to look into.
pub fn frame_name(frame: &Frame) -> String {
    static ABI_TAG: OnceLock<Regex> = OnceLock::new();
    if !is_unsymbolized(frame) {
        return frame.function.clone();
    }
    let Some(object) = frame.object.as_deref() else {
        return "??".to_string();
    };
    let file = object.rsplit('/').next().unwrap_or(object);
    // `mymod.cpython-313d-x86_64-linux-gnu.so`, `mymod.abi3.so`, `mymod.pypy310-pp73-x86_64-linux-gnu.so`.
    let tag = ABI_TAG
        .get_or_init(|| Regex::new(r"\.(?:cpython-[^./]*|pypy[^./]*|abi3)\.so$").expect("regex"));
    let module = tag.replace(file, ".so");
    match frame.offset {
        Some(offset) => format!("{module}+{offset:#x}"),
        None => module.into_owned(),
    }
}

/// Parses one sanitizer (ASan / LSan / UBSan, llvm-symbolizer style) frame line, e.g.
/// `    #2 0x7f14 in extra_decref /work/bugzoo.c:96:9` or
/// `    #0 0x5596 in free (/tmp/python+0x12df5f6) (BuildId: a33f...)`.
/// Returns `None` for lines that are not frames.
pub fn parse_sanitizer_frame(line: &str) -> Option<Frame> {
    static PREFIX: OnceLock<Regex> = OnceLock::new();
    static MODULE: OnceLock<Regex> = OnceLock::new();
    static LOCATION: OnceLock<Regex> = OnceLock::new();
    static SOURCE_FILE: OnceLock<Regex> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        Regex::new(r"^\s*#\d+\s+0x[0-9a-fA-F]+(?:\s+in)?(?:\s+(.*))?$").expect("regex")
    });
    let module = MODULE
        .get_or_init(|| Regex::new(r"^(.*?)\s*\(([^()]*?)\+0x([0-9a-fA-F]+)\)$").expect("regex"));
    let location = LOCATION.get_or_init(|| Regex::new(r"^(.+?):(\d+)(?::\d+)?$").expect("regex"));
    // A bare source file name, what llvm-symbolizer prints for a module built without `-g`
    // (`in use_after_free nodbg.c`: the symbol table names the function, DW_AT_name the file).
    let source_file = SOURCE_FILE.get_or_init(|| {
        Regex::new(r"^[^/\s()]+\.(?:c|h|cc|cpp|cxx|c\+\+|hh|hpp|hxx|C|m|mm|rs|S|s|pyx|f90)$")
            .expect("regex")
    });

    let rest = prefix.captures(line)?.get(1).map_or("", |m| m.as_str());
    let rest = match rest.find(" (BuildId:") {
        Some(i) => &rest[..i],
        None => rest,
    }
    .trim();
    if let Some(c) = module.captures(rest) {
        let function = c[1].trim();
        return Some(Frame {
            function: if function.is_empty() { "??" } else { function }.to_string(),
            file: None,
            line: None,
            object: Some(c[2].to_string()),
            offset: u64::from_str_radix(&c[3], 16).ok(),
        });
    }
    // `function file:line:col`, `function file` or just `function`; C++ names contain spaces,
    // so the location is the last token and only when it looks like a path.
    if let Some((function, last)) = rest.rsplit_once(' ') {
        if let Some(c) = location.captures(last) {
            return Some(Frame {
                function: function.trim().to_string(),
                file: Some(c[1].to_string()),
                line: c[2].parse().ok(),
                object: None,
                offset: None,
            });
        }
        if last.contains('/') || source_file.is_match(last) {
            return Some(Frame {
                function: function.trim().to_string(),
                file: Some(last.to_string()),
                line: None,
                object: None,
                offset: None,
            });
        }
    }
    Some(Frame::named(if rest.is_empty() { "??" } else { rest }))
}

/// The frames of the stack block that starts at `lines[0]`: the run of consecutive frame lines
/// (see [`parse_sanitizer_frame`]) there, empty when `lines[0]` is not a frame line.
pub fn parse_stack_block(lines: &[&str]) -> Vec<Frame> {
    lines
        .iter()
        .map_while(|l| parse_sanitizer_frame(l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_shapes() {
        let f = parse_sanitizer_frame(
            "    #2 0x7f141f7384cb in extra_decref /work/main/tests/bugzoo/bugzoo.c:96:9",
        )
        .unwrap();
        assert_eq!(f.function, "extra_decref");
        assert_eq!(f.file.as_deref(), Some("/work/main/tests/bugzoo/bugzoo.c"));
        assert_eq!(f.line, Some(96));

        let f = parse_sanitizer_frame("    #0 0x559c725065f6 in free (/tmp/exp/asan/python+0x12df5f6) (BuildId: a33fa5d29730c0b723ef8487c0156389c0806190)").unwrap();
        assert_eq!(f.function, "free");
        assert_eq!(f.object.as_deref(), Some("/tmp/exp/asan/python"));
        assert!(is_machinery(&f));

        let f = parse_sanitizer_frame(
            "    #0 0x5572fa6d87e9 in PyObject_Hash /tmp/exp/asan/../Python-3.13.5/Objects/object.c",
        )
        .unwrap();
        assert_eq!(f.line, None);
        assert!(is_interpreter_core(&f));

        let f = parse_sanitizer_frame("    #3 0x7f12 (/lib/x86_64-linux-gnu/libc.so.6+0x29d90)")
            .unwrap();
        assert_eq!(f.function, "??");
        assert!(is_interpreter_core(&f));

        let f = parse_sanitizer_frame(
            "    #1 0x4 in overflow(char const*, unsigned long) /tmp/v/p.cc:28:3",
        )
        .unwrap();
        assert_eq!(f.function, "overflow(char const*, unsigned long)");
        assert_eq!(f.line, Some(28));

        assert!(parse_sanitizer_frame("SUMMARY: AddressSanitizer: heap-use-after-free").is_none());
    }

    #[test]
    fn unsymbolized_frames_keep_module_and_offset() {
        let f = parse_sanitizer_frame(
            "    #3 0x7f9b059dc61a in  (/tmp/x/mymod.cpython-313d-x86_64-linux-gnu.so+0x1234)",
        )
        .unwrap();
        assert_eq!(f.function, "??");
        assert_eq!(
            f.object.as_deref(),
            Some("/tmp/x/mymod.cpython-313d-x86_64-linux-gnu.so")
        );
        assert_eq!(f.offset, Some(0x1234));
        assert!(is_unsymbolized(&f));
        assert_eq!(frame_name(&f), "mymod.so+0x1234");

        let f = parse_sanitizer_frame(
            "    #2 0x7f9b059dc5d6  (/path/mymod.cpython-313d-x86_64-linux-gnu.so+0x5678) (BuildId: fc2b89392da5d3759086e57004a5302b0ac6a7e6)",
        )
        .unwrap();
        assert_eq!(f.offset, Some(0x5678));
        assert_eq!(frame_name(&f), "mymod.so+0x5678");

        let f =
            parse_sanitizer_frame("    #0 0x7f12 (/venv/lib/_speedups.abi3.so+0xbeef)").unwrap();
        assert_eq!(frame_name(&f), "_speedups.so+0xbeef");
        let f = parse_sanitizer_frame("    #0 0x7f12 (/usr/lib/libfoo.so.1+0x10)").unwrap();
        assert_eq!(frame_name(&f), "libfoo.so.1+0x10");

        // Symbolized frames are named by their function, whatever the module.
        let f = parse_sanitizer_frame("    #0 0x7f12 in scratch (/tmp/mymod.so+0x10)").unwrap();
        assert_eq!(frame_name(&f), "scratch");
        // No module at all (valgrind without `<obj>`): `??`, never a suffix.
        assert_eq!(frame_name(&Frame::named("??")), "??");
    }

    #[test]
    fn bare_source_file_of_a_module_without_debug_info_is_a_file() {
        let f = parse_sanitizer_frame("    #0 0x7f1f4efe661a in use_after_free nodbg.c").unwrap();
        assert_eq!(f.function, "use_after_free");
        assert_eq!(f.file.as_deref(), Some("nodbg.c"));
        assert_eq!(f.line, None);
        let f = parse_sanitizer_frame("    #4 0x7f1f in Foo::bar(int) foo.cpp").unwrap();
        assert_eq!(f.function, "Foo::bar(int)");
        assert_eq!(f.file.as_deref(), Some("foo.cpp"));
    }

    /// Real captures (fixtures/README.md): an extension built without `-g`, as built and after
    /// `strip --strip-all`. The bucket must name the function, or the module and offset; before,
    /// they were `c` (from `use_after_free nodbg.c`) and `so` (the module's file suffix).
    #[test]
    fn culprit_of_an_extension_without_debug_info_is_a_symbol_or_module_offset() {
        let cases = [
            (
                include_str!("fixtures/asan_ext_without_debug_info.txt"),
                "use_after_free",
            ),
            (
                include_str!("fixtures/asan_ext_stripped.txt"),
                "nodbg.so+0x261a",
            ),
        ];
        for (text, culprit) in cases {
            let findings = crate::detect::parse(text);
            assert_eq!(findings.len(), 1, "{findings:?}");
            let f = &findings[0];
            assert_eq!(f.class, crate::detect::BugClass::UseAfterFree);
            assert_eq!(f.culprit().as_deref(), Some(culprit));
            assert_eq!(
                f.signature().0,
                format!("{}|{culprit}|-", crate::detect::BugClass::UseAfterFree.id())
            );
        }
    }

    #[test]
    fn machinery_table() {
        for name in [
            "__asan_memcpy",
            "_PyMem_DebugRawFree",
            "PyObject_Free",
            "_Py_Dealloc",
            "Py_DECREF",
            "Py_XDECREF",
            "capisan::ops::run",
            "shim_Py_INCREF",
            "std::panicking::begin_panic",
            "LLVMFuzzerTestOneInput",
            "abort",
        ] {
            assert!(is_machinery(&Frame::named(name)), "{name}");
        }
        for name in ["extra_decref", "list_dealloc", "PyObject_Repr"] {
            assert!(!is_machinery(&Frame::named(name)), "{name}");
        }
    }
}
