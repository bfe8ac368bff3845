//! Destination health: state changes (spec §7.2), events and `$dsv` (§7.4, §8.3), the
//! state RPCs (§3 R-03..R-05) and the alg-11 table rebuild on usability changes.
use std::cell::RefCell;
use std::os::raw::c_int;
use std::sync::atomic::Ordering;

use once_cell::sync::OnceCell;

use crate::ds::compat;
use crate::ds::health::{cfg_marks_immediate, dsg_counts, dsg_percent, next_state, transition_event, usable};
use crate::ds::snapshot::{states_all, DestRec, SetView};
use crate::kam::event;
use crate::kam::mem::ShmLock;
use crate::kam::msg::Msg;
use crate::kam::{kam_rand, param::unsafe_bytes};
use crate::module::{guard, state};
use crate::sys;
use crate::ds_dbg;

/// Context of the event being run (`$dsv`), per process.
#[derive(Clone, Debug, Default)]
pub struct Rctx {
    pub flags: i32,
    pub code: i32,
    pub reason: Option<Vec<u8>>,
    pub uri: Vec<u8>,
    pub setid: i32,
}

thread_local! {
    static RCTX: RefCell<Option<Rctx>> = const { RefCell::new(None) };
}

static RW_LOCK: OnceCell<ShmLock> = OnceCell::new();

pub fn init() -> Result<(), String> {
    let l = ShmLock::new().ok_or("cannot allocate the rweight lock")?;
    let _ = RW_LOCK.set(l);
    Ok(())
}

/// Rebuilds the alg-11 table of a set from the current flags (serialised by a shm lock).
pub fn rebuild_rweights(set: &SetView<'_>) {
    let Some(l) = RW_LOCK.get() else { return };
    let _g = l.lock();
    crate::ds::select::rw_rebuild(set, &mut kam_rand, false);
    // algs 41/43 (exact weights) follow the same state and rweights
    crate::ds::algs::exact::rebuild(set);
}

/// Rebuilds the exact-weight tables of algs 41/43 after a usability change.
pub fn rebuild_exact(set: &SetView<'_>) {
    let Some(l) = RW_LOCK.get() else { return };
    let _g = l.lock();
    crate::ds::algs::exact::rebuild(set);
}

fn after_change(set: &SetView<'_>, d: &DestRec, old: i32, new: i32) {
    if usable(old) != usable(new) {
        rebuild_exact(set);
    }
    if d.rweight_rt.load(Ordering::Relaxed) > 0 && usable(old) != usable(new) {
        rebuild_rweights(set);
        // algorithm 15 (master) rebuilds its table behind the same rweight guard
        crate::module::cmds::rebuild_pwlist(set);
    }
}

/// Cluster mode: writes `bits` (under `mask`) received from a peer into a destination's
/// flags: no thresholds, no events; the alg-11/15 tables follow as for any change.
pub fn cluster_write(set: &SetView<'_>, d: &DestRec, mask: i32, bits: i32) {
    let old = d.flags.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| Some((f & !mask) | (bits & mask))).unwrap_or(0);
    after_change(set, d, old, (old & !mask) | (bits & mask));
}

/// Who asked for a state change (the C module's `DS_STATE_MODE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A keepalive result (mode 0): thresholds apply, events by `event_callback_mode`.
    Keepalive,
    /// A cfg function (`ds_mark_dst`, `ds_mark_addr`, KEMI, `bind_dispatcher().mark`):
    /// mode SET|FUNC, so from 6.0.3 on immediate and from 6.1 subject to
    /// `event_callback_mode`.
    Cfg,
}

/// Runs the dst-up/dst-down event for a transition, with `$dsv` set from `rctx`.
fn fire(old: i32, new: i32, origin: Origin, msg: Option<Msg>, uri: &[u8], rctx: Rctx) {
    let cfg = state::cfg();
    let Some(ev) = transition_event(old, new, origin == Origin::Cfg, cfg.event_callback_mode) else { return };
    RCTX.with(|r| *r.borrow_mut() = Some(rctx));
    // 6.0.3+: always on a faked message whose R-URI is the destination
    event::run(ev.route(), msg, uri, &cfg.event_callback, compat::ge(6, 0, 3));
    RCTX.with(|r| *r.borrow_mut() = None);
}

/// Which record of a set a state change is for.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// The first destination with this URI (case-insensitive).
    Uri(&'a [u8]),
    /// Kamailio 6.1: the destination with this IUID (the counter of its IUID text, see
    /// [`iuid_of_text`]), from the From tag of a keepalive; the URI is what the events see.
    /// None: the text is no IUID of this instance and set, so no destination matches.
    Iuid { iuid: Option<u64>, uri: &'a [u8] },
}

/// The IUID counter of an IUID text of set `setid` of this instance (None: not one).
pub fn iuid_of_text(text: &[u8], setid: i32) -> Option<u64> {
    let zero = state::iuid_text(0, 0);
    let prefix = zero.strip_suffix("-0").unwrap_or(&zero);
    crate::ds::health::iuid_counter(text, prefix.as_bytes(), setid)
}

impl Target<'_> {
    fn uri(&self) -> &[u8] {
        match self {
            Target::Uri(u) => u,
            Target::Iuid { uri, .. } => uri,
        }
    }
    fn matches(&self, d: &DestRec) -> bool {
        match self {
            Target::Uri(u) => d.uri.bytes().eq_ignore_ascii_case(u),
            Target::Iuid { iuid, .. } => *iuid == Some(d.iuid),
        }
    }
}

/// The runtime flags of a destination (`ds_get_state`): None when the set is not there
/// (logged), 0 when the destination is not in it.
pub fn get_state(setid: i32, target: Target<'_>) -> Option<i32> {
    state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(setid)) else {
            crate::ds_err!(fn "ds_get_state"; "destination set [{setid}] not found");
            return None;
        };
        Some(set.dests.iter().find(|d| target.matches(d)).map(|d| d.flags.load(Ordering::Relaxed)).unwrap_or(0))
    })
}

/// `ds_update_state` for a cfg function (`ds_mark_dst`, `ds_mark_addr`, KEMI,
/// `bind_dispatcher().mark`): applies `st` to destination `uri` of set `setid`. From
/// Kamailio 6.0.3 the change is immediate (no thresholds). 0 on success, -1 when not found.
pub fn update_state(msg: Option<Msg>, setid: i32, uri: &[u8], st: i32, rctx: Rctx) -> i32 {
    update_state_from(Origin::Cfg, msg, setid, Target::Uri(uri), st, rctx)
}

/// `ds_update_state`: applies `st` to the target destination of set `setid` through the
/// state machine, fires events and rebuilds rweights. 0 on success, -1 when not found.
pub fn update_state_from(origin: Origin, msg: Option<Msg>, setid: i32, target: Target<'_>, st: i32, mut rctx: Rctx) -> i32 {
    let cfg = state::cfg();
    let immediate = origin == Origin::Cfg && cfg_marks_immediate();
    let found = state::with_snap(|snap| {
        let Some(snap) = snap.filter(|s| s.nsets() > 0) else {
            crate::ds_err!(fn "ds_update_state"; "the list is null");
            return None;
        };
        let Some(set) = snap.set(setid) else {
            crate::ds_err!(fn "ds_update_state"; "destination set [{setid}] not found");
            return None;
        };
        let Some(d) = set.dests.iter().find(|d| target.matches(d)) else {
            // the C module returns -1 without a message here; callers say what failed
            ds_dbg!(fn "ds_update_state"; "destination [{}] not found in set [{setid}]", String::from_utf8_lossy(target.uri()));
            return None;
        };
        let mut old = d.flags.load(Ordering::Acquire);
        let (new, cnt) = loop {
            let (new, cnt) =
                next_state(old, d.fail_cnt.load(Ordering::Relaxed), st, cfg.probing_threshold, cfg.inactive_threshold, immediate);
            match d.flags.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break (new, cnt),
                Err(v) => old = v,
            }
        };
        d.fail_cnt.store(cnt, Ordering::Relaxed);
        after_change(&set, d, old, new);
        ds_dbg!("old state was {old}, set new state to {new}");
        Some((old, new, d.uri.bytes().to_vec()))
    });
    let Some((old, new, duri)) = found else { return -1 };
    // 6.0.3+ (as the C module): the address as given (event R-URI, $dsv(uri)); before, the
    // destination's own URI (the same text but for letter case)
    let uri = if compat::ge(6, 0, 3) { target.uri().to_vec() } else { duri };
    rctx.uri = uri.clone();
    rctx.setid = setid;
    fire(old, new, origin, msg, &uri, rctx);
    0
}

/// RPC state overwrite (no thresholds, no counters, no events). `by_duid` matches `duid`.
/// Returns false when the set or the destination is unknown ("all" never fails).
/// Failures are logged as the C module's `ds_reinit_*state*` functions do (ERROR).
pub fn reinit_state(setid: i32, key: &[u8], st: i32, by_duid: bool) -> bool {
    let all = key == b"all";
    let func = if all {
        "ds_reinit_state_all"
    } else if by_duid {
        "ds_reinit_duid_state"
    } else {
        "ds_reinit_state"
    };
    state::with_snap(|snap| {
        let Some(snap) = snap.filter(|s| s.nsets() > 0) else {
            crate::ds_err!(fn func; "the list is null");
            return all;
        };
        let Some(set) = snap.set(setid) else {
            crate::ds_err!(fn func; "destination set [{setid}] not found");
            return all;
        };
        let mut hit = false;
        for d in set.dests {
            let m = all
                || if by_duid { d.duid.bytes().eq_ignore_ascii_case(key) } else { d.uri.bytes().eq_ignore_ascii_case(key) };
            if !m {
                continue;
            }
            let old = d.flags.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| Some((f & !states_all()) | st)).unwrap_or(0);
            after_change(&set, d, old, (old & !states_all()) | st);
            hit = true;
            if !all {
                break;
            }
        }
        if !hit && !all {
            let what = if by_duid { "duid" } else { "address" };
            crate::ds_err!(fn func; "destination {what} [{setid} : {}] not found", String::from_utf8_lossy(key));
        }
        hit || all
    })
}

/// `ds_mark_dst([state])` on the first `_dsdst_` record.
pub fn mark_dst(m: Msg, st: i32) -> i32 {
    let cfg = state::cfg();
    if cfg.flags & 2 == 0 {
        crate::ds_warn!(fn "ds_mark_dst"; "failover support disabled");
        return -1;
    }
    if cfg.xavp_dst.is_empty() {
        crate::ds_warn!(fn "ds_mark_dst"; "no xavp name to store dst records");
        return -1;
    }
    let Some(rec) = crate::kam::xavp::first_record(&cfg.xavp_dst) else { return -1 };
    let (Some(grp), Some(uri)) = (rec.grp, rec.uri) else { return -1 };
    let rctx = msg_rctx(Some(m));
    if update_state(Some(m), grp, &uri, st, rctx) == 0 { 1 } else { -1 }
}

/// `$dsv` context of a state change made from the cfg (the C module's codes 800/810/820).
pub fn msg_rctx(m: Option<Msg>) -> Rctx {
    let mut r = Rctx::default();
    match m {
        None => r.code = 800,
        Some(m) if m.0 as isize == -1 => r.code = 810,
        Some(m) => {
            // SAFETY: valid message of the current cfg call.
            let fl = unsafe { &(*m.0).first_line };
            if fl.type_ == 2 {
                r.flags |= 1;
                // SAFETY: reply part of the first-line union for replies.
                unsafe {
                    r.code = fl.u.reply.statuscode as i32;
                    r.reason = Some(unsafe_bytes(fl.u.reply.reason).to_vec());
                }
            } else {
                r.code = 820;
            }
        }
    }
    r
}

// ---- $dsv ---------------------------------------------------------------------------------

/// Parses the inner name of a module PV (`$dsv(key)`, `$dsg(key)`) into an int id.
fn parse_pv_key(sp: *mut sys::pv_spec_t, name: *mut sys::str_, keys: &[(&[u8], c_int)]) -> c_int {
    if sp.is_null() || name.is_null() {
        return -1;
    }
    // SAFETY: the core passes a valid spec and name while parsing the cfg.
    let n = unsafe_bytes(unsafe { *name });
    let Some(&(_, id)) = keys.iter().find(|(k, _)| *k == n) else {
        crate::ds_err!("unknown PV key: {}", String::from_utf8_lossy(n));
        return -1;
    };
    // SAFETY: as above; writing the int name of the spec.
    unsafe {
        (*sp).pvp.pvn.type_ = sys::PV_NAME_INTSTR as c_int;
        (*sp).pvp.pvn.u.isname.type_ = 0;
        (*sp).pvp.pvn.u.isname.name.n = id as _;
    }
    0
}

unsafe extern "C" fn pv_parse_dsv(sp: *mut sys::pv_spec_t, name: *mut sys::str_) -> c_int {
    let keys: &[(&[u8], c_int)] = &[(b"code", 0), (b"reason", 1), (b"flags", 2), (b"uri", 3), (b"setid", 4), (b"group", 4)];
    guard("pv_parse_dsv", -1, || parse_pv_key(sp, name, keys))
}

unsafe extern "C" fn pv_get_dsv(msg: *mut sys::sip_msg, param: *mut sys::pv_param_t, res: *mut sys::pv_value_t) -> c_int {
    guard("pv_get_dsv", -1, || {
        if param.is_null() {
            return -1;
        }
        // SAFETY: the core passes valid param/res; the value helpers copy what they need
        // (strings must stay valid until used: they point into this process' RCTX).
        unsafe {
            let id = (*param).pvn.u.isname.name.n as c_int;
            RCTX.with(|r| {
                let r = r.borrow();
                let Some(c) = r.as_ref() else { return sys::pv_get_null(msg, param, res) };
                match id {
                    0 => sys::pv_get_sintval(msg, param, res, c.code as _),
                    1 => match &c.reason {
                        Some(v) if !v.is_empty() => {
                            let mut s = sys::str_ { s: v.as_ptr() as *mut _, len: v.len() as c_int };
                            sys::pv_get_strval(msg, param, res, &mut s)
                        }
                        _ => sys::pv_get_null(msg, param, res),
                    },
                    2 => sys::pv_get_sintval(msg, param, res, c.flags as _),
                    3 => {
                        let mut s = sys::str_ { s: c.uri.as_ptr() as *mut _, len: c.uri.len() as c_int };
                        sys::pv_get_strval(msg, param, res, &mut s)
                    }
                    4 => sys::pv_get_sintval(msg, param, res, c.setid as _),
                    _ => sys::pv_get_null(msg, param, res),
                }
            })
        }
    })
}

// ---- ds_dsg_fetch / $dsg (Kamailio 5.8/6.0) ------------------------------------------------

/// Figures of one set for `$dsg`.
#[derive(Clone, Debug, Default)]
struct Dsg {
    found: bool,
    count: i32,
    active: i32,
    inactive: i32,
    ocrate: i32,
    ocseq: i32,
    octime_us: u64,
}

/// What `ds_dsg_fetch[_uri]` chose, per process. Kamailio 5.8+: group 1 before any fetch,
/// the figures computed at each read. Before 5.8 (where `$dsg` is this module's extension)
/// the figures are taken at fetch time (`taken`), and `$dsg` is null before any fetch.
#[derive(Clone, Debug)]
struct DsgSel {
    group: i32,
    uri: Option<Vec<u8>>,
    taken: Option<Dsg>,
}

thread_local! {
    static DSG: RefCell<DsgSel> = const { RefCell::new(DsgSel { group: 1, uri: None, taken: None }) };
}

/// The current figures of set `setid` (OC data of `uri` when given).
fn dsg_compute(setid: i32, uri: Option<&[u8]>) -> Dsg {
    state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(setid)) else { return Dsg::default() };
        let (count, active, inactive) = dsg_counts(set.dests.iter().map(|d| d.flags.load(Ordering::Relaxed)));
        let mut g = Dsg { found: true, count, active, inactive, ..Default::default() };
        if let Some(u) = uri {
            if let Some(d) = set.dests.iter().find(|d| d.uri.bytes().eq_ignore_ascii_case(u)) {
                g.ocrate = d.oc_rate.load(Ordering::Relaxed);
                g.ocseq = d.oc_seq.load(Ordering::Relaxed);
                g.octime_us = d.oc_time_us.load(Ordering::Relaxed);
            }
        }
        g
    })
}

/// `ds_dsg_fetch(setid)` / `ds_dsg_fetch_uri(setid, uri)`: 1 (also for an unknown set: $dsg is null then).
pub fn dsg_fetch(setid: i32, uri: Option<&[u8]>) -> i32 {
    let taken = if compat::ge(5, 8, 0) { None } else { Some(dsg_compute(setid, uri)) };
    DSG.with(|x| *x.borrow_mut() = DsgSel { group: setid, uri: uri.map(|u| u.to_vec()), taken });
    1
}

/// The figures `$dsg` shows now (None: null).
fn dsg_current() -> Option<Dsg> {
    let sel = DSG.with(|x| x.borrow().clone());
    let g = if compat::ge(5, 8, 0) { dsg_compute(sel.group, sel.uri.as_deref()) } else { sel.taken? };
    g.found.then_some(g)
}

unsafe extern "C" fn pv_parse_dsg(sp: *mut sys::pv_spec_t, name: *mut sys::str_) -> c_int {
    let keys: &[(&[u8], c_int)] = &[
        (b"count", 0),
        (b"active", 1),
        (b"inactive", 2),
        (b"pactive", 3),
        (b"pinactive", 4),
        (b"ocrate", 5),
        (b"ocseq", 6),
        (b"octime_sec", 7),
        (b"octime_usec", 8),
    ];
    guard("pv_parse_dsg", -1, || parse_pv_key(sp, name, keys))
}

unsafe extern "C" fn pv_get_dsg(msg: *mut sys::sip_msg, param: *mut sys::pv_param_t, res: *mut sys::pv_value_t) -> c_int {
    guard("pv_get_dsg", -1, || {
        if param.is_null() {
            return -1;
        }
        // SAFETY: the core passes valid param/res.
        unsafe {
            let id = (*param).pvn.u.isname.name.n as c_int;
            let Some(g) = dsg_current() else { return sys::pv_get_null(msg, param, res) };
            let v: i64 = match id {
                0 => g.count as i64,
                1 => g.active as i64,
                2 => g.inactive as i64,
                3 => dsg_percent(g.active, g.count) as i64,
                4 => dsg_percent(g.inactive, g.count) as i64,
                5 => g.ocrate as i64,
                6 => g.ocseq as i64,
                7 => (g.octime_us / 1_000_000) as i64,
                8 => (g.octime_us % 1_000_000) as i64,
                _ => return sys::pv_get_null(msg, param, res),
            };
            sys::pv_get_sintval(msg, param, res, v as _)
        }
    })
}

pub static mut PVS: [sys::pv_export_t; 3] = [
    sys::pv_export_t {
        name: sys::str_ { s: c"dsg".as_ptr() as *mut _, len: 3 },
        type_: sys::_pv_type_PVT_OTHER,
        getf: Some(pv_get_dsg),
        setf: None,
        parse_name: Some(pv_parse_dsg),
        parse_index: None,
        init_param: None,
        iparam: 0,
    },
    sys::pv_export_t {
        name: sys::str_ { s: c"dsv".as_ptr() as *mut _, len: 3 },
        type_: sys::_pv_type_PVT_OTHER,
        getf: Some(pv_get_dsv),
        setf: None,
        parse_name: Some(pv_parse_dsv),
        parse_index: None,
        init_param: None,
        iparam: 0,
    },
    sys::pv_export_t {
        name: sys::str_ { s: std::ptr::null_mut(), len: 0 },
        type_: 0,
        getf: None,
        setf: None,
        parse_name: None,
        parse_index: None,
        init_param: None,
        iparam: 0,
    },
];

/// mod_destroy: frees the rweight lock.
pub fn destroy() {
    if let Some(l) = RW_LOCK.get() {
        // SAFETY: shutdown (main process, children gone): no user of the lock is left.
        unsafe { l.free() };
    }
}
