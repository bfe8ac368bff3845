//! RPC commands (spec §3): `dispatcher.list`, `dispatcher.reload`, `dispatcher.hash`.
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::Ordering;

use crate::ds::hash::ds_hash;
use crate::ds::compat;
use crate::ds::snapshot::{Snap, DS_DISABLED, DS_INACTIVE, DS_NOPING, DS_PROBING, DS_TRYING};
use crate::kam::rpc::{Rpc, RpcStruct};
use crate::module::{guard, rpc_stats, state};
use crate::sys::{self, rpc_export_t};
use crate::ds_err;

/// The two FLAGS letters of `dispatcher.list`.
pub fn flag_letters(f: i32) -> String {
    let a = if f & DS_INACTIVE != 0 {
        'I'
    } else if f & DS_DISABLED != 0 {
        'D'
    } else if f & DS_TRYING != 0 {
        'T'
    } else {
        'A'
    };
    let b = if f & DS_PROBING != 0 {
        'P'
    } else if f & DS_NOPING != 0 && compat::ge(6, 0, 0) {
        'N'
    } else {
        'X'
    };
    format!("{a}{b}")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ListMode {
    Normal,
    Short,
    Full,
}

/// Whether any destination has overload-control attributes (ocmin/ocmax/ocrate).
fn uses_oc(snap: &Snap<'_>) -> bool {
    snap.sets().any(|s| s.dests.iter().any(|d| {
        let b = d.attrs_body.bytes();
        contains_ci(b, b"ocmin") || contains_ci(b, b"ocmax") || contains_ci(b, b"ocrate")
    }))
}

fn contains_ci(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

unsafe extern "C" fn rpc_oclist(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.oclist", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let mut group: c_int = 0;
        // SAFETY: "d" matches (int*).
        if unsafe { rpc.scan_raw(c"d", &[&mut group as *mut c_int as *mut c_void]) } < 1 {
            rpc.fault(500, "Invalid Parameters");
            return;
        }
        state::with_snap(|snap| {
            let Some(set) = snap.and_then(|s| s.set(group)) else {
                rpc.fault(404, "Destination Group Not Found");
                return;
            };
            for d in set.dests {
                let Some(h) = rpc.add_struct() else {
                    rpc.fault(500, "Internal error creating rpc");
                    return;
                };
                let t = d.oc_time_us.load(Ordering::Relaxed);
                let r = h
                    .int("group", group)
                    .and_then(|_| h.str("uri", Some(d.uri.bytes())))
                    .and_then(|_| h.cstring("flags", &flag_letters(d.flags.load(Ordering::Relaxed))))
                    .and_then(|_| h.int("priority", d.priority))
                    .and_then(|_| h.int("ocrate", d.oc_rate.load(Ordering::Relaxed)))
                    .and_then(|_| h.int("ocidx", d.oc_idx.load(Ordering::Relaxed) as i32))
                    .and_then(|_| h.int("ocseq", d.oc_seq.load(Ordering::Relaxed)))
                    .and_then(|_| h.ulong("octime_sec", t / 1_000_000))
                    .and_then(|_| h.ulong("octime_usec", t % 1_000_000))
                    .and_then(|_| h.int("ocmin", d.ocmin))
                    .and_then(|_| h.int("ocmax", d.ocmax));
                if r.is_err() {
                    rpc.fault(500, "Internal error creating dest struct");
                    return;
                }
            }
        })
    })
}

fn list_sets(snap: Snap<'_>, recs: RpcStruct, mode: ListMode) -> Result<(), &'static str> {
    // fields of the C module of the release this build is for
    let (v60, v61) = (compat::ge(6, 0, 0), compat::ge(6, 1, 0));
    // before 6.0 the overload-control fields are this module's extension: only when used
    let oc_fields = v60 || uses_oc(&snap);
    for set in snap.sets() {
        let sh = recs.child_struct("SET").map_err(|_| "Internal error set structure")?;
        let targets = sh.int_and_array("ID", set.rec.id, "TARGETS").map_err(|_| "Internal error creating set id")?;
        for (j, d) in set.dests.iter().enumerate() {
            let vh = targets.child_struct("DEST").map_err(|_| "Internal error creating dest")?;
            let e = "Internal error creating dest struct";
            if v61 {
                vh.int("IDX", j as i32).map_err(|_| e)?;
            }
            vh.str("URI", Some(d.uri.bytes())).map_err(|_| e)?;
            vh.cstring("FLAGS", &flag_letters(d.flags.load(Ordering::Relaxed))).map_err(|_| e)?;
            vh.int("PRIORITY", d.priority).map_err(|_| e)?;
            if v61 {
                vh.cstring("IUID", &state::iuid_text(d.iuid, set.rec.id)).map_err(|_| e)?;
            }
            if mode == ListMode::Full {
                let ip = crate::kam::msg::ip_text(d.ip_addr());
                vh.str("HOST", Some(d.host.bytes())).map_err(|_| e)?;
                vh.cstring("IPADDR", &ip).map_err(|_| e)?;
                vh.int("PORT", d.port as i32).map_err(|_| e)?;
                vh.int("PROTOID", d.proto as i32).map_err(|_| e)?;
                vh.ulong("DNSTIME_SEC", d.dnstime_sec.into()).map_err(|_| e)?;
                vh.ulong("DNSTIME_USEC", d.dnstime_usec.into()).map_err(|_| e)?;
                if oc_fields {
                    // Kamailio 6.0 fields
                    let t = d.oc_time_us.load(Ordering::Relaxed);
                    vh.int("OCRATE", d.oc_rate.load(Ordering::Relaxed))
                        .and_then(|_| vh.int("OCIDX", d.oc_idx.load(Ordering::Relaxed) as i32))
                        .and_then(|_| vh.int("OCSEQ", d.oc_seq.load(Ordering::Relaxed)))
                        .and_then(|_| vh.ulong("OCTIME_SEC", t / 1_000_000))
                        .and_then(|_| vh.ulong("OCTIME_USEC", t % 1_000_000))
                        .map_err(|_| e)?;
                }
            }
            // 6.0: the full mode always has ATTRS
            if (mode != ListMode::Short && d.attrs_body.get().is_some()) || (v60 && mode == ListMode::Full) {
                let wh = vh.child_struct("ATTRS").map_err(|_| e)?;
                let ea = "Internal error creating attrs struct";
                wh.str("BODY", d.attrs_body.get()).map_err(|_| ea)?;
                wh.str("DUID", d.duid.get()).map_err(|_| ea)?;
                if v60 {
                    wh.int("PROBING_COUNT", d.fail_cnt.load(Ordering::Relaxed)).map_err(|_| ea)?;
                }
                wh.int("MAXLOAD", d.maxload).map_err(|_| ea)?;
                wh.int("WEIGHT", d.weight).map_err(|_| ea)?;
                wh.int("RWEIGHT", d.rweight_rt.load(Ordering::Relaxed)).map_err(|_| ea)?;
                wh.str("SOCKET", d.socket.get()).map_err(|_| ea)?;
                wh.str("SOCKNAME", d.sockname.get()).map_err(|_| ea)?;
                if v61 {
                    wh.str("PING_SOCKET", d.ping_socket.get()).map_err(|_| ea)?;
                }
                wh.str("OBPROXY", d.obproxy.get()).map_err(|_| ea)?;
                if v60 {
                    wh.ulong("OCMIN", d.ocmin as u64).map_err(|_| ea)?;
                    wh.ulong("OCMAX", d.ocmax as u64).map_err(|_| ea)?;
                }
            }
            if state::cfg().latency_stats {
                let lh = vh.child_struct("LATENCY").map_err(|_| "Internal error creating dest")?;
                // SAFETY: display only; a concurrent update may be seen half-way.
                let ls = unsafe { d.latency_stats() };
                lh.double("AVG", ls.average)
                    .and_then(|_| lh.double("STD", ls.stdev))
                    .and_then(|_| lh.double("EST", ls.estimate))
                    .and_then(|_| lh.int("MAX", ls.max))
                    .and_then(|_| lh.int("TIMEOUT", ls.timeout as i32))
                    .map_err(|_| e)?;
            }
            if state::cfg().hash_size > 0 {
                let dh = vh.child_struct("RUNTIME").map_err(|_| "Internal error creating runtime struct")?;
                dh.int("DLGLOAD", d.load()).map_err(|_| "Internal error creating runtime attrs")?;
            }
        }
    }
    Ok(())
}

unsafe extern "C" fn rpc_list(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.list", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let mode = match rpc.scan_str_opt() {
            Some(m) if m.eq_ignore_ascii_case(b"short") => ListMode::Short,
            Some(m) if m.eq_ignore_ascii_case(b"full") => ListMode::Full,
            _ => ListMode::Normal,
        };
        state::with_snap(|snap| {
            let Some(snap) = snap.filter(|s| s.nsets() > 0) else {
                rpc.fault(500, "No Destination Sets");
                return;
            };
            let Some(th) = rpc.add_struct() else {
                rpc.fault(500, "Internal error root reply");
                return;
            };
            let Ok(recs) = th.int_and_array("NRSETS", snap.nsets() as i32, "RECORDS") else {
                rpc.fault(500, "Internal error sets structure");
                return;
            };
            if let Err(e) = list_sets(snap, recs, mode) {
                rpc.fault(500, e);
            }
        })
    })
}

unsafe extern "C" fn rpc_reload(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.reload", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        match state::load_and_install(true) {
            Ok(_) => rpc.text("Ok. Dispatcher successfully reloaded."),
            Err(state::ReloadError::NotReady) => {
                ds_err!(fn "dispatcher_rpc_reload"; "not ready for reload");
                rpc.fault(500, "Not ready for reload")
            }
            Err(state::ReloadError::TooSoon) => {
                ds_err!(fn "dispatcher_rpc_reload"; "{}", ongoing_reload());
                rpc.fault(500, "Ongoing reload")
            }
            // the cause was logged where it happened; the running list stays
            Err(state::ReloadError::Failed(m)) | Err(state::ReloadError::Partial(m)) => {
                rpc.fault(500, &format!("Reload Failed: {m}"))
            }
        }
    })
}

unsafe extern "C" fn rpc_hash(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.hash", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let mut nslots: c_int = 0;
        let mut v1 = sys::str_ { s: null_mut(), len: 0 };
        let mut v2 = sys::str_ { s: null_mut(), len: 0 };
        // SAFETY: "dS*S" matches (int*, str*, str*).
        let n = unsafe {
            rpc.scan_raw(c"dS*S", &[
                &mut nslots as *mut c_int as *mut c_void,
                &mut v1 as *mut sys::str_ as *mut c_void,
                &mut v2 as *mut sys::str_ as *mut c_void,
            ])
        };
        if n < 2 {
            rpc.fault(500, "Invalid Parameters");
            return;
        }
        let a = crate::kam::param::unsafe_bytes(v1);
        let b = if n >= 3 { Some(crate::kam::param::unsafe_bytes(v2)) } else { None };
        let h = ds_hash(Some(a), b);
        let slot = if nslots > 0 { h % nslots as u32 } else { 0 };
        let Some(th) = rpc.add_struct() else {
            rpc.fault(500, "Internal error root reply");
            return;
        };
        if th.uint("hashid", h).and_then(|_| th.uint("slot", slot)).is_err() {
            rpc.fault(500, "Internal error reply structure");
        }
    })
}

fn set_state_helper(rpc: &Rpc, by_duid: bool) {
    let mut st = sys::str_ { s: null_mut(), len: 0 };
    let mut group: c_int = 0;
    let mut dest = sys::str_ { s: null_mut(), len: 0 };
    // SAFETY: ".SdS" matches (str*, int*, str*).
    let n = unsafe {
        rpc.scan_raw(c".SdS", &[
            &mut st as *mut sys::str_ as *mut c_void,
            &mut group as *mut c_int as *mut c_void,
            &mut dest as *mut sys::str_ as *mut c_void,
        ])
    };
    if n < 3 {
        rpc.fault(500, "Invalid Parameters");
        return;
    }
    let stv = crate::kam::param::unsafe_bytes(st);
    if stv.is_empty() {
        ds_err!(fn "dispatcher_rpc_set_state_helper"; "bad state value");
        rpc.fault(500, "Invalid State Parameter");
        return;
    }
    let Ok(flags) = crate::ds::health::parse_rpc_state(stv) else {
        ds_err!(fn "dispatcher_rpc_set_state_helper"; "unknown state value [{}]", String::from_utf8_lossy(stv));
        rpc.fault(500, "Unknown State Value");
        return;
    };
    let key = crate::kam::param::unsafe_bytes(dest);
    // reinit_state logs why it failed (unknown set, address or duid)
    if !crate::module::health::reinit_state(group, key, flags, by_duid) {
        rpc.fault(500, "State Update Failed");
        return;
    }
    crate::module::cluster::note_admin(group, key, by_duid);
    rpc.text("Ok. Dispatcher state updated.");
}

unsafe extern "C" fn rpc_set_state(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.set_state", (), || {
        // SAFETY: arguments of an RPC handler call.
        set_state_helper(&unsafe { Rpc::new(api, ctx) }, false)
    })
}

unsafe extern "C" fn rpc_set_duid_state(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.set_duid_state", (), || {
        // SAFETY: arguments of an RPC handler call.
        set_state_helper(&unsafe { Rpc::new(api, ctx) }, true)
    })
}

unsafe extern "C" fn rpc_ping_active(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.ping_active", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let Some(ctl) = state::ctl() else {
            rpc.fault(500, "Ping State Update Failed");
            return;
        };
        let mut v: c_int = 0;
        // SAFETY: "*d" matches (int*).
        let n = unsafe { rpc.scan_raw(c"*d", &[&mut v as *mut c_int as *mut c_void]) };
        let old = ctl.ping_active.load(Ordering::Relaxed);
        let Some(th) = rpc.add_struct() else {
            rpc.fault(500, "Internal error root reply");
            return;
        };
        if n != 1 {
            if th.int("OldPingState", old).is_err() {
                rpc.fault(500, "Internal error reply structure");
            }
            return;
        }
        ctl.ping_active.store(v, Ordering::Relaxed);
        if th.int("NewPingState", v).and_then(|_| th.int("OldPingState", old)).is_err() {
            rpc.fault(500, "Internal error reply structure");
        }
    })
}

/// The RPC's reply to a list edit; `func` is the C module's RPC function (for the logs).
fn edit_reply(rpc: &Rpc, func: &'static str, r: Result<(), state::ReloadError>, ok: &str, failed: &str) {
    match r {
        Ok(()) => rpc.text(ok),
        Err(state::ReloadError::NotReady) => {
            ds_err!(fn func; "Not ready for rebuilding destinations list");
            rpc.fault(500, "Not ready for reload")
        }
        Err(state::ReloadError::TooSoon) => {
            ds_err!(fn func; "{}", ongoing_reload());
            rpc.fault(500, "Ongoing reload")
        }
        // the cause was logged where it happened
        Err(state::ReloadError::Failed(_)) | Err(state::ReloadError::Partial(_)) => rpc.fault(500, failed),
    }
}

/// The C module's "ongoing reload" message, with the limit that refused the rebuild.
pub fn ongoing_reload() -> String {
    format!("ongoing reload (less than reload_delta {} s since the last rebuild)", state::cfg().reload_delta)
}

/// The C module checks the rate limit before it parses the parameters. `func` is the C
/// module's RPC function (for the logs).
fn rate_limited(rpc: &Rpc, func: &'static str) -> bool {
    if state::ctl().is_none() {
        ds_err!(fn func; "Not ready for rebuilding destinations list");
        rpc.fault(500, "Not ready for reload");
        return true;
    }
    if state::too_soon() {
        ds_err!(fn func; "{}", ongoing_reload());
        rpc.fault(500, "Ongoing reload");
        return true;
    }
    false
}

unsafe extern "C" fn rpc_add(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.add", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        if rate_limited(&rpc, "dispatcher_rpc_add") {
            return;
        }
        let (mut group, mut flags, mut prio): (c_int, c_int, c_int) = (0, 0, 0);
        let mut dest = sys::str_ { s: null_mut(), len: 0 };
        let mut attrs = sys::str_ { s: null_mut(), len: 0 };
        // SAFETY: "dS*ddS" matches (int*, str*, int*, int*, str*).
        let n = unsafe {
            rpc.scan_raw(c"dS*ddS", &[
                &mut group as *mut c_int as *mut c_void,
                &mut dest as *mut sys::str_ as *mut c_void,
                &mut flags as *mut c_int as *mut c_void,
                &mut prio as *mut c_int as *mut c_void,
                &mut attrs as *mut sys::str_ as *mut c_void,
            ])
        };
        if n < 2 {
            rpc.fault(500, "Invalid Parameters");
            return;
        }
        let u = crate::kam::param::unsafe_bytes(dest).to_vec();
        let a = if n >= 5 { crate::kam::param::unsafe_bytes(attrs).to_vec() } else { Vec::new() };
        let e = state::Edit::Add { setid: group, uri: u, flags: if n >= 3 { flags } else { 0 }, priority: if n >= 4 { prio } else { 0 }, attrs: a };
        edit_reply(&rpc, "dispatcher_rpc_add", state::edit_list(e), "Ok. Dispatcher destination added.", "Adding dispatcher dst failed");
    })
}

unsafe extern "C" fn rpc_remove(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.remove", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        if rate_limited(&rpc, "dispatcher_rpc_remove") {
            return;
        }
        let mut group: c_int = 0;
        let mut dest = sys::str_ { s: null_mut(), len: 0 };
        // SAFETY: "dS" matches (int*, str*).
        let n = unsafe {
            rpc.scan_raw(c"dS", &[&mut group as *mut c_int as *mut c_void, &mut dest as *mut sys::str_ as *mut c_void])
        };
        if n < 2 {
            rpc.fault(500, "Invalid Parameters");
            return;
        }
        let u = crate::kam::param::unsafe_bytes(dest).to_vec();
        edit_reply(&rpc, "dispatcher_rpc_remove", state::edit_list(state::Edit::Remove { setid: group, uri: u }), "Ok. Dispatcher destination removed.", "Removing dispatcher dst failed");
    })
}

#[repr(transparent)]
pub struct Doc(pub [*const c_char; 2]);
// SAFETY: immutable static strings.
unsafe impl Sync for Doc {}

static DOC_LIST: Doc = Doc([c"Return the content of dispatcher sets".as_ptr(), std::ptr::null()]);
static DOC_RELOAD: Doc = Doc([c"Reload dispatcher destination sets".as_ptr(), std::ptr::null()]);
static DOC_SET_STATE: Doc = Doc([c"Set the state of a destination address".as_ptr(), std::ptr::null()]);
static DOC_SET_DUID_STATE: Doc = Doc([c"Set the state of a destination by duid".as_ptr(), std::ptr::null()]);
static DOC_PING_ACTIVE: Doc = Doc([c"Manage setting on/off the pinging (keepalive) of destinations".as_ptr(), std::ptr::null()]);
static DOC_ADD: Doc = Doc([c"Add a destination address in memory".as_ptr(), std::ptr::null()]);
static DOC_REMOVE: Doc = Doc([c"Remove a destination address from memory".as_ptr(), std::ptr::null()]);
static DOC_OCLIST: Doc = Doc([c"Return the overload control attributes of a group".as_ptr(), std::ptr::null()]);
static DOC_HASH: Doc = Doc([c"Compute the hash of the values".as_ptr(), std::ptr::null()]);
static DOC_CLUSTER_STATUS: Doc = Doc([c"Cluster mode: this node, the nodes it knows, replication counters".as_ptr(), std::ptr::null()]);

pub static mut RPCS: [rpc_export_t; 17] = [
    rpc_export_t { name: c"dispatcher.update".as_ptr(), function: Some(rpc_stats::rpc_update), doc_str: &rpc_stats::DOC_UPDATE as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.validate".as_ptr(), function: Some(rpc_stats::rpc_validate), doc_str: &rpc_stats::DOC_VALIDATE as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.diff".as_ptr(), function: Some(rpc_stats::rpc_diff), doc_str: &rpc_stats::DOC_DIFF as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.stats".as_ptr(), function: Some(rpc_stats::rpc_stats), doc_str: &rpc_stats::DOC_STATS as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.metrics".as_ptr(), function: Some(rpc_stats::rpc_metrics), doc_str: &rpc_stats::DOC_METRICS as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.oclist".as_ptr(), function: Some(rpc_oclist), doc_str: &DOC_OCLIST as *const Doc as *mut *const c_char, flags: 1 },
    rpc_export_t { name: c"dispatcher.add".as_ptr(), function: Some(rpc_add), doc_str: &DOC_ADD as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.remove".as_ptr(), function: Some(rpc_remove), doc_str: &DOC_REMOVE as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.set_state".as_ptr(), function: Some(rpc_set_state), doc_str: &DOC_SET_STATE as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.set_duid_state".as_ptr(), function: Some(rpc_set_duid_state), doc_str: &DOC_SET_DUID_STATE as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.ping_active".as_ptr(), function: Some(rpc_ping_active), doc_str: &DOC_PING_ACTIVE as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.list".as_ptr(), function: Some(rpc_list), doc_str: &DOC_LIST as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.reload".as_ptr(), function: Some(rpc_reload), doc_str: &DOC_RELOAD as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.hash".as_ptr(), function: Some(rpc_hash), doc_str: &DOC_HASH as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.explain".as_ptr(), function: Some(crate::module::rpc_explain::rpc_explain), doc_str: &crate::module::rpc_explain::DOC_EXPLAIN as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: c"dispatcher.cluster_status".as_ptr(), function: Some(crate::module::cluster::rpc_cluster_status), doc_str: &DOC_CLUSTER_STATUS as *const Doc as *mut *const c_char, flags: 0 },
    rpc_export_t { name: std::ptr::null(), function: None, doc_str: std::ptr::null_mut(), flags: 0 },
];
