//! Fixed-up cfg function parameters (int/PV and string/PV) and writable PVs.
use std::os::raw::{c_char, c_int};

use crate::sys;

/// Value of an int-or-PV parameter fixed up by `fixup_igp_*`.
pub(crate) fn get_int(msg: *mut sys::sip_msg, p: *mut c_char) -> Option<i32> {
    if p.is_null() {
        return None;
    }
    let mut v: c_int = 0;
    // SAFETY: `p` is the fparam_t the core's fixup created for this parameter; msg is the
    // current message (may be null only where the core allows it).
    let rc = unsafe { sys::get_int_fparam(&mut v, msg, p as *mut sys::fparam_t) };
    if rc == 0 { Some(v) } else { None }
}

/// Value of a string-with-PVs parameter fixed up by `fixup_spve_*`; copied out.
pub(crate) fn get_str(msg: *mut sys::sip_msg, p: *mut c_char) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    let mut s = sys::str_ { s: std::ptr::null_mut(), len: 0 };
    // SAFETY: as in `get_int`; the result points into a core buffer valid until the next call.
    let rc = unsafe { sys::get_str_fparam(&mut s, msg, p as *mut sys::fparam_t) };
    if rc != 0 {
        return None;
    }
    Some(unsafe_bytes(s).to_vec())
}

/// Borrows a Kamailio `str` as bytes (empty for null).
pub fn unsafe_bytes<'a>(s: sys::str_) -> &'a [u8] {
    if s.s.is_null() || s.len <= 0 {
        &[]
    } else {
        // SAFETY: callers pass a `str` that the core guarantees valid for the current call.
        unsafe { std::slice::from_raw_parts(s.s as *const u8, s.len as usize) }
    }
}

/// A writable pseudo-variable parsed once at startup (e.g. `setid_pvname`).
pub struct PvSpec(*mut sys::pv_spec_t);
// SAFETY: created before fork; each process uses its own copy of the (pkg) spec.
unsafe impl Send for PvSpec {}
// SAFETY: Kamailio processes are single-threaded.
unsafe impl Sync for PvSpec {}

/// `EQ_T` from core/lvalue.h: plain assignment.
const EQ_T: c_int = 254;

impl PvSpec {
    /// Parses `name` (e.g. `$var(x)`); None when it is not a valid PV.
    pub fn parse(name: &[u8]) -> Option<PvSpec> {
        let mut v = name.to_vec();
        let mut s = sys::str_ { s: v.as_mut_ptr() as *mut c_char, len: v.len() as c_int };
        // SAFETY: pv_cache_get copies the name and returns a spec owned by the PV cache.
        let p = unsafe { sys::pv_cache_get(&mut s) };
        if p.is_null() { None } else { Some(PvSpec(p)) }
    }
    pub fn writable(&self) -> bool {
        // SAFETY: self.0 is a valid spec from the PV cache.
        unsafe { (*self.0).setf.is_some() }
    }
    fn set(&self, msg: *mut sys::sip_msg, val: &mut sys::pv_value_t) -> bool {
        // SAFETY: self.0 is valid; setf is the PV's own setter; val is fully initialised.
        unsafe {
            match (*self.0).setf {
                Some(f) => f(msg, &mut (*self.0).pvp, EQ_T, val) >= 0,
                None => false,
            }
        }
    }
    pub fn set_int(&self, msg: *mut sys::sip_msg, v: i32) -> bool {
        let mut val: sys::pv_value_t = Default::default();
        val.flags = (sys::PV_VAL_INT | sys::PV_TYPE_INT) as _;
        val.ri = v as _;
        self.set(msg, &mut val)
    }
    pub fn set_str(&self, msg: *mut sys::sip_msg, v: &[u8]) -> bool {
        let mut val: sys::pv_value_t = Default::default();
        val.flags = sys::PV_VAL_STR as _;
        val.rs = sys::str_ { s: v.as_ptr() as *mut c_char, len: v.len() as c_int };
        self.set(msg, &mut val)
    }
}

/// Value of a parameter read with `get_is_fparam` (what the C module's selection functions
/// use).
pub(crate) enum IsValue {
    /// the core could produce an int (its PARAM_INT flag)
    Int(i32),
    /// only a string (PARAM_STR), e.g. a PV holding "abc"; copied out
    Str(Vec<u8>),
    /// no value at all (`get_is_fparam` failed)
    None,
}

pub(crate) fn get_is(msg: *mut sys::sip_msg, p: *mut c_char) -> IsValue {
    if p.is_null() {
        return IsValue::None;
    }
    // a constant integer (the fixup stored it as FPARAM_INT): read it directly, without the
    // core call (get_is_fparam returns exactly this value with PARAM_INT for that type)
    if let Some(v) = const_int(p) {
        return IsValue::Int(v);
    }
    let mut i: c_int = 0;
    let mut s = sys::str_ { s: std::ptr::null_mut(), len: 0 };
    let mut flags: std::os::raw::c_uint = 0;
    // SAFETY: `p` is the fparam_t created by the core's fixup; outputs are local.
    let rc = unsafe { sys::get_is_fparam(&mut i, &mut s, msg, p as *mut sys::fparam_t, &mut flags) };
    if rc != 0 {
        IsValue::None
    } else if flags & (sys::PARAM_INT as u32) != 0 {
        IsValue::Int(i)
    } else if flags & (sys::PARAM_STR as u32) != 0 {
        IsValue::Str(unsafe_bytes(s).to_vec())
    } else {
        IsValue::None
    }
}

/// The value of a constant integer parameter (fixed up as FPARAM_INT), without any call;
/// None for every other kind of parameter (read those with [`get_is`]).
#[inline]
pub(crate) fn const_int(p: *mut c_char) -> Option<i32> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is the fparam_t the core's fixup created; `i` is read only for FPARAM_INT.
    unsafe {
        let fp = &*(p as *const sys::fparam_t);
        if fp.type_ == sys::FPARAM_INT as std::os::raw::c_int {
            Some(fp.v.i)
        } else {
            None
        }
    }
}

/// Int value of a parameter read with `get_is_fparam`: None unless the core could produce an
/// int (its PARAM_INT flag).
pub(crate) fn get_int_is(msg: *mut sys::sip_msg, p: *mut c_char) -> Option<i32> {
    match get_is(msg, p) {
        IsValue::Int(i) => Some(i),
        _ => None,
    }
}

/// A PV format string (e.g. `hash_pvar`), parsed once at startup.
pub struct PvFormat(sys::pv_elem_p);
// SAFETY: parsed in mod_init before fork (pkg copy in every process); processes are single-threaded.
unsafe impl Send for PvFormat {}
// SAFETY: as above.
unsafe impl Sync for PvFormat {}

impl PvFormat {
    pub fn parse(fmt: &[u8]) -> Option<PvFormat> {
        // the core keeps pointers into the format text: give it a leaked, stable copy
        let v: &'static mut [u8] = Box::leak(fmt.to_vec().into_boxed_slice());
        let mut s = sys::str_ { s: v.as_mut_ptr() as *mut c_char, len: v.len() as c_int };
        let mut el: sys::pv_elem_p = std::ptr::null_mut();
        // SAFETY: valid input string; the core allocates the element list in pkg.
        let rc = unsafe { sys::pv_parse_format(&mut s, &mut el) };
        if rc < 0 || el.is_null() { None } else { Some(PvFormat(el)) }
    }
    /// Expands the format for `msg` (copied out).
    pub(crate) fn print(&self, msg: *mut sys::sip_msg) -> Option<Vec<u8>> {
        let mut out = sys::str_ { s: std::ptr::null_mut(), len: 0 };
        // SAFETY: the element list is valid for the process lifetime; the result points into a
        // core static buffer that we copy at once.
        let rc = unsafe { sys::pv_printf_s(msg, self.0, &mut out) };
        if rc < 0 { None } else { Some(unsafe_bytes(out).to_vec()) }
    }
}
