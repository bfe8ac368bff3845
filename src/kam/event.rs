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

/// Runs event route `name` (or the KEMI callback `callback`) on `msg`, or on a faked
/// OPTIONS message whose R-URI is `uri` when there is no message.
pub fn run(name: &str, msg: Option<Msg>, uri: &[u8], callback: &[u8]) {
    // SAFETY: the sequence the core expects for event routes (see kamailio-abi.md §10.3);
    // the faked message's new_uri is a pkg copy, freed and cleared afterwards.
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
        let mut faked_uri: *mut u8 = std::ptr::null_mut();
        let m = match msg {
            Some(m) if !m.is_null() => m.0,
            _ => {
                if sys::faked_msg_init() < 0 {
                    return;
                }
                let f = sys::faked_msg_next();
                if f.is_null() {
                    return;
                }
                faked_uri = pkg_alloc(uri.len() + 1);
                if faked_uri.is_null() {
                    return;
                }
                std::ptr::copy_nonoverlapping(uri.as_ptr(), faked_uri, uri.len());
                *faked_uri.add(uri.len()) = 0;
                (*f).parsed_orig_ruri_ok = 0;
                (*f).new_uri = sys::str_ { s: faked_uri as *mut c_char, len: uri.len() as c_int };
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
            sys::sr_kemi_route(keng, m, sys::EVENT_ROUTE as c_int, &mut cb, &mut ev);
        }
        sys::route_type = backup;
        if !faked_uri.is_null() {
            // our pkg copy, or the pkg buffer the route put there after freeing ours
            let cur = (*m).new_uri.s;
            if !cur.is_null() {
                sys::rds_pkg_free(cur as *mut _);
            }
            (*m).new_uri = sys::str_ { s: std::ptr::null_mut(), len: 0 };
        }
    }
}
