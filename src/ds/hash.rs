//! The dispatcher hash (`ds_get_hash` in the C module) and the URI hash keys used by the
//! algorithms 1 (From URI), 2 (To URI) and 3 (request URI).
//!
//! The hash is the core `get_hash2_raw` scheme with two details that matter for
//! compatibility: bytes are *signed* (`char` on x86-64, so a byte >= 0x80 is sign-extended
//! before being shifted/added), and a final value of 0 is returned as 1.

use crate::ds::uri::{parse_uri, uri_param_value, Scheme, UriError};

/// Sign-extends a byte like a signed `char` promoted to `int`, then reinterprets it as
/// `unsigned` (all arithmetic of the hash is modulo 2^32).
#[cfg(test)]
fn sc(b: u8) -> u32 {
    b as i8 as i32 as u32
}

/// One block of up to 4 bytes as the C code reads it: `(c0 << 24) + (c1 << 16) + ...` with
/// every byte sign-extended, computed from the big-endian value `x` of the block: a byte of
/// 0x80 or more adds `-256 << 8k` besides its unsigned value, i.e. its high bit shifted one
/// up is subtracted (modulo 2^32; the top byte of a full block shifts it out).
#[inline(always)]
fn signed_block(x: u32) -> u32 {
    x.wrapping_sub((x & 0x8080_8080) << 1)
}

#[inline(always)]
fn mix(h: u32, v: u32) -> u32 {
    h.wrapping_add(v ^ (v >> 3))
}

/// Folds one key into the running hash value: 4-byte blocks, then the remaining 0-3 bytes
/// as one value (so an empty remainder still adds 0). Reads 8 bytes at a time; bytes below
/// 0x80 (the usual Call-ID, URI user and host) need no sign correction, so the loop skips it
/// and checks once at the end.
#[inline]
fn fold_key(h0: u32, key: &[u8]) -> u32 {
    let mut h = h0;
    let mut high = 0u64;
    let mut pairs = key.chunks_exact(8);
    for p in &mut pairs {
        let mut b = [0u8; 8];
        b.copy_from_slice(p);
        let x = u64::from_be_bytes(b);
        high |= x;
        h = mix(h, (x >> 32) as u32);
        h = mix(h, x as u32);
    }
    let rest = pairs.remainder();
    let (full, tail) = if rest.len() >= 4 { rest.split_at(4) } else { (&[][..], rest) };
    if let [a, b, c, d] = *full {
        let v = u32::from_be_bytes([a, b, c, d]);
        high |= v as u64;
        h = mix(h, v);
    }
    let v = match *tail {
        [] => 0,
        [a] => a as u32,
        [a, b] => u32::from_be_bytes([0, 0, a, b]),
        [a, b, c, ..] => u32::from_be_bytes([0, a, b, c]),
    };
    high |= v as u64;
    if high & 0x8080_8080_8080_8080 != 0 {
        return fold_key_signed(h0, key);
    }
    mix(h, v)
}

/// [`fold_key`] for keys with bytes of 0x80 or more.
#[cold]
fn fold_key_signed(mut h: u32, key: &[u8]) -> u32 {
    let mut blocks = key.chunks_exact(4);
    for blk in &mut blocks {
        if let [a, b, c, d] = *blk {
            h = mix(h, signed_block(u32::from_be_bytes([a, b, c, d])));
        }
    }
    let mut v: u32 = 0;
    for &c in blocks.remainder() {
        v = (v << 8) | c as u32;
    }
    mix(h, signed_block(v))
}

/// The C loop as written (reference for the tests of [`fold_key`]).
#[cfg(test)]
fn fold_key_ref(mut h: u32, key: &[u8]) -> u32 {
    let mut blocks = key.chunks_exact(4);
    for blk in &mut blocks {
        if let [a, b, c, d] = *blk {
            let v = (sc(a) << 24)
                .wrapping_add(sc(b) << 16)
                .wrapping_add(sc(c) << 8)
                .wrapping_add(sc(d));
            h = h.wrapping_add(v ^ (v >> 3));
        }
    }
    let mut v: u32 = 0;
    for &c in blocks.remainder() {
        v = (v << 8).wrapping_add(sc(c));
    }
    h.wrapping_add(v ^ (v >> 3))
}

/// The dispatcher hash of one or two keys (spec §6.1). A `None` key is skipped (the C code
/// skips a key whose string pointer is NULL). The result is never 0 (0 is mapped to 1).
pub fn ds_hash(x: Option<&[u8]>, y: Option<&[u8]>) -> u32 {
    let mut h: u32 = 0;
    if let Some(x) = x {
        h = fold_key(h, x);
    }
    if let Some(y) = y {
        h = fold_key(h, y);
    }
    h = h
        .wrapping_add(h >> 11)
        .wrapping_add((h >> 13).wrapping_add(h >> 23));
    if h == 0 {
        1
    } else {
        h
    }
}

/// The `(x, y)` keys of [`uri_hash_keys`], ready for [`ds_hash`].
pub type HashKeys = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Hash keys for a URI, as the C `get_uri_hash_keys` builds them:
/// * `x` = the user part (`None` when the URI has no user; the caller logs a warning);
/// * `y` = the host as written, extended with `:port` (the port text as written) when the URI
///   has an explicit port that differs from the scheme default (5061 for `sips:`, 5060 for
///   everything else); `None` when `user_only` (dispatcher `flags` bit 1).
///
/// Kamailio's core option `phone2tel` (default on) is honoured: a `sip:`/`sips:` URI with the
/// parameter `user=phone` is treated as a tel URI, so its user is cut at the first `;` and the
/// default port is 5060 even for `sips:`. For a `tel:` URI the host is empty, so `y` is the
/// empty string (the C code then hashes nothing for it).
///
/// An unparsable URI gives `Err` (the C caller returns -1).
pub fn uri_hash_keys(uri: &[u8], user_only: bool) -> Result<HashKeys, UriError> {
    let (x, y) = uri_hash_key_ranges(uri, user_only)?;
    Ok((x.and_then(|r| uri.get(r)).map(|s| s.to_vec()), y.map(|r| uri.get(r).map(|s| s.to_vec()).unwrap_or_default())))
}

/// The (user, host[:port]) keys of a URI hash as ranges of the URI; either may be absent.
pub type KeyRanges = (Option<std::ops::Range<usize>>, Option<std::ops::Range<usize>>);

/// The keys of [`uri_hash_keys`] as ranges of `uri` (no allocation; the request path uses this).
pub fn uri_hash_key_ranges(uri: &[u8], user_only: bool) -> Result<KeyRanges, UriError> {
    let p = parse_uri(uri)?;
    let mut user = p.user.clone();
    let mut is_sips = p.scheme == Scheme::Sips;
    if matches!(p.scheme, Scheme::Sip | Scheme::Sips) {
        let phone = p
            .params
            .clone()
            .and_then(|pr| uri_param_value(uri, pr, b"user"))
            .and_then(|r| uri.get(r))
            == Some(&b"phone"[..]);
        if phone {
            is_sips = false;
            if let Some(u) = user.clone() {
                if let Some(semi) = uri
                    .get(u.clone())
                    .and_then(|s| s.iter().position(|&c| c == b';'))
                {
                    user = Some(u.start..u.start + semi);
                }
            }
        }
    }
    let x = user.filter(|r| uri.get(r.clone()).is_some());
    if user_only {
        return Ok((x, None));
    }
    let mut y_range = p.host.clone();
    if let Some(pt) = p.port_text.clone() {
        let default_port = if is_sips { 5061 } else { 5060 };
        // a tel URI has an empty host that is not followed by the port text: nothing to extend
        if p.port != default_port && !p.host.is_empty() && pt.start == p.host.end + 1 {
            y_range = p.host.start..pt.end;
        }
    }
    let y = if uri.get(y_range.clone()).is_some() { y_range } else { 0..0 };
    Ok((x, Some(y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(x: &[u8]) -> u32 {
        ds_hash(Some(x), None)
    }

    #[test]
    fn fast_fold_equals_the_c_loop() {
        // every length 0..40, bytes across the whole range (sign extension of >= 0x80)
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        };
        for len in 0..40 {
            for round in 0..200 {
                let key: Vec<u8> = (0..len)
                    .map(|i| match round % 4 {
                        0 => next() & 0x7f,
                        1 => next() | 0x80,
                        2 => if i % 2 == 0 { 0xff } else { 0x80 },
                        _ => next(),
                    })
                    .collect();
                let h0 = next() as u32 * 0x0101_0101;
                assert_eq!(fold_key(h0, &key), fold_key_ref(h0, &key), "{key:?}");
            }
        }
    }

    #[test]
    fn spec_vectors() {
        assert_eq!(h1(b"a"), 109);
        assert_eq!(h1(b"abc"), 7167810);
        assert_eq!(h1(b""), 1);
        assert_eq!(h1(b"1234@host"), 2139997296);
        assert_eq!(h1(b"carol"), 1864284022);
        assert_eq!(ds_hash(Some(b"alice"), Some(b"server.com")), 1412806172);
        assert_eq!(ds_hash(Some(b"bob"), Some(b"server.com")), 3883463682);
        assert_eq!(ds_hash(Some(b"alice"), Some(b"example.org")), 1441481473);
        assert_eq!(
            ds_hash(Some(b"alice"), Some(b"example.org:5080")),
            3956439950
        );
        assert_eq!(ds_hash(Some(b"bob"), Some(b"example.com:5061")), 2337664521);
        assert_eq!(h1(&[0xc3, 0xa9, 0x74, 0xc3, 0xa9]), 3139016441);
    }

    #[test]
    fn none_keys() {
        assert_eq!(ds_hash(None, None), 1);
        assert_eq!(ds_hash(None, Some(b"abc")), h1(b"abc"));
        // an empty key adds nothing
        assert_eq!(ds_hash(Some(b"abc"), Some(b"")), h1(b"abc"));
    }

    fn keys(u: &str, uo: bool) -> (Option<String>, Option<String>) {
        let (x, y) = uri_hash_keys(u.as_bytes(), uo).expect("keys");
        (
            x.map(|v| String::from_utf8(v).expect("utf8")),
            y.map(|v| String::from_utf8(v).expect("utf8")),
        )
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn uri_keys() {
        assert_eq!(
            keys("sip:alice@server.com", false),
            (s("alice"), s("server.com"))
        );
        assert_eq!(
            keys("sip:alice@Server.COM:5060", false),
            (s("alice"), s("Server.COM"))
        );
        assert_eq!(
            keys("sip:alice@example.org:5080;x=y?h=v", false),
            (s("alice"), s("example.org:5080"))
        );
        assert_eq!(
            keys("sips:bob@example.com:5061", false),
            (s("bob"), s("example.com"))
        );
        assert_eq!(
            keys("sips:bob@example.com:5060", false),
            (s("bob"), s("example.com:5060"))
        );
        assert_eq!(
            keys("sip:bob@example.com:5061", false),
            (s("bob"), s("example.com:5061"))
        );
        assert_eq!(
            keys("sip:example.com:5070", false),
            (None, s("example.com:5070"))
        );
        assert_eq!(
            keys("sip:alice@[::1]:5080", false),
            (s("alice"), s("[::1]:5080"))
        );
        assert_eq!(keys("sip:alice@example.org:5080", true), (s("alice"), None));
        assert_eq!(keys("sip:alice:pw@h", false), (s("alice"), s("h")));
        // explicit empty port: C extends the key by ":" (port 0 != 5060)
        assert_eq!(keys("sip:alice@h:", false), (s("alice"), s("h:")));
        // leading zeros are kept as written
        assert_eq!(keys("sip:a@h:05060", false), (s("a"), s("h")));
        assert_eq!(keys("sip:a@h:5070", false).1, s("h:5070"));
    }

    #[test]
    fn uri_keys_phone_and_tel() {
        assert_eq!(
            keys("sip:+4912;npdi@gw.example;user=phone", false),
            (s("+4912"), s("gw.example"))
        );
        assert_eq!(
            keys("sips:+4912@gw:5061;user=phone", false),
            (s("+4912"), s("gw:5061"))
        );
        assert_eq!(
            keys("sips:+4912@gw:5061;user=Phone", false),
            (s("+4912"), s("gw"))
        );
        assert_eq!(keys("tel:+4912345", false), (s("+4912345"), s("")));
    }

    #[test]
    fn uri_keys_errors() {
        assert!(uri_hash_keys(b"sip:alice@", false).is_err());
        assert!(uri_hash_keys(b"alice@example.com", false).is_err());
        assert!(uri_hash_keys(b"", false).is_err());
    }

    #[test]
    fn keys_match_spec_hashes() {
        let (x, y) = uri_hash_keys(b"sip:alice@example.org:5080", false).expect("k");
        assert_eq!(ds_hash(x.as_deref(), y.as_deref()), 3956439950);
        let (x, y) = uri_hash_keys(b"sip:bob@example.com:5061", false).expect("k");
        assert_eq!(ds_hash(x.as_deref(), y.as_deref()), 2337664521);
        let (x, y) = uri_hash_keys(b"sip:alice@server.com:5060;transport=tcp", false).expect("k");
        assert_eq!(ds_hash(x.as_deref(), y.as_deref()), 1412806172);
    }
}
