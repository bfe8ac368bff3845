//! KEMI exports (`KSR.dispatcher.*`, spec X-01), registered from `mod_register`.
use std::os::raw::{c_char, c_int, c_void};

use crate::ds::health::parse_mark_state;
use crate::ds::snapshot::{DS_INACTIVE, DS_PROBING};
use crate::kam::msg::Msg;
use crate::kam::param::unsafe_bytes;
use crate::module::cmds::{self, SetOp};
use crate::module::{guard, health, state};
use crate::sys::{self, sip_msg, str_};

type M = *mut sip_msg;
const NOLIMIT: u32 = 65535;

fn msg(m: M) -> Option<Msg> {
    if m.is_null() { None } else { Some(Msg(m)) }
}
fn s(p: *mut str_) -> Vec<u8> {
    // SAFETY: the KEMI engine passes valid str pointers for the call.
    if p.is_null() { Vec::new() } else { unsafe_bytes(unsafe { *p }).to_vec() }
}

macro_rules! kfn {
    ($name:ident, |$m:ident $(, $a:ident: $t:ty)*| $e:expr) => {
        unsafe extern "C" fn $name(mm: M $(, $a: $t)*) -> c_int {
            guard(stringify!($name), -1, || match msg(mm) {
                Some($m) => $e,
                None => -1,
            })
        }
    };
}

kfn!(ki_select, |m, set: c_int, alg: c_int| cmds::select_dst(m, set, alg, NOLIMIT, SetOp::Xavp));
kfn!(ki_select_limit, |m, set: c_int, alg: c_int, l: c_int| cmds::select_dst(m, set, alg, l as u32, SetOp::Xavp));
kfn!(ki_select_domain, |m, set: c_int, alg: c_int| cmds::select_dst(m, set, alg, NOLIMIT, SetOp::Ruri));
kfn!(ki_select_domain_limit, |m, set: c_int, alg: c_int, l: c_int| cmds::select_dst(m, set, alg, l as u32, SetOp::Ruri));
kfn!(ki_select_dst, |m, set: c_int, alg: c_int| cmds::select_dst(m, set, alg, NOLIMIT, SetOp::DstUri));
kfn!(ki_select_dst_limit, |m, set: c_int, alg: c_int, l: c_int| cmds::select_dst(m, set, alg, l as u32, SetOp::DstUri));
kfn!(ki_select_routes, |m, r: *mut str_, md: *mut str_| cmds::select_routes(m, &s(r), &s(md), 0));
kfn!(ki_select_routes_limit, |m, r: *mut str_, md: *mut str_, l: c_int| cmds::select_routes(m, &s(r), &s(md), l as u32));
kfn!(ki_next_dst, |m| cmds::update_dst(m, true, SetOp::DstUri));
kfn!(ki_next_domain, |m| cmds::update_dst(m, true, SetOp::Ruri));
kfn!(ki_set_dst, |m| cmds::update_dst(m, false, SetOp::DstUri));
kfn!(ki_set_domain, |m| cmds::update_dst(m, false, SetOp::Ruri));
kfn!(ki_mark_dst, |m| health::mark_dst(m, default_mark()));
kfn!(ki_mark_dst_state, |m, st: *mut str_| {
    let v = s(st);
    if v.is_empty() {
        health::mark_dst(m, default_mark())
    } else {
        match parse_mark_state(&v) {
            Some(x) => health::mark_dst(m, x),
            None => -1,
        }
    }
});
kfn!(ki_mark_addr, |m, st: *mut str_, g: c_int, u: *mut str_| {
    match parse_mark_state(&s(st)) {
        Some(x) => {
            let r = health::msg_rctx(Some(m));
            if health::update_state(Some(m), g, &s(u), x, r) == 0 { 1 } else { -1 }
        }
        None => -1,
    }
});
kfn!(ki_oc_set_attrs, |_m, g: c_int, u: *mut str_, r: c_int, t: c_int, q: c_int| cmds::oc_set_attrs(g, &s(u), r, t, q));
kfn!(ki_is_from_lists, |m| cmds::is_from_list(m, -1, None, 2));
kfn!(ki_is_from_list, |m, g: c_int| cmds::is_from_list(m, g, None, 2));
kfn!(ki_is_from_list_mode, |m, g: c_int, md: c_int| cmds::is_from_list(m, g, None, md));
kfn!(ki_is_from_list_uri, |m, g: c_int, md: c_int, u: *mut str_| cmds::is_from_list(m, g, Some(&s(u)), md));
kfn!(ki_load_update, |m| if cmds::load_update(m) < 0 { -1 } else { 0 });
kfn!(ki_load_unset, |m| if cmds::load_unset(m) < 0 { -1 } else { 0 });
kfn!(ki_reload, |_m| if state::load_and_install(true).is_ok() { 1 } else { -1 });
kfn!(ki_list_exists, |_m, g: c_int| state::with_snap(|sn| if sn.and_then(|x| x.set(g)).is_some() { 1 } else { -1 }));
kfn!(ki_is_active, |_m, g: c_int| cmds::is_active(g, None));
kfn!(ki_is_active_uri, |_m, g: c_int, u: *mut str_| cmds::is_active(g, Some(&s(u))));

fn default_mark() -> i32 {
    DS_INACTIVE | if state::cfg().probing_mode == 1 { DS_PROBING } else { 0 }
}

const fn kstr(v: &'static std::ffi::CStr) -> str_ {
    str_ { s: v.as_ptr() as *mut c_char, len: v.count_bytes() as c_int }
}
const N: c_int = sys::SR_KEMIP_NONE;
const I: c_int = sys::SR_KEMIP_INT;
const S: c_int = sys::SR_KEMIP_STR;

macro_rules! e {
    ($name:literal, $f:expr, [$($p:expr),*]) => {{
        let mut pt = [N; 6];
        let src: &[c_int] = &[$($p),*];
        let mut i = 0;
        while i < src.len() { pt[i] = src[i]; i += 1; }
        sys::sr_kemi_t { mname: kstr(c"dispatcher"), fname: kstr($name), rtype: I, func: $f as *mut c_void, ptypes: pt }
    }};
}

pub static mut KEMI: [sys::sr_kemi_t; 27] = [
    e!(c"ds_select", ki_select as unsafe extern "C" fn(M, c_int, c_int) -> c_int, [I, I]),
    e!(c"ds_select_limit", ki_select_limit as unsafe extern "C" fn(M, c_int, c_int, c_int) -> c_int, [I, I, I]),
    e!(c"ds_select_domain", ki_select_domain as unsafe extern "C" fn(M, c_int, c_int) -> c_int, [I, I]),
    e!(c"ds_select_domain_limit", ki_select_domain_limit as unsafe extern "C" fn(M, c_int, c_int, c_int) -> c_int, [I, I, I]),
    e!(c"ds_next_domain", ki_next_domain as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_set_domain", ki_set_domain as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_select_dst", ki_select_dst as unsafe extern "C" fn(M, c_int, c_int) -> c_int, [I, I]),
    e!(c"ds_select_dst_limit", ki_select_dst_limit as unsafe extern "C" fn(M, c_int, c_int, c_int) -> c_int, [I, I, I]),
    e!(c"ds_select_routes", ki_select_routes as unsafe extern "C" fn(M, *mut str_, *mut str_) -> c_int, [S, S]),
    e!(c"ds_select_routes_limit", ki_select_routes_limit as unsafe extern "C" fn(M, *mut str_, *mut str_, c_int) -> c_int, [S, S, I]),
    e!(c"ds_next_dst", ki_next_dst as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_set_dst", ki_set_dst as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_mark_dst", ki_mark_dst as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_mark_dst_state", ki_mark_dst_state as unsafe extern "C" fn(M, *mut str_) -> c_int, [S]),
    e!(c"ds_mark_addr", ki_mark_addr as unsafe extern "C" fn(M, *mut str_, c_int, *mut str_) -> c_int, [S, I, S]),
    e!(c"ds_oc_set_attrs", ki_oc_set_attrs as unsafe extern "C" fn(M, c_int, *mut str_, c_int, c_int, c_int) -> c_int, [I, S, I, I, I]),
    e!(c"ds_is_from_lists", ki_is_from_lists as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_is_from_list", ki_is_from_list as unsafe extern "C" fn(M, c_int) -> c_int, [I]),
    e!(c"ds_is_from_list_mode", ki_is_from_list_mode as unsafe extern "C" fn(M, c_int, c_int) -> c_int, [I, I]),
    e!(c"ds_is_from_list_uri", ki_is_from_list_uri as unsafe extern "C" fn(M, c_int, c_int, *mut str_) -> c_int, [I, I, S]),
    e!(c"ds_load_update", ki_load_update as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_load_unset", ki_load_unset as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_reload", ki_reload as unsafe extern "C" fn(M) -> c_int, []),
    e!(c"ds_list_exists", ki_list_exists as unsafe extern "C" fn(M, c_int) -> c_int, [I]),
    e!(c"ds_is_active", ki_is_active as unsafe extern "C" fn(M, c_int) -> c_int, [I]),
    e!(c"ds_is_active_uri", ki_is_active_uri as unsafe extern "C" fn(M, c_int, *mut str_) -> c_int, [I, S]),
    sys::sr_kemi_t { mname: str_ { s: std::ptr::null_mut(), len: 0 }, fname: str_ { s: std::ptr::null_mut(), len: 0 }, rtype: 0, func: std::ptr::null_mut(), ptypes: [0; 6] },
];

/// Called by the loader before mod_init: registers the KEMI exports.
///
/// # Safety
/// Called by Kamailio's module loader only (arguments unused).
#[no_mangle]
pub unsafe extern "C" fn mod_register(_path: *mut c_char, _dlflags: *mut c_int, _p1: *mut c_void, _p2: *mut c_void) -> c_int {
    guard("mod_register", -1, || {
        // behave like the C dispatcher of the Kamailio release this module was built for
        crate::ds::compat::set(crate::kam::VERSIONVAL);
        // SAFETY: the static array lives for the process lifetime, as the core requires.
        unsafe { sys::sr_kemi_modules_add(&raw mut KEMI as *mut sys::sr_kemi_t) };
        0
    })
}
