//! Shared memory and locks.
use crate::sys;

/// Allocates `n` bytes of Kamailio shared memory (16-byte aligned), null on failure.
pub fn shm_alloc(n: usize) -> *mut u8 {
    // SAFETY: plain allocation call; the shm pool is initialised before modules load.
    unsafe { sys::rds_shm_malloc(n as _) as *mut u8 }
}

/// Like [`shm_alloc`], from a separate allocation site (call-load cells), so that Kamailio's
/// per-module memory statistics tell them apart; freed with [`shm_free`].
pub fn shm_alloc_cell(n: usize) -> *mut u8 {
    // SAFETY: plain allocation call.
    unsafe { sys::rds_shm_malloc_cell(n as _) as *mut u8 }
}

/// Frees memory from [`shm_alloc`].
///
/// # Safety
/// `p` must come from `shm_alloc` and must not be used afterwards.
pub unsafe fn shm_free(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: guaranteed by the caller.
        unsafe { sys::rds_shm_free(p as *mut _) }
    }
}

/// Returns the process heap's free pages to the kernel (glibc `malloc_trim`). Called in the
/// main process after the first list load, before Kamailio forks: the parse buffers were freed
/// but their pages would otherwise be inherited (and counted) by every child.
pub fn heap_trim() {
    // SAFETY: plain libc call without arguments that refer to memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocates pkg (process-private Kamailio) memory.
pub fn pkg_alloc(n: usize) -> *mut u8 {
    // SAFETY: plain allocation call.
    unsafe { sys::rds_pkg_malloc(n as _) as *mut u8 }
}

/// A Kamailio `gen_lock_t` in shared memory (a futex on this build).
pub struct ShmLock(*mut sys::gen_lock_t);
// SAFETY: the lock lives in shm and is designed to be used from any process.
unsafe impl Send for ShmLock {}
// SAFETY: as above; all operations go through the lock primitives.
unsafe impl Sync for ShmLock {}

/// Holds a [`ShmLock`]; released on drop.
pub struct LockGuard<'a>(&'a ShmLock);

impl ShmLock {
    pub fn new() -> Option<ShmLock> {
        // SAFETY: allocates and initialises a lock in shm.
        let p = unsafe { sys::rds_lock_new() };
        if p.is_null() { None } else { Some(ShmLock(p)) }
    }
    /// Destroys and frees the lock (module shutdown only).
    ///
    /// # Safety
    /// No process may use the lock afterwards (call from `mod_destroy`, when the children
    /// are gone); call at most once.
    pub unsafe fn free(&self) {
        // SAFETY: guaranteed by the caller.
        unsafe { sys::rds_lock_free(self.0) }
    }
    pub fn lock(&self) -> LockGuard<'_> {
        // SAFETY: self.0 is a valid initialised lock for the module's lifetime.
        unsafe { sys::rds_lock_get(self.0) };
        LockGuard(self)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: we hold the lock (acquired in `lock`).
        unsafe { sys::rds_lock_release((self.0).0) }
    }
}

/// Stops and frees the module's core-timer registrations (module shutdown only).
pub fn free_timers() {
    // SAFETY: mod_destroy runs in the main process after the timer process is gone.
    unsafe { sys::rds_timers_free() }
}
