//! Weight-table family (algs 9, 11, 15): a 100-slot table of destination indexes per set
//! (built by `ds::weights`), walked by a per-set cursor; the slot value is then mapped by
//! the generic probe. Alg 9's table is fixed at load; 11's is rebuilt when a destination
//! with `rweight` changes usability; 15's (Kamailio master) likewise.

use std::sync::atomic::Ordering;

use crate::ds::select::{self, ALG_PRIORITY_WEIGHT, ALG_RELWEIGHT, ALG_WEIGHT};
use crate::ds::snapshot::SetView;

/// The next slot of the algorithm's table (cursor moved on unless `peek`).
pub fn take(set: &SetView<'_>, alg: i32, peek: bool) -> u32 {
    let r = set.rec;
    match alg {
        ALG_WEIGHT => {
            let k = if peek { r.wlast.load(Ordering::Relaxed) } else { r.wlast.fetch_add(1, Ordering::Relaxed) } % 100;
            r.wlist.get(k as usize).copied().unwrap_or(0)
        }
        ALG_RELWEIGHT => {
            let k = if peek { r.rwlast.load(Ordering::Relaxed) } else { r.rwlast.fetch_add(1, Ordering::Relaxed) } % 100;
            r.rwlist.get(k as usize).map(|a| a.load(Ordering::Relaxed)).unwrap_or(0)
        }
        ALG_PRIORITY_WEIGHT if peek => {
            let k = r.pwlast.load(Ordering::Relaxed) % 100;
            r.pwlist.get(k as usize).map(|a| a.load(Ordering::Relaxed)).unwrap_or(0)
        }
        ALG_PRIORITY_WEIGHT => select::pw_take(r),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::algs::testsets::mk;

    #[test]
    fn weight_table_shares_and_peek() {
        let o = mk(&[(0, 0, 25, 0), (0, 0, 75, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let mut c = [0; 2];
        for _ in 0..100 {
            let p = take(&set, ALG_WEIGHT, true);
            let t = take(&set, ALG_WEIGHT, false);
            assert_eq!(p, t);
            c[t as usize] += 1;
        }
        assert_eq!(c, [25, 75]);
    }
}
