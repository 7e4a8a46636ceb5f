//! The fuzz targets' logic, one module per target. Each `run(data)` feeds the bytes to a
//! parser of untrusted input and asserts its invariants: a violated invariant panics, and
//! libFuzzer reports the panic as a crash. `fuzz_targets/*.rs` are one-line wrappers; the
//! main crate's `tests/fuzz_regressions.rs` compiles `targets/` too and replays every
//! committed input through the same `run`, on stable Rust, in plain `cargo test`. `seeds`
//! builds the seed corpora from real data.

pub mod seeds;
pub mod targets;
