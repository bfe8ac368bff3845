//! Attrs parser: `parse_attrs` and `parse_params` on arbitrary bytes. Byte 0: release and
//! `ds_attrs_none`. Checks: no panic; body, ranges of weights and overload-control values;
//! every parameter's name and value is a slice of the input.
use dispatcher::ds::attrs::{parse_attrs, parse_params, str2sint, str2uint};
use dispatcher_fuzz::{check_attrs, Cfg};

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&b, raw)) = data.split_first() else { return };
        let cfg = Cfg::from_byte(b);
        cfg.apply();
        if let Ok((a, notes)) = parse_attrs(raw, cfg.attrs_none) {
            check_attrs(raw, &a, cfg.attrs_none);
            assert!(notes.iter().all(|n| !n.msg.is_empty()));
        }
        if let Ok(ps) = parse_params(raw) {
            for p in &ps {
                assert!(inside(raw, p.name));
                if let Some(v) = p.value {
                    assert!(inside(raw, v));
                }
            }
        } else {
            // a failure of the parameter parser is a failure of the attrs parser
            assert!(raw.is_empty() || parse_attrs(raw, false).is_err() || raw.ends_with(b";"));
        }
        let (n, ok) = str2sint(raw);
        if ok && !raw.is_empty() {
            if let Ok(v) = std::str::from_utf8(raw).unwrap_or("x").parse::<i32>() {
                assert_eq!(v, n);
            }
        }
        let _ = str2uint(raw);
    });
}
