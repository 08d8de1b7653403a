//! minimize, repro, confirm: shrink a crash to its op-sequence core, write a standalone
//! reproducer, and re-run it outside the fuzzer on every built variant.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use capisan::detect::{self, BugClass, Finding};
use capisan::minimize::minimize;
use capisan::ops::{Op, OpSeq, Resolved};
use capisan::repro::callables::CampaignTarget;
use capisan::repro::{self, Expect};
use capisan_build::{Cache, Manifest, Variant};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::fuzz::Campaign;

#[derive(Args)]
pub struct MinimizeArgs {
    /// A crash artifact written by a campaign (its campaign directory is found from it).
    pub artifact: PathBuf,
    /// The campaign directory, if the artifact was moved out of its campaign; default: the
    /// nearest directory above the artifact with a campaign.json.
    #[arg(long)]
    pub campaign: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReproArgs {
    /// A crash artifact (minimized first if no `.min.json` exists beside it).
    pub artifact: PathBuf,
    /// Output directory for the reproducer.
    #[arg(short, long)]
    pub out: PathBuf,
    /// The campaign directory, if the artifact was moved out of its campaign; default: the
    /// nearest directory above the artifact with a campaign.json.
    #[arg(long)]
    pub campaign: Option<PathBuf>,
}

#[derive(Args)]
pub struct ShowArgs {
    /// A fuzz input (libFuzzer bytes or a JSON op list).
    pub input: PathBuf,
    /// Print the decoded ops as a JSON op list (a replayable input).
    #[arg(long)]
    pub json: bool,
    /// The campaign the input belongs to, for the names of its extension's callables; default:
    /// the nearest directory above the input with a campaign.json (none: callables by index).
    #[arg(long)]
    pub campaign: Option<PathBuf>,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

/// Decode an input the way the fuzz target does and print its ops, naming extension callables
/// (`CallExt bugzoo.extra_decref(s0)`) when the input belongs to an extension campaign.
pub fn show_cmd(args: ShowArgs) -> Result<()> {
    let bytes =
        fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let seq = OpSeq::from_bytes(&bytes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&seq.0)?);
        return Ok(());
    }
    let campaign = match &args.campaign {
        Some(dir) => Some(CampaignTarget::load(dir)),
        None => CampaignTarget::of_input(&args.input),
    };
    let names = match campaign {
        None => Vec::new(),
        Some(c) => match c.and_then(|c| c.callable_names(&Cache::resolve(args.cache.clone()))) {
            Ok(names) => names,
            Err(e) => {
                eprintln!("show: callables by index, their names are unknown: {e}");
                Vec::new()
            }
        },
    };
    for (i, op) in seq.0.iter().enumerate() {
        if names.is_empty() {
            println!("#{i} {op}");
        } else {
            println!("#{i} {}", op.describe(&names));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ConfirmArgs {
    /// A reproducer directory written by `cargo xtask repro`.
    pub dir: PathBuf,
    /// Cache directory for sources and built variants; default ~/.cache/capisan.
    #[arg(long, env = "CAPISAN_CACHE")]
    pub cache: Option<PathBuf>,
}

/// The result of minimizing one artifact.
pub struct Minimized {
    pub original_ops: usize,
    pub ops: Vec<Op>,
    pub resolved: Resolved,
    pub finding: Finding,
    pub tries: usize,
    pub seconds: f64,
    pub min_path: PathBuf,
}

fn campaign_of(artifact: &Path, explicit: Option<&Path>) -> Result<(PathBuf, Campaign)> {
    // An artifact sits in <campaign>/artifacts/, a non-fatal finding's input in
    // <campaign>/findings/<bucket>/: the nearest directory above it with a campaign.json.
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => CampaignTarget::of_input(artifact)
            .map(|c| c.map(|c| c.dir))
            .transpose()?
            .context("cannot find the campaign directory (no campaign.json above the input): pass --campaign")?,
    };
    let c = Campaign::load(&dir)?;
    Ok((dir, c))
}

/// Run one input; the findings it prints.
fn findings_of(c: &Campaign, input: &Path) -> Result<Vec<Finding>> {
    Ok(detect::parse(&c.run_once(input, &[])?.1))
}

/// ddmin the artifact's op sequence, keeping its bucket signature.
pub fn minimize_artifact(artifact: &Path, campaign: Option<&Path>) -> Result<Minimized> {
    let (_, c) = campaign_of(artifact, campaign)?;
    let bytes = fs::read(artifact).with_context(|| format!("reading {}", artifact.display()))?;
    let original = OpSeq::from_bytes(&bytes).0;
    let (_, text) = c.run_once(artifact, &[])?;
    let first = detect::parse(&text);
    let Some(target) = first.first().cloned() else {
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "{} does not reproduce a finding when re-run with {}; nothing to minimize. Last lines of the run:\n{}",
            artifact.display(),
            c.binary.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    };
    let signature = target.signature();
    let work = tempfile::tempdir()?;
    let candidate_path = work.path().join("candidate.json");
    let started = Instant::now();
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("minimize [{elapsed_precise}] {msg}").unwrap());
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut still_fails = |ops: &[Op]| -> bool {
        if fs::write(&candidate_path, serde_json::to_vec(ops).unwrap()).is_err() {
            return false;
        }
        findings_of(&c, &candidate_path)
            .is_ok_and(|fs| fs.iter().any(|f| f.signature() == signature))
    };
    // The artifact itself must reproduce as JSON too (the decoding is the same).
    if !still_fails(&original) {
        bar.finish_and_clear();
        bail!(
            "{} does not reproduce its finding ({signature}) when replayed",
            artifact.display()
        );
    }
    let (ops, tries) = minimize(&original, &mut still_fails, &mut |n, len| {
        bar.set_message(format!("{n} candidates tried, {len} ops"))
    });
    bar.finish_and_clear();
    let min_path = PathBuf::from(format!("{}.min.json", artifact.display()));
    fs::write(&min_path, serde_json::to_vec_pretty(&ops)?)?;
    // Resolve slots as the harness does, for reproducers.
    let dump = work.path().join("resolved.json");
    let (_, text) = c.run_once(
        &min_path,
        &[("CAPISAN_DUMP_RESOLVED", dump.display().to_string())],
    )?;
    let resolved: Resolved = serde_json::from_slice(
        &fs::read(&dump).context("the harness wrote no resolved sequence")?,
    )?;
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

pub fn minimize_cmd(args: MinimizeArgs) -> Result<()> {
    let m = minimize_artifact(&args.artifact, args.campaign.as_deref())?;
    println!(
        "{}: {} ops -> {} ops in {:.1} s ({} candidates), signature {}",
        args.artifact.display(),
        m.original_ops,
        m.ops.len(),
        m.seconds,
        m.tries,
        m.finding.signature()
    );
    for (i, op) in m.resolved.ops.iter().enumerate() {
        println!("  #{i} {}", repro::describe(op, &m.resolved));
    }
    println!(
        "minimized input: {} (the original artifact is untouched)",
        m.min_path.display()
    );
    Ok(())
}

fn expect_of(class: BugClass) -> Expect {
    match class {
        BugClass::ReferenceLeak => Expect::Leak,
        BugClass::GcTraversal => Expect::GcTraversal,
        _ => Expect::Crash,
    }
}

pub fn repro_cmd(args: ReproArgs) -> Result<()> {
    let m = minimize_artifact(&args.artifact, args.campaign.as_deref())?;
    let (_, c) = campaign_of(&args.artifact, args.campaign.as_deref())?;
    write_repro(&m, &c, &args.out)?;
    println!(
        "reproducer for {} ({} ops) in {}",
        m.finding.signature(),
        m.resolved.ops.len(),
        args.out.display()
    );
    Ok(())
}

/// Write the reproducer directory.
pub fn write_repro(m: &Minimized, c: &Campaign, out: &Path) -> Result<()> {
    fs::create_dir_all(out)?;
    let expect = expect_of(m.finding.class);
    fs::write(out.join("repro.c"), repro::c::emit(&m.resolved, expect))?;
    let py = repro::python::emit(&m.resolved, expect);
    match &py {
        Ok(text) => fs::write(out.join("repro.py"), text)?,
        // The README says why there is no repro.py.
        Err(_) => {
            let _ = fs::remove_file(out.join("repro.py"));
        }
    }
    fs::write(out.join("watch.gdb"), repro::gdb::emit("./repro-pydebug"))?;
    for (name, text) in [("build.sh", repro::BUILD_SH), ("run.sh", repro::RUN_SH)] {
        fs::write(out.join(name), text)?;
        set_executable(&out.join(name))?;
    }
    fs::write(
        out.join("ops.json"),
        serde_json::to_vec_pretty(&m.resolved)?,
    )?;
    fs::write(
        out.join("finding.json"),
        serde_json::to_vec_pretty(&m.finding)?,
    )?;
    let ext_path = c
        .env
        .iter()
        .find(|(k, _)| k == "CAPISAN_EXT_PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let pythonmalloc = c
        .env
        .iter()
        .find(|(k, _)| k == "PYTHONMALLOC")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    fs::write(
        out.join("campaign.env"),
        format!(
            "EXT_PATH={ext_path}\nPYTHONMALLOC_OVERRIDE={pythonmalloc}\nVARIANT={}\n",
            c.variant
        ),
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
    let readme = format!(
        "# capisan reproducer: {class}\n\n* signature: `{sig}`\n* summary: {summary}\n* why this class: {reason}\n* ops: {n} (minimized from {orig} in {secs:.1} s, {tries} candidates)\n\n\
## Stacks\n\naccess:\n```\n{acc}```\nfreed:\n```\n{free}```\nallocated:\n```\n{alloc}```\n\n\
## Files\n\n| file | what |\n|---|---|\n| `repro.c` | embeds CPython and makes the same C-API calls, one line per op, commented new / borrowed / stolen |\n| `repro.py` | {py} |\n| `watch.gdb` | `./build.sh pydebug && CAPISAN_PYTHON_GDB=<build>/python-gdb.py gdb -q -x watch.gdb`: watchpoint on the victim's `ob_refcnt`, `bt` + `py-bt` at each change |\n| `build.sh [variant]` | compiles `repro.c` against a built variant's manifest |\n| `run.sh [variant] [c\\|py]` | runs it with the variant's environment (`EXT_PATH=...` for the extension) |\n\n\
## Run\n\n```sh\n./build.sh {variant}\nEXT_PATH={ext_path} PYTHONMALLOC_OVERRIDE={pythonmalloc} ./run.sh {variant}\n```\n\nExpected: {expected}\n\n## Ops\n\n```\n{ops}```\n",
        class = f.class.name(),
        sig = f.signature(),
        summary = f.summary,
        reason = f.reason,
        n = m.resolved.ops.len(),
        orig = m.original_ops,
        secs = m.seconds,
        tries = m.tries,
        acc = stack(&f.access_stack),
        free = stack(&f.free_stack),
        alloc = stack(&f.alloc_stack),
        py = match &py {
            Ok(_) => "the same sequence in pure Python (`./run.sh VARIANT py`)".to_string(),
            Err(why) => format!("omitted: {why}"),
        },
        variant = c.variant,
        expected = match expect {
            Expect::Crash => format!("the process aborts with the same report ({})", f.summary),
            Expect::Leak => "the total refcount delta of each measured call (regrtest's -R procedure: 3 warm-up calls, 3 measured, caches cleared and the GC run around each), then `REFERENCE LEAK: ...` and exit status 1 because every measured call leaked".into(),
            Expect::GcTraversal => "`GC TRAVERSAL BUG: ...` and exit status 1".into(),
        },
        ops = m.resolved.ops.iter().enumerate().map(|(i, o)| format!("#{i} {}\n", repro::describe(o, &m.resolved))).collect::<String>(),
    );
    fs::write(out.join("README.md"), readme)?;
    Ok(())
}

fn set_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = fs::metadata(p)?.permissions();
    perm.set_mode(0o755);
    fs::set_permissions(p, perm)?;
    Ok(())
}

/// One variant's verdict in `confirm`.
#[derive(serde::Serialize)]
pub struct Confirmation {
    pub variant: String,
    pub pythonmalloc: String,
    pub reproduced: bool,
    pub class: Option<String>,
    pub detail: String,
}

/// Re-run a reproducer directory in fresh processes on every built variant.
pub fn confirm_dir(dir: &Path, cache: &Cache) -> Result<Vec<Confirmation>> {
    let finding: Finding = serde_json::from_slice(
        &fs::read(dir.join("finding.json"))
            .context("not a capisan reproducer directory (no finding.json)")?,
    )?;
    let env_text = fs::read_to_string(dir.join("campaign.env")).unwrap_or_default();
    let get = |k: &str| {
        env_text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let ext_src = PathBuf::from(get("EXT_PATH")).join("capisan-ext-source.txt");
    let ext_src = fs::read_to_string(&ext_src).ok();
    let mut out = Vec::new();
    let runs: [(Variant, &str); 4] = [
        (Variant::Pydebug, ""),
        (Variant::Asan, "malloc"),
        (Variant::Asan, "malloc_debug"),
        (Variant::Valgrind, ""),
    ];
    for (variant, pm) in runs {
        let Ok(m) = Manifest::find(cache, variant, None) else {
            continue;
        };
        // Without a recorded source the campaign's own build is all there is (right for its variant).
        let mut ext_path = get("EXT_PATH");
        if let Some(src) = &ext_src {
            let o = dir.join(format!("ext-{variant}"));
            let r = duct::cmd!(
                std::env::current_exe()?,
                "ext-build",
                src.trim(),
                "--variant",
                variant.name(),
                "-o",
                &o
            )
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()?;
            if !r.status.success() {
                bail!(
                    "rebuilding the extension for {variant}: {}",
                    String::from_utf8_lossy(&r.stderr)
                );
            }
            ext_path = o.display().to_string();
        }
        let b = duct::cmd!(dir.join("build.sh"), variant.name())
            .dir(dir)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()?;
        if !b.status.success() {
            bail!(
                "build.sh {variant} failed:\n{}",
                String::from_utf8_lossy(&b.stdout)
            );
        }
        // One list, applied once: duct gives inner `.env` calls precedence, so no overriding later.
        let mut env: Vec<(String, String)> = m.env();
        for (k, v) in env.iter_mut() {
            if k == "PYTHONPATH" {
                *v = format!("{ext_path}:{v}");
            }
            if k == "PYTHONMALLOC" && !pm.is_empty() {
                *v = pm.to_string();
            }
        }
        if !pm.is_empty() && !env.iter().any(|(k, _)| k == "PYTHONMALLOC") {
            env.push(("PYTHONMALLOC".into(), pm.to_string()));
        }
        let (text, found) = if variant == Variant::Valgrind {
            let xml = dir.join("valgrind.xml");
            let mut cmd = duct::cmd!(
                "valgrind",
                "--tool=memcheck",
                "--xml=yes",
                format!("--xml-file={}", xml.display()),
                "--track-origins=yes",
                format!(
                    "--suppressions={}",
                    m.valgrind_suppressions
                        .clone()
                        .unwrap_or_default()
                        .display()
                ),
                dir.join("repro-valgrind")
            )
            .dir(dir)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked();
            cmd = crate::with_env(cmd, &env);
            let o = cmd.run()?;
            let mut found =
                detect::parse_valgrind_xml(&fs::read_to_string(&xml).unwrap_or_default())
                    .unwrap_or_default();
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            found.extend(detect::parse(&text));
            (text, found)
        } else {
            let mut cmd = duct::cmd!(dir.join(format!("repro-{variant}")))
                .dir(dir)
                .stderr_to_stdout()
                .stdout_capture()
                .unchecked();
            cmd = crate::with_env(cmd, &env);
            let o = cmd.run()?;
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut found = detect::parse(&text);
            if text.contains("REFERENCE LEAK:") {
                found.push(Finding::new(
                    BugClass::ReferenceLeak,
                    detect::Tool::Capisan,
                    "repeated calls leak",
                ));
            }
            if text.contains("GC TRAVERSAL BUG:") {
                found.push(Finding::new(
                    BugClass::GcTraversal,
                    detect::Tool::Capisan,
                    "tp_traverse misses a reference",
                ));
            }
            (text, found)
        };
        fs::write(
            dir.join(format!(
                "confirm-{variant}{}.log",
                if pm.is_empty() {
                    String::new()
                } else {
                    format!("-{pm}")
                }
            )),
            &text,
        )?;
        out.push(Confirmation {
            variant: variant.to_string(),
            pythonmalloc: if pm.is_empty() {
                m.runtime_env
                    .get("PYTHONMALLOC")
                    .cloned()
                    .unwrap_or("default".into())
            } else {
                pm.into()
            },
            reproduced: found.iter().any(|f| f.class == finding.class),
            class: found.first().map(|f| f.class.name().to_string()),
            detail: found
                .first()
                .map(|f| f.summary.clone())
                .unwrap_or_else(|| "no report".into()),
        });
    }
    Ok(out)
}

pub fn confirm_cmd(args: ConfirmArgs) -> Result<()> {
    let cache = Cache::resolve(args.cache);
    let results = confirm_dir(&args.dir, &cache)?;
    println!(
        "{:<10} {:<13} {:<11} what it saw",
        "variant", "PYTHONMALLOC", "reproduced"
    );
    for r in &results {
        println!(
            "{:<10} {:<13} {:<11} {}",
            r.variant, r.pythonmalloc, r.reproduced, r.detail
        );
    }
    if !results.iter().any(|r| r.reproduced) {
        println!("only reproduces inside the fuzzer: state carried over from earlier inputs, or a harness problem");
    }
    fs::write(
        args.dir.join("confirm.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    Ok(())
}
