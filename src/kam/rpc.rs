//! The Kamailio RPC API (`rpc_t`): replies, structures and parameter scanning.
//! The C API is variadic; every argument is passed with its exact C type.
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

use crate::kam::param::unsafe_bytes;
use crate::sys;

/// One RPC call in progress.
pub struct Rpc {
    api: *mut sys::rpc_t,
    ctx: *mut c_void,
}

/// A structure (or array) handle inside the reply.
#[derive(Clone, Copy)]
pub struct RpcStruct {
    api: *mut sys::rpc_t,
    h: *mut c_void,
}

/// A `str` value that may be NULL (printed as null / `<null string>`).
pub fn kstr_opt(b: Option<&[u8]>) -> sys::str_ {
    match b {
        Some(b) => sys::str_ { s: b.as_ptr() as *mut c_char, len: b.len() as c_int },
        None => sys::str_ { s: std::ptr::null_mut(), len: 0 },
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

impl Rpc {
    /// # Safety
    /// `api` and `ctx` must be the arguments the core passed to an RPC handler.
    pub unsafe fn new(api: *mut sys::rpc_t, ctx: *mut c_void) -> Rpc {
        Rpc { api, ctx }
    }
    fn t(&self) -> &sys::rpc_t {
        // SAFETY: valid for the duration of the handler call (see `new`).
        unsafe { &*self.api }
    }
    pub fn fault(&self, code: i32, msg: &str) {
        let m = cstr(msg);
        if let Some(f) = self.t().fault {
            // SAFETY: format "%s" with one char* argument.
            unsafe { f(self.ctx, code as c_int, c"%s".as_ptr() as *mut c_char, m.as_ptr()) };
        }
    }
    /// A text reply (`rpl_printf`).
    pub fn text(&self, msg: &str) {
        let m = cstr(msg);
        if let Some(f) = self.t().rpl_printf {
            // SAFETY: format "%s" with one char* argument.
            unsafe { f(self.ctx, c"%s".as_ptr() as *mut c_char, m.as_ptr()) };
        }
    }
    /// Adds a string value (`add "s"`: no formatting buffer limit, unlike `text`).
    pub fn add_string(&self, v: &str) -> bool {
        let c = cstr(v);
        let Some(f) = self.t().add else { return false };
        // SAFETY: "s" takes one char*; the transport copies it.
        unsafe { f(self.ctx, c"s".as_ptr() as *mut c_char, c.as_ptr()) >= 0 }
    }
    /// Adds a top-level structure.
    pub fn add_struct(&self) -> Option<RpcStruct> {
        let mut h: *mut c_void = std::ptr::null_mut();
        let f = self.t().add?;
        // SAFETY: "{" takes a void** out-parameter.
        let rc = unsafe { f(self.ctx, c"{".as_ptr() as *mut c_char, &mut h as *mut *mut c_void) };
        if rc < 0 || h.is_null() { None } else { Some(RpcStruct { api: self.api, h }) }
    }
    /// Scans the next parameter as a string; None when absent (optional scan).
    pub fn scan_str_opt(&self) -> Option<Vec<u8>> {
        let mut s = sys::str_ { s: std::ptr::null_mut(), len: 0 };
        let f = self.t().scan?;
        // SAFETY: "*S" takes a str* out-parameter; the string stays valid during the call.
        let n = unsafe { f(self.ctx, c"*S".as_ptr() as *mut c_char, &mut s as *mut sys::str_) };
        if n == 1 { Some(unsafe_bytes(s).to_vec()) } else { None }
    }
    /// Scans with a C format string into typed outputs; returns the count read.
    ///
    /// # Safety
    /// `outs` must match `fmt` exactly (d → *mut c_int, S → *mut str_).
    pub unsafe fn scan_raw(&self, fmt: &std::ffi::CStr, outs: &[*mut c_void]) -> i32 {
        let Some(f) = self.t().scan else { return -1 };
        let p = fmt.as_ptr() as *mut c_char;
        // SAFETY: guaranteed by the caller (argument types match the format).
        unsafe {
            match outs {
                [a] => f(self.ctx, p, *a),
                [a, b] => f(self.ctx, p, *a, *b),
                [a, b, c] => f(self.ctx, p, *a, *b, *c),
                [a, b, c, d] => f(self.ctx, p, *a, *b, *c, *d),
                [a, b, c, d, e] => f(self.ctx, p, *a, *b, *c, *d, *e),
                _ => -1,
            }
        }
    }
}

// Err(()): the failure is already reported to the RPC client by the core; nothing to add.
#[allow(clippy::result_unit_err)]
impl RpcStruct {
    fn add_fn(&self) -> sys::rpc_struct_add_f {
        // SAFETY: api valid during the handler call.
        unsafe { (*self.api).struct_add }
    }
    fn ok(rc: c_int) -> Result<(), ()> {
        if rc < 0 { Err(()) } else { Ok(()) }
    }
    /// Member `name` that is a new structure (`{`).
    pub fn child_struct(&self, name: &str) -> Result<RpcStruct, ()> {
        let f = self.add_fn().ok_or(())?;
        let n = cstr(name);
        let mut h: *mut c_void = std::ptr::null_mut();
        // SAFETY: "{" takes name (char*) and a void** out-parameter.
        let rc = unsafe { f(self.h, c"{".as_ptr() as *mut c_char, n.as_ptr(), &mut h as *mut *mut c_void) };
        Self::ok(rc)?;
        if h.is_null() { Err(()) } else { Ok(RpcStruct { api: self.api, h }) }
    }
    /// Int member then array member (`d[`), as the C module adds NRSETS/RECORDS and ID/TARGETS.
    pub fn int_and_array(&self, iname: &str, v: i32, aname: &str) -> Result<RpcStruct, ()> {
        let f = self.add_fn().ok_or(())?;
        let (a, b) = (cstr(iname), cstr(aname));
        let mut h: *mut c_void = std::ptr::null_mut();
        // SAFETY: "d[" takes (char*, int, char*, void**).
        let rc = unsafe { f(self.h, c"d[".as_ptr() as *mut c_char, a.as_ptr(), v as c_int, b.as_ptr(), &mut h as *mut *mut c_void) };
        Self::ok(rc)?;
        if h.is_null() { Err(()) } else { Ok(RpcStruct { api: self.api, h }) }
    }
    pub fn int(&self, name: &str, v: i32) -> Result<(), ()> {
        let f = self.add_fn().ok_or(())?;
        let n = cstr(name);
        // SAFETY: "d" takes (char*, int).
        Self::ok(unsafe { f(self.h, c"d".as_ptr() as *mut c_char, n.as_ptr(), v as c_int) })
    }
    pub fn uint(&self, name: &str, v: u32) -> Result<(), ()> {
        let f = self.add_fn().ok_or(())?;
        let n = cstr(name);
        // SAFETY: "u" takes (char*, unsigned int).
        Self::ok(unsafe { f(self.h, c"u".as_ptr() as *mut c_char, n.as_ptr(), v as c_uint) })
    }
    pub fn ulong(&self, name: &str, v: u64) -> Result<(), ()> {
        let f = self.add_fn().ok_or(())?;
        let n = cstr(name);
        // SAFETY: "j" takes (char*, unsigned long).
        Self::ok(unsafe { f(self.h, c"j".as_ptr() as *mut c_char, n.as_ptr(), v as c_ulong) })
    }
    pub fn double(&self, name: &str, v: f64) -> Result<(), ()> {
        let f = self.add_fn().ok_or(())?;
        let n = cstr(name);
        // SAFETY: "f" takes (char*, double).
        Self::ok(unsafe { f(self.h, c"f".as_ptr() as *mut c_char, n.as_ptr(), v) })
    }
    /// String member; `None` is sent as a NULL string.
    pub fn str(&self, name: &str, v: Option<&[u8]>) -> Result<(), ()> {
        let f = self.add_fn().ok_or(())?;
        let n = cstr(name);
        let mut s = kstr_opt(v);
        // SAFETY: "S" takes (char*, str*); the value is copied by the RPC transport.
        Self::ok(unsafe { f(self.h, c"S".as_ptr() as *mut c_char, n.as_ptr(), &mut s as *mut sys::str_) })
    }
    /// Zero-terminated string member (`s`).
    pub fn cstring(&self, name: &str, v: &str) -> Result<(), ()> {
        let f = self.add_fn().ok_or(())?;
        let (n, c) = (cstr(name), cstr(v));
        // SAFETY: "s" takes (char*, char*).
        Self::ok(unsafe { f(self.h, c"s".as_ptr() as *mut c_char, n.as_ptr(), c.as_ptr()) })
    }
}
