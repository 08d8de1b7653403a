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
    },
}

impl Op {
    /// The argument slots a `CallExt` passes: the first `nargs % 4` of `args` (none for others).
    pub fn ext_args(&self) -> &[Slot] {
        match self {
            Op::CallExt { nargs, args, .. } => &args[..*nargs as usize % 4],
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
                let args: Vec<String> = self.ext_args().iter().map(Slot::to_string).collect();
                format!("{dst} = CallExt {name}({})", args.join(", "))
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
            CallExt
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
            CallExt { func, dst, .. } => {
                let args: Vec<String> = self.ext_args().iter().map(Slot::to_string).collect();
                write!(f, "{dst} = CallExt #{func}({})", args.join(", "))
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
            match Op::arbitrary(u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        Ok(OpSeq(ops))
    }
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
    /// Decode fuzzer bytes the way the fuzz target does: a JSON array of ops (seeds,
    /// minimized reproducers, regression cases) or else `arbitrary` bytes from libFuzzer.
    pub fn from_bytes(data: &[u8]) -> OpSeq {
        if data.first() == Some(&b'[') {
            if let Ok(ops) = serde_json::from_slice::<Vec<Op>>(data) {
                return OpSeq(ops.into_iter().take(MAX_JSON_OPS).collect());
            }
        }
        let mut u = arbitrary::Unstructured::new(data);
        OpSeq::arbitrary(&mut u).unwrap_or(OpSeq(Vec::new()))
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
}
