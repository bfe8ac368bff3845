//! Latency family (alg 13): destinations ranked by `priority - latency/priority` from the
//! round-robin cursor (`ds::select::alg13_rank_with`); the first one is chosen by the C
//! module's index mapping (no probing) and the failover records follow the ranking.

use std::sync::atomic::Ordering;

use crate::ds::algs::{Choice, Opts};
use crate::ds::snapshot::SetView;

/// Ranks, moves the cursor after the first usable one (unless `peek`), and chooses it.
/// None when nothing is usable (the cursor still moves, as in C).
pub fn choose(set: &SetView<'_>, o: &Opts) -> Option<Choice> {
    let nr = set.dests.len();
    if nr == 0 {
        return None;
    }
    let last = set.rec.last.load(Ordering::Relaxed) as usize;
    let r = crate::ds::select::alg13_rank_with(set.dests, last, o.use_default);
    let first = r.first().map(|x| x.idx).unwrap_or(-1);
    if !o.peek {
        set.rec.last.store(((first + 1).max(0) as u32) % nr as u32, Ordering::Relaxed);
    }
    if first < 0 {
        return None;
    }
    let n = if o.use_default && nr != 1 { nr - 1 } else { nr };
    Some(Choice { idx: first as usize % n, hash: first as u64, rr: None, ranked: Some(r), order: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::algs::testsets::mk;
    use crate::ds::snapshot::DS_INACTIVE;

    #[test]
    fn highest_priority_first_and_cursor() {
        let o = mk(&[(0, 1, 0, 0), (0, 5, 0, 0), (DS_INACTIVE, 9, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let c = choose(&set, &Opts::default()).expect("choice");
        assert_eq!(c.idx, 1);
        assert_eq!(set.rec.last.load(Ordering::Relaxed), 2);
        let r = c.ranked.expect("ranked");
        assert_eq!(r.iter().map(|x| x.idx).collect::<Vec<_>>(), vec![1, 0, -1]);
    }
}
