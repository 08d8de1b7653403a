//! valgrind suppression files: the format, valgrind's matching, and the three operations on them
//! — [`generate`] from a baseline run, [`merge`] files, [`minimize`] (widen frames as far as the
//! evidence allows, verified by re-running).
//!
//! The evidence is memcheck's own: errors read by [`crate::detect::parse_memcheck_errors`] (one
//! XML reader for the whole crate) from runs with `--gen-suppressions=all`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use capisan_build::Manifest;

use super::valgrind::Memcheck;
use super::{io, LeakError, Result, Target};
use crate::detect::{frames as frame_tables, Frame, MemcheckError};

/// One `{ ... }` entry of a valgrind suppression file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppression {
    pub name: String,
    /// `Memcheck:Cond`, `Memcheck:Leak`, `Memcheck:Param`, ...
    pub kind: String,
    /// Lines between the kind and the frames (`match-leak-kinds: definite`, a syscall param).
    pub extra: Vec<String>,
    /// `fun:NAME`, `obj:PATH` or `...`, innermost first.
    pub frames: Vec<String>,
}

impl Suppression {
    /// Kind, extra lines and frames: two entries with the same key suppress the same errors.
    fn key(&self) -> (String, Vec<String>, Vec<String>) {
        (self.kind.clone(), self.extra.clone(), self.frames.clone())
    }

    /// The entry in valgrind's file format.
    pub fn render(&self) -> String {
        let mut s = format!("{{\n   {}\n   {}\n", self.name, self.kind);
        for l in self.extra.iter().chain(&self.frames) {
            s.push_str(&format!("   {l}\n"));
        }
        s.push_str("}\n");
        s
    }
}

/// Malformed suppression text.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// Parse valgrind suppression text. Comments (`#`) and blank lines are skipped.
pub fn parse_suppressions(text: &str) -> Result<Vec<Suppression>, SyntaxError> {
    let err = |n: usize, message: String| SyntaxError {
        line: n + 1,
        message,
    };
    let mut out = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match (&mut block, line) {
            (None, "{") => block = Some(Vec::new()),
            (None, _) => return Err(err(n, format!("expected `{{`, found {line:?}"))),
            (Some(b), "}") => {
                if b.len() < 2 {
                    return Err(err(n, "a suppression needs a name and a kind".into()));
                }
                let name = b[0].clone();
                let kind = b[1].clone();
                let (mut extra, mut frames) = (Vec::new(), Vec::new());
                for l in &b[2..] {
                    if l == "..." || l.starts_with("fun:") || l.starts_with("obj:") {
                        frames.push(l.clone());
                    } else if frames.is_empty() {
                        extra.push(l.clone());
                    } else {
                        return Err(err(n, format!("unexpected {l:?} among frames")));
                    }
                }
                out.push(Suppression {
                    name,
                    kind,
                    extra,
                    frames,
                });
                block = None;
            }
            (Some(b), _) => b.push(line.to_string()),
        }
    }
    if block.is_some() {
        return Err(SyntaxError {
            line: text.lines().count(),
            message: "unterminated suppression at end of file".into(),
        });
    }
    Ok(out)
}

/// Read and parse a suppression file.
pub fn read_suppressions(path: &Path) -> Result<Vec<Suppression>> {
    let text = fs::read_to_string(path).map_err(io("reading", path))?;
    parse_suppressions(&text).map_err(|e| LeakError::SuppressionSyntax {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })
}

/// A suppression file: `header` as `#` comment lines, then the entries.
pub fn render_file(header: &str, entries: &[Suppression]) -> String {
    let mut s: String = header.lines().map(|l| format!("# {l}\n")).collect();
    for e in entries {
        s.push('\n');
        s.push_str(&e.render());
    }
    s
}

/// Entries with the same kind, extra lines and frames as an earlier one are dropped.
pub fn dedup_suppressions(entries: Vec<Suppression>) -> Vec<Suppression> {
    let mut seen = BTreeSet::new();
    entries
        .into_iter()
        .filter(|e| seen.insert(e.key()))
        .collect()
}

/// valgrind's `*` / `?` wildcard match.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|k| glob(rest, &text[k..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// The function name valgrind matches `fun:` against: `???` when the frame has no symbol
/// (detect writes those as `??`).
fn symbol(f: &Frame) -> Option<&str> {
    (f.function != "??" && !f.function.is_empty()).then_some(f.function.as_str())
}

fn frame_matches(pattern: &str, f: &Frame) -> bool {
    if let Some(p) = pattern.strip_prefix("fun:") {
        glob(p.as_bytes(), symbol(f).unwrap_or("???").as_bytes())
    } else if let Some(p) = pattern.strip_prefix("obj:") {
        glob(
            p.as_bytes(),
            f.object.as_deref().unwrap_or("???").as_bytes(),
        )
    } else {
        false
    }
}

/// valgrind's matching: the pattern list must match a prefix of the stack (innermost first);
/// `...` matches any number of frames, including none.
fn stack_matches(patterns: &[String], stack: &[Frame]) -> bool {
    match patterns.split_first() {
        None => true,
        Some((p, rest)) if p == "..." => {
            (0..=stack.len()).any(|k| stack_matches(rest, &stack[k..]))
        }
        Some((p, rest)) => {
            !stack.is_empty() && frame_matches(p, &stack[0]) && stack_matches(rest, &stack[1..])
        }
    }
}

/// One memcheck error as the suppression engine sees it: its kind, where it happened and the
/// suppression valgrind generated for it.
#[derive(Clone, Debug)]
pub struct ObservedError {
    pub kind: String,
    /// The error's first stack, innermost first.
    pub stack: Vec<Frame>,
    /// From `--gen-suppressions=all`.
    pub generated: Option<Suppression>,
}

impl ObservedError {
    /// The engine's view of a memcheck error; its generated suppression must parse.
    pub fn from_memcheck(e: &MemcheckError) -> Result<ObservedError> {
        let generated = match &e.suppression {
            Some(raw) => parse_suppressions(raw)
                .map_err(|s| LeakError::SuppressionSyntax {
                    path: PathBuf::from("<memcheck's generated suppression>"),
                    line: s.line,
                    message: s.message,
                })?
                .into_iter()
                .next(),
            None => None,
        };
        Ok(ObservedError {
            kind: e.kind.clone(),
            stack: e.first_stack().to_vec(),
            generated,
        })
    }

    /// Whether valgrind would suppress this error with `s`.
    pub fn suppressed_by(&self, s: &Suppression) -> bool {
        let Some(g) = &self.generated else {
            return false;
        };
        s.kind == g.kind
            && (s.extra.is_empty() || s.extra == g.extra)
            && stack_matches(&s.frames, &self.stack)
    }

    /// Identity across runs: the kind and the function / object of every frame.
    pub fn key(&self) -> String {
        let frames: Vec<String> = self
            .stack
            .iter()
            .map(|f| {
                symbol(f)
                    .map(str::to_string)
                    .or_else(|| f.object.clone())
                    .unwrap_or_default()
            })
            .collect();
        format!("{}|{}", self.kind, frames.join("<"))
    }

    /// True when a frame is in the target's own native code.
    fn in_own_code(&self, own: &OwnCode) -> bool {
        self.stack.iter().any(|f| own.contains(f))
    }
}

/// The target's own native code: extension objects under the extension directories and their
/// sources (`capisan-ext-source.txt`, written by `ext-build`). A Python script has no native
/// frames; its errors surface through CPython or an extension.
struct OwnCode {
    dirs: Vec<PathBuf>,
    sources: Vec<String>,
}

impl OwnCode {
    fn new(dirs: &[PathBuf]) -> OwnCode {
        let sources = dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("capisan-ext-source.txt")).ok())
            .map(|s| s.trim().to_string())
            .collect();
        OwnCode {
            dirs: dirs.to_vec(),
            sources,
        }
    }

    fn contains(&self, f: &Frame) -> bool {
        f.object
            .as_deref()
            .is_some_and(|o| self.dirs.iter().any(|d| Path::new(o).starts_with(d)))
            || f.file.as_deref().is_some_and(|file| {
                self.sources
                    .iter()
                    .any(|s| s == file || Path::new(s).starts_with(file))
            })
    }
}

/// Run `target` once under `mc` and return its errors as the engine sees them.
fn observe(mc: &Memcheck, target: &Target) -> Result<Vec<ObservedError>> {
    mc.errors(target)?
        .iter()
        .map(ObservedError::from_memcheck)
        .collect()
}

/// Name generated suppressions after what they suppress.
fn name_generated(version: &str, s: &mut Suppression, n: usize) {
    let first = s
        .frames
        .iter()
        .find_map(|f| f.strip_prefix("fun:"))
        .unwrap_or("unknown");
    s.name = format!("capisan-{version}-{n}-{}-{first}", s.kind.replace(':', "-"));
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io("writing", path))
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct Generated {
    /// Errors of the baseline outside the target's own code (the ones suppressed).
    pub baseline_errors: usize,
    /// Errors in the target's own code (`ext`), left unsuppressed: they are bugs to fix.
    pub own_errors: usize,
    pub entries: Vec<Suppression>,
}

/// Run the baseline `target` under memcheck (`--gen-suppressions=all`) on the valgrind variant
/// `manifest` and write to `out` a suppression for every error it reports, except errors in the
/// target's own code (`ext`).
pub fn generate(
    manifest: &Manifest,
    target: &Target,
    ext: &[PathBuf],
    out: &Path,
) -> Result<Generated> {
    let mut mc = Memcheck::new(manifest, ext);
    mc.gen_suppressions = true;
    let errors = observe(&mc, target)?;
    let own = OwnCode::new(ext);
    let (mine, baseline): (Vec<&ObservedError>, Vec<&ObservedError>) =
        errors.iter().partition(|e| e.in_own_code(&own));
    let mut entries = dedup_suppressions(
        baseline
            .iter()
            .filter_map(|e| e.generated.clone())
            .collect(),
    );
    for (i, e) in entries.iter_mut().enumerate() {
        name_generated(&manifest.version, e, i + 1);
    }
    let header = format!(
        "valgrind memcheck suppressions for CPython {} (capisan valgrind variant, on top of\n\
         CPython's Misc/valgrind-python.supp), generated by\n\
         `cargo xtask valgrind-supp gen {}`: {} error(s) in the baseline, {} suppression(s).",
        manifest.version,
        target.label(),
        baseline.len(),
        entries.len()
    );
    write(out, &render_file(&header, &entries))?;
    Ok(Generated {
        baseline_errors: baseline.len(),
        own_errors: mine.len(),
        entries,
    })
}

/// What [`merge`] wrote.
#[derive(Clone, Debug)]
pub struct Merged {
    /// Entries read from all files.
    pub read: usize,
    /// Entries written (duplicates dropped).
    pub entries: Vec<Suppression>,
}

/// Merge suppression `files` (in priority order: the first copy of a duplicate is kept) into
/// `out`.
pub fn merge(files: &[PathBuf], out: &Path) -> Result<Merged> {
    let mut all = Vec::new();
    for f in files {
        all.extend(read_suppressions(f)?);
    }
    let read = all.len();
    let entries = dedup_suppressions(all);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let header = format!(
        "valgrind suppressions merged by `cargo xtask valgrind-supp merge` from:\n{}",
        names.join("\n")
    );
    write(out, &render_file(&header, &entries))?;
    Ok(Merged { read, entries })
}

/// True when `frames` still names a concrete location: at least one `fun:` frame without
/// wildcards that is not allocator / sanitizer machinery and not in `weak` (functions of libc or
/// valgrind's preload, e.g. `bcmp`). A suppression of only wildcards, or of `fun:malloc` or
/// `fun:bcmp`, would swallow every error of its kind, the target's own included.
fn anchored(frames: &[String], weak: &BTreeSet<String>) -> bool {
    frames.iter().any(|f| {
        f.strip_prefix("fun:").is_some_and(|name| {
            !name.contains(['*', '?'])
                && !weak.contains(name)
                && !frame_tables::is_machinery(&Frame::named(name))
        })
    })
}

/// Functions of the C library, the dynamic loader and valgrind's preloaded replacements: shared
/// by every caller, so they never anchor a suppression.
fn weak_functions(errors: &[&ObservedError]) -> BTreeSet<String> {
    errors
        .iter()
        .flat_map(|e| &e.stack)
        .filter(|f| {
            f.object.as_deref().is_some_and(|o| {
                let base = o.rsplit('/').next().unwrap_or(o);
                base.starts_with("vgpreload_")
                    || base.starts_with("libc.so")
                    || base.starts_with("libc-")
                    || base.starts_with("ld-linux")
            })
        })
        .filter_map(|f| symbol(f).map(str::to_string))
        .collect()
}

/// Make one suppression as general as the evidence allows: it must still suppress every error in
/// `covered`, suppress nothing in `protected`, and stay [`anchored`] (a frame that is neither
/// machinery nor libc / valgrind preload). The innermost frame is never widened, so the
/// suppression stays tied to where the error happens.
pub fn widen(
    entry: &Suppression,
    covered: &[&ObservedError],
    protected: &[&ObservedError],
) -> Suppression {
    let weak = weak_functions(covered);
    let ok = |frames: &[String]| {
        let cand = Suppression {
            frames: frames.to_vec(),
            ..entry.clone()
        };
        anchored(frames, &weak)
            && covered.iter().all(|e| e.suppressed_by(&cand))
            && !protected.iter().any(|e| e.suppressed_by(&cand))
    };
    let mut frames = entry.frames.clone();
    if !ok(&frames) {
        return entry.clone();
    }
    // 1. The shortest prefix (a suppression matches a prefix of the stack).
    if let Some(k) = (1..=frames.len()).find(|&k| ok(&frames[..k])) {
        frames.truncate(k);
    }
    // 2. Each remaining frame (outermost first) -> `...`, else `fun:*`.
    let mut i = frames.len();
    while i > 1 {
        i -= 1;
        if frames[i] == "..." {
            continue;
        }
        let mut wider = frames.clone();
        wider[i] = "...".into();
        wider.dedup_by(|a, b| a == "..." && b == "...");
        while wider.last().is_some_and(|f| f == "...") {
            wider.pop();
        }
        if ok(&wider) {
            frames = wider;
            i = i.min(frames.len());
            continue;
        }
        let mut star = frames.clone();
        star[i] = "fun:*".into();
        if ok(&star) {
            frames = star;
        }
    }
    Suppression {
        frames,
        ..entry.clone()
    }
}

/// What [`minimize`] wrote, all verified by re-running.
#[derive(Clone, Debug)]
pub struct Minimized {
    /// Entries in the input file.
    pub before: usize,
    /// Entries the baseline never used (dropped).
    pub unused: usize,
    pub entries: Vec<Suppression>,
    pub frames_before: usize,
    pub frames_after: usize,
    /// Baseline errors the input suppressed (and the output still does).
    pub covered: usize,
    /// Errors of the protected targets that stay reported.
    pub protected: usize,
    /// Things the caller should know, e.g. the input already suppresses an error in the target's
    /// own code.
    pub warnings: Vec<String>,
}

/// Widen the frames of `file` to `...` / `fun:*` where every error of the baseline `target`
/// stays suppressed and no error of a `protect` target becomes suppressed; drop entries the
/// baseline never uses. The result is verified by re-running the baseline and the protected
/// targets with it (instead of `file`) before it is written to `out`; on failure nothing is
/// written.
pub fn minimize(
    manifest: &Manifest,
    file: &Path,
    target: &Target,
    protect: &[Target],
    ext: &[PathBuf],
    out: &Path,
) -> Result<Minimized> {
    let original = read_suppressions(file)?;
    let own = OwnCode::new(ext);
    let mut warnings = Vec::new();

    // Evidence: the baseline's errors and the protected targets' errors, without FILE.
    let mut mc = Memcheck::new(manifest, ext);
    mc.gen_suppressions = true;
    let baseline = observe(&mc, target)?;
    let mut protected: Vec<ObservedError> = Vec::new();
    for p in protect {
        for e in observe(&mc, p)? {
            let by_original = original.iter().any(|s| e.suppressed_by(s));
            if by_original && e.in_own_code(&own) {
                warnings.push(format!(
                    "{} already suppresses an error in the target's own code ({})",
                    file.display(),
                    e.key()
                ));
            }
            if !by_original {
                protected.push(e);
            }
        }
    }
    let protected_refs: Vec<&ObservedError> = protected.iter().collect();
    let covered_count = baseline
        .iter()
        .filter(|e| original.iter().any(|s| e.suppressed_by(s)))
        .count();
    let uncovered: BTreeSet<String> = baseline
        .iter()
        .filter(|e| !original.iter().any(|s| e.suppressed_by(s)))
        .map(ObservedError::key)
        .collect();

    // Widen every entry against the errors it suppresses; drop entries the baseline never uses.
    let mut widened: Vec<(Suppression, Vec<usize>)> = Vec::new();
    let mut unused = 0;
    for s in &original {
        let covered: Vec<usize> = (0..baseline.len())
            .filter(|&i| baseline[i].suppressed_by(s))
            .collect();
        if covered.is_empty() {
            unused += 1;
            continue;
        }
        let refs: Vec<&ObservedError> = covered.iter().map(|&i| &baseline[i]).collect();
        let w = widen(s, &refs, &protected_refs);
        let now: Vec<usize> = (0..baseline.len())
            .filter(|&i| baseline[i].suppressed_by(&w))
            .collect();
        widened.push((w, now));
    }
    // Drop duplicates, then entries whose errors the others already cover.
    let mut seen = BTreeSet::new();
    widened.retain(|(s, _)| seen.insert(s.key()));
    let mut k = 0;
    while k < widened.len() {
        let rest_cover = |i: usize| {
            widened
                .iter()
                .enumerate()
                .any(|(j, (_, c))| j != k && c.contains(&i))
        };
        if widened[k].1.iter().all(|&i| rest_cover(i)) {
            widened.remove(k);
        } else {
            k += 1;
        }
    }
    let entries: Vec<Suppression> = widened.into_iter().map(|(s, _)| s).collect();

    // Verify by re-running with the candidate file instead of FILE.
    let tmp = tempfile::Builder::new()
        .prefix("capisan-supp-")
        .tempdir()
        .map_err(io(
            "creating a temporary directory in",
            &std::env::temp_dir(),
        ))?;
    let candidate = tmp.path().join("candidate.supp");
    let header = format!(
        "{} minimized by `cargo xtask valgrind-supp minimize` against the baseline {}{}",
        file.display(),
        target.label(),
        if protect.is_empty() {
            String::new()
        } else {
            format!(
                ",\nkeeping reported: {}",
                protect
                    .iter()
                    .map(Target::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    write(&candidate, &render_file(&header, &entries))?;
    let mut check = Memcheck::new(manifest, ext);
    check.supps.push(candidate.clone());
    let left = observe(&check, target)?;
    let lost: Vec<String> = left
        .iter()
        .map(ObservedError::key)
        .filter(|k| !uncovered.contains(k))
        .collect();
    if !lost.is_empty() {
        return Err(LeakError::NotVerified(format!(
            "the minimized suppressions no longer suppress {} baseline error(s), e.g. {}; \
             {} is unchanged and nothing was written",
            lost.len(),
            lost[0],
            file.display()
        )));
    }
    let mut still = BTreeSet::new();
    for p in protect {
        still.extend(observe(&check, p)?.iter().map(ObservedError::key));
    }
    let hidden: Vec<String> = protected
        .iter()
        .map(ObservedError::key)
        .filter(|k| !still.contains(k))
        .collect();
    if !hidden.is_empty() {
        return Err(LeakError::NotVerified(format!(
            "the minimized suppressions hide {} error(s) of the protected targets, e.g. {}; \
             nothing was written",
            hidden.len(),
            hidden[0]
        )));
    }
    fs::copy(&candidate, out).map_err(io("writing", out))?;
    Ok(Minimized {
        before: original.len(),
        unused,
        frames_before: original.iter().map(|s| s.frames.len()).sum(),
        frames_after: entries.iter().map(|s| s.frames.len()).sum(),
        entries,
        covered: covered_count,
        protected: protected.len(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: &str) -> Frame {
        Frame {
            object: Some("/x/python".into()),
            ..Frame::named(f)
        }
    }

    fn error(kind: &str, stack: &[&str]) -> ObservedError {
        let frames: Vec<String> = stack.iter().map(|f| format!("fun:{f}")).collect();
        ObservedError {
            kind: "UninitCondition".into(),
            stack: stack.iter().map(|f| frame(f)).collect(),
            generated: Some(Suppression {
                name: "g".into(),
                kind: kind.into(),
                extra: vec![],
                frames,
            }),
        }
    }

    #[test]
    fn suppression_files_round_trip_and_match() {
        let text = "# c\n{\n   n1\n   Memcheck:Leak\n   match-leak-kinds: definite\n   fun:malloc\n   ...\n   fun:f*\n}\n";
        let s = parse_suppressions(text).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].extra, vec!["match-leak-kinds: definite"]);
        assert_eq!(parse_suppressions(&s[0].render()).unwrap(), s);
        assert!(stack_matches(
            &s[0].frames,
            &[frame("malloc"), frame("a"), frame("foo"), frame("main")]
        ));
        assert!(!stack_matches(&s[0].frames, &[frame("malloc"), frame("a")]));
        assert!(glob(b"a?c*", b"abcdef"));
        assert_eq!(
            parse_suppressions("{\n n\n}\n").unwrap_err().line,
            3,
            "a name without a kind"
        );
        assert!(parse_suppressions("{\n n\n Memcheck:Cond\n").is_err());
    }

    #[test]
    fn unsymbolized_frames_match_like_valgrind() {
        let unknown = Frame {
            object: Some("/usr/lib/libffi.so.8".into()),
            ..Frame::named("??")
        };
        assert!(frame_matches("fun:*", &unknown));
        assert!(frame_matches("fun:???", &unknown));
        assert!(!frame_matches("fun:??", &unknown));
        assert!(frame_matches("obj:*/libffi.so*", &unknown));
    }

    #[test]
    fn libc_and_preload_frames_never_anchor() {
        let mut e = error(
            "Memcheck:Cond",
            &["bcmp", "bytes_compare_eq", "bytes_richcompare", "eval"],
        );
        e.stack[0].object = Some("/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so".into());
        let w = widen(e.generated.as_ref().unwrap(), &[&e], &[]);
        assert_eq!(w.frames, vec!["fun:bcmp", "fun:bytes_compare_eq"]);
    }

    #[test]
    fn widening_keeps_baseline_and_spares_protected() {
        let base = error(
            "Memcheck:Cond",
            &[
                "_Py_HashBytes",
                "bytes_hash",
                "PyObject_Hash",
                "builtin_hash",
                "eval",
            ],
        );
        let mine = error(
            "Memcheck:Cond",
            &[
                "_Py_HashBytes",
                "bytes_hash",
                "PyObject_Hash",
                "uninit_read",
                "eval",
            ],
        );
        let s = base.generated.clone().unwrap();
        let w = widen(&s, &[&base], &[&mine]);
        assert!(base.suppressed_by(&w), "{w:?}");
        assert!(!mine.suppressed_by(&w), "{w:?}");
        assert!(w.frames.len() < s.frames.len() || w.frames.contains(&"...".to_string()));
        // Without anything to protect, the innermost frame alone is enough.
        let w = widen(&s, &[&base], &[]);
        assert_eq!(w.frames, vec!["fun:_Py_HashBytes"]);
        // A leak is never suppressed by the allocator alone.
        let leak = error("Memcheck:Leak", &["malloc", "PyBytes_FromSize", "eval"]);
        let w = widen(leak.generated.as_ref().unwrap(), &[&leak], &[]);
        assert_eq!(w.frames, vec!["fun:malloc", "fun:PyBytes_FromSize"]);
    }

    /// The engine on a real capture (the valgrind variant, `--gen-suppressions=all`): every
    /// error is suppressed by the suppression memcheck generated for it, and widening against
    /// the whole baseline keeps them all suppressed.
    #[test]
    fn real_memcheck_errors_are_suppressed_by_their_generated_entries() {
        let xml = include_str!("../detect/fixtures/valgrind_gen_suppressions.xml");
        let errors: Vec<ObservedError> = crate::detect::parse_memcheck_errors(xml)
            .unwrap()
            .iter()
            .map(|e| ObservedError::from_memcheck(e).unwrap())
            .collect();
        assert_eq!(errors.len(), 9);
        for e in &errors {
            let g = e.generated.as_ref().expect("generated suppression");
            assert!(e.suppressed_by(g), "{} not suppressed by {g:?}", e.key());
        }
        let hash = errors
            .iter()
            .find(|e| e.stack[0].function == "_Py_HashBytes")
            .unwrap();
        let refs: Vec<&ObservedError> = vec![hash];
        let w = widen(hash.generated.as_ref().unwrap(), &refs, &[]);
        assert_eq!(w.frames, vec!["fun:_Py_HashBytes"]);
        let leak = errors
            .iter()
            .find(|e| e.kind == "Leak_DefinitelyLost")
            .unwrap();
        let g = leak.generated.as_ref().unwrap();
        assert_eq!(g.kind, "Memcheck:Leak");
        assert_eq!(g.extra, vec!["match-leak-kinds: definite"]);
        let w = widen(g, &[leak], &[]);
        assert!(leak.suppressed_by(&w));
        assert!(
            anchored(&w.frames, &weak_functions(&[leak])),
            "a leak suppression keeps a concrete frame: {w:?}"
        );
    }
}
