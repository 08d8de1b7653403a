//! The campaign report: rendered from a real campaign on a zoo bug, loaded in headless
//! Chromium, it shows the finding (class, signature, top frame) and the plots.

mod common;

use common::xtask;

#[test]
fn report_shows_the_findings_in_a_browser() {
    let ext = common::build_zoo("asan", "report");
    let dir = std::env::temp_dir().join("capisan-report-campaign");
    let _ = std::fs::remove_dir_all(&dir);
    let r = xtask(
        &[
            "fuzz-ext",
            "bugzoo",
            "--ext-path",
            ext.to_str().unwrap(),
            "--funcs",
            "double_free",
            "--time",
            "30",
            "--jobs",
            "2",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    // A fork-mode campaign (--jobs 2) writes progress rows, and its summary has the numbers.
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("progress.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 2, "progress rows: {rows:?}");
    assert!(
        rows.last().unwrap()["execs"].as_u64().unwrap() > 0
            && rows.last().unwrap()["cov"].as_u64().unwrap() > 0,
        "{rows:?}"
    );
    for needle in ["inputs run:", "exec/s:", "coverage:", "cargo xtask report"] {
        assert!(
            r.stdout.contains(needle),
            "summary lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    let html = dir.join("report.html");
    let r = xtask(
        &[
            "report",
            dir.to_str().unwrap(),
            "-o",
            html.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);

    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,1600",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("file://{}", html.display()));
        duct::cmd("chromium", args)
            .stdout_capture()
            .stderr_null()
            .unchecked()
            .run()
            .expect("chromium runs (apt-get install chromium)")
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    assert!(
        dom.contains("<td id=\"bucket-count\">1</td>"),
        "one bucket expected in:\n{dom}"
    );
    for id in ["inputs-run", "coverage"] {
        let value: u64 = dom
            .split(&format!("<td id=\"{id}\">"))
            .nth(1)
            .and_then(|t| t.split('<').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(value > 0, "{id} is 0 in the report");
    }
    assert!(
        dom.contains("double-free|double_free|CallExt bugzoo.double_free"),
        "{dom}"
    );
    assert!(
        dom.contains("<svg") && dom.contains("coverage") && dom.contains("throughput"),
        "plots missing"
    );
    assert!(
        dom.contains("double_free") && dom.contains("bugzoo.c"),
        "stack frames missing"
    );
    let shot = dir.join("report.png");
    chromium(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot looks empty ({} bytes)",
        png.len()
    );
}
