//! Room 2: a thin safe layer over the Kamailio core. Every `unsafe` block here carries a
//! `// SAFETY:` line; the dispatcher logic (room 3, `crate::ds`) never calls FFI itself.
// bindgen's structs hold unions and anonymous members: they are built from `Default` and
// filled field by field, which reads like the C it mirrors.
#![allow(clippy::field_reassign_with_default)]
pub mod db;
pub mod dmq;
pub mod event;
pub mod log;
pub mod mem;
pub mod msg;
pub mod param;
pub mod rpc;
pub mod tm;
pub mod xavp;

/// The Kamailio release this module is built for, as the core's `VERSIONVAL`
/// (`major*1_000_000 + minor*1000 + patch`); 5.6.3 when built without Kamailio.
pub const VERSIONVAL: u32 = match option_env!("KAMAILIO_VERSIONVAL") {
    Some(s) => parse_u32(s),
    None => 5_006_003,
};

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0u32;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            v = v * 10 + (b[i] - b'0') as u32;
        }
        i += 1;
    }
    v
}

extern "C" {
    fn random() -> std::os::raw::c_long;
}

/// The core's `kam_rand()` in 5.6.3 (libc `random()`, seeded by the core in every process).
pub fn kam_rand() -> u32 {
    // SAFETY: libc random() has no preconditions; processes are single-threaded.
    unsafe { random() as u32 }
}
