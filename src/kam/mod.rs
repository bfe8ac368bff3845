//! Room 2: a thin safe layer over the Kamailio core. Every `unsafe` block here carries a
//! `// SAFETY:` line; the dispatcher logic (room 3, `crate::ds`) never calls FFI itself.
pub mod log;
pub mod mem;
pub mod msg;
pub mod param;
pub mod rpc;
pub mod xavp;
