//! Kamailio's generic DB API (srdb1): the driver is the module named by the `db_url` scheme
//! (db_sqlite, db_postgres, db_mysql, ...), bound with `db_bind_mod` as every module does.
use std::os::raw::{c_char, c_int};

use crate::kam::param::unsafe_bytes;
use crate::sys;

/// A value of a result row, copied out of the driver's memory (the pure core's type, so that
/// the row conversion in `ds::dbrow` takes it as it is).
pub use crate::ds::dbrow::DbVal as Val;

/// An open connection (closed on drop).
pub struct Db {
    f: sys::db_func_t,
    h: *mut sys::db1_con_t,
}

fn kstr(b: &[u8]) -> sys::str_ {
    sys::str_ { s: b.as_ptr() as *mut c_char, len: b.len() as c_int }
}

impl Db {
    /// Binds the driver of `url` and connects.
    pub fn connect(url: &[u8]) -> Result<Db, String> {
        let u = kstr(url);
        // SAFETY: plain API calls; `f` is filled by the driver; `u` outlives the calls (the
        // driver copies the URL).
        unsafe {
            let mut f: sys::db_func_t = std::mem::zeroed();
            if sys::db_bind_mod(&u, &mut f) < 0 {
                return Err(format!("cannot bind the DB driver of '{}'", String::from_utf8_lossy(url)));
            }
            let init = f.init.ok_or("DB driver has no init")?;
            let h = init(&u);
            if h.is_null() {
                return Err(format!("cannot connect to '{}'", String::from_utf8_lossy(url)));
            }
            Ok(Db { f, h })
        }
    }

    /// Version of `table` in the `version` table (-1 on error).
    pub fn table_version(&mut self, table: &[u8]) -> i32 {
        let t = kstr(table);
        // SAFETY: valid handle and function table.
        unsafe { sys::db_table_version(&self.f, self.h, &t) }
    }

    /// `SELECT cols FROM table` (no condition, no order), all rows copied out.
    pub fn select_all(&mut self, table: &[u8], cols: &[Vec<u8>]) -> Result<Vec<Vec<Val>>, String> {
        let t = kstr(table);
        let mut keys: Vec<sys::str_> = cols.iter().map(|c| kstr(c)).collect();
        let mut kp: Vec<*mut sys::str_> = keys.iter_mut().map(|k| k as *mut sys::str_).collect();
        // SAFETY: handle and functions from the driver; the result is freed with free_result
        // after copying; key strings outlive the query.
        unsafe {
            let use_table = self.f.use_table.ok_or("DB driver has no use_table")?;
            if use_table(self.h, &t) < 0 {
                return Err("error in use_table".into());
            }
            let query = self.f.query.ok_or("DB driver has no query")?;
            let mut res: *mut sys::db1_res_t = std::ptr::null_mut();
            if query(self.h, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), kp.as_mut_ptr(), 0, kp.len() as c_int, std::ptr::null_mut(), &mut res) < 0 {
                return Err("error while querying database".into());
            }
            if res.is_null() {
                return Ok(Vec::new());
            }
            let n = (*res).n.max(0) as usize;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let row = &*(*res).rows.add(i);
                let mut vals = Vec::with_capacity(cols.len());
                for c in 0..(row.n.max(0) as usize).min(cols.len()) {
                    let v = &*row.values.add(c);
                    vals.push(if v.nul != 0 {
                        Val::Null
                    } else {
                        match v.type_ {
                            sys::db_type_t_DB1_INT => Val::Int(v.val.int_val as i64),
                            sys::db_type_t_DB1_UINT => Val::Int(v.val.int_val as u32 as i64),
                            sys::db_type_t_DB1_BIGINT | sys::db_type_t_DB1_UBIGINT => Val::Int(v.val.ll_val),
                            sys::db_type_t_DB1_DOUBLE => Val::Int(v.val.double_val as i64),
                            sys::db_type_t_DB1_STRING => {
                                let p = v.val.string_val;
                                if p.is_null() { Val::Null } else { Val::Str(std::ffi::CStr::from_ptr(p).to_bytes().to_vec()) }
                            }
                            sys::db_type_t_DB1_STR | sys::db_type_t_DB1_BLOB => Val::Str(unsafe_bytes(v.val.str_val).to_vec()),
                            _ => Val::Null,
                        }
                    });
                }
                out.push(vals);
            }
            if let Some(fr) = self.f.free_result {
                fr(self.h, res);
            }
            Ok(out)
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(close) = self.f.close {
            // SAFETY: the handle came from init and is closed once.
            unsafe { close(self.h) };
        }
    }
}
