//! Kamailio logging (through the shim, so levels, stderr/syslog and prefixes behave as for C modules).
use std::ffi::CString;

use crate::sys;

pub const L_ERR: i32 = sys::L_ERR;
pub const L_WARN: i32 = sys::L_WARN;
pub const L_NOTICE: i32 = sys::L_NOTICE;
pub const L_INFO: i32 = sys::L_INFO;
pub const L_DBG: i32 = sys::L_DBG;

/// The module name as C's `LOG_MNAME` (MOD_NAME "dispatcher", see build.rs).
static LOG_MNAME: &[u8] = b"dispatcher\0";

/// True when a message at `level` would be printed (checked before formatting): C's
/// `is_printable(level)`, `get_debug_level(LOG_MNAME, LOG_MNAME_LEN) >= level`, called directly
/// (not through the shim: one call less on the request path).
#[inline]
pub fn enabled(level: i32) -> bool {
    // SAFETY: get_debug_level only reads `mname` (mnlen bytes, a static string here; the
    // non-const pointer is the C prototype's) and Kamailio's debug level globals, valid in
    // every Kamailio process.
    unsafe { sys::get_debug_level(LOG_MNAME.as_ptr() as *mut _, (LOG_MNAME.len() - 1) as i32) >= level }
}

/// Writes one log line. Interior NULs are replaced so that nothing is lost.
pub fn write(level: i32, file: &str, line: u32, func: &str, msg: &str) {
    let c = |s: &str| CString::new(s.replace('\0', "\\0")).unwrap_or_default();
    let (f, fu, m) = (c(file), c(func), c(msg));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    unsafe { sys::rds_log(level, f.as_ptr(), line as i32, fu.as_ptr(), m.as_ptr()) }
}

/// Name of the enclosing function (closures are skipped).
#[macro_export]
macro_rules! fn_name {
    () => {{
        fn here() {}
        $crate::ds::logfmt::short_fn_name(::std::any::type_name_of_val(&here))
    }};
}

/// `ds_log!(level, "fmt", args...)` logs with the enclosing function's name;
/// `ds_log!(level, fn "c_name"; "fmt", args...)` with an explicit one (the C module's
/// function name where the message is the C module's).
#[macro_export]
macro_rules! ds_log {
    ($lvl:expr, fn $f:expr; $($arg:tt)*) => {{
        if $crate::kam::log::enabled($lvl) {
            $crate::kam::log::write($lvl, file!(), line!(), $f, &format!($($arg)*));
        }
    }};
    ($lvl:expr, $($arg:tt)*) => {{
        if $crate::kam::log::enabled($lvl) {
            $crate::kam::log::write($lvl, file!(), line!(), $crate::fn_name!(), &format!($($arg)*));
        }
    }};
}
#[macro_export]
macro_rules! ds_err { ($($arg:tt)*) => { $crate::ds_log!($crate::kam::log::L_ERR, $($arg)*) }; }
#[macro_export]
macro_rules! ds_warn { ($($arg:tt)*) => { $crate::ds_log!($crate::kam::log::L_WARN, $($arg)*) }; }
#[macro_export]
macro_rules! ds_info { ($($arg:tt)*) => { $crate::ds_log!($crate::kam::log::L_INFO, $($arg)*) }; }
#[macro_export]
macro_rules! ds_dbg { ($($arg:tt)*) => { $crate::ds_log!($crate::kam::log::L_DBG, $($arg)*) }; }


/// Kamailio's level for a severity of the pure core.
pub fn level(l: crate::ds::logfmt::Level) -> i32 {
    use crate::ds::logfmt::Level;
    match l {
        Level::Err => L_ERR,
        Level::Warn => L_WARN,
        Level::Info => L_INFO,
        Level::Dbg => L_DBG,
    }
}

/// Logs a message of the pure core (its severity and C function name), after `prefix`.
pub fn note(n: &crate::ds::logfmt::Note, prefix: &str) {
    crate::ds_log!(level(n.level), fn n.func; "{prefix}{}", n.msg);
}
