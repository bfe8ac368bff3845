//! Round-robin family (alg 4, alg 5's fallback without a username, alg 64 with overload
//! control): a lock-free per-set cursor (`ds::select::rr_take`), the generic probe, then
//! the cursor continues after the destination actually used (`commit`).

use std::sync::atomic::Ordering;

use crate::ds::algs::Opts;
use crate::ds::snapshot::{DestRec, SetRec};

/// The cursor value to map, and the value to pass to [`commit`]. With `peek`, nothing moves.
pub fn take(set: &SetRec, peek: bool) -> (u32, u32) {
    if peek {
        let nr = set.nr.max(1);
        let cur = set.last.load(Ordering::Relaxed);
        return (cur, cur.wrapping_add(1) % nr);
    }
    crate::ds::select::rr_take(set)
}

/// After the destination was applied: continue after it, unless another process moved on.
pub fn commit(set: &SetRec, v: u32, chosen: usize) {
    crate::ds::select::rr_commit(set, v, chosen)
}

/// Alg 64: the probe, skipping destinations whose overload-control table says "skip" now
/// (each visit advances the destination's table cursor, except with `peek`).
pub fn probe_overload(dests: &[DestRec], hash: u32, o: &Opts) -> Option<usize> {
    let now = o.now_us;
    let mut skip = |j: usize| {
        dests
            .get(j)
            .map(|d| {
                if o.peek {
                    d.oc_time_us.load(Ordering::Relaxed) >= now && !d.oc_use(d.oc_idx.load(Ordering::Relaxed))
                } else {
                    crate::ds::select::oc_skip(d, now)
                }
            })
            .unwrap_or(false)
    };
    crate::ds::select::probe_with(dests, hash, o.use_default, &mut skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::algs::testsets::mk;
    use crate::ds::snapshot::DS_INACTIVE;

    #[test]
    fn cursor_continues_after_the_used_destination() {
        let o = mk(&[(0, 0, 0, 0), (DS_INACTIVE, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let mut got = vec![];
        for _ in 0..4 {
            let (h, v) = take(set.rec, false);
            let i = crate::ds::select::probe(set.dests, h, false).expect("usable");
            commit(set.rec, v, i);
            got.push(i);
        }
        assert_eq!(got, vec![0, 2, 0, 2]);
    }

    #[test]
    fn commit_moves_only_a_cursor_nobody_else_moved() {
        let o = mk(&[(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        // the destination at the cursor was used: the cursor stays after it
        assert_eq!(take(set.rec, false), (0, 1));
        commit(set.rec, 1, 0);
        assert_eq!(set.rec.last.load(Ordering::Relaxed), 1);
        // probing went past the cursor (1 -> 2): the cursor continues after 2, i.e. at 0
        assert_eq!(take(set.rec, false), (1, 2));
        commit(set.rec, 2, 2);
        assert_eq!(set.rec.last.load(Ordering::Relaxed), 0);
        // another process moved the cursor in between: left as it is
        assert_eq!(take(set.rec, false), (0, 1));
        set.rec.last.store(2, Ordering::Relaxed);
        commit(set.rec, 1, 1);
        assert_eq!(set.rec.last.load(Ordering::Relaxed), 2);
        commit(set.rec, 1, 0);
        assert_eq!(set.rec.last.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn overload_skips_while_valid() {
        let o = mk(&[(0, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        set.dests[0].set_oc_table(&[0u8; 100]);
        set.dests[0].oc_time_us.store(1000, Ordering::Relaxed);
        let o1 = Opts { now_us: 500, ..Opts::default() };
        assert_eq!(probe_overload(set.dests, 0, &o1), Some(1));
        let o2 = Opts { now_us: 2000, ..Opts::default() };
        assert_eq!(probe_overload(set.dests, 0, &o2), Some(0));
    }
}
