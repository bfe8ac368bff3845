//! The 43 modparams of Kamailio 5.6.3's dispatcher, those added up to 6.1 and master, with their types and defaults (spec §1.1).
//! The core writes into these statics while parsing the cfg, before `mod_init`; they are
//! read-only afterwards. [`Config::from_params`] turns them into plain Rust values.
#![allow(non_upper_case_globals)]

use std::os::raw::{c_char, c_int};
use std::ptr::null_mut;

use crate::sys::{self, param_export_t, str_};
use crate::module::cluster::{
    cluster_channel, cluster_flush_interval, cluster_heartbeat, cluster_id, cluster_mark_scope, cluster_max_bodies,
    cluster_max_body, cluster_max_dests, cluster_mode, cluster_node_timeout, cluster_node_uri, cluster_probing,
};

const fn s0() -> str_ {
    str_ { s: null_mut(), len: 0 }
}
const fn cs(s: &'static std::ffi::CStr) -> str_ {
    str_ { s: s.as_ptr() as *mut c_char, len: s.count_bytes() as c_int }
}

pub static mut list_file: *mut c_char = c"/etc/kamailio/dispatcher.list".as_ptr() as *mut c_char;
pub static mut db_url: str_ = s0();
pub static mut table_name: str_ = cs(c"dispatcher");
pub static mut setid_col: str_ = cs(c"setid");
pub static mut destination_col: str_ = cs(c"destination");
pub static mut flags_col: str_ = cs(c"flags");
pub static mut priority_col: str_ = cs(c"priority");
pub static mut attrs_col: str_ = cs(c"attrs");
pub static mut force_dst: c_int = 1;
pub static mut flags: c_int = 0;
pub static mut use_default: c_int = 0;
pub static mut xavp_dst: str_ = cs(c"_dsdst_");
pub static mut xavp_dst_mode: c_int = 0;
pub static mut xavp_ctx: str_ = cs(c"_dsctx_");
pub static mut xavp_ctx_mode: c_int = 0;
pub static mut hash_pvar: str_ = s0();
pub static mut setid_pvname: str_ = s0();
pub static mut attrs_pvname: str_ = s0();
pub static mut ds_probing_threshold: c_int = 1;
pub static mut ds_inactive_threshold: c_int = 1;
pub static mut ds_ping_method: str_ = cs(c"OPTIONS");
pub static mut ds_ping_from: str_ = cs(c"sip:dispatcher@localhost");
pub static mut ds_ping_interval: c_int = 0;
pub static mut ds_ping_latency_stats: c_int = 0;
/// 5.6–6.0.3: weight of the old estimate (default 900 = 0.9); from 6.0.4 the weight of the new
/// sample (default 100 = 0.1), as the C module of the release this build is for.
pub static mut ds_latency_estimator_alpha: c_int = if ALPHA_IS_SAMPLE_WEIGHT { 100 } else { 900 };
/// From Kamailio 6.0.4 `ds_latency_estimator_alpha` weighs the new sample.
pub const ALPHA_IS_SAMPLE_WEIGHT: bool = crate::kam::VERSIONVAL >= 6_000_004;
pub static mut ds_ping_reply_codes: str_ = s0();
pub static mut ds_probing_mode: c_int = 0;
pub static mut ds_hash_size: c_int = 0;
pub static mut ds_hash_expire: c_int = 7200;
pub static mut ds_hash_initexpire: c_int = 7200;
pub static mut ds_hash_check_interval: c_int = 30;
pub static mut outbound_proxy: str_ = s0();
pub static mut ds_default_socket: str_ = s0();
pub static mut ds_default_sockname: str_ = s0();
pub static mut ds_timer_mode: c_int = 0;
pub static mut event_callback: str_ = s0();
pub static mut ds_attrs_none: c_int = 0;
pub static mut ds_db_extra_attrs: str_ = s0();
pub static mut ds_load_mode: c_int = 0;
pub static mut reload_delta: c_int = 5;
pub static mut ds_dns_mode: c_int = 1;
pub static mut ds_dns_interval: c_int = 600;
pub static mut ds_dns_ttl: c_int = 0;
/// Added by this module: 1 (default) keeps the runtime state (flags, counters, call load) of
/// destinations that stay across a reload; 0 resets it like Kamailio 5.6.3.
pub static mut ds_reload_keep_state: c_int = 1;
/// Kamailio 5.8: keep latency statistics across reloads.
pub static mut ds_retain_latency_stats: c_int = 0;
/// Kamailio 6.1: fr_timeout of keepalive transactions in tm ticks (1/16 s), 0 = tm's fr_timer
/// (also named `ds_ping_fr_timer`). Needs the 6.1 tm API; ignored with a warning before 6.1.
pub static mut ds_ping_fr_timeout: c_int = 0;
/// Kamailio 6.1: default sending socket of keepalives (checked to be local at startup).
pub static mut ds_ping_socket: str_ = s0();
/// Kamailio 6.1: which state changes run the event routes (0 runtime, 1 options, 2 init).
pub static mut event_callback_mode: c_int = 0;
/// Kamailio master (offered on every version): keep every A/AAAA address of a destination
/// (up to 32) and let `ds_is_from_list` match any of them.
pub static mut ds_dns_match_all: c_int = 0;

const STR: u32 = sys::PARAM_STR as u32;
const STRING: u32 = sys::PARAM_STRING as u32;
const INT: u32 = sys::PARAM_INT as u32;

use crate::module::track::{ds_counters, ds_passive_reply_codes, ds_passive_threshold};

macro_rules! p {
    ($name:literal, $ty:expr, $var:ident) => {
        param_export_t {
            name: $name.as_ptr() as *mut c_char,
            type_: $ty,
            param_pointer: &raw mut $var as *mut std::os::raw::c_void,
        }
    };
}

pub static mut PARAMS: [param_export_t; 66] = [
    p!(c"list_file", STRING, list_file),
    p!(c"db_url", STR, db_url),
    p!(c"table_name", STR, table_name),
    p!(c"setid_col", STR, setid_col),
    p!(c"destination_col", STR, destination_col),
    p!(c"flags_col", STR, flags_col),
    p!(c"priority_col", STR, priority_col),
    p!(c"attrs_col", STR, attrs_col),
    p!(c"force_dst", INT, force_dst),
    p!(c"flags", INT, flags),
    p!(c"use_default", INT, use_default),
    p!(c"xavp_dst", STR, xavp_dst),
    p!(c"xavp_dst_mode", INT, xavp_dst_mode),
    p!(c"xavp_ctx", STR, xavp_ctx),
    p!(c"xavp_ctx_mode", INT, xavp_ctx_mode),
    p!(c"hash_pvar", STR, hash_pvar),
    p!(c"setid_pvname", STR, setid_pvname),
    p!(c"attrs_pvname", STR, attrs_pvname),
    p!(c"ds_probing_threshold", INT, ds_probing_threshold),
    p!(c"ds_inactive_threshold", INT, ds_inactive_threshold),
    p!(c"ds_ping_method", STR, ds_ping_method),
    p!(c"ds_ping_from", STR, ds_ping_from),
    p!(c"ds_ping_interval", INT, ds_ping_interval),
    p!(c"ds_ping_latency_stats", INT, ds_ping_latency_stats),
    p!(c"ds_latency_estimator_alpha", INT, ds_latency_estimator_alpha),
    p!(c"ds_ping_reply_codes", STR, ds_ping_reply_codes),
    p!(c"ds_probing_mode", INT, ds_probing_mode),
    p!(c"ds_hash_size", INT, ds_hash_size),
    p!(c"ds_hash_expire", INT, ds_hash_expire),
    p!(c"ds_hash_initexpire", INT, ds_hash_initexpire),
    p!(c"ds_hash_check_interval", INT, ds_hash_check_interval),
    p!(c"outbound_proxy", STR, outbound_proxy),
    p!(c"ds_default_socket", STR, ds_default_socket),
    p!(c"ds_default_sockname", STR, ds_default_sockname),
    p!(c"ds_timer_mode", INT, ds_timer_mode),
    p!(c"event_callback", STR, event_callback),
    p!(c"ds_attrs_none", INT, ds_attrs_none),
    p!(c"ds_db_extra_attrs", STR, ds_db_extra_attrs),
    p!(c"ds_load_mode", INT, ds_load_mode),
    p!(c"reload_delta", INT, reload_delta),
    p!(c"ds_dns_mode", INT, ds_dns_mode),
    p!(c"ds_dns_interval", INT, ds_dns_interval),
    p!(c"ds_dns_ttl", INT, ds_dns_ttl),
    p!(c"ds_reload_keep_state", INT, ds_reload_keep_state),
    p!(c"ds_retain_latency_stats", INT, ds_retain_latency_stats),
    p!(c"ds_ping_fr_timeout", INT, ds_ping_fr_timeout),
    p!(c"ds_ping_fr_timer", INT, ds_ping_fr_timeout),
    p!(c"ds_ping_socket", STR, ds_ping_socket),
    p!(c"event_callback_mode", INT, event_callback_mode),
    p!(c"ds_dns_match_all", INT, ds_dns_match_all),
    p!(c"ds_passive_threshold", INT, ds_passive_threshold),
    p!(c"ds_passive_reply_codes", STR, ds_passive_reply_codes),
    p!(c"ds_counters", INT, ds_counters),
    // cluster mode (issue 10, src/module/cluster.rs)
    p!(c"cluster_mode", INT, cluster_mode),
    p!(c"cluster_probing", INT, cluster_probing),
    p!(c"cluster_channel", STR, cluster_channel),
    p!(c"cluster_node_uri", STR, cluster_node_uri),
    p!(c"cluster_id", INT, cluster_id),
    p!(c"cluster_heartbeat", INT, cluster_heartbeat),
    p!(c"cluster_node_timeout", INT, cluster_node_timeout),
    p!(c"cluster_flush_interval", INT, cluster_flush_interval),
    p!(c"cluster_max_body", INT, cluster_max_body),
    p!(c"cluster_max_bodies", INT, cluster_max_bodies),
    p!(c"cluster_mark_scope", INT, cluster_mark_scope),
    p!(c"cluster_max_dests", INT, cluster_max_dests),
    param_export_t { name: null_mut(), type_: 0, param_pointer: null_mut() },
];

/// Module configuration as plain values (copied into every process by fork).
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub list_file: String,
    pub force_dst: bool,
    pub flags: i32,
    pub use_default: bool,
    pub xavp_dst: Vec<u8>,
    pub xavp_dst_mode: i32,
    pub xavp_ctx: Vec<u8>,
    pub xavp_ctx_mode: i32,
    pub hash_pvar: Vec<u8>,
    pub setid_pvname: Vec<u8>,
    pub attrs_pvname: Vec<u8>,
    pub attrs_none: bool,
    pub load_mode: i32,
    pub reload_delta: i64,
    pub dns_mode: i32,
    pub default_socket: Vec<u8>,
    pub default_sockname: Vec<u8>,
    pub probing_mode: i32,
    pub hash_size: i32,
    pub hash_expire: i32,
    pub hash_initexpire: i32,
    pub hash_check_interval: i32,
    pub timer_mode: i32,
    pub probing_threshold: i32,
    pub inactive_threshold: i32,
    pub event_callback: Vec<u8>,
    pub ping_interval: i32,
    pub ping_method: Vec<u8>,
    pub ping_from: Vec<u8>,
    pub outbound_proxy: Vec<u8>,
    pub ping_reply_codes: Vec<u8>,
    pub latency_stats: bool,
    /// Weight of the old estimate (`ds_latency_estimator_alpha` / 1000).
    pub latency_alpha: f64,
    /// Keep runtime state of destinations that stay across reloads (0 = 5.6.3 behaviour).
    pub keep_state: bool,
    pub dns_interval: i32,
    pub dns_ttl: i32,
    pub db_url: Vec<u8>,
    pub table_name: Vec<u8>,
    /// setid, destination, flags, priority, attrs column names
    pub cols: [Vec<u8>; 5],
    pub db_extra_attrs: Vec<u8>,
    pub retain_latency: bool,
    /// keepalive fr_timeout in tm ticks (6.1), 0 = tm default
    pub ping_fr_timeout: i32,
    pub ping_socket: Vec<u8>,
    /// 0 runtime (keepalives and cfg marks), 1 keepalives only, 2 runtime + initial state
    pub event_callback_mode: i32,
    pub dns_match_all: bool,
}

fn get_str(s: *const str_) -> Vec<u8> {
    // SAFETY: `s` points at one of this module's statics (read in mod_init, single-threaded).
    crate::kam::param::unsafe_bytes(unsafe { *s }).to_vec()
}

impl Config {
    /// Reads the modparam statics (call in `mod_init`, single-threaded main process).
    pub fn from_params() -> Config {
        // SAFETY: the core finished writing the params before mod_init; nothing writes them later.
        unsafe {
            let lf = if list_file.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(list_file).to_string_lossy().into_owned()
            };
            Config {
                list_file: lf,
                force_dst: force_dst != 0,
                flags,
                use_default: use_default != 0,
                xavp_dst: get_str(&raw const xavp_dst),
                xavp_dst_mode,
                xavp_ctx: get_str(&raw const xavp_ctx),
                xavp_ctx_mode,
                hash_pvar: get_str(&raw const hash_pvar),
                setid_pvname: get_str(&raw const setid_pvname),
                attrs_pvname: get_str(&raw const attrs_pvname),
                attrs_none: ds_attrs_none != 0,
                load_mode: ds_load_mode,
                reload_delta: reload_delta as i64,
                dns_mode: ds_dns_mode,
                default_socket: get_str(&raw const ds_default_socket),
                default_sockname: get_str(&raw const ds_default_sockname),
                probing_mode: ds_probing_mode,
                hash_size: ds_hash_size,
                hash_expire: ds_hash_expire,
                hash_initexpire: ds_hash_initexpire,
                hash_check_interval: ds_hash_check_interval,
                timer_mode: ds_timer_mode,
                probing_threshold: ds_probing_threshold,
                inactive_threshold: ds_inactive_threshold,
                event_callback: get_str(&raw const event_callback),
                ping_interval: ds_ping_interval,
                ping_method: get_str(&raw const ds_ping_method),
                ping_from: get_str(&raw const ds_ping_from),
                outbound_proxy: get_str(&raw const outbound_proxy),
                ping_reply_codes: get_str(&raw const ds_ping_reply_codes),
                latency_stats: ds_ping_latency_stats != 0,
                latency_alpha: match (ALPHA_IS_SAMPLE_WEIGHT, (1..=999).contains(&{ ds_latency_estimator_alpha })) {
                    (false, true) => ds_latency_estimator_alpha as f64 / 1000.0,
                    (false, false) => 0.9,
                    // stored as the weight of the old estimate either way
                    (true, true) => 1.0 - ds_latency_estimator_alpha as f64 / 1000.0,
                    (true, false) => 0.9,
                },
                keep_state: ds_reload_keep_state != 0,
                dns_interval: if ds_dns_interval > 0 { ds_dns_interval } else { 600 },
                dns_ttl: ds_dns_ttl.max(0),
                db_url: get_str(&raw const db_url),
                table_name: get_str(&raw const table_name),
                cols: [
                    get_str(&raw const setid_col),
                    get_str(&raw const destination_col),
                    get_str(&raw const flags_col),
                    get_str(&raw const priority_col),
                    get_str(&raw const attrs_col),
                ],
                db_extra_attrs: get_str(&raw const ds_db_extra_attrs),
                retain_latency: ds_retain_latency_stats != 0,
                ping_fr_timeout: ds_ping_fr_timeout.max(0),
                ping_socket: get_str(&raw const ds_ping_socket),
                event_callback_mode,
                dns_match_all: ds_dns_match_all != 0,
            }
        }
    }
}
