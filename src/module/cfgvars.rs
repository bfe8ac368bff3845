//! The cfg-framework group `dispatcher` (spec X-03): `probing_threshold`, `inactive_threshold`
//! (declared; like 5.6.3 they have no runtime effect) and `ping_reply_codes` (applied at
//! runtime: `kamcmd cfg.set_now_string dispatcher ping_reply_codes "class=4"`).
use std::cell::RefCell;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;

use crate::ds::health::ReplyCodes;
use crate::kam::param::unsafe_bytes;
use crate::sys;

#[repr(C)]
struct Group {
    probing_threshold: c_int,
    inactive_threshold: c_int,
    ping_reply_codes: sys::str_,
}

static mut DEFAULTS: Group = Group { probing_threshold: 1, inactive_threshold: 1, ping_reply_codes: sys::str_ { s: null_mut(), len: 0 } };
static mut HANDLE: *mut c_void = &raw mut DEFAULTS as *mut c_void;

const INT_ATOMIC: u32 = 1 | (1 << 6); // CFG_VAR_INT | CFG_ATOMIC
const STR: u32 = 3; // CFG_VAR_STR

static mut DEFS: [sys::cfg_def_t; 4] = [
    sys::cfg_def_t {
        name: c"probing_threshold".as_ptr() as *mut c_char,
        type_: INT_ATOMIC,
        min: 0,
        max: 0,
        on_change_cb: None,
        on_set_child_cb: None,
        descr: c"Number of failed requests before a destination is set to inactive".as_ptr() as *mut c_char,
    },
    sys::cfg_def_t {
        name: c"inactive_threshold".as_ptr() as *mut c_char,
        type_: INT_ATOMIC,
        min: 0,
        max: 0,
        on_change_cb: None,
        on_set_child_cb: None,
        descr: c"Number of successful requests before a destination is set to active".as_ptr() as *mut c_char,
    },
    sys::cfg_def_t {
        name: c"ping_reply_codes".as_ptr() as *mut c_char,
        type_: STR,
        min: 0,
        max: 0,
        on_change_cb: None,
        on_set_child_cb: None,
        descr: c"Additional reply codes that are considered as valid replies to keepalives".as_ptr() as *mut c_char,
    },
    sys::cfg_def_t { name: null_mut(), type_: 0, min: 0, max: 0, on_change_cb: None, on_set_child_cb: None, descr: null_mut() },
];

/// Declares the group with the modparam values as defaults (mod_init).
pub fn declare(probing: i32, inactive: i32, codes: &[u8]) -> bool {
    let v: &'static mut [u8] = Box::leak(codes.to_vec().into_boxed_slice());
    // SAFETY: mod_init, single-threaded main process; the core copies the defaults and keeps
    // the definitions and the handle pointer for the process lifetime.
    unsafe {
        DEFAULTS.probing_threshold = probing;
        DEFAULTS.inactive_threshold = inactive;
        DEFAULTS.ping_reply_codes = sys::str_ { s: v.as_mut_ptr() as *mut c_char, len: v.len() as c_int };
        sys::cfg_declare(
            c"dispatcher".as_ptr() as *mut c_char,
            &raw mut DEFS as *mut sys::cfg_def_t,
            &raw mut DEFAULTS as *mut c_void,
            std::mem::size_of::<Group>() as c_int,
            &raw mut HANDLE,
        ) == 0
    }
}

thread_local! {
    static CACHE: RefCell<(Vec<u8>, ReplyCodes)> = RefCell::new((Vec::new(), ReplyCodes::default()));
}

/// The reply codes currently configured for this process (re-parsed when the value changed).
pub fn with_reply_codes<R>(f: impl FnOnce(&ReplyCodes) -> R) -> R {
    // SAFETY: HANDLE points at this process' copy of the group (maintained by the core).
    let cur = unsafe { unsafe_bytes((*(HANDLE as *const Group)).ping_reply_codes) };
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != cur {
            *c = (cur.to_vec(), ReplyCodes::parse(cur));
        }
        f(&c.1)
    })
}
