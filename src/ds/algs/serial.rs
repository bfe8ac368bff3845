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
    fn probe_first_is_the_probe_from_zero() {
        use crate::ds::select::{probe, probe_first};
        use crate::ds::snapshot::DS_DISABLED;
        let specs: [&[(i32, i32, i32, i32)]; 5] = [
            &[(0, 0, 0, 0)],
            &[(DS_INACTIVE, 0, 0, 0)],
            &[(DS_INACTIVE, 0, 0, 0), (DS_DISABLED, 0, 0, 0), (0, 0, 0, 0)],
            &[(DS_INACTIVE, 0, 0, 0), (DS_INACTIVE, 0, 0, 0), (0, 0, 0, 0)],
            &[(DS_INACTIVE, 0, 0, 0), (DS_INACTIVE, 0, 0, 0), (DS_INACTIVE, 0, 0, 0)],
        ];
        for spec in specs {
            let o = mk(spec);
            let s = o.snap();
            let d = s.set(1).expect("set").dests;
            for ud in [false, true] {
                assert_eq!(probe_first(d, ud).map(|(i, _)| i), probe(d, 0, ud), "{spec:?} {ud}");
            }
        }
        // the default destination (last) only with use_default, when the others are down
        let o = mk(specs[3]);
        let s = o.snap();
        let d = s.set(1).expect("set").dests;
        assert_eq!(probe_first(d, true).map(|(i, _)| i), Some(2));
        assert_eq!(probe_first(d, false).map(|(i, _)| i), Some(2));
        let o = mk(specs[4]);
        let s = o.snap();
        assert!(probe_first(s.set(1).expect("set").dests, true).is_none());
    }

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
