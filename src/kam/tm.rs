//! The TM module's API (bound with its `load_tm` export, as every module does).
use std::os::raw::{c_char, c_int, c_void};

use once_cell::sync::OnceCell;

use crate::kam::param::unsafe_bytes;
use crate::sys;

struct Tm(sys::tm_binds);
// SAFETY: bound in mod_init before fork; read-only afterwards; processes are single-threaded.
unsafe impl Send for Tm {}
// SAFETY: as above.
unsafe impl Sync for Tm {}

static TM: OnceCell<Tm> = OnceCell::new();

/// Binds TM (it must be loaded before this module). False when TM is missing.
pub fn bind() -> bool {
    if TM.get().is_some() {
        return true;
    }
    // SAFETY: find_export returns tm's `load_tm` (signature int(struct tm_binds*)).
    unsafe {
        let f = sys::find_export(c"load_tm".as_ptr() as *mut c_char, -1, 0);
        let Some(f) = f else { return false };
        let load: unsafe extern "C" fn(*mut sys::tm_binds) -> c_int = std::mem::transmute(f);
        let mut b: sys::tm_binds = std::mem::zeroed();
        if load(&mut b) < 0 {
            return false;
        }
        TM.set(Tm(b)).is_ok()
    }
}

/// Callback of a local request: (set id tag, final code, real reply?, reason, To URI).
pub type Done = unsafe extern "C" fn(*mut sys::cell, c_int, *mut sys::tmcb_params);

/// Sends a local request (`t_request`): method to `uri` (R-URI and To), From `from`,
/// via `obproxy` when non-empty, from socket name/address when given. `cbp` comes back in
/// the callback. False when TM refused it.
#[allow(clippy::too_many_arguments)]
pub fn request(method: &[u8], uri: &[u8], from: &[u8], obproxy: &[u8], ssockname: &[u8], ssock: &[u8], cb: Done, cbp: usize) -> bool {
    let Some(tm) = TM.get() else { return false };
    let Some(treq) = tm.0.t_request else { return false };
    let k = |b: &[u8]| sys::str_ { s: b.as_ptr() as *mut c_char, len: b.len() as c_int };
    let mut m = k(method);
    let mut u = k(uri);
    let mut to = k(uri);
    let mut f = k(from);
    let mut ob = k(obproxy);
    let mut sn = k(ssockname);
    let mut sa = k(ssock);
    let mut r: sys::uac_req_t = Default::default();
    r.method = &mut m;
    r.cb_flags = sys::TMCB_LOCAL_COMPLETED as _;
    r.cb = Some(cb);
    r.cbp = cbp as *mut c_void;
    if !ssockname.is_empty() {
        r.ssockname = &mut sn;
    } else if !ssock.is_empty() {
        r.ssock = &mut sa;
    }
    // SAFETY: all strings outlive the call; TM copies what it keeps into shm.
    unsafe { treq(&mut r, &mut u, &mut to, &mut f, if obproxy.is_empty() { std::ptr::null_mut() } else { &mut ob }) >= 0 }
}

/// What a completed local request callback reports.
pub struct Completion {
    pub cbp: usize,
    pub code: i32,
    pub real_reply: bool,
    pub reason: Vec<u8>,
    /// The request URI, recovered from the transaction's To header.
    pub uri: Vec<u8>,
}

/// Reads a TM callback's arguments.
///
/// # Safety
/// Arguments of a TM transaction callback.
pub unsafe fn completion(t: *mut sys::cell, ps: *mut sys::tmcb_params) -> Option<Completion> {
    // SAFETY: guaranteed by the caller; FAKED_REPLY is (sip_msg*)-1.
    unsafe {
        if ps.is_null() || t.is_null() || (*ps).param.is_null() {
            return None;
        }
        let cbp = *(*ps).param as usize;
        let rpl = (*ps).rpl;
        let real = !rpl.is_null() && rpl as isize != -1;
        let reason = if real { unsafe_bytes((*rpl).first_line.u.reply.reason).to_vec() } else { Vec::new() };
        #[cfg(not(kam_ge_5_7))]
        let to = unsafe_bytes((*t).to);
        #[cfg(kam_ge_5_7)]
        let to = unsafe_bytes((*t).to_hdr);
        // "To: <" + uri + ">\r\n"
        let uri = if to.len() > 8 { to[5..to.len() - 3].to_vec() } else { Vec::new() };
        Some(Completion { cbp, code: (*ps).code, real_reply: real, reason, uri })
    }
}
