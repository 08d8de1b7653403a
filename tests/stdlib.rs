//! `fuzz-stdlib` on the asan 3.13 variant: a shared module (_struct, in lib-dynload) and a
//! built-in one (marshal, imported by name: it has no file) each get a campaign that runs
//! inputs, grows coverage and finds nothing in CPython 3.13.5.
//! (itertools, the first built-in choice, finds a real CPython 3.13.5 bug within seconds:
//! itertools.chain has no tp_clear, so a cycle chain -> tuple_iterator -> tuple -> chain, made
//! with the deprecated __setstate__, is never collected; capisan reports it as a gc-clear
//! bucket on a subclass of chain. A test that must find nothing cannot use it.)
//! Needs the asan variant (`cargo xtask build-asan`).

mod common;

use std::path::Path;

use common::xtask;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `fuzz-stdlib --module MODULE --time 30`, asserting the campaign ran >= 50 inputs, its final
/// coverage is above its first status line's, and it has no bucket (printed if it has).
fn fuzz_stdlib(module: &str, kind: &str) {
    let out = tempfile::tempdir().unwrap();
    let r = xtask(
        &[
            "fuzz-stdlib",
            "--module",
            module,
            "--time",
            "30",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        r.ok,
        "fuzz-stdlib {module} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{module} ")))
        .unwrap_or_else(|| panic!("no summary line for {module}:\n{}", r.stdout));
    assert!(line.contains(kind), "{module} is not {kind}: {line}");
    let dir = out.path().join(module);
    let summary = json(&dir.join("summary.json"));
    let execs = summary["execs"].as_u64().unwrap_or(0);
    // A quiet machine runs thousands of inputs in 30 s; a loaded one (each fork-mode job
    // starts an ASan interpreter and imports the module) far fewer.
    assert!(
        execs >= 50,
        "{module}: the campaign barely ran: {execs} inputs\n{}",
        r.stdout
    );
    let progress = std::fs::read_to_string(dir.join("progress.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(progress.lines().next().unwrap()).unwrap();
    let (first, last) = (
        first["cov"].as_u64().unwrap(),
        summary["cov"].as_u64().unwrap(),
    );
    assert!(
        last > first,
        "{module}: coverage did not grow: {first} -> {last}"
    );
    let buckets = json(&dir.join("buckets.json"));
    let buckets = buckets.as_array().unwrap();
    assert!(
        buckets.is_empty(),
        "{module}: {} bucket(s) on CPython 3.13.5:\n{}",
        buckets.len(),
        r.stdout
    );
}

#[test]
fn struct_a_shared_module() {
    fuzz_stdlib("_struct", "shared");
}

#[test]
fn marshal_a_builtin_module() {
    fuzz_stdlib("marshal", "built-in");
}

/// A module the table excludes is refused with the table's reason, before anything is built.
#[test]
fn an_excluded_module_is_refused_with_its_reason() {
    let r = xtask(&["fuzz-stdlib", "--module", "posix", "--time", "1"], &[]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("posix is excluded") && r.stderr.contains("kill"),
        "{}",
        r.stderr
    );
}

/// The table matches the variant: every C module it has is listed, every included one loads
/// by name with callables, and every skipped callable exists (a stale row is caught here).
#[test]
fn the_table_covers_the_variant_and_every_included_module_loads() {
    use capisan::stdlib::{discover, Table, TABLE_VERSION};
    use capisan_build::{Cache, Manifest, Variant};
    let m = Manifest::find(&Cache::resolve(None), Variant::Asan, Some(TABLE_VERSION)).unwrap();
    let table = Table::builtin().unwrap();
    let listed = discover(&m, &[]).unwrap().modules();
    // Included modules this build has (one built without an optional library lacks some).
    let included: Vec<String> = table
        .modules
        .iter()
        .filter(|r| r.exclude.is_none() && listed.iter().any(|(n, _)| *n == r.name))
        .map(|r| r.name.clone())
        .collect();
    let found = discover(&m, &included).unwrap();
    let unlisted: Vec<String> = found
        .modules()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| table.row(n).is_none())
        .collect();
    assert!(unlisted.is_empty(), "not in the table: {unlisted:?}");
    assert!(found.errors.is_empty(), "do not load: {:?}", found.errors);
    for r in table.modules.iter().filter(|r| r.exclude.is_none()) {
        let Some(callables) = found.callables.get(&r.name) else {
            continue; // not in this build
        };
        assert!(!callables.is_empty(), "{} has no callables", r.name);
        for s in r.skip.keys() {
            let q = format!("{}.{s}", r.name);
            assert!(
                callables.contains(&q),
                "{}: skips {s}, which it lacks",
                r.name
            );
        }
    }
    assert!(found.builtin.contains(&"marshal".to_string()));
    assert!(found.shared.contains_key("_struct"));
}

/// Run the JSON `ops` once in a 3-second `fuzz-stdlib --module MODULE` campaign's setting (its
/// binary and environment, plus `extra`); returns (clean exit, output).
fn run_in_campaign_of(module: &str, ops: &str, extra: &[(&str, String)]) -> (bool, String) {
    let out = tempfile::tempdir().unwrap();
    let r = xtask(
        &[
            "fuzz-stdlib",
            "--module",
            module,
            "--time",
            "3",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let camp = capisan::campaign::Campaign::load(&out.path().join(module)).unwrap();
    let input = out.path().join("input.json");
    std::fs::write(&input, ops).unwrap();
    let (ok, text) = camp.run_once(&input, extra).unwrap();
    assert!(
        text.contains("Executed") || !ok,
        "the input did not run:\n{text}"
    );
    (ok, text)
}

/// A weak reference's callback is released when its referent dies; the GC audit of the dying
/// object must not charge that release to it (it is the weakref's reference, and the callback
/// runs Python code). `_weakref.ReferenceType(plain, callback)`, then the slot holding `plain`
/// is overwritten: once reported as "Plain: dealloc released 1 reference(s) to the Plain in
/// s1, tp_traverse visited it 0 time(s)" by fuzz-stdlib on _weakref.
#[test]
fn a_weakref_callback_released_at_death_is_not_a_traverse_bug() {
    // Only ReferenceType is callable, as callable 0.
    let ops = r#"[{"NewInstance":{"dst":3,"class":"Plain"}},{"NewInstance":{"dst":1,"class":"Plain"}},{"CallExt":{"func":0,"nargs":2,"args":[3,1,0],"dst":3}},{"NewInstance":{"dst":4,"class":"Plain"}},{"CallExt":{"func":0,"nargs":2,"args":[4,1,0],"dst":5}},{"Release":{"slot":4}}]"#;
    let extra = [("CAPISAN_EXT_FUNCS", "ReferenceType".to_string())];
    let (ok, text) = run_in_campaign_of("_weakref", ops, &extra);
    assert!(text.contains("Executed"), "the input did not run:\n{text}");
    assert!(ok && !text.contains("VIOLATION"), "{text}");
}

/// The `delattrs` protocol deletes every data attribute of an object of the module under
/// test, so a C setter gets its NULL value. On a suspended generator's frame (a vocabulary
/// value) it reaches a real CPython bug present from 3.13.5 through 3.13.15, fixed in 3.13.16
/// (gh-156189): `frame_settrace_opcodes` passes NULL to `PyBool_Check`. Plain python:
/// `import sys; del sys._getframe().f_trace_opcodes` crashes the same way.
#[test]
fn deleting_a_frames_attributes_reaches_the_f_trace_opcodes_crash() {
    // make_value(127) is the frame; protocol 28 is `delattrs`.
    let ops =
        r#"[{"NewValue":{"dst":0,"code":127}},{"Protocol":{"obj":0,"which":28,"arg":0,"dst":1}}]"#;
    let (ok, text) = run_in_campaign_of("builtins", ops, &[]);
    assert!(!ok, "the frame's setters ran clean:\n{text}");
    assert!(
        text.contains("frame_settrace_opcodes") && text.contains("Protocol delattrs"),
        "{text}"
    );
}

/// The `weakref` protocol keeps a weak reference with a callback as the op's result, and the
/// sequence's end drops the object before it. `typing.ParamSpecArgs` (_typing's) is freed with
/// its weak references uncleared (gh-157621, 3.13.5 through 3.13.15, fixed in 3.13.16), so
/// dropping the reference reads freed memory. Plain python: `obj = typing.ParamSpec('P').args;
/// r = weakref.ref(obj, lambda r: None); del obj; del r`.
#[test]
fn a_weak_reference_outliving_a_paramspecargs_reaches_its_use_after_free() {
    // ParamSpecArgs alone is callable 0, called with make_value(37) ('ascii'); protocol 26
    // is `weakref`.
    let ops = r#"[{"CallExt":{"func":0,"nargs":1,"args":[165,0,0],"kw":0,"dst":0}},{"Protocol":{"obj":0,"which":26,"arg":0,"dst":1}}]"#;
    let extra = [("CAPISAN_EXT_FUNCS", "ParamSpecArgs".to_string())];
    let (ok, text) = run_in_campaign_of("_typing", ops, &extra);
    assert!(!ok, "the weak reference was dropped cleanly:\n{text}");
    assert!(
        text.contains("heap-use-after-free")
            && text.contains("paramspecattr_dealloc")
            && text.contains("Protocol weakref"),
        "{text}"
    );
}
