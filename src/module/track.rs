//! Per-destination counters and passive failure detection (issues 12 and 11 part 4): which
//! destination a transaction branch was routed to, and how it ended.
//!
//! When `ds_select_*` / `ds_next_*` put a destination on the request, one TM callback is
//! registered for the branch the request will go out on (on the message's pending list in
//! the request route, TM moves it to the transaction `t_relay` creates; on the transaction
//! in a failure route). Its parameter is the destination's internal id (IUID, stable across
//! reloads) and the branch index, plus a "done" bit set (once, by compare-and-swap on the
//! parameter TM stores) when the branch's final outcome is counted:
//! - `TMCB_RESPONSE_IN`: a final reply received on that branch (the process that receives
//!   it), replies to a local CANCEL ignored;
//! - `TMCB_ON_FAILURE`: all branches failed: the branch's last code (TM's local 408 too);
//! - `TMCB_DESTROY`: whatever is left (a branch ended without us seeing it);
//! - `TMCB_REQUEST_SENT`: the branch's request was sent, the branch counts in `INFLIGHT` (so
//!   a request selected but answered statelessly, or whose send failed, never does). Not
//!   `TMCB_REQUEST_FWDED`: with such a callback on a transaction TM copies the R-URI and the
//!   destination URI of every new branch into pkg memory (two allocations and frees per
//!   branch, for callbacks that may change them), which the C module's requests never cost;
//!   a `TMCB_REQUEST_SENT` callback costs TM no allocation;
//! - the release function: a forwarded branch dropped without an outcome ends its `INFLIGHT`.
//!
//! Counting is a few relaxed atomics on the destination record; no lock.
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use once_cell::sync::OnceCell;

use crate::ds::counters::{passive_fail, passive_ok, FailCodes};
use crate::ds::snapshot::{CarryIndex, DestRec, SetView, Snap, DS_INACTIVE, DS_PROBING};
use crate::kam::msg::Msg;
use crate::kam::tm;
use crate::module::{guard, health, state};
use crate::sys;

/// modparam `ds_passive_threshold`: consecutive failed transactions that mark a destination
/// inactive (0 = off).
pub static mut ds_passive_threshold: c_int = 0;
/// modparam `ds_passive_reply_codes`: failing final replies (`class=5;code=408` by default).
pub static mut ds_passive_reply_codes: sys::str_ = sys::str_ { s: std::ptr::null_mut::<c_char>(), len: 0 };
/// modparam `ds_counters`: 1 (default) counts selections and tracks replies; 0 off.
pub static mut ds_counters: c_int = 1;

struct Conf {
    on: bool,
    threshold: u32,
    fail: FailCodes,
}

static CONF: OnceCell<Conf> = OnceCell::new();

/// Reads the modparams (mod_init). Err: bad `ds_passive_reply_codes`.
pub fn init() -> Result<(), String> {
    // SAFETY: mod_init, single-threaded; the core wrote the params before.
    let (on, thr, codes) = unsafe {
        (ds_counters != 0, ds_passive_threshold, crate::kam::param::unsafe_bytes(ds_passive_reply_codes).to_vec())
    };
    let fail = FailCodes::parse(&codes).map_err(|e| format!("ds_passive_reply_codes: {e}"))?;
    if thr < 0 {
        return Err(format!("ds_passive_threshold must be >= 0 (got {thr})"));
    }
    if thr > 0 && !on {
        return Err("ds_passive_threshold needs ds_counters 1".into());
    }
    // reply tracking needs tm (loaded before this module); without it only the selections
    // are counted
    if on && !tm::bind() {
        crate::ds_info!("tm module not loaded: replies to routed requests are not counted");
    }
    let _ = CONF.set(Conf { on, threshold: thr as u32, fail });
    Ok(())
}

fn conf() -> Option<&'static Conf> {
    CONF.get().filter(|c| c.on)
}

const DONE: usize = 1 << 62;
/// Set when TM sent the branch's request (`TMCB_REQUEST_SENT`): the branch counts in `INFLIGHT`.
const SENT: usize = 1 << 60;
const MARK: usize = 1 << 61;
const IUID_MASK: usize = (1 << 48) - 1;

fn pack(iuid: u64, branch: i32) -> Option<usize> {
    if iuid == 0 || iuid as usize > IUID_MASK || !(0..256).contains(&branch) {
        return None;
    }
    Some(MARK | ((branch as usize) << 48) | iuid as usize)
}
fn p_iuid(p: usize) -> u64 {
    (p & IUID_MASK) as u64
}
fn p_branch(p: usize) -> i32 {
    ((p >> 48) & 0xff) as i32
}

/// (message id, branch) and transaction of the last registration of this process: a request
/// selected again for the same branch (a cfg loop) is tracked once, on its first destination.
/// The message id alone is not unique in a failure route (the request's id comes from the
/// process that received it), hence the transaction too. Process-local statics (each
/// Kamailio process has its own copy after the fork, and runs its routes on one thread)
/// rather than a thread-local, whose access costs a `__tls_get_addr` call in a dlopened
/// library; relaxed atomics are plain loads and stores.
static LAST_ID_BRANCH: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_T: AtomicUsize = AtomicUsize::new(0);

/// A destination was put on the request by `ds_select_*` (`failover` false) or `ds_next_*`.
#[inline(always)]
pub fn on_select(m: Msg, d: &DestRec, failover: bool) {
    let Some(_c) = conf() else { return };
    if failover {
        d.ctr.failover.fetch_add(1, Ordering::Relaxed);
    } else {
        d.ctr.selected.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: a cfg function's message is valid for the whole call.
    if m.is_null() || unsafe { (*m.0).first_line.type_ } != 1 {
        return;
    }
    // the branch the request will go out on: the next one of the transaction (failure
    // route, or after t_newtran), else the first
    let t = tm::current_t();
    let branch = match t {
        // SAFETY: the current transaction of this process is alive during the route.
        Some(t) => unsafe { tm::nr_of_outgoings(t) },
        None => 0,
    };
    let tkey = t.map(|t| t as usize).unwrap_or(0);
    // SAFETY: the message is the one of this route.
    let id = unsafe { (*m.0).id };
    let idb = ((id as u64) << 32) | branch as u32 as u64;
    if LAST_ID_BRANCH.load(Ordering::Relaxed) == idb && LAST_T.load(Ordering::Relaxed) == tkey {
        return;
    }
    register(m, d.iuid, branch, idb, tkey);
}

/// Registers the branch's callback (once per message and branch, see `on_select`).
#[cold]
fn register(m: Msg, iuid: u64, branch: i32, idb: u64, tkey: usize) {
    let Some(p) = pack(iuid, branch) else { return };
    let types = tm::CB_REQUEST_SENT | tm::CB_RESPONSE_IN | tm::CB_ON_FAILURE | tm::CB_DESTROY;
    // SAFETY: m is the message of the running route.
    if unsafe { tm::register_cb(m.0, types, on_tm, p, Some(on_release)) } {
        LAST_ID_BRANCH.store(idb, Ordering::Relaxed);
        LAST_T.store(tkey, Ordering::Relaxed);
    }
}

/// `ds_select()` (XAVP mode): the destination is chosen but not put on the request.
pub fn count_selected(d: &DestRec) {
    if conf().is_some() {
        d.ctr.selected.fetch_add(1, Ordering::Relaxed);
    }
}

/// `ds_next_*`: the destination `(setid, uri)` of the current list.
pub fn on_next(m: Msg, setid: i32, uri: &[u8]) {
    if conf().is_none() {
        return;
    }
    state::with_snap(|snap| {
        if let Some(d) = snap.and_then(|s| s.set(setid)).and_then(|s| s.dests.iter().find(|d| d.uri.bytes().eq_ignore_ascii_case(uri))) {
            on_select(m, d, true);
        }
    });
}

fn with_dest<R>(iuid: u64, f: impl FnOnce(i32, &DestRec) -> R) -> Option<R> {
    state::with_snap(|snap| snap.and_then(|s| s.dest_by_iuid(iuid)).map(|(setid, d)| f(setid, d)))
}

/// Counts the final outcome of a branch once (the caller that sets the done bit).
fn finish(cell: &AtomicUsize, code: i32, local: bool) {
    // set the done bit once; the in-flight bit may be set meanwhile by another process
    let p = match cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| if v & DONE != 0 || v & MARK == 0 { None } else { Some(v | DONE) }) {
        Ok(v) => v,
        Err(_) => return,
    };
    let Some(c) = CONF.get() else { return };
    let mark = with_dest(p_iuid(p), |setid, d| {
        if p & SENT != 0 {
            d.ctr.inflight.fetch_sub(1, Ordering::Relaxed);
        }
        if code < 200 {
            return None;
        }
        d.ctr.count_final(code, local);
        if c.threshold == 0 {
            return None;
        }
        if c.fail.fails(code) {
            if passive_fail(&d.ctr, c.threshold) && d.usable() {
                return Some((setid, d.uri.bytes().to_vec()));
            }
        } else if !local {
            passive_ok(&d.ctr);
        }
        None
    })
    .flatten();
    if let Some((setid, uri)) = mark {
        // the same path as ds_mark_dst("ip"): state machine, dst-down event, replication hooks
        let st = DS_INACTIVE | if state::cfg().ping_interval > 0 { DS_PROBING } else { 0 };
        crate::ds_info!(fn "ds_passive"; "destination {} in set {setid} failed {} transactions in a row (last {code}) - marking inactive", String::from_utf8_lossy(&uri), c.threshold);
        let rctx = health::Rctx { code, flags: if local { 0 } else { 1 }, ..Default::default() };
        let _ = health::update_state(None, setid, &uri, st, rctx);
    }
}

unsafe extern "C" fn on_tm(t: *mut sys::cell, ty: c_int, ps: *mut sys::tmcb_params) {
    guard("dispatcher reply tracking", (), || {
        // SAFETY: arguments of a TM callback.
        let Some((code, real, cancel, pp)) = (unsafe { tm::cb_args(ps) }) else { return };
        // SAFETY: `pp` points at the callback's parameter slot in TM's shm record, pointer
        // sized and aligned; it is only changed through this atomic view.
        let cell = unsafe { AtomicUsize::from_ptr(pp as *mut usize) };
        let p = cell.load(Ordering::Acquire);
        if p & DONE != 0 || p & MARK == 0 || t.is_null() {
            return;
        }
        let b = p_branch(p);
        if ty & tm::CB_REQUEST_SENT != 0 {
            // the branch's request went out: in flight until its final outcome (a reply that
            // another process counted first set DONE: then it never is). TM calls this for
            // every send of every branch, retransmissions included: once, for our branch.
            // SAFETY: arguments of this TMCB_REQUEST_SENT callback.
            if p & SENT == 0
                && unsafe { tm::sent_branch(ps) } == Some(b)
                && cell.compare_exchange(p, p | SENT, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                with_dest(p_iuid(p), |_, d| d.ctr.inflight.fetch_add(1, Ordering::Relaxed));
            }
        } else if ty & tm::CB_RESPONSE_IN != 0 {
            if code >= 200 && real && !cancel && tm::current_branch() == b {
                finish(cell, code, false);
            }
        } else if ty & tm::CB_ON_FAILURE != 0 {
            // SAFETY: t is the callback's live transaction.
            let lr = unsafe { tm::branch_last_received(t, b) };
            if lr >= 200 {
                finish(cell, lr, true);
            }
        } else if ty & tm::CB_DESTROY != 0 {
            // SAFETY: as above.
            let lr = unsafe { tm::branch_last_received(t, b) };
            finish(cell, lr, true);
        }
    })
}

unsafe extern "C" fn on_release(param: *mut c_void) {
    guard("dispatcher reply tracking", (), || {
        let p = param as usize;
        if p & MARK != 0 && p & DONE == 0 && p & SENT != 0 {
            with_dest(p_iuid(p), |_, d| d.ctr.inflight.fetch_sub(1, Ordering::Relaxed));
        }
    })
}

/// A keepalive was sent to `d` / its result (`alive`).
pub fn ping_sent(d: &DestRec) {
    d.ctr.pings_sent.fetch_add(1, Ordering::Relaxed);
}

/// The result of a keepalive to `(setid, uri)`.
pub fn ping_result(setid: i32, uri: &[u8], alive: bool) {
    state::with_snap(|snap| {
        if let Some(d) = snap.and_then(|s| s.set(setid)).and_then(|s| s.dests.iter().find(|d| d.uri.bytes().eq_ignore_ascii_case(uri))) {
            if alive {
                d.ctr.pings_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                d.ctr.pings_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Reload: the counters of destinations that stay continue in the new list (writer side,
/// before the new list is published); what is counted on the old records afterwards is
/// forwarded when the old list is freed (`forward_counters`).
pub fn carry_counters(old: &CarryIndex<'_>, new: Snap<'_>) {
    new.sets().for_each(|set| carry_set_counters(old, &set, false));
}

/// Undoes `carry_counters` for a list that is not published.
pub fn uncarry_counters(old: &CarryIndex<'_>, new: Snap<'_>) {
    new.sets().for_each(|set| carry_set_counters(old, &set, true));
}

/// `carry_counters` (or with `undo` its undoing) for one set of the new list.
pub fn carry_set_counters(old: &CarryIndex<'_>, set: &SetView<'_>, undo: bool) {
    for d in set.dests {
        if let Some(o) = old.find(set.rec.id, d.uri.bytes()) {
            if undo {
                o.ctr.uncarry(&d.ctr);
            } else {
                o.ctr.carry_into(&d.ctr);
            }
        }
    }
}

/// A list is freed: forward what its records counted after their counters were copied.
///
/// # Safety
/// As `DestCounters::forward`: lists are freed oldest first, nobody reads `old` any more.
pub unsafe fn forward_counters(old: Snap<'_>) {
    for set in old.sets() {
        for d in set.dests {
            // SAFETY: guaranteed by the caller.
            unsafe { d.ctr.forward() };
        }
    }
}
