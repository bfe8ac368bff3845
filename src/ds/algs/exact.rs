//! Exact weights (alg 41: the `weight` attribute; alg 43: the `rweight` attribute as
//! congestion control keeps it, like alg 11): shares exact for any number of destinations
//! and any weights, without a 100-slot table and without bursts.
//!
//! Each set has, per algorithm, the prefix sums of the weights of its *usable* destinations
//! (in the snapshot: `SetRec::xw`), rebuilt at load, on every usability change, and by
//! congestion control (`cc=1`), where alg 11's table is rebuilt. A pick takes the set's
//! counter `c` (one atomic add, no lock), maps it to `x = floor(frac(c * phi) * W)` (the
//! golden-ratio low-discrepancy sequence, `W` the total weight) and finds `x` in the prefix
//! sums by binary search: O(log N). Over any window of picks, every destination's share is
//! within the sequence's discrepancy (O(log n / n)) of `w / W`, and consecutive picks are
//! spread over the whole range (no burst to one destination).
//!
//! A destination with weight <= 0 takes no part, unless no usable destination has a weight:
//! then every usable one counts 1. The pick is mapped through the generic probe (so a pick
//! racing with a rebuild never yields an unusable destination); with `use_default` the
//! default destination's points are rejected (see [`take`]), so it is used only when no
//! other one is usable.

use std::sync::atomic::Ordering;

use crate::ds::algs::ALG_EXACT_RWEIGHT;
use crate::ds::snapshot::{DestRec, SetView, XwHdr};

/// 2^64 / phi.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn table_of(alg: i32) -> usize {
    usize::from(alg == ALG_EXACT_RWEIGHT)
}

fn weight_of(t: usize, d: &DestRec) -> u64 {
    let w = if t == 0 { d.weight } else { d.rweight_rt.load(Ordering::Relaxed) };
    w.max(0) as u64
}

/// Rebuilds both tables of `set` from the current state (one writer at a time: the module
/// holds its rweight lock; readers validate what they pick).
pub fn rebuild(set: &SetView<'_>) {
    for t in 0..2 {
        rebuild_one(set, t);
    }
}

fn rebuild_one(set: &SetView<'_>, t: usize) {
    let Some(h) = set.rec.xw.get(t) else { return };
    let slots = h.slots(set.dests.len());
    let any = set.dests.iter().any(|d| d.usable() && weight_of(t, d) > 0);
    let mut n = 0usize;
    let mut end = 0u64;
    for (i, d) in set.dests.iter().enumerate() {
        if !d.usable() {
            continue;
        }
        let w = if any { weight_of(t, d) } else { 1 };
        if w == 0 {
            continue;
        }
        let Some(s) = slots.get(n) else { break };
        end = end.saturating_add(w);
        s.end.store(end, Ordering::Relaxed);
        s.idx.store(i as u32, Ordering::Relaxed);
        n += 1;
    }
    h.n.store(n as u32, Ordering::Release);
    h.total.store(end, Ordering::Release);
}

/// Position `c` of the sequence, in `0..total`.
#[inline]
pub fn point(c: u64, total: u64) -> u64 {
    ((c.wrapping_mul(GOLDEN) as u128 * total as u128) >> 64) as u64
}

fn find(h: &XwHdr, cap: usize, x: u64) -> Option<usize> {
    let n = (h.n.load(Ordering::Acquire) as usize).min(cap);
    let slots = h.slots(cap).get(..n)?;
    let k = slots.partition_point(|s| s.end.load(Ordering::Relaxed) <= x);
    slots.get(k.min(n.checked_sub(1)?)).map(|s| s.idx.load(Ordering::Relaxed) as usize)
}

/// The next pick of alg 41/43 (the counter moves on unless `peek`); None when nothing is
/// usable. The index is then mapped by the generic probe. With `use_default`, a point that
/// falls on the default destination (the last one) is rejected and the next point of the
/// sequence taken (up to 8 times), so the others keep exact shares among themselves.
pub fn take(set: &SetView<'_>, alg: i32, peek: bool, use_default: bool) -> Option<usize> {
    let h = set.rec.xw.get(table_of(alg))?;
    let total = h.total.load(Ordering::Acquire);
    if total == 0 {
        return None;
    }
    let nr = set.dests.len();
    let c0 = h.ctr.load(Ordering::Relaxed);
    let mut pick = None;
    for k in 0..8u64 {
        let c = if peek { c0.wrapping_add(k) } else { h.ctr.fetch_add(1, Ordering::Relaxed) };
        pick = find(h, nr, point(c, total)).filter(|&i| i < nr);
        if !(use_default && nr > 1 && pick == Some(nr - 1)) {
            break;
        }
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::algs::testsets::mk;
    use crate::ds::algs::{choose, Key, Opts, ALG_EXACT_WEIGHT};
    use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE};

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// Picks `n` times and checks every share against `w / W` (percentage points).
    fn shares_within(spec: &[(i32, i32, i32, i32)], alg: i32, n: usize, pp: f64) -> f64 {
        let o = mk(spec);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let mut c = vec![0usize; spec.len()];
        for _ in 0..n {
            c[choose(&set, alg, Key::None, &Opts::default()).expect("pick").idx] += 1;
        }
        let w: Vec<f64> = spec
            .iter()
            .map(|x| if x.0 & (DS_INACTIVE | DS_DISABLED) != 0 { 0.0 } else if alg == ALG_EXACT_WEIGHT { x.2 as f64 } else { x.3 as f64 })
            .collect();
        let wt: f64 = w.iter().sum();
        let mut worst = 0f64;
        for (j, &x) in c.iter().enumerate() {
            let d = (x as f64 / n as f64 - w[j] / wt).abs() * 100.0;
            worst = worst.max(d);
        }
        eprintln!("exact alg {alg}: {} destinations, {n} picks: worst share deviation {worst:.4} pp", spec.len());
        assert!(worst <= pp, "worst deviation {worst} pp > {pp}");
        worst
    }

    #[test]
    fn fifty_destinations_weights_1_to_100() {
        let mut seed = 7;
        let spec: Vec<_> = (0..50).map(|_| (0, 0, 1 + (lcg(&mut seed) % 100) as i32, 0)).collect();
        let worst = shares_within(&spec, ALG_EXACT_WEIGHT, 20_000, 0.5);
        assert!(worst < 0.05, "{worst}");
        let spec43: Vec<_> = spec.iter().map(|x| (0, 0, 0, x.2)).collect();
        shares_within(&spec43, ALG_EXACT_RWEIGHT, 20_000, 0.5);
    }

    #[test]
    fn thousand_destinations_weights_1_to_1000() {
        let mut seed = 11;
        let spec: Vec<_> = (0..1000).map(|_| (0, 0, 1 + (lcg(&mut seed) % 1000) as i32, 0)).collect();
        shares_within(&spec, ALG_EXACT_WEIGHT, 200_000, 0.5);
    }

    #[test]
    fn inactive_destinations_take_no_share_after_rebuild() {
        let spec = [(0, 0, 10, 0), (DS_INACTIVE, 0, 50, 0), (0, 0, 30, 0), (0, 0, 60, 0)];
        shares_within(&spec, ALG_EXACT_WEIGHT, 20_000, 0.5);
        let o = mk(&[(0, 0, 10, 0), (0, 0, 50, 0), (0, 0, 30, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        set.dests[1].flags.store(DS_INACTIVE, Ordering::Relaxed);
        // before the rebuild the probe still never gives the inactive one
        for _ in 0..200 {
            assert_ne!(choose(&set, ALG_EXACT_WEIGHT, Key::None, &Opts::default()).expect("c").idx, 1);
        }
        rebuild(&set);
        let mut c = [0usize; 3];
        for _ in 0..4000 {
            c[choose(&set, ALG_EXACT_WEIGHT, Key::None, &Opts::default()).expect("c").idx] += 1;
        }
        assert_eq!(c[1], 0);
        assert!((c[0] as f64 / 4000.0 - 0.25).abs() < 0.005, "{c:?}");
        // everything down: no pick
        set.dests[0].flags.store(DS_DISABLED, Ordering::Relaxed);
        set.dests[2].flags.store(DS_DISABLED, Ordering::Relaxed);
        rebuild(&set);
        assert!(choose(&set, ALG_EXACT_WEIGHT, Key::None, &Opts::default()).is_none());
    }

    #[test]
    fn no_burst_and_peek() {
        // two destinations 1:1: never more than 2 picks in a row to one of them; 1:9 spreads
        // the small one evenly
        let o = mk(&[(0, 0, 1, 0), (0, 0, 9, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let mut last_small = None;
        for i in 0..1000usize {
            let p = take(&set, ALG_EXACT_WEIGHT, true, false);
            let t = take(&set, ALG_EXACT_WEIGHT, false, false);
            assert_eq!(p, t);
            if t == Some(0) {
                if let Some(l) = last_small {
                    let gap = i - l;
                    assert!((5..=15).contains(&gap), "gap {gap}");
                }
                last_small = Some(i);
            }
        }
        // no weights at all: every usable destination counts 1
        let o = mk(&[(0, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let mut run = 0;
        let mut prev = None;
        for _ in 0..100 {
            let t = take(&set, ALG_EXACT_WEIGHT, false, false);
            run = if t == prev { run + 1 } else { 1 };
            assert!(run <= 2);
            prev = t;
        }
    }

    #[test]
    fn use_default_keeps_exact_shares_among_the_others() {
        let o = mk(&[(0, 0, 1, 0), (0, 0, 3, 0), (0, 0, 4, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let ud = Opts { use_default: true, ..Opts::default() };
        let mut c = [0usize; 3];
        for _ in 0..4000 {
            let p = choose(&set, ALG_EXACT_WEIGHT, Key::None, &Opts { peek: true, ..ud }).expect("peek").idx;
            let t = choose(&set, ALG_EXACT_WEIGHT, Key::None, &ud).expect("pick").idx;
            assert_eq!(p, t);
            c[t] += 1;
        }
        assert_eq!(c[2], 0);
        assert!(c[0].abs_diff(1000) <= 3, "{c:?}");
        // the others down: the default one
        set.dests[0].flags.store(DS_INACTIVE, Ordering::Relaxed);
        set.dests[1].flags.store(DS_INACTIVE, Ordering::Relaxed);
        rebuild(&set);
        assert_eq!(choose(&set, ALG_EXACT_WEIGHT, Key::None, &ud).expect("pick").idx, 2);
    }

    #[test]
    fn rweight_follows_congestion_control() {
        let o = mk(&[(0, 0, 0, 10), (0, 0, 0, 10)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        set.dests[0].rweight_rt.store(30, Ordering::Relaxed);
        rebuild(&set);
        let mut c = [0usize; 2];
        for _ in 0..4000 {
            c[take(&set, ALG_EXACT_RWEIGHT, false, false).expect("pick")] += 1;
        }
        // 3:1 within the sequence's discrepancy (a few picks in 4000)
        assert!(c[0].abs_diff(3000) <= 3, "{c:?}");
    }
}
