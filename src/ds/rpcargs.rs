//! What the RPC commands do with their scanned arguments, without FFI (the handlers in
//! `module::rpc` scan the arguments with Kamailio's `rpc->scan` and then decide exactly as
//! here), so the argument handling can be unit-tested and fuzzed.
//!
//! `scanned` is what `rpc->scan` returned: the number of arguments read before the first
//! missing or unconvertible one (optional arguments after a `*` included when present).

use crate::ds::hash::ds_hash;
use crate::ds::listfile::RawEntry;

/// A fault answered to the RPC client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcFault {
    pub code: i32,
    pub msg: &'static str,
}

const INVALID: RpcFault = RpcFault { code: 500, msg: "Invalid Parameters" };

/// `dispatcher.list [short|full]` (case-insensitive; anything else is the normal mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMode {
    Normal,
    Short,
    Full,
}

pub fn list_mode(arg: Option<&[u8]>) -> ListMode {
    match arg {
        Some(m) if m.eq_ignore_ascii_case(b"short") => ListMode::Short,
        Some(m) if m.eq_ignore_ascii_case(b"full") => ListMode::Full,
        _ => ListMode::Normal,
    }
}

/// A checked `dispatcher.set_state` / `set_duid_state` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetState<'a> {
    /// State bits to set (they replace the state bits, `snapshot::states_all()`).
    pub state: i32,
    pub group: i32,
    /// Destination URI (or duid), or `all`.
    pub key: &'a [u8],
    pub by_duid: bool,
}

impl SetState<'_> {
    /// `all` addresses every destination of the group.
    pub fn all(&self) -> bool {
        self.key == b"all"
    }
    /// Whether the destination with `uri` and `duid` is addressed (case-insensitive).
    pub fn matches(&self, uri: &[u8], duid: &[u8]) -> bool {
        self.all() || if self.by_duid { duid.eq_ignore_ascii_case(self.key) } else { uri.eq_ignore_ascii_case(self.key) }
    }
    /// A destination's flags after the change.
    pub fn apply(&self, flags: i32) -> i32 {
        (flags & !crate::ds::snapshot::states_all()) | self.state
    }
}

/// `dispatcher.set_state state group address` (".SdS"). Faults as the module answers them:
/// fewer than 3 arguments, an empty state ("Invalid State Parameter"), an unknown state
/// letter ("Unknown State Value", see [`crate::ds::health::parse_rpc_state`]).
pub fn set_state<'a>(scanned: i32, state: &[u8], group: i32, key: &'a [u8], by_duid: bool) -> Result<SetState<'a>, RpcFault> {
    if scanned < 3 {
        return Err(INVALID);
    }
    if state.is_empty() {
        return Err(RpcFault { code: 500, msg: "Invalid State Parameter" });
    }
    let st = crate::ds::health::parse_rpc_state(state).map_err(|_| RpcFault { code: 500, msg: "Unknown State Value" })?;
    Ok(SetState { state: st, group, key, by_duid })
}

/// `dispatcher.add group address [flags [priority [attrs]]]` ("dS*ddS"): the list entry to
/// add (line and column 0; flags, priority and attrs only when scanned).
pub fn add(scanned: i32, group: i32, uri: &[u8], flags: i32, priority: i32, attrs: &[u8]) -> Result<RawEntry, RpcFault> {
    if scanned < 2 {
        return Err(INVALID);
    }
    Ok(RawEntry {
        setid: group,
        uri: uri.to_vec(),
        flags: if scanned >= 3 { flags } else { 0 },
        priority: if scanned >= 4 { priority } else { 0 },
        attrs: if scanned >= 5 { attrs.to_vec() } else { Vec::new() },
        line: 0,
        col: 0,
    })
}

/// `dispatcher.remove group address` ("dS"): the entry whose prepared URI is removed.
pub fn remove(scanned: i32, group: i32, uri: &[u8]) -> Result<RawEntry, RpcFault> {
    if scanned < 2 {
        return Err(INVALID);
    }
    Ok(RawEntry { setid: group, uri: uri.to_vec(), flags: 0, priority: 0, attrs: Vec::new(), line: 0, col: 0 })
}

/// `dispatcher.hash nslots v1 [v2]` ("dS*S"): `(hashid, slot)`; slot 0 when `nslots <= 0`.
pub fn hash(scanned: i32, nslots: i32, v1: &[u8], v2: &[u8]) -> Result<(u32, u32), RpcFault> {
    if scanned < 2 {
        return Err(INVALID);
    }
    let h = ds_hash(Some(v1), if scanned >= 3 { Some(v2) } else { None });
    let slot = if nslots > 0 { h % nslots as u32 } else { 0 };
    Ok((h, slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE, DS_NODNS, DS_NOPING, DS_PROBING, DS_TRYING};

    #[test]
    fn list_modes() {
        assert_eq!(list_mode(None), ListMode::Normal);
        assert_eq!(list_mode(Some(b"SHORT")), ListMode::Short);
        assert_eq!(list_mode(Some(b"Full")), ListMode::Full);
        assert_eq!(list_mode(Some(b"fullx")), ListMode::Normal);
        assert_eq!(list_mode(Some(b"")), ListMode::Normal);
    }

    #[test]
    fn set_state_args() {
        assert_eq!(set_state(2, b"a", 1, b"sip:x", false), Err(INVALID));
        assert_eq!(set_state(3, b"", 1, b"sip:x", false).map_err(|f| f.msg), Err("Invalid State Parameter"));
        assert_eq!(set_state(3, b"x", 1, b"sip:x", false).map_err(|f| f.msg), Err("Unknown State Value"));
        let r = set_state(3, b"ip", 4, b"SIP:X", false).expect("ok");
        assert_eq!((r.state, r.group), (DS_INACTIVE | DS_PROBING, 4));
        assert!(r.matches(b"sip:x", b"") && !r.matches(b"sip:y", b"sip:x") && !r.all());
        let r = set_state(3, b"d", 4, b"GW1", true).expect("ok");
        assert!(r.matches(b"sip:y", b"gw1") && !r.matches(b"gw1", b""));
        let r = set_state(3, b"1", 4, b"all", true).expect("ok");
        assert!(r.all() && r.matches(b"", b""));
        // the state bits (31 before 6.0, 63 from 6.0) are replaced, other bits kept
        let r = set_state(3, b"t", 1, b"all", false).expect("ok");
        crate::ds::compat::with(crate::ds::compat::BASELINE, || {
            assert_eq!(r.apply(DS_DISABLED | DS_NODNS | DS_NOPING | 64), DS_TRYING | DS_NOPING | 64);
        });
        crate::ds::compat::with(crate::ds::compat::val(6, 0, 7), || {
            assert_eq!(r.apply(DS_DISABLED | DS_NODNS | DS_NOPING | 64), DS_TRYING | 64);
        });
    }

    #[test]
    fn add_remove_hash_args() {
        assert_eq!(add(1, 1, b"", 0, 0, b""), Err(INVALID));
        let e = add(2, 3, b"sip:a", 8, 9, b"x=1").expect("ok");
        assert_eq!((e.setid, &e.uri[..], e.flags, e.priority, e.attrs.is_empty()), (3, &b"sip:a"[..], 0, 0, true));
        let e = add(5, 3, b"sip:a", 8, 9, b"x=1").expect("ok");
        assert_eq!((e.flags, e.priority, &e.attrs[..]), (8, 9, &b"x=1"[..]));
        assert_eq!(remove(1, 1, b"sip:a"), Err(INVALID));
        assert_eq!(remove(2, 1, b"sip:a").expect("ok").uri, b"sip:a".to_vec());
        assert_eq!(hash(1, 3, b"a", b""), Err(INVALID));
        let (h, slot) = hash(2, 0, b"a", b"b").expect("ok");
        assert_eq!((h, slot), (ds_hash(Some(b"a"), None), 0));
        let (h3, slot3) = hash(3, 7, b"a", b"b").expect("ok");
        assert_eq!((h3, slot3), (ds_hash(Some(b"a"), Some(b"b")), ds_hash(Some(b"a"), Some(b"b")) % 7));
        assert_eq!(hash(2, -5, b"a", b"").expect("ok").1, 0);
    }
}
