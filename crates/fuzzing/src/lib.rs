//! Fuzzing for the parsers that read untrusted bytes (disk and network).
//!
//! [`targets`] holds each target's body once: cargo-fuzz (`fuzz/`, coverage
//! guided, run on demand) and [`engine`] (a deterministic mutation engine on
//! stable Rust, run by `cargo xtask test`) call the same functions, so what
//! the suite checks is what a long fuzzing campaign checks.
pub mod engine;
pub mod targets;
