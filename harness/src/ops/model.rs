//! The ownership model: what the harness holds in each slot, and which calls are legal.
//!
//! It knows no pointers, only reference *kinds*, so it can be tested exhaustively without an
//! interpreter. The executor asks [`Model::plan`] before every op; an op the model rejects is
//! skipped, so a generated sequence never commits an ownership error itself and any violation
//! seen at run time is CPython's (or the extension's).

use super::{Op, NSLOTS};

/// What the harness holds in one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Nothing.
    Empty,
    /// `refs` strong references the harness must release.
    Owned { refs: u32 },
    /// A borrowed reference, valid while the model's `epoch` still equals this one.
    Borrowed { epoch: u64 },
}

/// How an op uses one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Read as an argument: must be live (owned, or borrowed and still valid).
    Read,
    /// One owned reference is given away (stolen) by the call.
    Steal,
    /// One owned reference is released (`Py_DECREF`).
    DecrefOne,
    /// All owned references are released.
    ReleaseAll,
    /// Overwritten with the call's result.
    Write,
}

/// The slot table and the borrow epoch.
#[derive(Clone, Debug)]
pub struct Model {
    /// One entry per slot.
    pub slots: [Hold; NSLOTS],
    /// Bumped whenever anything may have released a reference, mutated a container or run
    /// Python code: every borrowed reference taken before is then dead.
    pub epoch: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            slots: [Hold::Empty; NSLOTS],
            epoch: 0,
        }
    }
}

/// What a legal op will do to the slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Slots and how they are used, in argument order.
    pub uses: Vec<(usize, Use)>,
    /// Kind of reference the result gives the destination slot, if the op writes one.
    pub result: Option<ResultKind>,
    /// Whether the op may release references, mutate containers or run Python code.
    pub invalidates: bool,
}

/// Reference kind of an op's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultKind {
    New,
    Borrowed,
}

impl Model {
    /// Whether the slot holds something the harness may pass to C code now.
    pub fn is_live(&self, slot: usize) -> bool {
        match self.slots[slot] {
            Hold::Owned { .. } => true,
            Hold::Borrowed { epoch } => epoch == self.epoch,
            Hold::Empty => false,
        }
    }

    /// Whether the slot holds at least one owned reference.
    pub fn is_owned(&self, slot: usize) -> bool {
        matches!(self.slots[slot], Hold::Owned { .. })
    }

    /// Point each argument slot of `op` at a slot that can serve it: a read takes the next live
    /// slot, a steal or decref the next owned one (scanning upward, wrapping). Fuzzed slot
    /// numbers then almost always name something, which makes sequences far denser; the
    /// resolved op is what runs and what the op log shows. Destination slots are kept.
    pub fn resolve(&self, op: &Op) -> Op {
        use Op::*;
        let next = |s: super::Slot, ok: &dyn Fn(usize) -> bool| -> super::Slot {
            let start = s.index();
            (0..NSLOTS)
                .map(|k| (start + k) % NSLOTS)
                .find(|&i| ok(i))
                .map_or(s, |i| super::Slot(i as u8))
        };
        let rd = |s: super::Slot| next(s, &|i| self.is_live(i));
        let own = |s: super::Slot| next(s, &|i| self.is_owned(i));
        // A borrowed result must not land in a slot that owns something: releasing that may
        // free the very container the result was borrowed from.
        let not_owned = |s: super::Slot| next(s, &|i| !self.is_owned(i));
        let mut op = op.clone();
        match &mut op {
            NewCallable { target, .. } => *target = rd(*target),
            Dup { src, .. } => *src = rd(*src),
            Incref { slot } => *slot = rd(*slot),
            Decref { slot } | Release { slot } => *slot = own(*slot),
            ListAppend { list, item }
            | ListInsert { list, item, .. }
            | SetAdd { set: list, item } => {
                *list = rd(*list);
                *item = rd(*item);
            }
            ListSetItem { list, item, .. }
            | TupleSetItem {
                tuple: list, item, ..
            } => {
                *list = rd(*list);
                *item = own(*item);
            }
            ListGetItem { list, dst, .. }
            | TupleGetItem {
                tuple: list, dst, ..
            } => {
                *list = rd(*list);
                *dst = not_owned(*dst);
            }
            ListDelSlice { list, .. } | ListSort { list } | DictClear { dict: list } => {
                *list = rd(*list)
            }
            DictSetItem { dict, key, value } => {
                *dict = rd(*dict);
                *key = rd(*key);
                *value = rd(*value);
            }
            DictGetItem { dict, key, dst } => {
                *dict = rd(*dict);
                *key = rd(*key);
                *dst = not_owned(*dst);
            }
            DictGetItemRef { dict, key, .. } | DictDelItem { dict, key } => {
                *dict = rd(*dict);
                *key = rd(*key);
            }
            SetAttr { obj, value, .. } => {
                *obj = rd(*obj);
                *value = rd(*value);
            }
            GetAttr { obj, .. } | Repr { obj, .. } | Hash { obj } | ModuleAddRef { obj, .. } => {
                *obj = rd(*obj)
            }
            ModuleAdd { obj, .. } => *obj = own(*obj),
            RichCompare { a, b, .. } => {
                *a = rd(*a);
                *b = rd(*b);
            }
            Call { callable, arg, .. } => {
                *callable = rd(*callable);
                *arg = rd(*arg);
            }
            CallExt { nargs, args, .. } => {
                for a in args.iter_mut().take(*nargs as usize % 4) {
                    if a.value_code().is_none() {
                        *a = rd(*a);
                    }
                }
            }
            CallMethod {
                recv, nargs, args, ..
            } => {
                *recv = rd(*recv);
                for a in args.iter_mut().take(*nargs as usize % 4) {
                    if a.value_code().is_none() {
                        *a = rd(*a);
                    }
                }
            }
            Protocol { obj, arg, .. } => {
                *obj = rd(*obj);
                if arg.value_code().is_none() {
                    *arg = rd(*arg);
                }
            }
            _ => {}
        }
        op
    }

    /// Decide whether `op` is legal now; `None` means skip it. `ext_funcs` is how many
    /// callables the extension under test has (0 when none is loaded).
    pub fn plan(&self, op: &Op, ext_funcs: usize) -> Option<Plan> {
        use Op::*;
        use Use::*;
        let r = |s: &super::Slot| (s.index(), Read);
        let (uses, result, invalidates): (Vec<(usize, Use)>, Option<ResultKind>, bool) = match op {
            NewInt { dst, .. }
            | NewFloat { dst, .. }
            | NewStr { dst, .. }
            | NewBytes { dst, .. }
            | NewTuple { dst, .. }
            | NewList { dst }
            | NewListOf { dst, .. }
            | NewDict { dst }
            | NewSet { dst }
            | NewInstance { dst, .. }
            | NewValue { dst, .. }
            | ErrRoundTrip { dst } => (vec![(dst.index(), Write)], Some(ResultKind::New), false),
            NewCallable { dst, target, .. } => (
                vec![r(target), (dst.index(), Write)],
                Some(ResultKind::New),
                false,
            ),
            Dup { src, dst } if src.index() != dst.index() => (
                vec![r(src), (dst.index(), Write)],
                Some(ResultKind::New),
                false,
            ),
            Dup { .. } => return None,
            Incref { slot } => (vec![r(slot)], None, false),
            Decref { slot } => (vec![(slot.index(), DecrefOne)], None, true),
            Release { slot } => (vec![(slot.index(), ReleaseAll)], None, true),
            ListAppend { list, item }
            | ListInsert { list, item, .. }
            | SetAdd { set: list, item } => (vec![r(list), r(item)], None, true),
            ListSetItem { list, item, .. }
            | TupleSetItem {
                tuple: list, item, ..
            } => {
                if list.index() == item.index() {
                    return None;
                }
                (vec![r(list), (item.index(), Steal)], None, true)
            }
            ListGetItem { list, dst, .. }
            | TupleGetItem {
                tuple: list, dst, ..
            } => (
                vec![r(list), (dst.index(), Write)],
                Some(ResultKind::Borrowed),
                false,
            ),
            ListDelSlice { list, .. } | ListSort { list } | DictClear { dict: list } => {
                (vec![r(list)], None, true)
            }
            DictSetItem { dict, key, value } => (vec![r(dict), r(key), r(value)], None, true),
            DictGetItem { dict, key, dst } => (
                vec![r(dict), r(key), (dst.index(), Write)],
                Some(ResultKind::Borrowed),
                true,
            ),
            DictGetItemRef { dict, key, dst } => (
                vec![r(dict), r(key), (dst.index(), Write)],
                Some(ResultKind::New),
                true,
            ),
            DictDelItem { dict, key } => (vec![r(dict), r(key)], None, true),
            SetAttr { obj, value, .. } => (vec![r(obj), r(value)], None, true),
            GetAttr { obj, dst, .. } | Repr { obj, dst } => (
                vec![r(obj), (dst.index(), Write)],
                Some(ResultKind::New),
                true,
            ),
            RichCompare { a, b, dst, .. } => (
                vec![r(a), r(b), (dst.index(), Write)],
                Some(ResultKind::New),
                true,
            ),
            Call { callable, arg, dst } => (
                vec![r(callable), r(arg), (dst.index(), Write)],
                Some(ResultKind::New),
                true,
            ),
            Hash { obj } => (vec![r(obj)], None, true),
            ModuleAddRef { obj, .. } => (vec![r(obj)], None, true),
            ModuleAdd { obj, .. } => (vec![(obj.index(), Steal)], None, true),
            GcCollect { .. } => (vec![], None, true),
            // Arms the allocator wrappers for the next CallExt; no slot, no Python code.
            FailNext { .. } => (vec![], None, false),
            CallExt {
                nargs, args, dst, ..
            } => {
                if ext_funcs == 0 {
                    return None;
                }
                let mut uses: Vec<(usize, Use)> = args
                    .iter()
                    .take(*nargs as usize % 4)
                    .filter(|a| a.value_code().is_none())
                    .map(r)
                    .collect();
                uses.push((dst.index(), Write));
                (uses, Some(ResultKind::New), true)
            }
            CallMethod {
                recv,
                nargs,
                args,
                dst,
                ..
            } => {
                let mut uses: Vec<(usize, Use)> = vec![r(recv)];
                uses.extend(
                    args.iter()
                        .take(*nargs as usize % 4)
                        .filter(|a| a.value_code().is_none())
                        .map(r),
                );
                uses.push((dst.index(), Write));
                (uses, Some(ResultKind::New), true)
            }
            Protocol { obj, arg, dst, .. } => (
                std::iter::once(r(obj))
                    .chain(arg.value_code().is_none().then(|| r(arg)))
                    .chain([(dst.index(), Write)])
                    .collect(),
                Some(ResultKind::New),
                true,
            ),
        };
        if result == Some(ResultKind::Borrowed)
            && uses.iter().any(|&(s, u)| u == Write && self.is_owned(s))
        {
            return None;
        }
        for &(slot, u) in &uses {
            let ok = match u {
                Read => self.is_live(slot),
                Steal | DecrefOne => self.is_owned(slot),
                ReleaseAll => self.slots[slot] != Hold::Empty,
                Write => true,
            };
            if !ok {
                return None;
            }
        }
        Some(Plan {
            uses,
            result,
            invalidates,
        })
    }

    /// Record the effect of a planned op. `stolen_kept` says, for a stealing op, whether the
    /// call succeeded (the harness may then keep a borrowed reference to the stolen object
    /// while its new container is unchanged); `result_null` whether the call returned NULL.
    pub fn apply(&mut self, op: &Op, plan: &Plan, result_null: bool) {
        // Releases happen first: a write releases what the slot owned before.
        if plan.invalidates
            || plan
                .uses
                .iter()
                .any(|&(s, u)| u == Use::Write && self.is_owned(s))
        {
            self.epoch += 1;
        }
        for &(slot, u) in &plan.uses {
            match u {
                Use::Read => {
                    if let Op::Incref { .. } = op {
                        self.slots[slot] = match self.slots[slot] {
                            Hold::Owned { refs } => Hold::Owned { refs: refs + 1 },
                            _ => Hold::Owned { refs: 1 },
                        };
                    }
                }
                Use::Steal => {
                    // A reference given away is not kept as a borrowed one: the same call
                    // releases the container's old item, which may free the container itself.
                    let _ = result_null;
                    self.slots[slot] = match self.slots[slot] {
                        Hold::Owned { refs } if refs > 1 => Hold::Owned { refs: refs - 1 },
                        _ => Hold::Empty,
                    };
                }
                Use::DecrefOne => {
                    self.slots[slot] = match self.slots[slot] {
                        Hold::Owned { refs } if refs > 1 => Hold::Owned { refs: refs - 1 },
                        _ => Hold::Empty,
                    };
                }
                Use::ReleaseAll => self.slots[slot] = Hold::Empty,
                Use::Write => {
                    self.slots[slot] = match (plan.result, result_null) {
                        (_, true) | (None, _) => Hold::Empty,
                        (Some(ResultKind::New), false) => Hold::Owned { refs: 1 },
                        (Some(ResultKind::Borrowed), false) => Hold::Borrowed { epoch: self.epoch },
                    };
                }
            }
        }
    }

    /// Owned references left, per slot: what the harness must release at the end.
    pub fn owned(&self) -> Vec<(usize, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h {
                Hold::Owned { refs } => Some((i, *refs)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{OpSeq, Slot};
    use proptest::prelude::*;

    /// A reference-semantics shadow: per slot, which abstract object it names and how many
    /// strong references the harness holds on each abstract object.
    fn run_shadow(ops: &[Op]) -> Result<(), String> {
        let mut m = Model::default();
        let mut held: [i64; NSLOTS] = [0; NSLOTS];
        for (i, op) in ops.iter().enumerate() {
            let op = &m.resolve(op);
            let Some(plan) = m.plan(op, 2) else { continue };
            for &(slot, u) in &plan.uses {
                match u {
                    Use::Read if !m.is_live(slot) => {
                        return Err(format!("#{i} {op}: reads dead {slot}"))
                    }
                    Use::Steal | Use::DecrefOne if held[slot] < 1 => {
                        return Err(format!(
                            "#{i} {op}: gives away a reference it does not own in s{slot}"
                        ))
                    }
                    _ => {}
                }
            }
            if plan.result == Some(ResultKind::Borrowed)
                && plan
                    .uses
                    .iter()
                    .any(|&(s, u)| u == Use::Write && m.is_owned(s))
            {
                return Err(format!(
                    "#{i} {op}: a borrowed result overwrites an owned slot"
                ));
            }
            // Simulate: the call fails (NULL) for odd op indices, to cover error paths.
            let null = i % 2 == 1;
            m.apply(op, &plan, null);
            for &(slot, u) in &plan.uses {
                match u {
                    Use::Steal | Use::DecrefOne => held[slot] -= 1,
                    Use::ReleaseAll => held[slot] = 0,
                    Use::Write => held[slot] = matches!(m.slots[slot], Hold::Owned { .. }) as i64,
                    Use::Read => {
                        if matches!(op, Op::Incref { .. }) {
                            held[slot] += 1
                        }
                    }
                }
            }
            for (s, (hold, shadow)) in m.slots.iter().zip(held.iter()).enumerate() {
                let model_refs = match hold {
                    Hold::Owned { refs } => *refs as i64,
                    _ => 0,
                };
                if model_refs != *shadow {
                    return Err(format!(
                        "#{i} {op}: model says s{s} owns {model_refs}, shadow {shadow}"
                    ));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn model_never_plans_an_illegal_call(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let seq = OpSeq::from_bytes(&bytes);
            prop_assert!(run_shadow(&seq.0).is_ok(), "{:?}", run_shadow(&seq.0));
        }

        /// The same over what a `--fail-alloc` campaign decodes: armed calls (`FailNext` before
        /// a `CallExt`) with failing (NULL) results on every other op.
        #[test]
        fn model_never_plans_an_illegal_call_with_failures(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let seq = OpSeq::decode(&bytes, true);
            prop_assert!(run_shadow(&seq.0).is_ok(), "{:?}", run_shadow(&seq.0));
        }
    }

    /// The proptests above only mean something for the Python-API ops if random bytes decode
    /// to them: count each kind over many inputs (a fixed pseudo-random stream, so the test is
    /// deterministic) and check the shadow on every sequence that holds one.
    #[test]
    fn api_ops_are_decoded_and_planned_legally() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut seen = [0usize; 5];
        for _ in 0..3000 {
            let bytes: Vec<u8> = (0..256)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let seq = OpSeq::decode(&bytes, true);
            let mut any = false;
            for op in &seq.0 {
                let k = match op {
                    Op::CallMethod { .. } => 0,
                    Op::Protocol { .. } => 1,
                    Op::NewValue { .. } => 2,
                    Op::FailNext { .. } => 3,
                    Op::CallExt { kw, .. } if *kw != 0 => 4,
                    _ => continue,
                };
                seen[k] += 1;
                any = true;
            }
            if any {
                assert!(run_shadow(&seq.0).is_ok(), "{:?}", run_shadow(&seq.0));
            }
        }
        assert!(
            seen.iter().all(|&n| n >= 20),
            "CallMethod, Protocol, NewValue, FailNext, keyword CallExt: {seen:?}"
        );
    }

    #[test]
    fn borrowed_dies_when_anything_may_mutate() {
        let mut m = Model::default();
        let list = Slot(0);
        let b = Slot(1);
        for op in [
            Op::NewList { dst: list },
            Op::ListGetItem {
                list,
                index: 0,
                dst: b,
            },
        ] {
            let p = m.plan(&op, 0).unwrap();
            m.apply(&op, &p, false);
        }
        assert!(m.is_live(1));
        let clear = Op::ListDelSlice {
            list,
            lo: 0,
            hi: 10,
        };
        let p = m.plan(&clear, 0).unwrap();
        m.apply(&clear, &p, false);
        assert!(
            !m.is_live(1),
            "a borrowed item must be dead after its list is mutated"
        );
        assert!(m.plan(&Op::Hash { obj: b }, 0).is_none());
        assert!(
            m.plan(&Op::Decref { slot: b }, 0).is_none(),
            "decref of a borrowed slot is illegal"
        );
    }

    #[test]
    fn stealing_needs_ownership() {
        let mut m = Model::default();
        let op = Op::NewList { dst: Slot(0) };
        let p = m.plan(&op, 0).unwrap();
        m.apply(&op, &p, false);
        let get = Op::ListGetItem {
            list: Slot(0),
            index: 0,
            dst: Slot(1),
        };
        let p = m.plan(&get, 0).unwrap();
        m.apply(&get, &p, false);
        assert!(m
            .plan(
                &Op::ListSetItem {
                    list: Slot(0),
                    index: 0,
                    item: Slot(1)
                },
                0
            )
            .is_none());
    }
}
