//! Reproducer bundles: shrink a campaign input to its op-sequence core (ddmin, keeping its
//! bucket signature), then write the standalone directory `cargo xtask repro` hands out —
//! `repro.c`, `repro.py`, `watch.gdb`, `build.sh`, `run.sh`, `ops.json`, `finding.json`,
//! `campaign.env` and a README ([`README_TEMPLATE`]) saying how to run it and what to expect.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::campaign::{Campaign, CampaignError};
use crate::detect::{self, BugClass, Finding};
use crate::env::names;
use crate::minimize::minimize;
use crate::ops::{Op, Resolved};
use crate::repro::callables::{CallablesError, CampaignTarget};
use crate::repro::{self, Expect};

/// The reproducer's README, with `{name}` placeholders filled by [`write_bundle`].
pub const README_TEMPLATE: &str = include_str!("bundle_readme.md");

/// Why an input could not be minimized or its reproducer written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No campaign directory above the input.
    #[error(
        "cannot find the campaign directory of {0} (no campaign.json above it): pass --campaign"
    )]
    NoCampaign(PathBuf),
    /// The campaign's `campaign.json` is unreadable.
    #[error(transparent)]
    CampaignFile(#[from] CallablesError),
    /// Re-running the input failed to start.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The input does not reproduce a finding when re-run alone.
    #[error("{input} does not reproduce {what} when re-run; nothing to minimize")]
    NotReproduced { input: PathBuf, what: String },
    /// The harness did not write the resolved sequence it was asked for.
    #[error("the harness wrote no resolved sequence to {0}")]
    NoResolved(PathBuf),
}

type Result<T> = std::result::Result<T, BundleError>;

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The result of minimizing one input.
#[derive(Debug, Clone)]
pub struct Minimized {
    pub original_ops: usize,
    pub ops: Vec<Op>,
    /// The minimized ops with their slots resolved and the extension's callable names.
    pub resolved: Resolved,
    pub finding: Finding,
    /// Candidates tried.
    pub tries: usize,
    pub seconds: f64,
    /// `<input>.min.json`, the minimized input (the original is untouched).
    pub min_path: PathBuf,
}

impl Minimized {
    /// What `cargo xtask minimize` prints for `artifact`: the sizes, time and signature, the
    /// ops (slots resolved, callees named), and where the minimized input is.
    pub fn text(&self, artifact: &Path) -> String {
        let mut out = format!(
            "{}: {} ops -> {} ops in {:.1} s ({} candidates), signature {}\n",
            artifact.display(),
            self.original_ops,
            self.ops.len(),
            self.seconds,
            self.tries,
            self.finding.signature()
        );
        for (i, op) in self.resolved.ops.iter().enumerate() {
            out += &format!("  #{i} {}\n", crate::repro::describe(op, &self.resolved));
        }
        let min = self.min_path.display();
        out + &format!("minimized input: {min} (the original artifact is untouched)\n")
    }
}

/// The campaign `input` belongs to: `explicit`, or the nearest directory above it with a
/// `campaign.json` (an artifact sits in `<campaign>/artifacts/`, a non-fatal finding's input
/// in `<campaign>/findings/<bucket>/`).
pub fn campaign_of(input: &Path, explicit: Option<&Path>) -> Result<(PathBuf, Campaign)> {
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => {
            CampaignTarget::of_input(input)
                .transpose()?
                .ok_or_else(|| BundleError::NoCampaign(input.to_path_buf()))?
                .dir
        }
    };
    let c = Campaign::load(&dir)?;
    Ok((dir, c))
}

/// Run one input of campaign `c` alone; the findings it prints.
pub fn findings_of(c: &Campaign, input: &Path) -> Result<Vec<Finding>> {
    Ok(detect::parse(&c.run_once(input, &[])?.1))
}

/// ddmin `artifact`'s op sequence, keeping its bucket signature; writes `<artifact>.min.json`.
/// `progress(candidates, ops)` hears each step.
pub fn minimize_artifact(
    artifact: &Path,
    campaign: Option<&Path>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Minimized> {
    let (_, c) = campaign_of(artifact, campaign)?;
    let bytes = io(artifact, fs::read(artifact))?;
    // Decoded as the campaign's harness decodes it (a --fail-alloc campaign's raw bytes arm
    // failures).
    let original = crate::oom::decode_for(&c, &bytes).0;
    let Some(target) = findings_of(&c, artifact)?.first().cloned() else {
        return Err(BundleError::NotReproduced {
            input: artifact.to_path_buf(),
            what: "a finding".into(),
        });
    };
    let signature = target.signature();
    let work = io(Path::new("temporary directory"), tempfile::tempdir())?;
    let candidate_path = work.path().join("candidate.json");
    let started = Instant::now();
    let mut still_fails = |ops: &[Op]| -> bool {
        let json = serde_json::to_vec(ops).expect("ops serialize");
        fs::write(&candidate_path, json).is_ok()
            && findings_of(&c, &candidate_path)
                .is_ok_and(|fs| fs.iter().any(|f| f.signature() == signature))
    };
    // The artifact itself must reproduce as JSON too (the decoding is the same).
    if !still_fails(&original) {
        return Err(BundleError::NotReproduced {
            input: artifact.to_path_buf(),
            what: format!("its finding ({signature}) as a JSON op list"),
        });
    }
    let (ops, tries) = minimize(&original, &mut still_fails, progress);
    let min_path = PathBuf::from(format!("{}.min.json", artifact.display()));
    let json = serde_json::to_vec_pretty(&ops).expect("ops serialize");
    io(&min_path, fs::write(&min_path, json))?;
    // Resolve slots as the harness does, for reproducers.
    let dump = work.path().join("resolved.json");
    let (_, text) = c.run_once(
        &min_path,
        &[(names::DUMP_RESOLVED, dump.display().to_string())],
    )?;
    let resolved: Resolved = fs::read(&dump)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| BundleError::NoResolved(dump.clone()))?;
    let finding = detect::parse(&text).into_iter().next().unwrap_or(target);
    Ok(Minimized {
        original_ops: original.len(),
        ops,
        resolved,
        finding,
        tries,
        seconds: started.elapsed().as_secs_f64(),
        min_path,
    })
}

/// What a reproducer of `class` must demonstrate.
pub fn expect_of(class: BugClass) -> Expect {
    match class {
        BugClass::ReferenceLeak => Expect::Leak,
        BugClass::GcTraversal => Expect::GcTraversal,
        _ => Expect::Crash,
    }
}

/// Fill the `{name}` placeholders of `template` in one pass (a value that itself contains
/// `{name}` stays as it is); unknown names are left alone.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Write the reproducer directory `out` for `m`, minimized from `artifact` of `campaign` (or
/// the campaign above it, as [`campaign_of`]); returns the line `cargo xtask repro` prints.
pub fn write_reproducer(
    m: &Minimized,
    artifact: &Path,
    campaign: Option<&Path>,
    out: &Path,
) -> Result<String> {
    let (_, c) = campaign_of(artifact, campaign)?;
    write_bundle(m, &c, out)?;
    let (signature, ops) = (m.finding.signature(), m.resolved.ops.len());
    Ok(format!(
        "reproducer for {signature} ({ops} ops) in {}\n",
        out.display()
    ))
}

/// Write the reproducer directory `out` for `m`, found by campaign `c`.
pub fn write_bundle(m: &Minimized, c: &Campaign, out: &Path) -> Result<()> {
    io(out, fs::create_dir_all(out))?;
    let write = |name: &str, bytes: &[u8]| io(&out.join(name), fs::write(out.join(name), bytes));
    let expect = expect_of(m.finding.class);
    write("repro.c", repro::c::emit(&m.resolved, expect).as_bytes())?;
    let py = repro::python::emit(&m.resolved, expect);
    match &py {
        Ok(text) => write("repro.py", text.as_bytes())?,
        // The README says why there is no repro.py.
        Err(_) => {
            let _ = fs::remove_file(out.join("repro.py"));
        }
    }
    write("watch.gdb", repro::gdb::emit("./repro-pydebug").as_bytes())?;
    for (name, text) in [("build.sh", repro::BUILD_SH), ("run.sh", repro::RUN_SH)] {
        write(name, text.as_bytes())?;
        set_executable(&out.join(name))?;
    }
    let resolved = serde_json::to_vec_pretty(&m.resolved).expect("ops serialize");
    write("ops.json", &resolved)?;
    let finding = serde_json::to_vec_pretty(&m.finding).expect("a finding serializes");
    write("finding.json", &finding)?;
    let get = |key: &str| {
        c.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (ext_path, pythonmalloc) = (get(names::EXT_PATH), get("PYTHONMALLOC"));
    write(
        "campaign.env",
        format!(
            "EXT_PATH={ext_path}\nPYTHONMALLOC_OVERRIDE={pythonmalloc}\nVARIANT={}\nCAPISAN_VERSION={}\n",
            c.variant,
            c.version.as_deref().unwrap_or_default()
        )
        .as_bytes(),
    )?;
    let f = &m.finding;
    let stack = |frames: &[detect::Frame]| -> String {
        frames
            .iter()
            .take(8)
            .map(|fr| {
                format!(
                    "    {} {}:{}\n",
                    fr.function,
                    fr.file.as_deref().unwrap_or("?"),
                    fr.line.unwrap_or(0)
                )
            })
            .collect()
    };
    let readme = fill(
        README_TEMPLATE,
        &[
            ("class", f.class.name().to_string()),
            ("sig", f.signature().to_string()),
            ("summary", f.summary.clone()),
            ("reason", f.reason.clone()),
            ("n", m.resolved.ops.len().to_string()),
            ("orig", m.original_ops.to_string()),
            ("secs", format!("{:.1}", m.seconds)),
            ("tries", m.tries.to_string()),
            ("acc", stack(&f.access_stack)),
            ("free", stack(&f.free_stack)),
            ("alloc", stack(&f.alloc_stack)),
            (
                "py",
                match &py {
                    Ok(_) => "the same sequence in pure Python (`./run.sh VARIANT py`)".to_string(),
                    Err(why) => format!("omitted: {why}"),
                },
            ),
            ("variant", c.variant.to_string()),
            ("ext_path", ext_path.clone()),
            ("pythonmalloc", pythonmalloc.clone()),
            (
                "expected",
                match expect {
                    Expect::Crash => format!("the process aborts with the same report ({})", f.summary),
                    Expect::Leak => "the total refcount delta of each measured call (regrtest's -R procedure: 3 warm-up calls, 3 measured, caches cleared and the GC run around each), then `REFERENCE LEAK: ...` and exit status 1 because every measured call leaked".into(),
                    Expect::GcTraversal => "`GC TRAVERSAL BUG: ...` and exit status 1".into(),
                },
            ),
            (
                "ops",
                m.resolved
                    .ops
                    .iter()
                    .enumerate()
                    .map(|(i, o)| format!("#{i} {}\n", repro::describe(o, &m.resolved)))
                    .collect(),
            ),
        ],
    );
    write("README.md", readme.as_bytes())
}

fn set_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = io(p, fs::metadata(p))?.permissions();
    perm.set_mode(0o755);
    io(p, fs::set_permissions(p, perm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_template_is_filled_in_one_pass() {
        let t = fill(
            "a {x} b {y} {unknown} {",
            &[("x", "{y}".into()), ("y", "2".into())],
        );
        assert_eq!(t, "a {y} b 2 {unknown} {");
        for name in [
            "class",
            "sig",
            "summary",
            "reason",
            "n",
            "orig",
            "secs",
            "tries",
            "acc",
            "free",
            "alloc",
            "py",
            "variant",
            "ext_path",
            "pythonmalloc",
            "expected",
            "ops",
        ] {
            assert!(README_TEMPLATE.contains(&format!("{{{name}}}")), "{name}");
        }
    }
}
