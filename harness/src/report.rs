//! A static HTML page for a campaign: coverage and exec/s over time (SVG plots), and every
//! bucket with its class, stacks, op log and links to the artifact and reproducer.

use std::fs;
use std::path::{Path, PathBuf};

use maud::{html, Markup, PreEscaped, DOCTYPE};
use plotters::prelude::*;

use crate::campaign::{Bucket, Progress};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The campaign was never triaged.
    #[error("{0} has no buckets.json: run a campaign first (cargo xtask fuzz, or triage DIR)")]
    NoBuckets(PathBuf),
    /// `buckets.json` does not parse.
    #[error("{path}: {source}; re-run `cargo xtask triage` on the campaign to rewrite it")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A plot could not be drawn.
    #[error("drawing the plot {0}")]
    Plot(String),
    /// The report could not be written.
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ReportError>;

/// An SVG line plot of `ys` against `xs`.
fn plot(title: &str, y_label: &str, points: &[(f64, f64)]) -> Result<String> {
    plot_svg(title, y_label, points).map_err(|e| ReportError::Plot(format!("{title}: {e}")))
}

fn plot_svg(
    title: &str,
    y_label: &str,
    points: &[(f64, f64)],
) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
        let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_label)
            .draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
        root.present()?;
    }
    Ok(svg)
}

fn stack(frames: &[crate::detect::Frame]) -> Markup {
    html! {
        ol.stack {
            // Sanitizer, libFuzzer, libc and refcount machinery first: skip to the interesting part.
            @for f in frames.iter().filter(|f| !crate::detect::frames::is_machinery(f)).take(12) {
                li { code { (f.function) } " " span.loc { (f.file.as_deref().unwrap_or("?")) ":" (f.line.unwrap_or(0)) } }
            }
        }
    }
}

fn link(from: &Path, to: &Path) -> String {
    to.strip_prefix(from).map_or_else(
        |_| format!("file://{}", to.display()),
        |p| p.display().to_string(),
    )
}

/// Render the report of the campaign in `dir` (its `buckets.json` and `progress.jsonl`) to
/// the HTML file `out`; links to artifacts are relative to `out`'s directory when under it.
pub fn render(dir: &Path, out: &Path) -> Result<()> {
    let path = dir.join("buckets.json");
    let bytes = fs::read(&path).map_err(|_| ReportError::NoBuckets(dir.to_path_buf()))?;
    let buckets: Vec<Bucket> =
        serde_json::from_slice(&bytes).map_err(|source| ReportError::Json { path, source })?;
    let progress: Vec<Progress> = fs::read_to_string(dir.join("progress.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let cov = plot(
        "coverage",
        "edges (cov)",
        &progress
            .iter()
            .map(|p| (p.seconds, p.cov as f64))
            .collect::<Vec<_>>(),
    )?;
    let eps = plot(
        "throughput",
        "exec/s",
        &progress
            .iter()
            .map(|p| (p.seconds, p.exec_per_sec as f64))
            .collect::<Vec<_>>(),
    )?;
    let base = out.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = fs::canonicalize(&base).unwrap_or(base);
    let last = progress.last();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "capisan campaign report" }
                style { (PreEscaped("body{font-family:sans-serif;margin:2em;max-width:1100px} .bucket{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0} .class{font-weight:bold;color:#a00} code{font-size:90%} .loc{color:#666;font-size:85%} .plots{display:flex;flex-wrap:wrap;gap:1em} table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:4px 8px}")) }
            }
            body {
                h1 { "capisan campaign report" }
                p { "Campaign " code { (dir.display()) } }
                table {
                    tr { th { "inputs run" } th { "coverage" } th { "corpus" } th { "last exec/s" } th { "buckets" } }
                    tr {
                        td id="inputs-run" { (last.map_or(0, |p| p.execs)) }
                        td id="coverage" { (last.map_or(0, |p| p.cov)) }
                        td { (last.map_or(0, |p| p.corpus)) }
                        td { (last.map_or(0, |p| p.exec_per_sec)) }
                        td id="bucket-count" { (buckets.len()) }
                    }
                }
                div.plots { div { (PreEscaped(cov)) } div { (PreEscaped(eps)) } }
                h2 { "Findings" }
                @if buckets.is_empty() { p id="no-findings" { "No findings." } }
                @for b in &buckets {
                    div.bucket {
                        p { span.class { (b.class) } " — " code.signature { (b.signature) } " (" (b.count) " input" @if b.count != 1 { "s" } ")" }
                        p { (b.finding.summary) }
                        @if !b.finding.reason.is_empty() { p { "Why this class: " (b.finding.reason) } }
                        @if let Some(op) = &b.finding.current_op { p { "Op: " code { (op) } } }
                        @if !b.finding.access_stack.is_empty() { h4 { "access" } (stack(&b.finding.access_stack)) }
                        @if !b.finding.free_stack.is_empty() { h4 { "freed" } (stack(&b.finding.free_stack)) }
                        @if !b.finding.alloc_stack.is_empty() { h4 { "allocated" } (stack(&b.finding.alloc_stack)) }
                        @if !b.finding.op_log.is_empty() {
                            details { summary { "op log (" (b.finding.op_log.len()) " ops)" } pre { @for l in &b.finding.op_log { (l) "\n" } } }
                        }
                        p {
                            "Artifact: " a href=(link(&base, &b.artifacts[0])) { (b.artifacts[0].display()) }
                            @let min = PathBuf::from(format!("{}.min.json", b.artifacts[0].display()));
                            @if min.exists() { " · minimized: " a href=(link(&base, &min)) { "min.json" } }
                        }
                        p { "Reproduce: " code { "cargo xtask repro " (b.artifacts[0].display()) " -o repro" } }
                    }
                }
            }
        }
    };
    fs::write(out, page.into_string()).map_err(|source| ReportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_without_findings_renders_its_plots_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("buckets.json"), "[]").unwrap();
        fs::write(
            tmp.path().join("progress.jsonl"),
            r#"{"seconds":1.0,"execs":10,"cov":5,"features":7,"corpus":2,"exec_per_sec":10}"#,
        )
        .unwrap();
        let out = tmp.path().join("r.html");
        render(tmp.path(), &out).unwrap();
        let html = fs::read_to_string(&out).unwrap();
        assert!(html.contains(r#"id="no-findings""#));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(matches!(
            render(&tmp.path().join("missing"), &out),
            Err(ReportError::NoBuckets(_))
        ));
    }
}
