//! Rust-native drop-in replacement for Kamailio's `dispatcher` module.
//!
//! Three rooms, kept apart:
//! 1. [`sys`]: raw bindings (bindgen) and the C shim declarations;
//! 2. [`kam`]: a thin safe layer over the Kamailio core (shm, locks, logging, RPC, xavp, ...);
//! 3. [`ds`]: the dispatcher itself in plain Rust, with no FFI (unit-tested by `cargo test`).
//!
//! [`module`] glues them into the `exports` table Kamailio loads.
pub mod ds;

#[cfg(not(any(test, no_kamailio)))]
pub mod sys;
#[cfg(not(any(test, no_kamailio)))]
pub mod kam;
#[cfg(not(any(test, no_kamailio)))]
pub mod module;
