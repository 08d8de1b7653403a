//! `repro.py`: the same sequence in pure Python, where every op has a Python spelling; else an
//! error saying which op does not (stealing setters and raw refcount ops have none).

use std::fmt::Write;

use super::{callee, Expect};
use crate::ops::{clip_bytes, clip_str, CallableKind, Op, PyClass, Resolved};

/// `check_leak(name, func, args)`: the leak measurement of a leak reproducer, as in `repro.c`.
pub const LEAK_CHECK_PY: &str = include_str!("leak_check.py");

/// The Python program, or why there is none.
pub fn emit(r: &Resolved, expect: Expect) -> Result<String, String> {
    let mut out = String::from("# Standalone reproducer written by capisan: run it with the variant's python (./run.sh).\n");
    out.push_str(crate::PRELUDE_PY);
    out.push('\n');
    let mut modules: Vec<String> = r
        .ext
        .iter()
        .map(|e| e.rsplit_once('.').map_or(e.clone(), |x| x.0.to_string()))
        .collect();
    modules.dedup();
    for m in &modules {
        let _ = writeln!(out, "import {m}");
    }
    out.push_str("import sys\n");
    if expect == Expect::Leak {
        out.push_str(LEAK_CHECK_PY);
    }
    let slots: Vec<String> = (0..crate::ops::NSLOTS).map(|i| format!("s{i}")).collect();
    let _ = writeln!(out, "{} = None", slots.join(" = "));
    for (i, op) in r.ops.iter().enumerate() {
        let line =
            op_py(op, r, expect).ok_or_else(|| format!("op #{i} {op} has no Python equivalent"))?;
        let _ = writeln!(
            out,
            "# {}\ntry:\n    {}\nexcept Exception as e:\n    print('op #{i} raised (as in capisan):', repr(e))",
            super::describe(op, r),
            line.replace('\n', "\n    ")
        );
    }
    out.push_str(
        "print('capisan repro: finished without the expected failure', file=sys.stderr)\n",
    );
    Ok(out)
}

/// A call argument in Python: its slot, or the vocabulary value it names.
fn py_arg(a: crate::ops::Slot) -> String {
    match a.value_code() {
        Some(c) => format!("make_value({c})"),
        None => a.to_string(),
    }
}

fn op_py(op: &Op, r: &Resolved, expect: Expect) -> Option<String> {
    use Op::*;
    Some(match op {
        NewInt { dst, value } => format!("{dst} = {value}"),
        NewFloat { dst, value } => format!("{dst} = float({:?})", value.to_string()),
        NewStr { dst, text } => format!("{dst} = {:?}", clip_str(text)),
        NewBytes { dst, data } => format!("{dst} = bytes({:?})", clip_bytes(data)),
        NewTuple { dst, len } => format!("{dst} = (None,) * {}", len % 5),
        NewList { dst } => format!("{dst} = []"),
        NewListOf { dst, len } => format!("{dst} = [k + 0.5 for k in range({})]", len % 5),
        NewDict { dst } => format!("{dst} = {{}}"),
        NewSet { dst } => format!("{dst} = set()"),
        NewInstance { dst, class } => format!(
            "{dst} = {}()",
            if *class == PyClass::Evil {
                "Evil"
            } else {
                "Plain"
            }
        ),
        NewCallable { dst, kind, target } => {
            let k = match kind {
                CallableKind::Clearer => 0,
                CallableKind::Noop => 1,
                CallableKind::Raiser => 2,
            };
            format!("{dst} = make_callable({k}, {target})")
        }
        Dup { src, dst } => format!("{dst} = {src}"),
        Release { slot } => format!("{slot} = None"),
        ListAppend { list, item } => format!("{list}.append({item})"),
        ListInsert { list, index, item } => format!("{list}.insert({index}, {item})"),
        ListGetItem { list, index, dst } => format!("{dst} = {list}[{index}]"),
        ListDelSlice { list, lo, hi } => format!("del {list}[{lo}:{hi}]"),
        ListSort { list } => format!("{list}.sort()"),
        TupleGetItem { tuple, index, dst } => format!("{dst} = {tuple}[{index}]"),
        DictSetItem { dict, key, value } => format!("{dict}[{key}] = {value}"),
        DictGetItem { dict, key, dst } | DictGetItemRef { dict, key, dst } => {
            format!("{dst} = {dict}.get({key})")
        }
        DictDelItem { dict, key } => format!("del {dict}[{key}]"),
        DictClear { dict } => format!("{dict}.clear()"),
        SetAdd { set, item } => format!("{set}.add({item})"),
        SetAttr { obj, name, value } => format!("setattr({obj}, {:?}, {value})", name.as_str()),
        GetAttr { obj, name, dst } => format!("{dst} = getattr({obj}, {:?})", name.as_str()),
        RichCompare { a, b, op, dst } => format!(
            "{dst} = {a} {} {b}",
            ["<", "<=", "==", "!=", ">", ">="][(*op % 6) as usize]
        ),
        Hash { obj } => format!("hash({obj})"),
        Repr { obj, dst } => format!("{dst} = repr({obj})"),
        Call { callable, arg, dst } => format!("{dst} = {callable}({arg})"),
        GcCollect { generation } => format!("import gc; gc.collect({})", generation % 3),
        ErrRoundTrip { dst } => format!("{dst} = ValueError('capisan')"),
        NewValue { dst, code } => format!("{dst} = make_value({code})"),
        CallMethod {
            recv,
            method,
            kw,
            dst,
            ..
        } => {
            let argv: Vec<String> = op.ext_args().iter().map(|a| format!("{}, ", py_arg(*a))).collect();
            format!(
                "{dst} = method_call({recv}, {method}, ({}), {kw})",
                argv.concat()
            )
        }
        Protocol {
            obj,
            which,
            arg,
            dst,
        } => format!("{dst} = protocol({which}, {obj}, {})", py_arg(*arg)),
        CallExt { func, dst, kw, .. } if *kw != 0 => {
            let (m, f) = callee(r, *func);
            let argv: Vec<String> = op.ext_args().iter().map(|a| format!("{}, ", py_arg(*a))).collect();
            format!(
                "{dst} = ext_call({m}.{f}, ({}), {kw})\nfor _ in range(2):\n    ext_call({m}.{f}, ({}), {kw})",
                argv.concat(),
                argv.concat()
            )
        }
        CallExt { func, dst, .. } => {
            let (m, f) = callee(r, *func);
            let argv: Vec<String> = op.ext_args().iter().map(|a| py_arg(*a)).collect();
            let call = format!("{m}.{f}({})", argv.join(", "));
            match expect {
                // Once, as capisan did, then regrtest's -R procedure on the same call.
                Expect::Leak => format!(
                    "{dst} = None\ntry:\n    {dst} = {call}\nexcept Exception:\n    pass\ncheck_leak({:?}, {m}.{f}, ({}))",
                    format!("{m}.{f}"),
                    argv.iter().map(|a| format!("{a}, ")).collect::<String>()
                ),
                // The arguments are evaluated once (a vocabulary value is a fresh object each
                // time), so the object checked is the object passed; None counts too (a
                // traverse must visit every reference it holds).
                Expect::GcTraversal if !argv.is_empty() => format!(
                    "__args = ({})\n{dst} = {m}.{f}(*__args)\nimport gc\nif not any(x is __args[0] for x in gc.get_referents({dst})):\n    sys.exit('GC TRAVERSAL BUG: tp_traverse of %s does not visit its argument' % type({dst}).__name__)",
                    argv.iter().map(|a| format!("{a}, ")).collect::<String>()
                ),
                Expect::GcTraversal => format!("{dst} = {call}"),
                Expect::Crash => format!("{dst} = {call}\nfor _ in range(2):\n    {call}"),
            }
        }
        Incref { .. }
        | Decref { .. }
        | ListSetItem { .. }
        | TupleSetItem { .. }
        | ModuleAdd { .. }
        | ModuleAddRef { .. }
        // Allocation-failure injection needs the C allocator wrappers (repro.c has them).
        | FailNext { .. } => return None,
    })
}
