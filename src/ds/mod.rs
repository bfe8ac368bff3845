//! The dispatcher core in plain Rust: no FFI, unit-tested with `cargo test`.
pub mod snapshot; // owned by the lead developer
pub mod rcu; // owned by the lead developer
pub mod select; // owned by the lead developer
pub mod algs;
pub mod attrs;
pub mod cluster;
pub mod compat;
pub mod counters;
pub mod listdiff;
pub mod dbrow;
pub mod dest;
pub mod hash;
pub mod listfile;
pub mod logfmt;
pub mod order;
pub mod pacing;
pub mod rpcargs;
pub mod reuse;
pub mod uri;
pub mod weights; // owned by the lead developer
pub mod health; // owned by the lead developer

/// Trims SIP whitespace (space, tab, CR, LF) on both ends, like the core's `trim()`.
pub fn trim_ws(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let s = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !ws(c)).map(|p| p + 1).unwrap_or(s);
    b.get(s..e.max(s)).unwrap_or(&[])
}
pub mod latency; // owned by the lead developer
#[cfg(test)]
mod proptests;
