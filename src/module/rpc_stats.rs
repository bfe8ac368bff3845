//! RPCs of issue 12: `dispatcher.stats`, `dispatcher.metrics` (and the list tools
//! `dispatcher.validate`, `dispatcher.diff`, `dispatcher.update`).
use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering;

use crate::ds::counters::{prometheus_text, MetricDest};
use crate::ds::snapshot::Snap;
use crate::kam::rpc::{Rpc, RpcStruct};
use crate::module::rpc::Doc;
use crate::module::{guard, state};
use crate::sys;

fn stats_dest(h: &RpcStruct, setid: i32, d: &crate::ds::snapshot::DestRec) -> Result<(), ()> {
    let c = d.ctr.values();
    h.int("SETID", setid)?;
    h.str("URI", Some(d.uri.bytes()))?;
    h.cstring("FLAGS", &crate::module::rpc::flag_letters(d.flags.load(Ordering::Relaxed)))?;
    h.ulong("SELECTED", c.selected)?;
    h.ulong("FAILOVER", c.failover)?;
    let r = h.child_struct("REPLIES")?;
    for (i, v) in c.replies.iter().enumerate() {
        r.ulong(&format!("{}xx", i + 1), *v)?;
    }
    h.ulong("TIMEOUTS", c.timeouts)?;
    h.int("INFLIGHT", c.inflight.clamp(0, i32::MAX as i64) as i32)?;
    let p = h.child_struct("PINGS")?;
    p.ulong("SENT", c.pings_sent)?;
    p.ulong("OK", c.pings_ok)?;
    p.ulong("FAILED", c.pings_failed)?;
    Ok(())
}

/// # Safety
/// Called by the core with its own arguments.
pub unsafe extern "C" fn rpc_stats(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.stats", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let mut group: c_int = 0;
        // SAFETY: "*d" matches (int*).
        let have = unsafe { rpc.scan_raw(c"*d", &[&mut group as *mut c_int as *mut c_void]) } == 1;
        state::with_snap(|snap| {
            let Some(snap) = snap.filter(|s| s.nsets() > 0) else {
                rpc.fault(500, "No Destination Sets");
                return;
            };
            if have && snap.set(group).is_none() {
                rpc.fault(404, "Destination Group Not Found");
                return;
            }
            for set in snap.sets().filter(|s| !have || s.rec.id == group) {
                for d in set.dests {
                    let ok = rpc.add_struct().ok_or(()).and_then(|h| stats_dest(&h, set.rec.id, d));
                    if ok.is_err() {
                        rpc.fault(500, "Internal error creating rpc");
                        return;
                    }
                }
            }
        })
    })
}

/// The metrics text of the running list (also for `ds_metrics_to_pv`).
pub fn metrics_text() -> String {
    state::with_snap(metrics_of)
}

fn metrics_of(snap: Option<Snap<'_>>) -> String {
    let lat = state::cfg().latency_stats;
    let mut v = Vec::new();
    if let Some(snap) = snap {
        for set in snap.sets() {
            for d in set.dests {
                v.push(MetricDest {
                    setid: set.rec.id,
                    uri: d.uri.bytes(),
                    up: d.usable(),
                    c: d.ctr.values(),
                    lat_avg_ms: lat.then(|| d.latency_avg()),
                    lat_est_ms: lat.then(|| d.latency_est()),
                });
            }
        }
    }
    prometheus_text(&v)
}

/// # Safety
/// Called by the core with its own arguments.
pub unsafe extern "C" fn rpc_metrics(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.metrics", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        if !rpc.add_string(&metrics_text()) {
            rpc.fault(500, "Internal error creating rpc");
        }
    })
}

pub static DOC_STATS: Doc = Doc([c"Per-destination counters (selected, failover, replies by class, timeouts, in flight, keepalives)".as_ptr(), std::ptr::null()]);
pub static DOC_METRICS: Doc = Doc([c"Counters, state and latency as Prometheus text exposition".as_ptr(), std::ptr::null()]);

/// cfg function `ds_metrics_to_pv("$var(name)")`: stores the `dispatcher.metrics` text in a
/// writable PV (for an xhttp scrape endpoint, see cfg-examples/metrics.cfg). 1 / -1.
/// # Safety
/// Called by the core with its own arguments.
pub unsafe extern "C" fn w_ds_metrics_to_pv(m: *mut sys::sip_msg, p: *mut std::os::raw::c_char, _b: *mut std::os::raw::c_char) -> c_int {
    guard("ds_metrics_to_pv", -1, || {
        if p.is_null() {
            return -1;
        }
        // SAFETY: without a fixup the core passes the cfg's NUL-terminated string literal.
        let name = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec();
        let Some(pv) = crate::kam::param::PvSpec::parse(&name).filter(|s| s.writable()) else {
            crate::ds_err!(fn "ds_metrics_to_pv"; "not a writable pseudo-variable: {}", String::from_utf8_lossy(&name));
            return -1;
        };
        if pv.set_str(m, metrics_text().as_bytes()) { 1 } else { -1 }
    })
}

/// binrpc (kamcmd) drops a fault text of 256 bytes or more entirely: the fault lists the
/// errors that fit and says how many more there are; every error is also logged.
const FAULT_MAX: usize = 250;

fn fault_list(rpc: &Rpc, c: &state::Checked) {
    let mut m = format!("{} error(s) in {}", c.errors.len(), c.source);
    for (i, e) in c.errors.iter().enumerate() {
        crate::ds_warn!(fn "dispatcher.validate"; "{e}");
        let more = format!("\n... {} more (logged)", c.errors.len() - i);
        if m.len() + 1 + e.len() + if i + 1 < c.errors.len() { more.len() } else { 0 } > FAULT_MAX {
            m.push_str(&more);
            break;
        }
        m.push('\n');
        m.push_str(e);
    }
    rpc.fault(500, &m);
}

fn scan_path(rpc: &Rpc) -> Option<String> {
    rpc.scan_str_opt().map(|p| String::from_utf8_lossy(&p).into_owned()).filter(|p| !p.is_empty())
}

/// # Safety
/// Called by the core with its own arguments.
pub unsafe extern "C" fn rpc_validate(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.validate", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let path = scan_path(&rpc);
        let c = match state::check_source(path.as_deref()) {
            Ok(c) => c,
            Err(e) => return rpc.fault(500, &e),
        };
        if !c.errors.is_empty() {
            return fault_list(&rpc, &c);
        }
        let nd: usize = c.sets.iter().map(|s| s.dests.len()).sum();
        let ok = rpc.add_struct().ok_or(()).and_then(|h| {
            h.cstring("STATUS", "OK")?;
            h.cstring("SOURCE", &c.source)?;
            h.int("SETS", c.sets.len() as i32)?;
            h.int("DESTINATIONS", nd as i32)
        });
        if ok.is_err() {
            rpc.fault(500, "Internal error creating rpc");
        }
    })
}

/// # Safety
/// Called by the core with its own arguments.
pub unsafe extern "C" fn rpc_diff(api: *mut sys::rpc_t, ctx: *mut c_void) {
    use crate::ds::listdiff::{diff, Change, Row};
    guard("dispatcher.diff", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let path = scan_path(&rpc);
        let c = match state::check_source(path.as_deref()) {
            Ok(c) => c,
            Err(e) => return rpc.fault(500, &e),
        };
        if !c.errors.is_empty() {
            return fault_list(&rpc, &c);
        }
        let new: Vec<Row> = c
            .sets
            .iter()
            .flat_map(|s| s.dests.iter())
            .map(|d| Row { setid: d.setid, uri: d.uri.clone(), flags: d.flags, priority: d.priority, attrs: d.attrs.body.clone() })
            .collect();
        let old: Vec<Row> = state::with_snap(|snap| {
            snap.map(|s| {
                s.sets()
                    .flat_map(|set| {
                        set.dests.iter().map(move |d| Row {
                            setid: set.rec.id,
                            uri: d.uri.bytes().to_vec(),
                            flags: d.cfg_flags,
                            priority: d.priority,
                            attrs: d.attrs_body.bytes().to_vec(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
        });
        let changes = diff(&old, &new);
        let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count() as i32;
        let r = (|| -> Result<(), ()> {
            let h = rpc.add_struct().ok_or(())?;
            h.cstring("SOURCE", &c.source)?;
            h.int("ADDED", count(|c| matches!(c, Change::Add(_))))?;
            h.int("REMOVED", count(|c| matches!(c, Change::Remove(_))))?;
            h.int("CHANGED", count(|c| matches!(c, Change::Change(..))))?;
            for ch in &changes {
                let h = rpc.add_struct().ok_or(())?;
                match ch {
                    Change::Add(r) | Change::Remove(r) => {
                        h.cstring("ACTION", if matches!(ch, Change::Add(_)) { "add" } else { "remove" })?;
                        h.int("SETID", r.setid)?;
                        h.str("URI", Some(&r.uri))?;
                        h.int("FLAGS", r.flags)?;
                        h.int("PRIORITY", r.priority)?;
                        h.str("ATTRS", Some(&r.attrs))?;
                    }
                    Change::Change(setid, uri, fields) => {
                        h.cstring("ACTION", "change")?;
                        h.int("SETID", *setid)?;
                        h.str("URI", Some(uri))?;
                        let f = h.child_struct("FIELDS")?;
                        for (name, o, n) in fields {
                            f.cstring(name, &format!("{o} -> {n}"))?;
                        }
                    }
                }
            }
            Ok(())
        })();
        if r.is_err() {
            rpc.fault(500, "Internal error creating rpc");
        }
    })
}

pub static DOC_VALIDATE: Doc = Doc([c"Parse and resolve a list file (default: the configured source) without loading it".as_ptr(), std::ptr::null()]);
pub static DOC_DIFF: Doc = Doc([c"What a reload from a list file (default: the configured source) would add, remove and change".as_ptr(), std::ptr::null()]);

/// # Safety
/// Called by the core with its own arguments.
pub unsafe extern "C" fn rpc_update(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.update", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let (mut group, mut flags, mut prio): (c_int, c_int, c_int) = (0, 0, 0);
        let mut dest = sys::str_ { s: std::ptr::null_mut(), len: 0 };
        let mut attrs = sys::str_ { s: std::ptr::null_mut(), len: 0 };
        // SAFETY: "dSddS" matches (int*, str*, int*, int*, str*).
        let n = unsafe {
            rpc.scan_raw(c"dSdd*S", &[
                &mut group as *mut c_int as *mut c_void,
                &mut dest as *mut sys::str_ as *mut c_void,
                &mut flags as *mut c_int as *mut c_void,
                &mut prio as *mut c_int as *mut c_void,
                &mut attrs as *mut sys::str_ as *mut c_void,
            ])
        };
        if n < 4 {
            return rpc.fault(500, "Invalid Parameters (setid uri flags priority [attrs])");
        }
        let u = crate::kam::param::unsafe_bytes(dest).to_vec();
        let a = if n >= 5 { crate::kam::param::unsafe_bytes(attrs).to_vec() } else { Vec::new() };
        match state::update_dest(group, &u, flags, prio, &a) {
            Ok(()) => rpc.text("Ok. Dispatcher destination updated."),
            Err(state::ReloadError::TooSoon) => {
                crate::ds_err!(fn "dispatcher_rpc_update"; "{}", crate::module::rpc::ongoing_reload());
                rpc.fault(500, "Ongoing reload")
            }
            Err(state::ReloadError::NotReady) => rpc.fault(500, "Not ready for reload"),
            Err(state::ReloadError::Failed(m)) | Err(state::ReloadError::Partial(m)) => rpc.fault(500, &format!("Updating dispatcher dst failed: {m}")),
        }
    })
}

pub static DOC_UPDATE: Doc = Doc([c"Modify a destination in place (flags, priority, attrs), keeping its state and counters".as_ptr(), std::ptr::null()]);
