//! Cluster mode, pure part: versioned per-destination registers (hybrid logical clock +
//! origin), merge rule "newer version wins", local change detection with a non-replicated
//! veto, the state digest, rendezvous ownership over live nodes, membership bookkeeping and
//! the text wire format carried in KDMQ bodies. No FFI: the glue (`module::cluster`) keeps
//! the tables in shared memory and calls these functions under its lock.
//!
//! Each destination (set id + URI) has two registers, each with its own version:
//! *health* (the AP/TP/IP bits + probing) and *admin* (the DX bit). A version is
//! `(ts, origin)`: `ts` is a hybrid logical clock (`wall_ms << 16`, bumped past everything
//! seen), `origin` the writer's node id, so two writers never produce equal versions.
//! Version `(0, 0)` is "from the configuration": any runtime version beats it.
use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE, DS_PROBING, DS_TRYING};

/// Bits of the health register.
pub const HMASK: i32 = DS_INACTIVE | DS_TRYING | DS_PROBING;
/// Bits of the admin register.
pub const AMASK: i32 = DS_DISABLED;
/// Protocol tag of every body (first token).
pub const PROTO: &str = "DSC1";
/// Versions further than this in the future (ms) are rejected (clock skew guard).
pub const MAX_FUTURE_MS: u64 = 60_000;

/// A register version: HLC timestamp, then the writer's node id as tie-break.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub ts: u64,
    pub origin: u64,
}

impl Version {
    pub fn is_config(&self) -> bool {
        self.ts == 0 && self.origin == 0
    }
}

/// Hybrid logical clock (one per node, kept in shm by the glue).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Hlc {
    pub last: u64,
}

impl Hlc {
    /// A new timestamp, above every one issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> u64 {
        let c = (wall_ms << 16).max(self.last.saturating_add(1));
        self.last = c;
        c
    }
    /// Takes note of a received timestamp; false (and ignored) when it is too far ahead.
    pub fn observe(&mut self, ts: u64, wall_ms: u64) -> bool {
        if ts > (wall_ms.saturating_add(MAX_FUTURE_MS)) << 16 {
            return false;
        }
        self.last = self.last.max(ts);
        true
    }
}

/// One register: the bits and their version.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reg {
    pub bits: i32,
    pub ver: Version,
}

/// Outcome of merging a received register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    Applied,
    Duplicate,
    Stale,
}

impl Reg {
    /// Keeps the newer of the two (by version). Idempotent, commutative, associative.
    pub fn merge(&mut self, other: Reg) -> Merge {
        if other.ver > self.ver {
            *self = other;
            Merge::Applied
        } else if other.ver == self.ver {
            Merge::Duplicate
        } else {
            Merge::Stale
        }
    }
}

/// Per-destination cluster record, plain data so that it can live in a shm array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Entry {
    pub used: u32,
    pub setid: i32,
    pub key: u64,
    pub h: Reg,
    pub a: Reg,
    /// Local veto: this node's own view of the health (`local_h`) overrides the cluster's.
    pub veto: u32,
    pub local_h: i32,
    /// Has a local version not yet broadcast.
    pub dirty: u32,
    /// Scan generation that last saw the destination in the current list.
    pub gen: u32,
    /// This node probes the destination (from the last [`assign`]).
    pub probe: u32,
}

/// FNV-1a 64 of the lower-cased URI (the key, with the set id, of a destination).
pub fn key_of(uri: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uri {
        h ^= b.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn slot_start(tab_len: usize, setid: i32, key: u64) -> usize {
    (mix(key ^ (setid as u32 as u64).rotate_left(32)) as usize) & (tab_len - 1)
}

/// The slot of `(setid, key)` in an open-addressed table whose length is a power of two.
pub fn slot_find(tab: &[Entry], setid: i32, key: u64) -> Option<usize> {
    if tab.is_empty() {
        return None;
    }
    let mut i = slot_start(tab.len(), setid, key);
    for _ in 0..tab.len() {
        let e = &tab[i];
        if e.used == 0 {
            return None;
        }
        if e.setid == setid && e.key == key {
            return Some(i);
        }
        i = (i + 1) & (tab.len() - 1);
    }
    None
}

/// The slot of `(setid, key)`, inserted (with `flags` at version 0) when missing. None when
/// the table is full.
pub fn slot_get_or_insert(tab: &mut [Entry], setid: i32, key: u64, flags: i32) -> Option<usize> {
    if tab.is_empty() {
        return None;
    }
    let mut i = slot_start(tab.len(), setid, key);
    for _ in 0..tab.len() {
        let e = &mut tab[i];
        if e.used == 0 {
            *e = Entry {
                used: 1,
                setid,
                key,
                h: Reg { bits: flags & HMASK, ver: Version::default() },
                a: Reg { bits: flags & AMASK, ver: Version::default() },
                ..Default::default()
            };
            return Some(i);
        }
        if e.setid == setid && e.key == key {
            return Some(i);
        }
        i = (i + 1) & (tab.len() - 1);
    }
    None
}

/// What the glue must do after [`observe_local`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalOutcome {
    /// A register got a new local version (to broadcast).
    pub dirty: bool,
    /// The veto ended: write these health bits (the cluster's) into the flags.
    pub restore: Option<i32>,
}

/// Compares the destination's current `flags` with its record and versions local changes.
/// `health_global`: a health change made here is the cluster's (this node owns the probing
/// of the destination, or marks are global); otherwise it becomes a local veto, kept until
/// this node sees the destination healthy again. `probes_here`: this node probes it; a
/// "down" from a node that does not is replicated once and then held as a veto, so that
/// repeated marks from a node with a broken path cannot keep overriding the prober.
pub fn observe_local(
    e: &mut Entry,
    flags: i32,
    health_global: bool,
    probes_here: bool,
    hlc: &mut Hlc,
    wall_ms: u64,
    self_id: u64,
) -> LocalOutcome {
    let mut out = LocalOutcome::default();
    let a = flags & AMASK;
    if a != e.a.bits {
        e.a = Reg { bits: a, ver: Version { ts: hlc.tick(wall_ms), origin: self_id } };
        out.dirty = true;
    }
    let h = flags & HMASK;
    if e.veto != 0 {
        e.local_h = h;
        if h & (DS_INACTIVE | DS_TRYING) == 0 {
            e.veto = 0;
            if e.h.bits != h {
                out.restore = Some(e.h.bits);
            }
        }
    } else if h != e.h.bits {
        if health_global {
            e.h = Reg { bits: h, ver: Version { ts: hlc.tick(wall_ms), origin: self_id } };
            out.dirty = true;
            if !probes_here && h & (DS_INACTIVE | DS_TRYING) != 0 {
                e.veto = 1;
                e.local_h = h;
            }
        } else {
            e.veto = 1;
            e.local_h = h;
        }
    }
    if out.dirty {
        e.dirty = 1;
    }
    out
}

/// After the list was rebuilt (reload, `dispatcher.add`/`remove`): the registers that carry
/// a runtime version win over what the new list says (a reload on one node must not undo
/// the cluster's state); registers still at the configuration version take the new list's
/// bits. Returns the bits to write into the flags as (mask, bits); mask 0: nothing.
pub fn rebaseline(e: &mut Entry, flags: i32) -> (i32, i32) {
    let (mut mask, mut bits) = (0, 0);
    if e.a.ver.is_config() {
        e.a.bits = flags & AMASK;
    } else if flags & AMASK != e.a.bits {
        mask |= AMASK;
        bits |= e.a.bits;
    }
    if e.veto != 0 {
        e.local_h = flags & HMASK;
    } else if e.h.ver.is_config() {
        e.h.bits = flags & HMASK;
    } else if flags & HMASK != e.h.bits {
        mask |= HMASK;
        bits |= e.h.bits;
    }
    (mask, bits)
}

/// An explicit admin write made here (RPC `set_state`): both registers take the current
/// flags with new versions (even when unchanged, so that every node converges on it) and
/// any veto ends.
pub fn admin_write(e: &mut Entry, flags: i32, hlc: &mut Hlc, wall_ms: u64, self_id: u64) {
    e.h = Reg { bits: flags & HMASK, ver: Version { ts: hlc.tick(wall_ms), origin: self_id } };
    e.a = Reg { bits: flags & AMASK, ver: Version { ts: hlc.tick(wall_ms), origin: self_id } };
    e.veto = 0;
    e.dirty = 1;
}

/// Result of applying a received record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteOutcome {
    pub health: Merge,
    pub admin: Merge,
    /// Bits to write into the destination's flags: (mask, bits); mask 0: nothing.
    pub write_mask: i32,
    pub write_bits: i32,
}

/// Merges a received record into `e`. A vetoed health register is recorded but not
/// written into the flags (the veto keeps the local view until it ends).
///
/// Contradiction rule: when this node's own last health write said "down", it does not
/// probe the destination, and a newer write from another node says "up" (the prober saw it
/// answer), this node's path is the broken one: it keeps its view as a local veto (and
/// probes the destination itself) instead of flipping, so one node with a broken path
/// costs the cluster at most one episode, never a flap per mark.
pub fn apply_remote(e: &mut Entry, h: Reg, a: Reg, self_id: u64, probes_here: bool) -> RemoteOutcome {
    let down = DS_INACTIVE | DS_TRYING;
    if e.veto == 0
        && !probes_here
        && h.ver > e.h.ver
        && e.h.ver.origin == self_id
        && !e.h.ver.is_config()
        && e.h.bits & down != 0
        && h.bits & down == 0
    {
        e.veto = 1;
        e.local_h = e.h.bits;
    }
    let hm = e.h.merge(h);
    let am = e.a.merge(a);
    let mut mask = 0;
    let mut bits = 0;
    if am == Merge::Applied {
        mask |= AMASK;
        bits |= e.a.bits & AMASK;
    }
    if hm == Merge::Applied && e.veto == 0 {
        mask |= HMASK;
        bits |= e.h.bits & HMASK;
    }
    RemoteOutcome { health: hm, admin: am, write_mask: mask, write_bits: bits }
}

/// Contribution of one record to the state digest (XOR-combined by the caller).
pub fn entry_digest(e: &Entry) -> u64 {
    if e.h.ver.is_config() && e.a.ver.is_config() {
        // configuration state: the same on every node with the same list
        return 0;
    }
    let mut z = mix(e.key ^ (e.setid as u32 as u64));
    for v in [e.h.bits as u32 as u64, e.h.ver.ts, e.h.ver.origin, e.a.bits as u32 as u64, e.a.ver.ts, e.a.ver.origin] {
        z = mix(z ^ v);
    }
    z
}

/// XOR digest of the records of the current list generation.
pub fn digest<'a>(entries: impl Iterator<Item = &'a Entry>, gen: u32) -> u64 {
    entries.filter(|e| e.used != 0 && e.gen == gen).fold(0, |d, e| d ^ entry_digest(e))
}

/// Rendezvous (highest random weight) score of a node for a destination.
pub fn rendezvous_score(node: u64, setid: i32, key: u64) -> u64 {
    mix(mix(node) ^ key ^ ((setid as u32 as u64) << 17))
}

/// The node that probes `(setid, key)`: the live node with the highest score.
pub fn owner(live: &[u64], setid: i32, key: u64) -> Option<u64> {
    live.iter().copied().max_by_key(|n| (rendezvous_score(*n, setid, key), *n))
}

/// Load cap of [`assign`]: the even share plus 1/8 of it (at least 1).
pub fn assign_cap(nkeys: usize, nnodes: usize) -> usize {
    let n = nnodes.max(1);
    let share = nkeys.div_ceil(n);
    share + share.div_ceil(8).max(1)
}

/// Distributed probing: the prober of each `(setid, key)` among `live`, in input order.
/// Rendezvous hashing with bounded loads: destinations are taken in an order every node
/// computes alike (by hash), and each goes to its highest-scoring node that still has room
/// under [`assign_cap`]. Every node with the same list and the same view of the live nodes
/// computes the same assignment; a join or leave moves that node's share (plus the few
/// destinations the cap displaces), and no node probes more than its share + 1/8.
pub fn assign(keys: &[(i32, u64)], live: &[u64]) -> Vec<u64> {
    let mut out = vec![0u64; keys.len()];
    if live.is_empty() {
        return out;
    }
    let cap = assign_cap(keys.len(), live.len());
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by_key(|&i| (mix(keys[i].1 ^ ((keys[i].0 as u32 as u64) << 23)), keys[i].0, keys[i].1));
    let mut load = vec![0usize; live.len()];
    let mut ranked: Vec<(u64, u64, usize)> = Vec::with_capacity(live.len());
    for i in order {
        let (setid, key) = keys[i];
        ranked.clear();
        ranked.extend(live.iter().enumerate().map(|(j, n)| (rendezvous_score(*n, setid, key), *n, j)));
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let pick = ranked.iter().find(|r| load[r.2] < cap).unwrap_or(&ranked[0]);
        load[pick.2] += 1;
        out[i] = pick.1;
    }
    out
}

/// Probing modes (`cluster_probing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probing {
    /// Every node probes every destination; health stays local, only admin is shared.
    All,
    /// Each destination is probed by its rendezvous owner among the live nodes.
    Distributed,
    /// The live node with the lowest id probes all.
    Leader,
}

impl Probing {
    pub fn from_param(v: i32) -> Probing {
        match v {
            0 => Probing::All,
            2 => Probing::Leader,
            _ => Probing::Distributed,
        }
    }
}

/// Whether this node probes `(setid, key)` (a vetoed destination is always probed here).
pub fn should_probe(mode: Probing, live: &[u64], self_id: u64, setid: i32, key: u64, vetoed: bool) -> bool {
    if vetoed {
        return true;
    }
    match mode {
        Probing::All => true,
        Probing::Distributed => owner(live, setid, key).is_none_or(|o| o == self_id),
        Probing::Leader => live.iter().min().is_none_or(|l| *l == self_id),
    }
}

/// Whether a health change seen here is the cluster's (replicated) or a local veto.
pub fn health_is_global(mode: Probing, probes_here: bool, mark_global: bool) -> bool {
    match mode {
        Probing::All => false,
        _ => probes_here || mark_global,
    }
}

// ---- membership --------------------------------------------------------------------------

pub const MAX_URI: usize = 120;

/// A peer as this node knows it (plain data for a shm array).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub used: u32,
    pub synced: u32,
    pub id: u64,
    pub inc: u64,
    pub last_ms: u64,
    pub digest: u64,
    pub mismatches: u32,
    pub need_push: u32,
    pub last_push_ms: u64,
    pub ndests: u64,
    pub uri_len: u32,
    pub uri: [u8; MAX_URI],
}

impl Default for Member {
    fn default() -> Self {
        Member {
            used: 0,
            synced: 0,
            id: 0,
            inc: 0,
            last_ms: 0,
            digest: 0,
            mismatches: 0,
            need_push: 0,
            last_push_ms: 0,
            ndests: 0,
            uri_len: 0,
            uri: [0; MAX_URI],
        }
    }
}

impl Member {
    pub fn uri(&self) -> &[u8] {
        &self.uri[..(self.uri_len as usize).min(MAX_URI)]
    }
    pub fn alive(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.used != 0 && now_ms.saturating_sub(self.last_ms) <= timeout_ms
    }
}

/// A heartbeat's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub cluster: u32,
    pub id: u64,
    pub inc: u64,
    pub synced: bool,
    pub digest: u64,
    pub ndests: u64,
}

/// Minimum time between two full pushes to one peer because of a digest mismatch.
pub const REPAIR_GAP_MS: u64 = 3_000;
/// Heartbeats with a differing digest before a repair push.
pub const REPAIR_AFTER: u32 = 2;

/// Records a heartbeat. Returns false when the table is full. Sets `need_push` when the
/// peer is new, restarted (new incarnation), or its digest differs from `my_digest` for
/// [`REPAIR_AFTER`] heartbeats in a row (at most once per [`REPAIR_GAP_MS`]) while `quiet`
/// (no update sent or applied here lately: digests differ while updates are in flight, and
/// a storm must not turn into full pushes).
pub fn on_heartbeat(members: &mut [Member], hb: &Heartbeat, uri: &[u8], now_ms: u64, my_digest: u64, quiet: bool) -> bool {
    let idx = members.iter().position(|m| m.used != 0 && m.id == hb.id).or_else(|| members.iter().position(|m| m.used == 0));
    let Some(i) = idx else { return false };
    let m = &mut members[i];
    let fresh = m.used == 0 || m.inc != hb.inc;
    if fresh {
        *m = Member { used: 1, id: hb.id, inc: hb.inc, need_push: 1, last_push_ms: 0, ..Default::default() };
    }
    let n = uri.len().min(MAX_URI);
    m.uri[..n].copy_from_slice(&uri[..n]);
    m.uri_len = n as u32;
    m.last_ms = now_ms;
    m.synced = hb.synced as u32;
    m.digest = hb.digest;
    m.ndests = hb.ndests;
    if hb.digest != my_digest {
        m.mismatches = m.mismatches.saturating_add(1);
        if quiet && m.mismatches >= REPAIR_AFTER && now_ms.saturating_sub(m.last_push_ms) >= REPAIR_GAP_MS {
            m.need_push = 1;
        }
    } else {
        m.mismatches = 0;
    }
    true
}

/// Ids of the live nodes (peers heard within `timeout_ms`, plus self), sorted.
pub fn live_ids(members: &[Member], now_ms: u64, timeout_ms: u64, self_id: u64) -> Vec<u64> {
    let mut v: Vec<u64> = members.iter().filter(|m| m.alive(now_ms, timeout_ms)).map(|m| m.id).collect();
    v.push(self_id);
    v.sort_unstable();
    v.dedup();
    v
}

// ---- wire format --------------------------------------------------------------------------

/// One destination's registers on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub setid: i32,
    pub uri: Vec<u8>,
    pub h: Reg,
    pub a: Reg,
}

/// A decoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    Hb(Heartbeat),
    /// Updates (`sync`: part of a full push).
    Upd { cluster: u32, id: u64, sync: bool, recs: Vec<Rec>, bad_lines: usize },
}

pub fn encode_hb(hb: &Heartbeat) -> Vec<u8> {
    format!(
        "{PROTO} HB {} {:x} {} {} {:x} {}\n",
        hb.cluster, hb.id, hb.inc, hb.synced as u8, hb.digest, hb.ndests
    )
    .into_bytes()
}

fn rec_line(r: &Rec) -> Vec<u8> {
    let mut l = format!("{} ", r.setid).into_bytes();
    l.extend_from_slice(&r.uri);
    l.extend_from_slice(
        format!(
            " {} {:x} {:x} {} {:x} {:x}\n",
            r.h.bits, r.h.ver.ts, r.h.ver.origin, r.a.bits, r.a.ver.ts, r.a.ver.origin
        )
        .as_bytes(),
    );
    l
}

/// Encodes records into bodies of at most `max_body` bytes (a record never splits).
pub fn encode_upd(cluster: u32, id: u64, sync: bool, recs: &[Rec], max_body: usize) -> Vec<Vec<u8>> {
    let head = format!("{PROTO} {} {cluster} {id:x}\n", if sync { "SYNC" } else { "UPD" }).into_bytes();
    let mut out = Vec::new();
    let mut cur = head.clone();
    for r in recs {
        let l = rec_line(r);
        if cur.len() + l.len() > max_body && cur.len() > head.len() {
            out.push(std::mem::replace(&mut cur, head.clone()));
        }
        cur.extend_from_slice(&l);
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
    out
}

fn hex(t: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(t).ok()?, 16).ok()
}
fn dec<T: std::str::FromStr>(t: &[u8]) -> Option<T> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn parse_rec(line: &[u8]) -> Option<Rec> {
    let f: Vec<&[u8]> = line.split(|c| *c == b' ').filter(|t| !t.is_empty()).collect();
    if f.len() != 8 {
        return None;
    }
    let reg = |b: &[u8], ts: &[u8], o: &[u8]| -> Option<Reg> {
        Some(Reg { bits: dec::<i32>(b)?, ver: Version { ts: hex(ts)?, origin: hex(o)? } })
    };
    let h = reg(f[2], f[3], f[4])?;
    let a = reg(f[5], f[6], f[7])?;
    if h.bits & !HMASK != 0 || a.bits & !AMASK != 0 {
        return None;
    }
    Some(Rec { setid: dec(f[0])?, uri: f[1].to_vec(), h, a })
}

/// Decodes a body. Err: not a body of this protocol (or a malformed first line).
pub fn decode(body: &[u8]) -> Result<Wire, String> {
    let mut lines = body.split(|c| *c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().ok_or("empty body")?;
    let f: Vec<&[u8]> = first.split(|c| *c == b' ').filter(|t| !t.is_empty()).collect();
    if f.first() != Some(&PROTO.as_bytes()) {
        return Err("not a dispatcher cluster body (protocol tag)".into());
    }
    let bad = || format!("malformed first line: {}", String::from_utf8_lossy(first));
    match f.get(1).copied() {
        Some(b"HB") if f.len() == 8 => Ok(Wire::Hb(Heartbeat {
            cluster: dec(f[2]).ok_or_else(bad)?,
            id: hex(f[3]).ok_or_else(bad)?,
            inc: dec(f[4]).ok_or_else(bad)?,
            synced: f[5] == b"1",
            digest: hex(f[6]).ok_or_else(bad)?,
            ndests: dec(f[7]).ok_or_else(bad)?,
        })),
        Some(k @ (b"UPD" | b"SYNC")) if f.len() == 4 => {
            let mut recs = Vec::new();
            let mut bad_lines = 0;
            for l in lines.filter(|l| !l.is_empty()) {
                match parse_rec(l) {
                    Some(r) => recs.push(r),
                    None => bad_lines += 1,
                }
            }
            Ok(Wire::Upd { cluster: dec(f[2]).ok_or_else(bad)?, id: hex(f[3]).ok_or_else(bad)?, sync: k == b"SYNC", recs, bad_lines })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: u64, origin: u64) -> Version {
        Version { ts, origin }
    }
    fn reg(bits: i32, ts: u64, o: u64) -> Reg {
        Reg { bits, ver: v(ts, o) }
    }

    #[test]
    fn hlc_is_monotonic_and_passes_observed() {
        let mut c = Hlc::default();
        let a = c.tick(1000);
        let b = c.tick(1000);
        assert!(b > a);
        let t = c.tick(999); // wall clock went back
        assert!(t > b);
        assert!(c.observe((2000u64 << 16) + 5, 1990));
        assert!(c.tick(1000) > (2000u64 << 16) + 5);
        // more than 60 s ahead: refused, clock untouched
        let before = c.last;
        assert!(!c.observe((100_000u64) << 16, 1000));
        assert_eq!(c.last, before);
    }

    #[test]
    fn merge_newer_wins_duplicates_and_stale_change_nothing() {
        let mut r = reg(0, 0, 0);
        assert_eq!(r.merge(reg(1, 10, 1)), Merge::Applied);
        assert_eq!(r, reg(1, 10, 1));
        assert_eq!(r.merge(reg(1, 10, 1)), Merge::Duplicate);
        assert_eq!(r.merge(reg(0, 9, 7)), Merge::Stale);
        assert_eq!(r, reg(1, 10, 1));
        // same ts: origin breaks the tie, deterministically on every node
        assert_eq!(r.merge(reg(0, 10, 2)), Merge::Applied);
        assert_eq!(r.merge(reg(1, 10, 1)), Merge::Stale);
        assert_eq!(r, reg(0, 10, 2));
    }

    #[test]
    fn merge_is_order_independent() {
        let ups = [reg(1, 5, 1), reg(0, 7, 2), reg(3, 6, 3), reg(1, 7, 1), reg(0, 2, 9)];
        // every permutation (5! = 120), each update also delivered twice
        let mut idx: Vec<usize> = (0..ups.len()).collect();
        let mut results = Vec::new();
        permute(&mut idx, 0, &mut |p| {
            let mut r = Reg::default();
            for &i in p {
                r.merge(ups[i]);
                r.merge(ups[i]);
            }
            results.push(r);
        });
        assert_eq!(results.len(), 120);
        assert!(results.iter().all(|r| *r == reg(0, 7, 2)));
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[test]
    fn table_insert_find_and_full() {
        let mut t = vec![Entry::default(); 4];
        let k1 = key_of(b"sip:a@x");
        assert_eq!(key_of(b"SIP:A@X"), k1);
        let i = slot_get_or_insert(&mut t, 1, k1, DS_DISABLED | DS_INACTIVE).unwrap();
        assert_eq!(t[i].a.bits, DS_DISABLED);
        assert_eq!(t[i].h.bits, DS_INACTIVE);
        assert!(t[i].h.ver.is_config());
        assert_eq!(slot_find(&t, 1, k1), Some(i));
        assert_eq!(slot_find(&t, 2, k1), None);
        for s in 2..5 {
            assert!(slot_get_or_insert(&mut t, s, k1, 0).is_some());
        }
        assert_eq!(slot_get_or_insert(&mut t, 9, k1, 0), None);
        assert_eq!(slot_find(&t, 9, k1), None);
        assert!(slot_find(&t, 4, k1).is_some());
    }

    #[test]
    fn local_change_is_versioned_once() {
        let mut e = Entry { used: 1, ..Default::default() };
        let mut c = Hlc::default();
        let o = observe_local(&mut e, DS_TRYING | DS_PROBING, true, true, &mut c, 1000, 7);
        assert!(o.dirty);
        assert_eq!(e.h.bits, DS_TRYING | DS_PROBING);
        assert_eq!(e.h.ver.origin, 7);
        assert!(e.a.ver.is_config());
        e.dirty = 0;
        // nothing changed: nothing to send
        assert_eq!(observe_local(&mut e, DS_TRYING | DS_PROBING, true, true, &mut c, 1001, 7), LocalOutcome::default());
        // admin change: only the admin register moves
        let hv = e.h.ver;
        assert!(observe_local(&mut e, DS_DISABLED | DS_TRYING | DS_PROBING, true, true, &mut c, 1002, 7).dirty);
        assert_eq!(e.h.ver, hv);
        assert_eq!(e.a.bits, DS_DISABLED);
    }

    #[test]
    fn veto_is_local_and_ends_with_restore() {
        let mut e = Entry { used: 1, ..Default::default() };
        let mut c = Hlc::default();
        // not global: a veto, nothing to send, cluster register unchanged
        let o = observe_local(&mut e, DS_INACTIVE | DS_PROBING, false, true, &mut c, 1000, 7);
        assert_eq!(o, LocalOutcome::default());
        assert_eq!(e.veto, 1);
        assert_eq!(e.h.bits, 0);
        // the cluster says the destination is fine: recorded, not written while vetoed
        let r = apply_remote(&mut e, reg(0, 5000 << 16, 2), Reg::default(), 7, false);
        assert_eq!(r.health, Merge::Applied);
        assert_eq!(r.write_mask, 0);
        // still down locally: the veto holds
        assert_eq!(observe_local(&mut e, DS_INACTIVE | DS_PROBING, false, true, &mut c, 1001, 7), LocalOutcome::default());
        assert_eq!(e.veto, 1);
        // seen healthy here again: the veto ends, the cluster state comes back
        let o = observe_local(&mut e, DS_PROBING, false, true, &mut c, 1002, 7);
        assert_eq!(e.veto, 0);
        assert_eq!(o.restore, Some(0));
        assert!(!o.dirty);
    }

    #[test]
    fn remote_apply_writes_only_newer_registers() {
        let mut e = Entry { used: 1, ..Default::default() };
        let r = apply_remote(&mut e, reg(DS_INACTIVE, 10, 1), reg(0, 0, 0), 5, false);
        assert_eq!(r.health, Merge::Applied);
        assert_eq!(r.admin, Merge::Duplicate);
        assert_eq!((r.write_mask, r.write_bits), (HMASK, DS_INACTIVE));
        // replay: nothing
        let r = apply_remote(&mut e, reg(DS_INACTIVE, 10, 1), reg(0, 0, 0), 5, false);
        assert_eq!(r.write_mask, 0);
        assert_eq!(r.health, Merge::Duplicate);
        // stale health, newer admin
        let r = apply_remote(&mut e, reg(0, 9, 1), reg(DS_DISABLED, 11, 3), 5, false);
        assert_eq!(r.health, Merge::Stale);
        assert_eq!((r.write_mask, r.write_bits), (AMASK, DS_DISABLED));
        assert_eq!(e.h.bits, DS_INACTIVE);
        // a local change recorded after a remote apply is not mistaken for a change
        let mut c = Hlc::default();
        assert_eq!(observe_local(&mut e, DS_INACTIVE | DS_DISABLED, true, true, &mut c, 1, 5), LocalOutcome::default());
    }

    #[test]
    fn down_mark_of_a_non_prober_is_replicated_once_then_held() {
        let mut c = Hlc::default();
        let mut e = Entry { used: 1, ..Default::default() };
        let o = observe_local(&mut e, DS_INACTIVE | DS_PROBING, true, false, &mut c, 1000, 7);
        assert!(o.dirty);
        assert_eq!(e.h.bits, DS_INACTIVE | DS_PROBING);
        assert_eq!(e.veto, 1);
        e.dirty = 0;
        let v = e.h.ver;
        // marked again: local only
        assert_eq!(observe_local(&mut e, DS_TRYING | DS_PROBING, true, false, &mut c, 1100, 7), LocalOutcome::default());
        assert_eq!(e.h.ver, v);
        // the prober brings it back up: recorded, not written (this node's path is broken)
        assert_eq!(apply_remote(&mut e, reg(DS_PROBING, 2000 << 16, 2), Reg::default(), 7, false).write_mask, 0);
        // this node's own probes see it up: the veto ends, nothing to restore (same bits)
        let o = observe_local(&mut e, DS_PROBING, true, false, &mut c, 2100, 7);
        assert_eq!(e.veto, 0);
        assert_eq!(o, LocalOutcome::default());
        // an "up" from a non-prober is replicated and holds no veto
        let mut u = Entry { used: 1, h: reg(DS_INACTIVE, 5, 2), ..Default::default() };
        assert!(observe_local(&mut u, 0, true, false, &mut c, 3000, 7).dirty);
        assert_eq!(u.veto, 0);
    }

    #[test]
    fn contradicted_own_down_mark_becomes_a_veto() {
        let mut c = Hlc::default();
        let mut e = Entry { used: 1, ..Default::default() };
        // this node (7, not the prober) marked it down, replicated (seen as probing here, so
        // that the contradiction rule alone is tested)
        assert!(observe_local(&mut e, DS_INACTIVE | DS_PROBING, true, true, &mut c, 1000, 7).dirty);
        e.dirty = 0;
        // the prober (2) says up, newer: keep down locally as a veto, no write
        let r = apply_remote(&mut e, reg(DS_PROBING, 2000 << 16, 2), Reg::default(), 7, false);
        assert_eq!(r.health, Merge::Applied);
        assert_eq!(r.write_mask, 0);
        assert_eq!(e.veto, 1);
        assert_eq!(e.local_h, DS_INACTIVE | DS_PROBING);
        assert_eq!(e.h.bits, DS_PROBING);
        // further marks here stay local
        assert!(!observe_local(&mut e, DS_INACTIVE | DS_PROBING, true, true, &mut c, 2100, 7).dirty);
        // the prober itself is never vetoed by the rule; nor a node whose last write was "up"
        let mut p = Entry { used: 1, ..Default::default() };
        observe_local(&mut p, DS_INACTIVE | DS_PROBING, true, true, &mut c, 3000, 7);
        assert_eq!(apply_remote(&mut p, reg(DS_PROBING, 4000 << 16, 2), Reg::default(), 7, true).write_mask, HMASK);
        assert_eq!(p.veto, 0);
        let mut q = Entry { used: 1, ..Default::default() };
        observe_local(&mut q, DS_PROBING, true, true, &mut c, 5000, 7);
        assert_eq!(apply_remote(&mut q, reg(0, 6000 << 16, 2), Reg::default(), 7, false).write_mask, HMASK);
        assert_eq!(q.veto, 0);
    }

    #[test]
    fn rebaseline_keeps_runtime_versions_and_takes_new_config() {
        // runtime health (IP, versioned) survives a reload that says AP; config admin follows
        let mut e = Entry { used: 1, h: reg(DS_INACTIVE | DS_PROBING, 9, 1), ..Default::default() };
        assert_eq!(rebaseline(&mut e, DS_DISABLED | DS_PROBING), (HMASK, DS_INACTIVE | DS_PROBING));
        assert_eq!(e.a.bits, DS_DISABLED);
        assert!(e.a.ver.is_config());
        // nothing differs: nothing to write
        assert_eq!(rebaseline(&mut e, DS_DISABLED | DS_INACTIVE | DS_PROBING), (0, 0));
        // versioned admin wins too
        let mut f = Entry { used: 1, a: reg(DS_DISABLED, 9, 1), ..Default::default() };
        assert_eq!(rebaseline(&mut f, 0), (AMASK, DS_DISABLED));
        // and after the rebaseline the flusher sees no local change
        let mut c = Hlc::default();
        assert_eq!(observe_local(&mut f, DS_DISABLED, true, true, &mut c, 1, 1), LocalOutcome::default());
    }

    #[test]
    fn admin_write_bumps_both_and_ends_veto() {
        let mut e = Entry { used: 1, veto: 1, ..Default::default() };
        let mut c = Hlc::default();
        admin_write(&mut e, DS_DISABLED, &mut c, 100, 3);
        assert_eq!(e.veto, 0);
        assert_eq!(e.dirty, 1);
        assert_eq!(e.a.bits, DS_DISABLED);
        assert!(!e.h.ver.is_config() && !e.a.ver.is_config());
        assert!(e.a.ver > e.h.ver);
    }

    #[test]
    fn digest_ignores_config_and_order() {
        let mk = |s: i32, k: u64, h: Reg| Entry { used: 1, setid: s, key: k, h, gen: 1, ..Default::default() };
        let a = [mk(1, 10, reg(1, 5, 1)), mk(1, 11, Reg::default()), mk(2, 10, reg(0, 6, 2))];
        let b = [a[2], a[0], a[1]];
        assert_eq!(digest(a.iter(), 1), digest(b.iter(), 1));
        assert_eq!(digest([a[1]].iter(), 1), 0);
        let mut c = a;
        c[0].h.ver.ts = 6;
        assert_ne!(digest(a.iter(), 1), digest(c.iter(), 1));
        // an entry of an old list generation does not count
        let mut d = a;
        d[0].gen = 0;
        assert_eq!(digest(d.iter(), 1), digest([a[1], a[2]].iter(), 1));
    }

    #[test]
    fn rendezvous_spreads_and_moves_only_the_leavers_share() {
        let nodes = [mix(1), mix(2), mix(3)];
        let keys: Vec<u64> = (0..3000).map(|i| key_of(format!("sip:10.0.{}.{}:5060", i / 250, i % 250).as_bytes())).collect();
        let own3: Vec<u64> = keys.iter().map(|k| owner(&nodes, 1, *k).unwrap()).collect();
        for n in nodes {
            let c = own3.iter().filter(|o| **o == n).count();
            assert!((800..=1200).contains(&c), "share {c}");
        }
        // node 3 leaves: only its destinations move
        let own2: Vec<u64> = keys.iter().map(|k| owner(&nodes[..2], 1, *k).unwrap()).collect();
        for (a, b) in own3.iter().zip(&own2) {
            if *a != nodes[2] {
                assert_eq!(a, b);
            }
        }
        // order of the member list does not matter
        let rev = [nodes[2], nodes[0], nodes[1]];
        assert!(keys.iter().all(|k| owner(&nodes, 1, *k) == owner(&rev, 1, *k)));
    }

    #[test]
    fn bounded_assignment_is_balanced_deterministic_and_stable() {
        let keys: Vec<(i32, u64)> = (0..30).map(|i| (1, key_of(format!("sip:127.0.0.1:{}", 10000 + i * 37).as_bytes()))).collect();
        for seed in 0..200u64 {
            let live = [mix(seed * 3 + 1), mix(seed * 3 + 2), mix(seed * 3 + 3)];
            let own = assign(&keys, &live);
            for n in live {
                let c = own.iter().filter(|o| **o == n).count();
                assert!((6..=12).contains(&c), "seed {seed}: share {c}");
            }
            // same result from another input order and another member order
            let mut rk = keys.clone();
            rk.reverse();
            let mut rown = assign(&rk, &[live[2], live[0], live[1]]);
            rown.reverse();
            assert_eq!(own, rown);
        }
        // a leave moves the leaver's share and few others
        let keys: Vec<(i32, u64)> = (0..3000).map(|i| (i % 2, key_of(format!("sip:gw{i}").as_bytes()))).collect();
        let live = [mix(11), mix(12), mix(13)];
        let own3 = assign(&keys, &live);
        let own2 = assign(&keys, &live[..2]);
        let moved_others = own3.iter().zip(&own2).filter(|(a, b)| **a != live[2] && a != b).count();
        assert!(moved_others <= 3000 / 10, "{moved_others} destinations of the survivors moved");
        assert!(own2.iter().all(|o| *o != live[2]));
        assert_eq!(assign(&keys, &[]).len(), 3000);
        assert_eq!(assign_cap(30, 3), 12);
        assert_eq!(assign_cap(0, 0), 1);
    }

    #[test]
    fn probing_modes() {
        let live = [1u64, 5, 9];
        let k = key_of(b"sip:gw");
        let o = owner(&live, 1, k).unwrap();
        let probers: Vec<u64> = live.iter().copied().filter(|n| should_probe(Probing::Distributed, &live, *n, 1, k, false)).collect();
        assert_eq!(probers, vec![o]);
        assert!(live.iter().all(|n| should_probe(Probing::All, &live, *n, 1, k, false)));
        let l: Vec<u64> = live.iter().copied().filter(|n| should_probe(Probing::Leader, &live, *n, 1, k, false)).collect();
        assert_eq!(l, vec![1]);
        // vetoed: probed here whatever the owner
        assert!(live.iter().all(|n| should_probe(Probing::Distributed, &live, *n, 1, k, true)));
        assert!(!health_is_global(Probing::All, true, true));
        assert!(health_is_global(Probing::Distributed, true, false));
        assert!(!health_is_global(Probing::Distributed, false, false));
        assert_eq!(Probing::from_param(1), Probing::Distributed);
        assert_eq!(Probing::from_param(7), Probing::Distributed);
    }

    #[test]
    fn membership_push_on_new_restart_and_lasting_mismatch() {
        let mut m = vec![Member::default(); 2];
        let mut hb = Heartbeat { cluster: 0, id: 42, inc: 1, synced: true, digest: 5, ndests: 3 };
        assert!(on_heartbeat(&mut m, &hb, b"sip:dispatcher@127.0.0.1:5070", 1000, 5, true));
        assert_eq!(m[0].need_push, 1);
        assert_eq!(m[0].uri(), b"sip:dispatcher@127.0.0.1:5070");
        m[0].need_push = 0;
        m[0].last_push_ms = 1000;
        // same incarnation, same digest: nothing
        assert!(on_heartbeat(&mut m, &hb, b"u", 2000, 5, true));
        assert_eq!(m[0].need_push, 0);
        // digest differs once: wait; twice but within the repair gap: wait; later: push
        hb.digest = 6;
        on_heartbeat(&mut m, &hb, b"u", 2100, 5, true);
        assert_eq!(m[0].need_push, 0);
        on_heartbeat(&mut m, &hb, b"u", 2200, 5, true);
        assert_eq!(m[0].need_push, 0);
        // not quiet (updates in flight): no repair push yet
        on_heartbeat(&mut m, &hb, b"u", 4100, 5, false);
        assert_eq!(m[0].need_push, 0);
        on_heartbeat(&mut m, &hb, b"u", 4100, 5, true);
        assert_eq!(m[0].need_push, 1);
        // restart: new incarnation, push
        m[0].need_push = 0;
        hb.inc = 2;
        on_heartbeat(&mut m, &hb, b"u", 4200, 6, true);
        assert_eq!(m[0].need_push, 1);
        assert_eq!(m[0].inc, 2);
        // table full
        let other = Heartbeat { id: 7, ..hb.clone() };
        assert!(on_heartbeat(&mut m, &other, b"v", 4300, 6, true));
        let third = Heartbeat { id: 8, ..hb.clone() };
        assert!(!on_heartbeat(&mut m, &third, b"w", 4300, 6, true));
        assert_eq!(live_ids(&m, 4300, 1000, 3), vec![3, 7, 42]);
        assert_eq!(live_ids(&m, 9000, 1000, 3), vec![3]);
    }

    #[test]
    fn wire_roundtrip_and_chunking() {
        let hb = Heartbeat { cluster: 3, id: 0xdead_beef, inc: 17, synced: true, digest: u64::MAX, ndests: 30 };
        assert_eq!(decode(&encode_hb(&hb)).unwrap(), Wire::Hb(hb));
        let recs: Vec<Rec> = (0..100)
            .map(|i| Rec {
                setid: i % 3,
                uri: format!("sip:10.0.0.{i}:5060;transport=udp").into_bytes(),
                h: reg(DS_INACTIVE | DS_PROBING, 1 << 40 | i as u64, 99),
                a: reg(if i % 2 == 0 { DS_DISABLED } else { 0 }, 0, 0),
            })
            .collect();
        let bodies = encode_upd(0, 99, false, &recs, 1000);
        assert!(bodies.len() > 3);
        assert!(bodies.iter().all(|b| b.len() <= 1000));
        let mut got = Vec::new();
        for b in &bodies {
            match decode(b).unwrap() {
                Wire::Upd { sync, recs, bad_lines, id, .. } => {
                    assert!(!sync);
                    assert_eq!(bad_lines, 0);
                    assert_eq!(id, 99);
                    got.extend(recs);
                }
                w => panic!("unexpected {w:?}"),
            }
        }
        assert_eq!(got, recs);
        let s = encode_upd(0, 1, true, &recs[..1], 16000);
        assert!(matches!(decode(&s[0]).unwrap(), Wire::Upd { sync: true, .. }));
        assert!(encode_upd(0, 1, false, &[], 16000).is_empty());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode(b"").is_err());
        assert!(decode(b"hello world").is_err());
        assert!(decode(b"DSC1 HB 0 zz 1 1 0 0").is_err());
        assert!(decode(b"DSC1 XX 0 1").is_err());
        assert!(decode(b"DSC2 UPD 0 1\n").is_err());
        // bad record lines are counted, the good ones kept
        let w = decode(b"DSC1 UPD 0 1\n1 sip:a 1 5 1 0 0 0\nbroken line\n1 sip:b 64 5 1 0 0 0\n1 sip:c 0 5 1 4 6 1\r\n").unwrap();
        match w {
            Wire::Upd { recs, bad_lines, .. } => {
                assert_eq!(bad_lines, 2);
                assert_eq!(recs.len(), 2);
                assert_eq!(recs[1].a.bits, DS_DISABLED);
            }
            w => panic!("unexpected {w:?}"),
        }
    }
}
