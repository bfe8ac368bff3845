//! Destination state machine (spec §7.2), in plain Rust.

use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE, DS_PROBING, DS_TRYING};

/// Usable = neither inactive nor disabled.
pub fn usable(flags: i32) -> bool {
    flags & (DS_INACTIVE | DS_DISABLED) == 0
}

/// Applies the requested `state` to a destination with flags `old` and counter `cnt`
/// (`ds_update_state`): returns the new flags and counter.
pub fn next_state(old: i32, cnt: i32, state: i32, probing_threshold: i32, inactive_threshold: i32) -> (i32, i32) {
    let mut flags = old & !crate::ds::snapshot::states_all();
    let init = state;
    let mut state = state;
    if state & DS_TRYING != 0 && old & DS_INACTIVE != 0 {
        state = (state & !DS_TRYING) | DS_INACTIVE;
    }
    if state & DS_DISABLED != 0 {
        flags |= DS_DISABLED;
    } else {
        flags |= state;
    }
    let mut cnt = cnt;
    if state & DS_TRYING != 0 {
        cnt = cnt.saturating_add(1);
        if cnt >= probing_threshold {
            flags = (flags & !DS_TRYING) | DS_INACTIVE;
            cnt = 0;
        }
    } else if init & DS_TRYING == 0 && old & DS_INACTIVE != 0 {
        cnt = cnt.saturating_add(1);
        if cnt < inactive_threshold {
            flags |= DS_INACTIVE;
            if old & DS_PROBING != 0 {
                flags |= DS_PROBING;
            }
        } else {
            cnt = 0;
        }
    } else {
        cnt = 0;
    }
    (flags, cnt)
}

/// `ds_mark_dst` state letters: a (clear), i, t, d, p. None on another character.
pub fn parse_mark_state(s: &[u8]) -> Option<i32> {
    let mut st = 0;
    for c in s {
        match c {
            b'a' | b'A' => st = 0,
            b'i' | b'I' => st |= DS_INACTIVE,
            b't' | b'T' => st |= DS_TRYING,
            b'd' | b'D' => st |= DS_DISABLED,
            b'p' | b'P' => st |= DS_PROBING,
            _ => return None,
        }
    }
    Some(st)
}

/// `dispatcher.set_state` state parameter. Err: "Unknown State Value".
pub fn parse_rpc_state(s: &[u8]) -> Result<i32, ()> {
    let probing = matches!(s.get(1), Some(b'p' | b'P'));
    match s.first() {
        Some(b'0' | b'i' | b'I') => Ok(DS_INACTIVE | if probing { DS_PROBING } else { 0 }),
        Some(b'1' | b'a' | b'A') => Ok(if probing { DS_PROBING } else { 0 }),
        Some(b'2' | b'd' | b'D') => Ok(DS_DISABLED),
        Some(b'3' | b't' | b'T') => Ok(DS_TRYING | if probing { DS_PROBING } else { 0 }),
        _ => Err(()),
    }
}

/// `ds_ping_reply_codes`: `code=NNN` (100..699) and `class=N` (1..6), `;`-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyCodes {
    pub codes: Vec<u32>,
    pub classes: Vec<u32>,
}

impl ReplyCodes {
    pub fn parse(s: &[u8]) -> ReplyCodes {
        let mut rc = ReplyCodes::default();
        for item in s.split(|&c| c == b';') {
            let item = crate::ds::trim_ws(item);
            let Some(eq) = item.iter().position(|&c| c == b'=') else { continue };
            let (name, val) = (crate::ds::trim_ws(&item[..eq]), crate::ds::trim_ws(&item[eq + 1..]));
            let Some(v) = std::str::from_utf8(val).ok().and_then(|v| v.parse::<u32>().ok()) else { continue };
            if name.eq_ignore_ascii_case(b"code") && (100..700).contains(&v) {
                rc.codes.push(v);
            } else if name.eq_ignore_ascii_case(b"class") && (1..7).contains(&v) {
                rc.classes.push(v);
            }
        }
        rc
    }
    /// A keepalive reply counts as alive: 2xx or one of the configured codes/classes.
    pub fn alive(&self, code: u32) -> bool {
        (200..300).contains(&code) || self.codes.contains(&code) || self.classes.contains(&(code / 100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_one_failure_down_one_success_up() {
        let (f, c) = next_state(DS_PROBING, 0, DS_TRYING | DS_PROBING, 1, 1);
        assert_eq!((f, c), (DS_INACTIVE | DS_PROBING, 0));
        let (f, c) = next_state(f, c, DS_PROBING, 1, 1);
        assert_eq!((f, c), (DS_PROBING, 0));
    }

    #[test]
    fn thresholds() {
        // probing_threshold 3: two trying, third inactive
        let (f, c) = next_state(0, 0, DS_TRYING, 3, 2);
        assert_eq!((f, c), (DS_TRYING, 1));
        let (f, c) = next_state(f, c, DS_TRYING, 3, 2);
        assert_eq!((f, c), (DS_TRYING, 2));
        let (f, c) = next_state(f, c, DS_TRYING, 3, 2);
        assert_eq!((f, c), (DS_INACTIVE, 0));
        // trying on inactive stays inactive (counts as failure, cnt resets at threshold)
        let (f2, _) = next_state(DS_INACTIVE, 0, DS_TRYING, 3, 2);
        assert_eq!(f2, DS_INACTIVE);
        // inactive_threshold 2: first success keeps inactive (+probing kept), second activates
        let (f, c) = next_state(DS_INACTIVE | DS_PROBING, 0, DS_PROBING, 3, 2);
        assert_eq!((f, c), (DS_INACTIVE | DS_PROBING, 1));
        let (f, c) = next_state(f, c, DS_PROBING, 3, 2);
        assert_eq!((f, c), (DS_PROBING, 0));
    }

    #[test]
    fn disabled_wins_and_nodns_is_cleared() {
        assert_eq!(next_state(16 | DS_PROBING, 0, DS_DISABLED | DS_PROBING, 1, 1).0, DS_DISABLED);
        assert_eq!(next_state(64 | 16, 0, 0, 1, 1).0, 64);
    }

    #[test]
    fn state_strings() {
        assert_eq!(parse_mark_state(b"ip"), Some(DS_INACTIVE | DS_PROBING));
        assert_eq!(parse_mark_state(b"ap"), Some(DS_PROBING));
        assert_eq!(parse_mark_state(b"x"), None);
        assert_eq!(parse_rpc_state(b"ip"), Ok(DS_INACTIVE | DS_PROBING));
        assert_eq!(parse_rpc_state(b"dp"), Ok(DS_DISABLED));
        assert_eq!(parse_rpc_state(b"1"), Ok(0));
        assert_eq!(parse_rpc_state(b"tP"), Ok(DS_TRYING | DS_PROBING));
        assert_eq!(parse_rpc_state(b"z"), Err(()));
    }

    #[test]
    fn reply_codes() {
        let r = ReplyCodes::parse(b"code=404;class=3; code=999;class=9;junk");
        assert_eq!(r.codes, vec![404]);
        assert_eq!(r.classes, vec![3]);
        assert!(r.alive(200) && r.alive(404) && r.alive(302) && !r.alive(408) && !r.alive(500));
    }
}
