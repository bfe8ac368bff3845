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

/// A keepalive to send with [`request`].
pub struct Request<'a> {
    pub method: &'a [u8],
    /// R-URI and To URI.
    pub uri: &'a [u8],
    pub from: &'a [u8],
    /// Outbound proxy; empty: none.
    pub obproxy: &'a [u8],
    /// Sending socket by name; empty: see `ssock`.
    pub ssockname: &'a [u8],
    /// Sending socket as `proto:host:port`; empty: the core chooses.
    pub ssock: &'a [u8],
    /// Kamailio 6.1 tm: the From tag (empty: tm generates one). Ignored before 6.1.
    pub fromtag: &'a [u8],
    /// Kamailio 6.1 tm: the transaction's `fr_timeout` in tm ticks (1/16 s), stored raw by
    /// tm; 0: tm's `fr_timer`. Ignored before 6.1.
    pub fr_timeout: u32,
}

/// Sends a local request (`t_request`) described by `q`. `cbp` comes back in the callback.
/// False when TM refused it.
pub fn request(q: &Request<'_>, cb: Done, cbp: usize) -> bool {
    let Some(tm) = TM.get() else { return false };
    let Some(treq) = tm.0.t_request else { return false };
    let k = |b: &[u8]| sys::str_ { s: b.as_ptr() as *mut c_char, len: b.len() as c_int };
    let mut m = k(q.method);
    let mut u = k(q.uri);
    let mut to = k(q.uri);
    let mut f = k(q.from);
    let mut ob = k(q.obproxy);
    let mut sn = k(q.ssockname);
    let mut sa = k(q.ssock);
    let mut r: sys::uac_req_t = Default::default();
    r.method = &mut m;
    r.cb_flags = sys::TMCB_LOCAL_COMPLETED as _;
    r.cb = Some(cb);
    r.cbp = cbp as *mut c_void;
    if !q.ssockname.is_empty() {
        r.ssockname = &mut sn;
    } else if !q.ssock.is_empty() {
        r.ssock = &mut sa;
    }
    #[cfg(kam_ge_6_1)]
    let mut ft = k(q.fromtag);
    #[cfg(kam_ge_6_1)]
    {
        if !q.fromtag.is_empty() {
            r.fromtag = &mut ft;
        }
        if q.fr_timeout > 0 {
            r.fr_timeout = q.fr_timeout as _;
        }
    }
    // SAFETY: all strings outlive the call; TM copies what it keeps into shm.
    unsafe { treq(&mut r, &mut u, &mut to, &mut f, if q.obproxy.is_empty() { std::ptr::null_mut() } else { &mut ob }) >= 0 }
}

/// Why a sending socket given as `proto:host:port` cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockError {
    /// `parse_phostport` refused the text.
    Bad,
    /// Not one of this Kamailio's listening sockets (`grep_sock_info`).
    NonLocal,
}

/// Checks a sending socket the way the C module checks `ds_ping_socket` at startup.
pub fn check_socket(spec: &[u8]) -> Result<(), SockError> {
    let mut z = spec.to_vec();
    z.push(0);
    let mut host: *mut c_char = std::ptr::null_mut();
    let (mut hlen, mut port, mut proto) = (0 as c_int, 0 as c_int, 0 as c_int);
    // SAFETY: z is NUL-terminated and outlives both calls; the outputs point into z.
    unsafe {
        if sys::parse_phostport(z.as_mut_ptr() as *mut c_char, &mut host, &mut hlen, &mut port, &mut proto) != 0 {
            return Err(SockError::Bad);
        }
        let mut h = sys::str_ { s: host, len: hlen };
        if sys::grep_sock_info(&mut h, port as u16, proto as u16).is_null() {
            return Err(SockError::NonLocal);
        }
    }
    Ok(())
}

/// What a completed local request callback reports.
pub struct Completion {
    pub cbp: usize,
    pub code: i32,
    pub real_reply: bool,
    pub reason: Vec<u8>,
    /// The request URI, recovered from the transaction's To header.
    pub uri: Vec<u8>,
    /// The transaction's whole From header line (carries the 6.1 IUID From tag).
    pub from_hdr: Vec<u8>,
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
        #[cfg(not(kam_ge_5_7))]
        let from_hdr = unsafe_bytes((*t).from).to_vec();
        #[cfg(kam_ge_5_7)]
        let from_hdr = unsafe_bytes((*t).from_hdr).to_vec();
        Some(Completion { cbp, code: (*ps).code, real_reply: real, reason, uri, from_hdr })
    }
}

/// Transaction callback types used by the reply tracking (TM's `TMCB_*` bits).
#[allow(clippy::unnecessary_cast)] // the bindgen constant type differs between versions
pub const CB_RESPONSE_IN: i32 = sys::TMCB_RESPONSE_IN as i32;
#[allow(clippy::unnecessary_cast)]
pub const CB_ON_FAILURE: i32 = sys::TMCB_ON_FAILURE as i32;
#[allow(clippy::unnecessary_cast)]
pub const CB_DESTROY: i32 = sys::TMCB_DESTROY as i32;
#[allow(clippy::unnecessary_cast)]
pub const CB_REQUEST_SENT: i32 = sys::TMCB_REQUEST_SENT as i32;

/// A transaction callback.
pub type TransCb = unsafe extern "C" fn(*mut sys::cell, c_int, *mut sys::tmcb_params);
/// Called by TM with the callback's parameter when the callback is dropped (transaction
/// freed, or the message's pending callbacks discarded without a transaction).
pub type ReleaseCb = unsafe extern "C" fn(*mut c_void);

/// Registers `cb` for `types` on the transaction of `msg` (or, before the transaction
/// exists, on the pending list TM moves to it when `t_relay` creates it). False on failure.
///
/// # Safety
/// `msg` is the message being processed by this process.
pub unsafe fn register_cb(msg: *mut sys::sip_msg, types: i32, cb: TransCb, param: usize, release: Option<ReleaseCb>) -> bool {
    let Some(tm) = TM.get() else { return false };
    let Some(reg) = tm.0.register_tmcb else { return false };
    // SAFETY: guaranteed by the caller; TM copies the registration into shm.
    unsafe { reg(msg, std::ptr::null_mut(), types as c_int, Some(cb), param as *mut c_void, release) >= 0 }
}

/// The transaction this process works on now (None: none or not looked up yet).
pub fn current_t() -> Option<*mut sys::cell> {
    let tm = TM.get()?;
    let g = tm.0.t_gett?;
    // SAFETY: TM's t_gett reads its per-process current transaction.
    let t = unsafe { g() };
    if t.is_null() || t as isize == -1 {
        None
    } else {
        Some(t)
    }
}

/// The branch of the reply being processed (TM's `T_branch`); negative: undefined.
pub fn current_branch() -> i32 {
    let Some(tm) = TM.get() else { return -1 };
    let Some(g) = tm.0.t_gett_branch else { return -1 };
    // SAFETY: TM's per-process current branch index.
    unsafe { g() }
}

/// Branches created on transaction `t` so far.
///
/// # Safety
/// `t` is a live transaction.
pub unsafe fn nr_of_outgoings(t: *mut sys::cell) -> i32 {
    // SAFETY: guaranteed by the caller.
    unsafe { (*t).nr_of_outgoings as i32 }
}

/// The last reply code of branch `b` of `t` (0: none; TM also stores its local 408 here).
///
/// # Safety
/// `t` is a live transaction.
pub unsafe fn branch_last_received(t: *mut sys::cell, b: i32) -> i32 {
    // SAFETY: guaranteed by the caller; `uac` has `nr_of_outgoings` initialised entries.
    unsafe {
        if b < 0 || b >= (*t).nr_of_outgoings as i32 || (*t).uac.is_null() {
            return 0;
        }
        (*(*t).uac.add(b as usize)).last_received
    }
}

/// The branch whose own request a `TMCB_REQUEST_SENT` callback reports as sent (first send or
/// TM's retransmission); None for a locally generated CANCEL or ACK.
///
/// # Safety
/// Arguments of a TM `TMCB_REQUEST_SENT` callback.
pub unsafe fn sent_branch(ps: *mut sys::tmcb_params) -> Option<i32> {
    // SAFETY: guaranteed by the caller; TM passes the branch's retransmission buffer.
    unsafe {
        #[allow(clippy::unnecessary_cast)]
        if ps.is_null() || (*ps).t_rbuf.is_null() || ((*ps).flags as i32 & sys::TMCB_LOCAL_F as i32) != 0 {
            return None;
        }
        Some((*(*ps).t_rbuf).branch as i32)
    }
}

/// What a transaction callback was called with: (reply code, reply is a real received
/// message, the reply is to a CANCEL, the callback's parameter cell).
///
/// # Safety
/// Arguments of a TM transaction callback.
pub unsafe fn cb_args(ps: *mut sys::tmcb_params) -> Option<(i32, bool, bool, *mut *mut c_void)> {
    // SAFETY: guaranteed by the caller; FAKED_REPLY is (sip_msg*)-1.
    unsafe {
        if ps.is_null() || (*ps).param.is_null() {
            return None;
        }
        let rpl = (*ps).rpl;
        let real = !rpl.is_null() && rpl as isize != -1;
        let mut cancel = false;
        if real && !(*rpl).cseq.is_null() {
            let cs = (*(*rpl).cseq).parsed as *const sys::cseq_body;
            // METHOD_CANCEL = 2
            cancel = !cs.is_null() && (*cs).method_id == 2;
        }
        Some(((*ps).code, real, cancel, (*ps).param))
    }
}
