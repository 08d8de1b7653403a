//! valgrind memcheck `--xml=yes` output (protocol 4).
//!
//! Each `<error>` has a `<kind>`, a `<what>` (or `<xwhat><text>` for leaks), and stacks of
//! `<frame>`s. The first stack is where the error happened (for leaks: where the block was
//! allocated); each later stack is introduced by an `<auxwhat>` saying whether it is where the
//! block was freed ("... free'd") or allocated ("alloc'd"). With `--gen-suppressions=all` each
//! `<error>` also carries a `<suppression>` whose `<rawtext>` (CDATA) is the suppression valgrind
//! would write for it.
//!
//! This is capisan's one memcheck XML reader: [`parse_errors`] keeps every error as memcheck wrote
//! it (the suppression engine in `crate::leaks::suppressions` needs all kinds, object paths and the
//! generated suppression); [`parse`] turns those into findings.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::Reader;

use super::classify::{self, VALGRIND_KINDS};
use super::{BugClass, DetectError, Finding, Frame, Tool};

/// One `<error>` of memcheck's XML as memcheck wrote it, before classification: every kind (also
/// those [`VALGRIND_KINDS`] maps to no bug class, such as still-reachable leaks), every stack, and
/// the suppression valgrind generated for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemcheckError {
    /// `UninitCondition`, `InvalidRead`, `Leak_DefinitelyLost`, ...
    pub kind: String,
    /// `<what>`, or `<xwhat><text>` for leaks.
    pub what: String,
    /// Every `<auxwhat>`, in order.
    pub auxwhat: Vec<String>,
    /// The error's stacks; the first is where it happened (for a leak: where the block was
    /// allocated).
    pub stacks: Vec<MemcheckStack>,
    /// The `<rawtext>` of the generated suppression (`--gen-suppressions=all`), a `{ ... }` entry in
    /// valgrind's suppression file format.
    pub suppression: Option<String>,
}

/// One `<stack>` of a memcheck error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemcheckStack {
    /// The `<auxwhat>` that introduced this stack ("Address 0x.. is 0 bytes inside a block of size
    /// 4 free'd"); `None` for the first stack.
    pub intro: Option<String>,
    /// Innermost first; a frame with no symbol has function `??` and its object.
    pub frames: Vec<Frame>,
}

impl MemcheckError {
    /// The first stack's frames (where the error happened), or nothing.
    pub fn first_stack(&self) -> &[Frame] {
        self.stacks.first().map_or(&[], |s| s.frames.as_slice())
    }
}

#[derive(Default)]
struct RawFrame {
    function: Option<String>,
    file: Option<String>,
    dir: Option<String>,
    line: Option<u32>,
    object: Option<String>,
}

/// Findings of memcheck's XML: the errors of [`parse_errors`] that classify as bugs.
pub(super) fn parse(xml: &str) -> Result<Vec<Finding>, DetectError> {
    Ok(parse_errors(xml)?
        .into_iter()
        .filter_map(to_finding)
        .collect())
}

/// Every `<error>` of memcheck's XML, in order. Truncated or malformed XML is an error (the run
/// was killed mid-write), never a shorter list.
pub(super) fn parse_errors(xml: &str) -> Result<Vec<MemcheckError>, DetectError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let err = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| DetectError::ValgrindXml {
        position: reader.buffer_position(),
        message: e.to_string(),
    };

    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut error: Option<MemcheckError> = None;
    let mut frame: Option<RawFrame> = None;
    let mut errors = Vec::new();
    loop {
        match reader.read_event().map_err(|e| err(&reader, &e))? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match (name.as_str(), path.last().map(String::as_str)) {
                    ("error", Some("valgrindoutput")) => error = Some(MemcheckError::default()),
                    ("stack", Some("error")) => {
                        if let Some(er) = error.as_mut() {
                            // The first stack is the error's own; each later one follows the
                            // auxwhat that describes it.
                            let intro = if er.stacks.is_empty() {
                                None
                            } else {
                                er.auxwhat.last().cloned()
                            };
                            er.stacks.push(MemcheckStack {
                                intro,
                                frames: Vec::new(),
                            });
                        }
                    }
                    ("frame", Some("stack")) => frame = Some(RawFrame::default()),
                    _ => {}
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| err(&reader, &e))?),
            // The generated suppression's `<rawtext>` is a CDATA section.
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(c.as_ref())),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| err(&reader, &e))? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| err(&reader, &e))?;
                    text.push_str(resolve_predefined_entity(&name).unwrap_or(""));
                }
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str);
                let value = std::mem::take(&mut text);
                match (name.as_str(), parent) {
                    ("kind", Some("error")) => set(&mut error, |e| e.kind = value),
                    ("what", Some("error")) => set(&mut error, |e| e.what = value),
                    ("text", Some("xwhat")) => set(&mut error, |e| e.what = value),
                    ("auxwhat", Some("error")) => set(&mut error, |e| e.auxwhat.push(value)),
                    ("fn", Some("frame")) => set(&mut frame, |f| f.function = Some(value)),
                    ("file", Some("frame")) => set(&mut frame, |f| f.file = Some(value)),
                    ("dir", Some("frame")) => set(&mut frame, |f| f.dir = Some(value)),
                    ("line", Some("frame")) => set(&mut frame, |f| f.line = value.parse().ok()),
                    ("obj", Some("frame")) => set(&mut frame, |f| f.object = Some(value)),
                    ("rawtext", Some("suppression")) => set(&mut error, |e| {
                        e.suppression = Some(value.trim().to_string())
                    }),
                    ("frame", Some("stack")) => {
                        if let (Some(f), Some(e)) = (frame.take(), error.as_mut()) {
                            if let Some(stack) = e.stacks.last_mut() {
                                stack.frames.push(to_frame(f));
                            }
                        }
                    }
                    ("error", Some("valgrindoutput")) => errors.extend(error.take()),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(errors)
}

fn set<T>(slot: &mut Option<T>, f: impl FnOnce(&mut T)) {
    if let Some(v) = slot.as_mut() {
        f(v);
    }
}

fn to_frame(raw: RawFrame) -> Frame {
    let file = match (raw.dir, raw.file) {
        (Some(dir), Some(file)) if !file.starts_with('/') => Some(format!("{dir}/{file}")),
        (_, file) => file,
    };
    Frame {
        function: raw.function.unwrap_or_else(|| "??".to_string()),
        file,
        line: raw.line,
        object: raw.object,
        offset: None,
    }
}

fn to_finding(raw: MemcheckError) -> Option<Finding> {
    let (mut class, reason) = classify::classify(VALGRIND_KINDS, &raw.kind)?;
    let mut reason = reason.to_string();
    let freed = |a: &str| a.contains("free'd");
    if raw.kind.starts_with("Invalid") && raw.kind != "InvalidFree" {
        if let Some(aux) = raw.auxwhat.iter().find(|a| freed(a)) {
            class = BugClass::UseAfterFree;
            reason = format!("valgrind: the address is {aux}");
        } else if let Some(aux) = raw.auxwhat.first() {
            reason = format!("valgrind: the address is not inside a freed block ({aux})");
        }
    }
    let mut f = Finding::new(class, Tool::Valgrind, &raw.what);
    f.reason = reason;
    let leak = raw.kind.starts_with("Leak_");
    for (
        i,
        MemcheckStack {
            intro,
            frames: stack,
        },
    ) in raw.stacks.into_iter().enumerate()
    {
        match intro.as_deref() {
            _ if i == 0 && leak => f.alloc_stack = stack,
            _ if i == 0 => f.access_stack = stack,
            Some(a) if freed(a) => f.free_stack = stack,
            Some(a) if a.contains("alloc'd") || a.contains("allocation") => f.alloc_stack = stack,
            _ => {}
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::parse_valgrind_xml;

    const ALL: &str = include_str!("fixtures/valgrind_all.xml");

    fn by_class(findings: &[Finding], class: BugClass) -> &Finding {
        findings
            .iter()
            .find(|f| f.class == class)
            .unwrap_or_else(|| panic!("no {class} in {findings:#?}"))
    }

    #[test]
    fn every_planted_pattern_is_found_with_its_frame() {
        let findings = parse_valgrind_xml(ALL).unwrap();
        assert_eq!(findings.len(), 6, "{findings:#?}");
        let f = by_class(&findings, BugClass::UninitializedRead);
        assert_eq!(
            f.summary,
            "Conditional jump or move depends on uninitialised value(s)"
        );
        assert_eq!(f.top_frame().unwrap().function, "uninit_read(int)");
        assert_eq!(f.top_frame().unwrap().line, Some(13));
        assert_eq!(
            f.top_frame().unwrap().file.as_deref(),
            Some("/tmp/zoo/vg/valgrind_patterns.cc")
        );

        let f = by_class(&findings, BugClass::UseAfterFree);
        assert_eq!(f.summary, "Invalid read of size 4");
        assert_eq!(f.top_frame().unwrap().function, "use_after_free()");
        assert_eq!(f.free_stack[0].function, "free");
        assert_eq!(f.alloc_stack[0].function, "malloc");
        assert!(f.reason.contains("free'd"));

        let f = by_class(&findings, BugClass::BufferOverflow);
        assert_eq!(f.summary, "Invalid write of size 1");
        assert_eq!(
            f.top_frame().unwrap().function,
            "overflow(char const*, unsigned long)"
        );
        assert!(f.free_stack.is_empty());

        let f = by_class(&findings, BugClass::DoubleFree);
        assert_eq!(f.access_stack[0].function, "free");
        assert_eq!(f.top_frame().unwrap().function, "double_free()");
        assert_eq!(f.top_frame().unwrap().line, Some(42));
        assert_eq!(f.free_stack[1].line, Some(41));

        let f = by_class(&findings, BugClass::AllocatorMismatch);
        assert_eq!(f.top_frame().unwrap().function, "alloc_mismatch()");
        assert_eq!(f.alloc_stack[0].function, "operator new[](unsigned long)");

        let f = by_class(&findings, BugClass::ReferenceLeak);
        assert!(f.access_stack.is_empty());
        assert_eq!(f.top_frame().unwrap().function, "leak()");
        assert_eq!(
            f.summary,
            "40 bytes in 1 blocks are definitely lost in loss record 1 of 1"
        );
    }

    #[test]
    fn generated_suppressions_are_kept_with_every_error() {
        let xml = include_str!("fixtures/valgrind_gen_suppressions.xml");
        let errors = crate::detect::parse_memcheck_errors(xml).unwrap();
        assert_eq!(errors.len(), 9, "{errors:#?}");
        let cond: Vec<_> = errors
            .iter()
            .filter(|e| e.kind == "UninitCondition")
            .collect();
        assert_eq!(cond.len(), 8);
        let first = cond[0];
        assert_eq!(first.first_stack()[0].function, "_Py_HashBytes");
        assert!(first.first_stack()[0]
            .object
            .as_deref()
            .is_some_and(|o| o.ends_with("/build/python")));
        assert!(first.first_stack()[0]
            .file
            .as_deref()
            .is_some_and(|f| f.starts_with("/root/.cache/capisan/sources/")
                && f.ends_with("Python/pyhash.c")));
        let supp = first.suppression.as_deref().expect("generated suppression");
        assert!(
            supp.starts_with(
                "{\n   <insert_a_suppression_name_here>\n   Memcheck:Cond\n   fun:_Py_HashBytes\n"
            ),
            "{supp}"
        );
        assert!(supp.ends_with('}'), "{supp}");
        assert!(errors.iter().all(|e| e.suppression.is_some()));
        let leak = errors
            .iter()
            .find(|e| e.kind == "Leak_DefinitelyLost")
            .unwrap();
        assert!(leak.what.contains("definitely lost"), "{}", leak.what);
        assert!(leak
            .suppression
            .as_deref()
            .unwrap()
            .contains("Memcheck:Leak"));
        // The same reader makes the findings: every error here is one.
        let findings = parse_valgrind_xml(xml).unwrap();
        assert_eq!(findings.len(), 9);
        assert_eq!(
            findings
                .iter()
                .filter(|f| f.class == BugClass::UninitializedRead)
                .count(),
            8
        );
    }

    #[test]
    fn clean_run_has_no_findings() {
        let xml = include_str!("fixtures/valgrind_clean.xml");
        assert_eq!(parse_valgrind_xml(xml).unwrap(), Vec::new());
    }

    #[test]
    fn entities_are_resolved_and_truncation_is_an_error() {
        let xml =
            "<valgrindoutput><error><kind>InvalidRead</kind><what>Invalid read of size 8</what>\
<stack><frame><fn>std::vector&lt;int&gt;::at</fn></frame></stack></error></valgrindoutput>";
        let f = parse_valgrind_xml(xml).unwrap();
        assert_eq!(f[0].access_stack[0].function, "std::vector<int>::at");
        assert_eq!(f[0].class, BugClass::BufferOverflow);
        assert!(parse_valgrind_xml("<valgrindoutput><error><kind>X</kind></wrong>").is_err());
    }
}
