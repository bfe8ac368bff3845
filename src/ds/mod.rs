//! The dispatcher core in plain Rust: no FFI, unit-tested with `cargo test`.
pub mod snapshot; // owned by the lead developer
