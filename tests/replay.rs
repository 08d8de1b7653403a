//! Corpus replay: the committed corpora pass (JUnit), a reintroduced zoo bug makes the replay
//! fail naming its bucket (JSON and SARIF), corrupt files are reported and skipped, and a batch
//! charges hangs, blow-ups and crashes to their own inputs and goes on.

mod common;

use common::{ext_build, root, xtask};
use serde_json::Value;

#[test]
fn committed_corpora_pass_in_junit_form() {
    let out = std::env::temp_dir().join("capisan-replay.junit.xml");
    let r = xtask(
        &["replay", "--format", "junit", "-o", out.to_str().unwrap()],
        &[],
    );
    assert!(
        r.ok,
        "replay of the committed corpora must pass: {}",
        r.stderr
    );
    let xml = std::fs::read_to_string(&out).unwrap();
    assert!(
        xml.contains("<testsuite name=\"capisan-replay\"") && xml.contains("failures=\"0\""),
        "{xml}"
    );
    assert!(xml.matches("<testcase ").count() >= 10, "{xml}");
}

/// The zoo with `extra_decref_clean` wired to the buggy C function again.
fn reintroduced_ext() -> std::path::PathBuf {
    let src = std::fs::read_to_string(root().join("tests/bugzoo/bugzoo.c")).unwrap();
    let patched = src.replace(
        "{\"extra_decref_clean\", extra_decref_clean,",
        "{\"extra_decref_clean\", extra_decref,",
    );
    assert_ne!(
        src, patched,
        "the method table line moved; update this test"
    );
    let dir = std::env::temp_dir().join("capisan-reintroduced");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bugzoo.c");
    std::fs::write(&file, patched).unwrap();
    let out = dir.join("build");
    ext_build(&file, "asan", &out);
    out
}

#[test]
fn reintroduced_zoo_bug_fails_the_replay_naming_its_bucket() {
    let ext = reintroduced_ext();
    let r = xtask(
        &[
            "replay",
            "--only",
            "bugzoo",
            "--ext-path",
            ext.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert!(!r.ok, "a reintroduced bug must fail the replay");
    let cases: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let failed: Vec<&Value> = cases.iter().filter(|c| c["status"] == "crash").collect();
    assert_eq!(
        failed.len(),
        1,
        "exactly the extra_decref regression case fails: {cases:#?}"
    );
    let sig = failed[0]["signature"].as_str().unwrap();
    assert!(sig.starts_with("use-after-free|extra_decref"), "{sig}");

    let sarif_path = std::env::temp_dir().join("capisan-replay.sarif");
    let r = xtask(
        &[
            "replay",
            "--only",
            "bugzoo",
            "--ext-path",
            ext.to_str().unwrap(),
            "--format",
            "sarif",
            "-o",
            sarif_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!r.ok);
    let sarif: Value = serde_json::from_slice(&std::fs::read(&sarif_path).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["ruleId"], "use-after-free");
    assert!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("bugzoo.c")
    );
}

#[test]
fn corrupt_and_foreign_files_are_reported_and_skipped() {
    let corpora = tempfile::tempdir().unwrap();
    let dir = corpora.path().join("capi_sequences");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.json"), "[{\"NewList\": {\"dst\": ").unwrap();
    std::fs::write(dir.join("good"), "[{\"NewList\":{\"dst\":0}}]").unwrap();
    let r = xtask(
        &[
            "replay",
            "--corpora",
            corpora.path().to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert!(
        r.ok,
        "a corrupt file must not fail the replay: {}",
        r.stderr
    );
    let cases: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let broken = cases
        .iter()
        .find(|c| c["input"].as_str().unwrap().ends_with("broken.json"))
        .unwrap();
    assert_eq!(broken["status"], "corrupt");
    assert!(broken["detail"]
        .as_str()
        .unwrap()
        .contains("not a capisan op list"));
    assert!(cases
        .iter()
        .any(|c| c["input"].as_str().unwrap().ends_with("good") && c["status"] == "pass"));
}

/// An extension whose calls hang, eat memory, abort, or return at once: the batch replay must charge
/// each failure to its own input and go on with the inputs after it.
const LIMITS_EXT: &str = r#"
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *spin(PyObject *self, PyObject *arg) {
    volatile unsigned long n = 0;
    for (;;) n++;
    Py_RETURN_NONE;
}

static char *volatile kept[128];

static PyObject *hog(PyObject *self, PyObject *arg) {
    for (int i = 0; i < 128; i++) {
        kept[i] = malloc(64 << 20);
        if (kept[i] == NULL) break;
        memset(kept[i], i + 1, 64 << 20);
    }
    Py_RETURN_NONE;
}

static PyObject *ok(PyObject *self, PyObject *arg) { Py_RETURN_NONE; }

static PyObject *boom(PyObject *self, PyObject *arg) { abort(); }

static PyMethodDef methods[] = {
    {"boom", boom, METH_O, NULL},
    {"hog", hog, METH_O, NULL},
    {"ok", ok, METH_O, NULL},
    {"spin", spin, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "replaylimits", NULL, -1, methods};

PyMODINIT_FUNC PyInit_replaylimits(void) { return PyModule_Create(&module); }
"#;

#[test]
fn batched_replay_charges_hangs_and_blowups_to_their_own_inputs() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("replaylimits.c");
    std::fs::write(&src, LIMITS_EXT).unwrap();
    let ext = work.path().join("build");
    ext_build(&src, "asan", &ext);
    let corpora = work.path().join("corpora");
    let call = |func: u8| {
        format!(
            r#"[{{"NewInt":{{"dst":0,"value":7}}}},{{"CallExt":{{"func":{func},"nargs":1,"args":[0,0,0],"dst":7}}}}]"#
        )
    };
    // Two corpora, replayed separately: the hang with a short timeout, the blow-up with a long
    // one (allocating is slow on a machine that must first reclaim its page cache). Sorted
    // names put passing inputs before and after each failure, all in one batch.
    let corpus = |name: &str, inputs: &[(&str, u8)]| {
        let dir = corpora.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("capisan.json"),
            r#"{"target":"capi_sequences","ext":{"module":"replaylimits","source":"replaylimits.c","funcs":["boom","hog","ok","spin"]}}"#,
        )
        .unwrap();
        for (input, func) in inputs {
            std::fs::write(dir.join(input), call(*func)).unwrap();
        }
    };
    corpus(
        "hangs",
        &[("a-ok", 2), ("b-ok", 2), ("c-spin", 3), ("d-ok", 2)],
    );
    corpus(
        "blowups",
        &[("e-hog", 1), ("f-ok", 2), ("g-boom", 0), ("h-ok", 2)],
    );
    let replay = |only: &str, timeout: &str| -> Vec<Value> {
        let r = xtask(
            &[
                "replay",
                "--corpora",
                corpora.to_str().unwrap(),
                "--only",
                only,
                "--ext-path",
                ext.to_str().unwrap(),
                "--timeout",
                timeout,
                "--rss-mb",
                "1200",
                "--batch",
                "100",
                "--format",
                "json",
            ],
            &[],
        );
        assert!(!r.ok, "{only}: a failing input must fail the replay");
        serde_json::from_str(&r.stdout).unwrap()
    };
    let mut cases = replay("hangs", "2");
    cases.extend(replay("blowups", "60"));
    let status = |name: &str| {
        cases
            .iter()
            .find(|c| c["input"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {cases:#?}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("c-spin"), "timeout", "{cases:#?}");
    assert_eq!(status("e-hog"), "oom", "{cases:#?}");
    assert_eq!(status("g-boom"), "crash", "{cases:#?}");
    for name in ["a-ok", "b-ok", "d-ok", "f-ok", "h-ok"] {
        assert_eq!(status(name), "pass", "{name}: {cases:#?}");
    }
}
