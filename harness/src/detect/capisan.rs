//! capisan's own report lines, printed by the harness (also from a sanitizer death callback, so
//! they may come before or after a sanitizer report in the same text):
//!
//! ```text
//! ==capisan== VIOLATION kind=<leak|over-decref|exception-state|gc-traversal|gc-clear> op=#<idx> <op text>
//! ==capisan== detail: <free text, may repeat>
//! ==capisan== op-log begin
//! ==capisan== #0 <op text>
//! ==capisan== op-log end
//! ==capisan== current-op #<idx> <op text>
//! ==capisan== gc-slot <function> <module.Type> [<module.Type2> …]
//! ```
//!
//! Op log entries and the current op are kept as `#<idx> <op text>`.

use std::sync::OnceLock;

use regex::Regex;

use super::classify::{self, CAPISAN_KINDS};
use super::{Finding, Tool};

const PREFIX: &str = "==capisan== ";

/// The op log and current op of one run, attached to every finding in the same text.
#[derive(Debug, Default)]
pub(super) struct Context {
    pub op_log: Vec<String>,
    pub current_op: Option<String>,
    /// `(slot function, types it serves)` of the extension types the harness met (`gc-slot`
    /// lines).
    pub gc_slots: Vec<(String, Vec<String>)>,
}

fn body(line: &str) -> Option<&str> {
    line.trim_end().strip_prefix(PREFIX)
}

/// The last op log block and the last `current-op` line in `lines`.
pub(super) fn parse_context(lines: &[&str]) -> Context {
    let mut ctx = Context::default();
    let mut in_log = false;
    for rest in lines.iter().filter_map(|l| body(l)) {
        match rest {
            "op-log begin" => {
                in_log = true;
                ctx.op_log.clear();
            }
            "op-log end" => in_log = false,
            _ if in_log && rest.starts_with('#') => ctx.op_log.push(rest.to_string()),
            _ => {
                if let Some(op) = rest.strip_prefix("current-op ") {
                    ctx.current_op = Some(op.trim().to_string());
                } else if let Some(slot) = rest.strip_prefix("gc-slot ") {
                    let mut words = slot.split_whitespace().map(String::from);
                    if let Some(function) = words.next() {
                        let types: Vec<String> = words.collect();
                        if !types.is_empty() && !ctx.gc_slots.iter().any(|(f, _)| *f == function) {
                            ctx.gc_slots.push((function, types));
                        }
                    }
                }
            }
        }
    }
    ctx
}

fn violation() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^VIOLATION kind=(\S+) op=(#\d+) (.*)$").expect("regex"))
}

/// True for a `VIOLATION` line.
pub(super) fn is_violation(line: &str) -> bool {
    body(line).is_some_and(|rest| violation().is_match(rest))
}

/// One finding per VIOLATION line; following `detail:` lines go into its reason.
pub(super) fn parse_violations(lines: &[&str]) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    for rest in lines.iter().filter_map(|l| body(l)) {
        if let Some(c) = violation().captures(rest) {
            let (class, reason) =
                classify::classify(CAPISAN_KINDS, &c[1]).expect("CAPISAN_KINDS has no None rows");
            let op = format!("{} {}", &c[2], c[3].trim());
            let mut f = Finding::new(class, Tool::Capisan, format!("capisan {} at {op}", &c[1]));
            f.reason = reason.to_string();
            f.current_op = Some(op);
            findings.push(f);
        } else if let (Some(at), Some(f)) = (rest.strip_prefix("detail: at: "), findings.last_mut())
        {
            // The C function or type the harness blames: the finding's top frame.
            f.access_stack = vec![crate::detect::Frame::named(at.trim())];
        } else if let (Some(detail), Some(f)) = (rest.strip_prefix("detail: "), findings.last_mut())
        {
            f.reason.push_str("; ");
            f.reason.push_str(detail.trim());
        }
    }
    findings
}

/// The op *name* used in bucket signatures: the leading identifier of the op text, and for
/// `CallExt` also the callee (`CallExt bugzoo.extra_decref`), since calling a different extension
/// function is a different bug. Accepts the op with or without its `#<idx>` prefix and its
/// `<dst> = ` result slot (`#3 s2 = CallExt bugzoo.extra_decref(s0)`), neither of which is part of
/// the name.
pub(super) fn op_name(op: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = R.get_or_init(|| {
        Regex::new(
            r"^(?:#\d+\s+)?(?:[A-Za-z_][A-Za-z0-9_]*\s*=\s*)?((?:CallExt|CallMethod|Protocol)\s+[^\s(]+|[A-Za-z_][A-Za-z0-9_]*)",
        )
        .expect("regex")
    });
    r.captures(op.trim()).map_or_else(
        || op.trim().to_string(),
        |c| {
            c[1].split_whitespace()
                .map(super::strip_subclass_variant)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names() {
        assert_eq!(
            op_name("#3 CallExt bugzoo.extra_decref(s1)"),
            "CallExt bugzoo.extra_decref"
        );
        assert_eq!(op_name("ListAppend(s0, s1)"), "ListAppend");
        assert_eq!(op_name("#0 NewList(s0)"), "NewList");
        // The harness prints ops that produce a value with their result slot.
        assert_eq!(
            op_name("#3 s2 = CallExt bugzoo.extra_decref(s0)"),
            "CallExt bugzoo.extra_decref"
        );
        assert_eq!(op_name("#0 s0 = NewList()"), "NewList");
        // Evil subclass variants of one type are that type.
        assert_eq!(
            op_name("#7 s1 = CallExt multidict._multidict.CIMultiDictProxy~copy~mutate(s0)"),
            "CallExt multidict._multidict.CIMultiDictProxy"
        );
    }

    #[test]
    fn evil_subclass_variants_share_their_base_types_bucket() {
        let sig = |sub: &str| {
            let text = format!("==capisan== VIOLATION kind=leak op=#3 s2 = CallExt m.T{sub}(s0)\n==capisan== detail: each call of m.T{sub} leaks references\n==capisan== detail: at: m.T{sub}\n");
            crate::detect::parse(&text)[0].signature().0
        };
        assert_eq!(sig("~copy~mutate"), "reference-leak|T|CallExt m.T");
        assert_eq!(sig("~keys~raise"), sig(""));
    }

    #[test]
    fn at_line_names_the_top_frame() {
        let text = "==capisan== VIOLATION kind=gc-traversal op=#4 Release(s1)\n==capisan== detail: bugzoo.Holder: dealloc released 1 reference(s)\n==capisan== detail: at: bugzoo.Holder\n";
        let f = &crate::detect::parse(text)[0];
        assert_eq!(f.class, crate::detect::BugClass::GcTraversal);
        assert_eq!(f.top_frame().unwrap().function, "bugzoo.Holder");
        assert_eq!(f.signature().0, "gc-traversal|Holder|-");
    }

    #[test]
    fn details_accumulate_and_unknown_kinds_still_report() {
        let text = "==capisan== VIOLATION kind=weird op=#0 Foo(s0)\n==capisan== detail: a\n==capisan== detail: b\n";
        let lines: Vec<&str> = text.lines().collect();
        let f = parse_violations(&lines);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].class, crate::detect::BugClass::Crash);
        assert!(f[0].reason.ends_with("; a; b"));
    }
}
