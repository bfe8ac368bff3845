//! cfg-script functions (spec §2): thin wrappers that read the fixed-up parameters and call
//! the selection logic, keeping the C module's return codes.
use std::net::IpAddr;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;

use crate::ds::algs;
use crate::ds::select::{self, rr_commit, AddrList, FromKey, FromMatch};
use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE};
use crate::kam::kam_rand;
use std::sync::atomic::Ordering;
use crate::ds::snapshot::{DestRec, SetView, Snap};
use crate::ds::uri::parse_uri;
use crate::kam::msg::{self, Msg};
use crate::kam::param::{get_int, get_int_is, get_is, get_str, IsValue};
use crate::kam::xavp::{self, RecordWriter, XName};
use crate::module::{guard, health, load, selkey, state};
use crate::ds::health::parse_mark_state;
use crate::ds::snapshot::DS_PROBING;
use crate::sys::{self, cmd_export_t, sip_msg};
use crate::{ds_dbg, ds_err, ds_warn};

/// Where a selection is applied (the C module's DS_SETOP_*).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SetOp {
    DstUri = 0,
    Ruri = 1,
    Xavp = 2,
}

/// Applies a destination to the message (`ds_push_dst`).
#[inline(always)]
fn push_dst(m: Msg, uri: &[u8], sock: usize, mode: SetOp) -> bool {
    let ok = match mode {
        SetOp::Xavp => return true,
        SetOp::Ruri => m.set_ruri_hostall(uri),
        SetOp::DstUri => m.set_dst_uri(uri),
    };
    if !ok {
        let what = if mode == SetOp::Ruri { "r-uri domain" } else { "dst uri" };
        ds_err!(fn "ds_push_dst"; "error while setting {what} with: {}", String::from_utf8_lossy(uri));
        return false;
    }
    m.force_socket(sock);
    true
}

static F_URI: XName = XName::new(b"uri");
static F_GRP: XName = XName::new(b"grp");
static F_DSTIDX: XName = XName::new(b"dstidx");
static F_ATTRS: XName = XName::new(b"attrs");
static F_SOCK: XName = XName::new(b"sock");
static F_SOCKET: XName = XName::new(b"socket");
static F_SOCKNAME: XName = XName::new(b"sockname");
static F_DSTID: XName = XName::new(b"dstid");

/// What the records of one selection contain besides uri and grp (read once per selection).
#[derive(Clone, Copy)]
struct RecFlags {
    /// `xavp_dst_mode`.
    mode: i32,
    /// Kamailio 6.1: `dstidx`, the destination's index within its set.
    dstidx: bool,
}

/// Adds the failover record of destination `d` (spec §8.1 fields, in the C module's order).
#[inline(always)]
fn add_record(w: &mut RecordWriter<'_>, d: &DestRec, idx: usize, setid: i32, alg: i32, rf: RecFlags) -> bool {
    // field by field into the record (this runs for every failover record)
    if alg == select::ALG_CALLLOAD && d.duid.bytes().is_empty() {
        return no_uid(d, setid);
    }
    let mode = rf.mode;
    let mut r = w.record();
    if !r.str(&F_URI, d.uri.bytes()) || !r.int(&F_GRP, setid) {
        return false;
    }
    if rf.dstidx && !r.int(&F_DSTIDX, idx as i32) {
        return false;
    }
    let body = d.attrs_body.bytes();
    if mode & 1 == 0 && !body.is_empty() && !r.str(&F_ATTRS, body) {
        return false;
    }
    if d.sock != 0 {
        if !r.ptr(&F_SOCK, d.sock) {
            return false;
        }
        if mode & 2 != 0 && !d.socket.bytes().is_empty() && !r.str(&F_SOCKET, d.socket.bytes()) {
            return false;
        }
        if mode & 4 != 0 && !d.sockname.bytes().is_empty() && !r.str(&F_SOCKNAME, d.sockname.bytes()) {
            return false;
        }
    }
    if alg == select::ALG_CALLLOAD && !r.str(&F_DSTID, d.duid.bytes()) {
        return false;
    }
    w.commit(r)
}

#[cold]
fn no_uid(d: &DestRec, setid: i32) -> bool {
    ds_err!(fn "ds_add_xavp_record"; "no uid for destination: {} {}", setid, String::from_utf8_lossy(d.uri.bytes()));
    false
}

/// State shared by the selections of one call (`ds_select_state_t`): records counted against
/// one limit and appended after each other, and whether `$du`/R-URI was already set.
pub struct SelState<'a> {
    pub cnt: i32,
    pub limit: u32,
    pub w: RecordWriter<'a>,
    pub emode: bool,
}

#[inline(always)]
fn add_ctx_cnt(cfg: &crate::module::params::Config, cnt: i32) -> bool {
    if cfg.xavp_ctx_mode & 1 == 0 && !cfg.xavp_ctx.is_empty() && !xavp::add_ctx_int(&cfg.xavp_ctx, b"cnt", cnt) {
        ds_err!(fn "ds_select_dst_limit"; "failed to add cnt value to xavp");
        return false;
    }
    true
}

/// The selection (`ds_manage_routes` + `ds_select_dst_limit`): returns 1, 2 or -1.
pub fn select_dst(m: Msg, setid: i32, alg: i32, limit: u32, mode: SetOp) -> i32 {
    let cfg = state::cfg();
    let mut st = SelState { cnt: 0, limit: if limit == 0 { u32::MAX } else { limit }, w: RecordWriter::new(&cfg.xavp_dst), emode: false };
    let rc = state::with_snap(|snap| select_in_inl(cfg, snap, m, setid, alg, &mut st, mode));
    if rc < 0 {
        return rc;
    }
    if !add_ctx_cnt(cfg, st.cnt) {
        return -1;
    }
    rc
}

/// `ds_select_routes(rules, mode[, limit])`: rules `set=alg;set=alg;...` against one counter.
pub fn select_routes(m: Msg, rules: &[u8], umode: &[u8], limit: u32) -> i32 {
    let cfg = state::cfg();
    let mut st = SelState { cnt: 0, limit: if limit == 0 { u32::MAX } else { limit }, w: RecordWriter::new(&cfg.xavp_dst), emode: false };
    let mut vret = -1;
    let mut gret = -1;
    let mut i = 0usize;
    let field = |i: &mut usize, end: u8| -> Result<i32, ()> {
        let mut v: i32 = 0;
        while let Some(&c) = rules.get(*i) {
            if c.is_ascii_digit() {
                v = v.wrapping_mul(10).wrapping_add((c - b'0') as i32);
                *i += 1;
            } else if c == end {
                *i += 1;
                break;
            } else {
                ds_err!(fn "ki_ds_select_routes_limit"; "invalid character in [{}] at [{}]", String::from_utf8_lossy(rules), *i);
                return Err(());
            }
        }
        Ok(v)
    };
    while i < rules.len() {
        let Ok(setid) = field(&mut i, b'=') else { return -1 };
        let Ok(alg) = field(&mut i, b';') else { return -1 };
        let mode = if st.emode {
            SetOp::Xavp
        } else {
            match umode.first() {
                Some(b'0' | b'd' | b'D') => SetOp::DstUri,
                Some(b'1' | b'r' | b'R') => SetOp::Ruri,
                Some(b'2' | b'x' | b'X') => SetOp::Xavp,
                _ => {
                    ds_err!(fn "ki_ds_select_routes_limit"; "invalid routing mode parameter: {}", String::from_utf8_lossy(umode));
                    return -1;
                }
            }
        };
        vret = state::with_snap(|snap| select_in(snap, m, setid, alg, &mut st, mode));
        if vret > 0 {
            gret = vret;
        }
    }
    if gret < 0 {
        return vret;
    }
    if !add_ctx_cnt(cfg, st.cnt) {
        return -1;
    }
    gret
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// `ds_oc_set_attrs(setid, uri, rval, tval, sval)` (Kamailio 6.0): 1 updated, -1 error,
/// -2 nothing updated.
pub fn oc_set_attrs(setid: i32, uri: &[u8], rval: i32, tval: i32, sval: i32) -> i32 {
    state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(setid)) else {
            ds_err!("destination set [{setid}] not found");
            return -1;
        };
        let validity_us = (if tval > 0 { tval } else { 500 }) as u64 * 1000;
        let mut ret = -2;
        for d in set.dests.iter().filter(|d| d.uri.bytes().eq_ignore_ascii_case(uri)) {
            if d.oc_seq.load(Ordering::Relaxed) >= sval {
                continue;
            }
            let rate = rval.max(d.ocmin).min(d.ocmax);
            d.oc_rate.store(rate, Ordering::Relaxed);
            let t = crate::ds::weights::oc_table(rate, &mut kam_rand);
            d.set_oc_table(&t);
            d.oc_time_us.store(now_us() + validity_us, Ordering::Relaxed);
            d.oc_seq.store(sval, Ordering::Relaxed);
            ret = 1;
        }
        ret
    })
}

unsafe extern "C" fn w_ds_oc_set_attrs(m: *mut sip_msg, s: P, u: P, r: P, t: P, q: P) -> c_int {
    guard("ds_oc_set_attrs", -1, || {
        let (Some(s), Some(u), Some(r), Some(t), Some(q)) = (get_int_is(m, s), get_str(m, u), get_int_is(m, r), get_int_is(m, t), get_int_is(m, q)) else {
            ds_err!("cannot get the parameter values");
            return -1;
        };
        oc_set_attrs(s, &u, r, t, q)
    })
}

unsafe extern "C" fn w_ds_dsg_fetch(m: *mut sip_msg, g: P, _b: P) -> c_int {
    guard("ds_dsg_fetch", -1, || {
        let Some(g) = get_int_is(m, g) else {
            ds_err!("cannot get set id value");
            return -1;
        };
        health::dsg_fetch(g, None)
    })
}
unsafe extern "C" fn w_ds_dsg_fetch_uri(m: *mut sip_msg, g: P, u: P) -> c_int {
    guard("ds_dsg_fetch_uri", -1, || {
        let (Some(g), Some(u)) = (get_int_is(m, g), get_str(m, u)) else {
            ds_err!("cannot get set id or uri value");
            return -1;
        };
        health::dsg_fetch(g, Some(&u))
    })
}

// ---- bind_dispatcher: the C API other modules get with find_export("bind_dispatcher") --------

#[repr(C)]
pub struct DispatcherApi {
    select: Option<unsafe extern "C" fn(*mut sip_msg, c_int, c_int, c_int) -> c_int>,
    next: Option<unsafe extern "C" fn(*mut sip_msg, c_int) -> c_int>,
    mark: Option<unsafe extern "C" fn(*mut sip_msg, c_int) -> c_int>,
    is_from: Option<unsafe extern "C" fn(*mut sip_msg, c_int) -> c_int>,
}

fn setop(mode: c_int) -> SetOp {
    match mode {
        1 => SetOp::Ruri,
        2 => SetOp::Xavp,
        _ => SetOp::DstUri,
    }
}
unsafe extern "C" fn api_select(m: *mut sip_msg, set: c_int, alg: c_int, mode: c_int) -> c_int {
    guard("dispatcher api select", -1, || if m.is_null() { -1 } else { select_dst(Msg(m), set, alg, 0, setop(mode)) })
}
unsafe extern "C" fn api_next(m: *mut sip_msg, mode: c_int) -> c_int {
    guard("dispatcher api next", -1, || if m.is_null() { -1 } else { update_dst(Msg(m), true, setop(mode)) })
}
unsafe extern "C" fn api_mark(m: *mut sip_msg, st: c_int) -> c_int {
    guard("dispatcher api mark", -1, || if m.is_null() { -1 } else { health::mark_dst(Msg(m), st) })
}
unsafe extern "C" fn api_is_from(m: *mut sip_msg, g: c_int) -> c_int {
    guard("dispatcher api is_from", -1, || if m.is_null() { -1 } else { is_from_list(Msg(m), g, None, 2) })
}

/// `bind_dispatcher(dispatcher_api_t*)`.
unsafe extern "C" fn bind_dispatcher(api: *mut sip_msg, _a: P, _b: P) -> c_int {
    let api = api as *mut DispatcherApi;
    if api.is_null() {
        ds_err!("Invalid parameter value");
        return -1;
    }
    // SAFETY: the caller passes a dispatcher_api_t to fill (the C module's API contract).
    unsafe {
        (*api).select = Some(api_select);
        (*api).next = Some(api_next);
        (*api).mark = Some(api_mark);
        (*api).is_from = Some(api_is_from);
    }
    0
}

/// ds_oc_set_attrs: int/PV, string/PV, then three int/PV.
unsafe extern "C" fn fixup_oc_set_attrs(param: *mut *mut c_void, no: c_int) -> c_int {
    // SAFETY: forwarding the core's arguments to the core's own fixups.
    unsafe {
        match no {
            2 => sys::fixup_spve_null(param, 1),
            1 | 3 | 4 | 5 => sys::fixup_igp_null(param, 1),
            _ => 0,
        }
    }
}

/// Method ids of the core's `request_method` enum.
const METHOD_CANCEL: i32 = 2;
const METHOD_BYE: i32 = 8;

/// `ds_load_add`: records the call on destination `d` and counts it.
fn load_add(m: Msg, d: Option<&DestRec>, setid: i32) -> bool {
    let (Some(t), Some(d)) = (load::table(), d) else { return false };
    let Some(cid) = m.callid() else { return false };
    if d.duid.bytes().is_empty() {
        ds_err!(fn "ds_load_add"; "dst unique id not set for {} ({})", setid, String::from_utf8_lossy(cid));
        return false;
    }
    if !t.add(cid, d.duid.bytes(), setid) {
        ds_err!(fn "ds_load_add"; "cannot add load to {} ({})", setid, String::from_utf8_lossy(cid));
        return false;
    }
    d.dload.fetch_add(1, Ordering::AcqRel);
    true
}

/// `ds_load_update()`: BYE/CANCEL end the call, a 2xx to INVITE confirms it. Returns 1 / -1.
pub fn load_update(m: Msg) -> i32 {
    let Some(cid) = m.callid().map(|c| c.to_vec()) else {
        ds_err!(fn "ds_load_update"; "cannot parse cseq and callid headers");
        return -1;
    };
    let Some((is_req, method, cseq_invite, status)) = m.load_info() else {
        ds_err!(fn "ds_load_update"; "cannot parse cseq and callid headers");
        return -1;
    };
    let off_load = is_req && (method == METHOD_BYE || method == METHOD_CANCEL);
    let Some(t) = load::table() else {
        if off_load {
            // no call-load table (ds_hash_size 0): nothing can be found, as in C
            ds_err!(fn "ds_load_remove"; "cannot find load for ({})", String::from_utf8_lossy(&cid));
        }
        return 1;
    };
    if is_req {
        if method == METHOD_BYE || method == METHOD_CANCEL {
            t.remove(&cid);
        }
        return 1;
    }
    if cseq_invite && status / 100 == 2 {
        t.set_state(&cid, load::LOAD_CONFIRMED);
    }
    1
}

/// `ds_load_unset()`: 1, or -1 when the Call-ID is not in the table.
pub fn load_unset(m: Msg) -> i32 {
    let cfg = state::cfg();
    if cfg.xavp_dst.is_empty() {
        return 1;
    }
    if m.is_invite() && xavp::first_record(&cfg.xavp_dst).and_then(|r| r.dstid).is_none() {
        return 1;
    }
    let Some(cid) = m.callid().map(|c| c.to_vec()) else { return -1 };
    match load::table() {
        Some(t) if t.remove(&cid) == 0 => 1,
        Some(_) => -1,
        None => {
            // no call-load table (ds_hash_size 0): nothing can be found, as in C
            ds_err!(fn "ds_load_remove"; "cannot find load for ({})", String::from_utf8_lossy(&cid));
            -1
        }
    }
}

/// Extra branches of algorithm 12 (`ds_add_branches`).
fn add_branches(m: Msg, dests: &[DestRec], sel: usize, mode: SetOp) -> bool {
    if mode != SetOp::Xavp && sel + 1 >= dests.len() {
        return true;
    }
    let from = if mode == SetOp::Xavp { sel } else { sel + 1 };
    let ruri_user = if mode == SetOp::Ruri {
        if m.ruri().is_none() {
            ds_err!(fn "ds_add_branches"; "failed to parse sip msg uri");
            return false;
        }
        m.ruri_user().filter(|u| !u.is_empty())
    } else {
        None
    };
    for (i, d) in dests.iter().enumerate().skip(from) {
        let uri = d.uri.bytes();
        let ok = if mode == SetOp::Ruri {
            match &ruri_user {
                None => m.append_branch(uri, &[], d.sock),
                Some(user) => {
                    if uri.len() < 6 {
                        ds_warn!(fn "ds_add_branches"; "invalid dispatcher uri - skipping ({i})");
                        continue;
                    }
                    let (scheme, rest): (&[u8], &[u8]) = if uri.starts_with(b"sips:") {
                        (b"sips:", &uri[5..])
                    } else if uri.starts_with(b"sip:") {
                        (b"sip:", &uri[4..])
                    } else {
                        ds_warn!(fn "ds_add_branches"; "unsupported protocol schema - ignoring");
                        continue;
                    };
                    let mut b = Vec::with_capacity(uri.len() + user.len() + 2);
                    b.extend_from_slice(scheme);
                    b.extend_from_slice(user);
                    b.push(b'@');
                    b.extend_from_slice(rest);
                    m.append_branch(&b, &[], d.sock)
                }
            }
        } else {
            // the R-URI text as it is, unparsed (GET_RURI in the C module)
            let r = m.ruri_raw().to_vec();
            m.append_branch(&r, uri, d.sock)
        };
        if !ok {
            let what = match (mode, &ruri_user) {
                (SetOp::Ruri, None) => "ruri",
                (SetOp::Ruri, Some(_)) => "user ruri",
                _ => "duri",
            };
            ds_err!(fn "ds_add_branches"; "failed to add branch with {what} ({})", String::from_utf8_lossy(uri));
            return false;
        }
    }
    true
}

/// [`select_in_inl`] as a function of its own (`ds_select_routes`).
fn select_in(snap: Option<Snap<'_>>, m: Msg, setid: i32, alg: i32, st: &mut SelState<'_>, mode: SetOp) -> i32 {
    select_in_inl(state::cfg(), snap, m, setid, alg, st, mode)
}

/// One selection in the current list (`ds_manage_routes`), inlined into `select_dst`. The
/// most used families (hash with its key, round-robin, serial) are chosen and applied here;
/// the others go out of line ([`select_other`]), so that their state (rankings, orders,
/// call load) takes no room on the common path.
#[inline(always)]
fn select_in_inl(cfg: &crate::module::params::Config, snap: Option<Snap<'_>>, m: Msg, setid: i32, alg: i32, st: &mut SelState<'_>, mode: SetOp) -> i32 {
    let Some(snap) = snap.filter(|s| s.nsets() > 0) else {
        ds_err!(fn "ds_manage_routes"; "no destination sets");
        return -1;
    };
    if mode == SetOp::DstUri && !cfg.force_dst && !m.dst_uri().is_empty() {
        ds_err!(fn "ds_manage_routes"; "destination already set [{}]", String::from_utf8_lossy(m.dst_uri()));
        return -1;
    }
    let Some(set) = snap.set(setid) else {
        ds_err!(fn "ds_manage_routes"; "destination set [{setid}] not found");
        return -1;
    };
    if set.dests.is_empty() {
        ds_err!(fn "ds_manage_routes"; "destination set [{setid}] is empty");
        return -1;
    }
    // the key from the message, the choice by the algorithm's family (ds::algs), then apply
    let valg = algs::effective(&set, alg);
    // the choice; None: no usable destination (-1, nothing written). The most used families
    // map their value here, as algs::choose does it, without building a Choice.
    let (h, rr) = match valg {
        // serial / parallel (algs 8, 12): the first usable destination
        select::ALG_SERIAL | select::ALG_PARALLEL => {
            let Some((i, d)) = select::probe_first(set.dests, cfg.use_default) else { return -1 };
            return apply(cfg, m, &set, setid, alg, alg, i, d, algs::serial::take() as u64, None, false, None, st, mode);
        }
        // round-robin (alg 4)
        select::ALG_RR => {
            let (h, v) = algs::rr::take(set.rec, false);
            (h, Some(v))
        }
        // the hash family (algs 0-3, 5-7) reads its key from the message
        _ if algs::family(valg) == Some(algs::Family::Hash) => match selkey::key(m, valg) {
            None => return -1,
            Some(algs::Key::Hash(h)) => (h, None),
            // alg 5 without a username: round-robin
            Some(algs::Key::None) => {
                let (h, v) = algs::rr::take(set.rec, false);
                (h, Some(v))
            }
            Some(key) => return select_other(cfg, m, &set, setid, alg, valg, Some(key), st, mode),
        },
        _ => return select_other(cfg, m, &set, setid, alg, valg, None, st, mode),
    };
    let Some((i, d)) = select::probe_dest(set.dests, h, cfg.use_default) else { return -1 };
    apply(cfg, m, &set, setid, alg, alg, i, d, h as u64, rr, false, None, st, mode)
}

/// [`select_in_inl`] for the other families (and unknown algorithms), with `key` when the
/// caller already read it.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn select_other(cfg: &crate::module::params::Config, m: Msg, set: &SetView<'_>, setid: i32, alg: i32, valg: i32, key: Option<algs::Key>, st: &mut SelState<'_>, mode: SetOp) -> i32 {
    let nr = set.dests.len();
    let failover = cfg.flags & 2 != 0 && !cfg.xavp_dst.is_empty();
    let limit = st.limit;
    let mut alg_rec = alg; // the algorithm the records are built for (10 may fall back to 0)
    let mut valg = valg;
    if algs::family(valg).is_none() {
        ds_warn!(fn "ds_manage_routes"; "algo {alg} not implemented - using first entry...");
    }
    if valg == select::ALG_CALLLOAD && (!m.is_invite() || cfg.xavp_dst.is_empty()) {
        if m.is_invite() {
            ds_err!(fn "ds_manage_routes"; "no dst xavp for load distribution - using first entry...");
        }
        alg_rec = 0;
        valg = select::ALG_SERIAL;
    }
    let fam = algs::family(valg);
    // only the hash families read a key from the message
    let key = match key {
        Some(k) => k,
        None if matches!(fam, Some(algs::Family::Hash | algs::Family::Consistent)) => {
            let Some(key) = selkey::key(m, valg) else { return -1 };
            key
        }
        None => algs::Key::None,
    };
    let opts = algs::Opts { use_default: cfg.use_default, now_us: if alg == select::ALG_OVERLOAD { now_us() } else { 0 }, peek: false, records: failover };
    let Some(c) = algs::choose(set, valg, key, &opts) else { return -1 };
    let algs::Choice { idx: i, hash, rr, ranked, order } = c;
    if valg == select::ALG_CALLLOAD && !load_add(m, set.dests.get(hash as usize), setid) {
        ds_err!(fn "ds_manage_routes"; "unable to update destination load - classic dispatching");
        alg_rec = 0;
    }
    // alg 13: the records follow the ranking (written before the destination is applied, as in C)
    if let (Some(r), true) = (&ranked, failover) {
        let rf = RecFlags { mode: cfg.xavp_dst_mode, dstidx: crate::ds::compat::ge(6, 1, 0) };
        for x in r {
            if st.cnt as u32 >= limit {
                break;
            }
            if x.idx < 0 || x.flags & (DS_INACTIVE | DS_DISABLED) != 0 || (cfg.use_default && x.idx as usize == nr - 1) {
                continue;
            }
            let Some(d) = set.dests.get(x.idx as usize) else { continue };
            if !add_record(&mut st.w, d, x.idx as usize, setid, alg, rf) {
                return -1;
            }
            st.cnt += 1;
        }
    }
    let Some(d) = set.dests.get(i) else { return -1 };
    apply(cfg, m, set, setid, alg, alg_rec, i, d, hash, rr, ranked.is_some(), order, st, mode)
}

/// Applies the choice `i` of a selection: `$du`/R-URI (or only the records), reply
/// tracking, the round-robin cursor, alg 12's branches, the failover records.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn apply(
    cfg: &crate::module::params::Config,
    m: Msg,
    set: &SetView<'_>,
    setid: i32,
    alg: i32,
    alg_rec: i32,
    i: usize,
    d: &DestRec,
    hash: u64,
    rr: Option<u32>,
    ranked: bool,
    order: Option<Vec<usize>>,
    st: &mut SelState<'_>,
    mode: SetOp,
) -> i32 {
    if mode != SetOp::Xavp {
        if !push_dst(m, d.uri.bytes(), d.sock, mode) {
            ds_err!(fn "ds_select_dst_limit"; "cannot set next hop address with: {}", String::from_utf8_lossy(d.uri.bytes()));
            return -1;
        }
        st.emode = true;
        crate::module::track::on_select(m, d, false);
    } else {
        // ds_select(): chosen, only recorded in the XAVP (no reply tracking)
        crate::module::track::count_selected(d);
    }
    if let Some(v) = rr {
        rr_commit(set.rec, v, i);
    }
    ds_dbg!("selected [{alg}-{setid}-{mode:?}/{i}] <{}>", String::from_utf8_lossy(d.uri.bytes()));
    if alg == select::ALG_PARALLEL {
        if !add_branches(m, set.dests, i, mode) {
            // one destination was already set: success anyhow (2), as in C
            ds_err!(fn "ds_manage_routes"; "failed to add additional branches");
            return 2;
        }
        return 1;
    }
    if cfg.flags & 2 == 0 || cfg.xavp_dst.is_empty() {
        return 1;
    }
    let nr = set.dests.len();
    let limit = st.limit;
    let rf = RecFlags { mode: cfg.xavp_dst_mode, dstidx: crate::ds::compat::ge(6, 1, 0) };
    if !ranked {
        // the selected destination is always recorded, even past the limit (as in C)
        let remaining = limit.saturating_sub(st.cnt.max(0) as u32).max(1);
        if order.is_some() {
            // consistent hashing: the usable destinations by score
            let c = algs::Choice { idx: i, hash, rr, ranked: None, order };
            for idx in algs::consistent::failover(set, &c, cfg.use_default, remaining) {
                let Some(d) = set.dests.get(idx) else { continue };
                if !add_record(&mut st.w, d, idx, setid, alg_rec, rf) {
                    ds_err!(fn "ds_select_dst_limit"; "failed to add destination in the xavp ({idx}/{setid})");
                    return -1;
                }
                st.cnt += 1;
            }
        } else {
            // select::failover_order's sequence, written as it goes (no list, no closure)
            let at_max = |j: usize| {
                alg_rec == select::ALG_CALLLOAD && set.dests.get(j).is_some_and(|d| d.maxload != 0 && d.load() >= d.maxload)
            };
            for idx in select::FailoverIter::new(set.dests, i, cfg.use_default, remaining, at_max) {
                let Some(d) = set.dests.get(idx) else { continue };
                if !add_record(&mut st.w, d, idx, setid, alg_rec, rf) {
                    ds_err!(fn "ds_select_dst_limit"; "failed to add destination in the xavp ({idx}/{setid})");
                    return -1;
                }
                st.cnt += 1;
            }
        }
    } else if cfg.use_default && i != nr - 1 && (st.cnt as u32) < limit {
        let Some(d) = set.dests.get(nr - 1) else { return 1 };
        if !add_record(&mut st.w, d, nr - 1, setid, alg_rec, rf) {
            ds_err!(fn "ds_select_dst_limit"; "failed to add default destination in the xavp");
            return -1;
        }
        st.cnt += 1;
    }
    1
}

/// `ds_next_*` (next = true) and `ds_set_*` (next = false).
pub fn update_dst(m: Msg, next: bool, mode: SetOp) -> i32 {
    let cfg = state::cfg();
    if next && (cfg.flags & 2 == 0 || cfg.xavp_dst.is_empty()) {
        ds_warn!(fn "ds_update_dst"; "failover support disabled");
        return -1;
    }
    if cfg.xavp_dst.is_empty() || xavp::first_record(&cfg.xavp_dst).is_none() {
        ds_dbg!("no xavp with previous destination record");
        return -1;
    }
    if next {
        xavp::remove_first(&cfg.xavp_dst);
    }
    loop {
        let Some(rec) = xavp::first_record(&cfg.xavp_dst) else {
            ds_dbg!("no xavp with next destination record");
            return -1;
        };
        let Some(uri) = rec.uri else {
            ds_warn!(fn "ds_update_dst"; "no xavp uri field in next destination record");
            return -1;
        };
        if !push_dst(m, &uri, rec.sock, mode) {
            ds_err!(fn "ds_update_dst"; "cannot set dst addr: {}", String::from_utf8_lossy(&uri));
            return -1;
        }
        if next {
            if let Some(g) = rec.grp {
                crate::module::track::on_next(m, g, &uri);
            }
        }
        let Some(dstid) = rec.dstid else { return 1 };
        if !next {
            return 1;
        }
        let Some(cid) = m.callid().map(|c| c.to_vec()) else { return -1 };
        let rc = match load::table() {
            Some(t) => t.replace(&cid, &dstid),
            None => -1,
        };
        match rc {
            0 => return 1,
            -2 => {
                ds_err!(fn "ds_update_dst"; "cannot update load with {}, skipping dst.", String::from_utf8_lossy(&dstid));
                xavp::remove_first(&cfg.xavp_dst);
            }
            _ => {
                ds_err!(fn "ds_update_dst"; "cannot update load distribution");
                return -1;
            }
        }
    }
}

/// Address(es), port and protocol to match for `ds_is_from_list`: the message's source, or
/// what a URI resolves to (every address of the answer; the caller keeps only the first
/// unless `ds_dns_match_all` is on).
fn match_addr(m: Msg, uri: Option<&[u8]>, out: &mut AddrList) -> Option<(u16, u8)> {
    out.clear();
    match uri.filter(|u| !u.is_empty()) {
        None => {
            let (ip, port, proto) = m.source();
            out.push(ip?);
            Some((port, proto))
        }
        Some(u) => {
            let p = match parse_uri(u) {
                Ok(p) if p.host.len() <= 254 => p,
                _ => {
                    ds_err!(fn "ds_is_addr_from_list"; "bad uri [{}]", String::from_utf8_lossy(u));
                    return None;
                }
            };
            let host = u.get(p.host.clone())?;
            // Kamailio 6.1.4 normalises the URI argument's transport like the list entries
            let mut p = p;
            if crate::ds::compat::ge(6, 1, 4) {
                p.transport = crate::ds::dest::default_transport(host, p.port, p.scheme, p.transport);
            }
            if state::cfg().dns_mode & 8 != 0 {
                // SIP resolution: the port and protocol found replace the URI's
                let Some((sp, spr)) = msg::sip_resolve_into(host, p.port, p.transport as u8, out) else {
                    ds_err!(fn "ds_is_addr_from_list"; "could not resolve {}", String::from_utf8_lossy(host));
                    return None;
                };
                return Some((if sp != 0 { sp } else { p.port }, if spr != 0 { spr } else { p.transport as u8 }));
            }
            if !msg::resolve_host_into(host, out) {
                ds_err!(fn "ds_is_addr_from_list"; "could not resolve {}", String::from_utf8_lossy(host));
                return None;
            }
            Some((p.port, p.transport as u8))
        }
    }
}

/// `ds_dns_mode` bit 2: whether destination `d` resolves (now) to `ip`; with
/// `ds_dns_match_all` every address of the answer is compared, else the first one.
fn live_addr_match(d: &DestRec, ip: IpAddr, match_all: bool) -> bool {
    if d.cfg_flags & crate::ds::snapshot::DS_NODNS != 0 {
        // no DNS for this destination: nothing to match (the C module's NOIPADDR mode)
        return d.ip_addr() == Some(ip);
    }
    let mut res = AddrList::new();
    if !msg::resolve_host_into(d.host.bytes(), &mut res) {
        ds_warn!(fn "ds_is_addr_from_list"; "could not resolve {} (skipping)", String::from_utf8_lossy(d.host.bytes()));
        return false;
    }
    if match_all {
        res.as_slice().contains(&ip)
    } else {
        res.first() == Some(ip)
    }
}

/// Offers the destinations of `s` that resolve now to `ip` (`ds_dns_mode` bit 2).
fn scan_live<'a>(s: SetView<'a>, ip: IpAddr, match_all: bool, fm: &mut FromMatch<'a>) -> Option<(i32, &'a DestRec)> {
    s.dests.iter().filter(|d| live_addr_match(d, ip, match_all)).find_map(|d| fm.offer(s.rec.id, d))
}

/// `ds_is_from_list`: 1 match, -1 none, -2/-3 PV write failures. Modes: see
/// `select::FromMatch` (bits 8 and 16 from Kamailio 5.8).
pub fn is_from_list(m: Msg, group: i32, uri: Option<&[u8]>, mode: i32) -> i32 {
    let cfg = state::cfg();
    let mut addrs = AddrList::new();
    let Some((port, proto)) = match_addr(m, uri, &mut addrs) else { return -1 };
    if !cfg.dns_match_all {
        // only the first address of a URI's answer (Kamailio master tries each with
        // ds_dns_match_all)
        addrs.truncate(1);
    }
    let key = FromKey { port, proto, bind: m.bind_address() };
    state::with_snap(|snap| {
        let Some(snap) = snap else { return -1 };
        let dns_always = cfg.dns_mode & 2 != 0;
        let mut fm = FromMatch::new(mode, key);
        let mut found = None;
        'addrs: for &ip in addrs.as_slice() {
            if dns_always {
                // addresses resolved at match time: no index, scan in iteration order
                let all = cfg.dns_match_all;
                found = if group == -1 {
                    snap.sets().find_map(|s| scan_live(s, ip, all, &mut fm))
                } else {
                    snap.set(group).and_then(|s| scan_live(s, ip, all, &mut fm))
                };
            } else {
                // address index: only the destinations with this address, in iteration order
                found = snap.by_ip(ip).filter(|(s, _)| group == -1 || s.rec.id == group).find_map(|(s, d)| fm.offer(s.rec.id, d));
            }
            if found.is_some() {
                break 'addrs;
            }
        }
        // mode 16: the best candidate when none matched completely
        let Some((sid, d)) = found.or_else(|| fm.finish()) else { return -1 };
        if let Some(pv) = state::pvs() {
            if group == -1 {
                if let Some(sp) = &pv.setid {
                    if !sp.set_int(m.0, sid) {
                        ds_err!(fn "ds_is_addr_from_list"; "setting PV failed");
                        return -2;
                    }
                }
            }
            let body = d.attrs_body.bytes();
            if let Some(ap) = &pv.attrs {
                if !body.is_empty() && !ap.set_str(m.0, body) {
                    ds_err!(fn "ds_is_addr_from_list"; "setting attrs pv failed");
                    return -3;
                }
            }
        }
        1
    })
}

/// Rebuilds the algorithm-15 table of `set` from the current state of its destinations
/// (Kamailio master's `dp_init_priority_weights`). The list load builds it; call this where
/// the C module calls `dp_init_priority_weights` besides that: after a state change of a
/// destination with `rweight` > 0 that changed its usability (next to
/// `health::rebuild_rweights`), and after a latency congestion update that changed rweights.
pub fn rebuild_pwlist(set: &SetView<'_>) {
    select::pw_rebuild(set, &mut kam_rand);
}

pub fn is_active(group: i32, uri: Option<&[u8]>) -> i32 {
    state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(group)) else { return -1 };
        let uri = uri.filter(|u| !u.is_empty());
        let hit = set.dests.iter().any(|d| match uri {
            None => d.usable(),
            Some(u) => d.uri.bytes() == u && d.usable(),
        });
        if hit { 1 } else { -1 }
    })
}

// ---- C wrappers ------------------------------------------------------------------------

type P = *mut c_char;

/// An int/PV parameter of the selection functions, with the C module's messages
/// (`w_ds_select_addr`): `name` for "no <name> value", `what` for "unable to get <what>".
#[inline]
fn sel_value(m: *mut sip_msg, p: P, name: &str, what: &str) -> Option<i32> {
    // constant parameters (the usual `ds_select_dst("1", "4")`): read directly
    if let Some(v) = crate::kam::param::const_int(p) {
        return Some(v);
    }
    sel_value_slow(m, p, name, what)
}

#[cold]
fn sel_value_slow(m: *mut sip_msg, p: P, name: &str, what: &str) -> Option<i32> {
    match get_is(m, p) {
        IsValue::Int(v) => Some(v),
        IsValue::Str(v) => {
            ds_err!(fn "w_ds_select_addr"; "unable to get {what} from [{}]", String::from_utf8_lossy(&v));
            None
        }
        IsValue::None => {
            ds_err!(fn "w_ds_select_addr"; "no {name} value");
            None
        }
    }
}

fn sel_params(m: *mut sip_msg, s: P, a: P, l: Option<P>) -> Option<(i32, i32, u32)> {
    let set = sel_value(m, s, "destination set", "destination set")?;
    let alg = sel_value(m, a, "algorithm", "algorithm")?;
    let limit = match l {
        // no limit given: a very large value, as in the C module
        None => u32::MAX,
        Some(p) => sel_value(m, p, "limit", "dst number limit")? as u32,
    };
    Some((set, alg, limit))
}

/// [`guard`] for the selection wrappers, inlined into them (the selection runs in the
/// wrapper's own frame; a panic goes the same way as with `guard`).
#[inline(always)]
fn sel_guard(what: &'static str, f: impl FnOnce() -> c_int) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => sel_panicked(what, e),
    }
}

/// A selection panicked: logged and turned into -1 by `guard` itself.
#[cold]
#[inline(never)]
fn sel_panicked(what: &'static str, e: Box<dyn std::any::Any + Send>) -> c_int {
    guard(what, -1, move || std::panic::resume_unwind(e))
}

macro_rules! sel_wrapper {
    ($name:ident, $name_l:ident, $mode:expr) => {
        unsafe extern "C" fn $name(m: *mut sip_msg, s: P, a: P) -> c_int {
            sel_guard(stringify!($name), || match sel_params(m, s, a, None) {
                Some((set, alg, lim)) if !m.is_null() => select_dst(Msg(m), set, alg, lim, $mode),
                _ => -1,
            })
        }
        unsafe extern "C" fn $name_l(m: *mut sip_msg, s: P, a: P, l: P) -> c_int {
            sel_guard(stringify!($name_l), || match sel_params(m, s, a, Some(l)) {
                Some((set, alg, lim)) if !m.is_null() => select_dst(Msg(m), set, alg, lim, $mode),
                _ => -1,
            })
        }
    };
}
sel_wrapper!(w_ds_select_dst, w_ds_select_dst_limit, SetOp::DstUri);
sel_wrapper!(w_ds_select_domain, w_ds_select_domain_limit, SetOp::Ruri);
sel_wrapper!(w_ds_select, w_ds_select_limit, SetOp::Xavp);

unsafe extern "C" fn w_ds_select_routes(m: *mut sip_msg, r: P, md: P) -> c_int {
    guard("ds_select_routes", -1, || {
        let Some(r) = get_str(m, r) else {
            ds_err!(fn "w_ds_select_routes_limit"; "failed to get routing rules parameter");
            return -1;
        };
        let Some(md) = get_str(m, md) else {
            ds_err!(fn "w_ds_select_routes_limit"; "failed to get update mode parameter");
            return -1;
        };
        if m.is_null() { -1 } else { select_routes(Msg(m), &r, &md, 0) }
    })
}
unsafe extern "C" fn w_ds_select_routes_limit(m: *mut sip_msg, r: P, md: P, l: P) -> c_int {
    guard("ds_select_routes", -1, || {
        let Some(r) = get_str(m, r) else {
            ds_err!(fn "w_ds_select_routes_limit"; "failed to get routing rules parameter");
            return -1;
        };
        let Some(md) = get_str(m, md) else {
            ds_err!(fn "w_ds_select_routes_limit"; "failed to get update mode parameter");
            return -1;
        };
        let Some(l) = get_int(m, l) else {
            ds_err!(fn "w_ds_select_routes_limit"; "failed to get limit parameter");
            return -1;
        };
        if m.is_null() { -1 } else { select_routes(Msg(m), &r, &md, l as u32) }
    })
}

unsafe extern "C" fn w_ds_next_dst(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_next_dst", -1, || if m.is_null() { -1 } else { update_dst(Msg(m), true, SetOp::DstUri) })
}
unsafe extern "C" fn w_ds_next_domain(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_next_domain", -1, || if m.is_null() { -1 } else { update_dst(Msg(m), true, SetOp::Ruri) })
}
unsafe extern "C" fn w_ds_set_dst(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_set_dst", -1, || if m.is_null() { -1 } else { update_dst(Msg(m), false, SetOp::DstUri) })
}
unsafe extern "C" fn w_ds_set_domain(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_set_domain", -1, || if m.is_null() { -1 } else { update_dst(Msg(m), false, SetOp::Ruri) })
}

unsafe extern "C" fn w_ds_is_from_list0(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_is_from_list", -1, || if m.is_null() { -1 } else { is_from_list(Msg(m), -1, None, 2) })
}
unsafe extern "C" fn w_ds_is_from_list1(m: *mut sip_msg, g: P, _b: P) -> c_int {
    guard("ds_is_from_list", -1, || {
        let Some(g) = get_int(m, g) else {
            ds_err!(fn "w_ds_is_from_list1"; "cannot get set id value");
            return -1;
        };
        if m.is_null() { -1 } else { is_from_list(Msg(m), g, None, 2) }
    })
}
unsafe extern "C" fn w_ds_is_from_list2(m: *mut sip_msg, g: P, md: P) -> c_int {
    guard("ds_is_from_list", -1, || {
        let Some(g) = get_int(m, g) else {
            ds_err!(fn "w_ds_is_from_list2"; "cannot get set id value");
            return -1;
        };
        let Some(md) = get_int(m, md) else {
            ds_err!(fn "w_ds_is_from_list2"; "cannot get mode value");
            return -1;
        };
        if m.is_null() { -1 } else { is_from_list(Msg(m), g, None, md) }
    })
}
unsafe extern "C" fn w_ds_is_from_list3(m: *mut sip_msg, g: P, md: P, u: P) -> c_int {
    guard("ds_is_from_list", -1, || {
        let Some(g) = get_int(m, g) else {
            ds_err!(fn "w_ds_is_from_list3"; "cannot get set id value");
            return -1;
        };
        let Some(md) = get_int(m, md) else {
            ds_err!(fn "w_ds_is_from_list3"; "cannot get mode value");
            return -1;
        };
        let Some(u) = get_str(m, u) else {
            ds_err!(fn "w_ds_is_from_list3"; "cannot get uri value");
            return -1;
        };
        if m.is_null() { -1 } else { is_from_list(Msg(m), g, Some(&u), md) }
    })
}

unsafe extern "C" fn w_ds_list_exist(m: *mut sip_msg, g: P, _b: P) -> c_int {
    guard("ds_list_exists", -1, || {
        let Some(g) = get_int(m, g) else {
            ds_err!(fn "w_ds_list_exist"; "cannot get set id param value");
            return -2;
        };
        state::with_snap(|s| if s.and_then(|s| s.set(g)).is_some() { 1 } else { -1 })
    })
}

unsafe extern "C" fn w_ds_is_active(m: *mut sip_msg, g: P, _b: P) -> c_int {
    guard("ds_is_active", -1, || {
        let Some(g) = get_int(m, g) else {
            ds_err!(fn "w_ds_is_active"; "cannot get set id value");
            return -1;
        };
        is_active(g, None)
    })
}
unsafe extern "C" fn w_ds_is_active_uri(m: *mut sip_msg, g: P, u: P) -> c_int {
    guard("ds_is_active", -1, || {
        let Some(g) = get_int(m, g) else {
            ds_err!(fn "w_ds_is_active_uri"; "cannot get set id value");
            return -1;
        };
        let Some(u) = get_str(m, u) else {
            ds_err!(fn "w_ds_is_active_uri"; "cannot get uri value");
            return -1;
        };
        is_active(g, Some(&u))
    })
}

unsafe extern "C" fn w_ds_mark_dst0(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_mark_dst", -1, || {
        if m.is_null() {
            return -1;
        }
        let st = DS_INACTIVE | if state::cfg().probing_mode == 1 { DS_PROBING } else { 0 };
        health::mark_dst(Msg(m), st)
    })
}
unsafe extern "C" fn w_ds_mark_dst1(m: *mut sip_msg, s: P, _b: P) -> c_int {
    guard("ds_mark_dst", -1, || {
        if m.is_null() {
            return -1;
        }
        let Some(v) = get_str(m, s) else {
            ds_err!("cannot get state value");
            return -1;
        };
        let st = if v.is_empty() {
            DS_INACTIVE | if state::cfg().probing_mode == 1 { DS_PROBING } else { 0 }
        } else {
            match parse_mark_state(&v) {
                Some(st) => st,
                None => {
                    ds_warn!(fn "ki_ds_mark_dst_state"; "Failed to parse state flags: {}", String::from_utf8_lossy(&v));
                    return -1;
                }
            }
        };
        health::mark_dst(Msg(m), st)
    })
}

unsafe extern "C" fn w_ds_mark_addr(m: *mut sip_msg, st: P, g: P, u: P) -> c_int {
    guard("ds_mark_addr", -1, || {
        let (Some(stv), Some(g), Some(u)) = (get_str(m, st), get_int(m, g), get_str(m, u)) else {
            ds_err!("cannot get state, set or uri value");
            return -1;
        };
        let Some(x) = parse_mark_state(&stv) else {
            ds_warn!("Failed to parse state flags: {}", String::from_utf8_lossy(&stv));
            return -1;
        };
        let msg = if m.is_null() { None } else { Some(Msg(m)) };
        let r = health::msg_rctx(msg);
        if health::update_state(msg, g, &u, x, r) == 0 { 1 } else { -1 }
    })
}

/// ds_mark_addr(state, set, uri): string/PV, int/PV, string/PV.
unsafe extern "C" fn fixup_mark_addr(param: *mut *mut c_void, no: c_int) -> c_int {
    // SAFETY: forwarding the core's arguments to the core's own fixups.
    unsafe {
        match no {
            1 | 3 => sys::fixup_spve_null(param, 1),
            2 => sys::fixup_igp_null(param, 1),
            _ => 0,
        }
    }
}

/// ds_mark_dst(state): the startup failover check plus a string/PV parameter (as in 6.1).
unsafe extern "C" fn fixup_mark_dst(param: *mut *mut c_void, no: c_int) -> c_int {
    // SAFETY: forwarding the core's arguments to the core's own fixup.
    unsafe {
        ds_warn_fixup(param, no);
        sys::fixup_spve_null(param, no)
    }
}

unsafe extern "C" fn w_ds_load_update(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_load_update", -1, || if m.is_null() { -1 } else { load_update(Msg(m)) })
}
unsafe extern "C" fn w_ds_load_unset(m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_load_unset", -1, || if m.is_null() { -1 } else { load_unset(Msg(m)) })
}

unsafe extern "C" fn w_ds_reload(_m: *mut sip_msg, _a: P, _b: P) -> c_int {
    guard("ds_reload", -1, || match state::load_and_install(true) {
        Ok(_) => 1,
        Err(state::ReloadError::NotReady) => {
            ds_err!(fn "ds_reload"; "not ready for reload");
            -1
        }
        Err(state::ReloadError::TooSoon) => {
            ds_err!(fn "ds_reload"; "{}", crate::module::rpc::ongoing_reload());
            -1
        }
        // the cause was logged where it happened; the running list stays
        Err(_) => {
            let from = if state::cfg().db_url.is_empty() { "list" } else { "db" };
            ds_err!(fn "ds_reload"; "Error reloading from {from}");
            -1
        }
    })
}

/// Startup check for the failover functions (the C module's `ds_warn_fixup`).
unsafe extern "C" fn ds_warn_fixup(_param: *mut *mut c_void, _no: c_int) -> c_int {
    guard("fixup", 0, || {
        // fixups run after mod_init: the configuration is already read
        let p = state::cfg();
        if p.xavp_dst.is_empty() || p.xavp_ctx.is_empty() {
            ds_err!(fn "ds_warn_fixup"; "failover functions used, but required XAVP parameters are NULL -- feature disabled");
        }
        0
    })
}

const REQ: u32 = sys::REQUEST_ROUTE as u32;
const FAIL: u32 = sys::FAILURE_ROUTE as u32;
const BRANCH: u32 = sys::BRANCH_ROUTE as u32;
const ONREPLY: u32 = sys::ONREPLY_ROUTE as u32;
const ANY: u32 = sys::ANY_ROUTE as u32;

type F3 = unsafe extern "C" fn(*mut sip_msg, P, P) -> c_int;
type F4 = unsafe extern "C" fn(*mut sip_msg, P, P, P) -> c_int;
const fn f4(f: F4) -> F3 {
    // SAFETY: the core calls a function with `param_no` == 3 with three parameters
    // (cmd_function3), as C modules do with the same cast.
    unsafe { std::mem::transmute::<F4, F3>(f) }
}

type F6 = unsafe extern "C" fn(*mut sip_msg, P, P, P, P, P) -> c_int;
const fn f6(f: F6) -> F3 {
    // SAFETY: the core calls a function with `param_no` == 5 with five parameters
    // (cmd_function5), as C modules do with the same cast.
    unsafe { std::mem::transmute::<F6, F3>(f) }
}

macro_rules! cmd {
    ($name:literal, $f:expr, $n:expr, $fix:expr, $free:expr, $flags:expr) => {
        cmd_export_t { name: $name.as_ptr() as *mut c_char, function: Some($f), param_no: $n, fixup: $fix, free_fixup: $free, flags: $flags }
    };
}

pub static mut CMDS: [cmd_export_t; 34] = [
    cmd!(c"ds_select", w_ds_select, 2, Some(sys::fixup_igp_igp), None, ANY),
    cmd!(c"ds_select", f4(w_ds_select_limit), 3, Some(sys::fixup_igp_all), None, REQ | FAIL),
    cmd!(c"ds_select_dst", w_ds_select_dst, 2, Some(sys::fixup_igp_igp), None, REQ | FAIL),
    cmd!(c"ds_select_dst", f4(w_ds_select_dst_limit), 3, Some(sys::fixup_igp_all), None, REQ | FAIL),
    cmd!(c"ds_select_domain", w_ds_select_domain, 2, Some(sys::fixup_igp_igp), None, REQ | FAIL),
    cmd!(c"ds_select_domain", f4(w_ds_select_domain_limit), 3, Some(sys::fixup_igp_all), None, REQ | FAIL),
    cmd!(c"ds_select_routes", w_ds_select_routes, 2, Some(sys::fixup_spve_spve), None, REQ | FAIL),
    cmd!(c"ds_select_routes", f4(w_ds_select_routes_limit), 3, Some(sys::fixup_spve_spve_igp), None, REQ | FAIL),
    cmd!(c"ds_next_dst", w_ds_next_dst, 0, Some(ds_warn_fixup), None, REQ | FAIL),
    cmd!(c"ds_next_domain", w_ds_next_domain, 0, Some(ds_warn_fixup), None, REQ | FAIL),
    cmd!(c"ds_set_dst", w_ds_set_dst, 0, Some(ds_warn_fixup), None, REQ | FAIL),
    cmd!(c"ds_set_domain", w_ds_set_domain, 0, Some(ds_warn_fixup), None, REQ | FAIL),
    cmd!(c"ds_mark_dst", w_ds_mark_dst0, 0, Some(ds_warn_fixup), None, REQ | FAIL | ONREPLY),
    cmd!(c"ds_mark_dst", w_ds_mark_dst1, 1, Some(fixup_mark_dst), Some(sys::fixup_free_spve_null), REQ | FAIL | ONREPLY),
    cmd!(c"ds_mark_addr", f4(w_ds_mark_addr), 3, Some(fixup_mark_addr), None, ANY),
    cmd!(c"ds_oc_set_attrs", f6(w_ds_oc_set_attrs), 5, Some(fixup_oc_set_attrs), None, ANY),
    cmd!(c"ds_dsg_fetch", w_ds_dsg_fetch, 1, Some(sys::fixup_igp_null), Some(sys::fixup_free_igp_null), ANY),
    cmd!(c"ds_dsg_fetch_uri", w_ds_dsg_fetch_uri, 2, Some(sys::fixup_igp_spve), Some(sys::fixup_free_igp_spve), ANY),
    cmd!(c"bind_dispatcher", bind_dispatcher, 0, None, None, 0),
    cmd!(c"ds_is_from_list", w_ds_is_from_list0, 0, None, None, REQ | FAIL | ONREPLY | BRANCH),
    cmd!(c"ds_is_from_list", w_ds_is_from_list1, 1, Some(sys::fixup_igp_null), None, ANY),
    cmd!(c"ds_is_from_list", w_ds_is_from_list2, 2, Some(fixup_is_from_list), None, ANY),
    cmd!(c"ds_is_from_list", f4(w_ds_is_from_list3), 3, Some(fixup_is_from_list), None, ANY),
    cmd!(c"ds_list_exist", w_ds_list_exist, 1, Some(sys::fixup_igp_null), None, ANY),
    cmd!(c"ds_list_exists", w_ds_list_exist, 1, Some(sys::fixup_igp_null), None, ANY),
    cmd!(c"ds_is_active", w_ds_is_active, 1, Some(sys::fixup_igp_null), Some(sys::fixup_free_igp_null), ANY),
    cmd!(c"ds_is_active", w_ds_is_active_uri, 2, Some(sys::fixup_igp_spve), Some(sys::fixup_free_igp_spve), ANY),
    cmd!(c"ds_reload", w_ds_reload, 0, None, None, ANY),
    cmd!(c"ds_load_unset", w_ds_load_unset, 0, None, None, ANY),
    cmd!(c"ds_load_update", w_ds_load_update, 0, None, None, ANY),
    cmd!(c"ds_metrics_to_pv", crate::module::rpc_stats::w_ds_metrics_to_pv, 1, None, None, ANY),
    cmd_export_t { name: null_mut(), function: None, param_no: 0, fixup: None, free_fixup: None, flags: 0 },
    cmd_export_t { name: null_mut(), function: None, param_no: 0, fixup: None, free_fixup: None, flags: 0 },
    cmd_export_t { name: null_mut(), function: None, param_no: 0, fixup: None, free_fixup: None, flags: 0 },
];

/// Params 1 and 2 are int/PV, param 3 a string with PVs (the C module's fixup).
unsafe extern "C" fn fixup_is_from_list(param: *mut *mut c_void, no: c_int) -> c_int {
    // SAFETY: forwarding the core's own arguments to the core's own fixups.
    unsafe {
        match no {
            1 | 2 => sys::fixup_igp_null(param, 1),
            3 => sys::fixup_spve_null(param, 1),
            _ => 0,
        }
    }
}
