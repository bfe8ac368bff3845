//! Serial / parallel family (algs 8, 12; 14 when not round-robin): the first usable
//! destination in array order (priority order); alg 12 adds the others as branches (in the
//! module). Unknown algorithms also take the first entry, as in C.

/// The value mapped by the generic probe: always 0 (the first usable destination).
pub fn take() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use crate::ds::algs::testsets::mk;
    use crate::ds::algs::{choose, Key, Opts};
    use crate::ds::snapshot::DS_INACTIVE;

    #[test]
    fn first_usable() {
        let o = mk(&[(DS_INACTIVE, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        for a in [8, 12] {
            assert_eq!(choose(&set, a, Key::None, &Opts::default()).expect("c").idx, 1);
        }
    }
}
