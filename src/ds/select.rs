//! Selection machinery shared by the algorithms (spec §6.1–6.3), in plain Rust.
//!
//! Works on a set of a [`snapshot`](crate::ds::snapshot): the index mapping with the forward
//! probe over unusable destinations, the round-robin cursor (lock-free), and the order of the
//! failover records.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::ds::dest::DNS_MAX_ADDRS;
use crate::ds::snapshot::{DestRec, SetRec, SetView};
use crate::ds::weights;

/// Algorithm numbers.
pub const ALG_HASH_CALLID: i32 = 0;
pub const ALG_HASH_FROM: i32 = 1;
pub const ALG_HASH_TO: i32 = 2;
pub const ALG_HASH_RURI: i32 = 3;
pub const ALG_RR: i32 = 4;
pub const ALG_HASH_AUTH: i32 = 5;
pub const ALG_RANDOM: i32 = 6;
pub const ALG_HASH_PV: i32 = 7;
pub const ALG_SERIAL: i32 = 8;
pub const ALG_WEIGHT: i32 = 9;
pub const ALG_CALLLOAD: i32 = 10;
pub const ALG_RELWEIGHT: i32 = 11;
pub const ALG_PARALLEL: i32 = 12;
pub const ALG_LATENCY: i32 = 13;
/// Kamailio 6.1: round-robin if all destinations share one priority > 0, else serial.
pub const ALG_RR_SERIAL: i32 = 14;
pub const ALG_OVERLOAD: i32 = 64;

/// Number of destinations taking part in index arithmetic (the last one is reserved as the
/// default when `use_default` is on and the set has more than one).
fn span(nr: usize, use_default: bool) -> usize {
    if use_default && nr != 1 {
        nr - 1
    } else {
        nr
    }
}

/// Maps `hash` to a usable destination: `hash % N`, then forward probing; with
/// `use_default`, the default destination when all others are unusable.
#[inline]
pub fn probe(dests: &[DestRec], hash: u32, use_default: bool) -> Option<usize> {
    probe_with(dests, hash, use_default, &mut |_| false)
}

/// [`probe`] with an extra per-visit skip test (alg 64's overload control).
#[inline]
pub fn probe_with(dests: &[DestRec], hash: u32, use_default: bool, skip: &mut impl FnMut(usize) -> bool) -> Option<usize> {
    let nr = dests.len();
    if nr == 0 {
        return None;
    }
    let n = span(nr, use_default);
    probe_span(dests, (hash as usize) % n, n, use_default, skip).map(|(i, _)| i)
}

/// [`probe`], with the destination chosen.
#[inline]
pub fn probe_dest(dests: &[DestRec], hash: u32, use_default: bool) -> Option<(usize, &DestRec)> {
    let nr = dests.len();
    if nr == 0 {
        return None;
    }
    let n = span(nr, use_default);
    probe_span(dests, (hash as usize) % n, n, use_default, &mut |_| false)
}

/// [`probe_dest`] from the first destination (algs 8 and 12: `0 % N` is 0).
#[inline]
pub fn probe_first(dests: &[DestRec], use_default: bool) -> Option<(usize, &DestRec)> {
    let nr = dests.len();
    if nr == 0 {
        return None;
    }
    probe_span(dests, 0, span(nr, use_default), use_default, &mut |_| false)
}

/// The probe from `start` (< `n`) over the first `n` destinations ([`span`]).
#[inline(always)]
fn probe_span<'a>(dests: &'a [DestRec], start: usize, n: usize, use_default: bool, skip: &mut impl FnMut(usize) -> bool) -> Option<(usize, &'a DestRec)> {
    let nr = dests.len();
    let mut i = start;
    loop {
        let d = dests.get(i)?;
        if d.usable() && !skip(i) {
            return Some((i, d));
        }
        i = (i + 1) % n;
        if i == start {
            if use_default {
                let j = nr - 1;
                let d = dests.get(j)?;
                return if d.usable() && !skip(j) { Some((j, d)) } else { None };
            }
            return None;
        }
    }
}

/// Overload control check of alg 64 at time `now_us`: while the rate set by
/// `ds_oc_set_attrs` is valid, each visit advances the destination's table cursor and a skip
/// mark makes the destination unusable for this selection.
pub fn oc_skip(d: &DestRec, now_us: u64) -> bool {
    if d.oc_time_us.load(Ordering::Relaxed) < now_us {
        return false;
    }
    let i = d.oc_idx.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some((v + 1) % 100)).unwrap_or(0);
    !d.oc_use(i)
}

/// Round-robin: takes the cursor and advances it (`last = (last+1) % nr`). Returns
/// `(hash, cursor value after the step)`; pass both to [`rr_commit`] after probing.
pub fn rr_take(set: &SetRec) -> (u32, u32) {
    let nr = set.nr.max(1);
    let mut cur = set.last.load(Ordering::Relaxed);
    loop {
        let next = (cur.wrapping_add(1)) % nr;
        match set.last.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return (cur, next),
            Err(v) => cur = v,
        }
    }
}

/// After probing, continue the sequence after the destination actually used, unless another
/// process moved the cursor in the meantime.
#[inline(always)]
pub fn rr_commit(set: &SetRec, vlast: u32, chosen: usize) {
    let nr = set.nr.max(1);
    let next = (chosen as u32).wrapping_add(1) % nr;
    // the common case (the destination at the cursor was usable): the cursor already holds
    // `next`; a successful exchange would store the same value, a failed one nothing
    if next != vlast {
        let _ = set.last.compare_exchange(vlast, next, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Indexes of the failover records after selecting `selected` (spec §6.3): the selected one,
/// then the usable ones after it, then those before it, without the default destination,
/// up to `limit` records; then the default one (with `use_default`) when there is room.
/// `extra_skip(i)` leaves out more destinations (alg 10: at max load).
pub fn failover_order(
    dests: &[DestRec],
    selected: usize,
    use_default: bool,
    limit: u32,
    extra_skip: &dyn Fn(usize) -> bool,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(dests.len().min(limit as usize));
    failover_each(dests, selected, use_default, limit, extra_skip, |i| {
        out.push(i);
        true
    });
    out
}

/// [`failover_order`] without a list: `emit(i)` for each index in order; stops early,
/// returning false, when `emit` does.
#[inline(always)]
pub fn failover_each(
    dests: &[DestRec],
    selected: usize,
    use_default: bool,
    limit: u32,
    extra_skip: impl Fn(usize) -> bool,
    emit: impl FnMut(usize) -> bool,
) -> bool {
    FailoverIter::new(dests, selected, use_default, limit, extra_skip).all(emit)
}

/// The sequence of [`failover_order`] as an iterator (the request path writes the records
/// as it goes, in its own loop): the selected one, then the usable ones after it (wrapping
/// around), then the default destination.
pub struct FailoverIter<'a, F> {
    dests: &'a [DestRec],
    selected: usize,
    use_default: bool,
    limit: usize,
    extra_skip: F,
    /// Emitted so far.
    n: usize,
    /// Next position of the scan.
    j: usize,
    /// 0: the selected one next, 1: scanning, 2: done.
    phase: u8,
}

impl<'a, F: Fn(usize) -> bool> FailoverIter<'a, F> {
    #[inline(always)]
    pub fn new(dests: &'a [DestRec], selected: usize, use_default: bool, limit: u32, extra_skip: F) -> Self {
        let phase = if selected >= dests.len() || limit == 0 { 2 } else { 0 };
        FailoverIter { dests, selected, use_default, limit: limit as usize, extra_skip, n: 0, j: selected + 1, phase }
    }
}

impl<F: Fn(usize) -> bool> Iterator for FailoverIter<'_, F> {
    type Item = usize;
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        let nr = self.dests.len();
        match self.phase {
            0 => {
                self.phase = 1;
                self.n = 1;
                Some(self.selected)
            }
            1 => {
                while self.n < self.limit && self.j != self.selected {
                    if self.j == nr {
                        self.j = 0;
                        continue;
                    }
                    let c = self.j;
                    self.j += 1;
                    let is_default = self.use_default && c == nr - 1;
                    if self.dests.get(c).is_some_and(|d| d.usable()) && !is_default && !(self.extra_skip)(c) {
                        self.n += 1;
                        return Some(c);
                    }
                }
                // the scan is over: the default destination once, when there is room
                self.phase = 2;
                if self.use_default && self.selected != nr - 1 && self.n < self.limit {
                    self.n += 1;
                    return Some(nr - 1);
                }
                None
            }
            _ => None,
        }
    }
}

/// One entry of the alg-13 working list: destination index (-1 = unusable), its relative
/// priority, and its flags when the list was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranked {
    pub idx: i32,
    pub prio: i32,
    pub flags: i32,
}

/// Algorithm 13 (latency-optimised round-robin): the destinations visited from `last`
/// (rotating at `nr-1` with `use_default`, exactly as the C module, which may visit an index
/// twice), each with `priority - latency/priority` (at least 1 when priority > 0) and -1 for
/// unusable ones, stably sorted by that value, highest first.
pub fn alg13_rank(dests: &[DestRec], last: usize) -> Vec<Ranked> {
    alg13_rank_with(dests, last, false)
}

/// As [`alg13_rank`], with `use_default`.
pub fn alg13_rank_with(dests: &[DestRec], last: usize, use_default: bool) -> Vec<Ranked> {
    let nr = dests.len();
    let mut out = Vec::with_capacity(nr);
    if nr == 0 {
        return out;
    }
    let n = span(nr, use_default);
    let mut z = last % nr;
    for _ in 0..nr {
        let Some(d) = dests.get(z) else { break };
        let prio = d.priority;
        let lat = if d.cc != 0 { (d.latency_est() - d.latency_avg()) as i32 } else { d.latency_est() as i32 };
        let flags = d.flags.load(Ordering::Relaxed);
        if d.usable() {
            let handicap = if lat > prio && prio > 0 { lat / prio } else { 0 };
            let mut rp = prio - handicap;
            if rp < 1 && prio > 0 {
                rp = 1;
            }
            out.push(Ranked { idx: z as i32, prio: rp, flags });
        } else {
            out.push(Ranked { idx: -1, prio: -1, flags });
        }
        z = (z + 1) % n;
    }
    // the C module bubble-sorts (stable, descending): a stable sort gives the same order
    out.sort_by_key(|a| std::cmp::Reverse(a.prio));
    out
}

/// Least-loaded usable destination below its `maxload` (alg 10); first wins on ties.
pub fn least_loaded(dests: &[DestRec]) -> Option<usize> {
    let mut best: Option<(usize, i32)> = None;
    for (j, d) in dests.iter().enumerate() {
        let load = d.load();
        if d.usable() && (d.maxload == 0 || load < d.maxload) && best.map(|(_, t)| load < t).unwrap_or(true) {
            best = Some((j, load));
        }
    }
    best.map(|(j, _)| j)
}

/// Algorithm 15 (Kamailio master): priority, then weight, SRV-like.
pub const ALG_PRIORITY_WEIGHT: i32 = 15;

/// Alg 15: the slot under the cursor, and the cursor moved on (`pwlist[pwlast]`,
/// `pwlast = (pwlast + 1) % 100`; lock-free, the C module takes the set lock).
pub fn pw_take(set: &SetRec) -> u32 {
    let k = set
        .pwlast
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| Some((v + 1) % 100))
        .unwrap_or(0);
    set.pwlist.get(k as usize % 100).map(|a| a.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Rebuilds the alg-11 table of a set from its destinations' runtime rweights and current
/// state (`dp_init_relative_weights`). When no destination has a usable rweight the table is
/// left as it is (a state change), or cleared with `clear` (what a build makes of it). The
/// caller serialises concurrent rebuilds of a running set.
pub fn rw_rebuild(set: &SetView<'_>, rng: &mut dyn FnMut() -> u32, clear: bool) {
    let rw: Vec<i32> = set.dests.iter().map(|d| d.rweight_rt.load(Ordering::Relaxed)).collect();
    let us: Vec<bool> = set.dests.iter().map(|d| d.usable()).collect();
    let Some(t) = weights::rweight_table(&rw, &us, rng).or(clear.then_some([0u32; 100])) else { return };
    for (slot, v) in set.rec.rwlist.iter().zip(t.iter()) {
        slot.store(*v, Ordering::Relaxed);
    }
}

/// Rebuilds the alg-15 table of a set from the current state of its destinations
/// (`dp_init_priority_weights`; the C module takes no lock either).
pub fn pw_rebuild(set: &SetView<'_>, rng: &mut dyn FnMut() -> u32) {
    let n = set.dests.len();
    // on the stack for sets up to 64 destinations (this can run in a request: a cfg mark)
    const STACK: usize = 64;
    if n <= STACK {
        let (mut p, mut w, mut u) = ([0i32; STACK], [0i32; STACK], [false; STACK]);
        for (j, d) in set.dests.iter().enumerate() {
            p[j] = d.priority;
            w[j] = d.weight;
            u[j] = d.usable();
        }
        set.rec.store_pwlist(&weights::pw_table(&p[..n], &w[..n], &u[..n], rng));
    } else {
        let p: Vec<i32> = set.dests.iter().map(|d| d.priority).collect();
        let w: Vec<i32> = set.dests.iter().map(|d| d.weight).collect();
        let u: Vec<bool> = set.dests.iter().map(|d| d.usable()).collect();
        set.rec.store_pwlist(&weights::pw_table(&p, &w, &u, rng));
    }
}

/// `ds_is_from_list` mode bits.
pub const MATCH_NOPORT: i32 = 1;
pub const MATCH_NOPROTO: i32 = 2;
pub const MATCH_ACTIVE: i32 = 4;
/// Kamailio 5.8: a destination with a socket matches only on that receiving socket.
pub const MATCH_SOCKET: i32 = 8;
/// Kamailio 5.8: best match by score (port and protocol filters bypassed).
pub const MATCH_BEST: i32 = 16;

/// Scores of the best-match mode (the C module's `DS_MATCHED_*`).
pub const SCORE_ADDR: u8 = 1;
pub const SCORE_PORT: u8 = 2;
pub const SCORE_PROTO: u8 = 4;
pub const SCORE_SOCK: u8 = 8;
pub const SCORE_ALL: u8 = SCORE_ADDR | SCORE_PORT | SCORE_PROTO | SCORE_SOCK;

/// What `ds_is_from_list` compares a destination with (besides the address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FromKey {
    pub port: u16,
    pub proto: u8,
    /// The receiving socket (`rcv.bind_address`, opaque; compared with a destination's
    /// socket handle).
    pub bind: usize,
}

/// Finds the `ds_is_from_list` match among candidates whose address equals the one
/// looked for, offered in the C module's walk order (`offer`), then `finish`.
///
/// * Without mode bit 16 the first candidate passing the filters wins: port (unless bit 1;
///   a port-less destination passes), protocol (unless bit 2), active (bit 4), socket
///   (bit 8: a destination with a socket passes only on that receiving socket).
/// * With bit 16 (best match) the port and protocol filters are bypassed; bits 4 and 8
///   still filter. Each candidate scores address 1, +2 port, +4 protocol, +8 socket for each
///   component the destination has and the message equals; 15 wins at once, otherwise the
///   highest score, the first one met on a tie. Kamailio 5.8.x drops a candidate with a
///   component set but different; from 6.0.2 it only misses those points.
/// * Bits 8 and 16 exist from Kamailio 5.8; older releases ignore them.
pub struct FromMatch<'a> {
    mode: i32,
    key: FromKey,
    strict: bool,
    best_score: u8,
    best: Option<(i32, &'a DestRec)>,
}

impl<'a> FromMatch<'a> {
    /// For the emulated release (`compat`).
    pub fn new(mode: i32, key: FromKey) -> FromMatch<'a> {
        let known = if crate::ds::compat::ge(5, 8, 0) {
            MATCH_NOPORT | MATCH_NOPROTO | MATCH_ACTIVE | MATCH_SOCKET | MATCH_BEST
        } else {
            MATCH_NOPORT | MATCH_NOPROTO | MATCH_ACTIVE
        };
        FromMatch { mode: mode & known, key, strict: !crate::ds::compat::ge(6, 0, 2), best_score: 0, best: None }
    }

    /// Offers a candidate of set `setid` whose address matched; `Some` when it is the match
    /// (stop looking), `None` to go on.
    pub fn offer(&mut self, setid: i32, d: &'a DestRec) -> Option<(i32, &'a DestRec)> {
        let (m, k) = (self.mode, self.key);
        if m & MATCH_ACTIVE != 0 && !d.usable() {
            return None;
        }
        if m & MATCH_SOCKET != 0 && d.sock != 0 && d.sock != k.bind {
            return None;
        }
        if m & MATCH_BEST == 0 {
            let port_ok = m & MATCH_NOPORT != 0 || d.port == 0 || d.port == k.port;
            let proto_ok = m & MATCH_NOPROTO != 0 || d.proto == k.proto;
            return if port_ok && proto_ok { Some((setid, d)) } else { None };
        }
        let mut score = SCORE_ADDR;
        for (set, equal, points) in [
            (d.port != 0, d.port == k.port, SCORE_PORT),
            (d.proto != 0, d.proto == k.proto, SCORE_PROTO),
            (d.sock != 0, d.sock == k.bind, SCORE_SOCK),
        ] {
            if set {
                if equal {
                    score |= points;
                } else if self.strict {
                    return None;
                }
            }
        }
        if score == SCORE_ALL {
            return Some((setid, d));
        }
        if score > self.best_score {
            self.best_score = score;
            self.best = Some((setid, d));
        }
        None
    }

    /// The best candidate of mode 16 (None without bit 16: only `offer` matches).
    pub fn finish(self) -> Option<(i32, &'a DestRec)> {
        if self.mode & MATCH_BEST != 0 {
            self.best
        } else {
            None
        }
    }
}

/// A fixed-capacity list of resolved addresses (`DNS_MAX_ADDRS`), filled without heap
/// allocation on the request path.
#[derive(Clone, Copy)]
pub struct AddrList {
    n: usize,
    a: [IpAddr; DNS_MAX_ADDRS],
}

impl Default for AddrList {
    fn default() -> Self {
        AddrList::new()
    }
}

impl AddrList {
    pub const fn new() -> AddrList {
        AddrList { n: 0, a: [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); DNS_MAX_ADDRS] }
    }
    pub fn clear(&mut self) {
        self.n = 0;
    }
    /// Appends `ip`; false (nothing stored) when full.
    pub fn push(&mut self, ip: IpAddr) -> bool {
        match self.a.get_mut(self.n) {
            Some(slot) => {
                *slot = ip;
                self.n += 1;
                true
            }
            None => false,
        }
    }
    pub fn is_full(&self) -> bool {
        self.n >= DNS_MAX_ADDRS
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn first(&self) -> Option<IpAddr> {
        self.as_slice().first().copied()
    }
    pub fn as_slice(&self) -> &[IpAddr] {
        self.a.get(..self.n).unwrap_or(&[])
    }
    /// Keeps the first `n` addresses.
    pub fn truncate(&mut self, n: usize) {
        self.n = self.n.min(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::attrs::Attrs;
    use crate::ds::dest::Dest;
    use crate::ds::order::DestSet;
    use crate::ds::snapshot::{build, testutil, Snap, DS_DISABLED, DS_INACTIVE, DS_TRYING};
    use crate::ds::uri::{Proto, Scheme};

    fn mkset(flags: &[i32]) -> (*mut crate::ds::snapshot::Header, usize) {
        let dests = flags
            .iter()
            .enumerate()
            .map(|(i, f)| Dest {
                setid: 1,
                uri: format!("sip:127.0.0.1:{}", 5080 + i).into_bytes(),
                flags: *f,
                priority: 0,
                attrs: Attrs::default(),
                scheme: Scheme::Sip,
                host: b"127.0.0.1".to_vec(),
                port: 5080 + i as u16,
                proto: Proto::None,
                ip: None,
                more_ips: vec![],
                sock: 0,
                line: 1,
                col: 1,
            })
            .collect();
        let p = build(&[DestSet { id: 1, dests }], 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7)
            .expect("build");
        let size = unsafe { (*p).total_size };
        (p, size)
    }

    #[test]
    fn probe_skips_inactive_and_disabled_not_trying() {
        let (p, sz) = mkset(&[DS_INACTIVE, 0, DS_DISABLED, DS_TRYING]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        assert_eq!(probe(d, 0, false), Some(1));
        assert_eq!(probe(d, 2, false), Some(3));
        assert_eq!(probe(d, 3, false), Some(3));
        assert_eq!(probe(d, 4, false), Some(1));
        // use_default: N = 3, index 3 is the default
        assert_eq!(probe(d, 2, true), Some(1));
        testutil::heap_free(p as *mut u8, sz);
    }

    #[test]
    fn probe_all_down_uses_default_or_fails() {
        let (p, sz) = mkset(&[DS_INACTIVE, DS_INACTIVE, 0]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        assert_eq!(probe(d, 1, true), Some(2));
        assert_eq!(probe(d, 1, false), Some(2));
        let (p2, sz2) = mkset(&[DS_INACTIVE, DS_DISABLED]);
        let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
        assert_eq!(probe(s2.set(1).expect("set").dests, 7, false), None);
        assert_eq!(probe(s2.set(1).expect("set").dests, 7, true), None);
        testutil::heap_free(p as *mut u8, sz);
        testutil::heap_free(p2 as *mut u8, sz2);
    }

    #[test]
    fn round_robin_sequence_continues_after_used_destination() {
        let (p, sz) = mkset(&[0, DS_INACTIVE, 0]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let set = s.set(1).expect("set");
        let mut got = vec![];
        for _ in 0..6 {
            let (h, v) = rr_take(set.rec);
            let i = probe(set.dests, h, false).expect("usable");
            rr_commit(set.rec, v, i);
            got.push(i);
        }
        assert_eq!(got, vec![0, 2, 0, 2, 0, 2]);
        testutil::heap_free(p as *mut u8, sz);
    }

    #[test]
    fn failover_order_wraps_and_limits() {
        let (p, sz) = mkset(&[0, 0, 0, DS_INACTIVE, 0]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        assert_eq!(failover_order(d, 1, false, u32::MAX, &|_| false), vec![1, 2, 4, 0]);
        assert_eq!(failover_order(d, 1, false, 2, &|_| false), vec![1, 2]);
        assert_eq!(failover_order(d, 1, true, u32::MAX, &|_| false), vec![1, 2, 0, 4]);
        assert_eq!(failover_order(d, 4, true, u32::MAX, &|_| false), vec![4, 0, 1, 2]);
        assert_eq!(failover_order(d, 2, false, u32::MAX, &|i| i == 0), vec![2, 4, 1]);
        testutil::heap_free(p as *mut u8, sz);
    }

    /// The C module's loops written out (reference for FailoverIter).
    fn failover_ref(flags: &[i32], selected: usize, use_default: bool, limit: usize, skip: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let nr = flags.len();
        let mut out = vec![];
        if selected >= nr || limit == 0 {
            return out;
        }
        out.push(selected);
        let usable = |i: usize| flags[i] & (DS_INACTIVE | DS_DISABLED) == 0;
        let cand = |i: usize| usable(i) && !(use_default && i == nr - 1) && !skip(i);
        for i in (selected + 1..nr).chain(0..selected) {
            if out.len() >= limit {
                break;
            }
            if cand(i) {
                out.push(i);
            }
        }
        if use_default && selected != nr - 1 && out.len() < limit {
            out.push(nr - 1);
        }
        out
    }

    #[test]
    fn failover_iter_matches_the_reference() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            seed >> 16
        };
        for nr in 1..7usize {
            for _ in 0..40 {
                let flags: Vec<i32> = (0..nr).map(|_| [0, 0, DS_INACTIVE, DS_DISABLED][(next() % 4) as usize]).collect();
                let (p, sz) = mkset(&flags);
                let s = unsafe { Snap::from_ptr(p) }.expect("snap");
                let d = s.set(1).expect("set").dests;
                let odd = next() % 3 == 0;
                let skip = |i: usize| odd && i % 2 == 1;
                for sel in 0..=nr {
                    for limit in [0u32, 1, 2, 3, u32::MAX] {
                        for ud in [false, true] {
                            let got: Vec<usize> = FailoverIter::new(d, sel, ud, limit, skip).collect();
                            let want = failover_ref(&flags, sel, ud, limit as usize, &skip);
                            assert_eq!(got, want, "{flags:?} sel {sel} limit {limit} use_default {ud}");
                        }
                    }
                }
                testutil::heap_free(p as *mut u8, sz);
            }
        }
    }

    /// One set of destinations on 127.0.0.1: (port, proto, sock, flags, priority, weight).
    fn mkfull(spec: &[(u16, Proto, usize, i32, i32, i32)]) -> (*mut crate::ds::snapshot::Header, usize) {
        let dests = spec
            .iter()
            .enumerate()
            .map(|(i, &(port, proto, sock, flags, priority, weight))| Dest {
                setid: 1,
                uri: format!("sip:127.0.0.1:{port};x={i}").into_bytes(),
                flags,
                priority,
                attrs: Attrs { weight, ..Attrs::default() },
                scheme: Scheme::Sip,
                host: b"127.0.0.1".to_vec(),
                port,
                proto,
                ip: Some("127.0.0.1".parse().expect("ip")),
                more_ips: vec![],
                sock,
                line: 1,
                col: 1,
            })
            .collect();
        let p = build(&[DestSet { id: 1, dests }], 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7)
            .expect("build");
        let size = unsafe { (*p).total_size };
        (p, size)
    }

    /// Runs the matcher over every destination of set 1 (all share the address) and returns
    /// the index of the winner.
    fn from_idx(d: &[DestRec], mode: i32, key: FromKey) -> Option<usize> {
        let mut fm = FromMatch::new(mode, key);
        let hit = d.iter().find_map(|x| fm.offer(1, x)).or_else(|| fm.finish());
        hit.map(|(_, x)| d.iter().position(|y| std::ptr::eq(x, y)).expect("index"))
    }

    const S1: usize = 0x1000;
    const S2: usize = 0x2000;
    const UDP: u8 = Proto::Udp as u8;

    #[test]
    fn from_list_socket_mode_8() {
        let (p, sz) = mkfull(&[(5060, Proto::Udp, S2, 0, 0, 0), (5060, Proto::Udp, 0, 0, 0, 0)]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        let on = |bind| FromKey { port: 5060, proto: UDP, bind };
        crate::ds::compat::with(crate::ds::compat::val(5, 8, 0), || {
            // a destination with a socket matches only on that socket; one without always
            assert_eq!(from_idx(d, MATCH_SOCKET, on(S1)), Some(1));
            assert_eq!(from_idx(d, MATCH_SOCKET, on(S2)), Some(0));
            assert_eq!(from_idx(d, MATCH_SOCKET | MATCH_NOPROTO, on(S1)), Some(1));
            // without bit 8 the socket does not matter
            assert_eq!(from_idx(d, 0, on(S1)), Some(0));
        });
        // 5.6/5.7 do not know bit 8
        crate::ds::compat::with(crate::ds::compat::val(5, 6, 3), || {
            assert_eq!(from_idx(d, MATCH_SOCKET, on(S1)), Some(0));
        });
        testutil::heap_free(p as *mut u8, sz);
        // only destinations with another socket: no match with bit 8
        let (p, sz) = mkfull(&[(5060, Proto::Udp, S2, 0, 0, 0)]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        crate::ds::compat::with(crate::ds::compat::val(6, 1, 0), || {
            assert_eq!(from_idx(d, MATCH_SOCKET, on(S1)), None);
            assert_eq!(from_idx(d, MATCH_SOCKET | MATCH_BEST, on(S1)), None);
            assert_eq!(from_idx(d, MATCH_SOCKET | MATCH_BEST, on(S2)), Some(0));
        });
        testutil::heap_free(p as *mut u8, sz);
    }

    #[test]
    fn from_list_best_match_mode_16() {
        // [0] address only, [1] port+proto, [2] port+proto+socket S2, [3] tcp + socket S2
        let (p, sz) = mkfull(&[
            (0, Proto::Udp, 0, 0, 0, 0),
            (5070, Proto::Udp, 0, 0, 0, 0),
            (5070, Proto::Udp, S2, 0, 0, 0),
            (0, Proto::Tcp, S2, 0, 0, 0),
        ]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        let k = |port, bind| FromKey { port, proto: UDP, bind };
        for (v, lenient) in [(crate::ds::compat::val(5, 8, 8), false), (crate::ds::compat::val(6, 0, 2), true), (crate::ds::compat::val(6, 1, 4), true)] {
            crate::ds::compat::with(v, || {
                // full score 15 wins at once
                assert_eq!(from_idx(d, MATCH_BEST, k(5070, S2)), Some(2), "v{v}");
                // port+proto (7): [2] has a different socket: 5.8 drops it, 6.0.2 scores it
                // 7 too (tie: the first one met wins)
                assert_eq!(from_idx(d, MATCH_BEST, k(5070, S1)), Some(1), "v{v}");
                // other port on S2: 5.8 keeps only [0] (5); 6.0.2: [2] scores 1+4+8 = 13
                assert_eq!(from_idx(d, MATCH_BEST, k(5999, S2)), Some(if lenient { 2 } else { 0 }), "v{v}");
                // other port on S1: [0] (5) in both; 6.0.2 ties [1] and [2] at 5, first wins
                assert_eq!(from_idx(d, MATCH_BEST, k(5999, S1)), Some(0), "v{v}");
                // bit 8 with 16 filters the socket first: on S1 [2] and [3] are out
                assert_eq!(from_idx(d, MATCH_BEST | MATCH_SOCKET, k(5999, S1)), Some(0), "v{v}");
                // bits 1 and 2 change nothing with 16
                assert_eq!(from_idx(d, MATCH_BEST | MATCH_NOPORT | MATCH_NOPROTO, k(5999, S2)), Some(if lenient { 2 } else { 0 }), "v{v}");
                // a TCP sender on S2 at another port
                let tcp = FromKey { port: 5999, proto: Proto::Tcp as u8, bind: S2 };
                // 5.8: [0] udp != tcp dropped, [1] and [2] dropped, [3] tcp+sock = 13
                // 6.0.2: [0] 1, [1] 1, [2] 9, [3] 13
                assert_eq!(from_idx(d, MATCH_BEST, tcp), Some(3), "v{v}");
            });
        }
        // bit 4: an inactive full match is skipped, the best of the others wins
        d[2].flags.store(DS_INACTIVE, Ordering::Relaxed);
        crate::ds::compat::with(crate::ds::compat::val(6, 1, 0), || {
            // [1] port+proto = 7, [3] address+socket = 9 (its tcp only misses points)
            assert_eq!(from_idx(d, MATCH_BEST | MATCH_ACTIVE, k(5070, S2)), Some(3));
            assert_eq!(from_idx(d, MATCH_BEST, k(5070, S2)), Some(2));
        });
        crate::ds::compat::with(crate::ds::compat::val(5, 8, 8), || {
            // 5.8 drops [3] (tcp set but different): [1] wins
            assert_eq!(from_idx(d, MATCH_BEST | MATCH_ACTIVE, k(5070, S2)), Some(1));
        });
        // 5.6.3: bit 16 unknown -> mode 0: port and proto must match, first one wins
        crate::ds::compat::with(crate::ds::compat::val(5, 6, 3), || {
            assert_eq!(from_idx(d, MATCH_BEST, k(5070, S2)), Some(0));
            assert_eq!(from_idx(d, MATCH_BEST, FromKey { port: 5999, proto: Proto::Tcp as u8, bind: S2 }), Some(3));
            assert_eq!(from_idx(d, MATCH_BEST, FromKey { port: 5999, proto: Proto::Sctp as u8, bind: S2 }), None);
        });
        testutil::heap_free(p as *mut u8, sz);
    }

    #[test]
    fn from_list_best_match_without_full_components() {
        // nothing can reach 15 when a destination lacks a component: highest score wins
        let (p, sz) = mkfull(&[(0, Proto::None, 0, 0, 0, 0), (5070, Proto::None, 0, 0, 0, 0)]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let d = s.set(1).expect("set").dests;
        crate::ds::compat::with(crate::ds::compat::val(5, 8, 0), || {
            assert_eq!(from_idx(d, MATCH_BEST, FromKey { port: 5070, proto: UDP, bind: S1 }), Some(1));
            assert_eq!(from_idx(d, MATCH_BEST, FromKey { port: 5071, proto: UDP, bind: S1 }), Some(0));
        });
        testutil::heap_free(p as *mut u8, sz);
    }

    #[test]
    fn priority_weight_alg15_table_cursor_and_rebuild() {
        // array order as loaded: priority descending ([0] prio 2, [1] and [2] prio 1)
        let (p, sz) = mkfull(&[(5060, Proto::Udp, 0, 0, 2, 90), (5061, Proto::Udp, 0, 0, 1, 30), (5062, Proto::Udp, 0, 0, 1, 70)]);
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let set = s.set(1).expect("set");
        let take100 = || {
            let mut c = [0usize; 3];
            for _ in 0..100 {
                c[pw_take(set.rec) as usize] += 1;
            }
            c
        };
        // built at load: the lowest priority value, split by weight; the cursor wraps at 100
        assert_eq!(take100(), [0, 30, 70]);
        assert_eq!(set.rec.pwlast.load(Ordering::Relaxed), 0);
        assert_eq!(take100(), [0, 30, 70]);
        // a state change alone does not rebuild it (the slots of [2] stay; the generic probe
        // then moves on to the next index)
        set.dests[2].flags.store(DS_INACTIVE, Ordering::Relaxed);
        assert_eq!(take100(), [0, 30, 70]);
        let mut lcg = 1u32;
        let mut rng = || {
            lcg = lcg.wrapping_mul(1103515245).wrapping_add(12345);
            lcg >> 1
        };
        pw_rebuild(&set, &mut rng);
        assert_eq!(take100(), [0, 100, 0]);
        set.dests[1].flags.store(DS_DISABLED, Ordering::Relaxed);
        pw_rebuild(&set, &mut rng);
        assert_eq!(take100(), [100, 0, 0]);
        // nothing usable: all slots index 0
        set.dests[0].flags.store(DS_INACTIVE, Ordering::Relaxed);
        pw_rebuild(&set, &mut rng);
        assert!(set.rec.pwlist.iter().all(|a| a.load(Ordering::Relaxed) == 0));
        testutil::heap_free(p as *mut u8, sz);
    }

    #[test]
    fn priority_weight_alg15_built_from_carried_state() {
        // a reload keeps runtime state: the table is built from the carried flags
        let dests = |flags: i32| {
            vec![
                Dest {
                    setid: 1,
                    uri: b"sip:a".to_vec(),
                    flags: 0,
                    priority: 1,
                    attrs: Attrs { weight: 50, ..Attrs::default() },
                    scheme: Scheme::Sip,
                    host: b"a".to_vec(),
                    port: 0,
                    proto: Proto::None,
                    ip: None,
                    more_ips: vec![],
                    sock: 0,
                    line: 1,
                    col: 1,
                },
                Dest {
                    setid: 1,
                    uri: b"sip:b".to_vec(),
                    flags,
                    priority: 1,
                    attrs: Attrs { weight: 50, ..Attrs::default() },
                    scheme: Scheme::Sip,
                    host: b"b".to_vec(),
                    port: 0,
                    proto: Proto::None,
                    ip: None,
                    more_ips: vec![],
                    sock: 0,
                    line: 1,
                    col: 1,
                },
            ]
        };
        let p = build(
            &[DestSet { id: 1, dests: dests(0) }],
            1,
            (0, 0),
            &mut |_, uri, _| {
                (uri == b"sip:b").then_some(crate::ds::snapshot::CarriedState { flags: DS_INACTIVE, fail_cnt: 0, dload: 0, lat: None, iuid: 0, src: std::ptr::null() })
            },
            &mut testutil::heap_alloc,
            &mut || 7,
        )
        .expect("build");
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let set = s.set(1).expect("set");
        assert!(set.rec.pwlist.iter().all(|a| a.load(Ordering::Relaxed) == 0));
        testutil::heap_free(p as *mut u8, s.header().total_size);
    }

    #[test]
    fn addr_list_capacity() {
        let mut l = AddrList::new();
        assert!(l.is_empty() && l.first().is_none());
        for i in 0..40u8 {
            let _ = l.push(IpAddr::from([10, 0, 0, i]));
        }
        assert_eq!(l.len(), DNS_MAX_ADDRS);
        assert!(l.is_full() && !l.push(IpAddr::from([1, 1, 1, 1])));
        assert_eq!(l.as_slice()[31], IpAddr::from([10, 0, 0, 31]));
        l.truncate(1);
        assert_eq!(l.as_slice(), &[IpAddr::from([10, 0, 0, 0])]);
    }
}
