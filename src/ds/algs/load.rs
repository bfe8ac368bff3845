//! Call-load family (alg 10): the least-loaded usable destination below its `maxload`
//! (first on ties). The module counts the call on it (`ds_load_add`); without a dialog
//! context (not an INVITE, no `xavp_dst`) the module runs it as alg 0 with hash 0.

use crate::ds::snapshot::SetView;

/// The least-loaded destination, None when every one is unusable or at its maximum.
pub fn take(set: &SetView<'_>) -> Option<usize> {
    crate::ds::select::least_loaded(set.dests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::algs::testsets::mk;
    use std::sync::atomic::Ordering;

    #[test]
    fn least_loaded_first_on_ties() {
        let o = mk(&[(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        assert_eq!(take(&set), Some(0));
        set.dests[0].dload.store(2, Ordering::Relaxed);
        set.dests[1].dload.store(1, Ordering::Relaxed);
        set.dests[2].dload.store(1, Ordering::Relaxed);
        assert_eq!(take(&set), Some(1));
    }
}
