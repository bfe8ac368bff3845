//! Full builds set by set (issue 14): a list that shares nothing with the running one (the
//! start-up load, a reload with `ds_reload_keep_state` 0 or of another list) built one set at
//! a time from destinations prepared right before their set's block, into a buffer reused from
//! set to set (a child module of `snapshot`: it builds through the private block writers).
//!
//! Preparing the whole list first kept every prepared destination (`Dest`, 224 bytes, and its
//! URI, host and attrs in three heap allocations) alive until the blocks were written: at
//! 100,000 destinations ~37 MB of heap touched page by page, then freed and trimmed before
//! Kamailio forks. Here the heap holds one set's destinations at a time. The blocks, the
//! random draws (one per set, in iteration order) and the address index are those of
//! [`build_sharing`] with nothing shared.

use super::*;
use crate::ds::dest::Dest;

/// Builds a list of the sets `spans` (set id and number of destinations, in iteration order),
/// nothing shared: `fill(i, buf)` replaces what `buf` holds (the previous set's destinations,
/// whose buffers it may reuse) with the destinations of set `i` (in array order), or returns
/// false to abandon the build. Returns `Ok(None)` when `fill`
/// abandoned it (or gave another number of destinations than `spans` says); the blocks
/// already built are then freed with `free`, as on an error. `generation`, `now`, `carry`,
/// `alloc` and `rng` as for [`build_sharing`].
#[allow(clippy::too_many_arguments)]
pub fn build_streamed(
    spans: &[(i32, usize)],
    fill: &mut dyn FnMut(usize, &mut Vec<Dest>) -> bool,
    generation: u64,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    free: &mut dyn FnMut(*mut u8),
    rng: &mut dyn FnMut() -> u32,
) -> Result<Option<*mut Header>, BuildError> {
    let nsets = spans.len();
    let ndests: usize = spans.iter().map(|s| s.1).sum();
    if nsets > u32::MAX as usize / 2 || ndests > u32::MAX as usize / 2 {
        return Err(BuildError::TooLarge);
    }
    let mut blks: Vec<*mut SetBlk> = Vec::with_capacity(nsets);
    let fail = |blks: &[*mut SetBlk], free: &mut dyn FnMut(*mut u8)| blks.iter().for_each(|&b| free(b as *mut u8));
    let mut buf: Vec<Dest> = Vec::new();
    let mut di = 0usize;
    for (i, &(id, len)) in spans.iter().enumerate() {
        if !fill(i, &mut buf) || buf.len() != len {
            drop(buf);
            fail(&blks, free);
            return Ok(None);
        }
        let src = SetSrc { id, all: &buf, idx: None };
        match build_set_src(&src, generation, di, now, carry, alloc, rng) {
            Ok(b) => blks.push(b),
            Err(e) => {
                fail(&blks, free);
                return Err(e);
            }
        }
        di += len;
    }
    drop(buf);
    let (mut v4, mut v6) = (Vec::with_capacity(ndests), Vec::new());
    for &b in &blks {
        // SAFETY: just built.
        let v = unsafe { &*b }.view();
        set_ip_entries(&v, &mut v4, &mut v6);
    }
    sort_ip4(&mut v4);
    v6.sort_unstable();
    // SAFETY: the blocks were just built.
    match unsafe { write_header(&blks, generation, v4.len(), v6.len(), None, alloc) } {
        Some((h, p4, p6)) => {
            // SAFETY: `write_header` reserved room for exactly these entries.
            unsafe {
                std::ptr::copy_nonoverlapping(v4.as_ptr(), p4, v4.len());
                std::ptr::copy_nonoverlapping(v6.as_ptr(), p6, v6.len());
            }
            Ok(Some(h))
        }
        None => {
            fail(&blks, free);
            Err(BuildError::NoMemory(0))
        }
    }
}

/// Sorts IPv4 index entries as their derived order (address, set, index) does, packed into
/// one integer each (the sort compares them in one or two instructions).
fn sort_ip4(v: &mut [Ip4Ent]) {
    let mut p: Vec<u128> = v.iter().map(|e| (e.ip as u128) << 64 | ((e.set as u32 ^ 0x8000_0000) as u128) << 32 | e.local as u128).collect();
    p.sort_unstable();
    for (e, k) in v.iter_mut().zip(p) {
        *e = Ip4Ent { ip: (k >> 64) as u32, set: ((k >> 32) as u32 ^ 0x8000_0000) as i32, local: k as u32 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::attrs::Attrs;
    use crate::ds::order::DestSet;
    use crate::ds::uri::{Proto, Scheme};

    use super::super::testutil::Rng;

    fn dest(r: &mut Rng, setid: i32, k: u32) -> Dest {
        let ip: Option<IpAddr> = match r.below(4) {
            0 => None,
            1 => Some(format!("2001:db8::{:x}", k + 1).parse().expect("ip6")),
            _ => Some(IpAddr::from([10, (k >> 16) as u8, (k >> 8) as u8, k as u8])),
        };
        let attrs = match r.below(4) {
            0 => String::new(),
            1 => format!("duid=d{k};weight={}", r.below(120)),
            2 => format!("weight={};rweight={};ocrate={}", r.below(100), r.below(100), r.below(100)),
            _ => format!("latency={};cc=1", r.below(500)),
        };
        let (a, _) = crate::ds::attrs::parse_attrs(attrs.as_bytes(), false).unwrap_or((Attrs::default(), vec![]));
        Dest {
            setid,
            uri: format!("sip:h{k}.example:5060").into_bytes(),
            flags: [0, 1, 2, 8, 16][r.below(5) as usize],
            priority: r.below(4) as i32,
            attrs: a,
            scheme: Scheme::Sip,
            host: format!("h{k}.example").into_bytes(),
            port: 5060,
            proto: Proto::None,
            more_ips: if ip.is_some() && r.below(5) == 0 { vec!["10.200.0.1".parse().expect("ip"), "::1".parse().expect("ip")] } else { vec![] },
            ip,
            sock: r.below(3) as usize,
            line: k as usize + 1,
            col: 1,
        }
    }

    fn s(v: &ShStr) -> Vec<u8> {
        v.bytes().to_vec()
    }

    fn same(a: Snap<'_>, b: Snap<'_>, ctx: &str) {
        assert_eq!((a.nsets(), a.header().ndests), (b.nsets(), b.header().ndests), "{ctx}");
        assert_eq!(a.ids_sorted(), b.ids_sorted(), "{ctx}");
        assert_eq!((a.base4(), a.base6(), a.ip4(), a.ip6()), (b.base4(), b.base6(), b.ip4(), b.ip6()), "{ctx}");
        for (x, y) in a.sets().zip(b.sets()) {
            let (p, q) = (x.rec, y.rec);
            assert_eq!((p.id, p.nr, p.wlist, p.rrserial, p.cw_uniform), (q.id, q.nr, q.wlist, q.rrserial, q.cw_uniform), "{ctx}");
            let ld = |t: &[AtomicU32; 100]| t.iter().map(|v| v.load(Ordering::Relaxed)).collect::<Vec<_>>();
            assert_eq!((ld(&p.rwlist), ld(&p.pwlist)), (ld(&q.rwlist), ld(&q.pwlist)), "{ctx}");
            assert_eq!(
                p.cw().iter().map(|c| (c.seed, c.w.to_bits())).collect::<Vec<_>>(),
                q.cw().iter().map(|c| (c.seed, c.w.to_bits())).collect::<Vec<_>>(),
                "{ctx}"
            );
            for t in 0..2 {
                let (u, v) = (&p.xw[t], &q.xw[t]);
                assert_eq!((u.n.load(Ordering::Relaxed), u.total.load(Ordering::Relaxed)), (v.n.load(Ordering::Relaxed), v.total.load(Ordering::Relaxed)), "{ctx}");
                let sl = |h: &XwHdr| h.slots(p.nr as usize).iter().map(|z| (z.end.load(Ordering::Relaxed), z.idx.load(Ordering::Relaxed))).collect::<Vec<_>>();
                assert_eq!(sl(u), sl(v), "{ctx}");
            }
            for (d, e) in x.dests.iter().zip(y.dests) {
                let f = |d: &DestRec| {
                    (
                        (d.iuid, d.sock, d.flags.load(Ordering::Relaxed), d.cfg_flags, d.priority, d.maxload, d.weight, d.cc),
                        (d.ocmin, d.ocmax, d.rweight_rt.load(Ordering::Relaxed), d.oc_rate.load(Ordering::Relaxed), d.dnstime_sec, d.dnstime_usec),
                        (d.ip, d.port, d.proto, d.scheme, d.af, d.rweight_cfg, d.ocrate_cfg),
                        (d.lat_avg.load(Ordering::Relaxed), d.lat_est.load(Ordering::Relaxed), d.oc_dist[0].load(Ordering::Relaxed), d.oc_dist[1].load(Ordering::Relaxed)),
                        [s(&d.uri), s(&d.host), s(&d.attrs_body), s(&d.duid), s(&d.socket), s(&d.sockname), s(&d.ping_from), s(&d.obproxy), s(&d.ping_socket)],
                        d.addrs().collect::<Vec<_>>(),
                    )
                };
                assert_eq!(f(d), f(e), "{ctx}");
            }
        }
    }

    /// `sort_ip4` sorts as the derived order of the entries.
    #[test]
    fn packed_ip4_sort() {
        let mut r = Rng(0x1234_5678_9abc_def1);
        for _ in 0..200 {
            let n = r.below(80) as usize;
            let mut v: Vec<Ip4Ent> = (0..n)
                .map(|_| Ip4Ent {
                    ip: [0, 1, u32::MAX, 0x7f00_0001][r.below(4) as usize] ^ r.below(3),
                    set: [i32::MIN, -1, 0, 1, i32::MAX][r.below(5) as usize],
                    local: r.below(4),
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            sort_ip4(&mut v);
            assert_eq!(v, want);
        }
    }

    /// A list built set by set equals the list built from the prepared list (same blocks,
    /// same random draws, same address index), and an abandoned build frees what it built.
    #[test]
    fn streamed_equals_build() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let nsets = r.below(12) as usize;
            let mut k = 0u32;
            let sets: Vec<DestSet> = (0..nsets)
                .map(|i| {
                    let id = i as i32 * 3 + r.below(3) as i32 - 1;
                    let big = r.below(4) == 0;
                    let n = 1 + r.below(if big { 40 } else { 6 });
                    let dests = (0..n)
                        .map(|_| {
                            k += 1;
                            dest(&mut r, id, k)
                        })
                        .collect();
                    DestSet { id, dests }
                })
                .filter(|s: &DestSet| !s.dests.is_empty())
                .fold(Vec::new(), |mut v: Vec<DestSet>, s| {
                    if !v.iter().any(|x| x.id == s.id) {
                        v.push(s);
                    }
                    v
                });
            let seed = r.next() as u64 | 1;
            let mut ra = Rng(seed);
            let a = build(&sets, 5, (7, 8), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || ra.next()).expect("build");
            let spans: Vec<(i32, usize)> = sets.iter().map(|s| (s.id, s.dests.len())).collect();
            let mut rb = Rng(seed);
            let mut fills = 0;
            let b = build_streamed(
                &spans,
                &mut |i, buf| {
                    fills += 1;
                    buf.clear();
                    buf.extend(sets[i].dests.iter().cloned());
                    true
                },
                5,
                (7, 8),
                &mut |_, _, _| None,
                &mut testutil::heap_alloc,
                &mut |_| panic!("nothing to free"),
                &mut || rb.next(),
            )
            .expect("streamed")
            .expect("not abandoned");
            assert_eq!(fills, sets.len());
            // SAFETY: both just built.
            let (sa, sb) = unsafe { (Snap::from_ptr(a).expect("a"), Snap::from_ptr(b).expect("b")) };
            same(sa, sb, &format!("round {round}"));
            // abandoned at a random set: every block built so far is freed, nothing else
            if nsets > 0 {
                let stop = r.below(sets.len() as u32) as usize;
                let mut built = 0usize;
                let mut freed = 0usize;
                let got = build_streamed(
                    &spans,
                    &mut |i, buf| {
                        buf.clear();
                        buf.extend(sets[i].dests.iter().cloned());
                        i != stop
                    },
                    6,
                    (0, 0),
                    &mut |_, _, _| None,
                    &mut |n| {
                        built += 1;
                        testutil::heap_alloc(n)
                    },
                    &mut |_| freed += 1,
                    &mut || 3,
                )
                .expect("no error");
                assert!(got.is_none());
                assert_eq!((built, freed), (stop, stop), "round {round}");
            }
        }
    }
}
