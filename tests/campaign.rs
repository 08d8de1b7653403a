//! A multi-core campaign (`--jobs 2`, libFuzzer fork mode) killed with SIGKILL loses no corpus
//! entry and no finding: what it had written is intact, its crash reproduces in triage, and a
//! restarted campaign picks the whole corpus up again.

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{build_zoo, root, xtask};

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn kill_9_loses_no_corpus_entry_or_finding() {
    let ext = build_zoo("asan", "campaign");
    let dir = std::env::temp_dir().join("capisan-killed-campaign");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(xtask(&["--help"], &[]).ok, "xtask builds");
    let bin = root().join("target/debug/xtask");
    let mut child = std::process::Command::new(&bin)
        .args([
            "fuzz-ext",
            "bugzoo",
            "--funcs",
            "double_free",
            "--jobs",
            "2",
            "--time",
            "300",
            "--ext-path",
        ])
        .arg(&ext)
        .arg("--out")
        .arg(&dir)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (corpus, artifacts) = loop {
        std::thread::sleep(Duration::from_secs(2));
        let corpus = files(&dir.join("corpus"));
        let artifacts: Vec<String> = files(&dir.join("artifacts"))
            .into_iter()
            .filter(|a| a.starts_with("crash-") && !a.ends_with(".log"))
            .collect();
        if (!artifacts.is_empty() && corpus.len() >= 20)
            || started.elapsed() > Duration::from_secs(200)
        {
            break (corpus, artifacts);
        }
    };
    // SIGKILL the whole campaign: xtask, the libFuzzer parent and its forked jobs.
    unsafe { libc_kill(-(child.id() as i32), 9) };
    let _ = child.wait();
    assert!(
        !artifacts.is_empty(),
        "the campaign found no crash before the kill"
    );
    assert!(
        corpus.len() >= 20,
        "too little corpus before the kill: {}",
        corpus.len()
    );

    let after = files(&dir.join("corpus"));
    for f in &corpus {
        assert!(after.contains(f), "corpus entry {f} lost");
    }
    let r = xtask(&["triage", dir.to_str().unwrap(), "--json"], &[]);
    assert!(r.ok, "{}", r.stderr);
    let buckets: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        buckets.iter().any(|b| b["signature"]
            .as_str()
            .unwrap()
            .starts_with("double-free|double_free")),
        "{buckets:#?}"
    );

    // A restarted campaign loads everything the killed one kept.
    let r = xtask(
        &[
            "fuzz-ext",
            "bugzoo",
            "--funcs",
            "double_free_clean",
            "--time",
            "3",
            "--ext-path",
            ext.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--no-seeds",
            // One process: it prints how many corpus files it loaded.
            "--stop-at-first-finding",
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let log = std::fs::read_to_string(dir.join("fuzz.log")).unwrap();
    let loaded: usize = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("INFO:")
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .filter(|_| l.contains("files found in"))
        })
        .expect("libFuzzer reports the corpus it loaded");
    assert!(
        loaded >= corpus.len(),
        "restart loaded {loaded} of {} corpus files",
        corpus.len()
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
