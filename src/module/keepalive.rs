//! OPTIONS keepalives (spec §7.3) sent through TM from a core timer, paced across the
//! interval, and their results fed into the state machine and the latency statistics.
use std::cell::RefCell;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering;

use once_cell::sync::OnceCell;

use crate::ds::compat;
use crate::ds::health::{iuid_from_from_hdr, ping_eligible, ping_fromtag};
use crate::ds::latency::{congestion_rweights, ping_sample, PingSample};
use crate::ds::pacing::Pacer;
use crate::ds::snapshot::{DestRec, DS_DISABLED, DS_PROBING, DS_TRYING};
use crate::kam::mem::ShmLock;
use crate::kam::tm::{self, SockError};
use crate::module::health::{self, Origin, Rctx, Target};
use crate::module::params::Config;
use crate::module::{guard, state};
use crate::sys;
use crate::{ds_dbg, ds_err, ds_info, ds_warn};

/// Pacing tick of the main-timer mode (the core timer runs at 16 Hz: one tick is 62.5 ms).
const TICK_MS: u64 = 62;
/// Pacing tick of the dedicated keepalive process (`ds_timer_mode` 2), in microseconds
/// (fork_basic_utimer sleeps `sleep_us(interval)` despite its documentation saying ms).
const PROC_TICK_US: i32 = 10_000;
/// Marks the callback parameter as ours (so set id 0 is not a NULL parameter).
const CBP_TAG: usize = 1 << 32;

static LAT_LOCK: OnceCell<ShmLock> = OnceCell::new();

thread_local! {
    // the timer callbacks always run in the same process: pacing state is process-local
    static PACER: RefCell<Option<Pacer>> = const { RefCell::new(None) };
}

/// The timer period of `ds_timer_mode`, in microseconds.
fn tick_us(timer_mode: i32) -> u64 {
    match timer_mode {
        1 => 1_000_000,
        2 => PROC_TICK_US as u64,
        // the core timer runs at 16 Hz
        _ => 62_500,
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// mod_init part: checks the keepalive modparams of Kamailio 6.1 (`ds_ping_socket` must be
/// a local socket; before 6.1 they are ignored with a warning), then binds TM and starts the
/// timer when `ds_ping_interval > 0`.
pub fn init() -> Result<(), String> {
    let cfg = state::cfg();
    let _ = LAT_LOCK.set(ShmLock::new().ok_or("cannot allocate the latency lock")?);
    check_params(cfg)?;
    if cfg.ping_interval <= 0 {
        return Ok(());
    }
    if !tm::bind() {
        return Err("could not load the TM-functions - disable DS ping (ds_ping_interval > 0 needs the tm module, loaded before dispatcher)".into());
    }
    // SAFETY: mod_init in the main process; the core keeps the function pointers.
    let ok = unsafe {
        match cfg.timer_mode {
            1 => sys::sr_wtimer_add(Some(tick_any), std::ptr::null_mut(), 1) >= 0,
            // own process, forked in child_init(PROC_MAIN)
            2 => sys::register_basic_timers(1) >= 0,
            _ => sys::rds_register_timer_ms(tick_any, std::ptr::null_mut(), TICK_MS as u32) >= 0,
        }
    };
    if !ok {
        return Err("cannot register the keepalive timer".into());
    }
    Ok(())
}

/// `ds_ping_fr_timeout`/`ds_ping_fr_timer`, `ds_ping_socket` and `event_callback_mode`
/// exist from Kamailio 6.1 (the socket is checked as the C module's mod_init does); a
/// module built for an older Kamailio accepts them but ignores them, with a warning.
fn check_params(cfg: &Config) -> Result<(), String> {
    let v61 = compat::ge(6, 1, 0);
    if !v61 {
        let ignored = |name: &str| ds_warn!(fn "mod_init"; "{name} is set but ignored: it needs Kamailio 6.1 (this module is built for an older release)");
        if cfg.ping_fr_timeout > 0 {
            ignored("ds_ping_fr_timeout (ds_ping_fr_timer)");
        }
        if !cfg.ping_socket.is_empty() {
            ignored("ds_ping_socket");
        }
        if cfg.event_callback_mode != 0 {
            ignored("event_callback_mode");
        }
        return Ok(());
    }
    if !cfg.ping_socket.is_empty() {
        let show = String::from_utf8_lossy(&cfg.ping_socket).into_owned();
        match tm::check_socket(&cfg.ping_socket) {
            Ok(()) => ds_info!(fn "mod_init"; "ping dispatcher socket set to <{show}>"),
            Err(SockError::Bad) => {
                ds_err!(fn "mod_init"; "bad socket <{show}>");
                return Err(format!("bad socket <{show}> (ds_ping_socket)"));
            }
            Err(SockError::NonLocal) => {
                ds_err!(fn "mod_init"; "non-local socket <{show}>");
                return Err(format!("non-local socket <{show}> (ds_ping_socket)"));
            }
        }
    }
    Ok(())
}

/// The sending socket of a keepalive as (socket name, socket address); both empty: the
/// core chooses. Kamailio 6.1: `ping_socket` attr > `sockname` attr > `socket` attr >
/// `ds_ping_socket` > `ds_default_sockname` > `ds_default_socket`; before 6.1 the two
/// `ping_socket` steps do not exist.
fn ping_sock(d: &DestRec, cfg: &Config) -> (Vec<u8>, Vec<u8>) {
    let v61 = compat::ge(6, 1, 0);
    if v61 && !d.ping_socket.bytes().is_empty() {
        (Vec::new(), d.ping_socket.bytes().to_vec())
    } else if !d.sockname.bytes().is_empty() {
        (d.sockname.bytes().to_vec(), Vec::new())
    } else if !d.socket.bytes().is_empty() {
        (Vec::new(), d.socket.bytes().to_vec())
    } else if v61 && !cfg.ping_socket.is_empty() {
        (Vec::new(), cfg.ping_socket.clone())
    } else if !cfg.default_sockname.is_empty() {
        (cfg.default_sockname.clone(), Vec::new())
    } else {
        (Vec::new(), cfg.default_socket.clone())
    }
}

unsafe extern "C" fn tick_any(_t: u32, _p: *mut c_void) {
    guard("keepalive timer", (), tick)
}

/// child_init(PROC_MAIN) with `ds_timer_mode` 2: forks the dedicated keepalive process.
pub fn fork_process() -> bool {
    let cfg = state::cfg();
    if cfg.ping_interval <= 0 || cfg.timer_mode != 2 {
        return true;
    }
    // SAFETY: called in the main process at PROC_MAIN, after register_basic_timers(1).
    unsafe {
        sys::fork_basic_utimer(
            sys::PROC_TIMER as c_int,
            c"DISPATCHER KEEPALIVE".as_ptr() as *mut std::os::raw::c_char,
            1,
            Some(tick_any),
            std::ptr::null_mut(),
            PROC_TICK_US,
        ) >= 0
    }
}

/// One pacing tick: pings the destinations that are due. The first round pings all of them
/// one interval after startup (as the C module); the following rounds are spread evenly
/// over `ds_ping_interval` (by elapsed time, whatever the tick length): see [`Pacer`].
fn tick() {
    let cfg = state::cfg();
    let Some(ctl) = state::ctl() else { return };
    if ctl.ping_active.load(Ordering::Relaxed) == 0 {
        return;
    }
    let interval_us = (cfg.ping_interval.max(1) as u64) * 1_000_000;
    let now = now_us();
    let mut jobs: Vec<Job> = Vec::new();
    let v61 = compat::ge(6, 1, 0);
    state::with_snap(|snap| {
        let total = snap.map(|s| s.header().ndests as usize).unwrap_or(0);
        let due = PACER.with(|p| {
            p.borrow_mut().get_or_insert_with(|| Pacer::new(tick_us(cfg.timer_mode))).tick(now, interval_us, total)
        });
        let Some(snap) = snap else { return };
        for (setid, d) in due.into_iter().flat_map(|r| snap.dests_from(r.start).take(r.len())) {
            if !ping_eligible(d.flags.load(Ordering::Relaxed), cfg.probing_mode) {
                continue;
            }
            // cluster mode: another live node probes this one
            if !crate::module::cluster::should_probe_here(setid, d.uri.bytes()) {
                continue;
            }
            d.ping_start_us.store(now, Ordering::Relaxed);
            crate::module::track::ping_sent(d);
            let from = d.ping_from.get().map(|v| v.to_vec()).unwrap_or_else(|| cfg.ping_from.clone());
            let ob = d.obproxy.get().map(|v| v.to_vec()).unwrap_or_else(|| cfg.outbound_proxy.clone());
            let (sn, sa) = ping_sock(d, cfg);
            // 6.1: the From tag carries the destination's IUID, so the reply finds this record
            let iuid_text = if v61 { state::iuid_text(d.iuid, setid) } else { String::new() };
            jobs.push(Job { setid, uri: d.uri.bytes().to_vec(), from, ob, sn, sa, iuid: d.iuid, iuid_text });
        }
    });
    // send outside the read section: TM may take its own locks and time
    for j in jobs {
        let cbp = (j.setid as u32 as usize) | CBP_TAG;
        let setid = j.setid;
        ds_dbg!("probing set #{setid}, URI {}", String::from_utf8_lossy(&j.uri));
        let fromtag = if j.iuid_text.is_empty() { String::new() } else { ping_fromtag(&j.iuid_text, &mut crate::kam::kam_rand) };
        let q = tm::Request {
            method: &cfg.ping_method,
            uri: &j.uri,
            from: &j.from,
            obproxy: &j.ob,
            ssockname: &j.sn,
            ssock: &j.sa,
            fromtag: fromtag.as_bytes(),
            fr_timeout: if v61 { cfg.ping_fr_timeout.max(0) as u32 } else { 0 },
        };
        if !tm::request(&q, done, cbp) {
            let u = String::from_utf8_lossy(&j.uri);
            ds_err!(fn "ds_ping_set"; "unable to ping [{u}] in group [{setid}]");
            crate::module::track::ping_result(setid, &j.uri, false);
            let st = DS_TRYING | if cfg.probing_mode != 0 { DS_PROBING } else { 0 };
            let rctx = Rctx { code: 500, reason: Some(b"Sending keepalive failed".to_vec()), ..Default::default() };
            let target = if v61 { Target::Iuid { iuid: Some(j.iuid), uri: &j.uri } } else { Target::Uri(&j.uri) };
            if health::update_state_from(Origin::Keepalive, None, setid, target, st, rctx) != 0 {
                ds_err!(fn "ds_ping_set"; "Setting the probing state failed ({u}, group {setid})");
            }
        }
    }
}

/// One keepalive to send (collected under the read section, sent after it).
struct Job {
    setid: i32,
    uri: Vec<u8>,
    from: Vec<u8>,
    ob: Vec<u8>,
    sn: Vec<u8>,
    sa: Vec<u8>,
    iuid: u64,
    /// IUID text (6.1), empty before.
    iuid_text: String,
}

/// Updates latency statistics (and congestion control) of the pinged destination.
fn update_latency(setid: i32, uri: &[u8], code: i32) {
    let cfg = state::cfg();
    let alpha = cfg.latency_alpha;
    let Some(lock) = LAT_LOCK.get() else { return };
    state::with_snap(|snap| {
        let Some(set) = snap.and_then(|s| s.set(setid)) else { return };
        let rebuild = {
            let _g = lock.lock();
            let mut pinged: Option<usize> = None;
            for (i, d) in set.dests.iter().enumerate() {
                if !d.uri.bytes().eq_ignore_ascii_case(uri) || d.flags.load(Ordering::Relaxed) & DS_PROBING == 0 {
                    continue;
                }
                // SAFETY: writers of `lat` are serialised by LAT_LOCK, held here.
                let st = unsafe { &mut *d.lat.get() };
                match ping_sample(code, d.ping_start_us.load(Ordering::Relaxed), now_us()) {
                    PingSample::Timeout => st.timed_out(),
                    PingSample::Latency(ms) => st.update(ms, alpha),
                    // 5.8+: no start time (a reload meanwhile): no sample, no congestion update
                    PingSample::NoStart => {
                        ds_dbg!(fn "ds_update_latency"; "no keepalive start time for {} (group {setid})", String::from_utf8_lossy(uri));
                        return;
                    }
                }
                d.lat_avg.store(st.average.to_bits(), Ordering::Relaxed);
                d.lat_est.store(st.estimate.to_bits(), Ordering::Relaxed);
                pinged = Some(i);
                break;
            }
            let Some(p) = pinged else { return };
            let view: Vec<(i32, i32, f64, f64, bool, i32)> = set
                .dests
                .iter()
                .enumerate()
                .map(|(i, d)| (d.cc, d.weight, d.latency_est(), d.latency_avg(), i == p, d.rweight_rt.load(Ordering::Relaxed)))
                .collect();
            match congestion_rweights(&view) {
                Some(rw) => {
                    for (d, v) in set.dests.iter().zip(rw) {
                        d.rweight_rt.store(v, Ordering::Relaxed);
                    }
                    true
                }
                None => false,
            }
        };
        if rebuild {
            health::rebuild_rweights(&set);
            crate::module::cmds::rebuild_pwlist(&set);
        }
    });
}

/// TM callback of a keepalive (runs in the process that completed the transaction).
unsafe extern "C" fn done(t: *mut sys::cell, _type: c_int, ps: *mut sys::tmcb_params) {
    guard("keepalive callback", (), || {
        // SAFETY: arguments of a TM callback.
        let Some(c) = (unsafe { tm::completion(t, ps) }) else { return };
        if c.cbp & CBP_TAG == 0 {
            return;
        }
        let setid = (c.cbp & 0xffff_ffff) as u32 as i32;
        let cfg = state::cfg();
        ds_dbg!("OPTIONS-Request was finished with code {} (to {}, group {setid})", c.code, String::from_utf8_lossy(&c.uri));
        if cfg.latency_stats {
            update_latency(setid, &c.uri, c.code);
        }
        // 6.1: the record is the one whose IUID is in the From tag (two entries with the same
        // URI keep separate states); before, the first one with the URI
        let iuid = if compat::ge(6, 1, 0) { iuid_from_from_hdr(&c.from_hdr) } else { None };
        let target = match iuid {
            Some(i) => Target::Iuid { iuid: health::iuid_of_text(i, setid), uri: &c.uri },
            None => Target::Uri(&c.uri),
        };
        // None: the set is gone (reload meanwhile); 0 also for an address that is gone
        let Some(cur) = health::get_state(setid, target) else { return };
        if cfg.probing_mode == 3 && cur & DS_PROBING == 0 {
            return;
        }
        let rctx = Rctx {
            code: c.code,
            flags: if c.real_reply { 1 } else { 0 },
            reason: if c.real_reply { Some(c.reason.clone()) } else { None },
            ..Default::default()
        };
        let alive = (200..=299).contains(&c.code) || crate::module::cfgvars::with_reply_codes(|r| r.alive(c.code as u32));
        crate::module::track::ping_result(setid, &c.uri, alive);
        let st = if alive {
            if cfg.probing_mode == 1 || (cfg.probing_mode == 3 && cur & DS_PROBING != 0) {
                DS_PROBING
            } else {
                0
            }
        } else {
            DS_TRYING | if cfg.probing_mode != 0 { DS_PROBING } else { 0 }
        };
        if cur & DS_DISABLED == 0 && health::update_state_from(Origin::Keepalive, None, setid, target, st, rctx) != 0 {
            let what = if alive { "state" } else { "probing state" };
            ds_err!(fn "ds_options_callback"; "Setting the {what} failed ({}, group {setid})", String::from_utf8_lossy(&c.uri));
        }
    })
}

/// mod_destroy: frees the latency lock.
pub fn destroy() {
    if let Some(l) = LAT_LOCK.get() {
        // SAFETY: shutdown (main process, children gone): no user of the lock is left.
        unsafe { l.free() };
    }
}
