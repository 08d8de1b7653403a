//! The library example `harness/examples/campaign.rs` runs: from Rust alone it builds the fuzz
//! binary and the bug zoo, fuzzes `double_free`, triages and writes a reproducer. Needs the asan
//! variant (`cargo xtask build-asan`).

mod common;

use common::root;

#[test]
fn the_campaign_example_finds_the_double_free_and_writes_a_reproducer() {
    let out = tempfile::tempdir().unwrap();
    let r = duct::cmd!(
        "cargo",
        "run",
        "-q",
        "-p",
        "capisan",
        "--example",
        "campaign",
        out.path()
    )
    .dir(root())
    .stderr_capture()
    .stdout_capture()
    .unchecked()
    .run()
    .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        stdout.contains("bucket: double-free|double_free|"),
        "{stdout}"
    );
    let c = std::fs::read_to_string(out.path().join("repro/repro.c")).unwrap();
    assert!(c.contains("double_free"), "{c}");
}
