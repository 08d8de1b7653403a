//! The op vocabulary: one `Op` per C-API call (or small group) the fuzzer can issue, decoded
//! from fuzzer bytes with `arbitrary`. Ops name *slots* (a small table of object references),
//! never raw pointers; the [`model::Model`] decides which ops are legal in the current state.

pub mod model;

use std::fmt;

use arbitrary::Arbitrary;
use serde::{Deserialize, Serialize};

/// Number of object slots an op sequence works over.
pub const NSLOTS: usize = 8;

/// Most ops one fuzzer input decodes to; longer inputs are truncated (keeps exec/s high).
pub const MAX_OPS: usize = 64;

/// Most ops a JSON op list (seed, regression case, reproducer) may hold.
pub const MAX_JSON_OPS: usize = 1024;

/// Index of a slot; any byte is valid (taken modulo [`NSLOTS`]).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slot(pub u8);

impl Slot {
    /// The slot's index in `0..NSLOTS`.
    pub fn index(self) -> usize {
        self.0 as usize % NSLOTS
    }

    /// As an argument of `CallExt` / `CallMethod`, a byte of 0x80 or more is not a slot but a
    /// fresh value of the Python vocabulary, `make_value(byte & 0x7f)`: an odd argument costs
    /// one byte instead of a `NewValue` op and a slot.
    pub fn value_code(self) -> Option<u8> {
        (self.0 >= 0x80).then_some(self.0 & 0x7f)
    }

    /// An argument as op text: `s3`, or `v12` for a vocabulary value.
    pub fn arg_text(self) -> String {
        match self.value_code() {
            Some(c) => format!("v{c}"),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.index())
    }
}

/// Python classes defined by the harness prelude; instances are GC-tracked heap objects.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PyClass {
    /// `class Plain: pass`
    Plain,
    /// `__eq__`/`__lt__` clear `self.victim` (the classic evil comparison), `__hash__` is 0.
    Evil,
}

/// Callables from the prelude handed to C code as arguments.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallableKind {
    /// `lambda *a: target.clear()` — mutates the container held in `target`.
    Clearer,
    /// `lambda *a: None`
    Noop,
    /// `lambda *a: 1/0`
    Raiser,
}

/// Attribute names ops may set or get (interned once).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrName {
    Victim,
    Payload,
    Other,
}

impl AttrName {
    /// The Python name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrName::Victim => "victim",
            AttrName::Payload => "payload",
            AttrName::Other => "other",
        }
    }
}

/// One step of a fuzzed sequence. Each variant documents its ownership effect:
/// *new* (the harness gets a strong reference), *borrowed* (valid until the container changes),
/// *stolen* (the harness gives its reference away).
#[derive(Arbitrary, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `PyLong_FromLongLong` — new.
    NewInt { dst: Slot, value: i64 },
    /// `PyFloat_FromDouble` — new.
    NewFloat { dst: Slot, value: f64 },
    /// `PyUnicode_FromStringAndSize` — new (at most 16 bytes of valid UTF-8 are used).
    NewStr { dst: Slot, text: String },
    /// `PyBytes_FromStringAndSize` — new (at most 32 bytes used).
    NewBytes {
        dst: Slot,
        #[arbitrary(with = arbitrary_payload)]
        data: Vec<u8>,
    },
    /// `PyTuple_New(len % 5)` filled with `None` by `PyTuple_SET_ITEM` — new.
    NewTuple { dst: Slot, len: u8 },
    /// `PyList_New(0)` — new.
    NewList { dst: Slot },
    /// `PyList_New(0)` then `PyList_Append` of `len % 5` fresh floats the list alone owns (the
    /// shape where a borrowed item dies as soon as the list lets go of it) — new.
    NewListOf { dst: Slot, len: u8 },
    /// `PyDict_New` — new.
    NewDict { dst: Slot },
    /// `PySet_New(NULL)` — new.
    NewSet { dst: Slot },
    /// `PyObject_CallNoArgs(class)` — new GC-tracked instance of a prelude class.
    NewInstance { dst: Slot, class: PyClass },
    /// A prelude callable bound to the object in `target` — new.
    NewCallable {
        dst: Slot,
        kind: CallableKind,
        target: Slot,
    },
    /// `Py_NewRef` — new.
    Dup { src: Slot, dst: Slot },
    /// `Py_INCREF` — turns a borrowed slot into an owned one, or adds one owned reference.
    Incref { slot: Slot },
    /// `Py_DECREF` of one owned reference.
    Decref { slot: Slot },
    /// `Py_DECREF` of every owned reference in the slot.
    Release { slot: Slot },
    /// `PyList_Append` — item not stolen.
    ListAppend { list: Slot, item: Slot },
    /// `PyList_Insert` — item not stolen.
    ListInsert { list: Slot, index: i8, item: Slot },
    /// `PyList_SetItem` — item stolen (even on failure), old item released.
    ListSetItem { list: Slot, index: i8, item: Slot },
    /// `PyList_GetItem` — borrowed.
    ListGetItem { list: Slot, index: i8, dst: Slot },
    /// `PyList_SetSlice(list, lo, hi, NULL)` — deletes items.
    ListDelSlice { list: Slot, lo: i8, hi: i8 },
    /// `PyList_Sort` — runs `__lt__` of the items.
    ListSort { list: Slot },
    /// `PyTuple_SetItem` — item stolen (even on failure).
    TupleSetItem { tuple: Slot, index: i8, item: Slot },
    /// `PyTuple_GetItem` — borrowed.
    TupleGetItem { tuple: Slot, index: i8, dst: Slot },
    /// `PyDict_SetItem` — key and value not stolen.
    DictSetItem { dict: Slot, key: Slot, value: Slot },
    /// `PyDict_GetItemWithError` — borrowed.
    DictGetItem { dict: Slot, key: Slot, dst: Slot },
    /// `PyDict_GetItemRef` (3.13+) — new.
    DictGetItemRef { dict: Slot, key: Slot, dst: Slot },
    /// `PyDict_DelItem`.
    DictDelItem { dict: Slot, key: Slot },
    /// `PyDict_Clear`.
    DictClear { dict: Slot },
    /// `PySet_Add` — item not stolen.
    SetAdd { set: Slot, item: Slot },
    /// `PyObject_SetAttr` — value not stolen.
    SetAttr {
        obj: Slot,
        name: AttrName,
        value: Slot,
    },
    /// `PyObject_GetAttr` — new.
    GetAttr {
        obj: Slot,
        name: AttrName,
        dst: Slot,
    },
    /// `PyObject_RichCompare` — new; runs `__eq__`.
    RichCompare { a: Slot, b: Slot, op: u8, dst: Slot },
    /// `PyObject_Hash` — runs `__hash__`.
    Hash { obj: Slot },
    /// `PyObject_Repr` — new.
    Repr { obj: Slot, dst: Slot },
    /// `PyObject_CallOneArg(callable, arg)` — new.
    Call {
        callable: Slot,
        arg: Slot,
        dst: Slot,
    },
    /// `PyModule_AddObjectRef` into a scratch module — not stolen.
    ModuleAddRef { obj: Slot, name: AttrName },
    /// `PyModule_Add` (3.13+) into a scratch module — stolen.
    ModuleAdd { obj: Slot, name: AttrName },
    /// `PyErr_SetString` then `PyErr_GetRaisedException` — new.
    ErrRoundTrip { dst: Slot },
    /// `gc.collect(generation % 3)`: young generations are cheap, a full collection is not.
    GcCollect { generation: u8 },
    /// Call callable number `func` of the extension under test with the first `nargs % 4` of
    /// `args` — new. (A fixed array keeps the fuzzer's encoding dense.)
    CallExt {
        func: u8,
        nargs: u8,
        args: [Slot; 3],
        dst: Slot,
        /// Keyword mask (see [`KwMask`]); 0 passes every argument by position.
        #[serde(default)]
        kw: u8,
    },
    /// `make_value(code)`: a value of the Python vocabulary (boundary numbers, odd strings,
    /// 100-KiB and 1-MiB buffers, memoryviews, containers, subclass instances of builtins,
    /// file-likes, iterators, objects whose dunders raise, return wrong types or mutate the
    /// running call's receiver and arguments) — new.
    NewValue { dst: Slot, code: u8 },
    /// Method (or property) number `method % n` of the public ones of `recv`'s type, with the
    /// first `nargs % 4` of `args` and keyword mask `kw` — new. Works on any object the
    /// sequence holds: instances returned by the extension, subclass instances, builtins.
    CallMethod {
        recv: Slot,
        method: u8,
        nargs: u8,
        args: [Slot; 3],
        kw: u8,
        dst: Slot,
    },
    /// A language-level operation on `obj` (len, iter, next, getitem, setitem, contains,
    /// number conversions, arithmetic, buffer, with, str, format, reversed, bytes, call,
    /// comparisons, hash, copy, pickle, setting or deleting every data attribute:
    /// `protocol(which, obj, arg)`), which runs the object's hooks — new. `arg` is a slot or,
    /// as a call argument, a fresh vocabulary value ([`Slot::value_code`]).
    Protocol {
        obj: Slot,
        which: u8,
        arg: Slot,
        dst: Slot,
    },
    /// Arm allocation-failure injection for the next `CallExt` that passes its arguments by
    /// position (it calls the extension's C code directly): allocations `nth` ..
    /// `nth + count - 1` of that call (counted from 1 over the RAW, MEM and OBJ domains; `count`
    /// 0 = every one from `nth` until the call returns) return NULL. Touches no slot. Raw fuzzer
    /// bytes yield it only in a `--fail-alloc` campaign (see [`OpSeq::decode`]); JSON op lists
    /// always honour it, so a finding on an error path replays as it was found.
    FailNext {
        #[arbitrary(with = arbitrary_nth)]
        nth: u16,
        #[arbitrary(with = arbitrary_count)]
        count: u8,
    },
}

/// Which allocations of an armed call fail (see [`Op::FailNext`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailSpec {
    /// The first failing allocation, from 1 (0 is read as 1).
    pub nth: u16,
    /// How many fail; 0 = every one from `nth` on.
    pub count: u8,
}

impl FailSpec {
    /// The failing allocations as `(first, last)`, inclusive, `last` 0 meaning unbounded.
    pub fn range(self) -> (u64, u64) {
        let first = u64::from(self.nth.max(1));
        let last = match self.count {
            0 => 0,
            c => first + u64::from(c) - 1,
        };
        (first, last)
    }
}

impl fmt::Display for FailSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.range() {
            (a, 0) => write!(f, "allocations {a}.. fail"),
            (a, b) if a == b => write!(f, "allocation {a} fails"),
            (a, b) => write!(f, "allocations {a}..{b} fail"),
        }
    }
}

/// The fuzzer's encoding of `FailNext::nth`: one byte, three times in four one of the first 8
/// allocations (an extension's own error paths are there: a small function makes a handful),
/// else 9..72.
fn arbitrary_nth(u: &mut arbitrary::Unstructured) -> arbitrary::Result<u16> {
    Ok(nth_of(u8::arbitrary(u)?))
}

/// See [`arbitrary_nth`].
fn nth_of(b: u8) -> u16 {
    let b = u16::from(b);
    if b < 192 {
        1 + b % 8
    } else {
        9 + (b - 192)
    }
}

/// The fuzzer's encoding of `FailNext::count`: one allocation three times in four (a single
/// failure, the path a leak on error needs), otherwise every one from `nth` on.
fn arbitrary_count(u: &mut arbitrary::Unstructured) -> arbitrary::Result<u8> {
    Ok(if u8::arbitrary(u)? % 4 == 3 { 0 } else { 1 })
}

/// How a call's arguments become keywords: bit `i` (0..3) passes argument `i` by keyword,
/// named by the callee's keyword parameter number `i + offset` (bits 4..6, so a fuzzer reaches
/// `default=` far down a signature); all bits set (0xff, one in 256) adds an unknown keyword.
pub struct KwMask;

impl KwMask {
    /// Whether argument `i` is passed by keyword.
    pub fn by_keyword(kw: u8, i: usize) -> bool {
        i < 4 && kw >> i & 1 == 1
    }
    /// The keyword parameter index argument `i` takes.
    pub fn keyword_index(kw: u8, i: usize, nkw: usize) -> usize {
        (i + usize::from(kw >> 4 & 7)) % nkw.max(1)
    }
    /// Whether an unknown keyword is added.
    pub fn unknown(kw: u8) -> bool {
        kw == 0xff
    }
}

impl Op {
    /// The argument slots a `CallExt` or `CallMethod` passes: the first `nargs % 4` of `args`
    /// (none for others).
    pub fn ext_args(&self) -> &[Slot] {
        match self {
            Op::CallExt { nargs, args, .. } | Op::CallMethod { nargs, args, .. } => {
                &args[..*nargs as usize % 4]
            }
            _ => &[],
        }
    }

    /// The op as text, naming a `CallExt` callee from `ext` (indexed like `func % ext.len()`):
    /// `s5 = CallExt bugzoo.double_free(s0)`.
    pub fn describe(&self, ext: &[String]) -> String {
        match self {
            Op::CallExt { func, dst, .. } => {
                let name = ext
                    .get(*func as usize % ext.len().max(1))
                    .map_or("?", String::as_str);
                let args: Vec<String> = self.ext_args().iter().map(|a| a.arg_text()).collect();
                let kw = match self {
                    Op::CallExt { kw, .. } if *kw != 0 => format!(" kw={kw:#04x}"),
                    _ => String::new(),
                };
                format!("{dst} = CallExt {name}({}){kw}", args.join(", "))
            }
            other => other.to_string(),
        }
    }

    /// The variant name, e.g. `ListAppend` (the op part of a bucket signature).
    pub fn name(&self) -> &'static str {
        macro_rules! names {
            ($($v:ident),*) => { match self { $(Op::$v { .. } => stringify!($v),)* } };
        }
        names!(
            NewInt,
            NewFloat,
            NewStr,
            NewBytes,
            NewTuple,
            NewList,
            NewListOf,
            NewDict,
            NewSet,
            NewInstance,
            NewCallable,
            Dup,
            Incref,
            Decref,
            Release,
            ListAppend,
            ListInsert,
            ListSetItem,
            ListGetItem,
            ListDelSlice,
            ListSort,
            TupleSetItem,
            TupleGetItem,
            DictSetItem,
            DictGetItem,
            DictGetItemRef,
            DictDelItem,
            DictClear,
            SetAdd,
            SetAttr,
            GetAttr,
            RichCompare,
            Hash,
            Repr,
            Call,
            ModuleAddRef,
            ModuleAdd,
            ErrRoundTrip,
            GcCollect,
            NewValue,
            CallMethod,
            Protocol,
            CallExt,
            FailNext
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Op::*;
        match self {
            NewInt { dst, value } => write!(f, "{dst} = NewInt({value})"),
            NewFloat { dst, value } => write!(f, "{dst} = NewFloat({value:?})"),
            NewStr { dst, text } => write!(f, "{dst} = NewStr({:?})", clip_str(text)),
            NewBytes { dst, data } => {
                write!(f, "{dst} = NewBytes({} bytes)", clip_bytes(data).len())
            }
            NewTuple { dst, len } => write!(f, "{dst} = NewTuple({})", len % 5),
            NewList { dst } => write!(f, "{dst} = NewList()"),
            NewListOf { dst, len } => write!(f, "{dst} = NewListOf({})", len % 5),
            NewDict { dst } => write!(f, "{dst} = NewDict()"),
            NewSet { dst } => write!(f, "{dst} = NewSet()"),
            NewInstance { dst, class } => write!(f, "{dst} = NewInstance({class:?})"),
            NewCallable { dst, kind, target } => {
                write!(f, "{dst} = NewCallable({kind:?}, {target})")
            }
            Dup { src, dst } => write!(f, "{dst} = Dup({src})"),
            Incref { slot } => write!(f, "Incref({slot})"),
            Decref { slot } => write!(f, "Decref({slot})"),
            Release { slot } => write!(f, "Release({slot})"),
            ListAppend { list, item } => write!(f, "ListAppend({list}, {item})"),
            ListInsert { list, index, item } => write!(f, "ListInsert({list}, {index}, {item})"),
            ListSetItem { list, index, item } => write!(f, "ListSetItem({list}, {index}, {item})"),
            ListGetItem { list, index, dst } => write!(f, "{dst} = ListGetItem({list}, {index})"),
            ListDelSlice { list, lo, hi } => write!(f, "ListDelSlice({list}, {lo}, {hi})"),
            ListSort { list } => write!(f, "ListSort({list})"),
            TupleSetItem { tuple, index, item } => {
                write!(f, "TupleSetItem({tuple}, {index}, {item})")
            }
            TupleGetItem { tuple, index, dst } => {
                write!(f, "{dst} = TupleGetItem({tuple}, {index})")
            }
            DictSetItem { dict, key, value } => write!(f, "DictSetItem({dict}, {key}, {value})"),
            DictGetItem { dict, key, dst } => write!(f, "{dst} = DictGetItem({dict}, {key})"),
            DictGetItemRef { dict, key, dst } => write!(f, "{dst} = DictGetItemRef({dict}, {key})"),
            DictDelItem { dict, key } => write!(f, "DictDelItem({dict}, {key})"),
            DictClear { dict } => write!(f, "DictClear({dict})"),
            SetAdd { set, item } => write!(f, "SetAdd({set}, {item})"),
            SetAttr { obj, name, value } => {
                write!(f, "SetAttr({obj}, {:?}, {value})", name.as_str())
            }
            GetAttr { obj, name, dst } => write!(f, "{dst} = GetAttr({obj}, {:?})", name.as_str()),
            RichCompare { a, b, op, dst } => write!(f, "{dst} = RichCompare({a}, {b}, {})", op % 6),
            Hash { obj } => write!(f, "Hash({obj})"),
            Repr { obj, dst } => write!(f, "{dst} = Repr({obj})"),
            Call { callable, arg, dst } => write!(f, "{dst} = Call({callable}, {arg})"),
            ModuleAddRef { obj, name } => write!(f, "ModuleAddRef({obj}, {:?})", name.as_str()),
            ModuleAdd { obj, name } => write!(f, "ModuleAdd({obj}, {:?})", name.as_str()),
            ErrRoundTrip { dst } => write!(f, "{dst} = ErrRoundTrip()"),
            GcCollect { generation } => write!(f, "GcCollect({})", generation % 3),
            CallExt { func, dst, kw, .. } => {
                let args: Vec<String> = self.ext_args().iter().map(|a| a.arg_text()).collect();
                write!(f, "{dst} = CallExt #{func}({})", args.join(", "))?;
                if *kw != 0 {
                    write!(f, " kw={kw:#04x}")?;
                }
                Ok(())
            }
            NewValue { dst, code } => write!(f, "{dst} = NewValue({code})"),
            CallMethod {
                recv,
                method,
                dst,
                kw,
                ..
            } => {
                let args: Vec<String> = self.ext_args().iter().map(|a| a.arg_text()).collect();
                write!(
                    f,
                    "{dst} = CallMethod {recv}.#{method}({})",
                    args.join(", ")
                )?;
                if *kw != 0 {
                    write!(f, " kw={kw:#04x}")?;
                }
                Ok(())
            }
            Protocol {
                obj,
                which,
                arg,
                dst,
            } => write!(f, "{dst} = Protocol #{which}({obj}, {})", arg.arg_text()),
            FailNext { nth, count } => {
                let spec = FailSpec {
                    nth: *nth,
                    count: *count,
                };
                write!(f, "FailNext({spec} in the next CallExt)")
            }
        }
    }
}

/// The text actually used by `NewStr`: at most 16 chars.
pub fn clip_str(s: &str) -> &str {
    match s.char_indices().nth(16) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The fuzzer's encoding of a `NewBytes` payload: a head byte, then either a run (high bit
/// set: one fill byte repeated `head % 33` times) or up to `head % 33` bytes of input as they
/// are. With a plain `Vec<u8>` a payload past 16 bytes — where a short buffer overflows — costs
/// seventeen bytes of input, which libFuzzer's slowly growing length limit reaches late (the
/// zoo's overflow went unfound in 90 s); a run costs two. Raw payloads keep the bytes' content
/// for extensions that parse it.
fn arbitrary_payload(u: &mut arbitrary::Unstructured) -> arbitrary::Result<Vec<u8>> {
    let head = u8::arbitrary(u)?;
    let len = usize::from(head & 0x7f) % 33;
    if head & 0x80 != 0 {
        let fill = u8::arbitrary(u)?;
        return Ok(vec![fill; len]);
    }
    Ok(u.bytes(len.min(u.len()))?.to_vec())
}

/// The bytes actually used by `NewBytes`: at most 32.
pub fn clip_bytes(b: &[u8]) -> &[u8] {
    &b[..b.len().min(32)]
}

/// A sequence as it ran, with slots resolved (see `Model::resolve`), written by the harness
/// under `CAPISAN_DUMP_RESOLVED`: the input of the minimizer's output and of reproducers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Qualified names of the extension's callables, indexed like `CallExt::func % len`.
    pub ext: Vec<String>,
    /// The ops with their slots resolved, up to the one that was running.
    pub ops: Vec<Op>,
}

/// A whole fuzz input: the ops, truncated to [`MAX_OPS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpSeq(pub Vec<Op>);

impl<'a> Arbitrary<'a> for OpSeq {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut ops = Vec::new();
        while ops.len() < MAX_OPS && !u.is_empty() {
            match next_op(u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        Ok(OpSeq(ops))
    }
}

/// One op from fuzzer bytes. One op in four is an API op (a call of the code under test, a
/// method of a held object, a vocabulary value, a protocol operation): uniformly over ~45
/// variants they would be rare, and they are where an extension's bugs are.
fn next_op(u: &mut arbitrary::Unstructured) -> arbitrary::Result<Op> {
    match u8::arbitrary(u)? {
        b if b < 64 => api_op(b, u),
        _ => Op::arbitrary(u),
    }
}

/// An API op from fuzzer bytes, compactly (libFuzzer grows inputs slowly, and a call that
/// costs nine bytes is reached late): `head` (the byte that chose an API op, `< 64`) picks the
/// kind — calls (`CallExt`, `CallMethod`) twice as often as values and protocol operations —
/// and a count byte carries the argument count (bits 0-1) and whether a keyword byte follows
/// (bit 2); only that many argument bytes are read.
fn api_op(head: u8, u: &mut arbitrary::Unstructured) -> arbitrary::Result<Op> {
    let call_args = |u: &mut arbitrary::Unstructured| -> arbitrary::Result<(u8, [Slot; 3], u8)> {
        let count = u8::arbitrary(u)?;
        let n = count & 3;
        let mut args = [Slot(0); 3];
        for a in args.iter_mut().take(n as usize) {
            *a = Slot::arbitrary(u)?;
        }
        let kw = if count & 4 != 0 { u8::arbitrary(u)? } else { 0 };
        Ok((n, args, kw))
    };
    Ok(match head % 6 {
        0 | 1 => {
            let func = u8::arbitrary(u)?;
            let dst = Slot::arbitrary(u)?;
            let (nargs, args, kw) = call_args(u)?;
            Op::CallExt {
                func,
                nargs,
                args,
                dst,
                kw,
            }
        }
        2 | 3 => {
            let recv = Slot::arbitrary(u)?;
            let method = u8::arbitrary(u)?;
            let dst = Slot::arbitrary(u)?;
            let (nargs, args, kw) = call_args(u)?;
            Op::CallMethod {
                recv,
                method,
                nargs,
                args,
                kw,
                dst,
            }
        }
        4 => Op::NewValue {
            dst: u.arbitrary()?,
            code: u.arbitrary()?,
        },
        _ => Op::Protocol {
            obj: u.arbitrary()?,
            which: u.arbitrary()?,
            arg: u.arbitrary()?,
            dst: u.arbitrary()?,
        },
    })
}

/// What a corpus file holds.
#[derive(Debug)]
pub enum InputKind {
    /// A JSON op list (seed, regression case, minimized reproducer).
    Json(Vec<Op>),
    /// Raw fuzzer bytes, decoded with `arbitrary`. libFuzzer's mutations of JSON seeds start
    /// with `[` and are usually no longer JSON: they are still valid inputs, decoded as bytes,
    /// exactly as the fuzz target decodes them.
    Raw,
}

/// Classify a corpus file. A file whose name ends in `.json` must be an op list (a broken
/// hand-written case is an error, not silently some other input); any other file is
/// whatever the fuzz target makes of its bytes.
pub fn classify_input(name: &std::path::Path, bytes: &[u8]) -> Result<InputKind, String> {
    let strict = name.extension().is_some_and(|e| e == "json");
    if strict || bytes.first() == Some(&b'[') {
        match serde_json::from_slice::<Vec<Op>>(bytes) {
            Ok(ops) => return Ok(InputKind::Json(ops)),
            Err(e) if strict => return Err(format!("not a capisan op list: {e}")),
            Err(_) => {}
        }
    }
    Ok(InputKind::Raw)
}

impl OpSeq {
    /// Decode fuzzer bytes the way the fuzz target of a plain campaign does: a JSON array of ops
    /// (seeds, minimized reproducers, regression cases) or else `arbitrary` bytes from
    /// libFuzzer (see [`OpSeq::decode`]).
    pub fn from_bytes(data: &[u8]) -> OpSeq {
        OpSeq::decode(data, false)
    }

    /// Decode fuzzer bytes the way the fuzz target does when allocation-failure injection is
    /// `fail_alloc` (`--fail-alloc`, [`crate::env::HarnessEnv::fail_alloc`]). A JSON op list is
    /// taken as it is, its [`Op::FailNext`] ops honoured either way. Raw bytes: without the
    /// mode their `FailNext` ops are dropped (a plain campaign never injects failures); with it
    /// they are kept, and every `CallExt` reads one more byte that, half the time, arms a
    /// failure in it (a `FailNext` before it: mostly one of the first 8 allocations, now and
    /// then every one from there; the call then passes its arguments by position), so error
    /// paths are tried often at the cost of one byte; a call that ends the input is always
    /// armed (see the code for where N comes from).
    pub fn decode(data: &[u8], fail_alloc: bool) -> OpSeq {
        if data.first() == Some(&b'[') {
            if let Ok(ops) = serde_json::from_slice::<Vec<Op>>(data) {
                return OpSeq(ops.into_iter().take(MAX_JSON_OPS).collect());
            }
        }
        let mut u = arbitrary::Unstructured::new(data);
        let mut ops = Vec::new();
        while ops.len() < MAX_OPS && !u.is_empty() {
            let Ok(op) = next_op(&mut u) else { break };
            match op {
                Op::FailNext { .. } if !fail_alloc => {}
                Op::CallExt { dst, .. } if fail_alloc => {
                    let before = ops.len();
                    if u.is_empty() {
                        // The input ends with this call (libFuzzer's length limit keeps early
                        // inputs that short): armed, allocation 1..8 from the high bits of
                        // the destination byte (its low bits name the slot), one time in four
                        // every allocation from there on.
                        let v = u16::from(dst.0 >> 3);
                        ops.push(Op::FailNext {
                            nth: 1 + v % 8,
                            count: if v / 8 == 3 { 0 } else { 1 },
                        });
                    } else {
                        // Odd: armed. The other 7 bits: three times in four one of the first 8
                        // allocations (one time in six of those, every allocation from there
                        // on), else 9..40.
                        let b = u8::arbitrary(&mut u).unwrap_or(0);
                        if b & 1 == 1 {
                            let v = u16::from(b >> 1);
                            let (nth, count) = if v < 96 {
                                (1 + v % 8, if (v / 8) % 6 == 5 { 0 } else { 1 })
                            } else {
                                (9 + (v - 96), 1)
                            };
                            ops.push(Op::FailNext { nth, count });
                        }
                    }
                    let mut op = op;
                    if let (true, Op::CallExt { kw, .. }) = (ops.len() > before, &mut op) {
                        // An armed call passes its arguments by position: a keyword call goes
                        // through a Python helper, which a FailNext does not arm.
                        *kw = 0;
                    }
                    ops.push(op);
                }
                _ => ops.push(op),
            }
        }
        ops.truncate(MAX_OPS);
        OpSeq(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_byte_payloads_are_cheap_to_reach() {
        // A run: head byte with the high bit (length 24), then the fill byte.
        let mut u = arbitrary::Unstructured::new(&[0x80 | 24, b'x', 1, 2]);
        assert_eq!(super::arbitrary_payload(&mut u).unwrap(), vec![b'x'; 24]);
        assert_eq!(u.len(), 2, "a run costs two bytes of input");
        // Raw: up to the length, as many bytes as there are.
        let mut u = arbitrary::Unstructured::new(&[3, 7, 8, 9, 10]);
        assert_eq!(super::arbitrary_payload(&mut u).unwrap(), vec![7, 8, 9]);
        let mut u = arbitrary::Unstructured::new(&[30, 7]);
        assert_eq!(super::arbitrary_payload(&mut u).unwrap(), vec![7]);
    }

    #[test]
    fn mutated_json_is_a_raw_input_unless_named_json() {
        use std::path::Path;
        let mutated = b"[{\"NewList\":{\"dst\":\x00}}]";
        assert!(matches!(
            classify_input(Path::new("0123abcd"), mutated),
            Ok(InputKind::Raw)
        ));
        let err = classify_input(Path::new("case.json"), mutated).unwrap_err();
        assert!(err.contains("not a capisan op list"), "{err}");
        let good = br#"[{"NewList":{"dst":0}}]"#;
        assert!(matches!(
            classify_input(Path::new("0123abcd"), good),
            Ok(InputKind::Json(ops)) if ops.len() == 1
        ));
        assert!(matches!(
            classify_input(Path::new("x"), b"\x01\x02"),
            Ok(InputKind::Raw)
        ));
    }

    #[test]
    fn committed_json_seeds_decode_as_op_lists() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpora/capi_sequences");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            if bytes.first() == Some(&b'[') {
                let ops: Vec<Op> = serde_json::from_slice(&bytes).expect("seed parses");
                assert_eq!(OpSeq::from_bytes(&bytes).0, ops);
                n += 1;
            }
        }
        assert!(n >= 3, "expected JSON seeds in {dir}");
    }

    #[test]
    fn arbitrary_bytes_always_decode() {
        for len in 0..200u32 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            assert!(OpSeq::from_bytes(&data).0.len() <= MAX_OPS);
        }
    }

    #[test]
    fn failures_come_from_raw_bytes_only_in_fail_alloc_mode() {
        let fails = |seq: &OpSeq| {
            seq.0
                .iter()
                .filter(|o| matches!(o, Op::FailNext { .. }))
                .count()
        };
        let (mut plain, mut armed) = (0, 0);
        for seed in 0..400u32 {
            let data: Vec<u8> = (0..300u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 97) >> 13) as u8)
                .collect();
            plain += fails(&OpSeq::decode(&data, false));
            let seq = OpSeq::decode(&data, true);
            assert!(seq.0.len() <= MAX_OPS);
            armed += fails(&seq);
        }
        assert_eq!(plain, 0, "a plain campaign never injects failures");
        assert!(armed > 100, "the mode arms failures often: {armed}");
        // Every armed call is one a FailNext arms: positional.
        for seed in 0..50u32 {
            let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + seed * 7) as u8).collect();
            let ops = OpSeq::decode(&data, true).0;
            for w in ops.windows(2) {
                if let (Op::FailNext { .. }, Op::CallExt { kw, .. }) = (&w[0], &w[1]) {
                    assert_eq!(*kw, 0);
                }
            }
        }
        // A JSON list keeps them whatever the mode.
        let json = br#"[{"FailNext":{"nth":2,"count":1}},{"NewList":{"dst":0}}]"#;
        assert_eq!(fails(&OpSeq::decode(json, false)), 1);
    }

    #[test]
    fn fail_spec_ranges() {
        let r = |nth, count| FailSpec { nth, count }.range();
        assert_eq!(r(2, 1), (2, 2));
        assert_eq!(r(0, 1), (1, 1));
        assert_eq!(r(3, 4), (3, 6));
        assert_eq!(r(5, 0), (5, 0));
        assert_eq!(
            FailSpec { nth: 2, count: 1 }.to_string(),
            "allocation 2 fails"
        );
        assert_eq!(
            FailSpec { nth: 2, count: 0 }.to_string(),
            "allocations 2.. fail"
        );
    }
}
