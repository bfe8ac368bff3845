//! The key of a selection, read from the message (`ds_hash_*` of the C module): the
//! Call-ID, the From/To/R-URI hash keys, the auth username, the `hash_pvar` text, or a
//! random number; hashed by the C module's hash for algs 0-7 and by the 64-bit hash of the
//! consistent algorithms (32 + k) for those. Everything else is `ds::algs`.

use crate::ds::algs::{self, consistent, Family, Key};
use crate::ds::hash::{ds_hash, uri_hash_key_ranges};
use crate::ds::select;
use crate::kam::kam_rand;
use crate::kam::msg::{trim, Msg};
use crate::module::state;
use crate::{ds_err, ds_warn};

/// Hashes one or two keys for the algorithm's family.
fn hk(cons: bool, x: Option<&[u8]>, y: Option<&[u8]>) -> Key {
    if cons {
        Key::Key64(consistent::key64(x, y))
    } else {
        Key::Hash(ds_hash(x, y))
    }
}

fn uri_key(cons: bool, uri: Option<&[u8]>, what: &str) -> Option<Key> {
    let cfg = state::cfg();
    let func = if what == "From" { "ds_hash_fromuri" } else { "ds_hash_touri" };
    let Some(u) = uri else {
        ds_err!(fn func; "cannot get {what} uri");
        ds_err!(fn "ds_manage_routes"; "can't get {what} uri hash");
        return None;
    };
    match uri_hash_key_ranges(u, cfg.flags & 1 != 0) {
        Ok((k1, k2)) => {
            if k1.is_none() {
                ds_warn!(fn "get_uri_hash_keys"; "empty username in: {}", String::from_utf8_lossy(u));
            }
            Some(hk(cons, k1.and_then(|r| u.get(r)), k2.map(|r| u.get(r).unwrap_or(&[]))))
        }
        Err(_) => {
            ds_err!(fn "get_uri_hash_keys"; "invalid uri {}", String::from_utf8_lossy(u));
            ds_err!(fn "ds_manage_routes"; "can't get {what} uri hash");
            None
        }
    }
}

/// The key of (effective) algorithm `alg` for message `m`; None after logging the C
/// module's errors (the selection then returns -1). Algorithms without a key get
/// `Key::None`.
#[inline]
pub fn key(m: Msg, alg: i32) -> Option<Key> {
    // the most common one first, without the dispatch below
    if alg == select::ALG_HASH_CALLID {
        if let Some(c) = m.callid() {
            return Some(Key::Hash(ds_hash(Some(trim(c)), None)));
        }
    }
    key_any(m, alg)
}

fn key_any(m: Msg, alg: i32) -> Option<Key> {
    let cons = algs::family(alg) == Some(Family::Consistent);
    let base = consistent::base_alg(alg).unwrap_or(alg);
    if !matches!(algs::family(alg), Some(Family::Hash | Family::Consistent)) {
        return Some(Key::None);
    }
    Some(match base {
        select::ALG_HASH_CALLID => match m.callid() {
            Some(c) => hk(cons, Some(trim(c)), None),
            None => {
                ds_err!(fn "ds_hash_callid"; "cannot parse Call-Id");
                ds_err!(fn "ds_manage_routes"; "can't get callid hash");
                return None;
            }
        },
        select::ALG_HASH_FROM => uri_key(cons, m.from_uri(), "From")?,
        select::ALG_HASH_TO => uri_key(cons, m.to_uri(), "To")?,
        select::ALG_HASH_RURI => match m.ruri_hash_keys(state::cfg().flags & 1 != 0) {
            Some((k1, k2)) => {
                if k1.is_none() {
                    ds_warn!(fn "get_uri_hash_keys"; "empty username in: {}", String::from_utf8_lossy(m.ruri_raw()));
                }
                hk(cons, k1, k2)
            }
            None => {
                ds_err!(fn "ds_hash_ruri"; "bad request uri [{}]", String::from_utf8_lossy(m.ruri_raw()));
                ds_err!(fn "ds_manage_routes"; "can't get ruri hash");
                return None;
            }
        },
        select::ALG_HASH_AUTH => match m.auth_user() {
            Ok(Some(u)) => hk(cons, Some(&u), None),
            // no credentials: round-robin
            Ok(None) => Key::None,
            Err(()) => {
                ds_err!(fn "ds_hash_authusername"; "error parsing headers!");
                ds_err!(fn "ds_manage_routes"; "can't get authorization hash");
                return None;
            }
        },
        select::ALG_RANDOM => Key::Hash(kam_rand()),
        select::ALG_HASH_PV => {
            let Some(f) = state::hash_fmt() else {
                ds_err!(fn "ds_hash_pvar"; "bad parameters (hash_pvar is not set)");
                ds_err!(fn "ds_manage_routes"; "can't get PV hash");
                return None;
            };
            let Some(v) = f.print(m.0) else {
                ds_err!(fn "ds_hash_pvar"; "error - cannot print the format");
                ds_err!(fn "ds_manage_routes"; "can't get PV hash");
                return None;
            };
            let v = trim(&v);
            if v.is_empty() {
                ds_err!(fn "ds_hash_pvar"; "String is empty!");
                ds_err!(fn "ds_manage_routes"; "can't get PV hash");
                return None;
            }
            hk(cons, Some(v), None)
        }
        _ => Key::None,
    })
}

/// The key of algorithm `alg` from a key text given to `dispatcher.explain`: the Call-ID
/// (0/32), a URI (1/2/3 and 33/34/35: its hash keys with the `flags` bit-1 rule), the
/// username (5/37), the PV text (7/39). `Err` describes a bad key.
pub fn key_from_text(alg: i32, text: &[u8]) -> Result<Key, String> {
    let cons = algs::family(alg) == Some(Family::Consistent);
    let base = consistent::base_alg(alg).unwrap_or(alg);
    match base {
        select::ALG_HASH_CALLID | select::ALG_HASH_PV | select::ALG_HASH_AUTH => {
            let t = crate::ds::trim_ws(text);
            if t.is_empty() && base != select::ALG_HASH_AUTH {
                return Err("empty key".into());
            }
            if t.is_empty() {
                return Ok(Key::None);
            }
            Ok(hk(cons, Some(t), None))
        }
        select::ALG_HASH_FROM | select::ALG_HASH_TO | select::ALG_HASH_RURI => {
            match uri_hash_key_ranges(text, state::cfg().flags & 1 != 0) {
                Ok((k1, k2)) => Ok(hk(cons, k1.and_then(|r| text.get(r)), k2.map(|r| text.get(r).unwrap_or(&[])))),
                Err(_) => Err(format!("invalid uri {}", String::from_utf8_lossy(text))),
            }
        }
        _ => Ok(Key::None),
    }
}
