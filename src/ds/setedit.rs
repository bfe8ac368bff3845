//! The block of a set edited by one destination (`dispatcher.add` / `remove`), built from the
//! set's current block instead of from parsed destinations: the records that stay are copied
//! (their strings, addresses and consistent-hashing entries with them, their attrs not parsed
//! again), only the new destination is written from its parsed entry. The result equals what
//! [`super::build_set`] gives for the same destinations (the destinations turned back into
//! load entries by [`rec_dest`]): the same runtime state carried by the same `carry` calls in
//! the same order, the same per-set tables drawn from the same random sequence (see the test
//! `copy_equals_rebuild`).
//!
//! A child module of `snapshot` (it writes the records' private fields).

use super::{
    finish_set, ip_key, rec_ip_counts, rec_span, set_rec, weight_note_in, weight_note_possible, write_dest, AddrRec, BuildError, CarryFn,
    CwEnt, DestCfg, DestRec, SetBlk, SetParts, SetView, StrOut, DS_DISABLED, DS_INACTIVE,
};
use crate::ds::attrs::Attrs;
use crate::ds::dest::Dest;
use crate::ds::latency::LatencyStats;
use crate::ds::logfmt::Note;
use crate::ds::uri::{Proto, Scheme};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

/// One destination of the edited set, in its new order.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// Record `i` of the set's current block, copied.
    Old(&'a DestRec, usize),
    /// A destination written from its entry (the added one, or a record whose attrs change
    /// when parsed again, see [`copyable`]).
    New(&'a Dest),
}

/// Whether record `d` can be copied as it is: parsing its stored attrs again (what turning it
/// back into a load entry does) gives the same attrs. Not so for a body that still ends with
/// `;` (one more is removed) or, with `ds_attrs_none`, an empty one (it becomes `none=yes`).
pub fn copyable(d: &DestRec, attrs_none: bool) -> bool {
    let b = d.attrs_body.bytes();
    b.last() != Some(&b';') && !(b.is_empty() && attrs_none)
}

/// Record `d` of set `setid` as a load entry, its attrs parsed again (`note` gets their
/// messages, as the C module logs them again when it adds the destination again).
pub fn rec_dest(setid: i32, d: &DestRec, attrs_none: bool, note: &mut dyn FnMut(&Note)) -> Dest {
    let attrs = match crate::ds::attrs::parse_attrs(d.attrs_body.bytes(), attrs_none) {
        Ok((a, notes)) => {
            notes.iter().for_each(&mut *note);
            a
        }
        Err(_) => Default::default(),
    };
    Dest {
        setid,
        uri: d.uri.bytes().to_vec(),
        flags: d.cfg_flags,
        priority: d.priority,
        attrs,
        scheme: scheme_from(d.scheme),
        host: d.host.bytes().to_vec(),
        port: d.port,
        proto: proto_from(d.proto),
        ip: d.ip_addr(),
        more_ips: d.extra_addrs().iter().filter_map(|a| a.ip_addr()).collect(),
        sock: d.sock,
        line: 0,
        col: 0,
    }
}

pub fn scheme_from(v: u8) -> Scheme {
    [Scheme::Sip, Scheme::Sips, Scheme::Tel, Scheme::Tels, Scheme::Urn].into_iter().find(|s| *s as u8 == v).unwrap_or(Scheme::Sip)
}

pub fn proto_from(v: u8) -> Proto {
    [Proto::None, Proto::Udp, Proto::Tcp, Proto::Tls, Proto::Sctp, Proto::Ws, Proto::Wss, Proto::Other]
        .into_iter()
        .find(|p| *p as u8 == v)
        .unwrap_or(Proto::None)
}

/// `Attrs::latency_init` of a stored attrs body (parsed only when it names `latency`).
fn latency_init_of(body: &[u8]) -> Option<i32> {
    // (the test of `latency_init`, before the body is copied)
    if !crate::ds::attrs::has_ci(body, b"latency") {
        return None;
    }
    Attrs { body: body.to_vec(), ..Default::default() }.latency_init()
}

/// What `write_dest` writes for the configured values of a copyable record `d` of the
/// set's current block: `d` is copied as it is, its strings as the one span `span` (see
/// [`rec_span`]; their references keep their places in it), and what a record written anew
/// has differently is written over the copy: the runtime state (carried, or the start
/// values), the internal id, the further addresses at `extra`, the DNS time, the latency
/// start `lat0`, the overload-control table (drawn from `rng` as `write_dest` draws it), the
/// counters and the links to other lists (none). The test `copy_equals_rebuild` compares
/// both ways field by field.
///
/// # Safety
/// As for `write_dest`; `span` is `rec_span(d)` and `strs` has room for it.
#[allow(clippy::too_many_arguments)]
unsafe fn copy_rec(
    p: *mut DestRec,
    d: &DestRec,
    span: Option<(*const u8, usize)>,
    strs: &mut StrOut,
    carried: Option<super::CarriedState>,
    new_iuid: u64,
    now: (u64, u64),
    lat0: LatencyStats,
    extra: (*const AddrRec, u32),
    rng: &mut crate::ds::weights::SetRng,
) {
    // SAFETY: guaranteed by the caller: `p` is valid for a `DestRec` and does not overlap
    // `d` (another block); the span lies in `d`'s live block and `strs` has room for it.
    unsafe {
        std::ptr::copy_nonoverlapping(d as *const DestRec, p, 1);
        let n = &mut *p;
        if let Some((lo, len)) = span {
            let to = strs.put_span(lo, len);
            // a reference is an offset from its field: the field moved with the record, the
            // bytes with the span (both inside the new block, so the result fits an i32)
            let shift = (to as isize - lo as isize) - (p as isize - d as *const DestRec as isize);
            for r in [
                &mut n.uri,
                &mut n.host,
                &mut n.attrs_body,
                &mut n.duid,
                &mut n.socket,
                &mut n.sockname,
                &mut n.ping_from,
                &mut n.obproxy,
                &mut n.ping_socket,
            ] {
                if r.off != 0 {
                    r.off = (r.off as isize + shift) as i32;
                }
            }
        }
        n.iuid = carried.map(|c| c.iuid).filter(|&i| i != 0).unwrap_or(new_iuid);
        n.flags = AtomicI32::new(carried.map_or(d.cfg_flags, |c| c.flags));
        n.fail_cnt = AtomicI32::new(carried.map_or(0, |c| c.fail_cnt));
        n.dload = AtomicI32::new(carried.map_or(0, |c| c.dload));
        n.dload_copied = AtomicI32::new(0);
        n.n_extra = extra.1;
        n.extra_off = 0;
        if !extra.0.is_null() && extra.1 > 0 {
            n.extra_off = (extra.0 as isize - &n.extra_off as *const i32 as isize) as i32;
        }
        (n.dnstime_sec, n.dnstime_usec) = if d.af != 0 { (now.0 as u32, now.1 as u32) } else { (0, 0) };
        n.lat_avg = AtomicU64::new(lat0.average.to_bits());
        n.lat_est = AtomicU64::new(lat0.estimate.to_bits());
        n.lat = std::cell::UnsafeCell::new(lat0);
        n.ping_start_us = AtomicU64::new(0);
        n.rweight_rt = AtomicI32::new(d.rweight_cfg as i32);
        let ocrate = d.ocrate_cfg as i32;
        n.oc_rate = AtomicI32::new(ocrate);
        n.oc_seq = AtomicI32::new(0);
        n.oc_time_us = AtomicU64::new(0);
        n.oc_idx = AtomicU32::new(0);
        let oc = if ocrate <= 0 {
            [u64::MAX, (1u64 << 36) - 1]
        } else {
            crate::ds::weights::oc_bits(&crate::ds::weights::oc_table(ocrate, rng))
        };
        n.oc_dist = [AtomicU64::new(oc[0]), AtomicU64::new(oc[1])];
        n.carried_from = carried.map_or(std::ptr::null(), |c| c.src);
        n.successor = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
        std::ptr::write(&mut n.ctr, Default::default());
    }
}

/// Builds the block of set `id` from `srcs` (its destinations in their new order; `Old`
/// records belong to `old`, the set's current block; those that are not [`copyable`] are
/// turned into entries first, with `attrs_none` the `ds_attrs_none` modparam): what
/// [`super::build_set`] builds for the same destinations, with the same `carry` calls (one
/// per destination, in order), new internal ids from `first_di`, and the same draws of `rng`.
#[allow(clippy::too_many_arguments)]
pub fn build_edited(
    id: i32,
    old: Option<&SetBlk>,
    srcs: &[Src<'_>],
    generation: u64,
    first_di: usize,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    rng: &mut dyn FnMut() -> u32,
    attrs_none: bool,
) -> Result<*mut SetBlk, BuildError> {
    let old_view: Option<SetView<'_>> = old.map(|b| b.view());
    let old_cw = old_view.map_or(&[][..], |v| v.rec.cw());
    let old_notes = old.is_some_and(|b| b.maybe_notes());
    let ndests = srcs.len();
    // one pass over the sources: sizes, the state carried for each destination in order (as
    // `build_set` asks for it), what the set's tables are drawn from; the records whose attrs
    // change when parsed again are turned into entries (`conv`, by position; usually none)
    let mut conv: Vec<(usize, Dest)> = Vec::new();
    let mut strbytes = 0usize;
    let mut nextra = 0usize;
    let mut carried = Vec::with_capacity(ndests);
    let mut weights = Vec::with_capacity(ndests);
    let mut rweights = Vec::with_capacity(ndests);
    let mut usable = Vec::with_capacity(ndests);
    let mut prios = Vec::with_capacity(ndests);
    // the strings of each copied record, as one span (None: a written one, or no strings)
    let mut spans: Vec<Option<(*const u8, usize)>> = Vec::with_capacity(ndests);
    let mut maybe_notes = false;
    for (k, s) in srcs.iter().enumerate() {
        let conv_d;
        let s = match s {
            Src::Old(d, _) if !copyable(d, attrs_none) => {
                conv.push((k, rec_dest(id, d, attrs_none, &mut |_| {})));
                conv_d = conv.last().map(|c| &c.1);
                match conv_d {
                    Some(d) => Src::New(d),
                    None => *s,
                }
            }
            _ => *s,
        };
        let (extra, c, w, rw, fl, pr) = match s {
            Src::Old(d, _) => {
                maybe_notes |= old_notes && weight_note_in(d.attrs_body.bytes(), d.weight, d.rweight_cfg as i32);
                let extra = if d.af != 0 { d.extra_addrs().len() } else { 0 };
                // its strings are copied as one span
                let span = rec_span(d);
                strbytes += span.map_or(0, |s| s.1);
                spans.push(span);
                (extra, carry(id, d.uri.bytes(), d.cfg_flags), d.weight, d.rweight_cfg as i32, d.cfg_flags, d.priority)
            }
            Src::New(d) => {
                spans.push(None);
                maybe_notes |= weight_note_possible(&d.attrs);
                let extra = if d.ip.is_some() { d.more_ips.len() } else { 0 };
                for v in super::dest_strings(d).iter().flatten() {
                    if v.len() > u32::MAX as usize {
                        return Err(BuildError::TooLarge);
                    }
                    strbytes += v.len() + 1;
                }
                (extra, carry(id, &d.uri, d.flags), d.attrs.weight, d.attrs.rweight, d.flags, d.priority)
            }
        };
        nextra += extra;
        carried.push(c);
        weights.push(w);
        rweights.push(rw);
        usable.push(c.map_or(fl, |c| c.flags) & (DS_INACTIVE | DS_DISABLED) == 0);
        prios.push(pr);
    }
    let SetParts { total, blk, dest_ptr, addr_ptr, xw_ptr, cw_ptr, strs } = super::alloc_set_block(ndests, nextra, strbytes, alloc)?;
    // SAFETY: the parts are inside one fresh allocation of `total` bytes, 16-aligned; every
    // write below stays inside its part and uses properly aligned typed pointers; the `Old`
    // records are live (the caller holds the list they belong to).
    unsafe {
        let mut strs = StrOut(strs);
        let rng = &mut crate::ds::weights::SetRng::new((rng() as u64) << 32 | rng() as u64);
        let rec = set_rec(id, dest_ptr, ndests, cw_ptr, xw_ptr, &weights, &rweights, &usable, &prios, rng);
        blk.write(SetBlk { fresh: AtomicU64::new(generation), reused_by: AtomicU64::new(0), maybe_notes, nip4: 0, nip6: 0, size: total, rec });
        let mut ai = 0usize;
        let mut ci = conv.iter().peekable();
        let mut nip = (0u32, 0u32);
        for (di, (s, &c)) in srcs.iter().zip(&carried).enumerate() {
            let s = &match ci.next_if(|c| c.0 == di) {
                Some(c) => Src::New(&c.1),
                None => *s,
            };
            cw_ptr.add(di).write(match s {
                Src::Old(_, i) if *i < old_cw.len() => old_cw[*i],
                Src::Old(d, _) => CwEnt {
                    seed: crate::ds::algs::consistent::dest_seed(d.uri.bytes()),
                    w: crate::ds::algs::consistent::score_weight(d.weight),
                },
                Src::New(d) => CwEnt {
                    seed: crate::ds::algs::consistent::dest_seed(&d.uri),
                    w: crate::ds::algs::consistent::score_weight(d.attrs.weight),
                },
            });
            let extra_first = ai;
            let lat0 = |c: Option<super::CarriedState>, init: &dyn Fn() -> Option<i32>| {
                c.and_then(|c| c.lat).or_else(|| init().map(|v| LatencyStats::init(v, 10000))).unwrap_or_default()
            };
            let new_iuid = (generation << 24) | ((first_di + di) as u64 + 1);
            match s {
                Src::Old(d, _) => {
                    if d.af != 0 {
                        for a in d.extra_addrs() {
                            addr_ptr.add(ai).write(*a);
                            ai += 1;
                        }
                    }
                    let extra = if ai > extra_first { addr_ptr.add(extra_first) as *const AddrRec } else { std::ptr::null() };
                    let lat0 = lat0(c, &|| latency_init_of(d.attrs_body.bytes()));
                    let span = spans.get(di).copied().flatten();
                    copy_rec(dest_ptr.add(di), d, span, &mut strs, c, new_iuid, now, lat0, (extra, (ai - extra_first) as u32), rng);
                }
                Src::New(d) => {
                    if d.ip.is_some() {
                        for more in d.more_ips.iter() {
                            let (af, key) = ip_key(*more);
                            addr_ptr.add(ai).write(AddrRec { af, ip: key });
                            ai += 1;
                        }
                    }
                    let extra = if ai > extra_first { addr_ptr.add(extra_first) as *const AddrRec } else { std::ptr::null() };
                    let lat0 = lat0(c, &|| d.attrs.latency_init());
                    write_dest(dest_ptr.add(di), &DestCfg::of(d), &mut strs, c, new_iuid, now, lat0, (extra, (ai - extra_first) as u32), rng);
                }
            }
            let n = rec_ip_counts(&*dest_ptr.add(di));
            nip = (nip.0 + n.0, nip.1 + n.1);
        }
        finish_set(blk, Some(nip));
        Ok(blk)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{build, build_set, testutil, CarryIndex, Snap, DS_PROBING, DS_TRYING};
    use super::*;
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;

    use super::super::testutil::Rng;

    const ATTRS: &[&str] = &[
        "",
        "",
        "duid=x;weight=1",
        "weight=5",
        "weight=0",
        "rweight=30;weight=2",
        "weight=150;rweight=-3",
        "duid=a;latency=12",
        "LATENCY=7;duid=",
        "ocrate=30;ocmin=10;ocmax=80",
        "ocrate=5",
        "socket=udp:1.2.3.4:5060;sockname=s1;ping_from=sip:p@x;obproxy=sip:o;ping_socket=udp:1.2.3.4:5061",
        ";",
        "maxload=9;cc=1;rweight=70",
    ];

    fn dest(r: &mut Rng, setid: i32, attrs_none: bool) -> Dest {
        let k = r.below(12);
        let uri = format!("sip:h{k}.example:{}", 5060 + r.below(2));
        let raw = ATTRS[r.below(ATTRS.len() as u32) as usize];
        let (attrs, _) = crate::ds::attrs::parse_attrs(raw.as_bytes(), attrs_none).expect("attrs");
        let ip: Option<IpAddr> = match r.below(4) {
            0 => None,
            1 => Some(format!("2001:db8::{k}").parse().expect("ip")),
            _ => Some(std::net::Ipv4Addr::new(10, 0, 0, k as u8).into()),
        };
        let more_ips = if r.below(4) == 0 { vec!["10.9.9.9".parse().expect("ip"), format!("10.0.0.{k}").parse().expect("ip")] } else { vec![] };
        Dest {
            setid,
            uri: uri.into_bytes(),
            flags: [0, 0, DS_INACTIVE, DS_DISABLED, DS_PROBING, DS_INACTIVE | DS_PROBING][r.below(6) as usize],
            priority: r.below(3) as i32,
            attrs,
            scheme: [Scheme::Sip, Scheme::Sips][r.below(2) as usize],
            host: format!("h{k}.example").into_bytes(),
            port: 5060,
            proto: [Proto::None, Proto::Udp, Proto::Tcp, Proto::Tls][r.below(4) as usize],
            ip,
            more_ips,
            sock: r.below(3) as usize,
            line: 1,
            col: 1,
        }
    }

    /// Every field that matters of two records.
    fn same_dest(a: &DestRec, b: &DestRec, ctx: &str) {
        let r = Ordering::Relaxed;
        let strs = |d: &DestRec| {
            [&d.uri, &d.host, &d.attrs_body, &d.duid, &d.socket, &d.sockname, &d.ping_from, &d.obproxy, &d.ping_socket]
                .map(|s| s.get().map(|b| b.to_vec()))
        };
        assert_eq!(strs(a), strs(b), "{ctx}");
        assert_eq!(
            (a.iuid, a.flags.load(r), a.cfg_flags, a.priority, a.maxload, a.weight, a.cc, a.ocmin, a.ocmax),
            (b.iuid, b.flags.load(r), b.cfg_flags, b.priority, b.maxload, b.weight, b.cc, b.ocmin, b.ocmax),
            "{ctx}"
        );
        assert_eq!(
            (a.fail_cnt.load(r), a.dload.load(r), a.port, a.proto, a.scheme, a.af, a.rweight_cfg, a.ocrate_cfg, a.ip),
            (b.fail_cnt.load(r), b.dload.load(r), b.port, b.proto, b.scheme, b.af, b.rweight_cfg, b.ocrate_cfg, b.ip),
            "{ctx}"
        );
        let ex = |d: &DestRec| d.extra_addrs().iter().map(|x| (x.af, x.ip)).collect::<Vec<_>>();
        assert_eq!(ex(a), ex(b), "{ctx}");
        assert_eq!(
            (a.sock, a.dnstime_sec, a.dnstime_usec, a.lat_avg.load(r), a.lat_est.load(r), a.ping_start_us.load(r)),
            (b.sock, b.dnstime_sec, b.dnstime_usec, b.lat_avg.load(r), b.lat_est.load(r), b.ping_start_us.load(r)),
            "{ctx}"
        );
        // SAFETY: no concurrent writer in the test.
        assert_eq!(unsafe { (a.latency_stats(), b.latency_stats()) }.0, unsafe { b.latency_stats() }, "{ctx}");
        assert_eq!(
            (a.rweight_rt.load(r), a.oc_rate.load(r), a.oc_seq.load(r), a.oc_time_us.load(r), a.oc_idx.load(r)),
            (b.rweight_rt.load(r), b.oc_rate.load(r), b.oc_seq.load(r), b.oc_time_us.load(r), b.oc_idx.load(r)),
            "{ctx}"
        );
        assert_eq!([a.oc_dist[0].load(r), a.oc_dist[1].load(r)], [b.oc_dist[0].load(r), b.oc_dist[1].load(r)], "{ctx}");
        assert_eq!((a.carried_from, a.successor.load(r), a.dload_copied.load(r)), (b.carried_from, b.successor.load(r), b.dload_copied.load(r)), "{ctx}");
        assert_eq!(a.ctr.values(), b.ctr.values(), "{ctx}");
    }

    fn same_blk(a: &SetBlk, b: &SetBlk, ctx: &str) {
        let r = Ordering::Relaxed;
        assert_eq!((a.fresh.load(r), a.maybe_notes, a.nip4, a.nip6, a.size), (b.fresh.load(r), b.maybe_notes, b.nip4, b.nip6, b.size), "{ctx}");
        let (x, y) = (&a.rec, &b.rec);
        assert_eq!((x.id, x.nr, x.rrserial, x.cw_uniform, x.wlist), (y.id, y.nr, y.rrserial, y.cw_uniform, y.wlist), "{ctx}");
        let ld = |t: &[std::sync::atomic::AtomicU32; 100]| t.iter().map(|v| v.load(r)).collect::<Vec<_>>();
        assert_eq!(ld(&x.rwlist), ld(&y.rwlist), "{ctx}");
        assert_eq!(ld(&x.pwlist), ld(&y.pwlist), "{ctx}");
        assert_eq!(
            [x.last.load(r), x.wlast.load(r), x.rwlast.load(r), x.pwlast.load(r)],
            [y.last.load(r), y.wlast.load(r), y.rwlast.load(r), y.pwlast.load(r)],
            "{ctx}"
        );
        let cw = |s: &super::super::SetRec| s.cw().iter().map(|e| (e.seed, e.w.to_bits())).collect::<Vec<_>>();
        assert_eq!(cw(x), cw(y), "{ctx}");
        for t in 0..2 {
            let (h, k) = (&x.xw[t], &y.xw[t]);
            assert_eq!((h.n.load(r), h.total.load(r), h.ctr.load(r)), (k.n.load(r), k.total.load(r), k.ctr.load(r)), "{ctx}");
            let sl = |h: &super::super::XwHdr| h.slots(x.nr as usize).iter().map(|s| (s.end.load(r), s.idx.load(r))).collect::<Vec<_>>();
            assert_eq!(sl(h), sl(k), "{ctx}");
        }
        let (va, vb) = (a.view(), b.view());
        for (i, (da, db)) in va.dests.iter().zip(vb.dests).enumerate() {
            same_dest(da, db, &format!("{ctx} dest {i}"));
        }
    }

    /// The edited set built by copy equals the set rebuilt from its destinations as load
    /// entries (the path it replaces), over random sets, runtime states and edits.
    #[test]
    fn copy_equals_rebuild() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut copied_some = false;
        let mut uncopyable_some = false;
        for round in 0..400 {
            let attrs_none = r.below(3) == 0;
            let keep_state = r.below(2) == 0;
            let with_latency = r.below(2) == 0;
            let n = r.below(24) as usize;
            let mut dests: Vec<Dest> = (0..n).map(|_| dest(&mut r, 7, attrs_none)).collect();
            // as a list file orders them: higher priority first
            dests.sort_by_key(|d| -d.priority);
            let other = crate::ds::order::DestSet { id: 3, dests: (0..3).map(|_| dest(&mut r, 3, attrs_none)).collect() };
            let sets = if n > 0 { vec![other, crate::ds::order::DestSet { id: 7, dests }] } else { vec![other] };
            let p = build(&sets, 1, (5, 6), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 11).expect("build");
            let snap = unsafe { Snap::from_ptr(p) }.expect("snap");
            // runtime state as traffic, keepalives and RPCs leave it
            for v in snap.sets() {
                for d in v.dests {
                    let x = r.next();
                    if x % 3 == 0 {
                        d.flags.store([0, DS_INACTIVE, DS_TRYING, DS_DISABLED | DS_PROBING][(x >> 8) as usize % 4], Ordering::Relaxed);
                    }
                    d.fail_cnt.store((x >> 4) as i32 % 5, Ordering::Relaxed);
                    d.dload.store((x >> 12) as i32 % 7, Ordering::Relaxed);
                    d.rweight_rt.store((x >> 16) as i32 % 50, Ordering::Relaxed);
                    d.oc_rate.store((x >> 20) as i32 % 90, Ordering::Relaxed);
                    d.ctr.selected.store(x as u64 % 1000, Ordering::Relaxed);
                    // what a copy must not keep: keepalive, overload and latency state,
                    // the links to other lists, the other counters
                    let y = r.next() as u64 | 1;
                    d.ping_start_us.store(y, Ordering::Relaxed);
                    d.oc_seq.store(y as i32 & 0xff, Ordering::Relaxed);
                    d.oc_time_us.store(y, Ordering::Relaxed);
                    d.oc_idx.store(y as u32 % 100, Ordering::Relaxed);
                    d.oc_dist[0].store(y, Ordering::Relaxed);
                    d.oc_dist[1].store(y >> 3, Ordering::Relaxed);
                    d.lat_avg.store(y, Ordering::Relaxed);
                    d.lat_est.store(y >> 1, Ordering::Relaxed);
                    d.dload_copied.store(3, Ordering::Relaxed);
                    d.successor.store(d as *const DestRec as *mut DestRec, Ordering::Relaxed);
                    d.ctr.failover.store(y % 77, Ordering::Relaxed);
                    d.ctr.pings_sent.store(y % 99, Ordering::Relaxed);
                    d.ctr.inflight.store(2, Ordering::Relaxed);
                    if x % 5 == 0 {
                        // SAFETY: no concurrent reader in the test.
                        unsafe { *d.lat.get() = LatencyStats::init((x % 300) as i32, 3) };
                    }
                }
            }
            let old = snap.set(7);
            let old_blk = snap.set_pos(7).and_then(|i| snap.blk(i));
            let old_dests: &[DestRec] = old.map_or(&[][..], |v| v.dests);
            // the edit: add (any position by priority, possibly a URI the set has) or remove
            let add = r.below(3) != 0 || old_dests.is_empty();
            let nd = dest(&mut r, 7, attrs_none);
            let rm_uri: Vec<u8> = match old_dests.get(r.below(old_dests.len() as u32 + 1) as usize) {
                Some(d) => d.uri.bytes().to_vec(),
                None => b"sip:none".to_vec(),
            };
            // the path it replaces: every destination turned back into an entry
            let mut ents: Vec<Dest> = old_dests.iter().map(|d| rec_dest(7, d, attrs_none, &mut |_| {})).collect();
            let keep: Vec<usize>;
            if add {
                let pos = old_dests.iter().position(|x| x.priority <= nd.priority).unwrap_or(old_dests.len());
                ents.insert(pos, nd.clone());
                keep = (0..old_dests.len()).collect();
                let _ = pos;
            } else {
                ents.retain(|x| x.uri != rm_uri);
                keep = (0..old_dests.len()).filter(|&i| old_dests[i].uri.bytes() != rm_uri.as_slice()).collect();
            }
            if ents.is_empty() {
                testutil::heap_free(p as *mut u8, snap.header().total_size);
                continue;
            }
            // the copy path's sources (records whose attrs change when parsed again are turned
            // into entries by build_edited)
            let mut srcs: Vec<Src<'_>> = keep.iter().map(|&i| Src::Old(&old_dests[i], i)).collect();
            if add {
                let pos = old_dests.iter().position(|x| x.priority <= nd.priority).unwrap_or(old_dests.len());
                srcs.insert(pos, Src::New(&nd));
            }
            copied_some |= srcs.iter().any(|s| matches!(s, Src::Old(d, _) if copyable(d, attrs_none)));
            uncopyable_some |= srcs.iter().any(|s| matches!(s, Src::Old(d, _) if !copyable(d, attrs_none)));
            let carry_of = |idx: &CarryIndex<'_>, id: i32, uri: &[u8], fl: i32| {
                let mut c = idx.carry(id, uri, fl, with_latency)?;
                if !keep_state {
                    c.fail_cnt = 0;
                }
                Some(c)
            };
            let first_di = r.below(100) as usize;
            let seed = r.next() as u64 | 1;
            let (ia, ib) = (CarryIndex::for_set(Some(snap), 7), CarryIndex::for_set(Some(snap), 7));
            let set = crate::ds::order::DestSet { id: 7, dests: ents };
            let mut ra = Rng(seed);
            let a = build_set(&set, 2, first_di, (0, 0), &mut |id, u, f| carry_of(&ia, id, u, f), &mut testutil::heap_alloc, &mut || ra.next())
                .expect("rebuild");
            let mut rb = Rng(seed);
            let b = build_edited(7, old_blk, &srcs, 2, first_di, (0, 0), &mut |id, u, f| carry_of(&ib, id, u, f), &mut testutil::heap_alloc, &mut || rb.next(), attrs_none)
                .expect("copy");
            // SAFETY: both just built.
            let (ba, bb) = unsafe { (&*a, &*b) };
            same_blk(ba, bb, &format!("round {round} add={add} keep_state={keep_state} lat={with_latency} none={attrs_none}"));
            testutil::heap_free(a as *mut u8, ba.size);
            testutil::heap_free(b as *mut u8, bb.size);
            testutil::heap_free(p as *mut u8, snap.header().total_size);
        }
        assert!(copied_some && uncopyable_some);
    }
}

/// `cargo test --release --lib edit_a_timing -- --ignored --nocapture`: a sequence of edits as
/// `dispatcher.add` / `remove` make them (state.rs `install_edit`: carry index, plan, copy,
/// header, successor links, counter carry, hand-over, the old list freed), in shape a (100 sets
/// of 3,000) and b (30,000 sets of 10); prints the median and mean time per edit. A timing
/// harness, not a test (nothing asserted about time).
#[cfg(test)]
mod edit_timing_a {
    use super::super::{build, derive_planned, hand_over, link_set_successors, plan_edit, release, CarryIndex, Snap};
    use super::*;
    use crate::ds::uri::{Proto, Scheme};
    use std::net::IpAddr;

    /// An allocator that remembers the size (the release callback gets only the pointer).
    fn alloc(n: usize) -> *mut u8 {
        let l = std::alloc::Layout::from_size_align(n + 16, 16).expect("layout");
        // SAFETY: non-zero size.
        unsafe {
            let p = std::alloc::alloc(l);
            (p as *mut usize).write(n + 16);
            p.add(16)
        }
    }
    fn free(p: *mut u8) {
        // SAFETY: `p` came from `alloc`.
        unsafe {
            let b = p.sub(16);
            let n = (b as *const usize).read();
            std::alloc::dealloc(b, std::alloc::Layout::from_size_align(n, 16).expect("layout"));
        }
    }

    /// One edit of set `setid`: `add` puts `nd` first among its priority, else removes `uri`.
    fn edit(p: *mut super::super::Header, setid: i32, add: Option<&Dest>, uri: &[u8], gen: u64) -> *mut super::super::Header {
        let cur = unsafe { Snap::from_ptr(p) }.expect("snap");
        let dests = cur.set(setid).map_or(&[][..], |v| v.dests);
        let mut srcs = Vec::with_capacity(dests.len() + 1);
        match add {
            Some(d) => {
                let pos = dests.iter().position(|x| x.priority <= d.priority).unwrap_or(dests.len());
                srcs.extend((0..pos).map(|i| Src::Old(&dests[i], i)));
                srcs.push(Src::New(d));
                srcs.extend((pos..dests.len()).map(|i| Src::Old(&dests[i], i)));
            }
            None => srcs.extend((0..dests.len()).filter(|&i| dests[i].uri.bytes() != uri).map(|i| Src::Old(&dests[i], i))),
        }
        let so = crate::ds::order::avl_order_edit(cur.ids(), add.map(|_| setid), None);
        let idx = CarryIndex::for_set(Some(cur), setid);
        let plan = plan_edit(cur, &so.ids, Some(&so.by_id), Some(setid), true).expect("plan");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ gen;
        let mut rng = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u32
        };
        let t0 = std::time::Instant::now();
        let b = build_edited(setid, cur.set_pos(setid).and_then(|i| cur.blk(i)), &srcs, gen, plan.first_di(), (0, 0), &mut |id, u, f| idx.carry(id, u, f, false), &mut alloc, &mut rng, false)
            .expect("copy");
        let t1 = std::time::Instant::now();
        let np = unsafe { derive_planned(cur, &plan, &so.ids, Some(&so.by_id), Some(b), gen, Some(true), &mut alloc) }.expect("derive");
        let new = unsafe { Snap::from_ptr(np) }.expect("snap");
        let t2 = std::time::Instant::now();
        let mut t3 = t2;
        if let Some(v) = new.set(setid) {
            unsafe { link_set_successors(&v, false) };
            t3 = std::time::Instant::now();
            for d in v.dests {
                if let Some(o) = idx.find(setid, d.uri.bytes()) {
                    o.ctr.carry_into(&d.ctr);
                }
            }
        }
        let t4 = std::time::Instant::now();
        unsafe { hand_over(cur, new, Some(setid), false) };
        let t5 = std::time::Instant::now();
        unsafe {
            release(
                p,
                &mut |set| {
                    super::super::forward_set_counters(&set);
                    for d in set.dests {
                        d.ctr.forward();
                    }
                },
                &mut free,
            )
        };
        let t6 = std::time::Instant::now();
        PARTS.with(|p| {
            let mut p = p.borrow_mut();
            for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5].iter().enumerate() {
                p[k] += d.as_secs_f64();
            }
        });
        np
    }
    thread_local! { static PARTS: std::cell::RefCell<[f64; 6]> = const { std::cell::RefCell::new([0.0; 6]) }; }

    #[test]
    #[ignore]
    fn edit_a_timing() {
        let shapes = std::env::var("EDIT_SHAPES").unwrap_or_else(|_| "a,b".into());
        for (shape, nsets, per) in [("a", 100usize, 3000usize), ("b", 30000, 10)] {
            if !shapes.contains(shape) {
                continue;
            }
            let sets = super::super::testutil::scale_list(nsets, per, true);
            let mut p = build(&sets, 1, (0, 0), &mut |_, _, _| None, &mut alloc, &mut || 7).expect("build");
            drop(sets);
            let k = 200usize;
            let mut gen = 2u64;
            let mut times = Vec::new();
            let mut added = Vec::new();
            for what in ["add", "remove"] {
                let mut ts = Vec::new();
                for i in 0..k {
                    let setid = 1 + ((i * 7919) % nsets) as i32;
                    let uri = format!("sip:10.100.{}.{}:5060", i / 250, i % 250 + 1).into_bytes();
                    let t = std::time::Instant::now();
                    if what == "add" {
                        let ip: IpAddr = std::net::Ipv4Addr::new(10, 100, (i / 250) as u8, (i % 250 + 1) as u8).into();
                        let d = Dest { setid, uri: uri.clone(), flags: 0, priority: 0, attrs: Default::default(), scheme: Scheme::Sip,
                            host: ip.to_string().into_bytes(), port: 5060, proto: Proto::None, ip: Some(ip), more_ips: vec![], sock: 0, line: 0, col: 0 };
                        p = edit(p, setid, Some(&d), &uri, gen);
                        added.push((setid, uri));
                    } else {
                        let (s, u) = &added[i];
                        p = edit(p, *s, None, u, gen);
                    }
                    ts.push(t.elapsed().as_secs_f64() * 1e3);
                    gen += 1;
                }
                let mean = ts.iter().sum::<f64>() / ts.len() as f64;
                let mut s = ts.clone();
                s.sort_by(|a, b| a.total_cmp(b));
                PARTS.with(|p| {
                    let mut p = p.borrow_mut();
                    eprintln!("  per edit (ms): build_edited {:.3} derive {:.3} link {:.3} counters {:.3} hand_over {:.3} release {:.3}", p[0] * 1e3 / k as f64, p[1] * 1e3 / k as f64, p[2] * 1e3 / k as f64, p[3] * 1e3 / k as f64, p[4] * 1e3 / k as f64, p[5] * 1e3 / k as f64);
                    *p = [0.0; 6];
                });
                eprintln!("shape {shape} {what}: median {:.3} ms, mean {mean:.3} ms, p90 {:.3} ms over {k}", s[k / 2], s[k * 9 / 10]);
                times.push(mean);
            }
            let _ = times;
        }
    }
}
