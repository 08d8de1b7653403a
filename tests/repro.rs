//! minimize + repro + confirm on bug-zoo findings: each reproducer is built and run *outside*
//! capisan (its own build.sh / run.sh) and fails the same way, with at most 5 ops.

mod common;

use std::path::{Path, PathBuf};

use capisan::detect::{self, BugClass};
use common::xtask;

/// Fuzz one zoo function until it crashes; return the first crash artifact.
fn artifact_for(func: &str, pythonmalloc: Option<&str>) -> PathBuf {
    let ext = common::build_zoo("asan", "repro");
    let out = std::env::temp_dir().join(format!("capisan-repro-campaign-{func}"));
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "fuzz-ext",
        "bugzoo",
        "--ext-path",
        ext.to_str().unwrap(),
        "--funcs",
        func,
        "--time",
        "90",
        "--seed",
        "3",
        "--json",
        "--stop-at-first-finding",
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(pm) = pythonmalloc {
        args.extend(["--pythonmalloc", pm]);
    }
    let r = xtask(&args, &[]);
    assert!(r.ok, "{}", r.stderr);
    let mut arts: Vec<PathBuf> = std::fs::read_dir(out.join("artifacts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("crash-")
                && p.extension().is_none()
        })
        .collect();
    arts.sort();
    // Non-fatal findings (leaks, GC violations) do not end a campaign: their input is kept in
    // findings/<bucket>/input instead of a crash artifact.
    let mut kept: Vec<PathBuf> = std::fs::read_dir(out.join("findings"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("input"))
        .filter(|p| p.is_file())
        .collect();
    kept.sort();
    arts.into_iter()
        .chain(kept)
        .next()
        .unwrap_or_else(|| panic!("{func}: no finding in 90 s"))
}

/// `repro` into a fresh directory; returns it.
fn repro(artifact: &Path, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capisan-repro-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let r = xtask(
        &[
            "repro",
            artifact.to_str().unwrap(),
            "-o",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "repro failed: {}", r.stderr);
    for f in [
        "repro.c",
        "watch.gdb",
        "README.md",
        "build.sh",
        "run.sh",
        "ops.json",
    ] {
        assert!(dir.join(f).exists(), "{name}: no {f}");
    }
    let ops: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ops.json")).unwrap()).unwrap();
    let n = ops["ops"].as_array().unwrap().len();
    assert!(n <= 5, "{name}: minimized to {n} ops, want <= 5");
    dir
}

/// Build and run the C reproducer on the asan variant, the way its README says.
fn run_outside(dir: &Path) -> (bool, String) {
    let b = duct::cmd!(dir.join("build.sh"), "asan")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        b.status.success(),
        "build.sh: {}",
        String::from_utf8_lossy(&b.stdout)
    );
    let env = std::fs::read_to_string(dir.join("campaign.env")).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let o = duct::cmd!(dir.join("run.sh"), "asan")
        .env("EXT_PATH", get("EXT_PATH"))
        .env("PYTHONMALLOC_OVERRIDE", get("PYTHONMALLOC_OVERRIDE"))
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn crashing_zoo_bugs_reproduce_outside_capisan() {
    let cases: [(&str, BugClass, Option<&str>); 5] = [
        ("extra_decref", BugClass::UseAfterFree, None),
        ("double_free", BugClass::DoubleFree, None),
        ("overflow", BugClass::BufferOverflow, None),
        ("borrowed_after_mutation", BugClass::BorrowedRefMisuse, None),
        (
            "alloc_mismatch",
            BugClass::AllocatorMismatch,
            Some("malloc_debug"),
        ),
    ];
    for (func, class, pm) in cases {
        let art = artifact_for(func, pm);
        let dir = repro(&art, func);
        let (ok, text) = run_outside(&dir);
        assert!(!ok, "{func}: the reproducer must fail:\n{text}");
        let found = detect::parse(&text);
        assert!(
            found.iter().any(|f| f.class == class),
            "{func}: expected {class:?}, got {found:#?}\n{text}"
        );
        assert!(
            art.exists(),
            "the original artifact must survive minimization"
        );
    }
}

#[test]
fn leak_and_gc_reproducers_report_their_bug() {
    for (func, expect) in [
        ("leak_on_error", "REFERENCE LEAK"),
        ("holder_traverse_bug", "GC TRAVERSAL BUG"),
    ] {
        let art = artifact_for(func, None);
        let dir = repro(&art, func);
        let (ok, text) = run_outside(&dir);
        assert!(
            !ok && text.contains(expect),
            "{func}: expected {expect}:\n{text}"
        );
    }
}

#[test]
fn confirm_records_which_variants_see_a_double_free() {
    let art = artifact_for("double_free", None);
    let dir = repro(&art, "double_free-confirm");
    let r = xtask(&["confirm", dir.to_str().unwrap()], &[]);
    assert!(r.ok, "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("confirm.json")).unwrap()).unwrap();
    let seen: Vec<(String, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["variant"].as_str().unwrap().to_string(),
                c["reproduced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(seen.contains(&("asan".to_string(), true)), "{seen:?}");
    assert!(
        seen.contains(&("pydebug".to_string(), true)),
        "glibc sees it on pydebug too: {seen:?}"
    );
}

/// A two-op sequence that calls `bugzoo.<func>("x")` (the TypeError path) with the leak rule.
fn leak_sequence(func: &str) -> capisan::ops::Resolved {
    use capisan::ops::{Op, Slot};
    capisan::ops::Resolved {
        ext: vec![format!("bugzoo.{func}")],
        ops: vec![
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
        ],
    }
}

/// Write `repro.c` for `r` with the library's build.sh / run.sh into a fresh directory, the
/// way `cargo xtask repro` lays it out, for the zoo built in `ext`.
fn write_c_repro(
    r: &capisan::ops::Resolved,
    expect: capisan::repro::Expect,
    name: &str,
    ext: &Path,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("capisan-repro-c-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("repro.c"), capisan::repro::c::emit(r, expect)).unwrap();
    std::fs::write(
        dir.join("repro.py"),
        capisan::repro::python::emit(r, expect).expect("every op has a Python spelling"),
    )
    .unwrap();
    for (f, text) in [
        ("build.sh", capisan::repro::BUILD_SH),
        ("run.sh", capisan::repro::RUN_SH),
    ] {
        std::fs::write(dir.join(f), text).unwrap();
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        dir.join("campaign.env"),
        format!(
            "EXT_PATH={}\nPYTHONMALLOC_OVERRIDE=\nVARIANT=asan\n",
            ext.display()
        ),
    )
    .unwrap();
    dir
}

/// The leak reproducers (repro.c and repro.py) must tell a leak from its clean twin. Before, repro.c
/// looked the callee up inside the measured loop (a new reference every call), so the clean twin
/// "leaked" too, and repro.py printed deltas without a verdict.
#[test]
fn leak_reproducers_tell_a_leak_from_its_clean_twin() {
    let ext = common::build_zoo("asan", "repro-leak");
    for (func, leaks) in [("leak_on_error_clean", false), ("leak_on_error", true)] {
        let dir = write_c_repro(
            &leak_sequence(func),
            capisan::repro::Expect::Leak,
            func,
            &ext,
        );
        let (c_ok, c_text) = run_outside(&dir);
        let py = duct::cmd!(dir.join("run.sh"), "asan", "py")
            .env("EXT_PATH", &ext)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .unwrap();
        let py_text = String::from_utf8_lossy(&py.stdout).into_owned();
        for (kind, ok, text) in [
            ("repro.c", c_ok, c_text),
            ("repro.py", py.status.success(), py_text),
        ] {
            let func = format!("{func} ({kind})");
            let measured = text
                .lines()
                .find(|l| l.contains("total refcount delta of each measured call"))
                .unwrap_or_else(|| panic!("{func}: no measurement printed:\n{text}"));
            if leaks {
                assert!(
                    !ok && text.contains(
                        "REFERENCE LEAK: every measured call of bugzoo.leak_on_error leaked"
                    ),
                    "{func} leaks one list per call:\n{text}"
                );
            } else {
                assert!(
                    ok && !text.contains("REFERENCE LEAK"),
                    "{func} leaks nothing; the reproducer said:\n{text}"
                );
                assert!(measured.ends_with("[0, 0, 0]"), "{measured}");
                assert!(
                    text.contains("finished without the expected failure"),
                    "{text}"
                );
            }
        }
    }
}

/// repro.c, with its runtime (harness/src/repro/runtime.c) and every op kind, compiles against
/// the asan variant's headers (`clang -fsyntax-only`, the flags build.sh uses).
#[test]
fn emitted_c_compiles_against_the_variant_headers() {
    use capisan::ops::{CallableKind, Op, PyClass, Slot};
    let cache = capisan_build::Cache::resolve(None);
    let m = capisan_build::Manifest::find(&cache, capisan_build::Variant::Asan, None)
        .expect("the asan variant is built (cargo xtask build-asan)");
    let (a, b, c) = (Slot(0), Slot(1), Slot(2));
    let ops = vec![
        Op::NewInt { dst: a, value: -3 },
        Op::NewFloat {
            dst: b,
            value: f64::NAN,
        },
        Op::NewStr {
            dst: c,
            text: "q\"\\".into(),
        },
        Op::NewBytes {
            dst: a,
            data: vec![0, 255, b'"'],
        },
        Op::NewTuple { dst: b, len: 3 },
        Op::NewList { dst: c },
        Op::NewListOf { dst: a, len: 2 },
        Op::NewDict { dst: b },
        Op::NewSet { dst: c },
        Op::NewInstance {
            dst: a,
            class: PyClass::Evil,
        },
        Op::NewCallable {
            dst: b,
            kind: CallableKind::Clearer,
            target: c,
        },
        Op::Dup { src: a, dst: c },
        Op::Incref { slot: a },
        Op::Decref { slot: a },
        Op::ListAppend { list: c, item: a },
        Op::ListGetItem {
            list: c,
            index: 0,
            dst: b,
        },
        Op::ListDelSlice {
            list: c,
            lo: 0,
            hi: 1,
        },
        Op::DictGetItemRef {
            dict: b,
            key: a,
            dst: c,
        },
        Op::GcCollect { generation: 2 },
        Op::CallExt {
            func: 0,
            nargs: 2,
            args: [a, b, c],
            dst: c,
            kw: 0,
        },
        Op::Release { slot: a },
    ];
    let r = capisan::ops::Resolved {
        ext: vec!["bugzoo.extra_decref_clean".into()],
        ops,
    };
    let dir = tempfile::tempdir().unwrap();
    for expect in [
        capisan::repro::Expect::Crash,
        capisan::repro::Expect::Leak,
        capisan::repro::Expect::GcTraversal,
    ] {
        let src = dir.path().join(format!("repro-{expect:?}.c"));
        std::fs::write(&src, capisan::repro::c::emit(&r, expect)).unwrap();
        let mut args: Vec<String> = vec!["-fsyntax-only".into(), "-Wall".into(), "-Werror".into()];
        args.extend(m.include_dirs.iter().map(|d| format!("-I{}", d.display())));
        args.push(src.display().to_string());
        let out = duct::cmd(&m.compiler.cc, &args)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .unwrap();
        assert!(
            out.status.success(),
            "{expect:?}: {} {}:\n{}",
            m.compiler.cc,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `show` on an input of a fuzz-ext campaign names the callables (`CallExt bugzoo.double_free`)
/// the way the harness resolved them, not by their index (`CallExt #116`).
#[test]
fn show_names_the_callables_of_an_extension_campaign() {
    use capisan::ops::{Op, Slot};
    let ext = common::build_zoo("asan", "show");
    let cache = capisan_build::Cache::resolve(None);
    let m = capisan_build::Manifest::find(&cache, capisan_build::Variant::Asan, None)
        .expect("the asan variant is built (cargo xtask build-asan)");
    let dir = tempfile::tempdir().unwrap();
    let mut env = m.env();
    env.extend([
        ("CAPISAN_EXT".to_string(), "bugzoo".to_string()),
        ("CAPISAN_EXT_PATH".to_string(), ext.display().to_string()),
        (
            "CAPISAN_EXT_FUNCS".to_string(),
            "extra_decref,double_free".to_string(),
        ),
    ]);
    std::fs::write(
        dir.path().join("campaign.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "target": "capi_sequences",
            "variant": "asan",
            "binary": "/nonexistent",
            "env": env,
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
    let input = dir.path().join("artifacts").join("crash-show");
    let ops = vec![
        Op::NewList { dst: Slot(2) },
        Op::CallExt {
            func: 116,
            nargs: 2,
            args: [Slot(2), Slot(2), Slot(0)],
            dst: Slot(3),
            kw: 0,
        },
    ];
    std::fs::write(&input, serde_json::to_vec(&ops).unwrap()).unwrap();
    let r = xtask(&["show", input.to_str().unwrap()], &[]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    // Sorted like the harness's list: [double_free, extra_decref]; 116 % 2 = 0.
    assert!(
        r.stdout
            .contains("#1 s3 = CallExt bugzoo.double_free(s2, s2)"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // Without a campaign the index is all there is, and that is said once, not guessed.
    let stray = dir.path().join("stray.json");
    std::fs::write(&stray, serde_json::to_vec(&ops).unwrap()).unwrap();
    let r = xtask(
        &[
            "show",
            stray.to_str().unwrap(),
            "--campaign",
            "/nonexistent",
        ],
        &[],
    );
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("CallExt #116(s2, s2)"), "{}", r.stdout);
    assert!(r.stderr.contains("names are unknown"), "{}", r.stderr);
}
