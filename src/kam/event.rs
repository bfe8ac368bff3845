//! Running `event_route[...]` blocks (or the KEMI `event_callback`).
use std::ffi::CString;
use std::os::raw::{c_char, c_int};

use crate::kam::mem::pkg_alloc;
use crate::kam::msg::Msg;
use crate::sys;

/// Whether the cfg has `event_route[name]` (looked up each time: cheap hash lookup).
fn route_index(name: &str) -> Option<c_int> {
    let c = CString::new(name).ok()?;
    // SAFETY: event_rt is the core's global route table; route_lookup only reads it.
    unsafe {
        let rt = sys::route_lookup(&raw mut sys::event_rt, c.as_ptr() as *mut c_char);
        if rt < 0 || (*sys::event_rt.rlist.add(rt as usize)).is_null() {
            return None;
        }
        Some(rt)
    }
}

/// Runs event route `name` (or the KEMI callback `callback`) for destination `uri`.
///
/// * `faked_always` false (the C module up to 6.0.2): on `msg`, or on a faked message whose
///   R-URI is `uri` when there is no message;
/// * `faked_always` true (6.0.3+): always on a faked message whose R-URI is set to `uri`
///   with the core's `rewrite_uri` and reset afterwards (`reset_uri`), whatever `msg` is.
pub fn run(name: &str, msg: Option<Msg>, uri: &[u8], callback: &[u8], faked_always: bool) {
    // SAFETY: the sequence the core expects for event routes (see kamailio-abi.md §10.3);
    // the faked message's new_uri is a pkg buffer (our copy or rewrite_uri's), freed and
    // cleared afterwards.
    unsafe {
        let rt = if callback.is_empty() {
            match route_index(name) {
                Some(r) => Some(r),
                None => return,
            }
        } else {
            None
        };
        let keng = if rt.is_none() {
            let k = sys::sr_kemi_eng_get();
            if k.is_null() {
                return;
            }
            k
        } else {
            std::ptr::null_mut()
        };
        let mut faked = false;
        let m = match msg {
            Some(m) if !m.is_null() && !faked_always => m.0,
            _ => {
                if sys::faked_msg_init() < 0 {
                    crate::ds_err!(fn "ds_run_route"; "faked_msg_init() failed");
                    return;
                }
                let f = sys::faked_msg_next();
                if f.is_null() {
                    return;
                }
                if faked_always {
                    let mut u = sys::str_ { s: uri.as_ptr() as *mut c_char, len: uri.len() as c_int };
                    if sys::rewrite_uri(f, &mut u) < 0 {
                        crate::ds_err!(fn "ds_run_route"; "failed to set r-uri");
                        return;
                    }
                } else {
                    let copy = pkg_alloc(uri.len() + 1);
                    if copy.is_null() {
                        return;
                    }
                    std::ptr::copy_nonoverlapping(uri.as_ptr(), copy, uri.len());
                    *copy.add(uri.len()) = 0;
                    (*f).parsed_orig_ruri_ok = 0;
                    (*f).new_uri = sys::str_ { s: copy as *mut c_char, len: uri.len() as c_int };
                }
                faked = true;
                f
            }
        };
        let backup = sys::route_type;
        sys::route_type = sys::REQUEST_ROUTE as c_int;
        if let Some(r) = rt {
            sys::run_top_route(*sys::event_rt.rlist.add(r as usize), m, std::ptr::null_mut());
        } else {
            // app_lua reads the names as C strings: keep them NUL-terminated
            let mut cb_z = callback.to_vec();
            cb_z.push(0);
            let mut ev_z = name.as_bytes().to_vec();
            ev_z.push(0);
            let mut cb = sys::str_ { s: cb_z.as_mut_ptr() as *mut c_char, len: callback.len() as c_int };
            let mut ev = sys::str_ { s: ev_z.as_mut_ptr() as *mut c_char, len: name.len() as c_int };
            if sys::sr_kemi_route(keng, m, sys::EVENT_ROUTE as c_int, &mut cb, &mut ev) < 0 && faked_always {
                crate::ds_err!(fn "ds_run_route"; "error running event route kemi callback");
            }
        }
        sys::route_type = backup;
        if faked {
            // reset_uri(): our pkg copy, or the pkg buffer the route put there instead
            let cur = (*m).new_uri.s;
            if !cur.is_null() {
                sys::rds_pkg_free(cur as *mut _);
            }
            (*m).new_uri = sys::str_ { s: std::ptr::null_mut(), len: 0 };
            (*m).parsed_uri_ok = 0;
            if faked_always {
                // ruri_mark_new()
                sys::ruri_is_new = 1;
            }
        }
    }
}
