//! Structural delta debugging over op sequences (not bytes): drop chunks of ops (ddmin), then
//! simplify the ops that are left (shorter strings and bytes, smaller ints and tuples, fewer
//! arguments), keeping whatever the caller's predicate checks — in practice, that a run of the
//! candidate still produces a finding with the original bucket signature.

use crate::ops::{clip_bytes, clip_str, Op};

/// Progress callback: (candidates tried so far, current length).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Shrink `ops` while `still_fails` holds. `still_fails(ops)` must be true on entry; the result
/// is 1-minimal with respect to removing single ops, and each op is as simple as the predicate
/// allows. Returns the minimized sequence and how many candidates were tried.
pub fn minimize(
    ops: &[Op],
    still_fails: &mut dyn FnMut(&[Op]) -> bool,
    progress: Progress,
) -> (Vec<Op>, usize) {
    let mut tries = 0usize;
    let mut test = |c: &[Op], tries: &mut usize, progress: &mut dyn FnMut(usize, usize)| {
        *tries += 1;
        progress(*tries, c.len());
        still_fails(c)
    };
    let mut cur: Vec<Op> = ops.to_vec();
    // ddmin: remove chunks of decreasing size.
    let mut n = 2usize;
    while cur.len() >= 2 {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < cur.len() {
            let end = (start + chunk).min(cur.len());
            let candidate: Vec<Op> = cur[..start]
                .iter()
                .chain(cur[end..].iter())
                .cloned()
                .collect();
            if !candidate.is_empty() && test(&candidate, &mut tries, progress) {
                cur = candidate;
                reduced = true;
                n = (n - 1).max(2);
            } else {
                start = end;
            }
        }
        if !reduced {
            if chunk == 1 {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    // Simplify each remaining op, keeping a simplification only if the failure stays.
    for i in 0..cur.len() {
        for simpler in simplifications(&cur[i]) {
            let mut candidate = cur.clone();
            candidate[i] = simpler;
            if test(&candidate, &mut tries, progress) {
                cur = candidate;
            }
        }
    }
    (cur, tries)
}

/// Simpler versions of one op, simplest first.
pub fn simplifications(op: &Op) -> Vec<Op> {
    use Op::*;
    let mut out = Vec::new();
    match op {
        NewInt { dst, value } if *value != 0 => {
            for v in [0, 1, 8, value / 2] {
                if v.unsigned_abs() < value.unsigned_abs() {
                    out.push(NewInt {
                        dst: *dst,
                        value: v,
                    });
                }
            }
        }
        NewFloat { dst, value } if *value != 0.0 => out.push(NewFloat {
            dst: *dst,
            value: 1.0,
        }),
        NewStr { dst, text } if !text.is_empty() => {
            let t = clip_str(text);
            out.push(NewStr {
                dst: *dst,
                text: String::new(),
            });
            out.push(NewStr {
                dst: *dst,
                text: "x".into(),
            });
            if t.chars().count() > 2 {
                out.push(NewStr {
                    dst: *dst,
                    text: t.chars().take(t.chars().count() / 2).collect(),
                });
            }
        }
        NewBytes { dst, data } if !data.is_empty() => {
            let d = clip_bytes(data);
            out.push(NewBytes {
                dst: *dst,
                data: Vec::new(),
            });
            for len in [17usize, d.len() / 2] {
                if len < d.len() {
                    out.push(NewBytes {
                        dst: *dst,
                        data: vec![b'a'; len],
                    });
                }
            }
        }
        NewTuple { dst, len } if len % 5 > 1 => out.push(NewTuple { dst: *dst, len: 1 }),
        CallExt {
            func,
            nargs,
            args,
            dst,
            kw,
        } if nargs % 4 > 0 || *kw != 0 => {
            for k in 0..(nargs % 4) {
                out.push(CallExt {
                    func: *func,
                    nargs: k,
                    args: *args,
                    dst: *dst,
                    kw: *kw,
                });
            }
            if *kw != 0 {
                out.push(CallExt {
                    func: *func,
                    nargs: *nargs,
                    args: *args,
                    dst: *dst,
                    kw: 0,
                });
            }
        }
        _ => {}
    }
    out.retain(|o| o != op);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{OpSeq, Slot};
    use proptest::prelude::*;

    fn fails_if_contains(ops: &[Op], needles: &[&str]) -> bool {
        needles.iter().all(|n| ops.iter().any(|o| o.name() == *n))
    }

    #[test]
    fn keeps_exactly_the_needed_ops() {
        let mut ops: Vec<Op> = (0..200)
            .map(|i| Op::NewInt {
                dst: Slot(i as u8),
                value: i,
            })
            .collect();
        ops[37] = Op::NewList { dst: Slot(0) };
        ops[150] = Op::GcCollect { generation: 2 };
        let mut pred = |c: &[Op]| fails_if_contains(c, &["NewList", "GcCollect"]);
        let (min, tries) = minimize(&ops, &mut pred, &mut |_, _| {});
        assert_eq!(
            min,
            vec![
                Op::NewList { dst: Slot(0) },
                Op::GcCollect { generation: 2 }
            ]
        );
        assert!(
            tries < 200,
            "ddmin should need far fewer than one try per op, took {tries}"
        );
    }

    #[test]
    fn simplifies_arguments_the_predicate_does_not_need() {
        let ops = vec![
            Op::NewBytes {
                dst: Slot(1),
                data: vec![7; 32],
            },
            Op::NewInt {
                dst: Slot(2),
                value: 99999,
            },
        ];
        // Fails while the bytes are longer than 16 (like an overflow of a 16-byte buffer).
        let mut pred = |c: &[Op]| {
            c.iter()
                .any(|o| matches!(o, Op::NewBytes { data, .. } if data.len() > 16))
        };
        let (min, _) = minimize(&ops, &mut pred, &mut |_, _| {});
        assert_eq!(
            min,
            vec![Op::NewBytes {
                dst: Slot(1),
                data: vec![b'a'; 17]
            }]
        );
    }

    proptest! {
        #[test]
        fn result_still_fails_and_never_grows(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let ops = OpSeq::from_bytes(&bytes).0;
            prop_assume!(fails_if_contains(&ops, &["Release"]));
            let mut pred = |c: &[Op]| fails_if_contains(c, &["Release"]);
            let (min, _) = minimize(&ops, &mut pred, &mut |_, _| {});
            prop_assert!(fails_if_contains(&min, &["Release"]));
            prop_assert!(min.len() <= ops.len());
            prop_assert_eq!(min.len(), 1);
        }
    }
}
