//! `.clusterfuzzlite/build.sh`, run with the environment base-builder provides ($SRC, $OUT,
//! $WORK, $CC, $CXX, $CFLAGS, $LIB_FUZZING_ENGINE, $SANITIZER), produces a fuzzer that runs
//! on its own — moved to another directory, with no capisan cache or Python environment.

mod common;

use common::root;

#[test]
fn build_sh_produces_running_fuzzers() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let work = tmp.path().join("work");
    for d in [&src, &out, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(root(), src.join("capisan")).unwrap();
    let cache = capisan_build::Cache::resolve(None).root().to_path_buf();
    let r = duct::cmd!("bash", root().join(".clusterfuzzlite/build.sh"))
        .env("SRC", &src)
        .env("OUT", &out)
        .env("WORK", &work)
        .env("CC", "clang-22")
        .env("CXX", "clang++-22")
        .env("CFLAGS", "-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link")
        .env("CXXFLAGS", "-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link")
        .env("LIB_FUZZING_ENGINE", "-fsanitize=fuzzer")
        .env("SANITIZER", "address")
        .env("FUZZING_LANGUAGE", "rust")
        // Reuse the variant CI already built (the cache key is source + flags + compiler).
        .env("CAPISAN_CACHE", &cache)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        r.status.success(),
        "build.sh failed:\n{}",
        String::from_utf8_lossy(&r.stdout)
    );

    // Move $OUT elsewhere, as the fuzzing infrastructure does, and run with a bare environment.
    let moved = tmp.path().join("runner");
    std::fs::rename(&out, &moved).unwrap();
    let fuzzer = moved.join("capi_sequences");
    assert!(fuzzer.exists() && moved.join("capi_sequences.python/Lib/os.py").exists());
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let artifacts = format!("-artifact_prefix={}/", tmp.path().display());
    let run = duct::cmd!(
        &fuzzer,
        "-runs=300",
        "-seed=5",
        &artifacts,
        &corpus,
        moved.join("capi_sequences_seed_corpus")
    )
    .full_env([("PATH", "/usr/bin:/bin"), ("CAPISAN_CACHE", "/nonexistent")])
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    // It runs its inputs to the end, or stops at a real finding: CPython 3.13.5 itself has
    // use-after-free bugs these ops reach within 300 runs now and then (bytearray searches
    // whose argument's `__buffer__` resizes the bytearray), and a crash report with the input
    // written out is the fuzzer working. What must not happen is a fuzzer that cannot start.
    let found = text.contains("ERROR: AddressSanitizer") && text.contains("Test unit written to");
    assert!(
        (run.status.success() && text.contains("Done 300 runs")) || found,
        "the built fuzzer must run:\n{text}"
    );
    assert!(text.contains("INFO: seed corpus: files: "), "{text}");
    assert!(
        std::fs::read_dir(&corpus).unwrap().count() > 0,
        "it should have found coverage"
    );
}
