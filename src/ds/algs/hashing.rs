//! Hash family (algs 0, 1, 2, 3, 5, 6, 7): the key's hash (or a random number) modulo the
//! number of destinations, then forward probing over unusable ones (spec §6.1). The key
//! extraction (Call-ID, From/To/R-URI keys, auth username, PV text) is in the module; the
//! hash itself is `ds::hash::ds_hash`.

use crate::ds::snapshot::DestRec;

/// Maps `hash` to a usable destination (`hash % N`, then forward), with `use_default`'s
/// default destination when all others are unusable.
pub fn probe(dests: &[DestRec], hash: u32, use_default: bool) -> Option<usize> {
    crate::ds::select::probe(dests, hash, use_default)
}

/// The index the mapping starts from (`hash % N`, N without the default destination).
pub fn start(nr: usize, hash: u32, use_default: bool) -> usize {
    let n = if use_default && nr != 1 { nr - 1 } else { nr };
    if n == 0 {
        0
    } else {
        hash as usize % n
    }
}

/// The destinations passed over by [`probe`] before it reached `chosen` (for `explain`).
pub fn skipped(dests: &[DestRec], hash: u32, use_default: bool, chosen: usize) -> Vec<usize> {
    let nr = dests.len();
    let n = if use_default && nr != 1 { nr - 1 } else { nr };
    let mut out = vec![];
    if n == 0 {
        return out;
    }
    let s = hash as usize % n;
    for k in 0..n {
        let i = (s + k) % n;
        if i == chosen {
            return out;
        }
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::algs::testsets::mk;
    use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE};

    #[test]
    fn probe_and_skipped() {
        let o = mk(&[(0, 0, 0, 0), (DS_INACTIVE, 0, 0, 0), (DS_DISABLED, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let d = s.set(1).expect("set").dests;
        assert_eq!(probe(d, 5, false), Some(3));
        assert_eq!(skipped(d, 5, false, 3), vec![1, 2]);
        assert_eq!(probe(d, 4, false), Some(0));
        assert!(skipped(d, 4, false, 0).is_empty());
        // use_default: N = 3, so 5 % 3 = 2 -> 0; the default [3] only when all are down
        assert_eq!(probe(d, 5, true), Some(0));
        assert_eq!(skipped(d, 5, true, 0), vec![2]);
        assert_eq!(start(4, 5, true), 2);
    }
}
