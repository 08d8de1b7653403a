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
    arts.into_iter()
        .next()
        .unwrap_or_else(|| panic!("{func}: no crash in 90 s"))
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
