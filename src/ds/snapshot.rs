//! The destination list as one immutable, self-contained memory block (a *snapshot*).
//!
//! The block is written once by the process that (re)loads the list and then only read by
//! every Kamailio process: it lives in Kamailio's shared memory, which is mapped at the same
//! address in all processes, so plain pointers inside it are valid everywhere. Per-destination
//! runtime state (state flags, failure counter, call load) and per-set selection cursors are
//! atomics inside the block, so readers never take a global lock.
//!
//! This module has no FFI: the memory comes from an allocator callback (Kamailio's shm in the
//! module, the Rust heap in unit tests).
//!
//! Layout of one block: `[Header][SetRec; nsets][u32; nsets (ids sorted)][DestRec; ndests]
//! [IpIdx; nip][AddrRec; nextra][strings]`.

use std::mem::{align_of, size_of};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use crate::ds::latency::LatencyStats;
use crate::ds::order::DestSet;

/// Destination state bits (spec §4.2).
pub const DS_INACTIVE: i32 = 1;
pub const DS_TRYING: i32 = 2;
pub const DS_DISABLED: i32 = 4;
pub const DS_PROBING: i32 = 8;
pub const DS_NODNS: i32 = 16;
/// No keepalives for this destination (Kamailio 6.0).
pub const DS_NOPING: i32 = 32;

/// Bits replaced by a state change: 31, from Kamailio 6.0 63 (so a state change also clears
/// the no-ping bit, as the C module does).
pub fn states_all() -> i32 {
    if crate::ds::compat::ge(6, 0, 0) {
        63
    } else {
        31
    }
}

const MAGIC: u32 = 0x4453_4e50; // "DSNP"

/// A string stored in the block's string area. `ptr` is null for "not set".
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ShStr {
    ptr: *const u8,
    len: u32,
}

impl ShStr {
    const NULL: ShStr = ShStr { ptr: std::ptr::null(), len: 0 };
    /// The bytes, or `None` when the value is not set.
    pub fn get(&self) -> Option<&[u8]> {
        if self.ptr.is_null() {
            None
        } else {
            // SAFETY: ptr/len were written by `build` and point into the same immutable block,
            // which outlives every reader (see `rcu`).
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len as usize) })
        }
    }
    /// The bytes, empty when not set.
    pub fn bytes(&self) -> &[u8] {
        self.get().unwrap_or(&[])
    }
}

#[repr(C)]
pub struct Header {
    magic: u32,
    pub nsets: u32,
    pub ndests: u32,
    _pad: u32,
    pub total_size: usize,
    /// Load generation (1, 2, ...).
    pub generation: u64,
    sets: *mut SetRec,
    ids_sorted: *const u32,
    dests: *mut DestRec,
    /// Destinations with an address, sorted by (family, address, iteration position): one
    /// entry per distinct address of a destination (`ds_dns_match_all` stores several).
    ipidx: *const IpIdx,
    nipidx: u32,
}

/// One further resolved address of a destination (`ds_dns_match_all`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AddrRec {
    /// 4 or 6.
    pub af: u8,
    pub ip: [u8; 16],
}

impl AddrRec {
    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self.af {
            4 => Some(IpAddr::from([self.ip[0], self.ip[1], self.ip[2], self.ip[3]])),
            6 => Some(IpAddr::from(self.ip)),
            _ => None,
        }
    }
}

/// Address index entry (for `ds_is_from_list` without scanning the list).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpIdx {
    pub af: u8,
    _pad: [u8; 3],
    /// Index of the set in iteration order.
    pub set: u32,
    /// Index of the destination in the block's destination array (iteration order).
    pub dest: u32,
    pub ip: [u8; 16],
}

/// One destination set. `dests` is a range of the block's destination array.
#[repr(C)]
pub struct SetRec {
    pub id: i32,
    pub nr: u32,
    first: u32,
    /// Round-robin cursor (`last` in the C module).
    pub last: AtomicU32,
    pub wlast: AtomicU32,
    pub rwlast: AtomicU32,
    /// Alg 9 table (destination indexes), fixed at load.
    pub wlist: [u32; 100],
    /// Alg 11 table, rebuilt when a destination with `rweight` changes usability.
    pub rwlist: [AtomicU32; 100],
    /// Alg 14 (6.1): every destination has the same priority, and it is > 0.
    pub rrserial: bool,
    /// Alg 15 (Kamailio master) table: lowest priority first, then weight
    /// (`weights::pw_table`); rebuilt at load and by `select::pw_rebuild`.
    pub pwlist: [AtomicU32; 100],
    /// Alg 15 cursor (`pwlast`), always in 0..100.
    pub pwlast: AtomicU32,
    /// Exact-weight tables of algs 41 (`weight`) and 43 (`rweight`): see `ds::algs::exact`.
    pub xw: [XwHdr; 2],
    /// Algs 32+k: every destination has the same `weight` (scores compare raw hashes).
    pub cw_uniform: bool,
    /// Algs 32+k: one entry per destination (URI seed, weight), contiguous.
    cw: *const CwEnt,
}

/// One exact-weight table of a set (algs 41/43): `n` slots of prefix sums over the usable
/// destinations, their `total`, and the pick counter. Rebuilt slot by slot by one writer
/// at a time (the module's rweight lock); a reader validates what it picks.
#[repr(C)]
pub struct XwHdr {
    pub slots: *const XwSlot,
    pub n: AtomicU32,
    pub total: AtomicU64,
    pub ctr: AtomicU64,
}

/// Consistent-hashing entry of a destination (algs 32+k): the seed, a 64-bit hash of its
/// URI (stable across reloads, `ds::algs::consistent::dest_seed`), and its weight as scored.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CwEnt {
    pub seed: u64,
    pub w: f64,
}

impl SetRec {
    /// The consistent-hashing entries of the set's destinations (same order).
    pub fn cw(&self) -> &[CwEnt] {
        if self.cw.is_null() || self.nr == 0 {
            return &[];
        }
        // SAFETY: `cw` points to `nr` initialised entries inside the block.
        unsafe { std::slice::from_raw_parts(self.cw, self.nr as usize) }
    }
}

/// A prefix-sum slot: destinations `idx` covers `[previous end, end)`.
#[repr(C)]
pub struct XwSlot {
    pub end: AtomicU64,
    pub idx: AtomicU32,
}

impl XwHdr {
    /// The slots (capacity = the set's size).
    pub fn slots(&self, cap: usize) -> &[XwSlot] {
        if self.slots.is_null() || cap == 0 {
            return &[];
        }
        // SAFETY: `slots` points to `cap` (the set's size) initialised slots inside the block.
        unsafe { std::slice::from_raw_parts(self.slots, cap) }
    }
}

impl SetRec {
    /// Stores a new alg-15 table (slot by slot: readers see valid indexes throughout).
    pub fn store_pwlist(&self, t: &[u32; 100]) {
        for (slot, v) in self.pwlist.iter().zip(t.iter()) {
            slot.store(*v, Ordering::Relaxed);
        }
    }
}

/// One destination: the configured values plus its shared runtime state.
#[repr(C)]
pub struct DestRec {
    pub uri: ShStr,
    pub host: ShStr,
    pub attrs_body: ShStr,
    pub duid: ShStr,
    pub socket: ShStr,
    pub sockname: ShStr,
    pub ping_from: ShStr,
    pub obproxy: ShStr,
    pub ping_socket: ShStr,
    /// Internal unique id (Kamailio 6.1 `IUID`): assigned when the destination first enters a
    /// list (`(generation << 24) | (index + 1)`, unique for the module's lifetime) and kept
    /// while it stays; rendered by `iuid_text`.
    pub iuid: u64,
    /// Runtime state bits (spec §4.2), shared by all processes.
    pub flags: AtomicI32,
    /// The flags as configured in the file/DB.
    pub cfg_flags: i32,
    pub priority: i32,
    pub maxload: i32,
    pub weight: i32,
    pub cc: i32,
    pub ocmin: i32,
    pub ocmax: i32,
    /// Consecutive failures/successes counter of the state machine (spec §7.2).
    pub fail_cnt: AtomicI32,
    /// Active calls (alg 10).
    pub dload: AtomicI32,
    pub port: u16,
    pub proto: u8,
    pub scheme: u8,
    /// 0: no address, 4: IPv4, 6: IPv6.
    pub af: u8,
    _pad: [u8; 3],
    pub ip: [u8; 16],
    /// Further resolved addresses (`ds_dns_match_all`; the first one is `ip`).
    extra_addrs: *const AddrRec,
    n_extra: u32,
    /// Opaque sending socket handle (a `socket_info*` in the module), 0 = none.
    pub sock: usize,
    pub dnstime_sec: u64,
    pub dnstime_usec: u64,
    /// Latency average / estimate (ms, f64 bits) used by alg 13; from the `latency` attr
    /// until keepalive statistics exist.
    pub lat_avg: AtomicU64,
    pub lat_est: AtomicU64,
    /// Full latency statistics; written only under the module's latency lock.
    pub lat: std::cell::UnsafeCell<LatencyStats>,
    /// When the last keepalive was sent (µs since the epoch).
    pub ping_start_us: AtomicU64,
    /// Relative weight in use (alg 11): `rweight`, or what congestion control computed.
    pub rweight_rt: AtomicI32,
    /// Overload control (alg 64, Kamailio 6.0): rate, sequence, validity end (µs since the
    /// epoch), table cursor and the 100-slot table (0 = skip, 1 = use).
    pub oc_rate: AtomicI32,
    pub oc_seq: AtomicI32,
    pub oc_time_us: AtomicU64,
    pub oc_idx: AtomicU32,
    /// The 100-slot table as bits (bit i set = slot i says "use").
    pub oc_dist: [AtomicU64; 2],
    /// The record of the previous list this one carried its state from (null: new). Only the
    /// writer that built this block reads it, right after the build (see `link_successors`).
    carried_from: *const DestRec,
    /// Set when a newer list carried this record's state: the record there, and the call load
    /// copied into it. Calls that end on this record after the copy (a process still reading
    /// the old list) are forwarded to the successor when this block is freed
    /// (`forward_counters`), so the call load never drifts across reloads.
    successor: std::sync::atomic::AtomicPtr<DestRec>,
    dload_copied: AtomicI32,
    /// Counters of issue 12 (selections, replies, keepalives), carried across reloads.
    pub ctr: crate::ds::counters::DestCounters,
}

impl DestRec {
    /// Calls counted on this destination (alg 10, `DLGLOAD`); never below 0.
    pub fn load(&self) -> i32 {
        self.dload.load(Ordering::Relaxed).max(0)
    }

    /// One call less. A record whose state was carried from an older list counts exactly (it
    /// may go below 0 for a moment: a call counted on the older list after the copy is
    /// forwarded when that list is freed); any other record never goes below 0, as in C.
    pub fn load_dec(&self) {
        if self.carried_from.is_null() {
            let _ = self.dload.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| if v > 0 { Some(v - 1) } else { None });
        } else {
            self.dload.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Stores an overload-control table (see `weights::oc_table`).
    pub fn set_oc_table(&self, t: &[u8; 100]) {
        let bits = crate::ds::weights::oc_bits(t);
        self.oc_dist[0].store(bits[0], Ordering::Relaxed);
        self.oc_dist[1].store(bits[1], Ordering::Relaxed);
    }
    /// Whether slot `i` of the overload-control table says "use".
    pub fn oc_use(&self, i: u32) -> bool {
        let i = (i % 100) as usize;
        self.oc_dist[i / 64].load(Ordering::Relaxed) & (1u64 << (i % 64)) != 0
    }
}

impl DestRec {
    /// Copy of the latency statistics.
    ///
    /// # Safety
    /// The caller holds the lock that serialises writers of `lat` (or accepts a torn read for
    /// display purposes only).
    pub unsafe fn latency_stats(&self) -> LatencyStats {
        // SAFETY: see above.
        unsafe { *self.lat.get() }
    }
    /// Usable = neither inactive nor disabled (trying destinations are still selected).
    pub fn usable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (DS_INACTIVE | DS_DISABLED) == 0
    }
    pub fn latency_avg(&self) -> f64 {
        f64::from_bits(self.lat_avg.load(Ordering::Relaxed))
    }
    pub fn latency_est(&self) -> f64 {
        f64::from_bits(self.lat_est.load(Ordering::Relaxed))
    }
    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self.af {
            4 => Some(IpAddr::from([self.ip[0], self.ip[1], self.ip[2], self.ip[3]])),
            6 => Some(IpAddr::from(self.ip)),
            _ => None,
        }
    }
    /// The further resolved addresses (`ds_dns_match_all`), without the first one.
    pub fn extra_addrs(&self) -> &[AddrRec] {
        if self.extra_addrs.is_null() || self.n_extra == 0 {
            return &[];
        }
        // SAFETY: written by `build`: `n_extra` records inside the same immutable block.
        unsafe { std::slice::from_raw_parts(self.extra_addrs, self.n_extra as usize) }
    }
    /// Every stored address: the first one, then the further ones.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ip_addr().into_iter().chain(self.extra_addrs().iter().filter_map(|a| a.ip_addr()))
    }
}

/// Read access to a snapshot block.
#[derive(Clone, Copy)]
pub struct Snap<'a> {
    h: &'a Header,
}

/// Read access to one set of a snapshot.
#[derive(Clone, Copy)]
pub struct SetView<'a> {
    pub rec: &'a SetRec,
    pub dests: &'a [DestRec],
}

impl<'a> Snap<'a> {
    /// # Safety
    /// `p` must point to a block produced by [`build`] that stays alive for `'a`.
    pub unsafe fn from_ptr(p: *const Header) -> Option<Snap<'a>> {
        // SAFETY: guaranteed by the caller.
        let h = unsafe { p.as_ref()? };
        if h.magic != MAGIC {
            return None;
        }
        Some(Snap { h })
    }
    pub fn header(&self) -> &'a Header {
        self.h
    }
    pub fn nsets(&self) -> usize {
        self.h.nsets as usize
    }
    fn set_recs(&self) -> &'a [SetRec] {
        // SAFETY: `sets` points to `nsets` initialised records inside the block.
        unsafe { std::slice::from_raw_parts(self.h.sets, self.h.nsets as usize) }
    }
    fn all_dests(&self) -> &'a [DestRec] {
        // SAFETY: `dests` points to `ndests` initialised records inside the block.
        unsafe { std::slice::from_raw_parts(self.h.dests, self.h.ndests as usize) }
    }
    fn view(&self, rec: &'a SetRec) -> SetView<'a> {
        let all = self.all_dests();
        let first = rec.first as usize;
        let dests = all.get(first..first + rec.nr as usize).unwrap_or(&[]);
        SetView { rec, dests }
    }
    /// Sets in iteration order (the C module's AVL post-order).
    pub fn sets(&self) -> impl Iterator<Item = SetView<'a>> + 'a {
        let s = *self;
        self.set_recs().iter().map(move |r| s.view(r))
    }
    /// Destinations in iteration order starting at position `start` (0-based over the whole
    /// list), with their set id; O(log sets) to find the start.
    pub fn dests_from(&self, start: usize) -> impl Iterator<Item = (i32, &'a DestRec)> + 'a {
        let recs = self.set_recs();
        let all = self.all_dests();
        // sets are laid out in iteration order, so `first` grows with the set index
        let si = recs.partition_point(|r| (r.first as usize + r.nr as usize) <= start);
        recs.get(si..).unwrap_or(&[]).iter().flat_map(move |r| {
            let first = r.first as usize;
            let from = start.max(first);
            let end = first + r.nr as usize;
            all.get(from..end).unwrap_or(&[]).iter().map(move |d| (r.id, d))
        })
    }

    /// Destinations whose address is `ip`, in iteration order: (set, destination).
    pub fn by_ip(&self, ip: IpAddr) -> impl Iterator<Item = (SetView<'a>, &'a DestRec)> + 'a {
        let (af, key) = ip_key(ip);
        // SAFETY: `ipidx` points to `nipidx` initialised entries inside the block.
        let idx = unsafe { std::slice::from_raw_parts(self.h.ipidx, self.h.nipidx as usize) };
        let lo = idx.partition_point(|e| (e.af, e.ip) < (af, key));
        let hi = idx.partition_point(|e| (e.af, e.ip) <= (af, key));
        let s = *self;
        let recs = self.set_recs();
        let all = self.all_dests();
        idx.get(lo..hi).unwrap_or(&[]).iter().filter_map(move |e| {
            let rec = recs.get(e.set as usize)?;
            Some((s.view(rec), all.get(e.dest as usize)?))
        })
    }

    /// The destination with internal id `iuid` and its set id: O(1) when it still sits at
    /// the index it was created with, else a scan.
    pub fn dest_by_iuid(&self, iuid: u64) -> Option<(i32, &'a DestRec)> {
        let all = self.all_dests();
        let i = ((iuid & 0xff_ffff) as usize).wrapping_sub(1);
        let pos = match all.get(i) {
            Some(d) if d.iuid == iuid => i,
            _ => all.iter().position(|d| d.iuid == iuid)?,
        };
        let recs = self.set_recs();
        let si = recs.partition_point(|r| (r.first as usize + r.nr as usize) <= pos);
        Some((recs.get(si)?.id, all.get(pos)?))
    }

    /// Look a set up by id (binary search over the sorted id index).
    pub fn set(&self, id: i32) -> Option<SetView<'a>> {
        // SAFETY: `ids_sorted` points to `nsets` u32 indexes inside the block.
        let idx = unsafe { std::slice::from_raw_parts(self.h.ids_sorted, self.h.nsets as usize) };
        let recs = self.set_recs();
        let pos = idx
            .binary_search_by(|&i| recs.get(i as usize).map(|r| r.id).unwrap_or(i32::MAX).cmp(&id))
            .ok()?;
        let rec = recs.get(*idx.get(pos)? as usize)?;
        Some(self.view(rec))
    }
}

/// Runtime state carried from the previous snapshot into a new one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CarriedState {
    pub flags: i32,
    pub fail_cnt: i32,
    pub dload: i32,
    /// Latency statistics to keep (None: start from the `latency` attr / empty).
    pub lat: Option<LatencyStats>,
    /// The internal unique id to keep (0: assign a new one).
    pub iuid: u64,
    /// The record this state is read from (its later call-load changes are forwarded to the
    /// new record); null when the state is not carried over (reset).
    pub src: *const DestRec,
}

/// Links the records of the previous list to the records of `new` that carried their state
/// (writer side, after a successful build and before publishing `new`): from then on, what
/// is counted on an old record is forwarded when its block is freed.
///
/// # Safety
/// `new` was just built by `build` from carry results of a list that is still allocated
/// (the current one, kept alive by the writer lock).
pub unsafe fn link_successors(new: Snap<'_>) {
    for set in new.sets() {
        for d in set.dests {
            // SAFETY: guaranteed by the caller: the source record is still allocated.
            if let Some(src) = unsafe { d.carried_from.as_ref() } {
                src.dload_copied.store(d.dload.load(Ordering::Relaxed), Ordering::Relaxed);
                src.successor.store(d as *const DestRec as *mut DestRec, Ordering::Release);
            }
        }
    }
}

/// Undoes `link_successors` for a block that will not be published.
///
/// # Safety
/// As for `link_successors`.
pub unsafe fn unlink_successors(new: Snap<'_>) {
    for set in new.sets() {
        for d in set.dests {
            // SAFETY: guaranteed by the caller.
            if let Some(src) = unsafe { d.carried_from.as_ref() } {
                src.successor.store(std::ptr::null_mut(), Ordering::Release);
            }
        }
    }
}

/// Forwards the call-load changes made on the records of `old` after their state was copied
/// into a newer list (processes that still held `old` when it was replaced). Call when `old`
/// is freed, oldest block first (see `rcu::Control::collect`), so that a chain of lists
/// forwards into the current one.
///
/// # Safety
/// No process reads `old` any more, and every successor block is still allocated (blocks are
/// freed oldest first).
pub unsafe fn forward_counters(old: Snap<'_>) {
    for set in old.sets() {
        for d in set.dests {
            let succ = d.successor.load(Ordering::Acquire);
            // SAFETY: guaranteed by the caller: the successor block is newer, still allocated.
            if let Some(n) = unsafe { succ.as_ref() } {
                let delta = d.dload.load(Ordering::Acquire) - d.dload_copied.load(Ordering::Relaxed);
                if delta != 0 {
                    n.dload.fetch_add(delta, Ordering::AcqRel);
                }
            }
        }
    }
}

/// The `IUID` text of a destination, shaped like Kamailio 6.1's sruid (`SRUID_INC`):
/// `<prefix><counter as hex, least significant nibble first>-<setid>`, where `prefix` is
/// `dspt-<start time hex>-<pid hex>-` of the main process.
pub fn iuid_text(prefix: &str, iuid: u64, setid: i32) -> String {
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    let mut v = iuid;
    while v != 0 {
        let d = (v & 0xf) as u32;
        out.push(char::from_digit(d, 16).unwrap_or('0'));
        v >>= 4;
    }
    out.push('-');
    out.push_str(&setid.to_string());
    out
}

fn ip_key(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&v4.octets());
            (4, k)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// Error building a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    TooLarge,
    NoMemory(usize),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::TooLarge => write!(f, "destination list too large"),
            BuildError::NoMemory(n) => write!(f, "out of shared memory ({n} bytes needed)"),
        }
    }
}

fn dest_strings(d: &crate::ds::dest::Dest) -> [Option<&[u8]>; 9] {
    let a = &d.attrs;
    let body: Option<&[u8]> = if a.body.is_empty() { None } else { Some(&a.body) };
    [
        Some(&d.uri),
        Some(&d.host),
        body,
        a.duid.as_deref(),
        a.socket.as_deref(),
        a.sockname.as_deref(),
        a.ping_from.as_deref(),
        a.obproxy.as_deref(),
        a.ping_socket.as_deref(),
    ]
}

/// Builds a snapshot block for `sets` (already in iteration order, destinations in array order).
/// `carry(setid, uri, cfg_flags)` returns runtime state to keep for a destination that exists in
/// the previous list. `alloc(size)` returns memory aligned to 16 bytes, or null.
/// `now` is (sec, usec) stored as DNS time.
pub fn build(
    sets: &[DestSet],
    generation: u64,
    now: (u64, u64),
    carry: &mut dyn FnMut(i32, &[u8], i32) -> Option<CarriedState>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    rng: &mut dyn FnMut() -> u32,
) -> Result<*mut Header, BuildError> {
    let nsets = sets.len();
    let ndests: usize = sets.iter().map(|s| s.dests.len()).sum();
    if nsets > u32::MAX as usize / 2 || ndests > u32::MAX as usize / 2 {
        return Err(BuildError::TooLarge);
    }
    let mut strbytes = 0usize;
    for s in sets {
        for d in &s.dests {
            for v in dest_strings(d).iter().flatten() {
                if v.len() > u32::MAX as usize {
                    return Err(BuildError::TooLarge);
                }
                strbytes += v.len() + 1;
            }
        }
    }
    let off_sets = align_up(size_of::<Header>(), align_of::<SetRec>().max(8));
    let off_ids = align_up(off_sets + nsets * size_of::<SetRec>(), 8);
    let off_dests = align_up(off_ids + nsets * size_of::<u32>(), align_of::<DestRec>().max(8));
    let nextra: usize = sets.iter().flat_map(|s| s.dests.iter()).filter(|d| d.ip.is_some()).map(|d| d.more_ips.len()).sum();
    let nip = sets.iter().flat_map(|s| s.dests.iter()).filter(|d| d.ip.is_some()).count() + nextra;
    // two exact-weight tables (algs 41, 43) of one slot per destination
    let off_xw = align_up(off_dests + ndests * size_of::<DestRec>(), align_of::<XwSlot>().max(8));
    let off_cw = align_up(off_xw + 2 * ndests * size_of::<XwSlot>(), align_of::<CwEnt>().max(8));
    let off_ip = align_up(off_cw + ndests * size_of::<CwEnt>(), align_of::<IpIdx>().max(8));
    let off_addr = align_up(off_ip + nip * size_of::<IpIdx>(), align_of::<AddrRec>());
    let off_str = off_addr + nextra * size_of::<AddrRec>();
    let total = align_up(off_str + strbytes, 16);

    let base = alloc(total);
    if base.is_null() {
        return Err(BuildError::NoMemory(total));
    }
    // SAFETY: `base` is a fresh allocation of `total` bytes, 16-aligned; every write below stays
    // inside it (offsets computed above) and uses properly aligned typed pointers.
    unsafe {
        // only the header area is zeroed; every record and string is written whole below
        std::ptr::write_bytes(base, 0, size_of::<Header>());
        let hdr = base as *mut Header;
        let set_ptr = base.add(off_sets) as *mut SetRec;
        let ids_ptr = base.add(off_ids) as *mut u32;
        let dest_ptr = base.add(off_dests) as *mut DestRec;
        let ip_ptr = base.add(off_ip) as *mut IpIdx;
        let addr_ptr = base.add(off_addr) as *mut AddrRec;
        let xw_ptr = base.add(off_xw) as *mut XwSlot;
        let cw_ptr = base.add(off_cw) as *mut CwEnt;
        let mut ai = 0usize;
        let mut ipv: Vec<IpIdx> = Vec::with_capacity(nip);
        let mut sp = base.add(off_str);
        let mut put = |v: Option<&[u8]>| -> ShStr {
            match v {
                None => ShStr::NULL,
                Some(b) => {
                    std::ptr::copy_nonoverlapping(b.as_ptr(), sp, b.len());
                    *sp.add(b.len()) = 0;
                    let s = ShStr { ptr: sp, len: b.len() as u32 };
                    sp = sp.add(b.len() + 1);
                    s
                }
            }
        };
        let mut di = 0usize;
        // the state carried for each destination of the set (one lookup per destination)
        let mut carried_set: Vec<Option<CarriedState>> = Vec::new();
        for (si, s) in sets.iter().enumerate() {
            let weights: Vec<i32> = s.dests.iter().map(|d| d.attrs.weight).collect();
            let wlist = crate::ds::weights::weight_table(&weights, rng);
            carried_set.clear();
            carried_set.extend(s.dests.iter().map(|d| carry(s.id, &d.uri, d.flags)));
            let rweights: Vec<i32> = s.dests.iter().map(|d| d.attrs.rweight).collect();
            let usable: Vec<bool> = s
                .dests
                .iter()
                .zip(&carried_set)
                .map(|(d, c)| c.map_or(d.flags, |c| c.flags) & (DS_INACTIVE | DS_DISABLED) == 0)
                .collect();
            let rw = crate::ds::weights::rweight_table(&rweights, &usable, rng).unwrap_or([0u32; 100]);
            let prios: Vec<i32> = s.dests.iter().map(|d| d.priority).collect();
            let pw = crate::ds::weights::pw_table(&prios, &weights, &usable, rng);
            set_ptr.add(si).write(SetRec {
                id: s.id,
                nr: s.dests.len() as u32,
                first: di as u32,
                last: AtomicU32::new(0),
                wlast: AtomicU32::new(0),
                rwlast: AtomicU32::new(0),
                wlist,
                rwlist: rw.map(AtomicU32::new),
                rrserial: s.dests.first().is_some_and(|f| f.priority > 0 && s.dests.iter().all(|d| d.priority == f.priority)),
                pwlist: pw.map(AtomicU32::new),
                pwlast: AtomicU32::new(0),
                cw_uniform: crate::ds::algs::consistent::uniform_weights(&weights),
                cw: {
                    let p = cw_ptr.add(di);
                    for (k, d) in s.dests.iter().enumerate() {
                        p.add(k).write(CwEnt {
                            seed: crate::ds::algs::consistent::dest_seed(&d.uri),
                            w: crate::ds::algs::consistent::score_weight(d.attrs.weight),
                        });
                    }
                    p
                },
                xw: [0usize, 1].map(|t| {
                    let sl = xw_ptr.add(2 * di + t * s.dests.len());
                    for k in 0..s.dests.len() {
                        sl.add(k).write(XwSlot { end: AtomicU64::new(0), idx: AtomicU32::new(0) });
                    }
                    XwHdr { slots: sl, n: AtomicU32::new(0), total: AtomicU64::new(0), ctr: AtomicU64::new(0) }
                }),
            });
            for (d, &carried) in s.dests.iter().zip(&carried_set) {
                let st = dest_strings(d);
                let (af, ip) = match d.ip {
                    Some(IpAddr::V4(v4)) => {
                        let mut ip = [0u8; 16];
                        ip[..4].copy_from_slice(&v4.octets());
                        (4u8, ip)
                    }
                    Some(IpAddr::V6(v6)) => (6u8, v6.octets()),
                    None => (0u8, [0u8; 16]),
                };
                let extra_first = ai;
                if let Some(ip) = d.ip {
                    let (af, key) = ip_key(ip);
                    ipv.push(IpIdx { af, _pad: [0; 3], set: si as u32, dest: di as u32, ip: key });
                    for (k, more) in d.more_ips.iter().enumerate() {
                        let (af, key) = ip_key(*more);
                        addr_ptr.add(ai).write(AddrRec { af, ip: key });
                        ai += 1;
                        // one index entry per distinct address of this destination
                        if *more != ip && !d.more_ips[..k].contains(more) {
                            ipv.push(IpIdx { af, _pad: [0; 3], set: si as u32, dest: di as u32, ip: key });
                        }
                    }
                }
                let a = &d.attrs;
                let lat0 = carried
                    .and_then(|c| c.lat)
                    .or_else(|| a.latency_init().map(|v| LatencyStats::init(v, 10000)))
                    .unwrap_or_default();
                dest_ptr.add(di).write(DestRec {
                    uri: put(st[0]),
                    host: put(st[1]),
                    attrs_body: put(st[2]),
                    duid: put(st[3]),
                    socket: put(st[4]),
                    sockname: put(st[5]),
                    ping_from: put(st[6]),
                    obproxy: put(st[7]),
                    ping_socket: put(st[8]),
                    iuid: carried.map(|c| c.iuid).filter(|&i| i != 0).unwrap_or((generation << 24) | (di as u64 + 1)),
                    flags: AtomicI32::new(carried.map(|c| c.flags).unwrap_or(d.flags)),
                    cfg_flags: d.flags,
                    priority: d.priority,
                    maxload: a.maxload,
                    weight: a.weight,
                    cc: a.cc,
                    ocmin: a.ocmin,
                    ocmax: a.ocmax,
                    fail_cnt: AtomicI32::new(carried.map(|c| c.fail_cnt).unwrap_or(0)),
                    dload: AtomicI32::new(carried.map(|c| c.dload).unwrap_or(0)),
                    port: d.port,
                    proto: d.proto as u8,
                    scheme: d.scheme as u8,
                    af,
                    _pad: [0; 3],
                    ip,
                    extra_addrs: if ai > extra_first { addr_ptr.add(extra_first) } else { std::ptr::null() },
                    n_extra: (ai - extra_first) as u32,
                    sock: d.sock,
                    dnstime_sec: if af != 0 { now.0 } else { 0 },
                    dnstime_usec: if af != 0 { now.1 } else { 0 },
                    lat_avg: AtomicU64::new(lat0.average.to_bits()),
                    lat_est: AtomicU64::new(lat0.estimate.to_bits()),
                    lat: std::cell::UnsafeCell::new(lat0),
                    ping_start_us: AtomicU64::new(0),
                    rweight_rt: AtomicI32::new(a.rweight),
                    oc_rate: AtomicI32::new(a.ocrate),
                    oc_seq: AtomicI32::new(0),
                    oc_time_us: AtomicU64::new(0),
                    oc_idx: AtomicU32::new(0),
                    carried_from: carried.map(|c| c.src).unwrap_or(std::ptr::null()),
                    successor: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
                    dload_copied: AtomicI32::new(0),
                    ctr: Default::default(),
                    oc_dist: {
                        // rate 0 (the common case): every slot says "use", no table to shuffle
                        let b = if a.ocrate <= 0 {
                            [u64::MAX, (1u64 << 36) - 1]
                        } else {
                            crate::ds::weights::oc_bits(&crate::ds::weights::oc_table(a.ocrate, rng))
                        };
                        [AtomicU64::new(b[0]), AtomicU64::new(b[1])]
                    },
                });
                di += 1;
            }
        }
        let mut ids: Vec<u32> = (0..nsets as u32).collect();
        ids.sort_by_key(|&i| sets.get(i as usize).map(|s| s.id).unwrap_or(0));
        std::ptr::copy_nonoverlapping(ids.as_ptr(), ids_ptr, nsets);
        ipv.sort_by_key(|a| (a.af, a.ip, a.dest));
        std::ptr::copy_nonoverlapping(ipv.as_ptr(), ip_ptr, ipv.len().min(nip));
        hdr.write(Header {
            magic: MAGIC,
            nsets: nsets as u32,
            ndests: ndests as u32,
            _pad: 0,
            total_size: total,
            generation,
            sets: set_ptr,
            ids_sorted: ids_ptr,
            dests: dest_ptr,
            ipidx: ip_ptr,
            nipidx: ipv.len().min(nip) as u32,
        });
        // the exact-weight tables of algs 41/43, from the (carried) state just written
        if let Some(snap) = Snap::from_ptr(hdr) {
            for set in snap.sets() {
                crate::ds::algs::exact::rebuild(&set);
            }
        }
        Ok(hdr)
    }
}

/// FNV-1a: a fast hash for the (set, URI) index built on every reload (no DoS exposure: the
/// keys come from the operator's own list).
#[derive(Default)]
struct Fnv(u64);
impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The destinations of the running list by (set, URI), to carry their runtime state into a
/// new list. A new list mostly repeats the old one in the same order, so the lookup first tries
/// the destination after the previous match in the same set (no hashing, sequential memory);
/// only a miss scans a small set or consults a (set, URI) map built on the first miss.
pub struct CarryIndex<'a> {
    old: Option<Snap<'a>>,
    /// the old set of the previous lookup and the position after its match there
    cursor: std::cell::Cell<Option<(SetView<'a>, usize)>>,
    map: std::cell::OnceCell<CarryMap<'a>>,
}

type CarryMap<'a> = std::collections::HashMap<(i32, &'a [u8]), (&'a DestRec, usize), std::hash::BuildHasherDefault<Fnv>>;

/// Sets up to this size are scanned on a miss instead of building the map.
const CARRY_SCAN_MAX: usize = 32;

impl<'a> CarryIndex<'a> {
    pub fn new(old: Option<Snap<'a>>) -> CarryIndex<'a> {
        CarryIndex { old, cursor: std::cell::Cell::new(None), map: std::cell::OnceCell::new() }
    }

    /// The old destination `(setid, uri)` (the first one with that URI in its set), or the
    /// one at the predicted position when it has that URI.
    fn lookup(&self, setid: i32, uri: &[u8]) -> Option<&'a DestRec> {
        let old = self.old?;
        let (set, at) = match self.cursor.get() {
            Some((v, at)) if v.rec.id == setid => (v, at),
            _ => (old.set(setid)?, 0),
        };
        if let Some(d) = set.dests.get(at).filter(|d| d.uri.bytes() == uri) {
            self.cursor.set(Some((set, at + 1)));
            return Some(d);
        }
        let pos = if set.dests.len() <= CARRY_SCAN_MAX {
            set.dests.iter().position(|d| d.uri.bytes() == uri)
        } else {
            let map = self.map.get_or_init(|| {
                let mut m = CarryMap::default();
                for v in old.sets() {
                    for (i, d) in v.dests.iter().enumerate() {
                        m.entry((v.rec.id, d.uri.bytes())).or_insert((d, i));
                    }
                }
                m
            });
            map.get(&(setid, uri)).map(|&(_, i)| i)
        };
        // a miss keeps the cursor in this set: the next destination may follow the old order
        self.cursor.set(Some((set, pos.map_or(at, |i| i + 1))));
        set.dests.get(pos?)
    }

    /// The record of `(setid, uri)` in the running list, whatever its flags.
    pub fn find(&self, setid: i32, uri: &[u8]) -> Option<&'a DestRec> {
        self.lookup(setid, uri)
    }

    /// Runtime state of `(setid, uri)` to keep; None when it is new or its configured flags
    /// changed (a changed file flag wins). `with_latency` also copies the latency statistics.
    pub fn carry(&self, setid: i32, uri: &[u8], cfg_flags: i32, with_latency: bool) -> Option<CarriedState> {
        let d = self.lookup(setid, uri)?;
        if d.cfg_flags != cfg_flags {
            return None;
        }
        Some(CarriedState {
            flags: d.flags.load(Ordering::Relaxed),
            fail_cnt: d.fail_cnt.load(Ordering::Relaxed),
            dload: d.dload.load(Ordering::Relaxed),
            // SAFETY: a racing keepalive update could tear the copy; acceptable for carried stats.
            lat: if with_latency { Some(unsafe { d.latency_stats() }) } else { None },
            iuid: d.iuid,
            src: d as *const DestRec,
        })
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::alloc::{alloc, dealloc, Layout};
    pub fn heap_alloc(n: usize) -> *mut u8 {
        // SAFETY: non-zero size with a valid alignment.
        unsafe { alloc(Layout::from_size_align(n.max(16), 16).expect("layout")) }
    }
    pub fn heap_free(p: *mut u8, n: usize) {
        // SAFETY: `p` came from `heap_alloc(n)`.
        unsafe { dealloc(p, Layout::from_size_align(n.max(16), 16).expect("layout")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::attrs::Attrs;
    use crate::ds::dest::Dest;
    use crate::ds::uri::{Proto, Scheme};

    fn dest(setid: i32, uri: &str, flags: i32, prio: i32, attrs: &str) -> Dest {
        Dest {
            setid,
            uri: uri.as_bytes().to_vec(),
            flags,
            priority: prio,
            attrs: Attrs { body: attrs.as_bytes().to_vec(), ..Default::default() },
            scheme: Scheme::Sip,
            host: b"127.0.0.1".to_vec(),
            port: 5060,
            proto: Proto::None,
            ip: Some("127.0.0.1".parse().expect("ip")),
            more_ips: vec![],
            sock: 0,
            line: 1,
            col: 1,
        }
    }

    fn sample() -> Vec<DestSet> {
        vec![
            DestSet { id: 3, dests: vec![dest(3, "sip:a", 0, 0, "x=1"), dest(3, "sip:b", 1, 0, "")] },
            DestSet { id: 1, dests: vec![dest(1, "sip:c", 0, 5, "duid=c")] },
            DestSet { id: 2, dests: vec![] },
        ]
    }

    #[test]
    fn build_and_read_back() {
        let sets = sample();
        let p = build(&sets, 7, (1, 2), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
        let snap = unsafe { Snap::from_ptr(p) }.expect("snap");
        assert_eq!(snap.nsets(), 3);
        assert_eq!(snap.header().generation, 7);
        let order: Vec<i32> = snap.sets().map(|s| s.rec.id).collect();
        assert_eq!(order, vec![3, 1, 2]);
        let s3 = snap.set(3).expect("set 3");
        assert_eq!(s3.dests.len(), 2);
        assert_eq!(s3.dests[0].uri.bytes(), b"sip:a");
        assert_eq!(s3.dests[0].attrs_body.get(), Some(&b"x=1"[..]));
        assert_eq!(s3.dests[1].attrs_body.get(), None);
        assert!(!s3.dests[1].usable());
        assert!(s3.dests[0].usable());
        assert_eq!(snap.set(1).expect("set 1").dests[0].priority, 5);
        assert_eq!(snap.set(1).expect("set 1").dests[0].ip_addr(), Some("127.0.0.1".parse().expect("ip")));
        assert!(snap.set(2).expect("set 2").dests.is_empty());
        // positional iteration
        let from1: Vec<Vec<u8>> = snap.dests_from(1).map(|(_, d)| d.uri.bytes().to_vec()).collect();
        assert_eq!(from1, vec![b"sip:b".to_vec(), b"sip:c".to_vec()]);
        assert_eq!(snap.dests_from(2).map(|(id, _)| id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(snap.dests_from(3).count(), 0);
        // address index: iteration order (set 3 first, then set 1)
        let hits: Vec<(i32, Vec<u8>)> =
            snap.by_ip("127.0.0.1".parse().expect("ip")).map(|(s, d)| (s.rec.id, d.uri.bytes().to_vec())).collect();
        assert_eq!(hits, vec![(3, b"sip:a".to_vec()), (3, b"sip:b".to_vec()), (1, b"sip:c".to_vec())]);
        assert_eq!(snap.by_ip("10.0.0.1".parse().expect("ip")).count(), 0);
        assert!(snap.set(4).is_none());
        testutil::heap_free(p as *mut u8, snap.header().total_size);
    }

    #[test]
    fn carry_keeps_runtime_state_unless_flags_changed() {
        let sets = sample();
        let p = build(&sets, 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
        let old = unsafe { Snap::from_ptr(p) }.expect("snap");
        old.set(3).expect("3").dests[0].flags.store(DS_INACTIVE | DS_PROBING, Ordering::Relaxed);
        old.set(3).expect("3").dests[0].dload.store(4, Ordering::Relaxed);
        let mut sets2 = sample();
        sets2[0].dests[1].flags = 0; // changed in the file: file wins
        let idx = CarryIndex::new(Some(old));
        let p2 = build(&sets2, 2, (0, 0), &mut |id, uri, fl| idx.carry(id, uri, fl, false), &mut testutil::heap_alloc, &mut || 7)
            .expect("build");
        let new = unsafe { Snap::from_ptr(p2) }.expect("snap");
        let d = &new.set(3).expect("3").dests;
        assert_eq!(d[0].flags.load(Ordering::Relaxed), DS_INACTIVE | DS_PROBING);
        assert_eq!(d[0].dload.load(Ordering::Relaxed), 4);
        assert_eq!(d[1].flags.load(Ordering::Relaxed), 0);
        // the internal id stays with a carried destination; a new one gets a fresh, unique id
        let o = &old.set(3).expect("3").dests;
        assert_eq!(d[0].iuid, o[0].iuid);
        assert_ne!(d[1].iuid, o[1].iuid);
        let all: std::collections::HashSet<u64> =
            old.sets().chain(new.sets()).flat_map(|s| s.dests.iter().map(|d| d.iuid)).collect();
        assert_eq!(all.len(), old.header().ndests as usize + 1);
        assert_eq!(iuid_text("dspt-65f-1a2-", 0x123, 3), "dspt-65f-1a2-321-3");
        testutil::heap_free(p as *mut u8, old.header().total_size);
        testutil::heap_free(p2 as *mut u8, new.header().total_size);
    }

    #[test]
    fn extra_addresses_are_indexed_and_read_back() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let mut a = dest(1, "sip:multi", 0, 0, "");
        a.ip = Some(ip("10.0.0.1"));
        // duplicates in an answer give one index entry
        a.more_ips = vec![ip("10.0.0.2"), ip("::1"), ip("10.0.0.2"), ip("10.0.0.1")];
        let mut b = dest(2, "sip:single", 0, 0, "");
        b.ip = Some(ip("10.0.0.2"));
        let mut c = dest(3, "sip:none", 16, 0, "");
        c.ip = None;
        let sets = vec![
            DestSet { id: 1, dests: vec![a] },
            DestSet { id: 2, dests: vec![b] },
            DestSet { id: 3, dests: vec![c] },
        ];
        let p = build(&sets, 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
        let snap = unsafe { Snap::from_ptr(p) }.expect("snap");
        let hits = |s: &str| -> Vec<(i32, Vec<u8>)> { snap.by_ip(ip(s)).map(|(s, d)| (s.rec.id, d.uri.bytes().to_vec())).collect() };
        assert_eq!(hits("10.0.0.1"), vec![(1, b"sip:multi".to_vec())]);
        assert_eq!(hits("10.0.0.2"), vec![(1, b"sip:multi".to_vec()), (2, b"sip:single".to_vec())]);
        assert_eq!(hits("::1"), vec![(1, b"sip:multi".to_vec())]);
        assert!(hits("10.0.0.3").is_empty());
        let m = &snap.set(1).expect("1").dests[0];
        assert_eq!(m.ip_addr(), Some(ip("10.0.0.1")));
        let all: Vec<IpAddr> = m.addrs().collect();
        assert_eq!(all, vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("::1"), ip("10.0.0.2"), ip("10.0.0.1")]);
        assert_eq!(snap.set(2).expect("2").dests[0].extra_addrs().len(), 0);
        assert_eq!(snap.set(3).expect("3").dests[0].addrs().count(), 0);
        testutil::heap_free(p as *mut u8, snap.header().total_size);
    }

    #[test]
    fn call_load_counted_on_a_replaced_list_is_forwarded() {
        let sets = sample();
        let p1 = build(&sets, 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
        let s1 = unsafe { Snap::from_ptr(p1) }.expect("snap");
        s1.set(3).expect("3").dests[0].dload.store(5, Ordering::Relaxed);
        // list 2 carries list 1's state; list 3 carries list 2's
        let idx1 = CarryIndex::new(Some(s1));
        let p2 = build(&sets, 2, (0, 0), &mut |id, uri, fl| idx1.carry(id, uri, fl, false), &mut testutil::heap_alloc, &mut || 7).expect("build");
        let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
        unsafe { link_successors(s2) };
        // a process still on list 1: two calls end, one starts
        let d1 = &s1.set(3).expect("3").dests[0];
        d1.dload.fetch_sub(2, Ordering::Relaxed);
        d1.dload.fetch_add(1, Ordering::Relaxed);
        let idx2 = CarryIndex::new(Some(s2));
        let p3 = build(&sets, 3, (0, 0), &mut |id, uri, fl| idx2.carry(id, uri, fl, false), &mut testutil::heap_alloc, &mut || 7).expect("build");
        let s3 = unsafe { Snap::from_ptr(p3) }.expect("snap");
        unsafe { link_successors(s3) };
        // a process on list 2: one more call ends
        s2.set(3).expect("3").dests[0].dload.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(s3.set(3).expect("3").dests[0].dload.load(Ordering::Relaxed), 5, "copied before the changes");
        // freed oldest first: 5 - 2 + 1 - 1 = 3 on the current list
        unsafe { forward_counters(s1) };
        unsafe { forward_counters(s2) };
        assert_eq!(s3.set(3).expect("3").dests[0].dload.load(Ordering::Relaxed), 3);
        // a destination that was not carried (new) has nothing forwarded, and never goes below 0
        let fresh = &s1.set(3).expect("3").dests[1];
        fresh.load_dec();
        assert_eq!(fresh.dload.load(Ordering::Relaxed), 0);
        // a carried record counts exactly: a call that started on an older list after the
        // copy and ends on the newest one takes it below 0 until the older list is freed
        let d3 = &s3.set(3).expect("3").dests[0];
        for _ in 0..4 {
            d3.load_dec();
        }
        assert_eq!((d3.dload.load(Ordering::Relaxed), d3.load()), (-1, 0));
        d3.dload.fetch_add(1, Ordering::Relaxed); // what freeing an older list forwards
        assert_eq!(d3.load(), 0);
        for (p, s) in [(p1, s1), (p2, s2), (p3, s3)] {
            testutil::heap_free(p as *mut u8, s.header().total_size);
        }
    }

}
