//! The dispatcher list file (`ds_list_file`), parsed exactly like the C `ds_load_list`.
//!
//! The C loader reads the file with `fgets` into a 1024-byte buffer, so:
//! * it works on chunks of at most 1023 bytes: a longer physical line is cut, and its tail is
//!   parsed as if it were a line of its own (line numbers here still count physical lines, and
//!   columns are counted from the start of the physical line);
//! * each chunk is a C string: a NUL byte ends it.
//!
//! Line grammar (whitespace = space, tab, CR, LF):
//! `ws* setid-digits ws* uri ws* [flags-digits ws* [priority-digits ws* [attrs]]] rest-ignored`
//! * an empty line or one whose first non-blank byte is `#` is skipped;
//! * the setid is a digit run (possibly empty: a line starting with a non-digit gets set 0);
//!   if nothing (or a `#`) follows it, the line is a "bad line" and **the whole load fails**;
//! * the URI runs up to whitespace or `#`;
//! * flags and priority are digit runs stopping at the first non-digit (`8abc` gives flags 8,
//!   priority 0, attrs `abc`); a `#` before them ends the line; from Kamailio 6.1 flags may
//!   also be `0x` + hex digits (`0x8`), see `compat`;
//! * attrs run up to whitespace (a `#` inside attrs is kept).
//!
//! Digit runs are converted like the C `x = x * 10 + digit` on `int`: they wrap around modulo
//! 2^32 (so a huge set id or priority can become negative).

#[cfg(test)]
use nom::bytes::complete::{take_till, take_while};
#[cfg(test)]
use nom::IResult;

/// One destination line of the list file, before any validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub setid: i32,
    pub uri: Vec<u8>,
    pub flags: i32,
    pub priority: i32,
    /// Empty when absent.
    pub attrs: Vec<u8>,
    /// 1-based physical line number.
    pub line: usize,
    /// 1-based column (byte) of the URI within the physical line.
    pub col: usize,
}

/// A [`RawEntry`] borrowing its text (from the list file read, or from a `RawEntry`): what a
/// reload parses, without an allocation per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub setid: i32,
    pub uri: &'a [u8],
    pub flags: i32,
    pub priority: i32,
    /// Empty when absent.
    pub attrs: &'a [u8],
    /// 1-based physical line number.
    pub line: usize,
    /// 1-based column (byte) of the URI within the physical line.
    pub col: usize,
}

impl RawEntry {
    /// The entry as an [`EntryRef`].
    pub fn view(&self) -> EntryRef<'_> {
        EntryRef { setid: self.setid, uri: &self.uri, flags: self.flags, priority: self.priority, attrs: &self.attrs, line: self.line, col: self.col }
    }
}

impl EntryRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> RawEntry {
        RawEntry {
            setid: self.setid,
            uri: self.uri.to_vec(),
            flags: self.flags,
            priority: self.priority,
            attrs: self.attrs.to_vec(),
            line: self.line,
            col: self.col,
        }
    }
}

/// A list-file error that makes the whole load fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
    }
}

impl std::error::Error for ListError {}

/// Size of the C line buffer; `fgets` stores at most `FGETS_BUF - 1` bytes per call.
pub const FGETS_BUF: usize = 1024;

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
fn ws(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(is_ws)(i)
}

/// A (possibly empty) digit run converted with C `int` wrap-around.
#[cfg(test)]
fn digits(i: &[u8]) -> IResult<&[u8], i32> {
    let (rest, d) = take_while(|c: u8| c.is_ascii_digit())(i)?;
    let v = d.iter().fold(0i32, |acc, &c| {
        acc.wrapping_mul(10).wrapping_add(i32::from(c - b'0'))
    });
    Ok((rest, v))
}

/// The flags field: decimal digits, or from Kamailio 6.1 `0x` (lower-case x) and hex digits
/// (wrapping like the C `flags << 4 | digit` on `int`).
#[cfg(test)]
fn flags_field(i: &[u8]) -> IResult<&[u8], i32> {
    if super::compat::ge(6, 1, 0) {
        if let Some(hex) = i.strip_prefix(b"0x") {
            let (rest, d) = take_while(|c: u8| c.is_ascii_hexdigit())(hex)?;
            let v = d.iter().fold(0i32, |acc, &c| {
                let n = (c as char).to_digit(16).unwrap_or(0) as i32;
                acc.wrapping_shl(4) | n
            });
            return Ok((rest, v));
        }
    }
    digits(i)
}

#[cfg(test)]
fn uri_field(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_till(|c: u8| is_ws(c) || c == b'#')(i)
}

#[cfg(test)]
fn attrs_field(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_till(is_ws)(i)
}

/// True at the end of the (C) string or at a comment.
#[cfg(test)]
fn line_ends(i: &[u8]) -> bool {
    matches!(i.first(), None | Some(b'#'))
}

/// What one fgets chunk holds.
#[derive(Debug, PartialEq, Eq)]
enum Chunk<'a> {
    /// blank or comment
    Skip,
    /// set id but no destination; the offset is where the destination was expected
    BadLine(usize),
    Entry {
        setid: i32,
        uri: &'a [u8],
        uri_off: usize,
        flags: i32,
        priority: i32,
        attrs: &'a [u8],
    },
}

/// Parses one chunk (already cut at its first NUL byte): one pass over the bytes, the same
/// result as [`parse_chunk_nom`] (the grammar written with nom, kept as the reference the
/// tests compare with).
fn parse_chunk(c: &[u8]) -> Chunk<'_> {
    let n = c.len();
    let at = |i: usize| c.get(i).copied();
    let skip_ws = |mut i: usize| {
        while at(i).is_some_and(is_ws) {
            i += 1;
        }
        i
    };
    let ends = |i: usize| matches!(at(i), None | Some(b'#'));
    let digits = |mut i: usize| {
        let mut v = 0i32;
        while let Some(d) = at(i).filter(u8::is_ascii_digit) {
            v = v.wrapping_mul(10).wrapping_add(i32::from(d - b'0'));
            i += 1;
        }
        (i, v)
    };
    let mut i = skip_ws(0);
    if ends(i) {
        return Chunk::Skip;
    }
    let setid;
    (i, setid) = digits(i);
    i = skip_ws(i);
    if ends(i) {
        // point at the end of the visible text rather than past the line break
        let mut e = n;
        if i >= n {
            while e > 0 && matches!(at(e - 1), Some(b'\n' | b'\r')) {
                e -= 1;
            }
        } else {
            e = i;
        }
        return Chunk::BadLine(e);
    }
    let uri_off = i;
    while at(i).is_some_and(|b| !is_ws(b) && b != b'#') {
        i += 1;
    }
    let uri = c.get(uri_off..i).unwrap_or_default();
    i = skip_ws(i);
    let (mut flags, mut priority, mut attrs) = (0i32, 0i32, &[][..]);
    if !ends(i) {
        if super::compat::ge(6, 1, 0) && c.get(i..i + 2) == Some(b"0x") {
            i += 2;
            while let Some(h) = at(i).and_then(|b| (b as char).to_digit(16)) {
                flags = flags.wrapping_shl(4) | h as i32;
                i += 1;
            }
        } else {
            (i, flags) = digits(i);
        }
        i = skip_ws(i);
        if !ends(i) {
            (i, priority) = digits(i);
            i = skip_ws(i);
            if !ends(i) {
                let a = i;
                while at(i).is_some_and(|b| !is_ws(b)) {
                    i += 1;
                }
                attrs = c.get(a..i).unwrap_or_default();
            }
        }
    }
    Chunk::Entry { setid, uri, uri_off, flags, priority, attrs }
}

/// The line grammar written with nom: the reference for [`parse_chunk`].
#[cfg(test)]
fn parse_chunk_nom(c: &[u8]) -> Chunk<'_> {
    let off = |rest: &[u8]| c.len() - rest.len();
    // the nom parsers used here cannot fail on complete input; treat a failure as a blank line
    let run = || -> IResult<&[u8], Chunk<'_>> {
        let (i, _) = ws(c)?;
        if line_ends(i) {
            return Ok((i, Chunk::Skip));
        }
        let (i, setid) = digits(i)?;
        let (i, _) = ws(i)?;
        if line_ends(i) {
            // point at the end of the visible text rather than past the line break
            let at = if i.is_empty() {
                let mut n = c.len();
                while n > 0 && matches!(c.get(n - 1), Some(b'\n' | b'\r')) {
                    n -= 1;
                }
                n
            } else {
                off(i)
            };
            return Ok((i, Chunk::BadLine(at)));
        }
        let uri_off = off(i);
        let (i, uri) = uri_field(i)?;
        let (mut i, _) = ws(i)?;
        let (mut flags, mut priority, mut attrs) = (0, 0, &[][..]);
        // optional fields: each one is only read when the line goes on
        if !line_ends(i) {
            (i, flags) = flags_field(i)?;
            (i, _) = ws(i)?;
            if !line_ends(i) {
                (i, priority) = digits(i)?;
                (i, _) = ws(i)?;
                if !line_ends(i) {
                    (i, attrs) = attrs_field(i)?;
                }
            }
        }
        Ok((
            i,
            Chunk::Entry {
                setid,
                uri,
                uri_off,
                flags,
                priority,
                attrs,
            },
        ))
    };
    match run() {
        Ok((_, ch)) => ch,
        Err(_) => Chunk::Skip,
    }
}

/// Splits the file like successive `fgets(buf, 1024, f)` calls: yields
/// `(physical line, byte offset of the chunk within that line, chunk)`.
#[cfg(test)]
fn fgets_chunks(text: &[u8]) -> impl Iterator<Item = (usize, usize, &[u8])> {
    fgets_chunks_nul(text).map(|(l, o, chunk, _)| (l, o, chunk))
}

/// The first byte of `w` that is a line feed or a NUL: (index, is NUL), eight bytes at a time.
fn find_lf_or_nul(w: &[u8]) -> Option<(usize, bool)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut i = 0usize;
    let mut words = w.chunks_exact(8);
    for c in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let x = u64::from_le_bytes(b);
        let y = x ^ LF;
        // the lowest flagged byte is exactly the first zero byte of x (NUL) or of y (LF)
        let hit = (x.wrapping_sub(ONES) & !x & HIGH) | (y.wrapping_sub(ONES) & !y & HIGH);
        if hit != 0 {
            let k = i + (hit.trailing_zeros() / 8) as usize;
            return Some((k, w.get(k) == Some(&0)));
        }
        i += 8;
    }
    words.remainder().iter().position(|&c| c == b'\n' || c == 0).map(|k| (i + k, w.get(i + k) == Some(&0)))
}

/// [`fgets_chunks`] that also gives each chunk cut at its first NUL byte (the C string).
fn fgets_chunks_nul(text: &[u8]) -> impl Iterator<Item = (usize, usize, &[u8], &[u8])> {
    let mut pos = 0usize;
    let mut line = 1usize;
    let mut line_off = 0usize;
    std::iter::from_fn(move || {
        let rest = text.get(pos..).filter(|r| !r.is_empty())?;
        let max = rest.len().min(FGETS_BUF - 1);
        let window = rest.get(..max)?;
        let (len, cstr_len) = match find_lf_or_nul(window) {
            Some((k, false)) => (k + 1, k + 1),
            Some((k, true)) => {
                let lf = window.get(k..).and_then(|t| t.iter().position(|&c| c == b'\n')).map(|n| k + n + 1);
                (lf.unwrap_or(max), k)
            }
            None => (max, max),
        };
        let chunk = rest.get(..len)?;
        let cstr = chunk.get(..cstr_len).unwrap_or_default();
        let item = (line, line_off, chunk, cstr);
        pos += len;
        if chunk.last() == Some(&b'\n') {
            line += 1;
            line_off = 0;
        } else {
            line_off += len;
        }
        Some(item)
    })
}

/// Parses a whole list file. `file` is only used in error messages.
/// Entries are returned in file order; the only error is a "bad line", which aborts the load.
pub fn parse_list(text: &[u8], file: &str) -> Result<Vec<RawEntry>, ListError> {
    Ok(parse_list_ref(text, file)?.iter().map(EntryRef::to_owned).collect())
}

/// [`parse_list`] with entries borrowed from `text`.
pub fn parse_list_ref<'a>(text: &'a [u8], file: &str) -> Result<Vec<EntryRef<'a>>, ListError> {
    // about one entry per 40 bytes: one allocation for most lists
    let mut out = Vec::with_capacity(text.len() / 40 + 1);
    // the C code treats the buffer as a NUL terminated string
    for (line, line_off, _chunk, cstr) in fgets_chunks_nul(text) {
        match parse_chunk(cstr) {
            Chunk::Skip => {}
            Chunk::BadLine(at) => {
                return Err(ListError {
                    file: file.to_string(),
                    line,
                    col: line_off + at + 1,
                    msg: "bad line: missing destination after set id".to_string(),
                })
            }
            Chunk::Entry {
                setid,
                uri,
                uri_off,
                flags,
                priority,
                attrs,
            } => out.push(EntryRef {
                setid,
                uri,
                flags,
                priority,
                attrs,
                line,
                col: line_off + uri_off + 1,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(
        setid: i32,
        uri: &str,
        flags: i32,
        priority: i32,
        attrs: &str,
        line: usize,
        col: usize,
    ) -> RawEntry {
        RawEntry {
            setid,
            uri: uri.as_bytes().to_vec(),
            flags,
            priority,
            attrs: attrs.as_bytes().to_vec(),
            line,
            col,
        }
    }

    fn pl(s: &str) -> Vec<RawEntry> {
        parse_list(s.as_bytes(), "t.list").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sample_file() {
        let text = "# comment\n\
                    \n\
                    1 sip:127.0.0.1:5080\n\
                    2 sip:127.0.0.1:5082;px=vx 0 5 duid=abc;socket=udp:192.168.0.125:5060;pipe=p10\n\
                    \t 3\tsip:h.example 8 2 a=1 trailing junk # c\r\n";
        assert_eq!(
            pl(text),
            vec![
                e(1, "sip:127.0.0.1:5080", 0, 0, "", 3, 3),
                e(
                    2,
                    "sip:127.0.0.1:5082;px=vx",
                    0,
                    5,
                    "duid=abc;socket=udp:192.168.0.125:5060;pipe=p10",
                    4,
                    3
                ),
                e(3, "sip:h.example", 8, 2, "a=1", 5, 5),
            ]
        );
    }

    #[test]
    fn comments_and_hash_positions() {
        assert_eq!(pl("1 sip:a#x"), vec![e(1, "sip:a", 0, 0, "", 1, 3)]);
        assert_eq!(pl("1 sip:a 1 #c"), vec![e(1, "sip:a", 1, 0, "", 1, 3)]);
        assert_eq!(pl("1 sip:a 1 2#c"), vec![e(1, "sip:a", 1, 2, "", 1, 3)]);
        assert_eq!(
            pl("1 sip:a 1 2 x=#y z"),
            vec![e(1, "sip:a", 1, 2, "x=#y", 1, 3)]
        );
        assert_eq!(pl("   # 1 sip:a\n#\n"), vec![]);
        assert_eq!(pl(""), vec![]);
        assert_eq!(pl("\r\n\t\n"), vec![]);
    }

    #[test]
    fn digit_runs_stop_at_non_digits() {
        assert_eq!(pl("1 sip:a 8abc"), vec![e(1, "sip:a", 8, 0, "abc", 1, 3)]);
        assert_eq!(pl("1 sip:a abc"), vec![e(1, "sip:a", 0, 0, "abc", 1, 3)]);
        assert_eq!(pl("1 sip:a 3 4x=y"), vec![e(1, "sip:a", 3, 4, "x=y", 1, 3)]);
        assert_eq!(pl("1 sip:a -1"), vec![e(1, "sip:a", 0, 0, "-1", 1, 3)]);
        // no whitespace needed after the set id
        assert_eq!(pl("12sip:a"), vec![e(12, "sip:a", 0, 0, "", 1, 3)]);
        // a non-digit start gives set 0 and the text becomes the uri
        assert_eq!(pl("sip:a 1"), vec![e(0, "sip:a", 1, 0, "", 1, 1)]);
        assert_eq!(pl("-1 sip:a"), vec![e(0, "-1", 0, 0, "sip:a", 1, 1)]);
    }

    #[test]
    fn int_wraparound() {
        // 4294967297 = 2^32 + 1
        assert_eq!(pl("4294967297 sip:a")[0].setid, 1);
        assert_eq!(pl("2147483648 sip:a")[0].setid, i32::MIN);
        assert_eq!(pl("1 sip:a 0 3000000000")[0].priority, 3000000000u32 as i32);
    }

    #[test]
    fn bad_line_aborts() {
        let err = parse_list(b"1 sip:a\n\n  7   \n2 sip:b\n", "/etc/x.list").expect_err("bad");
        assert_eq!(err.line, 3);
        assert_eq!(err.col, 7);
        assert_eq!(
            err.to_string(),
            "/etc/x.list:3:7: bad line: missing destination after set id"
        );
        let err = parse_list(b"1#x\n", "f").expect_err("bad");
        assert_eq!((err.line, err.col), (1, 2));
        let err = parse_list(b"1 # comment\n", "f").expect_err("bad");
        assert_eq!((err.line, err.col), (1, 3));
    }

    #[test]
    fn nul_ends_the_line() {
        assert_eq!(
            pl("1 sip:a\0 1 2 x=y\n2 sip:b"),
            vec![e(1, "sip:a", 0, 0, "", 1, 3), e(2, "sip:b", 0, 0, "", 2, 3)]
        );
        assert_eq!(pl("\0 1 sip:a\n"), vec![]);
    }

    #[test]
    fn long_lines_are_chunked() {
        // attrs pushing the line past 1023 bytes: the tail is parsed as a new line
        let mut line = String::from("1 sip:a 0 0 ");
        let pad = 1023 - line.len();
        line.push_str(&"a".repeat(pad));
        assert_eq!(line.len(), 1023);
        line.push_str("5 sip:tail 2\n3 sip:next\n");
        let v = pl(&line);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].attrs.len(), pad);
        assert_eq!(v[1], e(5, "sip:tail", 2, 0, "", 1, 1026));
        assert_eq!(v[2], e(3, "sip:next", 0, 0, "", 2, 3));

        // a tail that is only a set id makes the load fail
        let mut line = String::from("1 sip:a ");
        line.push_str(&"b".repeat(1023 - line.len()));
        line.push_str("77\n");
        let err = parse_list(line.as_bytes(), "f").expect_err("bad tail");
        assert_eq!((err.line, err.col), (1, 1026));

        // exactly 1023 bytes + newline: the newline alone is the next chunk
        let mut line = String::from("1 sip:");
        line.push_str(&"c".repeat(1023 - line.len()));
        line.push('\n');
        line.push_str("2 sip:d\n");
        let v = pl(&line);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], e(2, "sip:d", 0, 0, "", 2, 3));

        // 1022 bytes + newline fits in one chunk
        let mut line = String::from("1 sip:");
        line.push_str(&"c".repeat(1022 - line.len()));
        line.push('\n');
        assert_eq!(pl(&line).len(), 1);
    }

    #[test]
    fn hex_flags_from_6_1() {
        use crate::ds::compat;
        let text = b"1 sip:a 0x1A 5 x=1\n1 sip:b 0X8 2\n1 sip:c 0x 3\n";
        compat::with(compat::val(6, 1, 4), || {
            let v = parse_list(text, "f").expect("parse");
            assert_eq!((v[0].flags, v[0].priority, &v[0].attrs[..]), (0x1a, 5, &b"x=1"[..]));
            // only a lower-case x is hex; "0X8" is flags 0 and priority 0, attrs "X8"
            assert_eq!((v[1].flags, v[1].priority, &v[1].attrs[..]), (0, 0, &b"X8"[..]));
            assert_eq!((v[2].flags, v[2].priority), (0, 3));
        });
        compat::with(compat::BASELINE, || {
            let v = parse_list(text, "f").expect("parse");
            // 5.6.3: "0x1A" is flags 0, priority 0 (stops at 'x'), attrs "x1A"
            assert_eq!((v[0].flags, v[0].priority, &v[0].attrs[..]), (0, 0, &b"x1A"[..]));
        });
    }

    #[test]
    fn chunker() {
        let c: Vec<_> = fgets_chunks(b"ab\ncd").collect();
        assert_eq!(c, vec![(1, 0, &b"ab\n"[..]), (2, 0, &b"cd"[..])]);
        let long = vec![b'x'; 2500];
        let c: Vec<_> = fgets_chunks(&long)
            .map(|(l, o, ch)| (l, o, ch.len()))
            .collect();
        assert_eq!(c, vec![(1, 0, 1023), (1, 1023, 1023), (1, 2046, 454)]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
        /// The one-pass parser and the nom grammar agree on any line made of the bytes that
        /// matter (digits, blanks, `#`, `x`, letters, `;`, `=`, `:`).
        #[test]
        fn one_pass_parser_is_the_grammar(line in proptest::collection::vec(proptest::sample::select(
            b" \t\r\n#0123456789xXaAfF;=:.@sip".to_vec()), 0..40)) {
            proptest::prop_assert_eq!(parse_chunk(&line), parse_chunk_nom(&line));
        }
    }

    /// The list parsed the plain way: `fgets_chunks`, a search for the NUL byte, the nom grammar.
    fn parse_naive(text: &[u8]) -> Vec<(usize, usize, Chunk<'_>)> {
        fgets_chunks(text)
            .map(|(l, o, chunk)| {
                let cstr = chunk.iter().position(|&c| c == 0).map_or(chunk, |n| &chunk[..n]);
                (l, o, parse_chunk_nom(cstr))
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]
        /// Whole texts (long lines, NUL bytes, line feeds anywhere): the chunks, their C strings
        /// and their parse are those of the plain way.
        #[test]
        fn chunking_with_nul_is_the_plain_way(
            text in proptest::collection::vec(proptest::sample::select(b"\n\n\0 1sip:a#x;=".to_vec()), 0..3000)
        ) {
            let fast: Vec<(usize, usize, Chunk<'_>)> =
                fgets_chunks_nul(&text).map(|(l, o, _, cstr)| (l, o, parse_chunk(cstr))).collect();
            proptest::prop_assert_eq!(fast, parse_naive(&text));
            for w in [&text[..], &text[text.len() / 3..]] {
                let naive = w.iter().position(|&c| c == b'\n' || c == 0).map(|k| (k, w[k] == 0));
                proptest::prop_assert_eq!(find_lf_or_nul(w), naive);
            }
        }
    }

    #[test]
    fn chunking_long_lines_with_nul_is_the_plain_way() {
        for nul in [None, Some(0), Some(7), Some(1021), Some(1022), Some(1023), Some(1030), Some(2046), Some(2499)] {
            for lf in [None, Some(5), Some(1022), Some(1023), Some(2400)] {
                let mut t: Vec<u8> = (0..2500).map(|i| b"1 sip:a 0 0 x=1;"[i % 16]).collect();
                if let Some(k) = lf {
                    t[k] = b'\n';
                }
                if let Some(k) = nul {
                    t[k] = 0;
                }
                let fast: Vec<(usize, usize, Chunk<'_>)> = fgets_chunks_nul(&t).map(|(l, o, _, c)| (l, o, parse_chunk(c))).collect();
                assert_eq!(fast, parse_naive(&t), "nul {nul:?} lf {lf:?}");
            }
        }
    }

    #[test]
    fn one_pass_parser_is_the_grammar_with_hex_flags() {
        use crate::ds::compat;
        for v in [compat::val(6, 1, 4), compat::BASELINE] {
            compat::with(v, || {
                for l in ["1 sip:a 0x1f 3 x", "1 sip:a 0x 3", "1 sip:a 0xg", "1 sip:a 0X8 2", "2 sip:b 0x8#c", "  7  ", "3#", "x", "1 sip:a 0xFfz"] {
                    assert_eq!(parse_chunk(l.as_bytes()), parse_chunk_nom(l.as_bytes()), "{l}");
                }
            });
        }
    }
}
