//! Helpers for tests/it_health.rs (keepalives, destination states, events, latency):
//! the health cfg template, SIPp OPTIONS backends that can be SIGKILLed and restarted on
//! the same port, `dispatcher.list` polling with a recorded state history, the event-route
//! log lines, and a SIPp UAC without BYE.
//!
//! Included by the test as `#[path = "common/health_util.rs"] mod health_util;`, next to
//! `mod common;`.
#![allow(dead_code)]

use crate::common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// tests/data/health/health.cfg.tmpl (see the comment at its top).
pub const HEALTH_CFG: &str = include_str!("../data/health/health.cfg.tmpl");

pub fn health_data(name: &str) -> PathBuf {
    data_dir().join("health").join(name)
}

/// `KamOpts` for the health cfg: `list`, extra modparams, 2 children, TM `fr_timer`
/// 1000 ms. The event routes log `$dsv(uri)` and `$dsv(setid)` too with the Rust module
/// (5.6.3 rejects unknown `$dsv` keys at startup).
pub fn health_opts(kind: ModuleKind, list: &str, extra: &str) -> KamOpts {
    let extra_dsv = match kind {
        ModuleKind::Rust => "|$dsv(uri)|$dsv(setid)",
        ModuleKind::C => "",
    };
    KamOpts {
        list: list.to_string(),
        extra_params: extra.to_string(),
        fr_timer_ms: 1000,
        fr_inv_timer_ms: 3000,
        children: 2,
        debug: 2,
        cfg_template: Some(HEALTH_CFG.replace("@@DSV_EXTRA@@", extra_dsv)),
    }
}

/// `modparam("dispatcher", name, value)` lines for the given pairs (strings quoted when
/// they are not plain integers).
pub fn modparams(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        if v.parse::<i64>().is_ok() {
            s.push_str(&format!("modparam(\"dispatcher\", \"{k}\", {v})\n"));
        } else {
            s.push_str(&format!("modparam(\"dispatcher\", \"{k}\", \"{v}\")\n"));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 to OPTIONS, and INVITE -> 200 -> ACK -> BYE -> 200 (tests/data/uas_200.xml)
    Ok200,
    /// 200 to OPTIONS, and INVITE -> 200 -> ACK, no BYE (health/uas_invite_noBye.xml)
    CallNoBye,
    /// 503 to OPTIONS
    Err503,
    /// 404 to OPTIONS
    Err404,
    /// 200 to OPTIONS after 300 ms
    Slow300,
    /// 200 to OPTIONS after 2000 ms (health/uas_options_slow2000.xml)
    Slow2000,
}

impl Behaviour {
    pub fn scenario(self) -> PathBuf {
        match self {
            Behaviour::Ok200 => data_dir().join("uas_200.xml"),
            Behaviour::CallNoBye => health_data("uas_invite_noBye.xml"),
            Behaviour::Err503 => health_data("uas_options_503.xml"),
            Behaviour::Err404 => health_data("uas_options_404.xml"),
            Behaviour::Slow300 => health_data("uas_options_slow.xml"),
            Behaviour::Slow2000 => health_data("uas_options_slow2000.xml"),
        }
    }
}

/// A SIPp UAS on 127.0.0.1:`port` that can be SIGKILLed and restarted on the same port.
/// Every incarnation logs its received messages (`-trace_msg`) to its own file.
pub struct Backend {
    pub label: String,
    pub port: u16,
    pub behaviour: Behaviour,
    dir: PathBuf,
    incarnation: usize,
    msg_files: Vec<PathBuf>,
    proc_: Option<Proc>,
}

impl Backend {
    /// Start a backend on a free port.
    pub fn start(dir: &Path, label: &str, behaviour: Behaviour) -> Backend {
        let mut last = String::new();
        for _ in 0..3 {
            let mut b = Backend {
                label: label.to_string(),
                port: free_port(),
                behaviour,
                dir: dir.to_path_buf(),
                incarnation: 0,
                msg_files: Vec::new(),
                proc_: None,
            };
            match b.spawn() {
                Ok(()) => return b,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// A port nobody listens on (a "dead" destination from the start).
    pub fn dead_port() -> u16 {
        free_port()
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.incarnation += 1;
        let n = self.incarnation;
        let label = &self.label;
        let msg_file = self.dir.join(format!("{label}.{n}.messages.log"));
        let out_file = self.dir.join(format!("{label}.{n}.sipp.out"));
        let err_file = self.dir.join(format!("{label}.{n}.errors.log"));
        let out = fs::File::create(&out_file).map_err(|e| format!("create {}: {e}", out_file.display()))?;
        let mut cmd = Command::new(SIPP_BIN);
        cmd.arg("-sf")
            .arg(self.behaviour.scenario())
            .args(["-i", "127.0.0.1", "-bind_local"])
            .args(["-p", &self.port.to_string()])
            .args(["-cp", &free_port().to_string()])
            .arg("-nostdin")
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&msg_file)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&err_file)
            .current_dir(&self.dir)
            .stdout(Stdio::from(out.try_clone().expect("dup")))
            .stderr(Stdio::from(out));
        let mut p = Proc::spawn(&format!("sipp backend {label}#{n}"), &mut cmd)?;
        let port = self.port;
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            p.try_wait().is_some() || udp_port_in_use(port)
        });
        if let Some(st) = p.try_wait() {
            return Err(format!("sipp backend {label} exited at startup with {st}:\n{}", tail(&out_file, 20)));
        }
        if !ok {
            return Err(format!("sipp backend {label} did not bind 127.0.0.1:{port}:\n{}", tail(&out_file, 20)));
        }
        self.msg_files.push(msg_file);
        self.proc_ = Some(p);
        Ok(())
    }

    pub fn uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    pub fn alive(&self) -> bool {
        self.proc_.is_some()
    }

    /// SIGKILL the backend (its whole process group) and wait until its port is free.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc_.take() {
            unsafe {
                libc::kill(-p.pid, libc::SIGKILL);
            }
            p.stop(Duration::from_millis(500));
        }
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(10), || !udp_port_in_use(port)),
            "port {port} of killed backend {} still in use",
            self.label
        );
    }

    /// Start the backend again on the same port.
    pub fn restart(&mut self) {
        assert!(self.proc_.is_none(), "restart of a running backend {}", self.label);
        let mut last = String::new();
        for _ in 0..5 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("restart of backend {} on port {} failed: {last}", self.label, self.port);
    }

    /// Received messages (first line, Call-ID) over all incarnations.
    pub fn received(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for f in &self.msg_files {
            v.extend(parse_sipp_messages(&fs::read(f).unwrap_or_default()));
        }
        v
    }

    /// The full text of every received message (start line and headers), over all
    /// incarnations, in order.
    pub fn received_raw(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.msg_files {
            let text = String::from_utf8_lossy(&fs::read(f).unwrap_or_default()).into_owned();
            let mut lines = text.lines().peekable();
            while let Some(l) = lines.next() {
                if !(l.contains("message received") && l.contains("bytes")) {
                    continue;
                }
                while matches!(lines.peek(), Some(x) if x.trim().is_empty()) {
                    lines.next();
                }
                let mut msg = Vec::new();
                while let Some(h) = lines.peek() {
                    if h.trim().is_empty() || h.starts_with("-----------------") {
                        break;
                    }
                    msg.push(lines.next().expect("peeked").trim_end().to_string());
                }
                out.push(msg.join("\n"));
            }
        }
        out
    }

    /// The received OPTIONS requests (start line and headers), retransmissions included.
    pub fn options_raw(&self) -> Vec<String> {
        self.received_raw().into_iter().filter(|m| m.starts_with("OPTIONS ")).collect()
    }

    /// Number of received requests with this method (retransmissions included).
    pub fn requests(&self, method: &str) -> usize {
        let p = format!("{method} ");
        self.received().iter().filter(|(l, _)| l.starts_with(&p)).count()
    }

    /// Number of distinct OPTIONS transactions (Call-IDs) received.
    pub fn options_calls(&self) -> usize {
        let ids: std::collections::HashSet<String> =
            self.received().into_iter().filter(|(l, _)| l.starts_with("OPTIONS ")).map(|(_, c)| c).collect();
        ids.len()
    }

    /// Number of distinct INVITE transactions (Call-IDs) received.
    pub fn invites(&self) -> usize {
        let ids: std::collections::HashSet<String> =
            self.received().into_iter().filter(|(l, _)| l.starts_with("INVITE ")).map(|(_, c)| c).collect();
        ids.len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc_.take() {
            p.stop(Duration::from_secs(3));
        }
    }
}

/// The value of the first header `name` (case-insensitive) of a message from
/// `Backend::received_raw`.
pub fn header_of(msg: &str, name: &str) -> Option<String> {
    msg.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The sent-by host of the first Via of a message (`SIP/2.0/UDP 127.0.0.2:5060;branch=..`).
pub fn via_host(msg: &str) -> Option<String> {
    let v = header_of(msg, "Via")?;
    let sent_by = v.split_whitespace().nth(1)?;
    let hostport = sent_by.split(';').next()?;
    Some(hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport).to_string())
}

/// The `tag` parameter of the From header of a message.
pub fn from_tag(msg: &str) -> Option<String> {
    let f = header_of(msg, "From")?;
    let t = &f[f.find(";tag=")? + 5..];
    Some(t.split(|c: char| c == ';' || c.is_whitespace()).next().unwrap_or("").to_string())
}

// ---------------------------------------------------------------------------------------
// dispatcher.list
// ---------------------------------------------------------------------------------------

/// `(set, uri, IUID)` of every destination of `dispatcher.list`, in list order (the IUID
/// is printed from Kamailio 6.1 on).
pub fn iuids(k: &Kamailio) -> Vec<(String, String, Option<String>)> {
    let list = k.ds_list(None).unwrap_or_else(|e| panic!("dispatcher.list: {e}\n{}", k.log_hint()));
    let mut out = Vec::new();
    let Some(records) = list.path("RECORDS") else { return out };
    for s in records.get_all("SET") {
        let set = s.path_val("ID").unwrap_or("?").to_string();
        let Some(targets) = s.path("TARGETS") else { continue };
        for d in targets.get_all("DEST") {
            out.push((set.clone(), d.path_val("URI").unwrap_or("").to_string(), d.path_val("IUID").map(str::to_string)));
        }
    }
    out
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub avg: f64,
    pub std: f64,
    pub est: f64,
    pub max: f64,
    pub timeout: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DestInfo {
    pub set: String,
    pub uri: String,
    pub flags: String,
    pub latency: Option<Latency>,
    pub duid: Option<String>,
}

/// Every destination of `dispatcher.list`, in list order.
pub fn parse_dests(list: &Node) -> Vec<DestInfo> {
    let mut out = Vec::new();
    let Some(records) = list.path("RECORDS") else { return out };
    for s in records.get_all("SET") {
        let set = s.path_val("ID").unwrap_or("?").to_string();
        let Some(targets) = s.path("TARGETS") else { continue };
        for d in targets.get_all("DEST") {
            let num = |k: &str| -> f64 {
                d.path_val(&format!("LATENCY/{k}")).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
            };
            let latency = d.path("LATENCY").map(|_| Latency {
                avg: num("AVG"),
                std: num("STD"),
                est: num("EST"),
                max: num("MAX"),
                timeout: num("TIMEOUT").max(0.0) as u64,
            });
            out.push(DestInfo {
                set: set.clone(),
                uri: d.path_val("URI").unwrap_or("").to_string(),
                flags: d.path_val("FLAGS").unwrap_or("").to_string(),
                latency,
                duid: d.path_val("ATTRS/DUID").map(str::to_string),
            });
        }
    }
    out
}

pub fn dests(k: &Kamailio) -> Vec<DestInfo> {
    let list = k.ds_list(None).unwrap_or_else(|e| panic!("dispatcher.list: {e}\n{}", k.log_hint()));
    parse_dests(&list)
}

/// `uri -> FLAGS` (the URIs of a test list are unique over all sets).
pub fn flags_map(k: &Kamailio) -> BTreeMap<String, String> {
    dests(k).into_iter().map(|d| (d.uri, d.flags)).collect()
}

pub fn flags_of(k: &Kamailio, uri: &str) -> String {
    flags_map(k).remove(uri).unwrap_or_else(|| panic!("{uri} not in dispatcher.list: {:?}", flags_map(k)))
}

pub fn latency_of(k: &Kamailio, uri: &str) -> Latency {
    dests(k)
        .into_iter()
        .find(|d| d.uri == uri)
        .unwrap_or_else(|| panic!("{uri} not in dispatcher.list"))
        .latency
        .unwrap_or_else(|| panic!("{uri}: no LATENCY block in dispatcher.list"))
}

/// Polls `dispatcher.list` and keeps, per URI, the sequence of distinct FLAGS seen with
/// the time (seconds since `t0`) each was first seen.
pub struct StateRecorder {
    pub t0: Instant,
    pub history: BTreeMap<String, Vec<(f64, String)>>,
    pub last: BTreeMap<String, String>,
}

impl StateRecorder {
    pub fn new() -> StateRecorder {
        StateRecorder { t0: Instant::now(), history: BTreeMap::new(), last: BTreeMap::new() }
    }

    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// One poll.
    pub fn sample(&mut self, k: &Kamailio) -> &BTreeMap<String, String> {
        let m = flags_map(k);
        let t = self.now();
        for (uri, fl) in &m {
            let h = self.history.entry(uri.clone()).or_default();
            if h.last().map(|(_, f)| f != fl).unwrap_or(true) {
                h.push((t, fl.clone()));
            }
        }
        self.last = m;
        &self.last
    }

    /// Poll every 100 ms until `pred(flags)` holds (Ok(elapsed since the call)) or
    /// `timeout` (Err with the history).
    pub fn until(
        &mut self,
        k: &Kamailio,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&BTreeMap<String, String>) -> bool,
    ) -> Result<f64, String> {
        let start = Instant::now();
        loop {
            let ok = pred(self.sample(k));
            if ok {
                return Ok(start.elapsed().as_secs_f64());
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last flags {:?}\nhistory:\n{}",
                    self.last,
                    self.dump()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll for `d`, recording everything.
    pub fn watch(&mut self, k: &Kamailio, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.sample(k);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The distinct FLAGS of `uri` seen at or after time `from` (seconds), with the last
    /// value seen before `from` first.
    pub fn seq_since(&self, uri: &str, from: f64) -> Vec<String> {
        let h = self.history.get(uri).cloned().unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        if let Some((_, f)) = h.iter().rev().find(|(t, _)| *t < from) {
            out.push(f.clone());
        }
        for (t, f) in h.iter().filter(|(t, _)| *t >= from) {
            let _ = t;
            if out.last() != Some(f) {
                out.push(f.clone());
            }
        }
        out
    }

    /// Time (seconds since t0) `uri` was first seen with `flags` at or after `from`.
    pub fn first_time(&self, uri: &str, flags: &str, from: f64) -> Option<f64> {
        self.history.get(uri)?.iter().find(|(t, f)| *t >= from && f == flags).map(|(t, _)| *t)
    }

    pub fn dump(&self) -> String {
        let mut s = String::new();
        for (uri, h) in &self.history {
            let parts: Vec<String> = h.iter().map(|(t, f)| format!("{t:.2}s {f}")).collect();
            s.push_str(&format!("  {uri}: {}\n", parts.join(" -> ")));
        }
        s
    }
}

impl Default for StateRecorder {
    fn default() -> Self {
        StateRecorder::new()
    }
}

// ---------------------------------------------------------------------------------------
// Event-route log lines
// ---------------------------------------------------------------------------------------

/// One `HEALTHEV|...` line written by the event routes of health.cfg.tmpl.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// "down" or "up"
    pub ev: String,
    pub ru: String,
    pub du: String,
    pub code: String,
    pub flags: String,
    pub reason: String,
    /// Rust module only: `$dsv(uri)`, `$dsv(setid)`
    pub uri: Option<String>,
    pub setid: Option<String>,
}

pub fn parse_events(log: &str) -> Vec<HealthEvent> {
    let mut out = Vec::new();
    for l in log.lines() {
        let Some(pos) = l.find("HEALTHEV|") else { continue };
        let f: Vec<&str> = l[pos..].split('|').collect();
        // HEALTHEV, ev, ru, du, code, flags, reason, [uri, setid,] ""
        if f.len() < 8 {
            continue;
        }
        out.push(HealthEvent {
            ev: f[1].to_string(),
            ru: f[2].to_string(),
            du: f[3].to_string(),
            code: f[4].to_string(),
            flags: f[5].to_string(),
            reason: f[6].to_string(),
            uri: if f.len() >= 10 { Some(f[7].to_string()) } else { None },
            setid: if f.len() >= 10 { Some(f[8].to_string()) } else { None },
        });
    }
    out
}

pub fn events(k: &Kamailio) -> Vec<HealthEvent> {
    parse_events(&k.log_text())
}

// ---------------------------------------------------------------------------------------
// SIPp UAC without BYE
// ---------------------------------------------------------------------------------------

/// Start the SIPp UAC (health/uac_noBye.xml) against 127.0.0.1:`target_port`; returns
/// the process and its stat file. `calls` calls at `rate` calls/s.
pub fn spawn_uac_nobye(
    dir: &Path,
    label: &str,
    target_port: u16,
    service: &str,
    calls: u32,
    rate: u32,
    timeout: Duration,
) -> (Proc, PathBuf) {
    let files = UacFiles::new(dir, label);
    let stat_file = files.stat_file.clone();
    let mut cmd = sipp_uac_command(&health_data("uac_noBye.xml"), service, target_port, calls as u64, rate as u64, 200, timeout, dir, &files);
    let p = Proc::spawn(&format!("sipp uac {label}"), &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    (p, stat_file)
}
