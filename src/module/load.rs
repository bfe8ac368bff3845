//! Call-load table of algorithm 10 (spec X-05): Call-ID → (set, duid) cells in shared memory,
//! 2^`ds_hash_size` buckets each with its own lock, expired by a timer.
//! The per-destination counter (`dload`) is an atomic in the snapshot, so it survives reloads.
use std::sync::atomic::{AtomicPtr, Ordering};

use once_cell::sync::OnceCell;

use crate::ds::snapshot::Snap;
use crate::kam::mem::{shm_alloc, shm_free, ShmLock};
use crate::module::state;
use crate::{ds_dbg, ds_err, ds_warn};

#[repr(C)]
struct Cell {
    next: *mut Cell,
    setid: i32,
    state: i32,
    expire: i64,
    initexpire: i64,
    callid_len: u32,
    duid_len: u32,
    // followed by callid bytes then duid bytes
}

impl Cell {
    fn data(&self) -> &[u8] {
        // SAFETY: the cell was allocated with room for both strings right after the header.
        unsafe {
            let p = (self as *const Cell).add(1) as *const u8;
            std::slice::from_raw_parts(p, (self.callid_len + self.duid_len) as usize)
        }
    }
    fn callid(&self) -> &[u8] {
        self.data().get(..self.callid_len as usize).unwrap_or(&[])
    }
    fn duid(&self) -> &[u8] {
        self.data().get(self.callid_len as usize..).unwrap_or(&[])
    }
}

struct Bucket {
    head: AtomicPtr<Cell>,
    lock: ShmLock,
}

/// The table: bucket headers live in shm (allocated in mod_init, before fork).
pub struct LoadTable {
    buckets: *mut Bucket,
    n: usize,
    expire: i64,
    initexpire: i64,
}
// SAFETY: all shared data is in shm and protected by the bucket locks.
unsafe impl Send for LoadTable {}
// SAFETY: as above.
unsafe impl Sync for LoadTable {}

static TABLE: OnceCell<LoadTable> = OnceCell::new();

pub fn table() -> Option<&'static LoadTable> {
    TABLE.get()
}

/// Cell state: no 2xx seen yet / confirmed.
pub const LOAD_INIT: i32 = 0;
pub const LOAD_CONFIRMED: i32 = 1;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Creates the table (mod_init). `size_exp` is `ds_hash_size` (2^N buckets).
pub fn init(size_exp: i32, expire: i32, initexpire: i32) -> Result<(), String> {
    if size_exp <= 0 {
        return Ok(());
    }
    let n = 1usize << size_exp.min(24);
    let p = shm_alloc(n * std::mem::size_of::<Bucket>()) as *mut Bucket;
    if p.is_null() {
        return Err("no shared memory for the call-load table".into());
    }
    for i in 0..n {
        let lock = ShmLock::new().ok_or("cannot allocate call-load locks")?;
        // SAFETY: p has room for n buckets; each slot is written once.
        unsafe { p.add(i).write(Bucket { head: AtomicPtr::new(std::ptr::null_mut()), lock }) };
    }
    let _ = TABLE.set(LoadTable { buckets: p, n, expire: expire as i64, initexpire: initexpire as i64 });
    Ok(())
}

/// Frees the table: every cell, the bucket locks and the buckets (mod_destroy, main process,
/// the children are gone).
pub fn destroy() {
    let Some(t) = TABLE.get() else { return };
    for i in 0..t.n {
        // SAFETY: i < n, buckets initialised in `init`; no other process runs any more.
        unsafe {
            let b = &*t.buckets.add(i);
            let mut it = b.head.swap(std::ptr::null_mut(), Ordering::AcqRel);
            while !it.is_null() {
                let next = (*it).next;
                shm_free(it as *mut u8);
                it = next;
            }
            b.lock.free();
        }
    }
    // SAFETY: allocated by `init`, not used after this point.
    unsafe { shm_free(t.buckets as *mut u8) };
}

fn bucket_of<'a>(t: &'a LoadTable, callid: &[u8]) -> &'a Bucket {
    // case-insensitive hash, like the core's core_case_hash (bucket choice is internal)
    let mut h: u32 = 0;
    for &c in callid {
        h = h.wrapping_mul(31).wrapping_add(c.to_ascii_lowercase() as u32);
    }
    let i = (h as usize) & (t.n - 1);
    // SAFETY: i < n; buckets were initialised in `init`.
    unsafe { &*t.buckets.add(i) }
}

/// Decrements the load of `(setid, duid)` in the current list (never below 0).
fn load_dec(snap: Option<Snap<'_>>, setid: i32, duid: &[u8]) -> bool {
    let Some(set) = snap.and_then(|s| s.set(setid)) else {
        ds_err!(fn "ds_load_remove_byid"; "destination set [{setid}] not found");
        return false;
    };
    let Some(d) = set.dests.iter().find(|d| d.duid.bytes().eq_ignore_ascii_case(duid)) else {
        ds_err!(fn "ds_load_remove_byid"; "old destination address not found for [{setid}, {}]", String::from_utf8_lossy(duid));
        return false;
    };
    d.load_dec();
    true
}

impl LoadTable {
    /// Adds a cell; false when the Call-ID is already there or memory runs out.
    pub fn add(&self, callid: &[u8], duid: &[u8], setid: i32) -> bool {
        let b = bucket_of(self, callid);
        let _g = b.lock.lock();
        let mut it = b.head.load(Ordering::Relaxed);
        // SAFETY: cells of this bucket are only touched under its lock.
        while let Some(c) = unsafe { it.as_ref() } {
            if c.callid() == callid {
                ds_warn!(fn "ds_add_cell"; "call-id already in hash table [{}].", String::from_utf8_lossy(callid));
                return false;
            }
            it = c.next;
        }
        let size = std::mem::size_of::<Cell>() + callid.len() + duid.len();
        let p = crate::kam::mem::shm_alloc_cell(size) as *mut Cell;
        if p.is_null() {
            ds_err!(fn "ds_add_cell"; "cannot create new cell (no more shared memory).");
            return false;
        }
        let t = now();
        // SAFETY: fresh allocation of `size` bytes; header then the two strings.
        unsafe {
            p.write(Cell {
                next: b.head.load(Ordering::Relaxed),
                setid,
                state: LOAD_INIT,
                expire: t + self.expire,
                initexpire: t + self.initexpire,
                callid_len: callid.len() as u32,
                duid_len: duid.len() as u32,
            });
            let d = p.add(1) as *mut u8;
            std::ptr::copy_nonoverlapping(callid.as_ptr(), d, callid.len());
            std::ptr::copy_nonoverlapping(duid.as_ptr(), d.add(callid.len()), duid.len());
        }
        b.head.store(p, Ordering::Relaxed);
        true
    }

    /// Runs `f` on the cell of `callid` under its bucket lock.
    fn with_cell<R>(&self, callid: &[u8], f: impl FnOnce(&mut Cell) -> R) -> Option<R> {
        let b = bucket_of(self, callid);
        let _g = b.lock.lock();
        let mut it = b.head.load(Ordering::Relaxed);
        // SAFETY: under the bucket lock.
        while let Some(c) = unsafe { it.as_mut() } {
            if c.callid() == callid {
                return Some(f(c));
            }
            it = c.next;
        }
        None
    }

    /// Removes the cell of `callid`, returning (setid, duid).
    fn take(&self, callid: &[u8]) -> Option<(i32, Vec<u8>)> {
        let b = bucket_of(self, callid);
        let _g = b.lock.lock();
        let mut prev: *mut Cell = std::ptr::null_mut();
        let mut it = b.head.load(Ordering::Relaxed);
        // SAFETY: under the bucket lock; unlinked cells are freed once.
        unsafe {
            while let Some(c) = it.as_ref() {
                if c.callid() == callid {
                    let out = (c.setid, c.duid().to_vec());
                    if prev.is_null() {
                        b.head.store(c.next, Ordering::Relaxed);
                    } else {
                        (*prev).next = c.next;
                    }
                    shm_free(it as *mut u8);
                    return Some(out);
                }
                prev = it;
                it = c.next;
            }
        }
        None
    }

    /// `ds_load_remove`: drop the call and decrement its destination. -1 when unknown.
    pub fn remove(&self, callid: &[u8]) -> i32 {
        let Some((setid, duid)) = self.take(callid) else {
            ds_err!(fn "ds_load_remove"; "cannot find load for ({})", String::from_utf8_lossy(callid));
            return -1;
        };
        if state::with_snap(|s| load_dec(s, setid, &duid)) { 0 } else { -1 }
    }

    /// `ds_load_state`: mark confirmed.
    pub fn set_state(&self, callid: &[u8], st: i32) -> i32 {
        match self.with_cell(callid, |c| c.state = st) {
            Some(()) => 0,
            None => {
                ds_dbg!(fn "ds_load_state"; "cannot find load for ({})", String::from_utf8_lossy(callid));
                -1
            }
        }
    }

    /// `ds_load_replace`: move the call to destination `duid` of the same set.
    /// 0 ok, -1 error, -2 new destination not in the set.
    pub fn replace(&self, callid: &[u8], duid: &[u8]) -> i32 {
        if duid.is_empty() {
            ds_err!(fn "ds_load_replace"; "invalid dst unique id not set for ({})", String::from_utf8_lossy(callid));
            return -1;
        }
        let Some((setid, old)) = self.with_cell(callid, |c| (c.setid, c.duid().to_vec())) else {
            ds_err!(fn "ds_load_replace"; "cannot find load for ({})", String::from_utf8_lossy(callid));
            return -1;
        };
        state::with_snap(|snap| {
            let Some(set) = snap.and_then(|s| s.set(setid)) else {
                ds_err!(fn "ds_load_replace"; "destination set [{setid}] not found");
                return -1;
            };
            let oldd = set.dests.iter().find(|d| d.duid.bytes().eq_ignore_ascii_case(&old));
            let Some(newd) = set.dests.iter().find(|d| d.duid.bytes().eq_ignore_ascii_case(duid)) else {
                ds_err!(fn "ds_load_replace"; "new destination address not found for [{setid}, {}]", String::from_utf8_lossy(duid));
                return -2;
            };
            if oldd.is_none() {
                ds_warn!(fn "ds_load_replace"; "old destination address not found for [{setid}, {}]", String::from_utf8_lossy(&old));
            }
            let _ = self.take(callid);
            if let Some(o) = oldd {
                o.load_dec();
            }
            if !self.add(callid, newd.duid.bytes(), setid) {
                ds_err!(fn "ds_load_replace"; "unable to replace destination load [{} / {}]", String::from_utf8_lossy(duid), String::from_utf8_lossy(callid));
                return -1;
            }
            newd.dload.fetch_add(1, Ordering::AcqRel);
            0
        })
    }

    /// Expiry scan (timer): drops cells past `expire`, or past `initexpire` while unconfirmed.
    pub fn expire_scan(&self) {
        let t = now();
        let mut dropped: Vec<(i32, Vec<u8>)> = Vec::new();
        for i in 0..self.n {
            // SAFETY: i < n.
            let b = unsafe { &*self.buckets.add(i) };
            let _g = b.lock.lock();
            let mut prev: *mut Cell = std::ptr::null_mut();
            let mut it = b.head.load(Ordering::Relaxed);
            // SAFETY: under the bucket lock; each unlinked cell is freed once.
            unsafe {
                while let Some(c) = it.as_ref() {
                    let next = c.next;
                    let expired = (c.expire != 0 && c.expire < t)
                        || (c.state == LOAD_INIT && c.initexpire != 0 && c.initexpire < t);
                    if expired {
                        dropped.push((c.setid, c.duid().to_vec()));
                        if prev.is_null() {
                            b.head.store(next, Ordering::Relaxed);
                        } else {
                            (*prev).next = next;
                        }
                        shm_free(it as *mut u8);
                    } else {
                        prev = it;
                    }
                    it = next;
                }
            }
        }
        if !dropped.is_empty() {
            state::with_snap(|s| {
                for (setid, duid) in &dropped {
                    load_dec(s, *setid, duid);
                }
            });
        }
    }
}
