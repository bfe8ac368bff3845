//! The DMQ module's API (bound with its `bind_dmq` export, as htable/dialog/dmq_usrloc do).
//!
//! The structures are declared here by hand rather than generated: `dmq_peer_t`,
//! `peer_reponse_t` and `dmq_resp_cback_t` have the same layout from 5.6 to master (checked
//! against the 5.6.3, 5.8.8, 6.0.7 and 6.1.4 headers), `dmq_node_t` changed in 6.1 and is
//! only handled as an opaque pointer, and `dmq_api_t` grew a fifth slot in 6.1: `bind_dmq`
//! gets eight zeroed slots so that no version can write past the end.
use std::os::raw::{c_char, c_int, c_void};

use once_cell::sync::OnceCell;

use crate::sys;

/// `peer_reponse_t` (dmq/peer.h), stable 5.6 → master.
#[repr(C)]
pub struct PeerResponse {
    pub resp_code: c_int,
    pub content_type: sys::str_,
    pub reason: sys::str_,
    pub body: sys::str_,
}

type PeerCallback = unsafe extern "C" fn(*mut sys::sip_msg, *mut PeerResponse, *mut c_void) -> c_int;
/// `init_callback_t`: no argument before master (6.2), a `dmq_node_t*` there; declared with
/// one pointer argument, which the SysV ABI makes harmless for the no-argument callers.
type InitCallback = unsafe extern "C" fn(*mut c_void) -> c_int;

/// `dmq_peer_t` (dmq/peer.h), stable 5.6 → master.
#[repr(C)]
struct DmqPeer {
    peer_id: sys::str_,
    description: sys::str_,
    callback: Option<PeerCallback>,
    init_callback: Option<InitCallback>,
    next: *mut DmqPeer,
}

/// `dmq_resp_cback_t` (dmq/dmq_funcs.h), stable 5.6 → master.
#[repr(C)]
struct RespCback {
    f: Option<unsafe extern "C" fn(*mut sys::sip_msg, c_int, *mut c_void, *mut c_void) -> c_int>,
    param: *mut c_void,
}

type RegisterPeer = unsafe extern "C" fn(*mut DmqPeer) -> *mut DmqPeer;
type Bcast = unsafe extern "C" fn(*mut DmqPeer, *mut sys::str_, *mut c_void, *mut RespCback, c_int, *mut sys::str_) -> c_int;
type Send = unsafe extern "C" fn(*mut DmqPeer, *mut sys::str_, *mut c_void, *mut RespCback, c_int, *mut sys::str_) -> c_int;
type FindNode = unsafe extern "C" fn(*mut sys::str_) -> *mut c_void;

extern "C" {
    /// Core (parser/msg_parser.c): start of the message body, or NULL.
    fn get_body(msg: *mut sys::sip_msg) -> *mut c_char;
}

/// What the module does with a received body: (body, sender From URI) -> nothing; the
/// reply is always 200 without a body.
pub type Handler = fn(&[u8], &[u8]);
/// Told about every final reply (or 408 timeout) of a sent message.
pub type ReplyHandler = fn(i32);

struct Api {
    bcast: Bcast,
    send: Send,
    find_node: FindNode,
    peer: usize,
    on_msg: Handler,
    on_reply: ReplyHandler,
}

static API: OnceCell<Api> = OnceCell::new();

static mut RESP_CB: RespCback = RespCback { f: Some(resp_cb), param: std::ptr::null_mut() };

/// Why binding failed.
#[derive(Debug)]
pub enum BindError {
    NoDmq,
    BindFailed,
    RegisterFailed,
}

/// Binds DMQ and registers the peer (channel) `channel`. mod_init only (before the fork);
/// DMQ must be loaded before this module.
pub fn bind(channel: &[u8], on_msg: Handler, on_reply: ReplyHandler) -> Result<(), BindError> {
    if API.get().is_some() {
        return Ok(());
    }
    // SAFETY: find_export returns dmq's `bind_dmq` (int(dmq_api_t*)); it writes at most 5
    // pointer slots (6.1), we give it 8 zeroed ones. The peer struct and its strings are
    // copied into shm by register_dmq_peer (the id is duplicated), so stack data is fine.
    unsafe {
        let f = sys::find_export(c"bind_dmq".as_ptr() as *mut c_char, 0, 0).ok_or(BindError::NoDmq)?;
        let bindf: unsafe extern "C" fn(*mut [usize; 8]) -> c_int = std::mem::transmute(f);
        let mut slots = [0usize; 8];
        if bindf(&mut slots) < 0 || slots[..4].contains(&0) {
            return Err(BindError::BindFailed);
        }
        let register: RegisterPeer = std::mem::transmute::<usize, RegisterPeer>(slots[0]);
        let id: &'static [u8] = Box::leak(channel.to_vec().into_boxed_slice());
        let desc: &'static [u8] = b"dispatcher cluster state";
        let mut peer = DmqPeer {
            peer_id: sys::str_ { s: id.as_ptr() as *mut c_char, len: id.len() as c_int },
            description: sys::str_ { s: desc.as_ptr() as *mut c_char, len: desc.len() as c_int },
            callback: Some(peer_cb),
            init_callback: Some(init_cb),
            next: std::ptr::null_mut(),
        };
        let reg = register(&mut peer);
        if reg.is_null() {
            return Err(BindError::RegisterFailed);
        }
        let api = Api {
            bcast: std::mem::transmute::<usize, Bcast>(slots[1]),
            send: std::mem::transmute::<usize, Send>(slots[2]),
            find_node: std::mem::transmute::<usize, FindNode>(slots[3]),
            peer: reg as usize,
            on_msg,
            on_reply,
        };
        let _ = API.set(api);
    }
    Ok(())
}

pub fn is_bound() -> bool {
    API.get().is_some()
}

const CT: &[u8] = b"text/plain";

/// Sends `body` to every active DMQ node but this one. False when DMQ refused it.
pub fn bcast(body: &[u8]) -> bool {
    let Some(a) = API.get() else { return false };
    let mut b = sys::str_ { s: body.as_ptr() as *mut c_char, len: body.len() as c_int };
    let mut ct = sys::str_ { s: CT.as_ptr() as *mut c_char, len: CT.len() as c_int };
    // SAFETY: the peer is DMQ's registered copy; body/ct outlive the call (tm copies them);
    // RESP_CB is a static that DMQ copies per transaction and never writes.
    unsafe { (a.bcast)(a.peer as *mut DmqPeer, &mut b, std::ptr::null_mut(), &raw mut RESP_CB, 1, &mut ct) >= 0 }
}

/// Sends `body` to the DMQ node of `uri` (host and port are what DMQ matches). False when
/// DMQ does not know the node or refused the message.
pub fn send_to(uri: &[u8], body: &[u8]) -> bool {
    let Some(a) = API.get() else { return false };
    let mut u = sys::str_ { s: uri.as_ptr() as *mut c_char, len: uri.len() as c_int };
    let mut b = sys::str_ { s: body.as_ptr() as *mut c_char, len: body.len() as c_int };
    let mut ct = sys::str_ { s: CT.as_ptr() as *mut c_char, len: CT.len() as c_int };
    // SAFETY: find_dmq_node_uri parses a copy of `u` and returns an entry of DMQ's node
    // list (or NULL); it is used at once and never stored (as the C consumers do).
    unsafe {
        let node = (a.find_node)(&mut u);
        if node.is_null() {
            return false;
        }
        (a.send)(a.peer as *mut DmqPeer, &mut b, node, &raw mut RESP_CB, 1, &mut ct) >= 0
    }
}

static OK_REASON: &[u8] = b"OK";

/// DMQ peer callback (runs in a DMQ worker, or inline for `dmq_process_message`).
unsafe extern "C" fn peer_cb(msg: *mut sys::sip_msg, resp: *mut PeerResponse, _node: *mut c_void) -> c_int {
    crate::module::guard("dmq peer callback", 0, || {
        if !resp.is_null() {
            // SAFETY: DMQ passes its response struct; a static reason, no body (a body
            // would be pkg_free'd by the worker).
            unsafe {
                (*resp).resp_code = 200;
                (*resp).reason = sys::str_ { s: OK_REASON.as_ptr() as *mut c_char, len: OK_REASON.len() as c_int };
            }
        }
        let Some(a) = API.get() else { return 0 };
        if msg.is_null() {
            return 0;
        }
        let m = crate::kam::msg::Msg(msg);
        let from = m.from_uri().map(|f| f.to_vec()).unwrap_or_default();
        // SAFETY: the message (shm clone or the received one) is valid for the callback;
        // the body runs from get_body() to the end of the message buffer.
        let body = unsafe {
            let p = get_body(msg);
            let buf = (*msg).buf;
            if p.is_null() || buf.is_null() {
                &[][..]
            } else {
                let end = buf.add((*msg).len as usize);
                let n = end.offset_from(p);
                if n <= 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(p as *const u8, n as usize)
                }
            }
        };
        (a.on_msg)(body, &from);
        0
    })
}

unsafe extern "C" fn init_cb(_node: *mut c_void) -> c_int {
    0
}

unsafe extern "C" fn resp_cb(_msg: *mut sys::sip_msg, code: c_int, _node: *mut c_void, _p: *mut c_void) -> c_int {
    crate::module::guard("dmq reply callback", 0, || {
        if let Some(a) = API.get() {
            (a.on_reply)(code);
        }
        0
    })
}
