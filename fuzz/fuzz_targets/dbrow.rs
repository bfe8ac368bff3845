//! DB-row conversion: `DbLayout::new` + `row_to_entry`, then the entry through
//! `prepare_dest` (fake env) as the module's DB loader does.
//! Input: byte 0 = release/settings, byte 1 = table version (mod 6); then lines (`\n`): the
//! first is `ds_db_extra_attrs`, each further one a row of `\t`-separated values:
//! `N` = NULL, `I<digits>` = integer column (other bytes after `I` are folded into an
//! integer), anything else a string.
use dispatcher::ds::dbrow::{DbLayout, DbVal, MAX_DB_ATTRS};
use dispatcher_fuzz::{prepare_all, Cfg};

fn val(f: &[u8]) -> DbVal {
    match f.split_first() {
        Some((b'N', [])) => DbVal::Null,
        Some((b'I', rest)) => DbVal::Int(
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or_else(|| rest.iter().fold(0i64, |a, &c| a.wrapping_mul(257).wrapping_add(i64::from(c)))),
        ),
        _ => DbVal::Str(f.to_vec()),
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let [b, ver, rest @ ..] = data else { return };
        let cfg = Cfg::from_byte(*b);
        cfg.apply();
        let mut lines = rest.split(|&c| c == b'\n');
        let spec = lines.next().unwrap_or_default();
        let layout = match DbLayout::new(i32::from(*ver % 6), spec) {
            Ok(l) => l,
            Err(e) => {
                assert!(!e.msg.is_empty());
                return;
            }
        };
        assert!(layout.ncols + layout.extra.len() <= 32);
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate().take(64) {
            let row: Vec<DbVal> = line.split(|&c| c == b'\t').map(val).collect();
            match layout.row_to_entry(&row, i) {
                Ok(e) => {
                    assert_eq!((e.line, e.col), (i + 1, 0));
                    if !layout.extra.is_empty() {
                        assert!(e.attrs.len() < MAX_DB_ATTRS);
                        assert!(e.attrs.is_empty() || e.attrs.ends_with(b";"));
                    }
                    let base_attrs = if layout.ncols >= 5 { row.get(4).and_then(|v| v.bytes()).unwrap_or_default() } else { &[] };
                    assert!(e.attrs.starts_with(base_attrs), "attrs column first");
                    entries.push(e);
                }
                Err(e) => assert!(e.msg.contains(&format!("row {}", i + 1))),
            }
        }
        let dests = prepare_all(&entries, &cfg);
        let _ = dispatcher_fuzz::order(dests);
    });
}
