//! Differential selection test: Debian's C dispatcher module and the Rust module run side
//! by side in two Kamailio instances with the same cfg (tests/data/diff/diff.cfg.tmpl) and
//! the same list (tests/data/diff/diff.list), regardless of DS_TEST_MODULE. Both get the
//! same `dispatcher.set_state` commands, then the same sequence of generated requests for
//! every deterministic algorithm (0,1,2,3,4,5,7,8,10,12,13); the replies (return code,
//! $du, $ru, _dsctx_ cnt, every _dsdst_ record, appended branches) must be identical.
//! The random algorithms (6, 9, 11) are checked against their expected distribution with
//! a chi-square test.
//!
//! Three instance pairs, run one after the other:
//!   flags2    flags 2, hash_pvar "$hdr(X-Hash)", ds_hash_size 8 (+ the random algorithms)
//!   flags3    flags 3 (user-only URI hashing), hash_pvar "$fU@$ci", ds_hash_size 8
//!   default   flags 2, use_default 1, hash_pvar "$hdr(X-Hash)", ds_hash_size 8
//!
//! Environment:
//!   DS_DIFF_SEED=<u64>   request generator seed (default: time based; always printed)
//!   DS_DIFF_MSGS=<n>     requests per algorithm and pair (default 2000)
//!   DS_DIFF_RAND=<n>     selections per random algorithm and module (default 20000)
//!   DS_DIFF_PLANT=1      plant a difference: the Rust instance's list has two
//!                        equal-priority lines of set 2 swapped (the test must fail)
//!   DS_RUST_MODULE       the Rust .so to use (default target/release/dispatcher.so)

#[path = "common/diff_util.rs"]
mod diff_util;
mod common;

use common::*;
use diff_util::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::UdpSocket;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const DIFF_CFG: &str = include_str!("data/diff/diff.cfg.tmpl");
const DIFF_LIST: &str = include_str!("data/diff/diff.list");
const DET_ALGS: &[u32] = &[0, 1, 2, 3, 4, 5, 7, 8, 10, 12, 13];
const RAND_ALGS: &[u32] = &[6, 9, 11];
/// detailed mismatch reports printed per algorithm and per pair (all of them are written
/// to mismatches.txt in the pair's run dir)
const MAX_SHOWN_ALG: usize = 2;
const MAX_SHOWN: usize = 8;
/// give up a pair after this many unanswered requests
const MAX_NO_REPLY: usize = 20;

/// The same state commands on both instances: inactive, disabled, trying, inactive+probing
/// destinations in several sets (set 5: all but the lowest-priority one down; set 6: all down).
const STATES: &[(&str, &str, &str)] = &[
    ("i", "2", "sip:127.0.0.1:40012"),
    ("d", "3", "sip:127.0.0.1:40130"),
    ("i", "3", "sip:127.0.0.1:40115"),
    ("t", "3", "sip:127.0.0.1:40136"),
    ("i", "3", "sip:127.0.0.1:40105"),
    ("i", "3", "sip:127.0.0.1:40110"),
    ("i", "3", "sip:127.0.0.1:40111"),
    ("ip", "3", "sip:127.0.0.1:40122"),
    ("d", "3", "sip:localhost:40120"),
    ("i", "3", "sips:127.0.0.1:40107"),
    ("i", "3", "sip:127.0.0.1:40106"),
    ("i", "4", "sip:127.0.0.1:40204"),
    ("i", "5", "sip:127.0.0.1:40301"),
    ("i", "5", "sip:127.0.0.1:40302"),
    ("i", "6", "sip:127.0.0.1:40401"),
    ("d", "6", "sip:127.0.0.1:40402"),
];

/// One test at a time: each pair is two Kamailio instances on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn seed() -> u64 {
    env_u64("DS_DIFF_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000_000)
            .unwrap_or(1)
    })
}

fn planted() -> bool {
    matches!(std::env::var("DS_DIFF_PLANT").as_deref(), Ok("1") | Ok("yes") | Ok("true"))
}

/// The Rust instance's list for DS_DIFF_PLANT=1: the two priority-5 destinations of set 2
/// swap places in the file (so their array order differs from the C instance's).
fn planted_list(list: &str) -> String {
    let a = "2 sip:127.0.0.1:40012 0 5 duid=b;maxload=3;weight=30;rweight=30;latency=91";
    let b = "2 sip:127.0.0.1:40013;transport=udp 0 5 duid=c;maxload=0;weight=20;rweight=20;latency=5";
    assert!(list.contains(a) && list.contains(b), "planted_list: set 2 lines not found in diff.list");
    list.replace(a, "@@A@@").replace(b, a).replace("@@A@@", b)
}

struct Pair {
    label: &'static str,
    c: Kamailio,
    r: Kamailio,
    sock_c: UdpSocket,
    sock_r: UdpSocket,
    no_reply: usize,
}

type Answer = Option<Vec<Vec<u8>>>;

impl Pair {
    fn start(label: &'static str, extra_params: &str) -> Pair {
        let dir = run_dir(&format!("diff_{label}"));
        let opts = KamOpts {
            list: DIFF_LIST.to_string(),
            extra_params: extra_params.to_string(),
            children: 2,
            debug: 1,
            cfg_template: Some(DIFF_CFG.to_string()),
            ..KamOpts::default()
        };
        let mut opts_r = opts.clone();
        if planted() {
            opts_r.list = planted_list(DIFF_LIST);
            eprintln!("[diff] DS_DIFF_PLANT=1: the Rust instance's list has sip:127.0.0.1:40012 and sip:127.0.0.1:40013;transport=udp (set 2, priority 5) swapped");
        }
        let c = Kamailio::start(&dir, "c", ModuleKind::C, &opts);
        let r = Kamailio::start(&dir, "rust", ModuleKind::Rust, &opts_r);
        eprintln!(
            "[diff] pair {label}: C module pid {} port {}, Rust module ({}) pid {} port {}; run dir {}",
            c.pid(),
            c.port,
            ModuleKind::Rust.so_path().display(),
            r.pid(),
            r.port,
            dir.display()
        );
        let sock_c = bound_socket();
        let sock_r = bound_socket();
        Pair { label, c, r, sock_c, sock_r, no_reply: 0 }
    }

    /// The same `dispatcher.set_state` commands on both; replies must agree, and the
    /// resulting FLAGS of every destination too.
    fn apply_states(&self) {
        for (st, set, uri) in STATES {
            let a = self.c.kamcmd(&["dispatcher.set_state", st, set, uri]);
            let b = self.r.kamcmd(&["dispatcher.set_state", st, set, uri]);
            assert!(a.is_ok(), "C: dispatcher.set_state {st} {set} {uri}: {a:?}");
            assert_eq!(a, b, "dispatcher.set_state {st} {set} {uri}: C and Rust replies differ");
        }
        let fc = dest_flags(&self.c);
        let fr = dest_flags(&self.r);
        if !planted() {
            assert_eq!(fc, fr, "destination flags after set_state differ (C left, Rust right)");
        }
        let down = fc.iter().filter(|(_, f)| f.contains('I') || f.contains('D')).count();
        eprintln!("[diff] pair {}: {} state commands applied, {down} of {} destinations inactive/disabled", self.label, STATES.len(), fc.len());
    }

    fn send(&self, msg: &Msg) {
        for (sock, port) in [(&self.sock_c, self.c.port), (&self.sock_r, self.r.port)] {
            let lp = sock.local_addr().expect("local_addr").port();
            sock.send_to(&msg.render(lp), ("127.0.0.1", port)).expect("send");
        }
    }

    fn recv(sock: &UdpSocket, seq: u32) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = vec![0u8; 65535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            sock.set_read_timeout(Some(left)).expect("set_read_timeout");
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if reply_cseq(&buf[..n]) == Some(seq) {
                        return Some(reply_lines(&buf[..n]));
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Send `msg` to both instances (concurrently) and return (C answer, Rust answer).
    fn exchange(&mut self, msg: &Msg) -> (Answer, Answer) {
        self.send(msg);
        let a = Pair::recv(&self.sock_c, msg.seq);
        let b = Pair::recv(&self.sock_r, msg.seq);
        if a.is_none() || b.is_none() {
            self.no_reply += 1;
        }
        (a, b)
    }
}

/// (set/URI, FLAGS) of every destination in `dispatcher.list`.
fn dest_flags(k: &Kamailio) -> Vec<(String, String)> {
    let list = k.ds_list(None).unwrap_or_else(|e| panic!("dispatcher.list: {e}\n{}", k.log_hint()));
    let mut out = Vec::new();
    if let Some(records) = list.path("RECORDS") {
        for s in records.get_all("SET") {
            let id = s.path_val("ID").unwrap_or("?").to_string();
            if let Some(t) = s.path("TARGETS") {
                for d in t.get_all("DEST") {
                    out.push((
                        format!("{id}/{}", d.path_val("URI").unwrap_or("?")),
                        d.path_val("FLAGS").unwrap_or("?").to_string(),
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

fn show_answer(a: &Answer) -> String {
    match a {
        None => "    <no reply>\n".to_string(),
        Some(lines) => lines.iter().map(|l| format!("    {}\n", esc(l))).collect(),
    }
}

#[derive(Default)]
struct AlgStats {
    msgs: usize,
    mismatches: usize,
    /// return codes seen (C side): "1" / "-1" / "none" / "no reply"
    rets: BTreeMap<String, usize>,
    dsdst_records: usize,
    branches: usize,
    /// mismatches per differing reply field (status, X-O-Ret, X-O-Dsdst, X-O-Br, ...)
    fields: BTreeMap<String, usize>,
}

/// The reply fields (status line, or header name) whose lines differ between `a` and `b`.
fn differing_fields(a: &Answer, b: &Answer) -> Vec<String> {
    let (Some(a), Some(b)) = (a, b) else { return vec!["<no reply>".to_string()] };
    let key = |l: &Vec<u8>| -> String {
        if l.starts_with(b"SIP/2.0") {
            "status".to_string()
        } else {
            String::from_utf8_lossy(l.split(|&c| c == b':').next().unwrap_or(b"")).into_owned()
        }
    };
    let mut keys: Vec<String> = a.iter().chain(b.iter()).map(key).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| {
            let fa: Vec<&Vec<u8>> = a.iter().filter(|l| key(l) == *k).collect();
            let fb: Vec<&Vec<u8>> = b.iter().filter(|l| key(l) == *k).collect();
            fa != fb
        })
        .collect()
}

struct PairReport {
    lines: Vec<String>,
    mismatches: usize,
    failures: Vec<String>,
}

fn run_pair(label: &'static str, extra_params: &str, hash_pvar: HashPvar, with_rand: bool) -> PairReport {
    let seed = seed();
    let n_msgs = env_u64("DS_DIFF_MSGS").unwrap_or(2000) as usize;
    let started = Instant::now();
    let mut pair = Pair::start(label, extra_params);
    pair.apply_states();
    eprintln!("[diff] pair {label}: seed {seed} (DS_DIFF_SEED={seed} reproduces), {n_msgs} requests per algorithm");

    let mut report = PairReport { lines: Vec::new(), mismatches: 0, failures: Vec::new() };
    let mut shown = 0usize;
    let mismatch_path = pair.c.dir.parent().map(|d| d.join("mismatches.txt"));
    let mut mismatch_file = mismatch_path.as_ref().and_then(|p| std::fs::File::create(p).ok());
    // Kamailio 6.1 adds algorithm 14 (round-robin or serial)
    let det_algs: Vec<u32> = DET_ALGS.iter().copied().chain(kam_at_least(6, 1, 0).then_some(14)).collect();
    for &alg in &det_algs {
        let mut g = Gen::new(seed, alg, alg * 1_000_000, hash_pvar, &det_algs);
        let mut st = AlgStats::default();
        let t0 = Instant::now();
        for _ in 0..n_msgs {
            let msg = g.next_msg();
            let (a, b) = pair.exchange(&msg);
            st.msgs += 1;
            let ret = match &a {
                None => "no reply".to_string(),
                Some(l) => line_value(l, "X-O-Ret").unwrap_or_else(|| "?".into()),
            };
            *st.rets.entry(ret).or_default() += 1;
            if let Some(l) = &a {
                st.dsdst_records += l.iter().filter(|x| x.starts_with(b"X-O-Dsdst:")).count();
                st.branches += l.iter().filter(|x| x.starts_with(b"X-O-Br:")).count();
            }
            if a != b {
                st.mismatches += 1;
                for f in differing_fields(&a, &b) {
                    *st.fields.entry(f).or_default() += 1;
                }
                let text = format!(
                    "[diff] MISMATCH pair {label} alg {alg} request #{}:\n{}  C module:\n{}  Rust module:\n{}",
                    msg.seq,
                    msg.display(),
                    show_answer(&a),
                    show_answer(&b)
                );
                if shown < MAX_SHOWN && st.mismatches <= MAX_SHOWN_ALG {
                    shown += 1;
                    eprintln!("{text}");
                }
                if let Some(f) = mismatch_file.as_mut() {
                    let _ = writeln!(f, "{text}");
                }
            }
            if pair.no_reply > MAX_NO_REPLY {
                break;
            }
        }
        let rets: Vec<String> = st.rets.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        report.lines.push(format!(
            "  alg {alg:>2}: {:>5} requests, {:>4} mismatches, {:.1}s  (C return codes {}; {} _dsdst_ records, {} branches)",
            st.msgs,
            st.mismatches,
            t0.elapsed().as_secs_f64(),
            rets.join(" "),
            st.dsdst_records,
            st.branches
        ));
        report.mismatches += st.mismatches;
        if st.mismatches > 0 {
            let f: Vec<String> = st.fields.iter().map(|(k, v)| format!("{k} in {v}")).collect();
            report.lines.push(format!("          differing fields: {}", f.join(", ")));
            report.failures.push(format!(
                "pair {label} alg {alg}: {} of {} replies differ (fields: {})",
                st.mismatches,
                st.msgs,
                f.join(", ")
            ));
        }
        if pair.no_reply > MAX_NO_REPLY {
            report.failures.push(format!(
                "pair {label}: more than {MAX_NO_REPLY} requests got no reply; stopped at alg {alg}\nC: {}\nRust: {}",
                pair.c.log_hint(),
                pair.r.log_hint()
            ));
            break;
        }
    }
    if report.mismatches > 0 {
        if let Some(p) = &mismatch_path {
            report.lines.push(format!("  all {} mismatches: {}", report.mismatches, p.display()));
        }
    }
    if pair.no_reply > 0 {
        report.lines.push(format!("  {} requests without a reply from at least one instance", pair.no_reply));
    }
    if with_rand && pair.no_reply <= MAX_NO_REPLY {
        rand_checks(&mut pair, &mut report);
    }
    report.lines.push(format!("  pair {label} total {:.1}s", started.elapsed().as_secs_f64()));
    report
}

/// Set 4 of diff.list in array order (priorities 50..10): k=a..e with weights 10/20/30/25/15,
/// rweights 10/20/0/40/30; d is made inactive by STATES.
fn set4_spec() -> Vec<DestSpec> {
    let w = [10, 20, 30, 25, 15];
    let rw = [10, 20, 0, 40, 30];
    (0..5).map(|i| DestSpec { weight: w[i], rweight: rw[i], usable: i != 3 }).collect()
}

/// Alg 6/9/11: DS_DIFF_RAND selections on each module (1000 per request, in the cfg's
/// RAND route), chi-square against the expected distribution.
fn rand_checks(pair: &mut Pair, report: &mut PairReport) {
    // the expectation relies on set 4's array order a..e
    let order = |k: &Kamailio| -> Vec<String> {
        let list = k.ds_list(None).expect("dispatcher.list");
        let recs = list.path("RECORDS").expect("RECORDS");
        let set = recs.get_all("SET").into_iter().find(|s| s.path_val("ID") == Some("4")).expect("set 4");
        set.path("TARGETS")
            .map(|t| t.get_all("DEST").iter().filter_map(|d| d.path_val("URI").map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let want: Vec<String> = (1..=5).map(|i| format!("sip:127.0.0.1:4020{i}")).collect();
    assert_eq!(order(&pair.c), want, "set 4 array order (C) is not what set4_spec() assumes");

    let total = env_u64("DS_DIFF_RAND").unwrap_or(20_000) as usize;
    let spec = set4_spec();
    let mut seq = 90_000_000u32;
    for &alg in RAND_ALGS {
        let expected = match alg {
            6 => expected_alg6(&spec),
            9 => expected_alg9(&spec),
            _ => expected_alg11(&spec),
        };
        for (name, which) in [("C", 0), ("Rust", 1)] {
            // A correct random implementation misses the bound with probability P_MIN:
            // one fresh sample is allowed before failing (a wrong distribution fails both).
            for attempt in 1..=2 {
                let t0 = Instant::now();
                let (counts, failed, done, err) = rand_sample(pair, which, alg, total, &mut seq);
                let cs = chi_square(&counts, &expected);
                let pct: Vec<String> = counts
                    .iter()
                    .zip(&expected)
                    .zip(["a", "b", "c", "d", "e"])
                    .map(|((o, e), k)| format!("{k} {:.1}%/{:.0}%", *o as f64 * 100.0 / done.max(1) as f64, e * 100.0))
                    .collect();
                report.lines.push(format!(
                    "  alg {alg:>2} {name:<4}: {done} selections{}, chi2 {:.2} df {} p {:.4} (bound p > {P_MIN}); observed/expected {}; failed selections {failed}; {:.1}s",
                    if attempt > 1 { " (2nd sample)" } else { "" },
                    cs.chi2,
                    cs.df,
                    cs.p,
                    pct.join(" "),
                    t0.elapsed().as_secs_f64()
                ));
                if let Some(e) = err {
                    report.failures.push(format!("alg {alg} {name}: {e}"));
                    break;
                }
                if cs.passes() && failed == 0 {
                    break;
                }
                if attempt == 2 || failed > 0 || cs.impossible > 0 {
                    report.failures.push(format!(
                        "alg {alg} {name}: distribution {counts:?} does not fit {expected:?} (chi2 {:.2}, df {}, p {:.3e}, {} in impossible categories, {failed} failed selections)",
                        cs.chi2, cs.df, cs.p, cs.impossible
                    ));
                    break;
                }
            }
        }
    }
}

/// `total` selections of `alg` on set 4 from one module (`which`: 0 = C, 1 = Rust), 1000
/// per request: (counts of a..e, failed selections, selections done, error).
fn rand_sample(pair: &Pair, which: usize, alg: u32, total: usize, seq: &mut u32) -> ([u64; 5], u64, usize, Option<String>) {
    let per_req = 1000usize;
    let mut counts = [0u64; 5];
    let mut failed = 0u64;
    let mut done = 0usize;
    while done < total {
        let n = per_req.min(total - done);
        *seq += 1;
        let msg = Msg {
            seq: *seq,
            method: "OPTIONS",
            ruri: b"sip:rand@example.com".to_vec(),
            from: b"<sip:rand@example.com>".to_vec(),
            to: b"<sip:rand@example.com>".to_vec(),
            callid: format!("rand-{seq}").into_bytes(),
            headers: vec![b"X-Set: 4".to_vec(), format!("X-Alg: {alg}").into_bytes(), format!("X-Rand: {n}").into_bytes()],
        };
        let (sock, port) = if which == 0 { (&pair.sock_c, pair.c.port) } else { (&pair.sock_r, pair.r.port) };
        let lp = sock.local_addr().expect("local_addr").port();
        sock.send_to(&msg.render(lp), ("127.0.0.1", port)).expect("send");
        let Some(lines) = Pair::recv(sock, *seq) else {
            return (counts, failed, done, Some("RAND request got no reply".into()));
        };
        let v = line_value(&lines, "X-O-Rand").unwrap_or_default();
        if v.len() != n {
            return (counts, failed, done, Some(format!("RAND reply has {} selections, expected {n}: {v:.80}", v.len())));
        }
        for ch in v.bytes() {
            match ch {
                b'a'..=b'e' => counts[(ch - b'a') as usize] += 1,
                _ => failed += 1,
            }
        }
        done += n;
    }
    (counts, failed, done, None)
}

fn finish(label: &str, report: PairReport) {
    let mut s = String::new();
    let _ = writeln!(s, "[diff] ===== summary pair {label} =====");
    for l in &report.lines {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "  mismatches: {}", report.mismatches);
    eprint!("{s}");
    assert!(
        report.failures.is_empty(),
        "differential test pair {label} failed ({} mismatches):\n{}",
        report.mismatches,
        report.failures.join("\n")
    );
}

#[test]
fn diff_flags2_hdr_hash() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let params = "modparam(\"dispatcher\", \"flags\", 2)\n\
                  modparam(\"dispatcher\", \"hash_pvar\", \"$hdr(X-Hash)\")\n\
                  modparam(\"dispatcher\", \"ds_hash_size\", 8)\n";
    let r = run_pair("flags2", params, HashPvar::Header, true);
    finish("flags2", r);
}

#[test]
fn diff_flags3_user_only() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let params = "modparam(\"dispatcher\", \"flags\", 3)\n\
                  modparam(\"dispatcher\", \"hash_pvar\", \"$fU@$ci\")\n\
                  modparam(\"dispatcher\", \"ds_hash_size\", 8)\n";
    let r = run_pair("flags3", params, HashPvar::FromUserCallId, false);
    finish("flags3", r);
}

#[test]
fn diff_use_default() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let params = "modparam(\"dispatcher\", \"flags\", 2)\n\
                  modparam(\"dispatcher\", \"use_default\", 1)\n\
                  modparam(\"dispatcher\", \"hash_pvar\", \"$hdr(X-Hash)\")\n\
                  modparam(\"dispatcher\", \"ds_hash_size\", 8)\n";
    let r = run_pair("default", params, HashPvar::Header, false);
    finish("default", r);
}

// ---------------------------------------------------------------------------------------
// Unit level (no Kamailio): the chi-square bound and the expected distributions
// ---------------------------------------------------------------------------------------

/// Multinomial sample of `n` draws from `p`.
fn sample(rng: &mut Rng, p: &[f64], n: usize) -> Vec<u64> {
    let mut c = vec![0u64; p.len()];
    for _ in 0..n {
        let mut u = rng.unit();
        let mut k = p.len() - 1;
        for (i, pi) in p.iter().enumerate() {
            if u < *pi {
                k = i;
                break;
            }
            u -= pi;
        }
        c[k] += 1;
    }
    c
}

/// `p` with `pp` percentage points moved onto destination `i`, taken proportionally from
/// the other non-zero destinations.
fn skewed(p: &[f64], i: usize, pp: f64) -> Vec<f64> {
    let rest: f64 = p.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, x)| x).sum();
    p.iter().enumerate().map(|(j, x)| if j == i { x + pp } else { x - pp * x / rest }).collect()
}

#[test]
fn chi_square_bound_catches_2pp_skew() {
    // p-values of known chi-square quantiles
    let q = |x: f64, df: usize| gamma_q(df as f64 / 2.0, x / 2.0);
    assert!((q(3.841, 1) - 0.05).abs() < 1e-3, "{}", q(3.841, 1));
    assert!((q(9.488, 4) - 0.05).abs() < 1e-3, "{}", q(9.488, 4));
    assert!((q(18.467, 4) - 0.001).abs() < 1e-4, "{}", q(18.467, 4));
    assert!((q(16.266, 3) - 0.001).abs() < 1e-4, "{}", q(16.266, 3));

    let spec = set4_spec();
    let e6 = expected_alg6(&spec);
    let e9 = expected_alg9(&spec);
    let e11 = expected_alg11(&spec);
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
    assert!(close(&e6, &[0.2, 0.2, 0.2, 0.0, 0.4]), "alg 6 {e6:?}");
    assert!(close(&e9, &[0.1, 0.2, 0.3, 0.0, 0.4]), "alg 9 {e9:?}");
    assert!(close(&e11, &[0.16, 0.33, 0.0, 0.0, 0.51]), "alg 11 {e11:?}");

    let n = 20_000;
    let mut rng = Rng::new(20240601);
    for (name, e) in [("alg 6", &e6), ("alg 9", &e9), ("alg 11", &e11)] {
        // exact counts and correct random samples pass ...
        let exact: Vec<u64> = e.iter().map(|p| (p * n as f64).round() as u64).collect();
        assert!(chi_square(&exact, e).passes(), "{name}: exact counts must pass");
        for round in 0..5 {
            let c = sample(&mut rng, e, n);
            let cs = chi_square(&c, e);
            assert!(cs.passes(), "{name}: correct sample {round} {c:?} fails: {cs:?}");
        }
        // ... a 2-percentage-point skew on any usable destination fails, as exact counts
        // and as a random sample
        for i in (0..e.len()).filter(|&i| e[i] > 0.0) {
            let s = skewed(e, i, 0.02);
            let exact: Vec<u64> = s.iter().map(|p| (p * n as f64).round() as u64).collect();
            let cs = chi_square(&exact, e);
            assert!(!cs.passes(), "{name}: +2pp on destination {i} passes: {exact:?} {cs:?}");
            let c = sample(&mut rng, &s, n);
            let cs2 = chi_square(&c, e);
            assert!(!cs2.passes(), "{name}: sampled +2pp on destination {i} passes: {c:?} {cs2:?}");
            eprintln!(
                "[diff] {name}: +2pp on destination {i}: chi2 {:.1} p {:.1e} (exact counts), chi2 {:.1} p {:.1e} (sample) -> rejected",
                cs.chi2, cs.p, cs2.chi2, cs2.p
            );
        }
    }
    // a selection on a destination that must never be chosen fails
    let mut c: Vec<u64> = e6.iter().map(|p| (p * n as f64).round() as u64).collect();
    c[3] += 1;
    assert!(!chi_square(&c, &e6).passes(), "an impossible destination must fail");
}
