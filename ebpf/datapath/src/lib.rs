//! sekisho's kernel programs live in `main.rs` (built for `bpfel-unknown-none` by the
//! daemon's build script); this library target only lets cargo track them.
#![no_std]
