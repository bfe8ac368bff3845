//! Destination attributes (`name=value;name=value`), parsed like the C `ds_set_attrs` on top
//! of the core `parse_params` (class ANY, separator `;`).
//!
//! Behaviour worth knowing (all mirrored from Kamailio):
//! * one trailing `;` is dropped, and the remaining string is kept verbatim as `body`;
//! * the core parser builds its list by prepending, so the module walks the parameters in
//!   **reverse** order: when a name appears twice, the **first** occurrence wins (for string
//!   attributes even an occurrence without `=`, which clears the value);
//! * names are compared case-insensitively; values may be quoted with `"` or `'` (the quotes
//!   are removed from the parsed value, not from `body`);
//! * parsing stops silently at a `,` (or a `>` after a value/name and optional whitespace):
//!   everything after it stays in `body` but is not interpreted;
//! * integers are converted like the core `str2sint`: an optional sign, then digits; the
//!   conversion stops at the first non-digit keeping the digits read so far (`12ab` → 12),
//!   saturates at the `i32` range, and an empty value is 0. The overload-control attributes
//!   use the unsigned `str2int` (no `-`: `-5` → 0, saturating at `u32::MAX`);
//! * `latency` is only applied when its whole value converts without error
//!   (see [`Attrs::latency_init`]).

use crate::ds::logfmt::{Level, Note};

/// Parsed destination attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// The attribute string as stored by the module (one trailing `;` removed).
    pub body: Vec<u8>,
    /// Where the `duid` value sits in `body` (read it with [`Attrs::duid`]): `Some` when the
    /// attribute appears; the value may be empty (`duid=`). No copy of its own.
    pub duid_at: Option<(usize, usize)>,
    pub maxload: i32,
    /// 1..100, or 0 (absent or out of range).
    pub weight: i32,
    /// 1..100, or 0 (absent or out of range).
    pub rweight: i32,
    /// `socket`, `sockname`, `ping_from`, `obproxy`, `ping_socket`: rare, so boxed (one
    /// pointer in every destination instead of five `Option<Vec>`s; `None` when all absent).
    /// Read them with [`Attrs::socket`] and the like.
    pub rare: Option<Box<RareAttrs>>,
    /// `cc` (congestion control).
    pub cc: i32,
    /// Initial latency in ms (0 when absent); see [`Attrs::latency_init`] for whether the
    /// latency statistics must be initialised.
    pub latency: i32,
    /// Overload control (Kamailio 6.0): after clamping `0 <= ocmin <= ocmax <= 100`,
    /// `1 <= ocmax`, `ocmin <= ocrate <= ocmax`.
    pub ocmin: i32,
    pub ocmax: i32,
    pub ocrate: i32,
}

/// The attributes few destinations have (see [`Attrs::rare`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RareAttrs {
    pub socket: Option<Vec<u8>>,
    pub sockname: Option<Vec<u8>>,
    pub ping_from: Option<Vec<u8>>,
    pub obproxy: Option<Vec<u8>>,
    /// Kamailio 6.1 `ping_socket` (sending socket for keepalives only).
    pub ping_socket: Option<Vec<u8>>,
}

impl RareAttrs {
    fn is_empty(&self) -> bool {
        self.socket.is_none() && self.sockname.is_none() && self.ping_from.is_none() && self.obproxy.is_none() && self.ping_socket.is_none()
    }
}

impl Attrs {
    /// The `duid` value (`Some` when the attribute appears; may be empty).
    pub fn duid(&self) -> Option<&[u8]> {
        self.duid_at.and_then(|(s, e)| self.body.get(s..e))
    }
    pub fn socket(&self) -> Option<&[u8]> {
        self.rare.as_ref().and_then(|r| r.socket.as_deref())
    }
    pub fn sockname(&self) -> Option<&[u8]> {
        self.rare.as_ref().and_then(|r| r.sockname.as_deref())
    }
    pub fn ping_from(&self) -> Option<&[u8]> {
        self.rare.as_ref().and_then(|r| r.ping_from.as_deref())
    }
    pub fn obproxy(&self) -> Option<&[u8]> {
        self.rare.as_ref().and_then(|r| r.obproxy.as_deref())
    }
    /// Kamailio 6.1 `ping_socket` (sending socket for keepalives only).
    pub fn ping_socket(&self) -> Option<&[u8]> {
        self.rare.as_ref().and_then(|r| r.ping_socket.as_deref())
    }
}

impl Default for Attrs {
    /// The attributes of a destination without attrs: everything empty/0, except
    /// `ocmax` = 100 (the Kamailio 6.0 default).
    fn default() -> Self {
        Attrs {
            body: Vec::new(),
            duid_at: None,
            maxload: 0,
            weight: 0,
            rweight: 0,
            rare: None,
            cc: 0,
            latency: 0,
            ocmin: 0,
            ocmax: 100,
            ocrate: 0,
        }
    }
}

impl Attrs {
    /// `Some(ms)` when the `latency` attribute must initialise the latency statistics
    /// (C: `latency_stats_init(value, 10000)`), i.e. when one `latency` value converted
    /// without error. `latency=0` gives `Some(0)`; `latency=12ab` gives `None`.
    /// Derived from `body`, so it is always consistent with [`parse_attrs`].
    pub fn latency_init(&self) -> Option<i32> {
        // most lists have no latency attribute: no parse (and no allocation) for them
        if !has_ci(&self.body, b"latency") {
            return None;
        }
        let params = parse_params(&self.body).ok()?;
        let mut out = None;
        for p in params.iter().rev() {
            if p.name.eq_ignore_ascii_case(b"latency") {
                if let Some(v) = p.value {
                    let (n, ok) = str2sint(v);
                    if ok {
                        out = Some(n);
                    }
                }
            }
        }
        out
    }
}

/// An attrs syntax error; `col` is the 0-based byte offset in the attrs string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrError {
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for AttrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad attrs at offset {}: {}", self.col, self.msg)
    }
}

impl std::error::Error for AttrError {}

/// One parameter as the core parser sees it. `value` is `None` when there is no `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Whether `b` contains `word` (lower case ASCII letters), ignoring case.
pub(crate) fn has_ci(b: &[u8], word: &[u8]) -> bool {
    let Some(&first) = word.first() else { return true };
    any_ci_at(b, first, |i| b.get(i..i + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word)))
}

/// Whether `f(i)` holds at some position `i` (in order) of the lower-case ASCII letter `lc`
/// in `b`, in either case. Scans 8 bytes at a time (the attrs of every destination of a
/// list go through it): a word with no such byte is skipped whole.
pub(crate) fn any_ci_at(b: &[u8], lc: u8, mut f: impl FnMut(usize) -> bool) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let pat = ONES * lc as u64;
    let hit = |k: usize| b.get(k).is_some_and(|&c| (c | 0x20) == lc);
    let mut i = 0usize;
    while let Some(w) = b.get(i..i + 8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        // a zero byte of `x` where a byte is `lc` (or `lc` - 0x20): some byte matched
        let x = (u64::from_le_bytes(a) | (ONES * 0x20)) ^ pat;
        if x.wrapping_sub(ONES) & !x & (ONES * 0x80) != 0 {
            for k in i..i + 8 {
                if hit(k) && f(k) {
                    return true;
                }
            }
        }
        i += 8;
    }
    (i..b.len()).any(|k| hit(k) && f(k))
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits a parameter string like the core `parse_params` with class ANY and separator `;`.
/// The parameters are returned in **string order** (the C list is the reverse of this).
pub fn parse_params(s: &[u8]) -> Result<Vec<Param<'_>>, AttrError> {
    let mut out = Vec::new();
    parse_params_each(s, &mut |p| out.push(p))?;
    Ok(out)
}

/// [`parse_params`] handing each parameter to `push` in string order (no allocation).
fn parse_params_each<'a>(s: &'a [u8], push: &mut impl FnMut(Param<'a>)) -> Result<(), AttrError> {
    struct Out<'f, F>(&'f mut F);
    impl<'a, F: FnMut(Param<'a>)> Out<'_, F> {
        fn push(&mut self, p: Param<'a>) {
            (self.0)(p)
        }
    }
    let mut out = Out(push);
    if s.is_empty() {
        return Ok(());
    }
    let at = |i: usize| s.get(i).copied();
    let skip_ws = |mut i: usize| {
        while at(i).is_some_and(is_ws) {
            i += 1;
        }
        i
    };
    let mut i = 0usize;
    loop {
        // name: up to whitespace , = ;
        let ns = i;
        while at(i).is_some_and(|c| !(is_ws(c) || matches!(c, b',' | b'=' | b';'))) {
            i += 1;
        }
        let name = s.get(ns..i).unwrap_or_default();
        i = skip_ws(i);
        let mut value = None;
        if i >= s.len() {
            out.push(Param { name, value });
            return Ok(());
        }
        if at(i) == Some(b'=') {
            i = skip_ws(i + 1);
            if i >= s.len() {
                // a missing value at the very end is accepted as empty
                out.push(Param {
                    name,
                    value: Some(s.get(i..i).unwrap_or_default()),
                });
                return Ok(());
            }
            match at(i) {
                Some(q @ (b'"' | b'\'')) => {
                    if s.len() - i < 2 {
                        return Err(AttrError {
                            col: i,
                            msg: "unterminated quoted value".into(),
                        });
                    }
                    let vs = i + 1;
                    let close = s
                        .get(vs..)
                        .and_then(|r| r.iter().position(|&c| c == q))
                        .ok_or_else(|| AttrError {
                            col: i,
                            msg: "unterminated quoted value".into(),
                        })?;
                    value = Some(s.get(vs..vs + close).unwrap_or_default());
                    i = vs + close + 1;
                }
                _ => {
                    let vs = i;
                    while at(i).is_some_and(|c| !(is_ws(c) || matches!(c, b',' | b';'))) {
                        i += 1;
                    }
                    if i == vs {
                        return Err(AttrError {
                            col: i,
                            msg: "missing value after '='".into(),
                        });
                    }
                    value = Some(s.get(vs..i).unwrap_or_default());
                }
            }
            i = skip_ws(i);
            if i >= s.len() {
                out.push(Param { name, value });
                return Ok(());
            }
        }
        out.push(Param { name, value });
        match at(i) {
            // ',' and '>' end the parameter list; the rest is not interpreted
            Some(b',') | Some(b'>') => return Ok(()),
            Some(b';') => {}
            Some(c) => {
                let shown = if c.is_ascii_graphic() {
                    format!("'{}'", c as char)
                } else {
                    format!("0x{c:02x}")
                };
                return Err(AttrError {
                    col: i,
                    msg: format!("invalid character {shown}, expected ';'"),
                });
            }
            None => return Ok(()),
        }
        i = skip_ws(i + 1);
        if i >= s.len() {
            return Err(AttrError {
                col: i,
                msg: "parameter name missing after ';'".into(),
            });
        }
    }
}

/// The core `str2sint`: returns the value and whether the whole string converted.
/// Stops at the first non-digit keeping the partial value; saturates on overflow.
pub fn str2sint(s: &[u8]) -> (i32, bool) {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, s.get(1..).unwrap_or_default()),
        Some(b'+') => (false, s.get(1..).unwrap_or_default()),
        _ => (false, s),
    };
    let mut r: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return (r as i32, false);
        }
        let d = i64::from(c - b'0');
        if neg {
            r = r * 10 - d;
            if r < i64::from(i32::MIN) {
                return (i32::MIN, false);
            }
        } else {
            r = r * 10 + d;
            if r > i64::from(i32::MAX) {
                return (i32::MAX, false);
            }
        }
    }
    (r as i32, true)
}

/// The core `str2int` (unsigned): optional `+`, digits; stops at the first non-digit keeping
/// the partial value; saturates at `u32::MAX`.
pub fn str2uint(s: &[u8]) -> (u32, bool) {
    let digits = match s.first() {
        Some(b'+') => s.get(1..).unwrap_or_default(),
        _ => s,
    };
    let mut r: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return (r as u32, false);
        }
        r = r * 10 + u64::from(c - b'0');
        if r > u64::from(u32::MAX) {
            return (u32::MAX, false);
        }
    }
    (r as u32, true)
}

/// Parses a destination's attrs (`raw` as read from the list file, DB or RPC).
/// `attrs_none` is the `ds_attrs_none` modparam: empty attrs become `none=yes`.
/// Returns the attributes and the messages to log (out-of-range weights: ERROR for
/// `weight`, WARNING for `rweight`, as the C module's `ds_set_attrs`).
pub fn parse_attrs(raw: &[u8], attrs_none: bool) -> Result<(Attrs, Vec<Note>), AttrError> {
    parse_attrs_in(raw, attrs_none, Vec::new())
}

/// [`parse_attrs`] writing the body into `buf` (cleared first): a list build reuses the
/// buffers of the destinations it prepared before.
pub fn parse_attrs_in(raw: &[u8], attrs_none: bool, mut buf: Vec<u8>) -> Result<(Attrs, Vec<Note>), AttrError> {
    let mut a = Attrs::default();
    let mut warnings = Vec::new();
    let src: &[u8] = if raw.is_empty() {
        if !attrs_none {
            return Ok((a, warnings));
        }
        b"none=yes"
    } else {
        raw
    };
    let body = match src.split_last() {
        Some((b';', rest)) => rest,
        _ => src,
    };
    buf.clear();
    buf.extend_from_slice(body);
    a.body = buf;
    // the parameters in a stack buffer (a heap list only past 8 of them)
    const EMPTY: Param<'static> = Param { name: b"", value: None };
    let mut small = [EMPTY; 8];
    let mut n_small = 0usize;
    let mut more: Vec<Param<'_>> = Vec::new();
    parse_params_each(body, &mut |p| {
        if more.is_empty() && n_small < small.len() {
            if let Some(slot) = small.get_mut(n_small) {
                *slot = p;
            }
            n_small += 1;
        } else {
            if more.is_empty() {
                more.extend_from_slice(small.get(..n_small).unwrap_or_default());
            }
            more.push(p);
        }
    })?;
    let params: &[Param<'_>] = if more.is_empty() { small.get(..n_small).unwrap_or_default() } else { &more };

    let (mut ocmin, mut ocmax, mut ocrate) = (0u32, 100u32, 0u32);
    let owned = |v: Option<&[u8]>| v.map(|v| v.to_vec());
    // the C module walks the list in reverse string order: the first occurrence wins
    for p in params.iter().rev() {
        let n = p.name;
        let is = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
        if is("duid") {
            // the value is a slice of `body` (parse_params does not copy): keep its place
            a.duid_at = p.value.map(|v| {
                let at = (v.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
                (at, at.wrapping_add(v.len()))
            });
        } else if is("cc") {
            if let Some(v) = p.value {
                a.cc = str2sint(v).0;
            }
        } else if is("weight") || is("rweight") {
            let val = p.value.map(|v| str2sint(v).0).unwrap_or(0);
            let w = if (1..=100).contains(&val) { val } else { 0 };
            if is("weight") {
                a.weight = w;
                if w == 0 {
                    warnings.push(Note::new(
                        Level::Err,
                        "ds_set_attrs",
                        format!("weight {val} not in 1-100 range - ignoring destination"),
                    ));
                }
            } else {
                a.rweight = w;
                if w == 0 {
                    warnings.push(Note::new(
                        Level::Warn,
                        "ds_set_attrs",
                        format!("rweight {val} not in 1-100 range - ignoring"),
                    ));
                }
            }
        } else if is("latency") {
            if let Some(v) = p.value {
                let (val, ok) = str2sint(v);
                if ok {
                    a.latency = val;
                }
            }
        } else if is("maxload") {
            if let Some(v) = p.value {
                a.maxload = str2sint(v).0;
            }
        } else if is("socket") {
            a.rare.get_or_insert_with(Default::default).socket = owned(p.value);
        } else if is("sockname") {
            a.rare.get_or_insert_with(Default::default).sockname = owned(p.value);
        } else if is("ping_socket") {
            a.rare.get_or_insert_with(Default::default).ping_socket = owned(p.value);
        } else if is("ping_from") {
            a.rare.get_or_insert_with(Default::default).ping_from = owned(p.value);
        } else if is("obproxy") {
            a.rare.get_or_insert_with(Default::default).obproxy = owned(p.value);
        } else if is("ocmin") {
            if let Some(v) = p.value {
                ocmin = str2uint(v).0;
            }
        } else if is("ocmax") {
            if let Some(v) = p.value {
                ocmax = str2uint(v).0;
            }
        } else if is("ocrate") {
            if let Some(v) = p.value {
                ocrate = str2uint(v).0;
            }
        }
    }
    // all five set to "absent" again (`socket;socket=x`): no box, so equal attrs compare equal
    if a.rare.as_ref().is_some_and(|r| r.is_empty()) {
        a.rare = None;
    }
    // overload-control clamping (Kamailio 6.0 ds_set_attrs)
    if ocmax > 100 || ocmax == 0 {
        ocmax = 100;
    }
    if ocmin > 100 || ocmin > ocmax {
        ocmin = 0;
    }
    if ocrate > 100 {
        ocrate = 0;
    }
    ocrate = ocrate.clamp(ocmin, ocmax);
    a.ocmin = ocmin as i32;
    a.ocmax = ocmax as i32;
    a.ocrate = ocrate as i32;
    Ok((a, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `has_ci` finds what the window-by-window scan it replaces finds.
    #[test]
    fn has_ci_equals_windows() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"lLaAtTeEnNcCyY=;0";
        let mut hits = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b: Vec<u8> = (0..(x % 20) as usize).map(|k| alphabet[((x >> (k * 3 % 60)) % alphabet.len() as u64) as usize]).collect();
            if x % 4 == 0 {
                let at = (x >> 9) as usize % (b.len() + 1);
                b.splice(at..at, [&b"latency"[..], b"LaTeNcY", b"latenc"][(x >> 30) as usize % 3].iter().copied());
            }
            let want = b.windows(7).any(|w| w.eq_ignore_ascii_case(b"latency"));
            hits += want as u32;
            assert_eq!(has_ci(&b, b"latency"), want, "{:?}", String::from_utf8_lossy(&b));
        }
        assert!(hits > 1000);
    }

    fn pa(s: &str) -> (Attrs, Vec<Note>) {
        parse_attrs(s.as_bytes(), false).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn sample_line() {
        let (a, w) = pa("duid=abc;socket=udp:192.168.0.125:5060;pipe=p10");
        assert!(w.is_empty());
        assert_eq!(a.body, b"duid=abc;socket=udp:192.168.0.125:5060;pipe=p10");
        assert_eq!(a.duid().map(<[u8]>::to_vec), v("abc"));
        assert_eq!(a.socket().map(<[u8]>::to_vec), v("udp:192.168.0.125:5060"));
        assert_eq!(a.sockname().map(<[u8]>::to_vec), None);
        assert_eq!((a.ocmin, a.ocmax, a.ocrate), (0, 100, 0));
    }

    #[test]
    fn all_known_names_case_insensitive() {
        let (a, w) = pa("DUID=d;MaxLoad=20;Weight=30;rWeight=40;SOCKET=tcp:1.2.3.4:5060;sockname=s1;\
             ping_from=sip:p@x;obproxy=sip:o;cc=1;latency=25;ocmin=5;ocmax=50;ocrate=60;ping_socket=udp:1.2.3.4:5;my=xyz;");
        assert!(w.is_empty());
        assert_eq!(a.duid().map(<[u8]>::to_vec), v("d"));
        assert_eq!(a.maxload, 20);
        assert_eq!(a.weight, 30);
        assert_eq!(a.rweight, 40);
        assert_eq!(a.socket().map(<[u8]>::to_vec), v("tcp:1.2.3.4:5060"));
        assert_eq!(a.sockname().map(<[u8]>::to_vec), v("s1"));
        assert_eq!(a.ping_from().map(<[u8]>::to_vec), v("sip:p@x"));
        assert_eq!(a.obproxy().map(<[u8]>::to_vec), v("sip:o"));
        assert_eq!(a.cc, 1);
        assert_eq!(a.latency, 25);
        assert_eq!(a.latency_init(), Some(25));
        assert_eq!((a.ocmin, a.ocmax, a.ocrate), (5, 50, 50));
        assert_eq!(a.ping_socket().map(<[u8]>::to_vec), v("udp:1.2.3.4:5"));
        assert!(a.body.ends_with(b"my=xyz"));
    }

    #[test]
    fn trailing_semicolon_and_none() {
        assert_eq!(pa("a=1;").0.body, b"a=1");
        assert_eq!(pa(";").0.body, b"");
        assert!(parse_attrs(b"a=1;;", false).is_err());
        let (a, _) = parse_attrs(b"", true).expect("none");
        assert_eq!(a.body, b"none=yes");
        let (a, _) = parse_attrs(b"", false).expect("empty");
        assert_eq!(a, Attrs::default());
        assert_eq!(a.ocmax, 100);
        // attrs_none only applies to empty attrs
        assert_eq!(parse_attrs(b";", true).expect("x").0.body, b"");
    }

    #[test]
    fn weights() {
        let (a, w) = pa("weight=0");
        assert_eq!(a.weight, 0);
        // severities of the C module's ds_set_attrs: ERROR for weight, WARNING for rweight
        assert_eq!(
            w,
            vec![Note::new(Level::Err, "ds_set_attrs", "weight 0 not in 1-100 range - ignoring destination".into())]
        );
        let (a, w) = pa("weight=101;rweight=-3");
        assert_eq!((a.weight, a.rweight), (0, 0));
        assert_eq!(w.len(), 2);
        assert!(w.contains(&Note::new(Level::Warn, "ds_set_attrs", "rweight -3 not in 1-100 range - ignoring".into())));
        assert!(w.contains(&Note::new(
            Level::Err,
            "ds_set_attrs",
            "weight 101 not in 1-100 range - ignoring destination".into()
        )));
        assert_eq!(pa("weight=100").0.weight, 100);
        assert_eq!(pa("weight=1").0.weight, 1);
        // no '=' : value 0 -> warning
        let (a, w) = pa("weight");
        assert_eq!(a.weight, 0);
        assert_eq!(w.len(), 1);
        // partial digits are used
        assert_eq!(pa("weight=50abc").0.weight, 50);
        assert_eq!(pa("weight=+7").0.weight, 7);
    }

    #[test]
    fn integers_like_str2sint() {
        assert_eq!(str2sint(b"123"), (123, true));
        assert_eq!(str2sint(b"-12"), (-12, true));
        assert_eq!(str2sint(b"+12"), (12, true));
        assert_eq!(str2sint(b"12ab"), (12, false));
        assert_eq!(str2sint(b"-12ab"), (-12, false));
        assert_eq!(str2sint(b"ab"), (0, false));
        assert_eq!(str2sint(b""), (0, true));
        assert_eq!(str2sint(b"-"), (0, true));
        assert_eq!(str2sint(b"2147483647"), (i32::MAX, true));
        assert_eq!(str2sint(b"2147483648"), (i32::MAX, false));
        assert_eq!(str2sint(b"-2147483648"), (i32::MIN, true));
        assert_eq!(str2sint(b"-2147483649"), (i32::MIN, false));
        assert_eq!(str2sint(b"99999999999999999999"), (i32::MAX, false));
        assert_eq!(str2uint(b"-5"), (0, false));
        assert_eq!(str2uint(b"4294967295"), (u32::MAX, true));
        assert_eq!(str2uint(b"4294967296"), (u32::MAX, false));
        let (a, _) = pa("maxload=12x;cc=-3");
        assert_eq!((a.maxload, a.cc), (12, -3));
    }

    #[test]
    fn latency_only_when_clean() {
        let (a, _) = pa("latency=12ab");
        assert_eq!(a.latency, 0);
        assert_eq!(a.latency_init(), None);
        let (a, _) = pa("latency=0");
        assert_eq!(a.latency_init(), Some(0));
        let (a, _) = pa("latency=x;latency=7");
        assert_eq!((a.latency, a.latency_init()), (7, Some(7)));
        let (a, _) = pa("latency=7;latency=9");
        assert_eq!((a.latency, a.latency_init()), (7, Some(7)));
        assert_eq!(pa("x=1").0.latency_init(), None);
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(pa("duid=a;duid=b").0.duid().map(<[u8]>::to_vec), v("a"));
        assert_eq!(pa("socket;socket=udp:1.2.3.4:5060").0.socket().map(<[u8]>::to_vec), None);
        assert_eq!(
            pa("socket=udp:1.2.3.4:5060;socket").0.socket().map(<[u8]>::to_vec),
            v("udp:1.2.3.4:5060")
        );
        // an integer without '=' does not touch the value
        assert_eq!(pa("cc;cc=5").0.cc, 5);
        assert_eq!(pa("cc=5;cc").0.cc, 5);
        assert_eq!(pa("cc=5;cc=6").0.cc, 5);
        assert_eq!(pa("weight=5;weight=500").0.weight, 5);
    }

    #[test]
    fn quoting_and_stops() {
        let (a, _) = pa("duid=\"a;b\";weight=5");
        assert_eq!(a.duid().map(<[u8]>::to_vec), v("a;b"));
        assert_eq!(a.weight, 5);
        assert_eq!(a.body, b"duid=\"a;b\";weight=5");
        assert_eq!(pa("duid='x y'").0.duid().map(<[u8]>::to_vec), v("x y"));
        assert_eq!(pa("duid=").0.duid().map(<[u8]>::to_vec), v(""));
        assert_eq!(pa("duid=\"\"").0.duid().map(<[u8]>::to_vec), v(""));
        // ',' ends the list
        let (a, _) = pa("duid=a,weight=5");
        assert_eq!((a.duid().map(<[u8]>::to_vec), a.weight), (v("a"), 0));
        let (a, _) = pa("duid=\"a\">weight=5");
        assert_eq!((a.duid().map(<[u8]>::to_vec), a.weight), (v("a"), 0));
        // whitespace around '=' and ';'
        let (a, _) = pa("duid = a ; weight = 5 ");
        assert_eq!((a.duid().map(<[u8]>::to_vec), a.weight), (v("a"), 5));
        // empty names are allowed
        assert_eq!(pa("=5;duid=x").0.duid().map(<[u8]>::to_vec), v("x"));
        assert_eq!(pa(";duid=x").0.duid().map(<[u8]>::to_vec), v("x"));
    }

    #[test]
    fn syntax_errors() {
        let e = |s: &str| parse_attrs(s.as_bytes(), false).expect_err(s);
        assert_eq!(e("duid=\"abc").col, 5);
        assert_eq!(e("duid=\"").col, 5);
        assert_eq!(e("a=;b=1").col, 2);
        assert_eq!(e("a b=1").col, 2);
        assert_eq!(e("a=1 b").col, 4);
        assert_eq!(e("a=1;;").col, 4);
        assert_eq!(e("a=1; ;").col, 5);
        // an empty value followed by ';' is an error (the core token parser needs 1 char)
        assert_eq!(e("sockname=;socket=").col, 9);
        assert!(e("a=1 x").msg.contains("expected ';'"));
    }

    #[test]
    fn overload_control_clamping() {
        let oc = |s: &str| {
            let (a, _) = pa(s);
            (a.ocmin, a.ocmax, a.ocrate)
        };
        assert_eq!(oc("x=1"), (0, 100, 0));
        assert_eq!(oc("ocmax=0"), (0, 100, 0));
        assert_eq!(oc("ocmax=500"), (0, 100, 0));
        assert_eq!(oc("ocmin=101"), (0, 100, 0));
        assert_eq!(oc("ocmin=60;ocmax=50"), (0, 50, 0));
        assert_eq!(oc("ocmin=10;ocrate=5"), (10, 100, 10));
        assert_eq!(oc("ocmin=10;ocmax=20;ocrate=50"), (10, 20, 20));
        assert_eq!(oc("ocrate=101"), (0, 100, 0));
        assert_eq!(oc("ocrate=-5"), (0, 100, 0));
        assert_eq!(oc("ocrate=30"), (0, 100, 30));
    }
}
