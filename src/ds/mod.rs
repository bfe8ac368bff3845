//! The dispatcher core in plain Rust: no FFI, unit-tested with `cargo test`.
pub mod snapshot; // owned by the lead developer
pub mod rcu; // owned by the lead developer
pub mod select; // owned by the lead developer
pub mod attrs;
pub mod dest;
pub mod hash;
pub mod listfile;
pub mod order;
pub mod uri;
pub mod weights; // owned by the lead developer
