//! The selection algorithms as families (one file each), behind one small interface:
//! the module extracts a [`Key`] from the message (Call-ID, URIs, auth user, PV text, a
//! random number) and [`choose`] returns the destination ([`Choice`]); the module then
//! applies it (`$du`/R-URI, failover records, branches). No FFI: unit-tested without
//! Kamailio.
//!
//! | family | algorithms | file |
//! |---|---|---|
//! | hash (index mapping + forward probe) | 0, 1, 2, 3, 5, 6, 7 | [`hashing`] |
//! | round-robin / overload control | 4, 5 (no user), 64 | [`rr`] |
//! | weight tables (100 slots) | 9, 11, 15 | [`weight`] |
//! | call load | 10 | [`load`] |
//! | latency | 13 | [`latency`] |
//! | serial / parallel | 8, 12 (14: 4 or 8 by [`effective`]) | [`serial`] |
//! | consistent (weighted rendezvous) | 32 + k, k in {0, 1, 2, 3, 5, 7} | [`consistent`] |
//! | exact weights (low-discrepancy + prefix sums) | 41, 43 | [`exact`] |
//!
//! Every algorithm of the C module chooses exactly what the C module chooses (the
//! differential test compares them); 32-39, 41 and 43 are this module's extensions, numbered
//! so as not to collide with upstream's (0-15 and 64).

pub mod consistent;
pub mod exact;
pub mod hashing;
pub mod latency;
pub mod load;
pub mod rr;
pub mod serial;
pub mod weight;

use crate::ds::select::{self, Ranked};
use crate::ds::snapshot::SetView;

/// Consistent hashing of the key of hash algorithm `k`: `32 + k`.
pub const ALG_CONSISTENT_BASE: i32 = 32;
/// Exact shares of the `weight` attribute.
pub const ALG_EXACT_WEIGHT: i32 = 41;
/// Exact shares of the `rweight` attribute (active destinations, congestion control).
pub const ALG_EXACT_RWEIGHT: i32 = 43;

/// What the module extracted from the message for an algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// The C module's 32-bit hash of the key (algs 0-3, 5, 7), or a random number (alg 6).
    Hash(u32),
    /// The 64-bit hash of the key ([`consistent::key64`]) of a consistent algorithm.
    Key64(u64),
    /// No key: the algorithm works on the set's state (cursor, table, load), or the key's
    /// fallback (alg 5/37 without a username: round-robin).
    None,
}

/// The families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Hash,
    RoundRobin,
    Overload,
    Weight,
    Load,
    Latency,
    Serial,
    Consistent,
    Exact,
}

/// The family of an algorithm number (None: unknown; the module warns and uses the first
/// entry, as the C module does). A table lookup: this runs several times per selection.
#[inline]
pub fn family(alg: i32) -> Option<Family> {
    match FAMILIES.get(alg as u32 as usize) {
        Some(&f) => f,
        None => None,
    }
}

/// [`family_of`] for 0..=64.
const FAMILIES: [Option<Family>; 65] = {
    let mut t = [None; 65];
    let mut a = 0;
    while a < 65 {
        t[a] = family_of(a as i32);
        a += 1;
    }
    t
};

/// The family of an algorithm number (the definition; [`family`] reads its table).
const fn family_of(alg: i32) -> Option<Family> {
    Some(match alg {
        select::ALG_HASH_CALLID
        | select::ALG_HASH_FROM
        | select::ALG_HASH_TO
        | select::ALG_HASH_RURI
        | select::ALG_HASH_AUTH
        | select::ALG_RANDOM
        | select::ALG_HASH_PV => Family::Hash,
        select::ALG_RR => Family::RoundRobin,
        select::ALG_OVERLOAD => Family::Overload,
        select::ALG_WEIGHT | select::ALG_RELWEIGHT | select::ALG_PRIORITY_WEIGHT => Family::Weight,
        select::ALG_CALLLOAD => Family::Load,
        select::ALG_LATENCY => Family::Latency,
        // 14 exists from Kamailio 6.1 only, where `effective` maps it to 4 or 8
        select::ALG_SERIAL | select::ALG_PARALLEL => Family::Serial,
        ALG_EXACT_WEIGHT | ALG_EXACT_RWEIGHT => Family::Exact,
        // consistent::base_alg: 32 + k, k in {0, 1, 2, 3, 5, 7}
        32 | 33 | 34 | 35 | 37 | 39 => Family::Consistent,
        _ => return None,
    })
}

/// Options of one selection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts {
    /// `ds_use_default`: the last destination is the default one.
    pub use_default: bool,
    /// Now (µs since the epoch), for alg 64's overload control.
    pub now_us: u64,
    /// Look only: the next pick of a stateful algorithm, without consuming it (no cursor,
    /// counter or table cursor moves) — `dispatcher.explain`.
    pub peek: bool,
    /// Failover records will be written: the consistent algorithms then rank every
    /// destination ([`Choice::order`]); without, one pass finds the top one.
    pub records: bool,
}

/// The result of [`choose`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Choice {
    /// Index of the chosen destination in the set.
    pub idx: usize,
    /// The value mapped onto the set: the hash/table value probed from (`hash % N`), or the
    /// 64-bit key of a consistent algorithm.
    pub hash: u64,
    /// Round-robin cursor value to pass to [`rr::commit`] once the destination is applied.
    pub rr: Option<u32>,
    /// Alg 13: the ranking (failover records follow it; no probing).
    pub ranked: Option<Vec<Ranked>>,
    /// Consistent algorithms with [`Opts::records`]: the usable destinations by descending
    /// score (the failover records), without the default destination.
    pub order: Option<Vec<usize>>,
}

/// The algorithm actually run: Kamailio 6.1's alg 14 is round-robin when every
/// destination has the same priority > 0, else serial.
pub fn effective(set: &SetView<'_>, alg: i32) -> i32 {
    if alg == select::ALG_RR_SERIAL && crate::ds::compat::ge(6, 1, 0) {
        if set.rec.rrserial {
            select::ALG_RR
        } else {
            select::ALG_SERIAL
        }
    } else {
        alg
    }
}

/// Chooses a destination of `set` for algorithm `alg` (already [`effective`]) and `key`.
/// None: no usable destination (the C module's -1).
#[inline]
pub fn choose(set: &SetView<'_>, alg: i32, key: Key, o: &Opts) -> Option<Choice> {
    let fam = family(alg);
    let (hash, rr) = match (fam, key) {
        (Some(Family::Consistent), Key::Key64(k)) => return consistent::choose(set, k, o),
        (Some(Family::Latency), _) => return latency::choose(set, o),
        (Some(Family::Hash | Family::Consistent), Key::Hash(h)) => (h, None),
        // alg 5/37 without a username, alg 4: round-robin
        (Some(Family::Hash | Family::Consistent | Family::RoundRobin | Family::Overload), _) => {
            let (h, v) = rr::take(set.rec, o.peek);
            (h, Some(v))
        }
        (Some(Family::Weight), _) => (weight::take(set, alg, o.peek), None),
        (Some(Family::Load), _) => (load::take(set)? as u32, None),
        (Some(Family::Exact), _) => (exact::take(set, alg, o.peek, o.use_default)? as u32, None),
        (Some(Family::Serial), _) | (None, _) => (serial::take(), None),
    };
    let idx = if fam == Some(Family::Overload) {
        rr::probe_overload(set.dests, hash, o)?
    } else {
        hashing::probe(set.dests, hash, o.use_default)?
    };
    Some(Choice { idx, hash: hash as u64, rr, ranked: None, order: None })
}

#[cfg(test)]
pub(crate) mod testsets {
    //! Sets built with the real snapshot builder on the Rust heap.
    use crate::ds::attrs::Attrs;
    use crate::ds::dest::Dest;
    use crate::ds::order::DestSet;
    use crate::ds::snapshot::{build, testutil, Header, Snap};
    use crate::ds::uri::{Proto, Scheme};

    pub struct Owned {
        p: *mut Header,
        size: usize,
    }
    impl Owned {
        pub fn snap(&self) -> Snap<'_> {
            // SAFETY: built by `build`, freed only on drop.
            unsafe { Snap::from_ptr(self.p) }.expect("snap")
        }
    }
    impl Drop for Owned {
        fn drop(&mut self) {
            testutil::heap_free(self.p as *mut u8, self.size);
        }
    }

    /// Set 1 of destinations `sip:10.0.<i/250>.<i%250>:5060` with (flags, priority, weight, rweight).
    pub fn mk(spec: &[(i32, i32, i32, i32)]) -> Owned {
        let uris: Vec<String> = (0..spec.len()).map(|i| format!("sip:10.0.{}.{}:5060", i / 250, i % 250)).collect();
        mk_uris(&uris, spec)
    }

    pub fn mk_uris(uris: &[String], spec: &[(i32, i32, i32, i32)]) -> Owned {
        let dests = spec
            .iter()
            .zip(uris)
            .map(|(&(flags, priority, weight, rweight), uri)| Dest {
                setid: 1,
                uri: uri.clone().into_bytes(),
                flags,
                priority,
                attrs: Attrs { weight, rweight, ..Attrs::default() },
                scheme: Scheme::Sip,
                host: b"10.0.0.1".to_vec(),
                port: 5060,
                proto: Proto::None,
                ip: None,
                more_ips: vec![],
                sock: 0,
                line: 1,
                col: 1,
            })
            .collect();
        let mut seed = 12345u32;
        let p = build(&[DestSet { id: 1, dests }], 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || {
            seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
            seed >> 1
        })
        .expect("build");
        // SAFETY: just built.
        let size = unsafe { (*p).total_size };
        Owned { p, size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::snapshot::{DS_INACTIVE, DS_TRYING};

    #[test]
    fn families_cover_the_c_algorithms_and_the_extensions() {
        for a in (0..=15).filter(|&a| a != 14) {
            assert!(family(a).is_some(), "{a}");
        }
        assert_eq!(family(14), None);
        assert_eq!(family(64), Some(Family::Overload));
        for a in [32, 33, 34, 35, 37, 39] {
            assert_eq!(family(a), Some(Family::Consistent), "{a}");
        }
        for a in [36, 38, 40, 42, 44, 63, 65, -1] {
            assert_eq!(family(a), None, "{a}");
        }
        assert_eq!(family(41), Some(Family::Exact));
        assert_eq!(family(43), Some(Family::Exact));
        for a in -5..200 {
            assert_eq!(family(a) == Some(Family::Consistent), consistent::base_alg(a).is_some(), "{a}");
        }
        assert_eq!(family(i32::MIN), None);
        assert_eq!(family(i32::MAX), None);
    }

    #[test]
    fn hash_family_maps_and_probes() {
        let o = testsets::mk(&[(DS_INACTIVE, 0, 0, 0), (0, 0, 0, 0), (DS_TRYING, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let c = choose(&set, 0, Key::Hash(3), &Opts::default()).expect("choice");
        assert_eq!((c.idx, c.hash), (1, 3));
        assert_eq!(choose(&set, 1, Key::Hash(2), &Opts::default()).expect("c").idx, 2);
        // unknown algorithm: the first usable entry
        assert_eq!(choose(&set, 99, Key::None, &Opts::default()).expect("c").idx, 1);
    }

    #[test]
    fn round_robin_peek_does_not_consume() {
        let o = testsets::mk(&[(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)]);
        let s = o.snap();
        let set = s.set(1).expect("set");
        let peek = Opts { peek: true, ..Opts::default() };
        let mut got = vec![];
        for _ in 0..4 {
            let p = choose(&set, 4, Key::None, &peek).expect("peek").idx;
            let c = choose(&set, 4, Key::None, &Opts::default()).expect("c");
            assert_eq!(p, c.idx);
            rr::commit(set.rec, c.rr.expect("rr"), c.idx);
            got.push(c.idx);
        }
        assert_eq!(got, vec![0, 1, 2, 0]);
        // alg 5 without a username falls back to the same cursor
        assert_eq!(choose(&set, 5, Key::None, &Opts::default()).expect("c").idx, 1);
    }
}
