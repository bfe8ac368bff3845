//! Glue: the `exports` table Kamailio loads, the init/child_init/destroy hooks, and the
//! wrappers that turn cfg-function and RPC calls into calls of the pure core.
//! Every entry point from C goes through [`guard`], so a panic never crosses the boundary.
#![allow(non_upper_case_globals)]

pub mod cfgvars;
pub mod cluster;
pub mod cmds;
pub mod health;
pub mod keepalive;
pub mod kemi;
pub mod load;
pub mod params;
pub mod rpc;
pub mod rpc_explain;
pub mod rpc_stats;
pub mod selkey;
pub mod state;
pub mod track;

use std::os::raw::{c_char, c_int, c_uint};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;

use crate::sys;
use crate::ds_err;

/// Runs `f`, turning a panic into an error log and `err`.
pub fn guard<R>(what: &str, err: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            let m = e
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            ds_err!("internal error in {what}: {m}");
            err
        }
    }
}

/// `char*` variables the loader compares with the core's strings (they must be pointers).
#[repr(transparent)]
pub struct SyncPtr(*const c_char);
// SAFETY: points to immutable static string data.
unsafe impl Sync for SyncPtr {}

#[no_mangle]
pub static module_version: SyncPtr = SyncPtr(concat!(env!("KAMAILIO_FULL_VERSION"), "\0").as_ptr() as *const c_char);
#[no_mangle]
pub static module_flags: SyncPtr = SyncPtr(concat!(env!("KAMAILIO_COMPILE_FLAGS"), "\0").as_ptr() as *const c_char);
#[no_mangle]
pub static module_interface_ver: c_uint = 4;

#[no_mangle]
pub static mut exports: sys::module_exports = sys::module_exports {
    name: c"dispatcher".as_ptr() as *mut c_char,
    dlflags: 0,
    cmds: &raw mut cmds::CMDS as *mut sys::cmd_export_t,
    params: &raw mut params::PARAMS as *mut sys::param_export_t,
    rpc_methods: &raw mut rpc::RPCS as *mut sys::rpc_export_t,
    pv_items: &raw mut health::PVS as *mut sys::pv_export_t,
    response_f: None,
    init_mod_f: Some(mod_init),
    init_child_f: Some(child_init),
    destroy_mod_f: Some(mod_destroy),
};

unsafe extern "C" fn mod_init() -> c_int {
    guard("mod_init", -1, || {
        let cfg = params::Config::from_params();
        state::init_iuid_prefix();
        if (cfg.flags & 2) != 0 && (cfg.xavp_dst.is_empty()) {
            ds_err!("failover support enabled (flags=2) but xavp_dst is empty: feature disabled");
        }
        if let Err(e) = track::init().and_then(|_| health::init()) {
            ds_err!("initialisation failed: {e}");
            return -1;
        }
        if let Err(e) = load::init(cfg.hash_size, cfg.hash_expire, cfg.hash_initexpire) {
            ds_err!("initialisation failed: {e}");
            return -1;
        }
        if cfg.hash_size > 0 && !register_timer(cfg.timer_mode, load_timer, cfg.hash_check_interval) {
            ds_err!("failed to register the call-load timer");
            return -1;
        }
        if !(1..=999).contains(&cfg_alpha()) {
            ds_err!(
                "invalid ds_latency_estimator_alpha {} (valid: 1..999), using {}",
                cfg_alpha(),
                if params::ALPHA_IS_SAMPLE_WEIGHT { 100 } else { 900 }
            );
        }
        if !cfgvars::declare(cfg.probing_threshold, cfg.inactive_threshold, &cfg.ping_reply_codes) {
            ds_err!("failed to declare the cfg group dispatcher");
            return -1;
        }
        if cfg.dns_mode & 4 != 0 {
            // SAFETY: mod_init, main process.
            if unsafe { params::ds_dns_interval } <= 0 {
                crate::ds_warn!("dns interval parameter not set - using 600");
            }
            if !register_timer(1, dns_timer, cfg.dns_interval) {
                ds_err!("failed to register the DNS timer");
                return -1;
            }
        }
        if let Err(e) = state::init(cfg).and_then(|_| keepalive::init()).and_then(|_| cluster::init()) {
            ds_err!("initialisation failed: {e}");
            return -1;
        }
        // the parse of the list is freed: give its pages back before Kamailio forks, so that
        // no child inherits them (issue 14: PSS over all processes)
        crate::kam::mem::heap_trim();
        0
    })
}

/// Registers `f` every `interval` seconds on the main timer (mode 0) or the secondary timer.
fn register_timer(mode: i32, f: unsafe extern "C" fn(u32, *mut std::os::raw::c_void), interval: i32) -> bool {
    // SAFETY: mod_init in the main process; the core keeps the function pointer.
    unsafe {
        if mode == 1 {
            sys::sr_wtimer_add(Some(f), null_mut(), interval) >= 0
        } else {
            sys::register_timer(Some(f), null_mut(), interval.max(1) as u32) >= 0
        }
    }
}

fn cfg_alpha() -> i32 {
    // SAFETY: read-only in mod_init.
    unsafe { params::ds_latency_estimator_alpha }
}

unsafe extern "C" fn dns_timer(_ticks: u32, _p: *mut std::os::raw::c_void) {
    guard("dns timer", (), state::dns_refresh)
}

unsafe extern "C" fn load_timer(_ticks: u32, _p: *mut std::os::raw::c_void) {
    guard("call-load timer", (), || {
        if let Some(t) = load::table() {
            t.expire_scan();
        }
    })
}

unsafe extern "C" fn child_init(rank: c_int) -> c_int {
    guard("child_init", -1, || {
        if rank == sys::PROC_INIT {
            // SAFETY: plain core call; the process table size is final at PROC_INIT.
            let n = unsafe { sys::get_max_procs() };
            if n as usize > crate::ds::rcu::MAX_SLOTS {
                ds_err!("{n} processes exceed the {} reader slots of this module", crate::ds::rcu::MAX_SLOTS);
                return -1;
            }
        }
        if rank == sys::PROC_MAIN && !keepalive::fork_process() {
            ds_err!("failed to fork the keepalive process");
            return -1;
        }
        if rank == sys::PROC_MAIN && !cluster::fork_process() {
            ds_err!("failed to fork the cluster process");
            return -1;
        }
        0
    })
}

unsafe extern "C" fn mod_destroy() {
    guard("destroy", (), || {
        crate::kam::mem::free_timers();
        keepalive::destroy();
        cluster::destroy();
        health::destroy();
        load::destroy();
        state::destroy();
    })
}
