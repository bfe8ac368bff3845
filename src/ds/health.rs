//! Destination state machine (spec §7.2), in plain Rust.

use crate::ds::snapshot::{DS_DISABLED, DS_INACTIVE, DS_PROBING, DS_TRYING};

/// Usable = neither inactive nor disabled.
pub fn usable(flags: i32) -> bool {
    flags & (DS_INACTIVE | DS_DISABLED) == 0
}

/// Applies the requested `state` to a destination with flags `old` and counter `cnt`
/// (`ds_update_state`): returns the new flags and counter.
///
/// `immediate` is the C module's `DS_STATE_MODE_SET` (6.0.3+, marks from cfg functions):
/// trying makes the destination inactive at once and a recovery makes it active at once,
/// whatever `ds_probing_threshold` / `ds_inactive_threshold` say. Keepalives pass false.
pub fn next_state(old: i32, cnt: i32, state: i32, probing_threshold: i32, inactive_threshold: i32, immediate: bool) -> (i32, i32) {
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
        if immediate || cnt >= probing_threshold {
            flags = (flags & !DS_TRYING) | DS_INACTIVE;
            cnt = 0;
        }
    } else if init & DS_TRYING == 0 && old & DS_INACTIVE != 0 {
        cnt = cnt.saturating_add(1);
        if !immediate && cnt < inactive_threshold {
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

/// Whether a state change requested from the cfg (`ds_mark_dst`, `ds_mark_addr`, their KEMI
/// forms, `bind_dispatcher().mark`) ignores the thresholds: Kamailio 6.0.3+.
pub fn cfg_marks_immediate() -> bool {
    crate::ds::compat::ge(6, 0, 3)
}

/// `event_route[dispatcher:dst-down]` or `[dispatcher:dst-up]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Down,
    Up,
}

impl Event {
    pub fn route(self) -> &'static str {
        match self {
            Event::Down => "dispatcher:dst-down",
            Event::Up => "dispatcher:dst-up",
        }
    }
}

/// `event_callback_mode` values (Kamailio 6.1).
pub const EVCB_RUNTIME: i32 = 0;
pub const EVCB_OPTIONS: i32 = 1;
pub const EVCB_INIT: i32 = 2;

/// The event a state change from flags `old` to `new` fires (`ds_update_state`), if any.
/// `from_cfg`: requested by a cfg function (`DS_STATE_MODE_FUNC`), otherwise by a keepalive.
/// `cb_mode`: `event_callback_mode`, read only when built for Kamailio 6.1+ (always 0 before).
/// * 0 (runtime): keepalives and cfg marks fire on a usability change;
/// * 1 (options): keepalives only (6.1);
/// * 2 (init): like 0, plus `dst-down`/`dst-up` when the old flags were exactly 0 (6.1);
/// * other values: keepalives only, as the C module.
pub fn transition_event(old: i32, new: i32, from_cfg: bool, cb_mode: i32) -> Option<Event> {
    let cb_mode = if crate::ds::compat::ge(6, 1, 0) { cb_mode } else { EVCB_RUNTIME };
    if from_cfg && cb_mode != EVCB_RUNTIME && cb_mode != EVCB_INIT {
        return None;
    }
    let was_down = !usable(old);
    let is_down = !usable(new);
    let init = cb_mode == EVCB_INIT && old == 0;
    if is_down && (!was_down || init) {
        Some(Event::Down)
    } else if !is_down && (was_down || init) {
        Some(Event::Up)
    } else {
        None
    }
}

/// Whether a keepalive is sent to a destination with runtime flags `flags` in probing
/// mode `mode` (`ds_ping_set` + `ds_ping_result_helper`): never to a disabled one, from
/// Kamailio 6.0 not with flag 32 (no ping), from 6.0.1 not with flag 16 (no DNS).
pub fn ping_eligible(flags: i32, mode: i32) -> bool {
    use crate::ds::snapshot::{DS_NODNS, DS_NOPING};
    if flags & DS_DISABLED != 0 {
        return false;
    }
    if flags & DS_NOPING != 0 && crate::ds::compat::ge(6, 0, 0) {
        return false;
    }
    if flags & DS_NODNS != 0 && crate::ds::compat::ge(6, 0, 1) {
        return false;
    }
    match mode {
        1 => true,
        2 => flags & DS_INACTIVE != 0 && flags & DS_PROBING != 0,
        _ => flags & DS_PROBING != 0,
    }
}

/// The keepalive From tag of Kamailio 6.1: `<iuid>-<4 characters of [a-z0-9]>`, the
/// characters drawn with `rand` (the C module's `ds_rand_str4`).
pub fn ping_fromtag(iuid: &str, rand: &mut dyn FnMut() -> u32) -> String {
    const ABC: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(iuid.len() + 5);
    s.push_str(iuid);
    s.push('-');
    for _ in 0..4 {
        s.push(ABC[(rand() % 36) as usize] as char);
    }
    s
}

/// The IUID in the From header of a keepalive transaction (`ds_extract_fromhdr_iuid`):
/// the `;tag=` value up to `;`, space, tab, CR or LF, at least 10 characters long and with
/// a `-` five characters before its end; the IUID is the tag without its last 5 characters.
pub fn iuid_from_from_hdr(from: &[u8]) -> Option<&[u8]> {
    let pos = from.windows(5).position(|w| w == b";tag=")?;
    let rest = from.get(pos + 5..)?;
    let end = rest.iter().position(|c| matches!(c, b';' | b' ' | b'\r' | b'\n' | b'\t')).unwrap_or(rest.len());
    let tag = &rest[..end];
    if tag.len() < 10 || tag[tag.len() - 5] != b'-' {
        return None;
    }
    Some(&tag[..tag.len() - 5])
}

/// The counter of an IUID text (Kamailio 6.1 sruid shape, see `snapshot::iuid_text`):
/// `<prefix><counter in hex, least significant digit first>-<setid>`, compared without
/// regard to case. None when `text` is not such a text for this `prefix` and `setid`.
pub fn iuid_counter(text: &[u8], prefix: &[u8], setid: i32) -> Option<u64> {
    let tail = format!("-{setid}");
    if text.len() < prefix.len() + tail.len() || !text[..prefix.len()].eq_ignore_ascii_case(prefix) || !text.ends_with(tail.as_bytes())
    {
        return None;
    }
    let digits = &text[prefix.len()..text.len() - tail.len()];
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in digits.iter().rev() {
        n = (n << 4) | (c as char).to_digit(16)? as u64;
    }
    Some(n)
}

/// `$dsg` figures of a set from the runtime flags of its destinations:
/// (count, active, inactive); inactive = inactive or disabled (`ds_skip_dst`).
pub fn dsg_counts(flags: impl Iterator<Item = i32>) -> (i32, i32, i32) {
    let (mut n, mut a) = (0, 0);
    for f in flags {
        n += 1;
        if usable(f) {
            a += 1;
        }
    }
    (n, a, n - a)
}

/// `$dsg(pactive)` / `$dsg(pinactive)`: integer percentage, 0 for an empty set (the C
/// module divides by zero there up to 6.0.6 / 6.1.2).
pub fn dsg_percent(part: i32, count: i32) -> i32 {
    if count > 0 {
        ((part as i64 * 100) / count as i64) as i32
    } else {
        0
    }
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
#[allow(clippy::result_unit_err)] // the one error has one fixed message, given by the caller
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
        let (f, c) = next_state(DS_PROBING, 0, DS_TRYING | DS_PROBING, 1, 1, false);
        assert_eq!((f, c), (DS_INACTIVE | DS_PROBING, 0));
        let (f, c) = next_state(f, c, DS_PROBING, 1, 1, false);
        assert_eq!((f, c), (DS_PROBING, 0));
    }

    #[test]
    fn thresholds() {
        // probing_threshold 3: two trying, third inactive
        let (f, c) = next_state(0, 0, DS_TRYING, 3, 2, false);
        assert_eq!((f, c), (DS_TRYING, 1));
        let (f, c) = next_state(f, c, DS_TRYING, 3, 2, false);
        assert_eq!((f, c), (DS_TRYING, 2));
        let (f, c) = next_state(f, c, DS_TRYING, 3, 2, false);
        assert_eq!((f, c), (DS_INACTIVE, 0));
        // trying on inactive stays inactive (counts as failure, cnt resets at threshold)
        let (f2, _) = next_state(DS_INACTIVE, 0, DS_TRYING, 3, 2, false);
        assert_eq!(f2, DS_INACTIVE);
        // inactive_threshold 2: first success keeps inactive (+probing kept), second activates
        let (f, c) = next_state(DS_INACTIVE | DS_PROBING, 0, DS_PROBING, 3, 2, false);
        assert_eq!((f, c), (DS_INACTIVE | DS_PROBING, 1));
        let (f, c) = next_state(f, c, DS_PROBING, 3, 2, false);
        assert_eq!((f, c), (DS_PROBING, 0));
    }

    #[test]
    fn disabled_wins_and_nodns_is_cleared() {
        assert_eq!(next_state(16 | DS_PROBING, 0, DS_DISABLED | DS_PROBING, 1, 1, false).0, DS_DISABLED);
        assert_eq!(next_state(64 | 16, 0, 0, 1, 1, false).0, 64);
    }

    #[test]
    fn immediate_marks_ignore_thresholds() {
        // thresholds 3/3: a mark 't' makes an active destination inactive at once
        assert_eq!(next_state(0, 0, DS_TRYING, 3, 3, true), (DS_INACTIVE, 0));
        assert_eq!(next_state(DS_PROBING, 1, DS_TRYING | DS_PROBING, 3, 3, true), (DS_INACTIVE | DS_PROBING, 0));
        // ... and 'a' an inactive one active at once
        assert_eq!(next_state(DS_INACTIVE, 0, 0, 3, 3, true), (0, 0));
        assert_eq!(next_state(DS_INACTIVE | DS_PROBING, 2, DS_PROBING, 3, 3, true), (DS_PROBING, 0));
        // 'i' and 'd' as before
        assert_eq!(next_state(0, 0, DS_INACTIVE, 3, 3, true), (DS_INACTIVE, 0));
        assert_eq!(next_state(DS_INACTIVE, 0, DS_DISABLED, 3, 3, true), (DS_DISABLED, 0));
        // 't' on an inactive destination keeps it inactive
        assert_eq!(next_state(DS_INACTIVE, 0, DS_TRYING, 3, 3, true), (DS_INACTIVE, 0));
        // the same marks with thresholds (5.6.3 .. 6.0.2, and every keepalive)
        assert_eq!(next_state(0, 0, DS_TRYING, 3, 3, false), (DS_TRYING, 1));
        assert_eq!(next_state(DS_INACTIVE, 0, 0, 3, 3, false), (DS_INACTIVE, 1));
    }

    #[test]
    fn immediate_marks_from_6_0_3() {
        use crate::ds::compat::{val, with};
        assert!(!with(val(5, 6, 3), cfg_marks_immediate));
        assert!(!with(val(6, 0, 2), cfg_marks_immediate));
        assert!(with(val(6, 0, 3), cfg_marks_immediate));
        assert!(with(val(6, 1, 0), cfg_marks_immediate));
    }

    #[test]
    fn events_per_callback_mode() {
        use crate::ds::compat::{val, with};
        with(val(6, 1, 0), || {
            // runtime: keepalives and cfg marks, on usability changes only
            assert_eq!(transition_event(DS_PROBING, DS_INACTIVE | DS_PROBING, false, 0), Some(Event::Down));
            assert_eq!(transition_event(0, DS_INACTIVE, true, 0), Some(Event::Down));
            assert_eq!(transition_event(DS_INACTIVE, DS_PROBING, true, 0), Some(Event::Up));
            assert_eq!(transition_event(0, DS_PROBING, false, 0), None);
            assert_eq!(transition_event(0, DS_TRYING, false, 0), None);
            // options: keepalives only
            assert_eq!(transition_event(0, DS_INACTIVE, true, 1), None);
            assert_eq!(transition_event(DS_INACTIVE, 0, true, 1), None);
            assert_eq!(transition_event(0, DS_INACTIVE, false, 1), Some(Event::Down));
            assert_eq!(transition_event(DS_INACTIVE, DS_PROBING, false, 1), Some(Event::Up));
            // init: also from flags 0 (both for keepalives and cfg marks)
            assert_eq!(transition_event(0, DS_PROBING, false, 2), Some(Event::Up));
            assert_eq!(transition_event(0, 0, true, 2), Some(Event::Up));
            assert_eq!(transition_event(0, DS_INACTIVE, false, 2), Some(Event::Down));
            assert_eq!(transition_event(DS_PROBING, DS_PROBING, false, 2), None);
            assert_eq!(transition_event(DS_PROBING, DS_TRYING | DS_PROBING, false, 2), None);
            // unknown mode: keepalives only
            assert_eq!(transition_event(0, DS_INACTIVE, true, 7), None);
            assert_eq!(transition_event(0, DS_INACTIVE, false, 7), Some(Event::Down));
        });
        // before 6.1 the mode does not exist: always runtime
        for v in [val(5, 6, 3), val(6, 0, 7)] {
            with(v, || {
                assert_eq!(transition_event(0, DS_INACTIVE, true, 1), Some(Event::Down));
                assert_eq!(transition_event(0, DS_PROBING, false, 2), None);
            });
        }
        assert_eq!(Event::Down.route(), "dispatcher:dst-down");
        assert_eq!(Event::Up.route(), "dispatcher:dst-up");
    }

    #[test]
    fn keepalive_eligibility_per_version() {
        use crate::ds::compat::{val, with};
        use crate::ds::snapshot::{DS_NODNS, DS_NOPING};
        let cases = |v: u32| {
            with(v, || {
                (
                    ping_eligible(DS_PROBING, 0),
                    ping_eligible(DS_PROBING | DS_NOPING, 0),
                    ping_eligible(DS_NOPING, 1),
                    ping_eligible(DS_PROBING | DS_NODNS, 0),
                    ping_eligible(DS_NODNS, 1),
                )
            })
        };
        assert_eq!(cases(val(5, 6, 3)), (true, true, true, true, true));
        assert_eq!(cases(val(5, 8, 8)), (true, true, true, true, true));
        assert_eq!(cases(val(6, 0, 0)), (true, false, false, true, true));
        assert_eq!(cases(val(6, 0, 1)), (true, false, false, false, false));
        assert_eq!(cases(val(6, 1, 4)), (true, false, false, false, false));
        // probing modes and disabled
        assert!(!ping_eligible(DS_DISABLED | DS_PROBING, 1));
        assert!(!ping_eligible(0, 0) && ping_eligible(0, 1));
        assert!(!ping_eligible(DS_PROBING, 2) && ping_eligible(DS_PROBING | DS_INACTIVE, 2));
        assert!(ping_eligible(DS_PROBING, 3) && !ping_eligible(0, 3));
    }

    #[test]
    fn fromtag_roundtrip() {
        let mut n = 0u32;
        let mut rnd = || {
            n += 1;
            [0u32, 25, 26, 35 + 36][(n - 1) as usize % 4]
        };
        let tag = ping_fromtag("dspt-65a1b2c3-1f3a-1-1", &mut rnd);
        assert_eq!(tag, "dspt-65a1b2c3-1f3a-1-1-az09");
        let hdr = format!("From: <sip:dispatcher@localhost>;tag={tag}\r\n");
        assert_eq!(iuid_from_from_hdr(hdr.as_bytes()), Some(&b"dspt-65a1b2c3-1f3a-1-1"[..]));
        let hdr = format!("From: <sip:d@h>;tag={tag};x=1\r\n");
        assert_eq!(iuid_from_from_hdr(hdr.as_bytes()), Some(&b"dspt-65a1b2c3-1f3a-1-1"[..]));
        // tm's own tags (<md5>-<crc>) have the shape too (they match no destination);
        // tags without a '-' five characters before the end, short tags, no tag do not
        assert_eq!(iuid_from_from_hdr(b"From: <sip:d@h>;tag=4a5c7b0e1fd2a4e3c1e8a2b9d0f1c3a5-3f1a\r\n").map(|v| v.len()), Some(32));
        assert_eq!(iuid_from_from_hdr(b"From: <sip:d@h>;tag=4a5c7b0e1fd2a4e3c1e8a2b9d0f1c3a5\r\n"), None);
        assert_eq!(iuid_from_from_hdr(b"From: <sip:d@h>;tag=ab-cdef\r\n"), None);
        assert_eq!(iuid_from_from_hdr(b"From: <sip:d@h>\r\n"), None);
        assert_eq!(iuid_from_from_hdr(b""), None);
    }

    #[test]
    fn iuid_text_back_to_counter() {
        use crate::ds::snapshot::iuid_text;
        let prefix = "dspt-6b0d0fbd-6093-";
        for (n, set) in [(1u64, 1), ((3u64 << 24) | 17, 12), (u64::MAX, -1), (0x10, 0)] {
            let t = iuid_text(prefix, n, set);
            assert_eq!(iuid_counter(t.as_bytes(), prefix.as_bytes(), set), Some(n), "{t}");
            assert_eq!(iuid_counter(t.to_uppercase().as_bytes(), prefix.as_bytes(), set), Some(n), "{t}");
            assert_eq!(iuid_counter(t.as_bytes(), prefix.as_bytes(), set + 1), None, "{t}: other set");
            assert_eq!(iuid_counter(t.as_bytes(), b"dspt-6b0d0fbd-6094-", set), None, "{t}: other instance");
        }
        assert_eq!(iuid_counter(b"dspt-6b0d0fbd-6093--1", prefix.as_bytes(), 1), None);
        assert_eq!(iuid_counter(b"dspt-6b0d0fbd-6093-xy-1", prefix.as_bytes(), 1), None);
        assert_eq!(iuid_counter(b"dspt-6b0d0fbd-6093-1", prefix.as_bytes(), 1), None);
        assert_eq!(iuid_counter(b"4a5c7b0e1fd2a4e3c1e8a2b9d0f1c3a5", prefix.as_bytes(), 1), None);
    }

    #[test]
    fn dsg_figures() {
        assert_eq!(dsg_counts([0, DS_INACTIVE, DS_DISABLED, DS_TRYING, DS_PROBING].into_iter()), (5, 3, 2));
        assert_eq!(dsg_counts(std::iter::empty()), (0, 0, 0));
        assert_eq!(dsg_percent(2, 3), 66);
        assert_eq!(dsg_percent(1, 3), 33);
        assert_eq!(dsg_percent(0, 0), 0);
        assert_eq!(dsg_percent(3, 3), 100);
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
