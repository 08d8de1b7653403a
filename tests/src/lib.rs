//! Integration tests live in `tests/*.rs` beside this crate; this library is empty.
