//! Reload: which sets of the running list the new list repeats unchanged, so that the new
//! version shares their blocks instead of preparing and building them again (issue 14).
//!
//! A set is shared when its entries, in the order the loader puts them in the set (priority
//! descending, equal priorities in reverse load order, see `order`), are the destinations of
//! the running set one for one — same URI, configured flags, priority and attrs body — and
//! preparing them again could not give anything else:
//! * no name to resolve (an IP literal, flag 16, or a DNS mode that does not resolve at load);
//!   a name is resolved again on every reload;
//! * no message to log again (`SetBlk::maybe_notes`, the `sip:` fix-up changes the URI so it
//!   never matches);
//! * no runtime value that a fresh build would reset and the carried state does not keep:
//!   congestion control (`cc`, it rewrites `rweight`), overload control (`ocmin`/`ocmax` set,
//!   a rate from the attrs or from `ds_oc_set_attrs`).
//!
//! What a reload with `ds_reload_keep_state` 1 carries (state flags, failure counter, call
//! load, internal id, counters, kept latency statistics) is in the shared records already;
//! what it resets (selection cursors, keepalive start time) the caller resets in place
//! (`snapshot::reset_reloaded_set`). The callers decide when sharing is off altogether
//! (`ds_reload_keep_state` 0, latency statistics not retained, DNS time shown).
use crate::ds::dest::{ip_literal, DS_DNS_MODE_INIT, DS_DNS_MODE_TIMER, DS_NODNSARES_DST};
use crate::ds::listfile::EntryRef;
use crate::ds::snapshot::{DestRec, SetBlk, Snap};

/// What preparing an entry depends on besides the entry itself.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// `ds_attrs_none`: empty attrs become `none=yes`.
    pub attrs_none: bool,
    /// `ds_dns_mode`.
    pub dns_mode: i32,
    /// core `dns_try_ipv6`.
    pub allow_ipv6: bool,
}

/// The sets a reload shares with the running list.
pub struct Plan<'a> {
    /// Per entry (file order): it belongs to a shared set (not prepared again).
    pub shared_entry: Vec<bool>,
    /// The shared sets: (position of the first entry in the file, set id, running block),
    /// sorted by set id.
    pub sets: Vec<(u32, i32, &'a SetBlk)>,
    /// Destinations in the shared sets.
    pub ndests: usize,
}

impl<'a> Plan<'a> {
    /// No set shared.
    pub fn none(n: usize) -> Plan<'a> {
        Plan { shared_entry: vec![false; n], sets: Vec::new(), ndests: 0 }
    }

    /// The running block to share for set `id`.
    pub fn block(&self, id: i32) -> Option<&'a SetBlk> {
        self.sets.binary_search_by_key(&id, |s| s.1).ok().and_then(|i| self.sets.get(i)).map(|s| s.2)
    }

    /// (first position, set id) of every shared set, for `order::build_sets_sharing`.
    pub fn firsts(&self) -> Vec<(u32, i32)> {
        self.sets.iter().map(|s| (s.0, s.1)).collect()
    }
}

/// The attrs body a raw attrs value is stored as (`attrs::parse_attrs`).
fn stored_body(raw: &[u8], attrs_none: bool) -> &[u8] {
    if raw.is_empty() {
        return if attrs_none { b"none=yes" } else { b"" };
    }
    match raw.split_last() {
        Some((b';', rest)) => rest,
        _ => raw,
    }
}

/// Whether entry `e` would be prepared into exactly the running record `d`.
fn same_dest(e: &EntryRef<'_>, d: &DestRec, rules: &Rules) -> bool {
    if e.uri != d.uri.bytes() || e.flags != d.cfg_flags || e.priority != d.priority {
        return false;
    }
    if stored_body(e.attrs, rules.attrs_none) != d.attrs_body.bytes() {
        return false;
    }
    if d.cc != 0 || d.ocmin != 0 || d.ocmax != 100 {
        return false;
    }
    if d.oc_rate.load(std::sync::atomic::Ordering::Relaxed) != 0 || d.oc_seq.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        return false;
    }
    let host = d.host.bytes();
    if !rules.allow_ipv6 && host.first() == Some(&b'[') {
        return false;
    }
    let resolves = e.flags & DS_NODNSARES_DST == 0 && rules.dns_mode & (DS_DNS_MODE_INIT | DS_DNS_MODE_TIMER) != 0;
    !resolves || ip_literal(host).is_some()
}

/// Finds the sets of `entries` (a whole new list, file order) that `old` holds unchanged.
pub fn plan<'a>(entries: &[EntryRef<'_>], old: Option<Snap<'a>>, rules: &Rules) -> Plan<'a> {
    let n = entries.len();
    let Some(old) = old else { return Plan::none(n) };
    if n > u32::MAX as usize {
        return Plan::none(n);
    }
    // entries grouped by set, in set order: priority descending, then position descending
    let mut keys: Vec<(i32, std::cmp::Reverse<i32>, std::cmp::Reverse<u32>)> =
        entries.iter().enumerate().map(|(i, e)| (e.setid, std::cmp::Reverse(e.priority), std::cmp::Reverse(i as u32))).collect();
    keys.sort_unstable();
    let mut out = Plan::none(n);
    let mut g = 0usize;
    while g < keys.len() {
        let id = keys.get(g).map_or(0, |k| k.0);
        let mut end = g;
        while keys.get(end).is_some_and(|k| k.0 == id) {
            end += 1;
        }
        let group = keys.get(g..end).unwrap_or_default();
        g = end;
        let Some(blk) = old.set_pos(id).and_then(|p| old.blk(p)) else { continue };
        if blk.maybe_notes() {
            continue;
        }
        let v = blk.view();
        if v.dests.len() != group.len() {
            continue;
        }
        let same = group.iter().zip(v.dests).all(|(k, d)| entries.get(k.2 .0 as usize).is_some_and(|e| same_dest(e, d, rules)));
        if !same {
            continue;
        }
        let mut first = u32::MAX;
        for k in group {
            let i = k.2 .0;
            first = first.min(i);
            if let Some(s) = out.shared_entry.get_mut(i as usize) {
                *s = true;
            }
        }
        out.ndests += group.len();
        out.sets.push((first, id, blk));
    }
    // keys were sorted by set id: so are the shared sets
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::dest::{prepare_entry, LoadEnv};
    use crate::ds::listfile::parse_list_ref;
    use crate::ds::order::{build_sets, build_sets_sharing, order_sets};
    use crate::ds::snapshot::{build_sharing, hand_over_reload, release, testutil, unmark_reload, Header, SetSrc};
    use crate::ds::uri::{Proto, Scheme};
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;

    struct Env;
    impl LoadEnv for Env {
        fn resolve_host(&mut self, h: &[u8], _: Scheme, _: Proto, _: u16) -> Option<IpAddr> {
            (h == b"gw.example").then(|| "10.0.0.9".parse().expect("ip"))
        }
        fn socket_by_addr(&mut self, _: &[u8]) -> usize {
            0
        }
        fn socket_by_name(&mut self, _: &[u8]) -> usize {
            0
        }
        fn default_socket(&self) -> usize {
            0
        }
        fn allow_ipv6(&self) -> bool {
            true
        }
    }

    const RULES: Rules = Rules { attrs_none: false, dns_mode: 1, allow_ipv6: true };

    /// Loads `text` as a reload would, sharing with `old`: (new list, ids of the shared sets).
    fn load(text: &str, old: *mut Header) -> (*mut Header, Vec<i32>) {
        load_gen(text, old, 2)
    }
    fn load_gen(text: &str, old: *mut Header, gen: u64) -> (*mut Header, Vec<i32>) {
        let entries = parse_list_ref(text.as_bytes(), "t").expect("parse");
        // SAFETY: null or a live list of this test.
        let old = unsafe { Snap::from_ptr(old) };
        let plan = plan(&entries, old, &RULES);
        let (mut dests, mut pos) = (Vec::new(), Vec::new());
        for (i, e) in entries.iter().enumerate() {
            if plan.shared_entry[i] {
                continue;
            }
            if let Ok((d, _)) = prepare_entry(e, false, 1, &mut Env) {
                dests.push(d);
                pos.push(i as u32);
            }
        }
        let (order, spans) = order_sets(&dests, &pos, &plan.firsts());
        let srcs: Vec<SetSrc<'_>> = spans.iter().map(|sp| SetSrc::indexed(sp.id, &dests, &order[sp.start..sp.end])).collect();
        // the same sets as `build_sets_sharing` gives
        let sets = build_sets_sharing(dests.clone(), &pos, &plan.firsts());
        assert_eq!(sets.iter().map(|s| (s.id, s.dests.clone())).collect::<Vec<_>>(), srcs.iter().map(|s| (s.id, s.iter().cloned().collect())).collect::<Vec<_>>());
        let idx = crate::ds::snapshot::CarryIndex::new(old);
        let p = build_sharing(
            &srcs,
            old,
            &mut |id, len| if len == 0 { plan.block(id) } else { None },
            gen,
            (0, 0),
            &mut |id, uri, fl| idx.carry(id, uri, fl, false),
            &mut testutil::heap_alloc,
            &mut |_| {},
            &mut || 7,
        )
        .expect("build");
        (p, plan.sets.iter().map(|s| s.1).collect())
    }

    /// Everything a list shows: set order, destinations and the address index.
    fn shape(p: *mut Header) -> Vec<String> {
        // SAFETY: a live list of this test.
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let mut out: Vec<String> = s
            .sets()
            .map(|v| {
                let d: Vec<String> = v.dests.iter().map(|d| format!("{} {} {} {:?}", String::from_utf8_lossy(d.uri.bytes()), d.cfg_flags, d.priority, d.attrs_body.get())).collect();
                format!("set {}: {}", v.rec.id, d.join(", "))
            })
            .collect();
        for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "10.0.0.9", "::1"] {
            let hits: Vec<(i32, String)> = s.by_ip(ip.parse().expect("ip")).map(|(v, d)| (v.rec.id, String::from_utf8_lossy(d.uri.bytes()).into_owned())).collect();
            out.push(format!("{ip}: {hits:?}"));
        }
        out
    }

    fn fresh(text: &str) -> Vec<String> {
        let (p, shared) = load(text, std::ptr::null_mut());
        assert!(shared.is_empty());
        shape(p)
    }

    const LIST: &str = "2 sip:127.0.0.1:5060 0 0 duid=a;\n1 sip:127.0.0.2 0 5\n3 sip:[::1] 0 0\n\
                        2 sip:127.0.0.3 2 1 weight=5\n1 sip:gw.example 0 0\n5 sip:127.0.0.1 0 0 cc=1\n\
                        6 sip:127.0.0.3 0 0\n2 sip:127.0.0.2 0 1\n";

    #[test]
    fn unchanged_sets_are_shared_and_the_list_is_the_same() {
        let (p1, _) = load(LIST, std::ptr::null_mut());
        // SAFETY: live.
        let s1 = unsafe { Snap::from_ptr(p1) }.expect("snap");
        s1.set(2).expect("set 2").rec.last.store(1, Ordering::Relaxed);
        s1.set(2).expect("set 2").dests[0].fail_cnt.store(3, Ordering::Relaxed);
        let (p2, shared) = load(LIST, p1);
        // set 1 resolves a name, set 5 uses congestion control: built again
        assert_eq!(shared, vec![2, 3, 6]);
        assert_eq!(shape(p2), fresh(LIST));
        // SAFETY: live.
        let s2 = unsafe { Snap::from_ptr(p2) }.expect("snap");
        assert!(std::ptr::eq(s1.set(2).expect("2").rec, s2.set(2).expect("2").rec));
        assert!(!std::ptr::eq(s1.set(1).expect("1").rec, s2.set(1).expect("1").rec));
        // cursors restart, the kept state stays
        assert_eq!(s2.set(2).expect("set 2").rec.last.load(Ordering::Relaxed), 0);
        assert_eq!(s2.set(2).expect("set 2").dests[0].fail_cnt.load(Ordering::Relaxed), 3);
        // the old list frees only the blocks the new one did not take
        // SAFETY: both live, p2 built over p1; then p1 is not read any more.
        unsafe { hand_over_reload(s1, s2, false) };
        let freed = unsafe { release(p1, &mut |_| {}, &mut |_| {}) };
        assert_eq!(freed, 2);
    }

    /// The set blocks `p` frees (by address), without freeing them.
    fn frees(p: *mut Header) -> Vec<usize> {
        let mut out = Vec::new();
        // SAFETY: the caller does not read `p` any more (the blocks stay allocated: no free).
        unsafe { release(p, &mut |v| out.push(v.rec as *const _ as usize), &mut |_| {}) };
        out.sort_unstable();
        out
    }
    fn blocks(p: *mut Header) -> Vec<usize> {
        // SAFETY: live.
        let s = unsafe { Snap::from_ptr(p) }.expect("snap");
        let mut v: Vec<usize> = s.sets().map(|v| v.rec as *const _ as usize).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn shared_blocks_are_freed_once_over_reloads_and_failed_reloads() {
        // three reloads of the same list in a row: every version frees only what no newer
        // version holds, oldest first; the last one frees the rest; each block exactly once
        let (p1, _) = load_gen(LIST, std::ptr::null_mut(), 1);
        let (p2, _) = load_gen(LIST, p1, 2);
        let (p3, shared) = load_gen(LIST, p2, 3);
        assert_eq!(shared, vec![2, 3, 6]);
        let snap = |p| unsafe { Snap::from_ptr(p) }.expect("snap");
        // SAFETY: live lists of this test, p3 built over p2 over p1.
        unsafe {
            hand_over_reload(snap(p1), snap(p2), false);
            hand_over_reload(snap(p2), snap(p3), false);
        }
        let all: std::collections::BTreeSet<usize> = [p1, p2, p3].into_iter().flat_map(blocks).collect();
        let (f1, f2, f3) = (frees(p1), frees(p2), frees(p3));
        assert_eq!(f1.len(), 2, "p1 frees its sets 1 and 5 only");
        assert_eq!(f2.len(), 2);
        assert_eq!(f3.len(), 5);
        let mut each: Vec<usize> = [f1, f2, f3].concat();
        each.sort_unstable();
        assert_eq!(each, all.into_iter().collect::<Vec<_>>(), "every block freed exactly once");

        // a reload that cannot be published: it frees only what it built, the running list
        // owns all its blocks again, an older list still does not free the shared ones; the
        // next reload (same generation) that does not take set 2 leaves it to the running list
        let (q1, _) = load_gen(LIST, std::ptr::null_mut(), 1);
        let (q2, _) = load_gen(LIST, q1, 2);
        let (q3, _) = load_gen(LIST, q2, 3);
        // SAFETY: as above.
        unsafe {
            hand_over_reload(snap(q1), snap(q2), false);
            hand_over_reload(snap(q2), snap(q3), false);
            hand_over_reload(snap(q2), snap(q3), true);
        }
        let fq3 = frees(q3);
        assert_eq!(fq3.len(), 2, "the failed reload frees its own sets 1 and 5");
        unmark_reload(snap(q2), 3);
        let changed = LIST.replace("2 sip:127.0.0.2 0 1", "2 sip:127.0.0.2 0 2");
        let (q4, shared) = load_gen(&changed, q2, 3);
        assert_eq!(shared, vec![3, 6]);
        // SAFETY: as above.
        unsafe { hand_over_reload(snap(q2), snap(q4), false) };
        let all: std::collections::BTreeSet<usize> = [q1, q2, q4].into_iter().flat_map(blocks).collect();
        let fq1 = frees(q1);
        assert_eq!(fq1.len(), 2, "the older list still leaves the blocks q2 holds");
        let fq2 = frees(q2);
        assert_eq!(fq2.len(), 3, "sets 1, 2 and 5 of the running list are not taken by q4");
        let fq4 = frees(q4);
        let mut each: Vec<usize> = [fq1, fq2, fq4].concat();
        each.sort_unstable();
        assert_eq!(each, all.into_iter().collect::<Vec<_>>(), "every block freed exactly once");
    }

    #[test]
    fn changed_sets_are_built_again() {
        let (p1, _) = load(LIST, std::ptr::null_mut());
        for (changed, want) in [
            // another flag, priority, attrs, URI; a new entry; an entry gone; a new set
            (LIST.replace("2 sip:127.0.0.3 2 1", "2 sip:127.0.0.3 0 1"), vec![3, 6]),
            (LIST.replace("2 sip:127.0.0.2 0 1", "2 sip:127.0.0.2 0 2"), vec![3, 6]),
            (LIST.replace("duid=a;", "duid=b"), vec![3, 6]),
            (LIST.replace("duid=a;", "duid=a"), vec![2, 3, 6]),
            (LIST.replace("6 sip:127.0.0.3", "6 sip:127.0.0.2"), vec![2, 3]),
            (format!("{LIST}6 sip:127.0.0.1\n"), vec![2, 3]),
            (LIST.replace("3 sip:[::1] 0 0\n", ""), vec![2, 6]),
            (format!("7 sip:127.0.0.1\n{LIST}"), vec![2, 3, 6]),
            // the same entries in reverse order: equal priorities of set 2 swap, the sets of
            // one destination stay (the order of the sets changes)
            (LIST.lines().rev().map(|l| format!("{l}\n")).collect::<String>(), vec![3, 6]),
        ] {
            let (p2, shared) = load(&changed, p1);
            assert_eq!(shared, want, "{changed}");
            assert_eq!(shape(p2), fresh(&changed), "{changed}");
        }
        // the order of sets follows the first appearance of the ids, shared or not
        let ids = |t: &str| crate::ds::order::avl_postorder(&t.lines().filter_map(|l| l.split(' ').next()?.parse().ok()).collect::<Vec<i32>>());
        let mut reordered = 0;
        for first in ["6 sip:127.0.0.3 0 0\n", "3 sip:[::1] 0 0\n", "5 sip:127.0.0.1 0 0 cc=1\n", "1 sip:127.0.0.2 0 5\n"] {
            let moved = format!("{first}{}", LIST.replace(first, ""));
            let (p2, shared) = load(&moved, p1);
            assert_eq!(shared, vec![2, 3, 6]);
            assert_eq!(shape(p2), fresh(&moved));
            reordered += (ids(&moved) != ids(LIST)) as usize;
        }
        // a new set first moves the shared ones
        let with7 = format!("7 sip:127.0.0.1\n{LIST}");
        reordered += (ids(&with7).into_iter().filter(|&i| i != 7).collect::<Vec<i32>>() != ids(LIST)) as usize;
        assert!(reordered > 0);
        assert!(build_sets(Vec::new()).is_empty());
    }
}
