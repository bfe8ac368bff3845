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
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::ds::dest::Dest;
use crate::ds::latency::LatencyStats;
use crate::ds::order::DestSet;

#[path = "setedit.rs"]
pub mod setedit;

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

/// A string stored in the block's string area: its place as a byte offset from this
/// reference itself (0: not set) and its length. Self-relative, so 8 bytes instead of a
/// pointer and a length, and readers need no base address; hence neither `Clone` nor `Copy`
/// (a moved reference would point elsewhere): it is only set in place, by [`ShStr::point`].
#[repr(C)]
pub struct ShStr {
    off: i32,
    len: u32,
}

impl ShStr {
    const NULL: ShStr = ShStr { off: 0, len: 0 };
    /// The bytes, or `None` when the value is not set.
    pub fn get(&self) -> Option<&[u8]> {
        if self.off == 0 {
            None
        } else {
            // SAFETY: off/len were written by `point` and designate bytes of the same
            // immutable block, which outlives every reader (see `rcu`).
            Some(unsafe { std::slice::from_raw_parts((self as *const ShStr as *const u8).offset(self.off as isize), self.len as usize) })
        }
    }
    /// The bytes, empty when not set. Without a branch (the request path reads several per
    /// call): an unset reference is `{0, 0}`, an empty slice at the reference itself.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a set reference designates `len` bytes of the same immutable block (see
        // `get`); an unset one has offset 0 and length 0: no byte is read, and the pointer
        // (this reference) is valid and non-null.
        unsafe { std::slice::from_raw_parts((self as *const ShStr as *const u8).offset(self.off as isize), self.len as usize) }
    }
    /// Where the string is (None: not set).
    fn raw(&self) -> StrRef {
        self.get().map(|b| (b.as_ptr(), b.len() as u32))
    }
    /// Points this reference, in its final place, at `s` (a string of the same block, less
    /// than 2 GiB away: blocks are smaller, see `MAX_BLOCK`), or at nothing.
    fn point(&mut self, s: StrRef) {
        *self = match s {
            None => ShStr::NULL,
            Some((p, len)) => ShStr { off: (p as isize - self as *const ShStr as isize) as i32, len },
        };
    }
}

/// A string written in a block's string area (see [`StrOut`]), before a record refers to it.
type StrRef = Option<(*const u8, u32)>;

/// Blocks stay below this size: self-relative references are 32-bit.
const MAX_BLOCK: usize = i32::MAX as usize;

#[repr(C)]
pub struct Header {
    magic: u32,
    pub nsets: u32,
    pub ndests: u32,
    _pad: u32,
    /// Size of the header block itself (the sets live in their own shared blocks, see
    /// [`SetBlk`]).
    pub total_size: usize,
    /// Load generation (1, 2, ...).
    pub generation: u64,
    /// The set blocks in iteration order (shared with other versions of the list).
    sets: *const *mut SetBlk,
    /// `firsts[i]`: position (over the whole list) of the first destination of set `i`;
    /// `firsts[nsets]` = `ndests`.
    firsts: *const u32,
    ids_sorted: *const u32,
    /// The set ids in iteration order (lookups without touching the set blocks).
    ids: *const i32,
    /// Number of sets whose attrs may log a note when parsed again.
    pub nnotes: u32,
    /// The address index for `ds_is_from_list`, in two parts. `base`: the index of a full
    /// build (or of a later merge), shared by the versions derived from it, whose entries
    /// of the sets in `dead` (sorted ids: sets edited since) are ignored; `ip4`/`ip6`: the
    /// *delta*, the entries of those sets that still exist, in this header. Entries are sorted
    /// by (address, set id, index in the set): one per distinct address of a destination
    /// (`ds_dns_match_all` stores several). An edit copies the delta and the dead ids, not
    /// the base, until they outgrow a fraction of it (see `derive`).
    ip4: *const Ip4Ent,
    nip4: u32,
    nip6: u32,
    ip6: *const Ip6Ent,
    base: *mut IdxBlk,
    dead: *const i32,
    ndead: u32,
    /// Generation of the last edit that restarted the cursors of every set (and with
    /// `reset_fail` their failure counters): a shared set whose block is older is reset when
    /// it is first read through this version (see [`Snap::view_at`]), not by the edit.
    reset_gen: u64,
    reset_fail: bool,
    /// Which set blocks freeing this version frees (set by the writer when it publishes the
    /// next version): `DROP_ALL` (no newer version shares them: the current list, or one a
    /// full rebuild replaced) or `DROP_ONE` (only `drop_blk`, the block of the set the next
    /// version edited; null: none). Lists are freed oldest first, so a block is freed with the
    /// last version that holds it, without a reference count to touch on every edit.
    drop_mode: AtomicU8,
    drop_blk: AtomicPtr<SetBlk>,
    /// With `DROP_KEPT` (a reload took some of this version's blocks as they are, or this
    /// version is a reload that could not be published): the generation of that reload. A
    /// block is freed unless its `reused_by` is at least this generation.
    drop_gen: AtomicU64,
}

const DROP_ALL: u8 = 0;
const DROP_ONE: u8 = 1;
const DROP_KEPT: u8 = 2;

/// A base address index (see `Header::base`), inside the block of the header that built it
/// (`mem`), which is freed when the last version that uses the index is freed (`refs`).
#[repr(C)]
struct IdxBlk {
    refs: AtomicU32,
    n4: u32,
    n6: u32,
    ip4: *const Ip4Ent,
    ip6: *const Ip6Ent,
    mem: *mut u8,
}

/// The delta (and dead ids) may grow to this many entries, or to this fraction of the base,
/// before an edit merges them into a new base (unit tests: early, to test the merge).
const DELTA_MIN: usize = if cfg!(test) { 6 } else { 4096 };
const DELTA_DIV: usize = 4;

trait IdxEnt: Copy + Ord {
    type Key: Copy + Ord;
    fn key(&self) -> Self::Key;
    fn set(&self) -> i32;
    fn local(&self) -> u32;
}
impl IdxEnt for Ip4Ent {
    type Key = u32;
    fn key(&self) -> u32 {
        self.ip
    }
    fn set(&self) -> i32 {
        self.set
    }
    fn local(&self) -> u32 {
        self.local
    }
}
impl IdxEnt for Ip6Ent {
    type Key = [u8; 16];
    fn key(&self) -> [u8; 16] {
        self.ip
    }
    fn set(&self) -> i32 {
        self.set
    }
    fn local(&self) -> u32 {
        self.local
    }
}

/// The entries of `idx` with key `k`.
#[inline]
fn key_range<E: IdxEnt>(idx: &[E], k: E::Key) -> &[E] {
    let lo = idx.partition_point(|e| e.key() < k);
    let rest = idx.get(lo..).unwrap_or(&[]);
    match rest.first() {
        // no entry with that key (the common case): no second search
        Some(e) if e.key() == k => rest.get(..rest.partition_point(|e| e.key() <= k)).unwrap_or(&[]),
        _ => &[],
    }
}

/// One set of a list in its own shared block, shared by every version of the list that
/// did not change it: `[SetBlk][DestRec; nr][XwSlot; 2 nr][CwEnt; nr][AddrRec; extra][strings]`.
/// Freed with the last version that holds it (see `Header::drop_mode`).
#[repr(C)]
pub struct SetBlk {
    /// The generation whose edits' resets this set has seen (see `Header::reset_gen`).
    fresh: AtomicU64,
    /// The newest reload that took this block as it is (0: none), see `Header::drop_gen`.
    reused_by: AtomicU64,
    /// Some destination's attrs may log a note when parsed again (out-of-range weights).
    maybe_notes: bool,
    nip4: u32,
    nip6: u32,
    size: usize,
    pub rec: SetRec,
}

/// IPv4 index entry: address (as a big-endian number), set id, index in the set. Sorted by
/// set id, not position: every edit re-balances the set tree (the iteration order changes),
/// the ids do not, so the entries of untouched sets stay valid and in order.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Ip4Ent {
    ip: u32,
    set: i32,
    local: u32,
}

/// IPv6 index entry.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Ip6Ent {
    ip: [u8; 16],
    set: i32,
    local: u32,
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

/// One destination set; its destinations follow it in its block.
#[repr(C)]
pub struct SetRec {
    pub id: i32,
    pub nr: u32,
    dests: *const DestRec,
    /// Round-robin cursor (`last` in the C module).
    pub last: AtomicU32,
    pub wlast: AtomicU32,
    pub rwlast: AtomicU32,
    /// Alg 15 cursor (`pwlast`), always in 0..100. (The cursors and the exact-weight
    /// headers come first: an edit resets them on every shared set, in one or two cache lines.)
    pub pwlast: AtomicU32,
    /// Exact-weight tables of algs 41 (`weight`) and 43 (`rweight`): see `ds::algs::exact`.
    pub xw: [XwHdr; 2],
    /// Alg 9 table (destination indexes), fixed at load.
    pub wlist: [u32; 100],
    /// Alg 11 table, rebuilt when a destination with `rweight` changes usability.
    pub rwlist: [AtomicU32; 100],
    /// Alg 14 (6.1): every destination has the same priority, and it is > 0.
    pub rrserial: bool,
    /// Alg 15 (Kamailio master) table: lowest priority first, then weight
    /// (`weights::pw_table`); rebuilt at load and by `select::pw_rebuild`.
    pub pwlist: [AtomicU32; 100],
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

/// One destination: the configured values plus its shared runtime state. (Fields grouped by
/// alignment: no padding inside.)
#[repr(C)]
pub struct DestRec {
    /// Internal unique id (Kamailio 6.1 `IUID`): assigned when the destination first enters a
    /// list (`(generation << 24) | (index + 1)`, unique for the module's lifetime) and kept
    /// while it stays; rendered by `iuid_text`.
    pub iuid: u64,
    /// Opaque sending socket handle (a `socket_info*` in the module), 0 = none.
    pub sock: usize,
    /// Latency average / estimate (ms, f64 bits) used by alg 13; from the `latency` attr
    /// until keepalive statistics exist.
    pub lat_avg: AtomicU64,
    pub lat_est: AtomicU64,
    /// Full latency statistics; written only under the module's latency lock.
    pub lat: std::cell::UnsafeCell<LatencyStats>,
    /// When the last keepalive was sent (µs since the epoch).
    pub ping_start_us: AtomicU64,
    /// Overload control (alg 64, Kamailio 6.0): validity end of the rate (µs since the epoch);
    /// the 100-slot table as bits (bit i set = slot i says "use"); see also `oc_rate`.
    pub oc_time_us: AtomicU64,
    pub oc_dist: [AtomicU64; 2],
    /// The record of the previous list this one carried its state from (null: new). Only the
    /// writer that built this block reads it, right after the build (see `link_successors`).
    carried_from: *const DestRec,
    /// Set when a newer list carried this record's state: the record there, and the call load
    /// copied into it. Calls that end on this record after the copy (a process still reading
    /// the old list) are forwarded to the successor when this block is freed
    /// (`forward_counters`), so the call load never drifts across reloads.
    successor: std::sync::atomic::AtomicPtr<DestRec>,
    /// Counters of issue 12 (selections, replies, keepalives), carried across reloads.
    pub ctr: crate::ds::counters::DestCounters,
    pub uri: ShStr,
    pub host: ShStr,
    pub attrs_body: ShStr,
    pub duid: ShStr,
    pub socket: ShStr,
    pub sockname: ShStr,
    pub ping_from: ShStr,
    pub obproxy: ShStr,
    pub ping_socket: ShStr,
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
    dload_copied: AtomicI32,
    /// Relative weight in use (alg 11): `rweight`, or what congestion control computed.
    pub rweight_rt: AtomicI32,
    /// Overload control (alg 64): rate, sequence, table cursor.
    pub oc_rate: AtomicI32,
    pub oc_seq: AtomicI32,
    pub oc_idx: AtomicU32,
    /// Further resolved addresses (`ds_dns_match_all`; the first one is `ip`): byte offset
    /// from this field (0: none) and count.
    extra_off: i32,
    n_extra: u32,
    /// When the address was resolved (0: no address or not shown).
    pub dnstime_sec: u32,
    pub dnstime_usec: u32,
    pub ip: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub scheme: u8,
    /// 0: no address, 4: IPv4, 6: IPv6.
    pub af: u8,
    /// The configured `rweight` and `ocrate` attrs (both 0..=100): an edit copies the record
    /// without parsing its attrs again (`rweight_rt` and `oc_rate` change at run time).
    rweight_cfg: u8,
    ocrate_cfg: u8,
    _pad: u8,
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
        if self.extra_off == 0 || self.n_extra == 0 {
            return &[];
        }
        // SAFETY: written by `write_dest`: `n_extra` records inside the same immutable block,
        // `extra_off` bytes from the field.
        unsafe {
            let p = (&self.extra_off as *const i32 as *const u8).offset(self.extra_off as isize) as *const AddrRec;
            std::slice::from_raw_parts(p, self.n_extra as usize)
        }
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

/// The destinations of one address in iteration order (see `Snap::by_ip`).
struct IpHits<'a> {
    small: [(u32, u32); 16],
    n: usize,
    big: Vec<(u32, u32)>,
    at: usize,
    snap: Snap<'a>,
}

impl<'a> Iterator for IpHits<'a> {
    type Item = (SetView<'a>, &'a DestRec);
    fn next(&mut self) -> Option<Self::Item> {
        while self.at < self.n {
            let k = self.at;
            self.at += 1;
            let e = if self.big.is_empty() { self.small.get(k) } else { self.big.get(k) };
            let Some(&(pos, local)) = e else { continue };
            if let Some(v) = self.snap.view_at(pos as usize) {
                if let Some(d) = v.dests.get(local as usize) {
                    return Some((v, d));
                }
            }
        }
        None
    }
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
    fn blks(&self) -> &'a [*mut SetBlk] {
        if self.h.sets.is_null() {
            return &[];
        }
        // SAFETY: `sets` points to `nsets` pointers to live set blocks (held by this header).
        unsafe { std::slice::from_raw_parts(self.h.sets, self.h.nsets as usize) }
    }
    fn firsts(&self) -> &'a [u32] {
        if self.h.firsts.is_null() {
            return &[];
        }
        // SAFETY: `firsts` points to `nsets + 1` values inside the header block.
        unsafe { std::slice::from_raw_parts(self.h.firsts, self.h.nsets as usize + 1) }
    }
    /// Number of destinations of the set at iteration position `i` (without reading its block).
    pub fn set_len(&self, i: usize) -> usize {
        let f = self.firsts();
        f.get(i + 1).zip(f.get(i)).map_or(0, |(e, s)| (e - s) as usize)
    }
    /// The set block at iteration position `i`.
    pub fn blk(&self, i: usize) -> Option<&'a SetBlk> {
        // SAFETY: set blocks outlive every header that points to them (refcounted).
        self.blks().get(i).and_then(|&b| unsafe { b.as_ref() })
    }
    #[inline]
    fn view_at(&self, i: usize) -> Option<SetView<'a>> {
        let b = self.blk(i)?;
        if b.fresh.load(Ordering::Relaxed) < self.h.reset_gen {
            b.catch_up(self.h.reset_gen, self.h.reset_fail);
        }
        Some(b.view())
    }
    /// Sets in iteration order (the C module's AVL post-order).
    pub fn sets(&self) -> impl Iterator<Item = SetView<'a>> + 'a {
        let s = *self;
        (0..self.nsets()).filter_map(move |i| s.view_at(i))
    }
    /// Destinations in iteration order starting at position `start` (0-based over the whole
    /// list), with their set id; O(log sets) to find the start.
    pub fn dests_from(&self, start: usize) -> impl Iterator<Item = (i32, &'a DestRec)> + 'a {
        let f = self.firsts();
        let n = self.nsets();
        let si = f.get(1..).unwrap_or(&[]).partition_point(|&e| (e as usize) <= start);
        let s = *self;
        (si..n).filter_map(move |i| s.view_at(i).map(|v| (i, v))).flat_map(move |(i, v)| {
            let first = f.get(i).copied().unwrap_or(0) as usize;
            let from = start.saturating_sub(first);
            v.dests.get(from..).unwrap_or(&[]).iter().map(move |d| (v.rec.id, d))
        })
    }

    /// Destinations whose address is `ip`, in iteration order: (set, destination).
    /// O(log N + log delta) plus the hits.
    pub fn by_ip(&self, ip: IpAddr) -> impl Iterator<Item = (SetView<'a>, &'a DestRec)> + 'a {
        // the hits by (set position, index in the set): on the stack up to 16 of them
        let mut hits = IpHits { small: [(0, 0); 16], n: 0, big: Vec::new(), at: 0, snap: *self };
        match ip {
            IpAddr::V4(v4) => self.ip_hits(self.base4(), self.ip4(), u32::from_be_bytes(v4.octets()), &mut hits),
            IpAddr::V6(v6) => self.ip_hits(self.base6(), self.ip6(), v6.octets(), &mut hits),
        }
        if hits.big.is_empty() {
            if let Some(s) = hits.small.get_mut(..hits.n) {
                s.sort_unstable();
            }
        } else {
            hits.big.sort_unstable();
            hits.n = hits.big.len();
        }
        hits
    }
    /// Collects the hits of key `k` from the base (but the dead sets) and from the delta.
    #[inline]
    fn ip_hits<E: IdxEnt>(&self, base: &[E], delta: &[E], k: E::Key, hits: &mut IpHits<'a>) {
        let in_base = key_range(base, k);
        let in_delta = if delta.is_empty() { &[][..] } else { key_range(delta, k) };
        if in_base.is_empty() && in_delta.is_empty() {
            return;
        }
        let dead = self.dead();
        let live = |e: &&E| dead.is_empty() || dead.binary_search(&e.set()).is_err();
        for e in in_base.iter().filter(live).chain(in_delta) {
            let Some(p) = self.set_pos(e.set()) else { continue };
            let h = (p as u32, e.local());
            if !hits.big.is_empty() {
                hits.big.push(h);
            } else if let Some(slot) = hits.small.get_mut(hits.n) {
                *slot = h;
                hits.n += 1;
            } else {
                hits.big.extend_from_slice(&hits.small);
                hits.big.push(h);
            }
        }
    }
    /// The delta of the address index (see `Header::base`).
    fn ip4(&self) -> &'a [Ip4Ent] {
        if self.h.ip4.is_null() {
            return &[];
        }
        // SAFETY: `ip4` points to `nip4` initialised entries inside the header block.
        unsafe { std::slice::from_raw_parts(self.h.ip4, self.h.nip4 as usize) }
    }
    fn ip6(&self) -> &'a [Ip6Ent] {
        if self.h.ip6.is_null() {
            return &[];
        }
        // SAFETY: `ip6` points to `nip6` initialised entries inside the header block.
        unsafe { std::slice::from_raw_parts(self.h.ip6, self.h.nip6 as usize) }
    }
    fn base(&self) -> Option<&'a IdxBlk> {
        // SAFETY: the base index outlives every header that uses it (refcounted).
        unsafe { self.h.base.as_ref() }
    }
    fn base4(&self) -> &'a [Ip4Ent] {
        match self.base() {
            // SAFETY: `ip4` points to `n4` initialised entries inside the index block.
            Some(b) if !b.ip4.is_null() => unsafe { std::slice::from_raw_parts(b.ip4, b.n4 as usize) },
            _ => &[],
        }
    }
    fn base6(&self) -> &'a [Ip6Ent] {
        match self.base() {
            // SAFETY: `ip6` points to `n6` initialised entries inside the index block.
            Some(b) if !b.ip6.is_null() => unsafe { std::slice::from_raw_parts(b.ip6, b.n6 as usize) },
            _ => &[],
        }
    }
    /// Sorted ids of the sets whose base index entries are stale.
    fn dead(&self) -> &'a [i32] {
        if self.h.dead.is_null() || self.h.ndead == 0 {
            return &[];
        }
        // SAFETY: `dead` points to `ndead` values inside the header block.
        unsafe { std::slice::from_raw_parts(self.h.dead, self.h.ndead as usize) }
    }

    /// The destination with internal id `iuid` and its set id: O(log sets) when it still
    /// sits at the position it was created with, else a scan.
    pub fn dest_by_iuid(&self, iuid: u64) -> Option<(i32, &'a DestRec)> {
        let i = ((iuid & 0xff_ffff) as usize).wrapping_sub(1);
        if let Some((id, d)) = self.dests_from(i).next() {
            if d.iuid == iuid {
                return Some((id, d));
            }
        }
        self.sets().find_map(|v| v.dests.iter().find(|d| d.iuid == iuid).map(|d| (v.rec.id, d)))
    }

    /// Iteration position of set `id` (binary search over the sorted id index).
    pub fn set_pos(&self, id: i32) -> Option<usize> {
        if self.h.ids_sorted.is_null() {
            return None;
        }
        // SAFETY: `ids_sorted` points to `nsets` u32 indexes inside the block.
        let idx = unsafe { std::slice::from_raw_parts(self.h.ids_sorted, self.h.nsets as usize) };
        let ids = self.ids();
        let pos = idx.binary_search_by(|&i| ids.get(i as usize).copied().unwrap_or(i32::MAX).cmp(&id)).ok()?;
        idx.get(pos).map(|&i| i as usize)
    }

    /// The set ids in iteration order.
    pub fn ids(&self) -> &'a [i32] {
        if self.h.ids.is_null() {
            return &[];
        }
        // SAFETY: `ids` points to `nsets` values inside the header block.
        unsafe { std::slice::from_raw_parts(self.h.ids, self.h.nsets as usize) }
    }

    /// The sorted id index (positions).
    fn ids_sorted(&self) -> &'a [u32] {
        if self.h.ids_sorted.is_null() {
            return &[];
        }
        // SAFETY: `ids_sorted` points to `nsets` values inside the header block.
        unsafe { std::slice::from_raw_parts(self.h.ids_sorted, self.h.nsets as usize) }
    }

    /// Look a set up by id (binary search over the sorted id index).
    #[inline]
    pub fn set(&self, id: i32) -> Option<SetView<'a>> {
        self.view_at(self.set_pos(id)?)
    }
}

impl SetBlk {
    pub fn view(&self) -> SetView<'_> {
        let dests = if self.rec.dests.is_null() || self.rec.nr == 0 {
            &[][..]
        } else {
            // SAFETY: `dests` points to `nr` initialised records inside this block.
            unsafe { std::slice::from_raw_parts(self.rec.dests, self.rec.nr as usize) }
        };
        SetView { rec: &self.rec, dests }
    }
    /// Whether parsing the attrs of a destination of this set again may log a note.
    pub fn maybe_notes(&self) -> bool {
        self.maybe_notes
    }
    /// The reset of the edits up to generation `gen` that this shared set has not seen yet
    /// (cursors, and with `fail_cnt` the failure counters): done once, by the first process
    /// that reads the set through a version that requires it. A version older than the
    /// set's `fresh` generation never resets it again.
    #[cold]
    #[inline(never)]
    fn catch_up(&self, gen: u64, fail_cnt: bool) {
        let mut f = self.fresh.load(Ordering::Relaxed);
        while f < gen {
            match self.fresh.compare_exchange_weak(f, gen, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    reset_shared_set(&self.view(), fail_cnt);
                    return;
                }
                Err(now) => f = now,
            }
        }
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
        // SAFETY: guaranteed by the caller.
        unsafe { forward_set_counters(&set) };
    }
}

/// `forward_counters` for the records of one set block (freed when no list holds it).
///
/// # Safety
/// As for `forward_counters`.
pub unsafe fn forward_set_counters(set: &SetView<'_>) {
    {
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
    /// A set named in a derived list's order is not in the previous list.
    Inconsistent,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::TooLarge => write!(f, "destination list too large"),
            BuildError::NoMemory(n) => write!(f, "out of shared memory ({n} bytes needed)"),
            BuildError::Inconsistent => write!(f, "inconsistent list edit"),
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
        a.duid(),
        a.socket(),
        a.sockname(),
        a.ping_from(),
        a.obproxy(),
        a.ping_socket(),
    ]
}

/// `carry(setid, uri, cfg_flags)`: the runtime state a destination keeps from the running list.
pub type CarryFn<'a> = dyn FnMut(i32, &[u8], i32) -> Option<CarriedState> + 'a;

/// Builds a snapshot block for `sets` (already in iteration order, destinations in array order).
/// `carry(setid, uri, cfg_flags)` returns runtime state to keep for a destination that exists in
/// the previous list. `alloc(size)` returns memory aligned to 16 bytes, or null.
/// `now` is (sec, usec) stored as DNS time. On a failure, the set blocks already built are
/// leaked: use [`build_with`] to free them.
pub fn build(
    sets: &[DestSet],
    generation: u64,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    rng: &mut dyn FnMut() -> u32,
) -> Result<*mut Header, BuildError> {
    build_with(sets, generation, now, carry, alloc, &mut |_| {}, rng)
}

/// [`build`] with the free function for the blocks of a failed build.
pub fn build_with(
    sets: &[DestSet],
    generation: u64,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    free: &mut dyn FnMut(*mut u8),
    rng: &mut dyn FnMut() -> u32,
) -> Result<*mut Header, BuildError> {
    let srcs: Vec<SetSrc<'_>> = sets.iter().map(SetSrc::of).collect();
    build_sharing(&srcs, None, &mut |_, _| None, generation, now, carry, alloc, free, rng)
}

/// [`build_with`] for a reload that shares the blocks of unchanged sets with the running
/// list `old`: `shared(id, len)` gives the block of `old` that set `id` (an empty
/// placeholder, see `order::order_sets`) takes as it is (one more reference, its cursors and
/// keepalive start times restarted, see [`reset_reloaded_set`]); every other set is built.
/// The address index takes the entries of the shared sets from `old`'s index (no sort).
#[allow(clippy::too_many_arguments)]
pub fn build_sharing<'o>(
    sets: &[SetSrc<'_>],
    old: Option<Snap<'o>>,
    shared: &mut dyn FnMut(i32, usize) -> Option<&'o SetBlk>,
    generation: u64,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    free: &mut dyn FnMut(*mut u8),
    rng: &mut dyn FnMut() -> u32,
) -> Result<*mut Header, BuildError> {
    let nsets = sets.len();
    let ndests: usize = sets.iter().map(|s| s.len()).sum();
    if nsets > u32::MAX as usize / 2 || ndests > u32::MAX as usize / 2 {
        return Err(BuildError::TooLarge);
    }
    let mut blks: Vec<*mut SetBlk> = Vec::with_capacity(nsets);
    // per set: built here (freed on a failure) or shared
    let mut fresh: Vec<bool> = Vec::with_capacity(nsets);
    let mut shared_ids: Vec<i32> = Vec::new();
    let mut di = 0usize;
    let fail = |blks: &[*mut SetBlk], fresh: &[bool], free: &mut dyn FnMut(*mut u8)| {
        blks.iter().zip(fresh).filter(|(_, &f)| f).for_each(|(&b, _)| free(b as *mut u8));
    };
    for s in sets {
        if let Some(b) = shared(s.id, s.len()).filter(|_| old.is_some()) {
            di += b.rec.nr as usize;
            blks.push(b as *const SetBlk as *mut SetBlk);
            fresh.push(false);
            shared_ids.push(s.id);
            continue;
        }
        match build_set_src(s, generation, di, now, carry, alloc, rng) {
            Ok(b) => {
                blks.push(b);
                fresh.push(true);
            }
            Err(e) => {
                fail(&blks, &fresh, free);
                return Err(e);
            }
        }
        di += s.len();
    }
    if di > u32::MAX as usize / 2 {
        fail(&blks, &fresh, free);
        return Err(BuildError::TooLarge);
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (&b, _) in blks.iter().zip(&fresh).filter(|(_, &f)| f) {
        // SAFETY: just built.
        let v = unsafe { &*b }.view();
        set_ip_entries(&v, &mut v4, &mut v6);
    }
    v4.sort_unstable();
    v6.sort_unstable();
    // the shared sets' entries: the old index without the entries of the other sets
    shared_ids.sort_unstable();
    // (the old index is a base without its dead sets plus a delta: one sorted sequence here)
    let (o4, o6): (Vec<Ip4Ent>, Vec<Ip6Ent>) = match old {
        Some(o) if !shared_ids.is_empty() => (rebased(o.base4(), o.dead(), o.ip4()), rebased(o.base6(), o.dead(), o.ip6())),
        _ => (Vec::new(), Vec::new()),
    };
    let (o4, o6) = (&o4[..], &o6[..]);
    let all_old = old.is_some_and(|o| o.nsets() == shared_ids.len());
    let keep4 = |e: &Ip4Ent| all_old || shared_ids.binary_search(&e.set).is_ok();
    let keep6 = |e: &Ip6Ent| all_old || shared_ids.binary_search(&e.set).is_ok();
    let n4 = v4.len() + if all_old { o4.len() } else { o4.iter().filter(|e| keep4(e)).count() };
    let n6 = v6.len() + if all_old { o6.len() } else { o6.iter().filter(|e| keep6(e)).count() };
    // SAFETY: the blocks were just built or are held by `old` (live, the caller's writer lock).
    match unsafe { write_header(&blks, generation, n4, n6, None, alloc) } {
        Some((h, p4, p6)) => {
            // SAFETY: `write_header` reserved room for exactly these entries.
            unsafe {
                merge_sorted(o4, keep4, &v4, std::slice::from_raw_parts_mut(p4, n4));
                merge_sorted(o6, keep6, &v6, std::slice::from_raw_parts_mut(p6, n6));
            }
            for (&b, _) in blks.iter().zip(&fresh).filter(|(_, &f)| !f) {
                // SAFETY: a block of `old`, live.
                let blk = unsafe { &*b };
                blk.reused_by.store(generation, Ordering::Release);
                reset_reloaded_set(&blk.view(), rng);
            }
            Ok(h)
        }
        None => {
            fail(&blks, &fresh, free);
            Err(BuildError::NoMemory(0))
        }
    }
}

/// Writes into `dst` (exactly its size) the entries of `old` that `keep` selects merged with
/// `add` (both sorted).
fn merge_sorted<E: Copy + Ord>(old: &[E], keep: impl Fn(&E) -> bool, add: &[E], dst: &mut [E]) {
    if add.is_empty() && old.len() == dst.len() {
        dst.copy_from_slice(old);
        return;
    }
    let mut out = dst.iter_mut();
    merge_kept(old, keep, add, |e| {
        if let Some(d) = out.next() {
            *d = e;
        }
    });
}

/// The entries of `old` that `keep` selects merged with `add` (both sorted; on a tie the one
/// of `old` first), in order, to `out`.
fn merge_kept<E: Copy + Ord>(old: &[E], keep: impl Fn(&E) -> bool, add: &[E], mut out: impl FnMut(E)) {
    let mut a = add.iter().copied().peekable();
    for &e in old.iter().filter(|e| keep(e)) {
        while let Some(x) = a.next_if(|x| *x < e) {
            out(x);
        }
        out(e);
    }
    a.for_each(out);
}

/// What a reload resets on a set it shares with the running list, as building it again
/// would: the selection cursors and the keepalive start times (a reply that crosses a
/// reload gives no latency sample), and the tables a build derives from the kept state (the
/// alg-11 relative-weight table, the alg-15 priority-weight table, the exact-weight tables
/// of algs 41/43: a destination marked inactive before the reload has no slots after it).
/// The state a reload keeps (`ds_reload_keep_state` 1) is left as it is.
pub fn reset_reloaded_set(v: &SetView<'_>, rng: &mut dyn FnMut() -> u32) {
    reset_shared_set(v, false);
    crate::ds::select::rw_rebuild(v, rng, true);
    crate::ds::select::pw_rebuild(v, rng);
    crate::ds::algs::exact::rebuild(v);
    for d in v.dests {
        if d.ping_start_us.load(Ordering::Relaxed) != 0 {
            d.ping_start_us.store(0, Ordering::Relaxed);
        }
        if d.oc_idx.load(Ordering::Relaxed) != 0 {
            d.oc_idx.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether parsing these attrs again may log a note (an out-of-range `weight` or `rweight`,
/// see `attrs::parse_attrs`); conservative.
fn weight_note_possible(a: &crate::ds::attrs::Attrs) -> bool {
    weight_note_in(&a.body, a.weight, a.rweight)
}

/// [`weight_note_possible`] of an attrs body and its parsed `weight` and `rweight`.
fn weight_note_in(b: &[u8], weight: i32, rweight: i32) -> bool {
    // both set: neither key can have been out of range
    if weight != 0 && rweight != 0 {
        return false;
    }
    // at each `w` (every attrs body of a list goes through this)
    crate::ds::attrs::any_ci_at(b, b'w', |i| {
        if !b.get(i..i + 6).is_some_and(|w| w.eq_ignore_ascii_case(b"weight")) {
            return false;
        }
        let r = i > 0 && b.get(i - 1).is_some_and(|c| c.eq_ignore_ascii_case(&b'r'));
        if r {
            rweight == 0
        } else {
            weight == 0
        }
    })
}

/// The first version of [`weight_note_in`] (the reference of its test).
#[cfg(test)]
fn weight_note_in_ref(b: &[u8], weight: i32, rweight: i32) -> bool {
    (0..b.len().saturating_sub(5)).any(|i| {
        // cheap first-byte test before the 6-byte comparison (runs over every attrs body)
        if b.get(i).is_none_or(|c| (c | 0x20) != b'w') {
            return false;
        }
        let Some(w) = b.get(i..i + 6) else { return false };
        if !w.eq_ignore_ascii_case(b"weight") {
            return false;
        }
        let r = i > 0 && b.get(i - 1).is_some_and(|c| c.eq_ignore_ascii_case(&b'r'));
        if r {
            rweight == 0
        } else {
            weight == 0
        }
    })
}

/// Buffers `build_set` reuses from set to set.
#[derive(Default)]
struct Scratch {
    carried: Vec<Option<CarriedState>>,
    weights: Vec<i32>,
    rweights: Vec<i32>,
    prios: Vec<i32>,
    usable: Vec<bool>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

/// The address index entries of one set at iteration position `pos` (unsorted).
fn set_ip_entries(v: &SetView<'_>, v4: &mut Vec<Ip4Ent>, v6: &mut Vec<Ip6Ent>) {
    let pos = v.rec.id;
    set_ip_each(v, &mut |ip, local| match ip {
        IpAddr::V4(a) => v4.push(Ip4Ent { ip: u32::from_be_bytes(a.octets()), set: pos, local }),
        IpAddr::V6(a) => v6.push(Ip6Ent { ip: a.octets(), set: pos, local }),
    });
}

/// Calls `f(address, index in the set)` for every address index entry of a set.
fn set_ip_each(v: &SetView<'_>, f: &mut dyn FnMut(IpAddr, u32)) {
    for (local, d) in v.dests.iter().enumerate() {
        rec_ip_each(d, &mut |ip| f(ip, local as u32));
    }
}

/// Calls `f(address)` for every address index entry of one destination.
fn rec_ip_each(d: &DestRec, f: &mut dyn FnMut(IpAddr)) {
    let Some(first) = d.ip_addr() else { return };
    f(first);
    let extra = d.extra_addrs();
    for (k, more) in extra.iter().enumerate() {
        let Some(ip) = more.ip_addr() else { continue };
        // one index entry per distinct address of this destination
        if ip != first && !extra[..k].iter().any(|m| m.ip_addr() == Some(ip)) {
            f(ip);
        }
    }
}

/// The number of IPv4 and IPv6 address index entries of one destination.
fn rec_ip_counts(d: &DestRec) -> (u32, u32) {
    let mut n = (0u32, 0u32);
    rec_ip_each(d, &mut |ip| match ip {
        IpAddr::V4(_) => n.0 += 1,
        IpAddr::V6(_) => n.1 += 1,
    });
    n
}

/// What a derived header takes from the previous one instead of reading every set block.
struct Known<'a> {
    ids_sorted: &'a [u32],
    ids: &'a [i32],
    nrs: &'a [u32],
    nnotes: u32,
}

/// Allocates and fills a header over `blks` (iteration order) with room for `n4`/`n6`
/// address entries in a new base index, which the caller writes (sorted) at the returned
/// pointers. Takes no reference on the blocks.
///
/// # Safety
/// Every block is live.
unsafe fn write_header(
    blks: &[*mut SetBlk],
    generation: u64,
    n4: usize,
    n6: usize,
    known: Option<Known<'_>>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
) -> Option<(*mut Header, *mut Ip4Ent, *mut Ip6Ent)> {
    // SAFETY: as for this function.
    let o = unsafe { write_header_ex(blks, generation, known, Room { new_base: Some((n4, n6)), ..Room::default() }, alloc) }?;
    Some((o.h, o.b4, o.b6))
}

/// What a header block holds besides the set arrays: `ndead` dead set ids, `d4`/`d6` delta
/// entries, and a new base index of `new_base` entries (None: `old_base`, whose reference
/// the caller took).
#[derive(Default)]
struct Room {
    ndead: usize,
    d4: usize,
    d6: usize,
    new_base: Option<(usize, usize)>,
    old_base: Option<std::ptr::NonNull<IdxBlk>>,
}

/// Where the caller writes what `Room` reserved.
struct HdrOut {
    h: *mut Header,
    sets: *mut *mut SetBlk,
    firsts: *mut u32,
    ids_sorted: *mut u32,
    idv: *mut i32,
    dead: *mut i32,
    d4: *mut Ip4Ent,
    d6: *mut Ip6Ent,
    b4: *mut Ip4Ent,
    b6: *mut Ip6Ent,
}

/// [`write_header`] with a delta index and dead ids, and a new or a shared base index.
///
/// # Safety
/// Every block is live; `room.old_base` is live.
unsafe fn write_header_ex(
    blks: &[*mut SetBlk],
    generation: u64,
    known: Option<Known<'_>>,
    room: Room,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
) -> Option<HdrOut> {
    let nsets = blks.len();
    let ids_sorted = known.as_ref().map(|k| k.ids_sorted);
    let o = alloc_header(nsets, generation, room, alloc)?;
    // SAFETY: `alloc_header` reserved `nsets` (+1 for `firsts`) entries at these pointers;
    // the blocks are live (caller).
    unsafe {
        std::ptr::copy_nonoverlapping(blks.as_ptr(), o.sets, nsets);
        let (firsts, idv) = (o.firsts, o.idv);
        let mut di = 0u32;
        let mut nnotes = 0u32;
        match &known {
            Some(k) if k.nrs.len() == nsets && k.ids.len() == nsets => {
                for (i, &nr) in k.nrs.iter().enumerate() {
                    firsts.add(i).write(di);
                    di += nr;
                }
                std::ptr::copy_nonoverlapping(k.ids.as_ptr(), idv, nsets);
                nnotes = k.nnotes;
            }
            _ => {
                for (i, &b) in blks.iter().enumerate() {
                    firsts.add(i).write(di);
                    di += (*b).rec.nr;
                    idv.add(i).write((*b).rec.id);
                    nnotes += (*b).maybe_notes as u32;
                }
            }
        }
        firsts.add(nsets).write(di);
        let ids_ptr = o.ids_sorted;
        match ids_sorted {
            Some(ids) if ids.len() == nsets => std::ptr::copy_nonoverlapping(ids.as_ptr(), ids_ptr, nsets),
            _ => {
                let mut ids: Vec<(i32, u32)> = blks.iter().enumerate().map(|(i, &b)| ((*b).rec.id, i as u32)).collect();
                ids.sort_unstable();
                for (k, (_, i)) in ids.iter().enumerate() {
                    ids_ptr.add(k).write(*i);
                }
            }
        }
        (*o.h).ndests = di;
        (*o.h).nnotes = nnotes;
    }
    Some(o)
}

/// Allocates a header for `nsets` sets with what `room` reserves and writes its fields; the
/// caller fills the set arrays (`sets`, `firsts`: `nsets + 1` values, `ids_sorted`, `idv`)
/// and `ndests`/`nnotes` before anyone reads it.
fn alloc_header(nsets: usize, generation: u64, room: Room, alloc: &mut dyn FnMut(usize) -> *mut u8) -> Option<HdrOut> {
    let (n4, n6) = room.new_base.unwrap_or((0, 0));
    let off_sets = align_up(size_of::<Header>(), 8);
    let off_firsts = align_up(off_sets + nsets * size_of::<*mut SetBlk>(), 8);
    let off_ids = align_up(off_firsts + (nsets + 1) * size_of::<u32>(), 8);
    let off_idv = align_up(off_ids + nsets * size_of::<u32>(), 8);
    let off_dead = align_up(off_idv + nsets * size_of::<i32>(), 8);
    let off_d4 = align_up(off_dead + room.ndead * size_of::<i32>(), align_of::<Ip4Ent>().max(8));
    let off_d6 = align_up(off_d4 + room.d4 * size_of::<Ip4Ent>(), align_of::<Ip6Ent>().max(8));
    let off_idx = align_up(off_d6 + room.d6 * size_of::<Ip6Ent>(), align_of::<IdxBlk>().max(8));
    let off_ip4 = align_up(off_idx + size_of::<IdxBlk>(), align_of::<Ip4Ent>().max(8));
    let off_ip6 = align_up(off_ip4 + n4 * size_of::<Ip4Ent>(), align_of::<Ip6Ent>().max(8));
    let total = if room.new_base.is_some() { align_up(off_ip6 + n6 * size_of::<Ip6Ent>(), 16) } else { align_up(off_idx, 16) };
    let base = alloc(total);
    if base.is_null() {
        return None;
    }
    // SAFETY: fresh allocation of `total` bytes; every write stays inside it.
    unsafe {
        let sets_ptr = base.add(off_sets) as *mut *mut SetBlk;
        let firsts = base.add(off_firsts) as *mut u32;
        let idv = base.add(off_idv) as *mut i32;
        let ids_ptr = base.add(off_ids) as *mut u32;
        let idx = match (room.new_base, room.old_base) {
            (Some(_), _) => {
                let b = base.add(off_idx) as *mut IdxBlk;
                b.write(IdxBlk {
                    refs: AtomicU32::new(1),
                    n4: n4 as u32,
                    n6: n6 as u32,
                    ip4: base.add(off_ip4) as *const Ip4Ent,
                    ip6: base.add(off_ip6) as *const Ip6Ent,
                    mem: base,
                });
                b
            }
            (None, Some(b)) => b.as_ptr(),
            (None, None) => std::ptr::null_mut(),
        };
        let hdr = base as *mut Header;
        hdr.write(Header {
            magic: MAGIC,
            nsets: nsets as u32,
            ndests: 0,
            _pad: 0,
            total_size: total,
            generation,
            sets: sets_ptr,
            firsts,
            ids_sorted: ids_ptr,
            ids: idv,
            nnotes: 0,
            ip4: base.add(off_d4) as *const Ip4Ent,
            nip4: room.d4 as u32,
            nip6: room.d6 as u32,
            ip6: base.add(off_d6) as *const Ip6Ent,
            base: idx,
            dead: base.add(off_dead) as *const i32,
            ndead: room.ndead as u32,
            reset_gen: generation,
            reset_fail: false,
            drop_mode: AtomicU8::new(DROP_ALL),
            drop_blk: AtomicPtr::new(std::ptr::null_mut()),
            drop_gen: AtomicU64::new(0),
        });
        Some(HdrOut {
            h: hdr,
            sets: sets_ptr,
            firsts,
            ids_sorted: ids_ptr,
            idv,
            dead: base.add(off_dead) as *mut i32,
            d4: base.add(off_d4) as *mut Ip4Ent,
            d6: base.add(off_d6) as *mut Ip6Ent,
            b4: base.add(off_ip4) as *mut Ip4Ent,
            b6: base.add(off_ip6) as *mut Ip6Ent,
        })
    }
}

/// Builds the block of one set whose first destination sits at position `first_di` of the
/// list (only used for new internal ids).
pub fn build_set(
    s: &DestSet,
    generation: u64,
    first_di: usize,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    rng: &mut dyn FnMut() -> u32,
) -> Result<*mut SetBlk, BuildError> {
    build_set_src(&SetSrc::of(s), generation, first_di, now, carry, alloc, rng)
}

/// The destinations of one set to build, in array order: a [`DestSet`], or positions in a
/// list of destinations (a reload orders the sets without moving the destinations).
#[derive(Clone, Copy)]
pub struct SetSrc<'d> {
    pub id: i32,
    all: &'d [Dest],
    idx: Option<&'d [u32]>,
}

impl<'d> SetSrc<'d> {
    /// The destinations of `s`.
    pub fn of(s: &'d DestSet) -> SetSrc<'d> {
        SetSrc { id: s.id, all: &s.dests, idx: None }
    }
    /// Destinations `all[idx[0]]`, `all[idx[1]]`, ... (a shared set: no destinations).
    pub fn indexed(id: i32, all: &'d [Dest], idx: &'d [u32]) -> SetSrc<'d> {
        SetSrc { id, all, idx: Some(idx) }
    }
    pub fn len(&self) -> usize {
        self.idx.map_or(self.all.len(), |i| i.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> SrcIter<'d> {
        SrcIter { all: self.all, idx: self.idx.map(|i| i.iter()), k: 0 }
    }
}

/// Iterator over a [`SetSrc`].
#[derive(Clone)]
pub struct SrcIter<'d> {
    all: &'d [Dest],
    idx: Option<std::slice::Iter<'d, u32>>,
    k: usize,
}

impl<'d> Iterator for SrcIter<'d> {
    type Item = &'d Dest;
    fn next(&mut self) -> Option<&'d Dest> {
        match &mut self.idx {
            Some(it) => it.next().and_then(|&i| self.all.get(i as usize)),
            None => {
                let d = self.all.get(self.k);
                self.k += 1;
                d
            }
        }
    }
}

/// [`build_set`] of a [`SetSrc`].
/// The parts of a freshly allocated set block (see [`SetBlk`] for the layout).
pub(crate) struct SetParts {
    pub total: usize,
    pub blk: *mut SetBlk,
    pub dest_ptr: *mut DestRec,
    pub addr_ptr: *mut AddrRec,
    pub xw_ptr: *mut XwSlot,
    pub cw_ptr: *mut CwEnt,
    pub strs: *mut u8,
}

/// What a set block of `n` bytes allocates: `n` rounded to 16, and a block of 1 MiB or more
/// (a set of thousands of destinations) to a multiple of 64 KiB, so that the block an edit
/// frees fits the next edit of a set of about the same size: without it every `dispatcher.add`
/// to a large set needs a block a few hundred bytes larger than any freed one and takes fresh
/// shared memory (first-touch page faults: ~20 % of an add at 300,000 destinations in 100
/// sets), and the freed blocks stay as holes. At most 64 KiB per block of 1 MiB or more
/// (< 6 %).
fn block_size(n: usize) -> usize {
    if n >= 1 << 20 {
        align_up(n, 1 << 16)
    } else {
        align_up(n, 16)
    }
}

/// Lays out and allocates a set block of `ndests` records (with their two exact-weight slots,
/// algs 41/43, and hashing entry each), `nextra` further addresses and `strbytes` of strings:
/// the one layout of full builds and of edits by copy.
pub(crate) fn alloc_set_block(ndests: usize, nextra: usize, strbytes: usize, alloc: &mut dyn FnMut(usize) -> *mut u8) -> Result<SetParts, BuildError> {
    let off_dests = align_up(size_of::<SetBlk>(), align_of::<DestRec>().max(8));
    let off_xw = align_up(off_dests + ndests * size_of::<DestRec>(), align_of::<XwSlot>().max(8));
    let off_cw = align_up(off_xw + 2 * ndests * size_of::<XwSlot>(), align_of::<CwEnt>().max(8));
    let off_addr = align_up(off_cw + ndests * size_of::<CwEnt>(), align_of::<AddrRec>());
    let off_str = off_addr + nextra * size_of::<AddrRec>();
    let total = block_size(off_str + strbytes);
    if total > MAX_BLOCK {
        return Err(BuildError::TooLarge);
    }
    let base = alloc(total);
    if base.is_null() {
        return Err(BuildError::NoMemory(total));
    }
    // SAFETY: every offset was computed above to lie within the `total` bytes just allocated.
    unsafe {
        Ok(SetParts {
            total,
            blk: base as *mut SetBlk,
            dest_ptr: base.add(off_dests) as *mut DestRec,
            addr_ptr: base.add(off_addr) as *mut AddrRec,
            xw_ptr: base.add(off_xw) as *mut XwSlot,
            cw_ptr: base.add(off_cw) as *mut CwEnt,
            strs: base.add(off_str),
        })
    }
}

pub fn build_set_src(
    s: &SetSrc<'_>,
    generation: u64,
    first_di: usize,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    rng: &mut dyn FnMut() -> u32,
) -> Result<*mut SetBlk, BuildError> {
    let ndests = s.len();
    let mut strbytes = 0usize;
    for d in s.iter() {
        for v in dest_strings(d).iter().flatten() {
            if v.len() > u32::MAX as usize {
                return Err(BuildError::TooLarge);
            }
            strbytes += v.len() + 1;
        }
    }
    let nextra: usize = s.iter().filter(|d| d.ip.is_some()).map(|d| d.more_ips.len()).sum();
    let SetParts { total, blk, dest_ptr, addr_ptr, xw_ptr, cw_ptr, strs } = alloc_set_block(ndests, nextra, strbytes, alloc)?;
    // SAFETY: the parts are inside one fresh allocation of `total` bytes, 16-aligned; every
    // write below stays inside its part and uses properly aligned typed pointers.
    unsafe {
        let mut ai = 0usize;
        let mut strs = StrOut(strs);
        // the state carried for each destination of the set (one lookup per destination)
        // per-set arrays in buffers reused from set to set (no allocation per set)
        let mut sc = SCRATCH.with(|c| c.take()).unwrap_or_default();
        sc.carried.clear();
        sc.carried.extend(s.iter().map(|d| carry(s.id, &d.uri, d.flags)));
        let carried_set = &sc.carried;
        let maybe_notes = s.iter().any(|d| weight_note_possible(&d.attrs));
        for (k, d) in s.iter().enumerate() {
            cw_ptr.add(k).write(CwEnt {
                seed: crate::ds::algs::consistent::dest_seed(&d.uri),
                w: crate::ds::algs::consistent::score_weight(d.attrs.weight),
            });
        }
        sc.weights.clear();
        sc.weights.extend(s.iter().map(|d| d.attrs.weight));
        sc.rweights.clear();
        sc.rweights.extend(s.iter().map(|d| d.attrs.rweight));
        sc.usable.clear();
        sc.usable.extend(s.iter().zip(carried_set).map(|(d, c)| c.map_or(d.flags, |c| c.flags) & (DS_INACTIVE | DS_DISABLED) == 0));
        sc.prios.clear();
        sc.prios.extend(s.iter().map(|d| d.priority));
        // the set's shuffles draw from a generator seeded once per set from `rng` (inlined,
        // no division: ~300 draws per set with weights)
        let rng = &mut crate::ds::weights::SetRng::new((rng() as u64) << 32 | rng() as u64);
        let rec = set_rec(s.id, dest_ptr, ndests, cw_ptr, xw_ptr, &sc.weights, &sc.rweights, &sc.usable, &sc.prios, rng);
        blk.write(SetBlk { fresh: AtomicU64::new(generation), reused_by: AtomicU64::new(0), maybe_notes, nip4: 0, nip6: 0, size: total, rec });
        for (di, (d, &carried)) in s.iter().zip(carried_set.iter()).enumerate() {
            let extra_first = ai;
            if d.ip.is_some() {
                for more in d.more_ips.iter() {
                    let (af, key) = ip_key(*more);
                    addr_ptr.add(ai).write(AddrRec { af, ip: key });
                    ai += 1;
                }
            }
            let lat0 = carried
                .and_then(|c| c.lat)
                .or_else(|| d.attrs.latency_init().map(|v| LatencyStats::init(v, 10000)))
                .unwrap_or_default();
            let extra = if ai > extra_first { addr_ptr.add(extra_first) as *const AddrRec } else { std::ptr::null() };
            let new_iuid = (generation << 24) | ((first_di + di) as u64 + 1);
            write_dest(dest_ptr.add(di), &DestCfg::of(d), &mut strs, carried, new_iuid, now, lat0, (extra, (ai - extra_first) as u32), rng);
        }
        finish_set(blk, None);
        // keep the buffers unless a big set made them big (the main process forks after this)
        if sc.carried.capacity() <= 4096 {
            SCRATCH.with(|c| c.set(Some(sc)));
        }
        Ok(blk)
    }
}

/// The string area of a block being written.
struct StrOut(*mut u8);

impl StrOut {
    /// Appends the `n` bytes at `p` as they are; returns where they start.
    ///
    /// # Safety
    /// The area has room for them; `p` is valid for reading `n` bytes.
    unsafe fn put_span(&mut self, p: *const u8, n: usize) -> *mut u8 {
        let at = self.0;
        // SAFETY: guaranteed by the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(p, at, n);
            self.0 = at.add(n);
        }
        at
    }
    /// Appends `v` (NUL-terminated) and returns its reference.
    ///
    /// # Safety
    /// The area has room for `v` and its NUL.
    unsafe fn put(&mut self, v: Option<&[u8]>) -> StrRef {
        let b = v?;
        // SAFETY: guaranteed by the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), self.0, b.len());
            *self.0.add(b.len()) = 0;
            let s = (self.0 as *const u8, b.len() as u32);
            self.0 = self.0.add(b.len() + 1);
            Some(s)
        }
    }
}

/// The strings of a record to write (in `DestRec` order; an edit copies a record of an older
/// block with its strings instead, `setedit::copy_rec`).
enum Strs<'s> {
    List([Option<&'s [u8]>; 9]),
}

/// The string references of a record, in field order.
fn rec_refs(d: &DestRec) -> [&ShStr; 9] {
    [&d.uri, &d.host, &d.attrs_body, &d.duid, &d.socket, &d.sockname, &d.ping_from, &d.obproxy, &d.ping_socket]
}

/// The span of a record's block that holds all its strings (with their NULs): `write_dest`
/// writes them one after the other, so it is exactly as long as they are.
fn rec_span(d: &DestRec) -> Option<(*const u8, usize)> {
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    for r in rec_refs(d) {
        if let Some((p, n)) = r.raw() {
            lo = lo.min(p as usize);
            hi = hi.max(p as usize + n as usize + 1);
        }
    }
    (hi > lo).then_some((lo as *const u8, hi - lo))
}

/// The configured values a destination record is written from: a parsed [`Dest`], or the
/// record of an older block that an edit copies (see `setedit`).
struct DestCfg<'s> {
    strs: Strs<'s>,
    cfg_flags: i32,
    priority: i32,
    maxload: i32,
    weight: i32,
    rweight: i32,
    cc: i32,
    ocmin: i32,
    ocmax: i32,
    ocrate: i32,
    port: u16,
    proto: u8,
    scheme: u8,
    af: u8,
    ip: [u8; 16],
    sock: usize,
}

impl<'s> DestCfg<'s> {
    fn of(d: &'s Dest) -> DestCfg<'s> {
        let (af, ip) = match d.ip {
            Some(IpAddr::V4(v4)) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&v4.octets());
                (4u8, ip)
            }
            Some(IpAddr::V6(v6)) => (6u8, v6.octets()),
            None => (0u8, [0u8; 16]),
        };
        let a = &d.attrs;
        DestCfg {
            strs: Strs::List(dest_strings(d)),
            cfg_flags: d.flags,
            priority: d.priority,
            maxload: a.maxload,
            weight: a.weight,
            rweight: a.rweight,
            cc: a.cc,
            ocmin: a.ocmin,
            ocmax: a.ocmax,
            ocrate: a.ocrate,
            port: d.port,
            proto: d.proto as u8,
            scheme: d.scheme as u8,
            af,
            ip,
            sock: d.sock,
        }
    }
}

/// Writes the record of one destination at `p`: configured values from `c`, runtime state
/// from `carried` (or the configured start values), `new_iuid` unless an id is carried, the
/// overload-control table drawn from `rng` when `ocrate` > 0.
///
/// # Safety
/// `p` is valid for writing a `DestRec`; `strs` has room for `c.strs`; `extra` points to
/// `extra.1` address records inside the same block (or is null).
#[allow(clippy::too_many_arguments)]
unsafe fn write_dest(
    p: *mut DestRec,
    c: &DestCfg<'_>,
    strs: &mut StrOut,
    carried: Option<CarriedState>,
    new_iuid: u64,
    now: (u64, u64),
    lat0: LatencyStats,
    extra: (*const AddrRec, u32),
    rng: &mut crate::ds::weights::SetRng,
) {
    let st = match &c.strs {
        Strs::List(l) => {
            // (a loop: `array::map` is not always inlined, ~180 instructions per record then)
            let mut out: [StrRef; 9] = [None; 9];
            for (o, v) in out.iter_mut().zip(l.iter()) {
                // SAFETY: guaranteed by the caller.
                *o = unsafe { strs.put(*v) };
            }
            out
        }
    };
    // rate 0 (the common case): every slot says "use", no table to shuffle
    let oc = if c.ocrate <= 0 {
        [u64::MAX, (1u64 << 36) - 1]
    } else {
        crate::ds::weights::oc_bits(&crate::ds::weights::oc_table(c.ocrate, rng))
    };
    // SAFETY: guaranteed by the caller.
    unsafe {
        p.write(DestRec {
            uri: ShStr::NULL,
            host: ShStr::NULL,
            attrs_body: ShStr::NULL,
            duid: ShStr::NULL,
            socket: ShStr::NULL,
            sockname: ShStr::NULL,
            ping_from: ShStr::NULL,
            obproxy: ShStr::NULL,
            ping_socket: ShStr::NULL,
            iuid: carried.map(|c| c.iuid).filter(|&i| i != 0).unwrap_or(new_iuid),
            flags: AtomicI32::new(carried.map(|c| c.flags).unwrap_or(c.cfg_flags)),
            cfg_flags: c.cfg_flags,
            priority: c.priority,
            maxload: c.maxload,
            weight: c.weight,
            cc: c.cc,
            ocmin: c.ocmin,
            ocmax: c.ocmax,
            fail_cnt: AtomicI32::new(carried.map(|c| c.fail_cnt).unwrap_or(0)),
            dload: AtomicI32::new(carried.map(|c| c.dload).unwrap_or(0)),
            port: c.port,
            proto: c.proto,
            scheme: c.scheme,
            af: c.af,
            rweight_cfg: c.rweight.clamp(0, 255) as u8,
            ocrate_cfg: c.ocrate.clamp(0, 255) as u8,
            _pad: 0,
            ip: c.ip,
            extra_off: 0,
            n_extra: extra.1,
            sock: c.sock,
            dnstime_sec: if c.af != 0 { now.0 as u32 } else { 0 },
            dnstime_usec: if c.af != 0 { now.1 as u32 } else { 0 },
            lat_avg: AtomicU64::new(lat0.average.to_bits()),
            lat_est: AtomicU64::new(lat0.estimate.to_bits()),
            lat: std::cell::UnsafeCell::new(lat0),
            ping_start_us: AtomicU64::new(0),
            rweight_rt: AtomicI32::new(c.rweight),
            oc_rate: AtomicI32::new(c.ocrate),
            oc_seq: AtomicI32::new(0),
            oc_time_us: AtomicU64::new(0),
            oc_idx: AtomicU32::new(0),
            carried_from: carried.map(|c| c.src).unwrap_or(std::ptr::null()),
            successor: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            dload_copied: AtomicI32::new(0),
            ctr: Default::default(),
            oc_dist: [AtomicU64::new(oc[0]), AtomicU64::new(oc[1])],
        });
        // the block-relative references, in place
        let d = &mut *p;
        for (f, v) in [
            &mut d.uri,
            &mut d.host,
            &mut d.attrs_body,
            &mut d.duid,
            &mut d.socket,
            &mut d.sockname,
            &mut d.ping_from,
            &mut d.obproxy,
            &mut d.ping_socket,
        ]
        .into_iter()
        .zip(st)
        {
            f.point(v);
        }
        if !extra.0.is_null() && extra.1 > 0 {
            d.extra_off = (extra.0 as isize - &d.extra_off as *const i32 as isize) as i32;
        }
    }
}

/// The set record over `n` destination records at `dests`, with the alg 9/11/15 tables
/// drawn from `rng` (in that order) from the destinations' weights, rweights, usability and
/// priorities, the consistent-hashing entries at `cw` (written by the caller), and empty
/// exact-weight tables of `n` slots each at `xw` (filled by `finish_set`).
///
/// # Safety
/// `xw` is valid for writing `2 n` slots; `cw` holds `n` entries.
#[allow(clippy::too_many_arguments)]
unsafe fn set_rec(
    id: i32,
    dests: *const DestRec,
    n: usize,
    cw: *const CwEnt,
    xw: *mut XwSlot,
    weights: &[i32],
    rweights: &[i32],
    usable: &[bool],
    prios: &[i32],
    rng: &mut crate::ds::weights::SetRng,
) -> SetRec {
    let wlist = crate::ds::weights::weight_table(weights, rng);
    let rw = crate::ds::weights::rweight_table(rweights, usable, rng).unwrap_or([0u32; 100]);
    let pw = crate::ds::weights::pw_table(prios, weights, usable, rng);
    SetRec {
        id,
        nr: n as u32,
        dests,
        last: AtomicU32::new(0),
        wlast: AtomicU32::new(0),
        rwlast: AtomicU32::new(0),
        wlist,
        rwlist: rw.map(AtomicU32::new),
        rrserial: prios.first().is_some_and(|&f| f > 0 && prios.iter().all(|&p| p == f)),
        pwlist: pw.map(AtomicU32::new),
        pwlast: AtomicU32::new(0),
        cw_uniform: crate::ds::algs::consistent::uniform_weights(weights),
        cw,
        xw: [0usize, 1].map(|t| {
            // SAFETY: guaranteed by the caller.
            let sl = unsafe { xw.add(t * n) };
            for k in 0..n {
                // SAFETY: as above.
                unsafe { sl.add(k).write(XwSlot { end: AtomicU64::new(0), idx: AtomicU32::new(0) }) };
            }
            XwHdr { slots: sl, n: AtomicU32::new(0), total: AtomicU64::new(0), ctr: AtomicU64::new(0) }
        }),
    }
}

/// Completes a set block whose records are written: its address counts (given, or counted
/// here) and the
/// exact-weight tables of algs 41/43 (from the carried state just written).
///
/// # Safety
/// `blk` is a block whose set record and destination records are initialised.
unsafe fn finish_set(blk: *mut SetBlk, counts: Option<(u32, u32)>) {
    // SAFETY: guaranteed by the caller.
    let v = unsafe { (*blk).view() };
    let (n4, n6) = counts.unwrap_or_else(|| {
        v.dests.iter().map(rec_ip_counts).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
    });
    // SAFETY: as above (the writer owns the block until it is published).
    unsafe {
        (*blk).nip4 = n4;
        (*blk).nip6 = n6;
    }
    crate::ds::algs::exact::rebuild(&v);
}

/// Frees a list: the header, and every set block no other list holds any more (after
/// `on_last` saw it: forward what was counted on it). Returns the number of set blocks freed.
///
/// # Safety
/// `p` came from [`build_with`] / [`derive`] with blocks from the same allocator as `free`;
/// no process reads it any more; lists are freed oldest first.
pub unsafe fn release(p: *mut Header, on_last: &mut dyn FnMut(SetView<'_>), free: &mut dyn FnMut(*mut u8)) -> usize {
    // SAFETY: guaranteed by the caller.
    let Some(snap) = (unsafe { Snap::from_ptr(p) }) else { return 0 };
    let mut n = 0;
    let mut drop = |b: *mut SetBlk| {
        // SAFETY: a block this version is the last holder of (see `Header::drop_mode`).
        if let Some(blk) = unsafe { b.as_ref() } {
            on_last(blk.view());
            free(b as *mut u8);
            n += 1;
        }
    };
    match snap.h.drop_mode.load(Ordering::Acquire) {
        DROP_ALL => snap.blks().iter().for_each(|&b| drop(b)),
        DROP_KEPT => {
            let g = snap.h.drop_gen.load(Ordering::Acquire);
            for &b in snap.blks() {
                // SAFETY: a block of this version: live until this version frees it.
                if unsafe { b.as_ref() }.is_some_and(|blk| blk.reused_by.load(Ordering::Acquire) < g) {
                    drop(b);
                }
            }
        }
        _ => drop(snap.h.drop_blk.load(Ordering::Acquire)),
    }
    // the header's memory holds the base index it built: freed with the last user of that
    let mut own = false;
    if let Some(b) = snap.base() {
        own = b.mem == p as *mut u8;
        if b.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            free(b.mem);
            if own {
                return n;
            }
        }
    }
    if !own {
        free(p as *mut u8);
    }
    n
}

/// Hands the ownership of the set blocks over from `old` to `new`, a reload that took some of
/// `old`'s blocks as they are ([`build_sharing`] marked them with `new`'s generation), about to
/// be published: freeing `old` then frees only the blocks `new` did not take. With `undo` (it
/// could not be published) `old` owns all its blocks again, `new` frees only what it built,
/// and the marks of the taken blocks are set back to `old`'s generation (they are `old`'s; an
/// older version, if any, must still not free them). Call under the writer lock.
///
/// # Safety
/// Both are live; `new` came from `build_sharing` over `old`.
pub unsafe fn hand_over_reload(old: Snap<'_>, new: Snap<'_>, undo: bool) {
    let g = new.h.generation;
    if undo {
        old.h.drop_mode.store(DROP_ALL, Ordering::Release);
        new.h.drop_gen.store(g, Ordering::Release);
        new.h.drop_mode.store(DROP_KEPT, Ordering::Release);
    } else {
        old.h.drop_gen.store(g, Ordering::Release);
        old.h.drop_mode.store(DROP_KEPT, Ordering::Release);
    }
}

/// After an undone [`hand_over_reload`] and the release of the version that was not
/// published: the blocks it had taken from `old` carry `old`'s generation again.
pub fn unmark_reload(old: Snap<'_>, failed_gen: u64) {
    for &b in old.blks() {
        // SAFETY: a block of `old`, live.
        if let Some(blk) = unsafe { b.as_ref() } {
            if blk.reused_by.load(Ordering::Acquire) == failed_gen {
                blk.reused_by.store(old.h.generation, Ordering::Release);
            }
        }
    }
}

/// Hands the ownership of the set blocks over from `old` to `new`, a version [`derive`]d from
/// it that is about to be published (`undo`: back, when it could not be published): from
/// then on freeing `old` frees only the block of the edited set `tid` it had, and `new` is
/// the last holder of all of its blocks. Call under the writer lock, before publishing.
///
/// # Safety
/// Both are live; `new` was derived from `old` with the edited set `tid`.
pub unsafe fn hand_over(old: Snap<'_>, new: Snap<'_>, tid: Option<i32>, undo: bool) {
    let ob = tid.and_then(|id| old.set_pos(id)).and_then(|p| old.blks().get(p).copied()).unwrap_or(std::ptr::null_mut());
    let nb = tid.and_then(|id| new.set_pos(id)).and_then(|p| new.blks().get(p).copied()).unwrap_or(std::ptr::null_mut());
    let (ob, nb) = if ob == nb { (std::ptr::null_mut(), std::ptr::null_mut()) } else { (ob, nb) };
    if undo {
        old.h.drop_blk.store(std::ptr::null_mut(), Ordering::Release);
        old.h.drop_mode.store(DROP_ALL, Ordering::Release);
        new.h.drop_blk.store(nb, Ordering::Release);
        new.h.drop_mode.store(DROP_ONE, Ordering::Release);
    } else {
        old.h.drop_blk.store(ob, Ordering::Release);
        old.h.drop_mode.store(DROP_ONE, Ordering::Release);
        new.h.drop_blk.store(std::ptr::null_mut(), Ordering::Release);
        new.h.drop_mode.store(DROP_ALL, Ordering::Release);
    }
}

#[path = "snapshot_edit.rs"]
mod edit;
pub use edit::{derive_planned, plan_edit, EditPlan};

#[path = "snapshot_stream.rs"]
mod stream;
pub use stream::build_streamed;

/// A new version of `old` whose sets come in `order` (set ids in iteration order): set
/// `touched.0` takes the block `touched.1` (built by [`build_set`]; None: the set is gone),
/// every other set shares its block with `old` (no block of `old` is read or written). O(sets)
/// pointer and index work plus the address index; `reset`: restart the selection cursors of
/// the shared sets (and with `Some(true)` their failure counters), see [`reset_shared_set`]:
/// lazily, when a set is first read through the new version. The new version frees only the
/// new block until [`hand_over`] makes it the owner of its blocks. On an error nothing
/// changed (the new block is not consumed).
///
/// # Safety
/// `old` is live (the writer holds it); `touched.1` is a block no list holds yet.
pub unsafe fn derive(
    old: Snap<'_>,
    order: &[i32],
    touched: Option<(i32, Option<*mut SetBlk>)>,
    generation: u64,
    reset: Option<bool>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
) -> Result<*mut Header, BuildError> {
    // SAFETY: as for this function.
    unsafe { derive_ordered(old, order, None, touched, generation, reset, alloc) }
}

/// [`derive`] with the new order's index by id (`SetOrder::by_id`, not sorted again).
///
/// # Safety
/// As for [`derive`].
pub unsafe fn derive_ordered(
    old: Snap<'_>,
    order: &[i32],
    by_id_pos: Option<&[u32]>,
    touched: Option<(i32, Option<*mut SetBlk>)>,
    generation: u64,
    reset: Option<bool>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
) -> Result<*mut Header, BuildError> {
    let new_blk = touched.and_then(|t| t.1);
    let plan = plan_edit(old, order, by_id_pos, touched.map(|t| t.0), new_blk.is_some())?;
    // SAFETY: as for this function.
    unsafe { derive_planned(old, &plan, order, by_id_pos, new_blk, generation, reset, alloc) }
}

/// The lazy reset and the ownership of a header just derived from `old` (see `derive`).
fn finish_derived(h: *mut Header, old: Snap<'_>, generation: u64, reset: Option<bool>, new_blk: Option<*mut SetBlk>) {
    // SAFETY: just written by `write_header_ex`, not visible to anyone else yet.
    unsafe {
        (*h).reset_gen = if reset.is_some() { generation } else { old.h.reset_gen };
        (*h).reset_fail = reset.unwrap_or(old.h.reset_fail);
        (*h).drop_mode = AtomicU8::new(DROP_ONE);
        (*h).drop_blk = AtomicPtr::new(new_blk.unwrap_or(std::ptr::null_mut()));
    }
}

/// A new base index: the entries of `base` but those of the `dead` sets, with `delta`.
fn rebased<E: IdxEnt>(base: &[E], dead: &[i32], delta: &[E]) -> Vec<E> {
    let mut out = Vec::new();
    edit::rebased_into(&mut out, base, dead, delta);
    out
}

/// What an edit resets on the sets it shares with the previous list, as rebuilding the
/// whole list (the C module's add/remove) does: the selection cursors start again, and with
/// `fail_cnt` the failure counters too. (The set being edited is built new.)
pub fn reset_shared_set(v: &SetView<'_>, fail_cnt: bool) {
    // stores only where needed: a line that is read stays clean (cheaper than dirtying it)
    let zero32 = |a: &AtomicU32| {
        if a.load(Ordering::Relaxed) != 0 {
            a.store(0, Ordering::Relaxed);
        }
    };
    let r = v.rec;
    zero32(&r.last);
    zero32(&r.wlast);
    zero32(&r.rwlast);
    zero32(&r.pwlast);
    for x in &r.xw {
        if x.ctr.load(Ordering::Relaxed) != 0 {
            x.ctr.store(0, Ordering::Relaxed);
        }
    }
    if fail_cnt {
        for d in v.dests {
            if d.fail_cnt.load(Ordering::Relaxed) != 0 {
                d.fail_cnt.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// `link_successors` for one set (an edit carries state into the one set it builds).
///
/// # Safety
/// As for `link_successors`.
pub unsafe fn link_set_successors(set: &SetView<'_>, undo: bool) {
    for d in set.dests {
        // SAFETY: guaranteed by the caller: the source record is still allocated.
        if let Some(src) = unsafe { d.carried_from.as_ref() } {
            if undo {
                src.successor.store(std::ptr::null_mut(), Ordering::Release);
            } else {
                src.dload_copied.store(d.dload.load(Ordering::Relaxed), Ordering::Relaxed);
                src.successor.store(d as *const DestRec as *mut DestRec, Ordering::Release);
            }
        }
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
    /// Only this set is looked up (an edit of one set): the map covers it alone.
    only: Option<i32>,
    /// Misses scanned so far instead of building the map (an edit: the added or removed
    /// destination makes one or two).
    scans: std::cell::Cell<u32>,
}

type CarryMap<'a> = std::collections::HashMap<(i32, &'a [u8]), (&'a DestRec, usize), std::hash::BuildHasherDefault<Fnv>>;

/// Sets up to this size are scanned on a miss instead of building the map.
const CARRY_SCAN_MAX: usize = 32;
/// Misses an index of one set (an edit) scans before it builds the map.
const EDIT_SCANS: u32 = 4;

impl<'a> CarryIndex<'a> {
    pub fn new(old: Option<Snap<'a>>) -> CarryIndex<'a> {
        CarryIndex { old, cursor: std::cell::Cell::new(None), map: std::cell::OnceCell::new(), only: None, scans: std::cell::Cell::new(0) }
    }

    /// An index for carrying the state of set `setid` only (a miss never maps other sets).
    pub fn for_set(old: Option<Snap<'a>>, setid: i32) -> CarryIndex<'a> {
        CarryIndex { only: Some(setid), ..CarryIndex::new(old) }
    }

    /// The old destination `(setid, uri)` (the first one with that URI in its set), or the
    /// one at the predicted position when it has that URI.
    fn lookup(&self, setid: i32, uri: &[u8]) -> Option<&'a DestRec> {
        let old = self.old?;
        let (set, at) = match self.cursor.get() {
            Some((v, at)) if v.rec.id == setid => (v, at),
            _ => (old.set(setid)?, 0),
        };
        // an edit looks up the records it copies with their own URI: the same bytes, no
        // comparison needed
        let same = |d: &DestRec| {
            let b = d.uri.bytes();
            (std::ptr::eq(b.as_ptr(), uri.as_ptr()) && b.len() == uri.len()) || b == uri
        };
        if let Some(d) = set.dests.get(at).filter(|d| same(d)) {
            self.cursor.set(Some((set, at + 1)));
            return Some(d);
        }
        // an edit of one set scans for its first few misses (cheaper than mapping the set)
        let scan = self.only.is_some() && self.map.get().is_none() && self.scans.get() < EDIT_SCANS;
        let pos = if set.dests.len() <= CARRY_SCAN_MAX || scan {
            if scan {
                self.scans.set(self.scans.get() + 1);
            }
            set.dests.iter().position(|d| d.uri.bytes() == uri)
        } else {
            let map = self.map.get_or_init(|| {
                let mut m = CarryMap::default();
                let only = self.only.and_then(|id| old.set(id));
                let all: Box<dyn Iterator<Item = SetView<'a>>> = match (self.only, only) {
                    (None, _) => Box::new(old.sets()),
                    (Some(_), o) => Box::new(o.into_iter()),
                };
                for v in all {
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

    /// A xorshift for the randomised tests.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 32) as u32
        }
        pub fn below(&mut self, n: u32) -> u32 {
            self.next() % n.max(1)
        }
    }

    /// The lists of the timing harnesses: `nsets` sets of `per` destinations, each with its own
    /// IPv4 address; `varied`: priorities 0..2 in turn and a `duid` per destination (as
    /// bench/scale.py writes them), else priority 0 and one `duid` for all.
    pub fn scale_list(nsets: usize, per: usize, varied: bool) -> Vec<crate::ds::order::DestSet> {
        use crate::ds::attrs::Attrs;
        use crate::ds::dest::Dest;
        use crate::ds::uri::{Proto, Scheme};
        let mut k = 0u32;
        (0..nsets)
            .map(|s| crate::ds::order::DestSet {
                id: s as i32 + 1,
                dests: (0..per)
                    .map(|i| {
                        k += 1;
                        let ip: std::net::IpAddr = std::net::Ipv4Addr::from(0x7f00_0000u32 + k).into();
                        let (priority, body) = if varied { ((i % 3) as i32, format!("duid=d{k};weight=1")) } else { (0, "duid=x;weight=1".to_string()) };
                        Dest {
                            setid: s as i32 + 1,
                            uri: format!("sip:{ip}:5060").into_bytes(),
                            flags: 0,
                            priority,
                            attrs: Attrs { body: body.into_bytes(), weight: 1, ..Default::default() },
                            scheme: Scheme::Sip,
                            host: ip.to_string().into_bytes(),
                            port: 5060,
                            proto: Proto::None,
                            ip: Some(ip),
                            more_ips: vec![],
                            sock: 0,
                            line: 1,
                            col: 1,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
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

    /// The byte-scan `weight_note_in` answers as the window-by-window first version, over
    /// random bodies made of the letters that matter.
    #[test]
    fn weight_note_scan_equals_reference() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"wWeEiIgGhHtTrR=;1x";
        let mut hits = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 24) as usize;
            let mut b = Vec::with_capacity(n);
            let mut y = x;
            for k in 0..n {
                if k % 8 == 0 {
                    y = y.rotate_left(29) ^ 0x5851_f42d_4c95_7f2d;
                }
                b.push(alphabet[((y >> ((k % 8) * 5)) % alphabet.len() as u64) as usize]);
            }
            if x % 5 == 0 {
                let at = (x >> 8) as usize % (b.len() + 1);
                let word: &[u8] = [&b"weight"[..], b"rWeight", b"WEIGHT", b"xweight"][(x >> 20) as usize % 4];
                b.splice(at..at, word.iter().copied());
            }
            for (w, r) in [(0, 0), (0, 5), (5, 0), (5, 5)] {
                let want = weight_note_in_ref(&b, w, r);
                hits += want as u32;
                assert_eq!(weight_note_in(&b, w, r), want, "{:?} {w} {r}", String::from_utf8_lossy(&b));
            }
        }
        assert!(hits > 1000);
    }

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


    /// Heap allocator that remembers sizes and counts frees (for the sharing tests).
    struct Pool {
        live: std::cell::RefCell<std::collections::HashMap<usize, usize>>,
        frees: std::cell::Cell<usize>,
    }
    impl Pool {
        fn new() -> Pool {
            Pool { live: Default::default(), frees: std::cell::Cell::new(0) }
        }
        fn alloc(&self, n: usize) -> *mut u8 {
            let p = testutil::heap_alloc(n);
            self.live.borrow_mut().insert(p as usize, n);
            p
        }
        fn free(&self, p: *mut u8) {
            let n = self.live.borrow_mut().remove(&(p as usize)).expect("freed twice or never allocated");
            self.frees.set(self.frees.get() + 1);
            testutil::heap_free(p, n);
        }
    }

    fn many() -> Vec<DestSet> {
        (1..=5)
            .map(|id| DestSet {
                id,
                dests: (0..3)
                    .map(|k| {
                        let mut d = dest(id, &format!("sip:10.0.{id}.{k}"), 0, 0, "");
                        d.ip = Some(format!("10.0.{id}.{k}").parse().expect("ip"));
                        d
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn edit_shares_untouched_sets_and_frees_each_block_once() {
        let pool = Pool::new();
        let sets = many();
        let p1 = build_with(&sets, 1, (0, 0), &mut |_, _, _| None, &mut |n| pool.alloc(n), &mut |p| pool.free(p), &mut || 7).expect("build");
        let s1 = unsafe { Snap::from_ptr(p1) }.expect("snap");
        // runtime state on set 3 (edited) and set 4 (untouched)
        let d30 = &s1.set(3).expect("3").dests[1];
        d30.flags.store(DS_INACTIVE, Ordering::Relaxed);
        d30.dload.store(4, Ordering::Relaxed);
        d30.ctr.selected.store(9, Ordering::Relaxed);
        let d4 = &s1.set(4).expect("4").dests[0];
        d4.dload.store(2, Ordering::Relaxed);
        s1.set(4).expect("4").rec.last.store(2, Ordering::Relaxed);
        d4.fail_cnt.store(1, Ordering::Relaxed);
        // add a destination to set 3
        let mut s3 = sets[2].clone();
        let mut nd = dest(3, "sip:new", 0, 0, "");
        nd.ip = Some("10.9.9.9".parse().expect("ip"));
        s3.dests.insert(0, nd);
        let idx = CarryIndex::for_set(Some(s1), 3);
        let b = build_set(&s3, 2, 0, (0, 0), &mut |id, uri, fl| idx.carry(id, uri, fl, false), &mut |n| pool.alloc(n), &mut || 7).expect("set");
        let order = crate::ds::order::avl_postorder(&s1.ids().to_vec());
        let p2 = unsafe { derive(s1, &order, Some((3, Some(b))), 2, Some(false), &mut |n| pool.alloc(n)) }.expect("derive");
        let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
        unsafe { hand_over(s1, s2, Some(3), false) };
        let v2 = s2.set(3).expect("3");
        unsafe { link_set_successors(&v2, false) };
        for d in v2.dests {
            if let Some(o) = idx.find(3, d.uri.bytes()) {
                o.ctr.carry_into(&d.ctr);
            }
        }
        // untouched sets: the same memory; the edited one: new, its other destinations keep
        // their state, counters and call load
        for id in [1, 2, 4, 5] {
            assert!(std::ptr::eq(s1.set(id).expect("s1").rec, s2.set(id).expect("s2").rec), "set {id} shared");
        }
        assert!(!std::ptr::eq(s1.set(3).expect("s1").rec, v2.rec));
        assert_eq!(v2.dests.len(), 4);
        assert_eq!(v2.dests[0].uri.bytes(), b"sip:new");
        let c = &v2.dests[2];
        assert_eq!(c.uri.bytes(), b"sip:10.0.3.1");
        assert_eq!((c.flags.load(Ordering::Relaxed), c.dload.load(Ordering::Relaxed), c.ctr.selected.load(Ordering::Relaxed)), (DS_INACTIVE, 4, 9));
        assert_eq!(c.iuid, d30.iuid);
        assert_eq!(s2.set(4).expect("4").dests[0].dload.load(Ordering::Relaxed), 2);
        // an edit restarts the cursors of the shared sets (as the C module's full rebuild);
        // the failure counters only with `ds_reload_keep_state` 0 (`Some(true)`)
        assert_eq!(s2.set(4).expect("4").rec.last.load(Ordering::Relaxed), 0);
        assert_eq!(s2.set(4).expect("4").dests[0].fail_cnt.load(Ordering::Relaxed), 1);
        // positional and address lookups of the new version
        assert_eq!(s2.header().ndests, 16);
        assert_eq!(s2.dests_from(0).count(), 16);
        let flat: Vec<Vec<u8>> = s2.sets().flat_map(|v| v.dests.iter().map(|d| d.uri.bytes().to_vec())).collect();
        let from: Vec<Vec<u8>> = s2.dests_from(5).map(|(_, d)| d.uri.bytes().to_vec()).collect();
        assert_eq!(from, flat[5..].to_vec());
        assert_eq!(s2.by_ip("10.9.9.9".parse().expect("ip")).map(|(v, _)| v.rec.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(s2.by_ip("10.0.3.1".parse().expect("ip")).map(|(_, d)| d.uri.bytes().to_vec()).collect::<Vec<_>>(), vec![b"sip:10.0.3.1".to_vec()]);
        assert_eq!(s1.by_ip("10.9.9.9".parse().expect("ip")).count(), 0);
        assert_eq!(s2.by_ip("10.0.4.0".parse().expect("ip")).count(), 1);
        assert_eq!(s2.dest_by_iuid(c.iuid).map(|(id, d)| (id, d.uri.bytes().to_vec())), Some((3, b"sip:10.0.3.1".to_vec())));
        for id in 1..=5 {
            assert_eq!(s2.set(id).expect("set").rec.id, id);
        }
        // a call that ends on the old list after the copy is forwarded when it is freed
        d30.dload.fetch_sub(1, Ordering::Relaxed);
        // remove set 5 entirely in a third version, derived from the second
        let order3: Vec<i32> = crate::ds::order::avl_postorder(&s2.ids().iter().copied().filter(|&i| i != 5).collect::<Vec<_>>());
        let p3 = unsafe { derive(s2, &order3, Some((5, None)), 3, None, &mut |n| pool.alloc(n)) }.expect("derive");
        let s3v = unsafe { Snap::from_ptr(p3) }.expect("snap");
        unsafe { hand_over(s2, s3v, Some(5), false) };
        assert!(s3v.set(5).is_none());
        assert_eq!(s3v.nsets(), 4);
        assert_eq!(s3v.by_ip("10.0.5.0".parse().expect("ip")).count(), 0);
        assert!(std::ptr::eq(s3v.set(3).expect("3").rec, v2.rec));
        // freeing the oldest list frees only the block it alone holds (the old set 3)
        let before = pool.frees.get();
        let mut last: Vec<i32> = Vec::new();
        let n = unsafe {
            release(p1, &mut |v| {
                last.push(v.rec.id);
                forward_set_counters(&v);
                v.dests.iter().for_each(|d| d.ctr.forward());
            }, &mut |p| pool.free(p))
        };
        // (its header stays: it holds the address index the newer lists still use)
        assert_eq!((n, last.clone(), pool.frees.get() - before), (1, vec![3], 1));
        assert_eq!(s3v.set(3).expect("3").dests[2].dload.load(Ordering::Relaxed), 3, "forwarded once");
        // then the second: set 5 (held by it alone now); then the third: the rest
        last.clear();
        let n = unsafe { release(p2, &mut |v| last.push(v.rec.id), &mut |p| pool.free(p)) };
        assert_eq!((n, last.clone()), (1, vec![5]));
        last.clear();
        let n = unsafe { release(p3, &mut |v| last.push(v.rec.id), &mut |p| pool.free(p)) };
        last.sort();
        assert_eq!((n, last), (4, vec![1, 2, 3, 4]));
        assert!(pool.live.borrow().is_empty(), "every block freed exactly once");
    }

    /// Random edit sequences (add, remove, update, new and vanished sets) through `derive`:
    /// `by_ip` of every version equals a plain walk of its sets in order, the shared sets
    /// are the same blocks, a lazy reset shows on the new version only, and every block is
    /// freed exactly once.
    #[test]
    fn delta_index_and_block_lifetime_over_random_edits() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for round in 0..40 {
            let pool = Pool::new();
            let mk = |id: i32, k: u64, a: u64| {
                let mut d = dest(id, &format!("sip:d{id}-{k}"), 0, 0, "");
                d.ip = Some(if a % 5 == 0 { IpAddr::from([0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (a % 7) as u8]) } else { IpAddr::from([10, 0, 0, (a % 7) as u8]) });
                d
            };
            let mut sets: Vec<DestSet> = (1..=1 + rnd(6) as i32).map(|id| DestSet { id, dests: (0..1 + rnd(4)).map(|k| mk(id, k, rnd(100))).collect() }).collect();
            let mut p = build_with(&sets, 1, (0, 0), &mut |_, _, _| None, &mut |n| pool.alloc(n), &mut |b| pool.free(b), &mut || 7).expect("build");
            let mut live: Vec<*mut Header> = vec![p];
            let mut k = 100u64;
            for step in 0..30u64 {
                let cur = unsafe { Snap::from_ptr(p) }.expect("snap");
                if let Some(b) = cur.blk(0) {
                    b.rec.last.store(1, Ordering::Relaxed);
                }
                let id = 1 + rnd(9) as i32;
                let mut s = sets.iter().find(|s| s.id == id).cloned().unwrap_or(DestSet { id, dests: vec![] });
                match rnd(3) {
                    0 => {
                        k += 1;
                        s.dests.insert(0, mk(id, k, rnd(100)));
                    }
                    1 if !s.dests.is_empty() => {
                        let i = rnd(s.dests.len() as u64) as usize;
                        s.dests.remove(i);
                    }
                    _ => {
                        if let Some(d) = s.dests.first_mut() {
                            d.ip = Some(IpAddr::from([10, 0, 0, rnd(7) as u8]));
                        }
                    }
                }
                let mut ids: Vec<i32> = cur.ids().to_vec();
                if !ids.contains(&id) {
                    ids.push(id);
                }
                ids.retain(|&i| i != id || !s.dests.is_empty());
                let so = crate::ds::order::avl_order(&ids);
                let order = so.ids.clone();
                let naive: usize = order.iter().take_while(|&&i| i != id).map(|&i| cur.set_pos(i).map_or(0, |p| cur.set_len(p))).sum();
                if order.contains(&id) {
                    let plan = plan_edit(cur, &order, Some(&so.by_id), Some(id), true).expect("plan");
                    assert_eq!(plan.first_di(), naive);
                }
                let b = (!s.dests.is_empty()).then(|| build_set(&s, 2 + step, 0, (0, 0), &mut |_, _, _| None, &mut |n| pool.alloc(n), &mut || 7).expect("set"));
                let np = if step % 2 == 0 {
                    // a vanished set may still be named in the order: it is left out
                    let mut named = order.clone();
                    if b.is_none() && step % 4 == 0 {
                        named.insert(rnd(named.len() as u64 + 1) as usize, id);
                    }
                    unsafe { derive(cur, &named, Some((id, b)), 2 + step, Some(true), &mut |n| pool.alloc(n)) }.expect("derive")
                } else if b.is_none() && step % 4 == 1 {
                    let mut named = order.clone();
                    named.push(id);
                    let mut by_id: Vec<u32> = (0..named.len() as u32).collect();
                    by_id.sort_by_key(|&p| named[p as usize]);
                    let plan = plan_edit(cur, &named, Some(&by_id), Some(id), false).expect("plan");
                    unsafe { derive_planned(cur, &plan, &named, Some(&by_id), None, 2 + step, Some(true), &mut |n| pool.alloc(n)) }.expect("derive")
                } else {
                    // the edit path: the plan (with the new order's index by id), then the header
                    let plan = plan_edit(cur, &order, Some(&so.by_id), Some(id), b.is_some()).expect("plan");
                    if b.is_some() {
                        assert_eq!(plan.first_di(), naive, "round {round} step {step}");
                    }
                    unsafe { derive_planned(cur, &plan, &order, Some(&so.by_id), b, 2 + step, Some(true), &mut |n| pool.alloc(n)) }.expect("derive")
                };
                let new = unsafe { Snap::from_ptr(np) }.expect("snap");
                // the header's arrays against its set blocks
                let mut di = 0usize;
                for (i, &sid) in new.ids().iter().enumerate() {
                    let v = new.blk(i).expect("blk").view();
                    assert_eq!((v.rec.id, new.set_pos(sid), new.set_len(i)), (sid, Some(i), v.dests.len()), "round {round} step {step}");
                    assert_eq!(new.firsts()[i] as usize, di);
                    di += v.dests.len();
                }
                assert_eq!((new.header().ndests as usize, new.header().nnotes), (di, (0..new.nsets()).filter(|&i| new.blk(i).is_some_and(|b| b.maybe_notes())).count() as u32));
                if rnd(6) == 0 {
                    // not published: freeing it frees only what it built
                    unsafe { release(np, &mut |_| {}, &mut |b| pool.free(b)) };
                    continue;
                }
                unsafe { hand_over(cur, new, Some(id), false) };
                match sets.iter().position(|x| x.id == id) {
                    Some(i) if s.dests.is_empty() => {
                        sets.remove(i);
                    }
                    Some(i) => sets[i] = s,
                    None if !s.dests.is_empty() => sets.push(s),
                    None => {}
                }
                sets.sort_by_key(|x| order.iter().position(|&o| o == x.id));
                assert_eq!(new.ids(), order.as_slice());
                for a in 0..7u8 {
                    for ip in [IpAddr::from([10, 0, 0, a]), IpAddr::from([0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, a])] {
                        let want: Vec<Vec<u8>> = new.sets().flat_map(|v| v.dests.iter().filter(|d| d.ip_addr() == Some(ip)).map(|d| d.uri.bytes().to_vec())).collect();
                        let got: Vec<Vec<u8>> = new.by_ip(ip).map(|(_, d)| d.uri.bytes().to_vec()).collect();
                        assert_eq!(got, want, "round {round} step {step} ip {ip}");
                        let plain: Vec<Vec<u8>> = sets.iter().flat_map(|v| v.dests.iter().filter(|d| d.ip == Some(ip)).map(|d| d.uri.clone())).collect();
                        assert_eq!(got, plain, "round {round} step {step} ip {ip}");
                    }
                }
                for v in new.sets() {
                    // lazily reset through the new version
                    assert_eq!(v.rec.last.load(Ordering::Relaxed), 0);
                    if let Some(o) = cur.set(v.rec.id).filter(|_| v.rec.id != id) {
                        assert!(std::ptr::eq(o.rec, v.rec), "shared set {}", v.rec.id);
                    }
                }
                live.push(np);
                p = np;
                // free the oldest versions now and then (oldest first)
                while live.len() > 1 + rnd(3) as usize {
                    let o = live.remove(0);
                    unsafe { release(o, &mut |_| {}, &mut |b| pool.free(b)) };
                }
            }
            for o in live {
                unsafe { release(o, &mut |_| {}, &mut |b| pool.free(b)) };
            }
            assert!(pool.live.borrow().is_empty(), "round {round}: every block freed exactly once");
        }
    }

    /// An edit's reset of the shared sets happens when a set is first read through the new
    /// version, once: reading through an older version never resets it (again).
    #[test]
    fn shared_sets_are_reset_lazily_once() {
        let pool = Pool::new();
        let sets = many();
        let p1 = build_with(&sets, 1, (0, 0), &mut |_, _, _| None, &mut |n| pool.alloc(n), &mut |p| pool.free(p), &mut || 7).expect("build");
        let s1 = unsafe { Snap::from_ptr(p1) }.expect("snap");
        let v = s1.set(2).expect("2");
        v.rec.last.store(2, Ordering::Relaxed);
        v.rec.wlast.store(5, Ordering::Relaxed);
        v.dests[1].fail_cnt.store(3, Ordering::Relaxed);
        // edit set 1 (keep_state 0: the failure counters restart too)
        let mut s1set = sets[0].clone();
        s1set.dests.pop();
        let b = build_set(&s1set, 2, 0, (0, 0), &mut |_, _, _| None, &mut |n| pool.alloc(n), &mut || 7).expect("set");
        let so = crate::ds::order::avl_order(s1.ids());
        let p2 = unsafe { derive_ordered(s1, &so.ids, Some(&so.by_id), Some((1, Some(b))), 2, Some(true), &mut |n| pool.alloc(n)) }.expect("derive");
        let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
        unsafe { hand_over(s1, s2, Some(1), false) };
        // nothing reset by the edit itself, nor by reading through the old list
        let o = s1.set(2).expect("2");
        assert_eq!((o.rec.last.load(Ordering::Relaxed), o.dests[1].fail_cnt.load(Ordering::Relaxed)), (2, 3));
        // the first read through the new list resets, once
        let n = s2.set(2).expect("2");
        assert!(std::ptr::eq(n.rec, o.rec));
        assert_eq!((n.rec.last.load(Ordering::Relaxed), n.rec.wlast.load(Ordering::Relaxed), n.dests[1].fail_cnt.load(Ordering::Relaxed)), (0, 0, 0));
        n.rec.last.store(1, Ordering::Relaxed);
        n.dests[1].fail_cnt.store(2, Ordering::Relaxed);
        assert_eq!(s2.set(2).expect("2").rec.last.load(Ordering::Relaxed), 1);
        assert_eq!(s1.set(2).expect("2").dests[1].fail_cnt.load(Ordering::Relaxed), 2);
        // keep_state 1 (`Some(false)`): the cursors restart, the failure counters stay
        let so3 = crate::ds::order::avl_order(s2.ids());
        let p3 = unsafe { derive_ordered(s2, &so3.ids, Some(&so3.by_id), None, 3, Some(false), &mut |n| pool.alloc(n)) }.expect("derive");
        let s3 = unsafe { Snap::from_ptr(p3) }.expect("snap");
        unsafe { hand_over(s2, s3, None, false) };
        let m = s3.set(2).expect("2");
        assert_eq!((m.rec.last.load(Ordering::Relaxed), m.dests[1].fail_cnt.load(Ordering::Relaxed)), (0, 2));
        // no reset (`None`): a version derived without one resets nothing more
        m.rec.last.store(4, Ordering::Relaxed);
        let p4 = unsafe { derive_ordered(s3, &so3.ids, None, None, 4, None, &mut |n| pool.alloc(n)) }.expect("derive");
        let s4 = unsafe { Snap::from_ptr(p4) }.expect("snap");
        unsafe { hand_over(s3, s4, None, false) };
        assert_eq!(s4.set(2).expect("2").rec.last.load(Ordering::Relaxed), 4);
        for p in [p1, p2, p3, p4] {
            unsafe { release(p, &mut |_| {}, &mut |b| pool.free(b)) };
        }
        assert!(pool.live.borrow().is_empty(), "every block freed exactly once");
    }

    #[test]
    fn merge_delta_equals_filter_and_sort() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for round in 0..3000 {
            // small and large deltas, few and many entries of the edited set
            let (n, na, nip) = if round % 10 == 0 { (rnd(3000) as usize, rnd(800), 200) } else { (rnd(60) as usize, rnd(8), 8) };
            let mut old: Vec<Ip4Ent> =
                (0..n).map(|_| Ip4Ent { ip: rnd(nip) as u32, set: rnd(5) as i32, local: rnd(6) as u32 }).collect();
            old.sort_unstable();
            old.dedup();
            let t = rnd(6) as i32;
            let mut add: Vec<Ip4Ent> =
                (0..na).map(|_| Ip4Ent { ip: rnd(nip) as u32, set: t, local: rnd(6) as u32 }).collect();
            add.sort_unstable();
            add.dedup();
            let tid = (round % 7 != 3).then_some(t);
            let mut want: Vec<Ip4Ent> = old.iter().copied().filter(|e| Some(e.set) != tid).chain(add.iter().copied()).collect();
            want.sort_unstable();
            let mut got = vec![Ip4Ent { ip: 0, set: -1, local: 0 }; want.len()];
            edit::merge_delta(&old, tid, &add, &mut got);
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn by_ip_orders_hits_by_set_position_after_reordering() {
        let pool = Pool::new();
        // many destinations on one address, in several sets
        let sets: Vec<DestSet> = (1..=4)
            .map(|id| DestSet { id, dests: (0..6).map(|k| dest(id, &format!("sip:h{id}-{k}"), 0, 0, "")).collect() })
            .collect();
        let p1 = build_with(&sets, 1, (0, 0), &mut |_, _, _| None, &mut |n| pool.alloc(n), &mut |p| pool.free(p), &mut || 7).expect("build");
        let s1 = unsafe { Snap::from_ptr(p1) }.expect("snap");
        let order = vec![3, 1, 4, 2];
        let p2 = unsafe { derive(s1, &order, None, 2, None, &mut |n| pool.alloc(n)) }.expect("derive");
        let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
        unsafe { hand_over(s1, s2, None, false) };
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        for s in [s1, s2] {
            let want: Vec<Vec<u8>> = s.sets().flat_map(|v| v.dests.iter().map(|d| d.uri.bytes().to_vec())).collect();
            let got: Vec<Vec<u8>> = s.by_ip(ip).map(|(_, d)| d.uri.bytes().to_vec()).collect();
            assert_eq!(got, want);
        }
        assert_eq!(s2.sets().map(|v| v.rec.id).collect::<Vec<_>>(), order);
        unsafe { release(p1, &mut |_| {}, &mut |p| pool.free(p)) };
        unsafe { release(p2, &mut |_| {}, &mut |p| pool.free(p)) };
        assert!(pool.live.borrow().is_empty());
    }
}

#[cfg(test)]
mod edit_bench {
    use super::*;
    #[test]
    #[ignore]
    fn edit_timing() {
        eprintln!("DestRec {} B, SetRec {} B, SetBlk {} B, DestCounters {} B", size_of::<DestRec>(), size_of::<SetRec>(), size_of::<SetBlk>(), size_of::<crate::ds::counters::DestCounters>());
        for (nsets, per) in [(30000usize, 10usize), (100, 3000)] {
            let sets = testutil::scale_list(nsets, per, false);
            let t = std::time::Instant::now();
            let p = build(&sets, 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
            eprintln!("{nsets}x{per}: build {:?}", t.elapsed());
            let snap = unsafe { Snap::from_ptr(p) }.expect("snap");
            let order: Vec<i32> = snap.ids().to_vec();
            // minimum of 7 (the machine is shared)
            let min7 = |f: &mut dyn FnMut()| (0..7).map(|_| { let t = std::time::Instant::now(); f(); t.elapsed() }).min().unwrap_or_default();
            let post = crate::ds::order::avl_order(&order);
            eprintln!("  avl_order {:?} (min of 7; the reference avl_postorder: {:?})",
                min7(&mut || { std::hint::black_box(crate::ds::order::avl_order(&order)); }),
                min7(&mut || { std::hint::black_box(crate::ds::order::avl_postorder(&order)); }));
            eprintln!("  plan_edit {:?} (min of 7)", min7(&mut || { std::hint::black_box(plan_edit(snap, &post.ids, Some(&post.by_id), Some(5), true).expect("plan")); }));
            let mut s5 = DestSet { id: 5, dests: sets[4].dests.clone() };
            let mut nd = s5.dests[0].clone();
            nd.uri = b"sip:10.9.9.1:5060".to_vec();
            nd.ip = Some("10.9.9.1".parse().unwrap());
            s5.dests.insert(0, nd);
            let t = std::time::Instant::now();
            let b = build_set(&s5, 2, 0, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("set");
            eprintln!("  build_set {:?}", t.elapsed());
            {
                // the same edit by copy from the set's block (what dispatcher.add does)
                let v = snap.set(5).expect("set 5");
                let blk5 = snap.set_pos(5).and_then(|i| snap.blk(i));
                let mut srcs: Vec<setedit::Src<'_>> = vec![setedit::Src::New(&s5.dests[0])];
                srcs.extend(v.dests.iter().enumerate().map(|(i, d)| setedit::Src::Old(d, i)));
                let idx = CarryIndex::for_set(Some(snap), 5);
                eprintln!("  build_edited (copy) {:?} (min of 7)", min7(&mut || {
                    let b = setedit::build_edited(5, blk5, &srcs, 2, 0, (0, 0), &mut |id, u, f| idx.carry(id, u, f, false), &mut testutil::heap_alloc, &mut || 7, false).expect("copy");
                    testutil::heap_free(std::hint::black_box(b) as *mut u8, unsafe { (*b).size });
                }));
                eprintln!("  build_set with carry {:?} (min of 7)", min7(&mut || {
                    let b = build_set(&s5, 2, 0, (0, 0), &mut |id, u, f| idx.carry(id, u, f, false), &mut testutil::heap_alloc, &mut || 7).expect("set");
                    testutil::heap_free(std::hint::black_box(b) as *mut u8, unsafe { (*b).size });
                }));
            }
            eprintln!("  build_set + derive {:?} (min of 7)", min7(&mut || {
                let b = build_set(&s5, 2, 0, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("set");
                let p = unsafe { derive_ordered(snap, &post.ids, Some(&post.by_id), Some((5, Some(b))), 2, Some(true), &mut testutil::heap_alloc) }.expect("derive");
                std::hint::black_box(p);
            }));
            let p2 = unsafe { derive_ordered(snap, &post.ids, Some(&post.by_id), Some((5, Some(b))), 2, Some(true), &mut testutil::heap_alloc) }.expect("derive");
            let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
            let t = std::time::Instant::now();
            let q = s2.by_ip("10.9.9.1".parse().unwrap()).count() + s2.by_ip("10.9.9.2".parse().unwrap()).count();
            eprintln!("  by_ip x2 {:?} ({q})", t.elapsed());
            let t = std::time::Instant::now();
            for v in s2.sets() { reset_shared_set(&v, false); }
            eprintln!("  reset cursors {:?}", t.elapsed());
            let t = std::time::Instant::now();
            for v in s2.sets() { reset_shared_set(&v, true); }
            eprintln!("  reset cursors+fail_cnt {:?}", t.elapsed());
            assert_eq!(s2.by_ip("10.9.9.1".parse().unwrap()).count(), 1);
        }
    }
}

#[cfg(test)]
mod edit_ir {
    use super::*;

    /// `valgrind --tool=callgrind --toggle-collect='*edit_ir_loop*' <test binary> edit_ir --ignored`:
    /// the instructions of 20 edits (adds spread over the sets, as bench/scale.py's edit loop),
    /// order, placement, set block and header, at 30,000 sets of 10 and 100 sets of 3,000.
    #[test]
    #[ignore]
    fn edit_ir() {
        let shape = std::env::var("EDIT_IR_SHAPE").unwrap_or_default();
        let (nsets, per) = if shape == "a" { (100, 3000) } else { (30000, 10) };
        let sets = testutil::scale_list(nsets, per, false);
        let mut p = build(&sets, 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
        let mut snap_sets = sets;
        p = edit_ir_loop(p, &mut snap_sets, nsets);
        std::hint::black_box(p);
    }
    #[inline(never)]
    fn edit_ir_loop(mut p: *mut Header, sets: &mut [DestSet], nsets: usize) -> *mut Header {
        for i in 0..20usize {
            let cur = unsafe { Snap::from_ptr(p) }.expect("snap");
            let setid = 1 + ((i * 7919) % nsets) as i32;
            let s = &mut sets[setid as usize - 1];
            let mut nd = s.dests[0].clone();
            nd.uri = format!("sip:10.1.0.{}:5060", i + 1).into_bytes();
            nd.ip = Some(std::net::Ipv4Addr::new(10, 1, 0, i as u8 + 1).into());
            s.dests.insert(0, nd);
            let so = crate::ds::order::avl_order_edit(cur.ids(), Some(setid), None);
            let plan = plan_edit(cur, &so.ids, Some(&so.by_id), Some(setid), true).expect("plan");
            let b = build_set(s, 2 + i as u64, plan.first_di(), (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("set");
            p = unsafe { derive_planned(cur, &plan, &so.ids, Some(&so.by_id), Some(b), 2 + i as u64, Some(true), &mut testutil::heap_alloc) }.expect("derive");
            unsafe { hand_over(cur, Snap::from_ptr(p).expect("snap"), Some(setid), false) };
        }
        p
    }
}
