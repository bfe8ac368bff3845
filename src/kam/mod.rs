//! Room 2: a thin safe layer over the Kamailio core. Every `unsafe` block here carries a
//! `// SAFETY:` line; the dispatcher logic (room 3, `crate::ds`) never calls FFI itself.
pub mod db;
pub mod event;
pub mod log;
pub mod mem;
pub mod msg;
pub mod param;
pub mod rpc;
pub mod tm;
pub mod xavp;

extern "C" {
    fn random() -> std::os::raw::c_long;
}

/// The core's `kam_rand()` in 5.6.3 (libc `random()`, seeded by the core in every process).
pub fn kam_rand() -> u32 {
    // SAFETY: libc random() has no preconditions; processes are single-threaded.
    unsafe { random() as u32 }
}
