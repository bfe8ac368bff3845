//! Per-destination counters (issue 12): what the module routed to a destination and how it
//! ended, plus keepalive results; and their Prometheus text exposition.
//!
//! The counters are atomics in the destination's record of the snapshot (shared memory), so
//! counting takes no lock. Pure Rust, no FFI.
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

/// The counters of one destination.
#[repr(C)]
#[derive(Default)]
pub struct DestCounters {
    /// Chosen as the first destination by `ds_select_*`.
    pub selected: AtomicU64,
    /// Chosen by `ds_next_*`.
    pub failover: AtomicU64,
    /// Final replies received by class: index 0 = 1xx .. 5 = 6xx.
    pub replies: [AtomicU64; 6],
    /// 408 replies and local timeouts.
    pub timeouts: AtomicU64,
    /// Transactions routed here and not finished yet.
    pub inflight: AtomicI64,
    pub pings_sent: AtomicU64,
    pub pings_ok: AtomicU64,
    pub pings_failed: AtomicU64,
    /// Set when a newer list copied these counters (`carry_into`): the successor's counters.
    /// What is counted here after the copy is forwarded when this list is freed.
    succ: std::sync::atomic::AtomicPtr<DestCounters>,
    /// The values copied into the successor (written by the list writer before `succ`), as
    /// their low 32 bits (see [`Copied`]).
    copied: std::cell::UnsafeCell<Copied>,
    /// Consecutive failed transactions (passive failure detection).
    pub passive_fails: AtomicU32,
}

/// What `forward` needs of the values `carry_into` copied: the low 32 bits of each counter
/// (`passive_fails` is not forwarded). What an old list counts after the copy is far below
/// 2^32, so `now - copied` taken modulo 2^32 is the exact amount: 52 bytes in every record
/// instead of a full [`CounterValues`] (112), only read when an old list is freed.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Copied {
    selected: u32,
    failover: u32,
    replies: [u32; 6],
    timeouts: u32,
    inflight: u32,
    pings_sent: u32,
    pings_ok: u32,
    pings_failed: u32,
}

impl Copied {
    fn of(v: &CounterValues) -> Copied {
        Copied {
            selected: v.selected as u32,
            failover: v.failover as u32,
            replies: v.replies.map(|x| x as u32),
            timeouts: v.timeouts as u32,
            inflight: v.inflight as u32,
            pings_sent: v.pings_sent as u32,
            pings_ok: v.pings_ok as u32,
            pings_failed: v.pings_failed as u32,
        }
    }
}

/// A plain copy of [`DestCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub selected: u64,
    pub failover: u64,
    pub replies: [u64; 6],
    pub timeouts: u64,
    pub inflight: i64,
    pub pings_sent: u64,
    pub pings_ok: u64,
    pub pings_failed: u64,
    pub passive_fails: u32,
}

impl DestCounters {
    /// Reload: `new` (a record of the new list) continues these counters. Writer side, under
    /// the list writer lock.
    pub fn carry_into(&self, new: &DestCounters) {
        let v = self.values();
        new.add(&v);
        // SAFETY: only the list writer (serialised) writes `copied`, before publishing `succ`;
        // `forward` reads it after loading `succ` with Acquire.
        unsafe { *self.copied.get() = Copied::of(&v) };
        self.succ.store(new as *const DestCounters as *mut DestCounters, Ordering::Release);
    }
    /// Undoes `carry_into` when the new list is not published.
    pub fn uncarry(&self, new: &DestCounters) {
        let _ = self.succ.compare_exchange(new as *const DestCounters as *mut DestCounters, std::ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed);
    }
    /// When this list is freed: what was counted here after the copy goes to the successor.
    ///
    /// # Safety
    /// The successor's list is still allocated (lists are freed oldest first) and no process
    /// counts on this one any more.
    pub unsafe fn forward(&self) {
        let p = self.succ.load(Ordering::Acquire);
        // SAFETY: guaranteed by the caller.
        let Some(n) = (unsafe { p.as_ref() }) else { return };
        let now = self.values();
        // SAFETY: see `carry_into`.
        let was = unsafe { *self.copied.get() };
        // the amount counted since the copy: below 2^32, exact modulo 2^32
        let d = |a: u64, b: u32| (a as u32).wrapping_sub(b) as u64;
        let mut delta = CounterValues {
            selected: d(now.selected, was.selected),
            failover: d(now.failover, was.failover),
            replies: [0; 6],
            timeouts: d(now.timeouts, was.timeouts),
            // may be negative (calls ended on the old list): sign-extended
            inflight: (now.inflight as u32).wrapping_sub(was.inflight) as i32 as i64,
            pings_sent: d(now.pings_sent, was.pings_sent),
            pings_ok: d(now.pings_ok, was.pings_ok),
            pings_failed: d(now.pings_failed, was.pings_failed),
            // a run of failures is not continued across lists
            passive_fails: 0,
        };
        for i in 0..6 {
            delta.replies[i] = d(now.replies[i], was.replies[i]);
        }
        n.add(&delta);
    }
    pub fn values(&self) -> CounterValues {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterValues {
            selected: r(&self.selected),
            failover: r(&self.failover),
            replies: [
                r(&self.replies[0]),
                r(&self.replies[1]),
                r(&self.replies[2]),
                r(&self.replies[3]),
                r(&self.replies[4]),
                r(&self.replies[5]),
            ],
            timeouts: r(&self.timeouts),
            inflight: self.inflight.load(Ordering::Relaxed),
            pings_sent: r(&self.pings_sent),
            pings_ok: r(&self.pings_ok),
            pings_failed: r(&self.pings_failed),
            passive_fails: self.passive_fails.load(Ordering::Relaxed),
        }
    }
    /// Adds `v` (a record carried across a reload: the counters continue).
    pub fn add(&self, v: &CounterValues) {
        let a = |c: &AtomicU64, x: u64| {
            if x != 0 {
                c.fetch_add(x, Ordering::Relaxed);
            }
        };
        a(&self.selected, v.selected);
        a(&self.failover, v.failover);
        for (c, x) in self.replies.iter().zip(v.replies.iter()) {
            a(c, *x);
        }
        a(&self.timeouts, v.timeouts);
        // (adding 0 is skipped: no locked instruction per untouched counter on an edit)
        if v.inflight != 0 {
            self.inflight.fetch_add(v.inflight, Ordering::Relaxed);
        }
        a(&self.pings_sent, v.pings_sent);
        a(&self.pings_ok, v.pings_ok);
        a(&self.pings_failed, v.pings_failed);
        if v.passive_fails != 0 {
            self.passive_fails.fetch_add(v.passive_fails, Ordering::Relaxed);
        }
    }
    /// Counts a final outcome of a transaction branch: `code` of a received reply
    /// (`local` false) or of a local timeout / local reply (`local` true).
    pub fn count_final(&self, code: i32, local: bool) {
        if !local {
            if let Some(i) = reply_class_index(code) {
                self.replies[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if code == 408 {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// 0 for 1xx .. 5 for 6xx; None outside 100..=699.
pub fn reply_class_index(code: i32) -> Option<usize> {
    if (100..700).contains(&code) {
        Some((code / 100 - 1) as usize)
    } else {
        None
    }
}

/// Passive failure detection's failing replies (`ds_passive_reply_codes`, the syntax of
/// `ds_ping_reply_codes`: `class=N;code=NNN`). Default: class 5 and code 408.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailCodes {
    pub codes: Vec<u32>,
    pub classes: Vec<u32>,
}

impl Default for FailCodes {
    fn default() -> Self {
        FailCodes { codes: vec![408], classes: vec![5] }
    }
}

impl FailCodes {
    /// Parses the modparam; empty text: the default. Err: an item that is not
    /// `class=1..6` or `code=100..699`.
    pub fn parse(s: &[u8]) -> Result<FailCodes, String> {
        let s = crate::ds::trim_ws(s);
        if s.is_empty() {
            return Ok(FailCodes::default());
        }
        let mut fc = FailCodes { codes: Vec::new(), classes: Vec::new() };
        for item in s.split(|&c| c == b';') {
            let item = crate::ds::trim_ws(item);
            if item.is_empty() {
                continue;
            }
            let bad = || format!("invalid item [{}]", String::from_utf8_lossy(item));
            let eq = item.iter().position(|&c| c == b'=').ok_or_else(bad)?;
            let (name, val) = (crate::ds::trim_ws(&item[..eq]), crate::ds::trim_ws(&item[eq + 1..]));
            let v = std::str::from_utf8(val).ok().and_then(|v| v.parse::<u32>().ok()).ok_or_else(bad)?;
            if name.eq_ignore_ascii_case(b"code") && (100..700).contains(&v) {
                fc.codes.push(v);
            } else if name.eq_ignore_ascii_case(b"class") && (1..7).contains(&v) {
                fc.classes.push(v);
            } else {
                return Err(bad());
            }
        }
        Ok(fc)
    }
    /// Whether a final reply code counts as a failure.
    pub fn fails(&self, code: i32) -> bool {
        if code < 100 {
            return false;
        }
        let c = code as u32;
        self.codes.contains(&c) || self.classes.contains(&(c / 100))
    }
}

/// Consecutive-failure bookkeeping: returns true when this failure reaches `threshold`; the
/// run then starts again (a destination brought back by keepalives is marked again after
/// `threshold` new failures).
pub fn passive_fail(c: &DestCounters, threshold: u32) -> bool {
    if threshold == 0 {
        return false;
    }
    if c.passive_fails.fetch_add(1, Ordering::AcqRel).wrapping_add(1) >= threshold {
        c.passive_fails.store(0, Ordering::Release);
        return true;
    }
    false
}

/// A success: the run of failures ends.
pub fn passive_ok(c: &DestCounters) {
    if c.passive_fails.load(Ordering::Relaxed) != 0 {
        c.passive_fails.store(0, Ordering::Relaxed);
    }
}

/// One destination for the metrics text.
pub struct MetricDest<'a> {
    pub setid: i32,
    pub uri: &'a [u8],
    pub up: bool,
    pub c: CounterValues,
    /// Latency average / estimate in ms (keepalive statistics); None: not measured.
    pub lat_avg_ms: Option<f64>,
    pub lat_est_ms: Option<f64>,
}

/// A label value escaped for the Prometheus text format (`\` → `\\`, `"` → `\"`,
/// newline → `\n`); other bytes as they are (invalid UTF-8 replaced).
pub fn escape_label(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let mut out = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(d: &MetricDest<'_>) -> String {
    format!("setid=\"{}\",uri=\"{}\"", d.setid, escape_label(d.uri))
}

/// The Prometheus text exposition (format 0.0.4) of `dests`: every family with its
/// `# HELP` and `# TYPE` lines, series `kamailio_dispatcher_<name>`.
pub fn prometheus_text(dests: &[MetricDest<'_>]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(256 + dests.len() * 900);
    type Get = fn(&MetricDest<'_>) -> Option<String>;
    let fams: [(&str, &str, &str, Get); 10] = [
        ("up", "gauge", "Destination usable (1) or inactive/disabled (0).", |d| Some(if d.up { "1".into() } else { "0".into() })),
        ("selected_total", "counter", "Times chosen as the first destination by ds_select_*.", |d| Some(d.c.selected.to_string())),
        ("failover_total", "counter", "Times chosen by ds_next_* (failover).", |d| Some(d.c.failover.to_string())),
        ("timeouts_total", "counter", "Transactions routed here that ended with 408 or a local timeout.", |d| Some(d.c.timeouts.to_string())),
        ("inflight", "gauge", "Transactions routed here and still open.", |d| Some(d.c.inflight.max(0).to_string())),
        ("pings_sent_total", "counter", "Keepalive requests sent.", |d| Some(d.c.pings_sent.to_string())),
        ("pings_ok_total", "counter", "Keepalive requests answered as alive.", |d| Some(d.c.pings_ok.to_string())),
        ("pings_failed_total", "counter", "Keepalive requests failed or timed out.", |d| Some(d.c.pings_failed.to_string())),
        ("latency_avg_ms", "gauge", "Keepalive latency average in milliseconds.", |d| d.lat_avg_ms.map(fmt_f64)),
        ("latency_est_ms", "gauge", "Keepalive latency estimate in milliseconds.", |d| d.lat_est_ms.map(fmt_f64)),
    ];
    for (name, ty, help, get) in fams.iter() {
        let _ = writeln!(out, "# HELP kamailio_dispatcher_{name} {help}");
        let _ = writeln!(out, "# TYPE kamailio_dispatcher_{name} {ty}");
        for d in dests {
            if let Some(v) = get(d) {
                let _ = writeln!(out, "kamailio_dispatcher_{name}{{{}}} {v}", labels(d));
            }
        }
        if *name == "failover_total" {
            // replies by class right after the selection counters
            let _ = writeln!(out, "# HELP kamailio_dispatcher_replies_total Final replies received for requests the module routed, by class.");
            let _ = writeln!(out, "# TYPE kamailio_dispatcher_replies_total counter");
            for d in dests {
                for (i, v) in d.c.replies.iter().enumerate() {
                    let _ = writeln!(out, "kamailio_dispatcher_replies_total{{{},class=\"{}xx\"}} {v}", labels(d), i + 1);
                }
            }
        }
    }
    out
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(escape_label(b"sip:a\"b\\c\nd"), "sip:a\\\"b\\\\c\\nd");
        assert_eq!(escape_label(b"sip:10.0.0.1:5060"), "sip:10.0.0.1:5060");
    }

    #[test]
    fn text_has_help_type_and_samples() {
        let mut c = CounterValues { selected: 42, failover: 2, ..Default::default() };
        c.replies[4] = 3;
        let d = [MetricDest { setid: 1, uri: b"sip:10.0.0.1:5060;x=\"q\"", up: true, c, lat_avg_ms: Some(1.5), lat_est_ms: None }];
        let t = prometheus_text(&d);
        assert!(t.contains("# TYPE kamailio_dispatcher_selected_total counter\n"));
        assert!(t.contains("kamailio_dispatcher_selected_total{setid=\"1\",uri=\"sip:10.0.0.1:5060;x=\\\"q\\\"\"} 42\n"));
        assert!(t.contains("kamailio_dispatcher_replies_total{setid=\"1\",uri=\"sip:10.0.0.1:5060;x=\\\"q\\\"\",class=\"5xx\"} 3\n"));
        assert!(t.contains("kamailio_dispatcher_up{setid=\"1\",uri=\"sip:10.0.0.1:5060;x=\\\"q\\\"\"} 1\n"));
        assert!(t.contains("kamailio_dispatcher_latency_avg_ms{setid=\"1\",uri=\"sip:10.0.0.1:5060;x=\\\"q\\\"\"} 1.5\n"));
        assert!(!t.contains("latency_est_ms{"));
        // every family announced exactly once, before its samples
        let mut seen = std::collections::HashSet::new();
        for l in t.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                assert!(seen.insert(r.split(' ').next().unwrap_or("").to_string()), "{l}");
            } else if !l.starts_with('#') {
                let fam = l.split('{').next().unwrap_or("");
                assert!(seen.contains(fam), "sample before its TYPE: {l}");
            }
        }
        assert!(t.ends_with('\n'));
    }

    #[test]
    fn newline_in_uri_stays_on_one_line() {
        let d = [MetricDest { setid: 2, uri: b"sip:a\nb", up: false, c: CounterValues::default(), lat_avg_ms: None, lat_est_ms: None }];
        let t = prometheus_text(&d);
        assert!(t.contains("kamailio_dispatcher_up{setid=\"2\",uri=\"sip:a\\nb\"} 0\n"));
        assert!(t.lines().all(|l| l.starts_with('#') || l.starts_with("kamailio_dispatcher_")));
    }

    #[test]
    fn fail_codes() {
        let d = FailCodes::parse(b"").expect("default");
        assert!(d.fails(503) && d.fails(408) && !d.fails(404) && !d.fails(200));
        let f = FailCodes::parse(b"class=6; code=404").expect("parse");
        assert!(f.fails(603) && f.fails(404) && !f.fails(503));
        assert!(FailCodes::parse(b"class=9").is_err());
        assert!(FailCodes::parse(b"code=abc").is_err());
    }

    #[test]
    fn passive_threshold_fires_once_and_resets() {
        let c = DestCounters::default();
        assert!(!passive_fail(&c, 3));
        assert!(!passive_fail(&c, 3));
        assert!(passive_fail(&c, 3));
        assert!(!passive_fail(&c, 3));
        assert!(!passive_fail(&c, 3));
        assert!(passive_fail(&c, 3), "a new run after the threshold fired");
        assert!(!passive_fail(&c, 3));
        passive_ok(&c);
        assert!(!passive_fail(&c, 3));
        assert!(!passive_fail(&c, 0));
    }

    #[test]
    fn counted_after_the_copy_is_forwarded() {
        let (old, new) = (DestCounters::default(), DestCounters::default());
        old.selected.fetch_add(5, Ordering::Relaxed);
        old.inflight.fetch_add(2, Ordering::Relaxed);
        old.carry_into(&new);
        assert_eq!(new.values().selected, 5);
        // a process still on the old list: one more selection; a transaction ends on the new
        old.selected.fetch_add(1, Ordering::Relaxed);
        old.inflight.fetch_add(1, Ordering::Relaxed);
        new.inflight.fetch_sub(3, Ordering::Relaxed);
        new.selected.fetch_add(1, Ordering::Relaxed);
        // SAFETY: both records are alive.
        unsafe { old.forward() };
        assert_eq!(new.values().selected, 7);
        assert_eq!(new.values().inflight, 0);
        // not published: nothing forwarded
        let (a, b) = (DestCounters::default(), DestCounters::default());
        a.carry_into(&b);
        a.uncarry(&b);
        a.selected.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { a.forward() };
        assert_eq!(b.values().selected, 0);
    }

    /// The copy keeps 32 bits per counter: what is forwarded stays exact across a wrap of the
    /// low 32 bits, with counters above 2^32, and for a call load that went down.
    #[test]
    fn forwarded_exactly_with_big_counters() {
        for base in [0u64, (1 << 32) - 3, 5 << 40, u64::MAX - 1] {
            let (old, new) = (DestCounters::default(), DestCounters::default());
            old.selected.store(base, Ordering::Relaxed);
            old.replies[4].store(base / 3, Ordering::Relaxed);
            old.pings_failed.store(base ^ 0xffff, Ordering::Relaxed);
            old.inflight.store(base as i64 / 7, Ordering::Relaxed);
            old.carry_into(&new);
            old.selected.fetch_add(9, Ordering::Relaxed);
            old.replies[4].fetch_add(4, Ordering::Relaxed);
            old.inflight.fetch_sub(6, Ordering::Relaxed);
            let before = new.values();
            // SAFETY: both records are alive.
            unsafe { old.forward() };
            let after = new.values();
            assert_eq!(after.selected, before.selected.wrapping_add(9), "{base}");
            assert_eq!(after.replies[4], before.replies[4] + 4, "{base}");
            assert_eq!(after.pings_failed, before.pings_failed, "{base}");
            assert_eq!(after.inflight, before.inflight - 6, "{base}");
        }
        assert_eq!(std::mem::size_of::<Copied>(), 52);
        assert_eq!(std::mem::size_of::<DestCounters>(), 168);
    }

    #[test]
    fn final_counting_and_carry() {
        let c = DestCounters::default();
        c.count_final(503, false);
        c.count_final(408, true);
        c.count_final(408, false);
        c.count_final(200, false);
        let v = c.values();
        assert_eq!(v.replies, [0, 1, 0, 1, 1, 0]);
        assert_eq!(v.timeouts, 2);
        let n = DestCounters::default();
        n.add(&v);
        assert_eq!(n.values(), v);
    }
}
