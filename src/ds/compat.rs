//! Which Kamailio release's C dispatcher this build emulates.
//!
//! A module is built for exactly one Kamailio release; `module/` sets this once at module
//! registration from the version the build was made for. Behaviour that changed between
//! releases (list output fields, list-file syntax, algorithm ids, ...) asks here, so the pure
//! core stays free of build flags and every variant is unit-testable in one `cargo test`.
use std::sync::atomic::{AtomicU32, Ordering};

/// The baseline: Debian bookworm's Kamailio 5.6.3.
pub const BASELINE: u32 = 5_006_003;

static VERSION: AtomicU32 = AtomicU32::new(BASELINE);

/// `major * 1_000_000 + minor * 1000 + patch`, like the core's `VERSIONVAL`.
pub const fn val(major: u32, minor: u32, patch: u32) -> u32 {
    major * 1_000_000 + minor * 1000 + patch
}

/// Sets the emulated release (once, at module registration; tests may change it).
pub fn set(versionval: u32) {
    VERSION.store(versionval, Ordering::Relaxed);
}

/// The emulated release as `VERSIONVAL`.
pub fn get() -> u32 {
    VERSION.load(Ordering::Relaxed)
}

/// True when the emulated release is `major.minor.patch` or newer.
pub fn ge(major: u32, minor: u32, patch: u32) -> bool {
    get() >= val(major, minor, patch)
}

/// Runs `f` with the emulated release set to `v` (unit tests; serialised by a lock so tests
/// running in parallel threads do not see each other's value).
#[cfg(test)]
pub fn with<R>(v: u32, f: impl FnOnce() -> R) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let old = get();
    set(v);
    let r = f();
    set(old);
    r
}
