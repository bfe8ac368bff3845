//! Cluster mode glue (issue 10): shares destination state between Kamailio proxies over
//! the `dmq` module. The pure logic is in `crate::ds::cluster`; this file keeps its tables
//! in shared memory (one shm lock), runs the flusher/heartbeat timer, applies received
//! bodies (in DMQ worker processes) and answers `dispatcher.cluster_status`.
//!
//! Flow: every `cluster_flush_interval` ms the flusher (core timer process) scans the
//! destinations, versions the changes made on this node (state-based: it compares the
//! current flags with what it recorded, so every writer -- keepalives, `ds_mark_dst`,
//! passive detection, RPC -- is covered without hooks in them), and broadcasts the current
//! registers of changed destinations in batched bodies. Heartbeats carry the state digest;
//! a new or restarted peer, or one whose digest stays different, gets a full push. Received
//! registers are applied when newer (duplicates, reordering and replays change nothing).
//! KDMQ is only ever sent from the timer process, never from SIP workers, and never while
//! holding the cluster lock.
#![allow(non_upper_case_globals)]

use std::collections::HashMap;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::Ordering;

use once_cell::sync::OnceCell;

use crate::ds::cluster::{
    self as cl, admin_write, apply_remote, encode_hb, encode_upd, entry_digest, health_is_global, key_of, live_ids,
    observe_local, on_heartbeat, slot_find, slot_get_or_insert, Entry, Heartbeat, Hlc, Member, Merge, Probing,
    Rec, Wire, HMASK,
};
use crate::kam::dmq;
use crate::kam::mem::ShmLock;
use crate::kam::param::unsafe_bytes;
use crate::kam::rpc::Rpc;
use crate::module::{guard, health, state};
use crate::sys;
use crate::{ds_dbg, ds_info, ds_warn};

// ---- modparams (registered in params.rs) ----------------------------------------------------
pub static mut cluster_mode: c_int = 0;
/// -1: the default (1, distributed, when cluster_mode is 1).
pub static mut cluster_probing: c_int = -1;
pub static mut cluster_channel: sys::str_ = sys::str_ { s: c"dispatcher".as_ptr() as *mut c_char, len: 10 };
pub static mut cluster_node_uri: sys::str_ = sys::str_ { s: std::ptr::null_mut(), len: 0 };
pub static mut cluster_id: c_int = 0;
pub static mut cluster_heartbeat: c_int = 500;
pub static mut cluster_node_timeout: c_int = 1500;
pub static mut cluster_flush_interval: c_int = 100;
pub static mut cluster_max_body: c_int = 16000;
pub static mut cluster_max_bodies: c_int = 4;
pub static mut cluster_mark_scope: c_int = 1;
pub static mut cluster_max_dests: c_int = 16384;

const MAX_NODES: usize = 32;

#[derive(Clone, Debug)]
struct Cfg {
    mode: Probing,
    channel: Vec<u8>,
    node_uri: Vec<u8>,
    cid: u32,
    hb_ms: u64,
    timeout_ms: u64,
    flush_ms: u32,
    max_body: usize,
    max_bodies: usize,
    mark_global: bool,
}

/// Counters and node state in shm (under the lock).
#[repr(C)]
#[derive(Default)]
struct Counters {
    sent_msgs: u64,
    sent_bytes: u64,
    sent_records: u64,
    send_failed: u64,
    recv_msgs: u64,
    recv_bytes: u64,
    applied: u64,
    duplicate: u64,
    stale: u64,
    unknown: u64,
    bad: u64,
    alien: u64,
    future: u64,
    pushes: u64,
    replies_ok: u64,
    replies_err: u64,
    table_full: u64,
}

#[repr(C)]
struct Shared {
    hlc: Hlc,
    self_id: u64,
    inc: u64,
    start_ms: u64,
    synced: u32,
    gen: u32,
    digest: u64,
    ndests: u64,
    nprobed: u64,
    /// destinations inactive or disabled at the last scan
    ndown: u64,
    last_hb_ms: u64,
    hb_count: u64,
    /// update bodies allowed (x1000, token bucket: cluster_max_bodies per flush interval)
    tokens_milli: u64,
    last_flush_ms: u64,
    /// last update sent or applied (digest repairs wait for quiet)
    last_activity_ms: u64,
    /// signature (live set, list size) of the last probing assignment
    assign_sig: u64,
    /// the list (snapshot) of the last scan: a new one is rebaselined
    last_snap: usize,
    nlive: u32,
    live: [u64; MAX_NODES + 1],
    members: [Member; MAX_NODES],
    c: Counters,
}

struct Ctx {
    cfg: Cfg,
    lock: ShmLock,
    shared: *mut Shared,
    tab: *mut Entry,
    cap: usize,
}
// SAFETY: the pointers are shm allocated in mod_init; every access holds `lock`.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

static CTX: OnceCell<Ctx> = OnceCell::new();

/// Views of the shm data, only handed out while the lock is held.
struct Locked<'a> {
    _g: crate::kam::mem::LockGuard<'a>,
    sh: &'a mut Shared,
    tab: &'a mut [Entry],
}

impl Ctx {
    fn lock(&self) -> Locked<'_> {
        let g = self.lock.lock();
        // SAFETY: shm allocated in mod_init for the module's lifetime; exclusive while the
        // lock is held (every access goes through this function).
        unsafe { Locked { _g: g, sh: &mut *self.shared, tab: std::slice::from_raw_parts_mut(self.tab, self.cap) } }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn param_bytes(s: sys::str_) -> Vec<u8> {
    if s.s.is_null() || s.len <= 0 {
        Vec::new()
    } else {
        unsafe_bytes(s).to_vec()
    }
}

pub fn enabled() -> bool {
    CTX.get().is_some()
}

/// mod_init: nothing when `cluster_mode` is 0; otherwise binds DMQ, allocates the tables and
/// registers the flusher timer.
pub fn init() -> Result<(), String> {
    // SAFETY: mod_init, main process: the modparams are final and read-only.
    let (mode, probing, ch, nu, cid, hb, to, fl, mb, mbs, scope, maxd) = unsafe {
        (
            cluster_mode,
            cluster_probing,
            param_bytes(cluster_channel),
            param_bytes(cluster_node_uri),
            cluster_id,
            cluster_heartbeat,
            cluster_node_timeout,
            cluster_flush_interval,
            cluster_max_body,
            cluster_max_bodies,
            cluster_mark_scope,
            cluster_max_dests,
        )
    };
    if mode == 0 {
        return Ok(());
    }
    if ch.is_empty() {
        return Err("cluster_channel is empty".into());
    }
    let cfg = Cfg {
        mode: Probing::from_param(if probing < 0 { 1 } else { probing }),
        channel: ch,
        node_uri: nu,
        cid: cid.max(0) as u32,
        hb_ms: hb.clamp(50, 60_000) as u64,
        timeout_ms: to.clamp(100, 600_000) as u64,
        flush_ms: fl.clamp(10, 10_000) as u32,
        max_body: mb.clamp(512, 60_000) as usize,
        max_bodies: mbs.clamp(1, 1000) as usize,
        mark_global: scope != 0,
    };
    dmq::bind(&cfg.channel, on_message, on_reply).map_err(|e| match e {
        dmq::BindError::NoDmq => "cluster_mode needs the dmq module: load dmq.so before dispatcher.so".to_string(),
        dmq::BindError::BindFailed => "cannot bind the dmq API".to_string(),
        dmq::BindError::RegisterFailed => {
            "cannot register the dmq peer (is dmq loaded before dispatcher, and the channel unique?)".to_string()
        }
    })?;
    let cap = ((maxd.max(16) as usize) * 2).next_power_of_two();
    let lock = ShmLock::new().ok_or("cannot allocate the cluster lock")?;
    let sp = crate::kam::mem::shm_alloc(std::mem::size_of::<Shared>()) as *mut Shared;
    let tp = crate::kam::mem::shm_alloc(cap * std::mem::size_of::<Entry>()) as *mut Entry;
    if sp.is_null() || tp.is_null() {
        return Err("out of shared memory for the cluster tables".into());
    }
    let start = now_ms();
    let self_id = if cfg.node_uri.is_empty() {
        // SAFETY: plain core call.
        cl::mix(start ^ ((unsafe { sys::my_pid() } as u64) << 40))
    } else {
        cl::mix(key_of(&cfg.node_uri))
    };
    // SAFETY: fresh shm blocks of the right sizes; all-zero is a valid value of every field
    // except the ones set right after.
    unsafe {
        std::ptr::write_bytes(sp as *mut u8, 0, std::mem::size_of::<Shared>());
        std::ptr::write_bytes(tp as *mut u8, 0, cap * std::mem::size_of::<Entry>());
        (*sp).self_id = self_id;
        (*sp).inc = start;
        (*sp).start_ms = start;
    }
    // SAFETY: mod_init in the main process: one basic timer process, forked at PROC_MAIN.
    if unsafe { sys::register_basic_timers(1) } < 0 {
        return Err("cannot register the cluster timer process".into());
    }
    ds_info!(
        "cluster mode on: channel '{}', node id {self_id:x}, incarnation {start}, probing {:?}",
        String::from_utf8_lossy(&cfg.channel),
        cfg.mode
    );
    let _ = CTX.set(Ctx { cfg, lock, shared: sp, tab: tp, cap });
    Ok(())
}

/// child_init(PROC_MAIN): forks the "DS CLUSTER" process that runs the flusher (all sending)
/// every `cluster_flush_interval` ms. Nothing without cluster mode.
pub fn fork_process() -> bool {
    let Some(c) = CTX.get() else { return true };
    // SAFETY: called in the main process at PROC_MAIN, after register_basic_timers(1) in
    // mod_init; the interval is in microseconds.
    unsafe {
        sys::fork_basic_utimer(
            sys::PROC_TIMER as c_int,
            c"DS CLUSTER".as_ptr() as *mut c_char,
            1,
            Some(flush_tick),
            std::ptr::null_mut(),
            (c.cfg.flush_ms as c_int).saturating_mul(1000),
        ) >= 0
    }
}

/// Keepalive hook: whether this node probes the destination (always true without cluster).
pub fn should_probe_here(setid: i32, uri: &[u8]) -> bool {
    let Some(c) = CTX.get() else { return true };
    let key = key_of(uri);
    let l = c.lock();
    // not assigned yet (a destination the flusher has not seen): probe it
    slot_find(l.tab, setid, key).is_none_or(|i| l.tab[i].probe != 0 || l.tab[i].veto != 0)
}

/// RPC hook (`dispatcher.set_state`, `dispatcher.set_duid_state`): the destinations just
/// written (by URI, by duid, or "all") take new versions, so the change is the cluster's.
pub fn note_admin(setid: i32, key: &[u8], by_duid: bool) {
    let Some(c) = CTX.get() else { return };
    let all = key == b"all";
    let now = now_ms();
    let l = c.lock();
    let self_id = l.sh.self_id;
    state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(setid)) else { return };
        for d in set.dests {
            let m = all
                || if by_duid { d.duid.bytes().eq_ignore_ascii_case(key) } else { d.uri.bytes().eq_ignore_ascii_case(key) };
            if !m {
                continue;
            }
            let flags = d.flags.load(Ordering::Acquire);
            let Some(i) = slot_get_or_insert(l.tab, setid, key_of(d.uri.bytes()), flags) else {
                l.sh.c.table_full += 1;
                continue;
            };
            admin_write(&mut l.tab[i], flags, &mut l.sh.hlc, now, self_id);
            if !all {
                break;
            }
        }
    });
}

// ---- flusher ---------------------------------------------------------------------------------

unsafe extern "C" fn flush_tick(_t: u32, _p: *mut c_void) {
    guard("cluster timer", (), flush)
}

fn rec_of(setid: i32, uri: &[u8], e: &Entry) -> Rec {
    Rec { setid, uri: uri.to_vec(), h: e.h, a: e.a }
}

fn flush() {
    let Some(c) = CTX.get() else { return };
    let cfg = &c.cfg;
    let now = now_ms();
    let mut upd: Vec<Rec> = Vec::new();
    let mut pushes: Vec<Vec<u8>> = Vec::new();
    let mut full: Vec<Rec> = Vec::new();
    let hb;
    // peers known but not heard lately: heartbeats also go to them one by one, since DMQ's
    // broadcast skips nodes it does not consider active (after a partition it re-activates
    // them only at its next ping round)
    let mut hb_unicast: Vec<Vec<u8>> = Vec::new();
    let mut hb_bcast = false;
    // live peers: updates go to each of them (not through DMQ's broadcast, see heartbeats)
    let mut targets: Vec<Vec<u8>> = Vec::new();
    {
        let l = c.lock();
        let sh = &mut *l.sh;
        let tab = &mut *l.tab;
        sh.gen = sh.gen.wrapping_add(1);
        let gen = sh.gen;
        let self_id = sh.self_id;
        let live = live_ids(&sh.members, now, cfg.timeout_ms, self_id);
        sh.nlive = live.len().min(MAX_NODES + 1) as u32;
        sh.live[..sh.nlive as usize].copy_from_slice(&live[..sh.nlive as usize]);
        // peers to push the full state to
        for m in sh.members.iter_mut() {
            if m.used != 0 && m.need_push != 0 && m.alive(now, cfg.timeout_ms) {
                m.need_push = 0;
                m.last_push_ms = now;
                pushes.push(m.uri().to_vec());
            }
        }
        // token bucket: the core timer ticks in 62.5 ms steps, so the rate is enforced by time
        let elapsed = now.saturating_sub(sh.last_flush_ms).min(10_000);
        sh.last_flush_ms = now;
        let cap = cfg.max_bodies as u64 * 1000;
        sh.tokens_milli = (sh.tokens_milli + elapsed * cap / cfg.flush_ms as u64).min(cap);
        let budget = cfg.max_body * (sh.tokens_milli / 1000) as usize;
        let mut used = 0usize;
        let (mut ndests, mut nprobed, mut ndown) = (0u64, 0u64, 0u64);
        let mut digest = 0u64;
        let mut seen: Vec<(i32, u64, usize)> = Vec::new();
        state::with_snap(|snap| {
            let Some(snap) = snap else { return };
            let snap_id = snap.header() as *const _ as usize;
            let rebuilt = snap_id != sh.last_snap && sh.last_snap != 0;
            sh.last_snap = snap_id;
            for set in snap.sets() {
                let setid = set.rec.id;
                for d in set.dests {
                    let uri = d.uri.bytes();
                    let key = key_of(uri);
                    let flags = d.flags.load(Ordering::Acquire);
                    let existed = slot_find(tab, setid, key).is_some();
                    let Some(i) = slot_get_or_insert(tab, setid, key, flags) else {
                        sh.c.table_full += 1;
                        continue;
                    };
                    let e = &mut tab[i];
                    if rebuilt && existed && e.gen != gen {
                        // a reload/add/remove here must not undo the cluster's state
                        let (mask, bits) = cl::rebaseline(e, flags);
                        if mask != 0 {
                            health::cluster_write(&set, d, mask, bits);
                        }
                    }
                    let flags = d.flags.load(Ordering::Acquire);
                    if e.gen == gen {
                        // the same URI twice in a set: the first one carries the state
                        continue;
                    }
                    e.gen = gen;
                    ndests += 1;
                    seen.push((setid, key, i));
                    ndown += (flags & (crate::ds::snapshot::DS_INACTIVE | crate::ds::snapshot::DS_DISABLED) != 0) as u64;
                    let probes = e.probe != 0;
                    let global = health_is_global(cfg.mode, probes, cfg.mark_global);
                    let out = observe_local(e, flags, global, probes, &mut sh.hlc, now, self_id);
                    if let Some(h) = out.restore {
                        health::cluster_write(&set, d, HMASK, h);
                    }
                    if e.probe != 0 || e.veto != 0 {
                        nprobed += 1;
                    }
                    if e.dirty != 0 && used + uri.len() + 110 <= budget {
                        e.dirty = 0;
                        used += uri.len() + 110;
                        upd.push(rec_of(setid, uri, e));
                    }
                    let runtime = !(e.h.ver.is_config() && e.a.ver.is_config());
                    if runtime && !pushes.is_empty() {
                        full.push(rec_of(setid, uri, e));
                    }
                    digest ^= entry_digest(e);
                }
            }
        });
        // probing assignment: again when the live nodes or the list change (and every 50 scans)
        let sig = live.iter().fold(cl::mix(ndests), |a, n| cl::mix(a ^ n));
        if sig != sh.assign_sig || gen % 50 == 0 {
            sh.assign_sig = sig;
            let keys: Vec<(i32, u64)> = seen.iter().map(|(s, k, _)| (*s, *k)).collect();
            let owners = match cfg.mode {
                Probing::Distributed => cl::assign(&keys, &live),
                Probing::All => vec![self_id; keys.len()],
                Probing::Leader => vec![live.iter().copied().min().unwrap_or(self_id); keys.len()],
            };
            nprobed = 0;
            for ((_, _, i), o) in seen.iter().zip(owners) {
                let e = &mut tab[*i];
                e.probe = (o == self_id) as u32;
                nprobed += (e.probe != 0 || e.veto != 0) as u64;
            }
        }
        sh.digest = digest;
        sh.ndests = ndests;
        sh.ndown = ndown;
        sh.nprobed = nprobed;
        // nobody heard within two heartbeats of the start: this node is the first (a seed)
        if sh.synced == 0 && live.len() == 1 && now.saturating_sub(sh.start_ms) > 2 * cfg.hb_ms {
            sh.synced = 1;
        }
        for m in sh.members.iter().filter(|m| m.used != 0 && m.alive(now, cfg.timeout_ms)) {
            targets.push(m.uri().to_vec());
        }
        if !upd.is_empty() {
            sh.last_activity_ms = now;
        }
        hb = if now.saturating_sub(sh.last_hb_ms) >= cfg.hb_ms {
            sh.last_hb_ms = now;
            sh.hb_count += 1;
            // heartbeats go one by one to every known peer (DMQ's broadcast skips nodes it
            // has not re-activated yet, e.g. after a partition); peers not heard lately only
            // every 4th time; the broadcast (every 4th time) finds new nodes
            let full = sh.hb_count % 4 == 0;
            for m in sh.members.iter().filter(|m| m.used != 0 && (full || m.alive(now, cfg.timeout_ms))) {
                hb_unicast.push(m.uri().to_vec());
            }
            hb_bcast = full || targets.is_empty();
            Some(Heartbeat { cluster: cfg.cid, id: self_id, inc: sh.inc, synced: sh.synced != 0, digest, ndests })
        } else {
            None
        };
    }
    // sending: outside the lock (DMQ holds its node list lock across t_request)
    let mut st = Counters::default();
    let send = |ok: bool, len: usize, st: &mut Counters| {
        if ok {
            st.sent_msgs += 1;
            st.sent_bytes += len as u64;
        } else {
            st.send_failed += 1;
        }
    };
    let mut nbodies = 0u64;
    if !upd.is_empty() {
        st.sent_records += upd.len() as u64;
        let bodies = encode_upd(cfg.cid, c.self_id(), false, &upd, cfg.max_body);
        nbodies = bodies.len() as u64;
        for uri in &targets {
            for b in &bodies {
                send(dmq::send_to(uri, b), b.len(), &mut st);
            }
        }
    }
    if let Some(hb) = hb {
        let b = encode_hb(&hb);
        if hb_bcast {
            send(dmq::bcast(&b), b.len(), &mut st);
        }
        for uri in &hb_unicast {
            send(dmq::send_to(uri, &b), b.len(), &mut st);
        }
    }
    for uri in &pushes {
        st.pushes += 1;
        let bodies = encode_upd(cfg.cid, c.self_id(), true, &full, cfg.max_body);
        if bodies.is_empty() {
            // nothing but configuration state: an empty SYNC still tells the peer it is synced
            let b = format!("{} SYNC {} {:x}\n", cl::PROTO, cfg.cid, c.self_id()).into_bytes();
            send(dmq::send_to(uri, &b), b.len(), &mut st);
        }
        for b in bodies {
            send(dmq::send_to(uri, &b), b.len(), &mut st);
        }
        ds_dbg!("cluster: full state ({} records) pushed to {}", full.len(), String::from_utf8_lossy(uri));
    }
    if st.sent_msgs + st.send_failed + nbodies > 0 {
        let l = c.lock();
        l.sh.tokens_milli = l.sh.tokens_milli.saturating_sub(nbodies * 1000);
        let k = &mut l.sh.c;
        k.sent_msgs += st.sent_msgs;
        k.sent_bytes += st.sent_bytes;
        k.sent_records += st.sent_records;
        k.send_failed += st.send_failed;
        k.pushes += st.pushes;
    }
}

impl Ctx {
    fn self_id(&self) -> u64 {
        // SAFETY: written once in mod_init before the fork, read-only afterwards.
        unsafe { (*self.shared).self_id }
    }
}

// ---- receiving (DMQ worker) -----------------------------------------------------------------

fn on_reply(code: i32) {
    let Some(c) = CTX.get() else { return };
    let l = c.lock();
    if (200..300).contains(&code) {
        l.sh.c.replies_ok += 1;
    } else {
        l.sh.c.replies_err += 1;
    }
    drop(l);
    if code == 404 {
        ds_warn!("cluster: a peer replied 404 to a KDMQ of channel '{}': check that its cfg loads this module with cluster_mode=1 and calls dmq_handle_message()", String::from_utf8_lossy(&c.cfg.channel));
    }
}

fn on_message(body: &[u8], from: &[u8]) {
    let Some(c) = CTX.get() else { return };
    let now = now_ms();
    let w = cl::decode(body);
    let mut l = c.lock();
    l.sh.c.recv_msgs += 1;
    l.sh.c.recv_bytes += body.len() as u64;
    let w = match w {
        Ok(w) => w,
        Err(e) => {
            l.sh.c.bad += 1;
            drop(l);
            ds_warn!("cluster: ignored a KDMQ body from {}: {e}", String::from_utf8_lossy(from));
            return;
        }
    };
    match w {
        Wire::Hb(hb) => {
            if hb.cluster != c.cfg.cid {
                l.sh.c.alien += 1;
                return;
            }
            if hb.id == l.sh.self_id {
                return;
            }
            let my = l.sh.digest;
            let quiet = now.saturating_sub(l.sh.last_activity_ms) > 1000;
            if !on_heartbeat(&mut l.sh.members, &hb, from, now, my, quiet) {
                l.sh.c.table_full += 1;
            }
        }
        Wire::Upd { cluster, id, sync, recs, bad_lines } => {
            l.sh.c.bad += bad_lines as u64;
            if cluster != c.cfg.cid {
                l.sh.c.alien += 1;
                return;
            }
            if id == l.sh.self_id {
                return;
            }
            apply_recs(&mut l, &recs, now);
            if sync {
                l.sh.synced = 1;
            }
        }
    }
}

/// Applies received records (lock held: flags and records move together, so the flusher
/// never mistakes a received state for a local change).
fn apply_recs(l: &mut Locked<'_>, recs: &[Rec], now: u64) {
    let sh = &mut *l.sh;
    let tab = &mut *l.tab;
    let self_id = sh.self_id;
    // keys wanted -> record indexes
    let mut want: HashMap<(i32, u64), usize> = HashMap::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        let fut_h = !sh.hlc.observe(r.h.ver.ts, now);
        let fut_a = !sh.hlc.observe(r.a.ver.ts, now);
        if fut_h || fut_a {
            sh.c.future += 1;
            continue;
        }
        want.insert((r.setid, key_of(&r.uri)), i);
    }
    state::with_snap(|snap| {
        let Some(snap) = snap else { return };
        for set in snap.sets() {
            let setid = set.rec.id;
            for d in set.dests {
                if want.is_empty() {
                    return;
                }
                let key = key_of(d.uri.bytes());
                let Some(&ri) = want.get(&(setid, key)) else { continue };
                let r = &recs[ri];
                if !d.uri.bytes().eq_ignore_ascii_case(&r.uri) {
                    continue;
                }
                want.remove(&(setid, key));
                let flags = d.flags.load(Ordering::Acquire);
                let Some(si) = slot_get_or_insert(tab, setid, key, flags) else {
                    sh.c.table_full += 1;
                    continue;
                };
                let probes = tab[si].probe != 0;
                let out = apply_remote(&mut tab[si], r.h, r.a, self_id, probes);
                if out.health == Merge::Applied || out.admin == Merge::Applied {
                    sh.last_activity_ms = now;
                }
                for m in [out.health, out.admin] {
                    match m {
                        Merge::Applied => sh.c.applied += 1,
                        Merge::Duplicate => sh.c.duplicate += 1,
                        Merge::Stale => sh.c.stale += 1,
                    }
                }
                if out.write_mask != 0 {
                    health::cluster_write(&set, d, out.write_mask, out.write_bits);
                }
            }
        }
    });
    sh.c.unknown += want.len() as u64;
    if !want.is_empty() {
        ds_dbg!("cluster: {} received records for unknown destinations", want.len());
    }
}

// ---- RPC -------------------------------------------------------------------------------------

fn rpc_status(rpc: &Rpc) {
    let Some(c) = CTX.get() else {
        rpc.fault(500, "cluster mode is off (cluster_mode=0)");
        return;
    };
    let now = now_ms();
    // copy under the lock, reply after it (the RPC transport may allocate and block)
    let (sid, inc, synced, digest, ndests, nprobed, ndown, nlive, members, k) = {
        let l = c.lock();
        let s = &*l.sh;
        let ms: Vec<Member> = s.members.iter().filter(|m| m.used != 0).copied().collect();
        let k = [
            ("sent_msgs", s.c.sent_msgs),
            ("sent_bytes", s.c.sent_bytes),
            ("sent_records", s.c.sent_records),
            ("send_failed", s.c.send_failed),
            ("recv_msgs", s.c.recv_msgs),
            ("recv_bytes", s.c.recv_bytes),
            ("applied", s.c.applied),
            ("duplicate", s.c.duplicate),
            ("stale", s.c.stale),
            ("unknown", s.c.unknown),
            ("bad", s.c.bad),
            ("alien", s.c.alien),
            ("future", s.c.future),
            ("pushes", s.c.pushes),
            ("replies_ok", s.c.replies_ok),
            ("replies_err", s.c.replies_err),
            ("table_full", s.c.table_full),
        ];
        (s.self_id, s.inc, s.synced, s.digest, s.ndests, s.nprobed, s.ndown, s.nlive, ms, k)
    };
    let e = "Internal error creating cluster status";
    let Some(top) = rpc.add_struct() else {
        rpc.fault(500, e);
        return;
    };
    let r = (|| -> Result<(), ()> {
        let me = top.child_struct("SELF")?;
        me.str("URI", Some(&c.cfg.node_uri))?;
        me.cstring("ID", &format!("{sid:x}"))?;
        me.ulong("INCARNATION", inc)?;
        me.int("SYNCED", synced as i32)?;
        me.cstring("PROBING", match c.cfg.mode {
            Probing::All => "all",
            Probing::Distributed => "distributed",
            Probing::Leader => "leader",
        })?;
        me.ulong("DESTINATIONS", ndests)?;
        me.ulong("PROBED", nprobed)?;
        me.ulong("DOWN", ndown)?;
        me.cstring("DIGEST", &format!("{digest:x}"))?;
        me.uint("LIVE_NODES", nlive)?;
        let nodes = top.int_and_array("NODES", members.len() as i32, "NODE_LIST")?;
        for m in &members {
            let n = nodes.child_struct("NODE")?;
            n.str("URI", Some(m.uri()))?;
            n.cstring("ID", &format!("{:x}", m.id))?;
            n.cstring("STATE", if m.alive(now, c.cfg.timeout_ms) { "up" } else { "down" })?;
            n.ulong("LAST_HEARD_MS", now.saturating_sub(m.last_ms))?;
            n.ulong("INCARNATION", m.inc)?;
            n.int("SYNCED", m.synced as i32)?;
            n.int("DIGEST_MATCH", (m.digest == digest) as i32)?;
            n.ulong("DESTINATIONS", m.ndests)?;
        }
        let cs = top.child_struct("COUNTERS")?;
        for (name, v) in k {
            cs.ulong(name, v)?;
        }
        Ok(())
    })();
    if r.is_err() {
        rpc.fault(500, e);
    }
}

/// `dispatcher.cluster_status`.
///
/// # Safety
/// Called by the core's RPC layer with its `rpc_t` and context.
pub unsafe extern "C" fn rpc_cluster_status(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.cluster_status", (), || {
        // SAFETY: arguments of an RPC handler call.
        rpc_status(&unsafe { Rpc::new(api, ctx) })
    })
}

/// mod_destroy.
pub fn destroy() {
    if let Some(c) = CTX.get() {
        // SAFETY: shutdown (main process, children gone): no user of the lock is left.
        unsafe { c.lock.free() };
    }
}
