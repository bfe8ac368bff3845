//! Destination health: state changes (spec §7.2), events and `$dsv` (§7.4, §8.3), the
//! state RPCs (§3 R-03..R-05) and the alg-11 table rebuild on usability changes.
use std::cell::RefCell;
use std::os::raw::c_int;
use std::sync::atomic::Ordering;

use once_cell::sync::OnceCell;

use crate::ds::health::{next_state, usable};
use crate::ds::snapshot::{states_all, DestRec, SetView};
use crate::ds::weights::rweight_table;
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
    let rw: Vec<i32> = set.dests.iter().map(|d| d.rweight_rt.load(Ordering::Relaxed)).collect();
    let us: Vec<bool> = set.dests.iter().map(|d| d.usable()).collect();
    if let Some(t) = rweight_table(&rw, &us, &mut kam_rand) {
        for (slot, v) in set.rec.rwlist.iter().zip(t.iter()) {
            slot.store(*v, Ordering::Relaxed);
        }
    }
}

fn after_change(set: &SetView<'_>, d: &DestRec, old: i32, new: i32) {
    if d.rweight_rt.load(Ordering::Relaxed) > 0 && usable(old) != usable(new) {
        rebuild_rweights(set);
    }
}

/// Runs the dst-up/dst-down event for a transition, with `$dsv` set from `rctx`.
fn fire(old: i32, new: i32, msg: Option<Msg>, uri: &[u8], rctx: Rctx) {
    let name = if usable(old) && !usable(new) {
        "dispatcher:dst-down"
    } else if !usable(old) && usable(new) {
        "dispatcher:dst-up"
    } else {
        return;
    };
    let cb = state::cfg().event_callback.clone();
    RCTX.with(|r| *r.borrow_mut() = Some(rctx));
    event::run(name, msg, uri, &cb);
    RCTX.with(|r| *r.borrow_mut() = None);
}

/// `ds_update_state`: applies `st` to destination `uri` of set `setid` through the state
/// machine, fires events and rebuilds rweights. 0 on success, -1 when not found.
pub fn update_state(msg: Option<Msg>, setid: i32, uri: &[u8], st: i32, mut rctx: Rctx) -> i32 {
    let cfg = state::cfg();
    let found = state::with_snap(|snap| {
        let Some(snap) = snap.filter(|s| s.nsets() > 0) else {
            crate::ds_err!(fn "ds_update_state"; "the list is null");
            return None;
        };
        let Some(set) = snap.set(setid) else {
            crate::ds_err!(fn "ds_update_state"; "destination set [{setid}] not found");
            return None;
        };
        let Some(d) = set.dests.iter().find(|d| d.uri.bytes().eq_ignore_ascii_case(uri)) else {
            // the C module returns -1 without a message here; callers say what failed
            ds_dbg!(fn "ds_update_state"; "destination [{}] not found in set [{setid}]", String::from_utf8_lossy(uri));
            return None;
        };
        let mut old = d.flags.load(Ordering::Acquire);
        let (new, cnt) = loop {
            let (new, cnt) = next_state(old, d.fail_cnt.load(Ordering::Relaxed), st, cfg.probing_threshold, cfg.inactive_threshold);
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
    rctx.uri = duri.clone();
    rctx.setid = setid;
    fire(old, new, msg, &duri, rctx);
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

/// Figures of the set chosen by `ds_dsg_fetch[_uri]`, per process.
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

thread_local! {
    static DSG: RefCell<Dsg> = RefCell::new(Dsg::default());
}

/// `ds_dsg_fetch(setid)` / `ds_dsg_fetch_uri(setid, uri)`: 1 (also for an unknown set: $dsg is null then).
pub fn dsg_fetch(setid: i32, uri: Option<&[u8]>) -> i32 {
    let d = state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(setid)) else { return Dsg::default() };
        let mut g = Dsg { found: true, count: set.dests.len() as i32, ..Default::default() };
        for d in set.dests {
            if d.usable() {
                g.active += 1;
            } else {
                g.inactive += 1;
            }
        }
        if let Some(u) = uri {
            if let Some(d) = set.dests.iter().find(|d| d.uri.bytes().eq_ignore_ascii_case(u)) {
                g.ocrate = d.oc_rate.load(Ordering::Relaxed);
                g.ocseq = d.oc_seq.load(Ordering::Relaxed);
                g.octime_us = d.oc_time_us.load(Ordering::Relaxed);
            }
        }
        g
    });
    DSG.with(|x| *x.borrow_mut() = d);
    1
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
            DSG.with(|g| {
                let g = g.borrow();
                if !g.found {
                    return sys::pv_get_null(msg, param, res);
                }
                let pct = |v: i32| if g.count > 0 { v * 100 / g.count } else { 0 };
                let v = match id {
                    0 => g.count,
                    1 => g.active,
                    2 => g.inactive,
                    3 => pct(g.active),
                    4 => pct(g.inactive),
                    5 => g.ocrate,
                    6 => g.ocseq,
                    7 => (g.octime_us / 1_000_000) as i32,
                    8 => (g.octime_us % 1_000_000) as i32,
                    _ => return sys::pv_get_null(msg, param, res),
                };
                sys::pv_get_sintval(msg, param, res, v as _)
            })
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
