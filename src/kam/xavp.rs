//! XAVP records (`_dsdst_`, `_dsctx_`): built and read through the core's xavp API.
use std::os::raw::{c_char, c_int};

use crate::kam::param::unsafe_bytes;
use crate::sys;

fn kstr(b: &[u8]) -> sys::str_ {
    sys::str_ { s: b.as_ptr() as *mut c_char, len: b.len() as c_int }
}

/// A field value of a record being built.
pub enum Field<'a> {
    Str(&'a [u8]),
    Int(i32),
    Ptr(usize),
}

/// Builds records of one root list name, appended one after another (insertion order) as a
/// block at the head of the current list — the C module's `ds_add_xavp_record` sequence.
pub struct RecordWriter<'n> {
    name: &'n [u8],
    /// `name` as the core's `str` (built once per writer).
    kname: sys::str_,
    last: *mut sys::sr_xavp_t,
}

impl<'n> RecordWriter<'n> {
    #[inline(always)]
    pub fn new(name: &'n [u8]) -> Self {
        RecordWriter { name, kname: kstr(name), last: std::ptr::null_mut() }
    }
    /// Adds one record with `fields` (in that order). False on failure (nothing leaked).
    pub fn add(&mut self, fields: &[(&[u8], Field<'_>)]) -> bool {
        let mut list: *mut sys::sr_xavp_t = std::ptr::null_mut();
        for (fname, fv) in fields {
            let mut v: sys::sr_xval_t = Default::default();
            match fv {
                Field::Str(s) => {
                    v.type_ = sys::sr_xtype_t_SR_XTYPE_STR;
                    v.v.s = kstr(s);
                }
                Field::Int(i) => set_int(&mut v, *i),
                Field::Ptr(p) => {
                    v.type_ = sys::sr_xtype_t_SR_XTYPE_VPTR;
                    v.v.vptr = *p as *mut _;
                }
            }
            let n = kstr(fname);
            // SAFETY: the core copies name and string value into one shm item.
            if unsafe { sys::xavp_add_value(&n as *const _ as *mut _, &mut v, &mut list) }.is_null() {
                // SAFETY: `list` holds only items created above.
                unsafe { sys::xavp_destroy_list(&mut list) };
                return false;
            }
        }
        let mut v: sys::sr_xval_t = Default::default();
        v.type_ = sys::sr_xtype_t_SR_XTYPE_XAVP;
        v.v.xavp = list;
        let n = kstr(self.name);
        // SAFETY: ownership of `list` passes to the root list on success; `last` is null or the
        // record added by the previous call in this same request.
        let r = unsafe { sys::xavp_add_value_after(&n as *const _ as *mut _, &mut v, self.last) };
        if r.is_null() {
            // SAFETY: not handed over: still ours.
            unsafe { sys::xavp_destroy_list(&mut list) };
            return false;
        }
        self.last = r;
        true
    }
}

/// A field name for [`RecordBuilder`], built once (a `str` pointing at static text).
pub struct XName(sys::str_);
// SAFETY: points to immutable static text; the core only reads it.
unsafe impl Sync for XName {}

impl XName {
    pub const fn new(name: &'static [u8]) -> XName {
        XName(sys::str_ { s: name.as_ptr() as *mut c_char, len: name.len() as c_int })
    }
}

/// One record being built field by field (the request path's failover records: no field
/// array, no dispatch over a field enum, names built once). Dropped without
/// [`RecordWriter::commit`], it frees what it holds.
pub struct RecordBuilder {
    list: *mut sys::sr_xavp_t,
}

impl RecordBuilder {
    #[inline(always)]
    fn put(&mut self, name: &XName, v: &mut sys::sr_xval_t) -> bool {
        // SAFETY: the core copies name and string value into one shm item added to `list`;
        // it does not write through the name.
        !unsafe { sys::xavp_add_value(&name.0 as *const sys::str_ as *mut sys::str_, v, &mut self.list) }.is_null()
    }
    /// Adds a string field; false on failure (the record is then dropped).
    #[inline(always)]
    pub fn str(&mut self, name: &XName, s: &[u8]) -> bool {
        let mut v: sys::sr_xval_t = Default::default();
        v.type_ = sys::sr_xtype_t_SR_XTYPE_STR;
        v.v.s = kstr(s);
        self.put(name, &mut v)
    }
    /// Adds an integer field; false on failure.
    #[inline(always)]
    pub fn int(&mut self, name: &XName, i: i32) -> bool {
        let mut v: sys::sr_xval_t = Default::default();
        set_int(&mut v, i);
        self.put(name, &mut v)
    }
    /// Adds a pointer field; false on failure.
    #[inline(always)]
    pub fn ptr(&mut self, name: &XName, p: usize) -> bool {
        let mut v: sys::sr_xval_t = Default::default();
        v.type_ = sys::sr_xtype_t_SR_XTYPE_VPTR;
        v.v.vptr = p as *mut _;
        self.put(name, &mut v)
    }
}

impl Drop for RecordBuilder {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.list.is_null() {
            drop_list(&mut self.list);
        }
    }
}

#[cold]
fn drop_list(list: &mut *mut sys::sr_xavp_t) {
    // SAFETY: `list` holds only items created by a builder and not handed over.
    unsafe { sys::xavp_destroy_list(list) };
}

impl RecordWriter<'_> {
    /// Starts a record (see [`RecordBuilder`]).
    #[inline(always)]
    pub fn record(&self) -> RecordBuilder {
        RecordBuilder { list: std::ptr::null_mut() }
    }
    /// Appends a built record after the previous one. False on failure (nothing leaked).
    #[inline(always)]
    pub fn commit(&mut self, mut b: RecordBuilder) -> bool {
        let mut v: sys::sr_xval_t = Default::default();
        v.type_ = sys::sr_xtype_t_SR_XTYPE_XAVP;
        v.v.xavp = b.list;
        // SAFETY: ownership of the list passes to the root list on success; `last` is null or
        // the record added by the previous call in this same request; the core does not write
        // through the name.
        let r = unsafe { sys::xavp_add_value_after(&self.kname as *const sys::str_ as *mut sys::str_, &mut v, self.last) };
        if r.is_null() {
            return false; // `b` still owns its list and frees it
        }
        b.list = std::ptr::null_mut();
        self.last = r;
        true
    }
}

/// An integer xavp value: `SR_XTYPE_INT`/`v.i` up to 5.6, `SR_XTYPE_LONG`/`v.l` from 5.7
/// (the INT type was removed and the enum renumbered).
fn set_int(v: &mut sys::sr_xval_t, i: i32) {
    #[cfg(not(kam_ge_5_7))]
    {
        v.type_ = sys::sr_xtype_t_SR_XTYPE_INT;
        v.v.i = i;
    }
    #[cfg(kam_ge_5_7)]
    {
        v.type_ = sys::sr_xtype_t_SR_XTYPE_LONG;
        v.v.l = i as _;
    }
}

/// Reads an integer xavp value (INT or LONG; a script may have written either).
fn get_int(v: &sys::sr_xval_t) -> Option<i32> {
    // SAFETY: the union member read is the one the type tag names.
    unsafe {
        #[cfg(not(kam_ge_5_7))]
        if v.type_ == sys::sr_xtype_t_SR_XTYPE_INT {
            return Some(v.v.i);
        }
        if v.type_ == sys::sr_xtype_t_SR_XTYPE_LONG {
            return Some(v.v.l as i32);
        }
    }
    None
}

/// Prepends a new root record `name` holding one int field (`_dsctx_` with `cnt`).
pub fn add_ctx_int(name: &[u8], field: &[u8], val: i32) -> bool {
    let mut v: sys::sr_xval_t = Default::default();
    set_int(&mut v, val);
    let (n, f) = (kstr(name), kstr(field));
    // SAFETY: values are copied by the core; null list = the current request's list.
    !unsafe { sys::xavp_add_xavp_value(&n as *const _ as *mut _, &f as *const _ as *mut _, &mut v, std::ptr::null_mut()) }.is_null()
}

/// The first record of root list `name`: (uri, sock, dstid present).
pub struct FirstRecord {
    pub uri: Option<Vec<u8>>,
    pub sock: usize,
    pub grp: Option<i32>,
    pub dstid: Option<Vec<u8>>,
}

/// Reads the first record of `name` (None when there is none or it is not a record).
pub fn first_record(name: &[u8]) -> Option<FirstRecord> {
    let n = kstr(name);
    // SAFETY: lookups in the current request's xavp list; values are copied out at once.
    unsafe {
        let r = sys::xavp_get(&n as *const _ as *mut _, std::ptr::null_mut());
        if r.is_null() || (*r).val.type_ != sys::sr_xtype_t_SR_XTYPE_XAVP {
            return None;
        }
        let sub = (*r).val.v.xavp;
        let get = |f: &[u8]| {
            let fs = kstr(f);
            sys::xavp_get(&fs as *const _ as *mut _, sub)
        };
        let mut out = FirstRecord { uri: None, sock: 0, grp: None, dstid: None };
        let u = get(b"uri");
        if !u.is_null() && (*u).val.type_ == sys::sr_xtype_t_SR_XTYPE_STR {
            out.uri = Some(unsafe_bytes((*u).val.v.s).to_vec());
        }
        let s = get(b"sock");
        if !s.is_null() && (*s).val.type_ == sys::sr_xtype_t_SR_XTYPE_VPTR {
            out.sock = (*s).val.v.vptr as usize;
        }
        let g = get(b"grp");
        if !g.is_null() {
            out.grp = get_int(&(*g).val);
        }
        let d = get(b"dstid");
        if !d.is_null() && (*d).val.type_ == sys::sr_xtype_t_SR_XTYPE_STR {
            out.dstid = Some(unsafe_bytes((*d).val.v.s).to_vec());
        }
        Some(out)
    }
}

/// Removes the first record of `name`; false when there was none.
pub fn remove_first(name: &[u8]) -> bool {
    let n = kstr(name);
    // SAFETY: removes an item of the current request's list found just before.
    unsafe {
        let r = sys::xavp_get(&n as *const _ as *mut _, std::ptr::null_mut());
        if r.is_null() {
            return false;
        }
        sys::xavp_rm(r, std::ptr::null_mut()) >= 0
    }
}
