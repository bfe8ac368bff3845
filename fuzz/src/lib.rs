//! Shared pieces of the fuzz targets: a deterministic fake Kamailio environment for
//! `prepare_dest`, a heap allocator for snapshots, and the invariant checks that every target
//! runs on what the pure core produced. A failed check panics, which AFL++ records as a crash.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;

use dispatcher::ds::compat;
use dispatcher::ds::dest::{prepare_dest, Dest, LoadEnv};
use dispatcher::ds::listfile::RawEntry;
use dispatcher::ds::order::{build_sets, DestSet};
use dispatcher::ds::select;
use dispatcher::ds::snapshot::{self, CarryIndex, Header, Snap, SetView, DS_DISABLED, DS_INACTIVE};
use dispatcher::ds::uri::{Proto, Scheme};

/// The Kamailio releases the module is built for (what `compat` can be set to).
pub const VERSIONS: [u32; 4] = [compat::val(5, 6, 3), compat::val(5, 8, 8), compat::val(6, 0, 7), compat::val(6, 1, 4)];

/// Module settings chosen by one input byte.
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    pub version: u32,
    pub attrs_none: bool,
    pub dns_mode: i32,
    pub ipv6: bool,
    pub use_default: bool,
}

impl Cfg {
    /// bits 0-1: release, 2: ds_attrs_none, 3-4: dns mode (0, 1=init, 4=timer, 9=init+qsrv),
    /// 5: dns_try_ipv6 off, 6: use_default (flags bit 0).
    pub fn from_byte(b: u8) -> Cfg {
        Cfg {
            version: VERSIONS[(b & 3) as usize],
            attrs_none: b & 4 != 0,
            dns_mode: [0, 1, 4, 9][((b >> 3) & 3) as usize],
            ipv6: b & 32 == 0,
            use_default: b & 64 != 0,
        }
    }
    pub fn apply(&self) {
        compat::set(self.version);
    }
}

/// FNV-1a, for deterministic fake addresses and seeds.
pub fn fnv(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A small deterministic PRNG (xorshift64*), seeded from the input.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// A Kamailio stand-in: host names resolve to a fixed 10.x address unless they end in
/// `.invalid`; sockets `udp:`/`tcp:`/`tls:`... are local unless they contain `bad`; socket
/// names are known when they start with a lower-case letter.
pub struct FakeEnv {
    pub ipv6: bool,
    pub default_sock: usize,
}

impl LoadEnv for FakeEnv {
    fn resolve_host(&mut self, host: &[u8], _scheme: Scheme, _proto: Proto, _port: u16) -> Option<IpAddr> {
        if host.is_empty() || host.ends_with(b".invalid") {
            return None;
        }
        let h = fnv(host);
        Some(IpAddr::V4(Ipv4Addr::new(10, (h >> 8) as u8, (h >> 16) as u8, (h >> 24) as u8)))
    }
    fn resolve_sip(&mut self, host: &[u8], scheme: Scheme, proto: Proto, port: u16) -> Option<(IpAddr, u16, Proto)> {
        let ip = self.resolve_host(host, scheme, proto, port)?;
        // an SRV answer for names starting with "srv"
        if host.starts_with(b"srv") {
            Some((ip, 5070, Proto::Tcp))
        } else {
            Some((ip, 0, Proto::None))
        }
    }
    fn socket_by_addr(&mut self, spec: &[u8]) -> usize {
        let local = [&b"udp:"[..], b"tcp:", b"tls:", b"sctp:", b"ws:", b"wss:"].iter().any(|p| spec.starts_with(p));
        if local && !spec.windows(3).any(|w| w == b"bad") {
            1 + (fnv(spec) % 1000) as usize
        } else {
            0
        }
    }
    fn socket_by_name(&mut self, name: &[u8]) -> usize {
        match name.first() {
            Some(c) if c.is_ascii_lowercase() => 2000 + (fnv(name) % 1000) as usize,
            _ => 0,
        }
    }
    fn default_socket(&self) -> usize {
        self.default_sock
    }
    fn allow_ipv6(&self) -> bool {
        self.ipv6
    }
}

/// A snapshot block on the Rust heap, freed on drop.
pub struct Block {
    ptr: *mut Header,
}

fn layout(n: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(n.max(16), 16).expect("layout")
}

impl Block {
    /// Builds a snapshot of `sets` with generation `gen` and the given carry function.
    pub fn build(sets: &[DestSet], gen: u64, carry: &mut dyn FnMut(i32, &[u8], i32) -> Option<snapshot::CarriedState>, rng: &mut Rng) -> Block {
        let mut alloc = |n: usize| {
            // SAFETY: non-zero size, valid alignment.
            unsafe { std::alloc::alloc(layout(n)) }
        };
        let ptr = snapshot::build(sets, gen, (1, 2), carry, &mut alloc, &mut || rng.next()).expect("snapshot::build of a valid list failed");
        Block { ptr }
    }
    pub fn snap(&self) -> Snap<'_> {
        // SAFETY: `ptr` came from `snapshot::build` and lives as long as `self`.
        unsafe { Snap::from_ptr(self.ptr) }.expect("snapshot magic")
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: the block was allocated by `Block::build` with this size.
        unsafe {
            let n = (*self.ptr).total_size;
            std::alloc::dealloc(self.ptr as *mut u8, layout(n));
        }
    }
}

/// Prepares every entry like the module's loader (entries that fail are skipped, as with
/// `ds_load_mode` 0) and orders them into sets. Checks what `prepare_dest` returned.
pub fn prepare_all(entries: &[RawEntry], cfg: &Cfg) -> Vec<Dest> {
    let mut env = FakeEnv { ipv6: cfg.ipv6, default_sock: 0 };
    let mut out = Vec::new();
    for e in entries {
        match prepare_dest(e, cfg.attrs_none, cfg.dns_mode, &mut env) {
            Ok((d, _notes)) => {
                check_dest(e, &d, cfg);
                out.push(d);
            }
            Err(err) => {
                assert_eq!((err.line, err.col), (e.line, e.col), "error position");
                assert!(!err.msg.is_empty());
            }
        }
    }
    out
}

/// Invariants of one prepared destination.
pub fn check_dest(e: &RawEntry, d: &Dest, cfg: &Cfg) {
    assert_eq!((d.setid, d.flags, d.priority, d.line, d.col), (e.setid, e.flags, e.priority, e.line, e.col));
    // the URI is the entry's, or the entry's with "sip:" in front
    assert!(d.uri == e.uri || (d.uri.starts_with(b"sip:") && d.uri.get(4..) == Some(&e.uri[..])), "stored uri");
    let p = dispatcher::ds::uri::parse_uri(&d.uri).expect("a stored uri parses again");
    assert_eq!(d.uri.get(p.host.clone()), Some(&d.host[..]), "host is the uri's");
    assert!(d.host.len() <= dispatcher::ds::dest::MAX_HOST_LEN);
    if e.flags & dispatcher::ds::dest::DS_NODNSARES_DST != 0 || cfg.dns_mode & 5 == 0 {
        assert!(d.ip.is_none(), "no address without resolution");
    } else {
        assert!(d.ip.is_some(), "resolved at load");
    }
    if !cfg.ipv6 {
        assert!(!(d.host.first() == Some(&b'[') && d.host.last() == Some(&b']')), "IPv6 reference with ipv6 off");
    }
    check_attrs(&e.attrs, &d.attrs, cfg.attrs_none);
}

/// Invariants of parsed attributes (`raw` is what was parsed).
pub fn check_attrs(raw: &[u8], a: &dispatcher::ds::attrs::Attrs, attrs_none: bool) {
    let src: &[u8] = if raw.is_empty() && attrs_none { b"none=yes" } else { raw };
    let body = src.strip_suffix(b";").unwrap_or(src);
    assert_eq!(a.body, body, "attrs body");
    assert!((0..=100).contains(&a.weight), "weight {}", a.weight);
    assert!((0..=100).contains(&a.rweight), "rweight {}", a.rweight);
    assert!(0 <= a.ocmin && a.ocmin <= a.ocmax && a.ocmax <= 100 && a.ocmax >= 1, "oc {} {}", a.ocmin, a.ocmax);
    assert!(a.ocmin <= a.ocrate && a.ocrate <= a.ocmax, "ocrate {} in {}..{}", a.ocrate, a.ocmin, a.ocmax);
    let _ = a.latency_init();
}

/// Orders prepared destinations into sets and checks the order invariants.
pub fn order(dests: Vec<Dest>) -> Vec<DestSet> {
    let n = dests.len();
    let ids: HashSet<i32> = dests.iter().map(|d| d.setid).collect();
    let sets = build_sets(dests);
    assert_eq!(sets.len(), ids.len(), "one set per id");
    assert_eq!(sets.iter().map(|s| s.dests.len()).sum::<usize>(), n, "every destination in a set");
    for s in &sets {
        assert!(!s.dests.is_empty());
        assert!(s.dests.iter().all(|d| d.setid == s.id));
        assert!(s.dests.windows(2).all(|w| w[0].priority >= w[1].priority), "priority descending");
    }
    sets
}

/// Reads a snapshot back and checks it against the sets it was built from (no carry).
pub fn check_snapshot(sets: &[DestSet], snap: Snap<'_>) {
    let h = snap.header();
    assert_eq!(h.nsets as usize, sets.len());
    let ndests: usize = sets.iter().map(|s| s.dests.len()).sum();
    assert_eq!(h.ndests as usize, ndests);
    let order: Vec<i32> = snap.sets().map(|s| s.rec.id).collect();
    assert_eq!(order, sets.iter().map(|s| s.id).collect::<Vec<_>>(), "set iteration order");
    let mut iuids = HashSet::new();
    let mut flat: Vec<(i32, &Dest)> = Vec::new();
    for s in sets {
        let v = snap.set(s.id).expect("every set findable by id");
        assert_eq!(v.rec.id, s.id);
        assert_eq!(v.dests.len(), s.dests.len());
        assert_eq!(v.rec.nr as usize, s.dests.len());
        for (r, d) in v.dests.iter().zip(&s.dests) {
            assert_eq!(r.uri.bytes(), &d.uri[..]);
            assert_eq!(r.host.bytes(), &d.host[..]);
            assert_eq!((r.cfg_flags, r.priority, r.port, r.sock), (d.flags, d.priority, d.port, d.sock));
            assert_eq!(r.flags.load(Ordering::Relaxed), d.flags);
            assert_eq!(r.attrs_body.get().is_some(), !d.attrs.body.is_empty());
            assert_eq!(r.attrs_body.bytes(), &d.attrs.body[..]);
            assert_eq!(r.duid.get(), d.attrs.duid());
            assert_eq!(r.socket.get(), d.attrs.socket());
            assert_eq!(r.weight, d.attrs.weight);
            assert_eq!(r.ip_addr(), d.ip);
            assert!(iuids.insert(r.iuid), "iuid unique");
            flat.push((s.id, d));
        }
        let nr = s.dests.len() as u32;
        assert!(v.rec.wlist.iter().all(|&i| i < nr.max(1)), "wlist index in range");
        assert!(v.rec.rwlist.iter().all(|i| i.load(Ordering::Relaxed) < nr.max(1)), "rwlist index in range");
        let rr = s.dests.first().is_some_and(|f| f.priority > 0 && s.dests.iter().all(|d| d.priority == f.priority));
        assert_eq!(v.rec.rrserial, rr);
    }
    // ids that are not there
    for probe_id in [i32::MIN, -1, 0, 1, i32::MAX] {
        assert_eq!(snap.set(probe_id).is_some(), sets.iter().any(|s| s.id == probe_id));
    }
    // positional iteration
    for start in 0..=ndests.min(64) {
        let got: Vec<(i32, &[u8])> = snap.dests_from(start).map(|(id, d)| (id, d.uri.bytes())).collect();
        let want: Vec<(i32, &[u8])> = flat.iter().skip(start).map(|(id, d)| (*id, &d.uri[..])).collect();
        assert_eq!(got, want, "dests_from({start})");
    }
    // every destination with an address is found by it, in iteration order
    let mut by_ip: HashMap<IpAddr, Vec<(i32, &[u8])>> = HashMap::new();
    for (id, d) in &flat {
        if let Some(ip) = d.ip {
            by_ip.entry(ip).or_default().push((*id, &d.uri[..]));
        }
    }
    for (ip, want) in &by_ip {
        let got: Vec<(i32, &[u8])> = snap.by_ip(*ip).map(|(s, d)| (s.rec.id, d.uri.bytes())).collect();
        assert_eq!(&got, want, "by_ip {ip}");
    }
    assert_eq!(snap.by_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).count(), 0);
}

/// Sets random runtime state on every destination of `snap`.
pub fn scramble_state(snap: Snap<'_>, rng: &mut Rng) {
    for s in snap.sets() {
        for d in s.dests {
            let st = [0, DS_INACTIVE, DS_DISABLED, 2, 8, DS_INACTIVE | 8][rng.below(6) as usize];
            d.flags.store(st | (d.cfg_flags & !snapshot::states_all()), Ordering::Relaxed);
            d.dload.store(rng.below(5) as i32, Ordering::Relaxed);
            d.fail_cnt.store(rng.below(3) as i32, Ordering::Relaxed);
        }
    }
}

/// Builds a new list from `new_sets` carrying the state of `old`, and checks that exactly the
/// destinations that stay (same set, URI and configured flags) keep their runtime state.
pub fn check_carry(old: Snap<'_>, new_sets: &[DestSet], rng: &mut Rng) {
    let idx = CarryIndex::new(Some(old));
    // the first destination of each (set, uri) in the old list's iteration order
    let mut first: HashMap<(i32, Vec<u8>), (i32, i32, i32, i32, u64)> = HashMap::new();
    for s in old.sets() {
        for d in s.dests {
            first.entry((s.rec.id, d.uri.bytes().to_vec())).or_insert((
                d.cfg_flags,
                d.flags.load(Ordering::Relaxed),
                d.dload.load(Ordering::Relaxed),
                d.fail_cnt.load(Ordering::Relaxed),
                d.iuid,
            ));
        }
    }
    let gen = old.header().generation + 1;
    let block = Block::build(new_sets, gen, &mut |id, uri, fl| idx.carry(id, uri, fl, false), rng);
    let new = block.snap();
    let old_iuids: HashSet<u64> = old.sets().flat_map(|s| s.dests.iter().map(|d| d.iuid)).collect();
    for s in new_sets {
        let v = new.set(s.id).expect("set");
        for (r, d) in v.dests.iter().zip(&s.dests) {
            match first.get(&(s.id, d.uri.clone())) {
                Some(&(cfg, flags, dload, fail, iuid)) if cfg == d.flags => {
                    assert_eq!(r.flags.load(Ordering::Relaxed), flags, "carried flags");
                    assert_eq!(r.dload.load(Ordering::Relaxed), dload, "carried load");
                    assert_eq!(r.fail_cnt.load(Ordering::Relaxed), fail, "carried counter");
                    assert_eq!(r.iuid, iuid, "carried iuid");
                }
                _ => {
                    assert_eq!(r.flags.load(Ordering::Relaxed), d.flags, "fresh flags");
                    assert_eq!(r.dload.load(Ordering::Relaxed), 0, "fresh load");
                    assert_eq!(r.fail_cnt.load(Ordering::Relaxed), 0, "fresh counter");
                    assert!(!old_iuids.contains(&r.iuid), "fresh iuid");
                }
            }
        }
    }
}

/// Runs the selection helpers on one set and checks what they return.
pub fn check_selection(v: SetView<'_>, use_default: bool, rng: &mut Rng) {
    let d = v.dests;
    let nr = d.len();
    let any_usable = d.iter().any(|x| x.usable());
    for _ in 0..4 {
        let h = rng.next();
        match select::probe(d, h, use_default) {
            Some(i) => assert!(i < nr && d[i].usable(), "probe gave an unusable destination"),
            None => assert!(!any_usable, "probe found nothing although a destination is usable"),
        }
        let limit = [0, 1, 2, 3, u32::MAX][rng.below(5) as usize];
        let sel = rng.below(nr as u32 + 1) as usize;
        let skip_mask = rng.next();
        let skip = move |i: usize| (skip_mask >> (i % 32)) & 1 == 1;
        let fo = select::failover_order(d, sel, use_default, limit, &skip);
        assert!(fo.len() <= limit as usize && fo.len() <= nr, "failover limit");
        let uniq: HashSet<usize> = fo.iter().copied().collect();
        assert_eq!(uniq.len(), fo.len(), "failover repeats an index");
        assert!(fo.iter().all(|&i| i < nr));
        if let Some(&f) = fo.first() {
            assert_eq!(f, sel);
        }
        for &i in fo.iter().skip(1) {
            let default = use_default && i == nr - 1;
            assert!(default || (d[i].usable() && !skip(i)), "failover record not eligible");
        }
    }
    let r = select::alg13_rank_with(d, rng.below(nr as u32 + 3) as usize, use_default);
    assert_eq!(r.len(), nr);
    assert!(r.windows(2).all(|w| w[0].prio >= w[1].prio), "alg13 order");
    for x in &r {
        assert!(x.idx == -1 || (x.idx >= 0 && (x.idx as usize) < nr && d[x.idx as usize].usable()));
    }
    if let Some(i) = select::least_loaded(d) {
        assert!(d[i].usable() && (d[i].maxload == 0 || d[i].dload.load(Ordering::Relaxed) < d[i].maxload));
    } else {
        assert!(!d.iter().any(|x| x.usable() && (x.maxload == 0 || x.dload.load(Ordering::Relaxed) < x.maxload)));
    }
    for _ in 0..3 {
        let (h, next) = select::rr_take(v.rec);
        assert!(next < (nr as u32).max(1));
        if let Some(i) = select::probe(d, h, use_default) {
            select::rr_commit(v.rec, next, i);
        }
        assert!(v.rec.last.load(Ordering::Relaxed) < (nr as u32).max(1));
    }
    // weight tables over the set's attributes
    let w: Vec<i32> = d.iter().map(|x| x.weight).collect();
    let t = dispatcher::ds::weights::weight_table(&w, &mut || rng.next());
    assert!(t.iter().all(|&i| (i as usize) < nr.max(1)));
    let rw: Vec<i32> = d.iter().map(|x| x.rweight_rt.load(Ordering::Relaxed)).collect();
    let us: Vec<bool> = d.iter().map(|x| x.usable()).collect();
    if let Some(t) = dispatcher::ds::weights::rweight_table(&rw, &us, &mut || rng.next()) {
        assert!(t.iter().all(|&i| (i as usize) < nr));
    }
}
