//! Helpers shared by the integration tests: run `cargo xtask` like a user does.

#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Output of one `cargo xtask` run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cargo xtask ARGS` with extra environment.
pub fn xtask(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut argv = vec!["xtask"];
    argv.extend_from_slice(args);
    let mut cmd = duct::cmd("cargo", &argv)
        .dir(root())
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().expect("cargo runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Build the bug zoo (`tests/bugzoo/bugzoo.c`) for `variant` into a temporary directory named
/// after `purpose` (so tests do not overwrite each other's builds); returns the directory.
pub fn build_zoo(variant: &str, purpose: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("capisan-{purpose}-zoo-{variant}"));
    ext_build(&root().join("tests/bugzoo/bugzoo.c"), variant, &out);
    out
}

/// `cargo xtask ext-build SRC --variant VARIANT -o OUT`, asserting it succeeds.
pub fn ext_build(src: &std::path::Path, variant: &str, out: &std::path::Path) {
    let r = xtask(
        &[
            "ext-build",
            src.to_str().unwrap(),
            "--variant",
            variant,
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "ext-build failed: {}{}", r.stdout, r.stderr);
}
