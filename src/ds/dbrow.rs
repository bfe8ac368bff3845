//! Rows of the dispatcher DB table turned into list entries, exactly as the module's DB loader
//! does it (`module::state::db_entries`, the C `ds_load_db`), without any FFI so that it can be
//! unit-tested and fuzzed.
//!
//! * The table version (1..=4) decides how many columns are read: 2 (setid, destination),
//!   3 (+ flags), 4 (+ priority) or 5 (+ attrs).
//! * With version 4, `ds_db_extra_attrs` (`name=column;name=column`) adds columns whose
//!   non-empty values are appended to the attrs as `name=value;` (walked in the C module's
//!   reversed list order). Before that a `;` is added to non-empty attrs that do not end with
//!   one. From Kamailio 6.1 integer columns are printed too; NULLs are skipped. An attrs
//!   buffer of 1023 bytes or more (only checked when extra attrs are configured) fails the
//!   load.
//! * Integers are taken from integer columns, or from string columns holding a (trimmed)
//!   decimal `i64`; anything else is 0. The `i64` is truncated to the C `int` (`as i32`).

use crate::ds::listfile::RawEntry;

/// One value of a result row (a copy of what the DB driver returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbVal {
    Null,
    Int(i64),
    Str(Vec<u8>),
}

impl DbVal {
    /// The value as an integer: integer columns as they are, string columns parsed as a
    /// trimmed decimal `i64`, everything else (NULL, unparsable text) 0.
    pub fn int(&self) -> i64 {
        match self {
            DbVal::Int(i) => *i,
            DbVal::Str(s) => std::str::from_utf8(s).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            DbVal::Null => 0,
        }
    }
    /// The bytes of a string column; None for NULL and integers.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            DbVal::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Most columns one query may ask for (base columns plus extra attrs).
pub const MAX_DB_COLUMNS: usize = 32;

/// An attrs buffer this long or longer fails the load (the C 1024-byte buffer).
pub const MAX_DB_ATTRS: usize = 1023;

/// Why the DB layout or a row was refused; `func` is the C function the module logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbRowError {
    pub func: &'static str,
    pub msg: String,
}

impl std::fmt::Display for DbRowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.func, self.msg)
    }
}

impl std::error::Error for DbRowError {}

/// Number of base columns read for a table version (setid, destination, flags, priority,
/// attrs), None for an unsupported version.
pub fn ncols_for_version(ver: i32) -> Option<usize> {
    match ver {
        1 => Some(2),
        2 => Some(3),
        3 => Some(4),
        4 => Some(5),
        _ => None,
    }
}

/// What the loader reads from the table: how many base columns, and the extra attrs as
/// (attribute name, column name) in the order they are appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbLayout {
    pub ncols: usize,
    pub extra: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DbLayout {
    /// Layout for table version `ver` and the `ds_db_extra_attrs` modparam (`extra_spec`,
    /// empty when unset; only used with version 4). Errors carry the module's messages.
    pub fn new(ver: i32, extra_spec: &[u8]) -> Result<DbLayout, DbRowError> {
        let ncols = ncols_for_version(ver).ok_or_else(|| DbRowError {
            func: "ds_init_db",
            msg: format!("invalid table version (found {ver} , required 1, 2, 3 or 4)"),
        })?;
        let mut extra = Vec::new();
        if ver == 4 && !extra_spec.is_empty() {
            let spec = extra_spec.strip_suffix(b";").unwrap_or(extra_spec);
            let ps = crate::ds::attrs::parse_params(spec).map_err(|e| DbRowError {
                func: "mod_init",
                msg: format!("failed to parse extra attrs parameter (ds_db_extra_attrs: {})", e.msg),
            })?;
            // the C module walks the core's (prepended, so reversed) parameter list
            for p in ps.iter().rev() {
                extra.push((p.name.to_vec(), p.value.unwrap_or(&[]).to_vec()));
            }
            if ncols + extra.len() > MAX_DB_COLUMNS {
                return Err(DbRowError {
                    func: "ds_load_db",
                    msg: format!("too many db columns: {}", ncols + extra.len()),
                });
            }
        }
        Ok(DbLayout { ncols, extra })
    }

    /// Column names to select: the first `ncols` of `base` (the configured setid, destination,
    /// flags, priority and attrs column names), then the extra attrs columns.
    pub fn columns(&self, base: &[Vec<u8>]) -> Vec<Vec<u8>> {
        base.iter().take(self.ncols).cloned().chain(self.extra.iter().map(|(_, c)| c.clone())).collect()
    }

    /// Converts row `index` (0-based; the entry's `line` is `index + 1`, `col` 0) of the
    /// query result. Missing values count as NULL.
    pub fn row_to_entry(&self, row: &[DbVal], index: usize) -> Result<RawEntry, DbRowError> {
        const NULL: DbVal = DbVal::Null;
        let get = |c: usize| row.get(c).unwrap_or(&NULL);
        let ncols = self.ncols;
        let mut attrs: Vec<u8> = if ncols >= 5 { get(4).bytes().map(|b| b.to_vec()).unwrap_or_default() } else { Vec::new() };
        if !self.extra.is_empty() {
            if !attrs.is_empty() && attrs.last() != Some(&b';') {
                attrs.push(b';');
            }
            for (k, (name, _)) in self.extra.iter().enumerate() {
                let v = get(ncols + k);
                // Kamailio 6.1 also prints integer columns (NULL skipped)
                let num = match v {
                    DbVal::Int(n) if crate::ds::compat::ge(6, 1, 0) => Some(n.to_string().into_bytes()),
                    _ => None,
                };
                if let Some(v) = num.as_deref().or(v.bytes()).filter(|v| !v.is_empty()) {
                    attrs.extend_from_slice(name);
                    attrs.push(b'=');
                    attrs.extend_from_slice(v);
                    attrs.push(b';');
                }
            }
            if attrs.len() >= MAX_DB_ATTRS {
                return Err(DbRowError {
                    func: "ds_load_db",
                    msg: format!("cannot build attrs buffer (over 1024 bytes, row {})", index + 1),
                });
            }
        }
        Ok(RawEntry {
            setid: get(0).int() as i32,
            uri: get(1).bytes().map(|b| b.to_vec()).unwrap_or_default(),
            flags: if ncols >= 3 { get(2).int() as i32 } else { 0 },
            priority: if ncols >= 4 { get(3).int() as i32 } else { 0 },
            attrs,
            line: index + 1,
            col: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::compat;

    fn s(v: &str) -> DbVal {
        DbVal::Str(v.as_bytes().to_vec())
    }

    #[test]
    fn versions_and_columns() {
        assert_eq!(ncols_for_version(0), None);
        assert_eq!(ncols_for_version(5), None);
        let l = DbLayout::new(2, b"x=col").expect("layout");
        assert_eq!((l.ncols, l.extra.len()), (3, 0)); // extra attrs only with version 4
        let base: Vec<Vec<u8>> = ["setid", "destination", "flags", "priority", "attrs"].iter().map(|c| c.as_bytes().to_vec()).collect();
        assert_eq!(l.columns(&base).len(), 3);
        let l = DbLayout::new(4, b"a=c1;b=c2;").expect("layout");
        assert_eq!(l.extra, vec![(b"b".to_vec(), b"c2".to_vec()), (b"a".to_vec(), b"c1".to_vec())]);
        assert_eq!(l.columns(&base).last(), Some(&b"c1".to_vec()));
        let e = DbLayout::new(7, b"").expect_err("version");
        assert_eq!(e.msg, "invalid table version (found 7 , required 1, 2, 3 or 4)");
        assert_eq!(DbLayout::new(4, b"a=\"x").expect_err("spec").func, "mod_init");
        let many: Vec<String> = (0..28).map(|i| format!("a{i}=c{i}")).collect();
        assert_eq!(DbLayout::new(4, many.join(";").as_bytes()).expect_err("cols").msg, "too many db columns: 33");
        assert!(DbLayout::new(4, many[..27].join(";").as_bytes()).is_ok());
    }

    #[test]
    fn rows_like_the_module() {
        let l = DbLayout::new(4, b"").expect("layout");
        let e = l.row_to_entry(&[DbVal::Int(3), s("sip:a"), s(" 8 "), DbVal::Int(1 << 32 | 5), s("duid=x")], 0).expect("row");
        assert_eq!((e.setid, &e.uri[..], e.flags, e.priority, &e.attrs[..], e.line, e.col), (3, &b"sip:a"[..], 8, 5, &b"duid=x"[..], 1, 0));
        // NULLs, bad numbers, a short row
        let e = l.row_to_entry(&[s("x1"), DbVal::Null], 6).expect("row");
        assert_eq!((e.setid, e.uri.is_empty(), e.flags, e.priority, e.attrs.is_empty(), e.line), (0, true, 0, 0, true, 7));
        // an integer attrs column is ignored (only strings are attrs)
        assert!(l.row_to_entry(&[DbVal::Int(1), s("sip:a"), DbVal::Null, DbVal::Null, DbVal::Int(4)], 0).expect("row").attrs.is_empty());
        // version 1: only setid and destination are read
        let l1 = DbLayout::new(1, b"").expect("layout");
        let e = l1.row_to_entry(&[DbVal::Int(1), s("sip:b"), DbVal::Int(9), DbVal::Int(9), s("a=1")], 0).expect("row");
        assert_eq!((e.flags, e.priority, e.attrs.is_empty()), (0, 0, true));
    }

    #[test]
    fn extra_attrs_appended() {
        let l = DbLayout::new(4, b"ua=c_ua;w=c_w").expect("layout");
        // the reversed order: w first, then ua
        let row = [DbVal::Int(1), s("sip:a"), DbVal::Int(0), DbVal::Int(0), s("duid=1"), DbVal::Int(50), s("x")];
        compat::with(compat::BASELINE, || {
            assert_eq!(l.row_to_entry(&row, 0).expect("row").attrs, b"duid=1;ua=x;".to_vec());
        });
        compat::with(compat::val(6, 1, 4), || {
            assert_eq!(l.row_to_entry(&row, 0).expect("row").attrs, b"duid=1;w=50;ua=x;".to_vec());
        });
        // empty and NULL values are skipped; attrs already ending in ';' get no second one
        let row = [DbVal::Int(1), s("sip:a"), DbVal::Int(0), DbVal::Int(0), s("d=1;"), s(""), DbVal::Null];
        assert_eq!(l.row_to_entry(&row, 0).expect("row").attrs, b"d=1;".to_vec());
        // too long
        let long = "v".repeat(1010);
        let row = [DbVal::Int(1), s("sip:a"), DbVal::Int(0), DbVal::Int(0), s(""), s(&long), DbVal::Null];
        assert_eq!(l.row_to_entry(&row, 0).expect("row").attrs.len(), 1013);
        let long = "v".repeat(1020);
        let row = [DbVal::Int(1), s("sip:a"), DbVal::Int(0), DbVal::Int(0), s(""), s(&long), DbVal::Null];
        let err = l.row_to_entry(&row, 4).expect_err("too long");
        assert_eq!(err.msg, "cannot build attrs buffer (over 1024 bytes, row 5)");
    }
}
