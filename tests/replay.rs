//! Corpus replay: the committed corpora pass (JUnit), a reintroduced zoo bug makes the replay
//! fail naming its bucket (JSON and SARIF), and corrupt files are reported and skipped.

mod common;

use common::{root, xtask};
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
    let r = xtask(
        &[
            "ext-build",
            file.to_str().unwrap(),
            "--variant",
            "asan",
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
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
