//! Publishing snapshots to many processes without a reader lock: epoch-based reclamation.
//!
//! [`Control`] lives in shared memory. Readers (SIP workers, RPC, timers) announce the global
//! epoch in their own per-process slot before loading the current snapshot pointer and clear it
//! when done; they never block. A writer (reload/add/remove, serialised by a lock outside this
//! module) swaps the pointer, advances the epoch and retires the old block; a retired block is
//! freed once no slot still shows an epoch older than its retirement. So a request in flight
//! keeps a consistent snapshot, and memory is never freed under a reader.
//!
//! No FFI here: the slot index (Kamailio's `process_no`) and the free function are passed in.

use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::ds::snapshot::{Header, Snap};

/// Reader slots, one per Kamailio process (`process_no`).
pub const MAX_SLOTS: usize = 1024;
/// Retired blocks waiting for readers to leave.
pub const MAX_RETIRED: usize = 64;

#[repr(C)]
struct Retired {
    ptr: AtomicPtr<Header>,
    epoch: AtomicU64,
}

/// Shared control block (one per module instance, in shm).
#[repr(C)]
pub struct Control {
    current: AtomicPtr<Header>,
    epoch: AtomicU64,
    /// Number of the last loaded list generation.
    pub generation: AtomicU64,
    /// Time (seconds) of the last list rebuild, for `reload_delta`.
    pub last_rebuild: AtomicI64,
    /// `dispatcher.ping_active` value.
    pub ping_active: AtomicI32,
    /// Snapshots freed so far (statistics/tests).
    pub freed: AtomicUsize,
    retired: [Retired; MAX_RETIRED],
    slots: [AtomicU64; MAX_SLOTS],
    /// Read-section nesting depth per slot (only its own process touches it: no contention).
    /// Kept here rather than in a thread-local, whose access costs a `__tls_get_addr` call in a
    /// dlopened library.
    nest: [AtomicU32; MAX_SLOTS],
}

/// A reader's hold on the current snapshot; the snapshot cannot be freed while it lives.
pub struct ReadGuard<'a> {
    ctl: &'a Control,
    slot: usize,
    snap: Option<Snap<'a>>,
}

impl<'a> ReadGuard<'a> {
    /// The current list, or `None` when no list is loaded.
    pub fn snap(&self) -> Option<Snap<'a>> {
        self.snap
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let Some(n) = self.ctl.nest.get(self.slot) else { return };
        let v = n.load(Ordering::Relaxed).saturating_sub(1);
        n.store(v, Ordering::Relaxed);
        if v == 0 {
            if let Some(s) = self.ctl.slots.get(self.slot) {
                s.store(0, Ordering::Release);
            }
        }
    }
}

impl Control {
    /// Initialises a control block in place (memory may be uninitialised).
    ///
    /// # Safety
    /// `p` must be valid for writes of `size_of::<Control>()` bytes and suitably aligned.
    pub unsafe fn init_in_place(p: *mut Control) {
        // SAFETY: caller guarantees validity; all-zero is a valid value for every field
        // (null pointers, zero atomics), then the non-zero fields are set.
        unsafe {
            std::ptr::write_bytes(p as *mut u8, 0, std::mem::size_of::<Control>());
            (*p).epoch.store(1, Ordering::Relaxed);
            (*p).ping_active.store(1, Ordering::Relaxed);
            (*p).last_rebuild.store(i64::MIN / 2, Ordering::Relaxed);
        }
    }

    /// Enters a read-side section for the process owning `slot` and returns the current list.
    pub fn read(&self, slot: usize) -> ReadGuard<'_> {
        let slot = slot.min(MAX_SLOTS - 1);
        if let Some(n) = self.nest.get(slot) {
            let v = n.load(Ordering::Relaxed);
            if v == 0 {
                if let Some(s) = self.slots.get(slot) {
                    // a SeqCst read-modify-write: a full barrier before the pointer load below
                    // (Dekker-style with the writer's swap + scan), one instruction on x86
                    s.swap(self.epoch.load(Ordering::SeqCst), Ordering::SeqCst);
                }
            }
            n.store(v + 1, Ordering::Relaxed);
        }
        let p = self.current.load(Ordering::SeqCst);
        // SAFETY: `p` is null or a block published by `publish`; our slot keeps it alive
        // until the guard is dropped.
        let snap = unsafe { Snap::from_ptr(p) };
        ReadGuard { ctl: self, slot, snap }
    }

    /// Current pointer (for writers, which are serialised and never race with frees).
    pub fn current_ptr(&self) -> *mut Header {
        self.current.load(Ordering::SeqCst)
    }

    /// Publishes `new` (writer side; callers serialise writers). Returns false when the retired
    /// list is full and `new` was not published.
    pub fn publish(&self, new: *mut Header, free: &mut dyn FnMut(*mut Header)) -> bool {
        self.collect(free);
        let free_slot = self.retired.iter().find(|r| r.ptr.load(Ordering::Relaxed).is_null());
        let old = self.current.load(Ordering::SeqCst);
        if !old.is_null() && free_slot.is_none() {
            return false;
        }
        let old = self.current.swap(new, Ordering::SeqCst);
        let e = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.generation.fetch_add(1, Ordering::SeqCst);
        if !old.is_null() {
            if let Some(r) = free_slot {
                r.epoch.store(e, Ordering::Relaxed);
                r.ptr.store(old, Ordering::Release);
            }
        }
        self.collect(free);
        true
    }

    /// Frees retired blocks no reader can still see. Writer side.
    pub fn collect(&self, free: &mut dyn FnMut(*mut Header)) {
        fence(Ordering::SeqCst);
        let min_active = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&v| v != 0)
            .min()
            .unwrap_or(u64::MAX);
        // oldest first: freeing a block forwards what was counted on it after its successor
        // was built (see `snapshot::forward_counters`), and that successor may be freed in the
        // same pass
        let mut due = [(0u64, 0usize); MAX_RETIRED];
        let mut n = 0;
        for (i, r) in self.retired.iter().enumerate() {
            let p = r.ptr.load(Ordering::Acquire);
            let e = r.epoch.load(Ordering::Relaxed);
            if !p.is_null() && min_active >= e {
                if let Some(slot) = due.get_mut(n) {
                    *slot = (e, i);
                    n += 1;
                }
            }
        }
        let due = due.get_mut(..n).unwrap_or(&mut []);
        due.sort_unstable();
        for &(_, i) in due.iter() {
            let Some(r) = self.retired.get(i) else { continue };
            let p = r.ptr.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                free(p);
                self.freed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Frees every retired block (oldest first) and then the current one, whatever the reader
    /// slots say: module shutdown only, when no other process runs any more.
    pub fn drain(&self, free: &mut dyn FnMut(*mut Header)) {
        let mut due = [(0u64, 0usize); MAX_RETIRED];
        let mut n = 0;
        for (i, r) in self.retired.iter().enumerate() {
            if !r.ptr.load(Ordering::Acquire).is_null() {
                if let Some(slot) = due.get_mut(n) {
                    *slot = (r.epoch.load(Ordering::Relaxed), i);
                    n += 1;
                }
            }
        }
        let due = due.get_mut(..n).unwrap_or(&mut []);
        due.sort_unstable();
        for &(_, i) in due.iter() {
            if let Some(r) = self.retired.get(i) {
                let p = r.ptr.swap(std::ptr::null_mut(), Ordering::AcqRel);
                if !p.is_null() {
                    free(p);
                    self.freed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let cur = self.current.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !cur.is_null() {
            free(cur);
            self.freed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Number of retired blocks not yet freed.
    pub fn pending(&self) -> usize {
        self.retired.iter().filter(|r| !r.ptr.load(Ordering::Relaxed).is_null()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::order::DestSet;
    use crate::ds::snapshot::{build, testutil};
    use std::sync::Arc;

    fn new_control() -> Box<Control> {
        let mut b: Box<std::mem::MaybeUninit<Control>> = Box::new_uninit();
        // SAFETY: the box provides valid, aligned memory for a Control.
        unsafe {
            Control::init_in_place(b.as_mut_ptr());
            b.assume_init()
        }
    }

    fn mk(gen: u64, n: i32) -> *mut Header {
        let sets: Vec<DestSet> = (0..n).map(|i| DestSet { id: i, dests: vec![] }).collect();
        build(&sets, gen, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build")
    }

    fn free(p: *mut Header) {
        // SAFETY: p came from `mk`.
        let size = unsafe { (*p).total_size };
        testutil::heap_free(p as *mut u8, size);
    }

    #[test]
    fn reader_keeps_old_snapshot_alive() {
        let c = new_control();
        assert!(c.read(1).snap().is_none());
        assert!(c.publish(mk(1, 1), &mut |p| free(p)));
        let g = c.read(1);
        assert_eq!(g.snap().expect("snap").nsets(), 1);
        assert!(c.publish(mk(2, 2), &mut |p| free(p)));
        // the reader still holds generation 1: not freed
        assert_eq!(c.pending(), 1);
        assert_eq!(g.snap().expect("snap").header().generation, 1);
        // a nested read in the same process sees the new list and keeps the slot
        {
            let g2 = c.read(1);
            assert_eq!(g2.snap().expect("snap").nsets(), 2);
        }
        c.collect(&mut |p| free(p));
        assert_eq!(c.pending(), 1);
        drop(g);
        c.collect(&mut |p| free(p));
        assert_eq!(c.pending(), 0);
        assert_eq!(c.freed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn concurrent_readers_and_writer() {
        let c: Arc<Box<Control>> = Arc::new(new_control());
        assert!(c.publish(mk(1, 3), &mut |p| free(p)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hs = vec![];
        for t in 0..3usize {
            let c = c.clone();
            let stop = stop.clone();
            hs.push(std::thread::spawn(move || {
                let mut reads = 0u64;
                while reads < 10_000 || (!stop.load(Ordering::Relaxed) && reads < 2_000_000) {
                    let g = c.read(t + 1);
                    let s = g.snap().expect("snap");
                    // touch every set: would crash/miscompare on a freed block
                    let n = s.sets().count();
                    assert_eq!(n, s.nsets());
                    assert!(n >= 1);
                    reads += 1;
                }
                reads
            }));
        }
        for i in 0..300u64 {
            let p = mk(i + 2, (i % 5 + 1) as i32);
            let mut tries = 0;
            while !c.publish(p, &mut |p| free(p)) {
                tries += 1;
                assert!(tries < 1_000_000, "retired list never drained");
                std::thread::yield_now();
            }
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            assert!(h.join().expect("reader") > 0);
        }
        c.collect(&mut |p| free(p));
        assert_eq!(c.pending(), 0);
        free(c.current_ptr());
    }
}
