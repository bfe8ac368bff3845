//! Selection machinery shared by the algorithms (spec §6.1–6.3), in plain Rust.
//!
//! Works on a set of a [`snapshot`](crate::ds::snapshot): the index mapping with the forward
//! probe over unusable destinations, the round-robin cursor (lock-free), and the order of the
//! failover records.

use std::sync::atomic::Ordering;

use crate::ds::snapshot::{DestRec, SetRec};

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
pub fn probe(dests: &[DestRec], hash: u32, use_default: bool) -> Option<usize> {
    probe_with(dests, hash, use_default, &mut |_| false)
}

/// [`probe`] with an extra per-visit skip test (alg 64's overload control).
pub fn probe_with(dests: &[DestRec], hash: u32, use_default: bool, skip: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
    let nr = dests.len();
    if nr == 0 {
        return None;
    }
    let n = span(nr, use_default);
    let start = (hash as usize) % n;
    let mut i = start;
    loop {
        if dests.get(i)?.usable() && !skip(i) {
            return Some(i);
        }
        i = (i + 1) % n;
        if i == start {
            if use_default {
                let d = nr - 1;
                return if dests.get(d)?.usable() && !skip(d) { Some(d) } else { None };
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
pub fn rr_commit(set: &SetRec, vlast: u32, chosen: usize) {
    let nr = set.nr.max(1);
    let _ = set.last.compare_exchange(vlast, (chosen as u32 + 1) % nr, Ordering::AcqRel, Ordering::Relaxed);
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
    let nr = dests.len();
    let limit = limit as usize;
    let mut out = Vec::with_capacity(nr.min(limit));
    if selected >= nr || limit == 0 {
        return out;
    }
    out.push(selected);
    let is_default = |i: usize| use_default && i == nr - 1;
    let eligible = |i: usize| dests.get(i).map(|d| d.usable()).unwrap_or(false) && !is_default(i) && !extra_skip(i);
    for i in (selected + 1..nr).chain(0..selected) {
        if out.len() >= limit {
            break;
        }
        if eligible(i) {
            out.push(i);
        }
    }
    if use_default && selected != nr - 1 && out.len() < limit {
        out.push(nr - 1);
    }
    out
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
    out.sort_by(|a, b| b.prio.cmp(&a.prio));
    out
}

/// Least-loaded usable destination below its `maxload` (alg 10); first wins on ties.
pub fn least_loaded(dests: &[DestRec]) -> Option<usize> {
    let mut best: Option<(usize, i32)> = None;
    for (j, d) in dests.iter().enumerate() {
        let load = d.dload.load(Ordering::Relaxed);
        if d.usable() && (d.maxload == 0 || load < d.maxload) && best.map(|(_, t)| load < t).unwrap_or(true) {
            best = Some((j, load));
        }
    }
    best.map(|(j, _)| j)
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
}
