//! Keepalive and health behaviour that changed in the C module after 5.6.3, checked
//! against the Kamailio under test (`make integration KAMAILIO_PREFIX=...`) and, wherever
//! that version's C module accepts the same cfg, against the C module itself:
//!
//! | test | C module version | behaviour |
//! |---|---|---|
//! | `ping_fr_timeout` | 6.1 | `ds_ping_fr_timer`/`ds_ping_fr_timeout` sets the keepalive's fr_timeout (ignored with a warning before) |
//! | `ping_socket_checked_at_startup` | 6.1 | `ds_ping_socket` must be a local socket (`bad socket`, `non-local socket`) |
//! | `keepalive_socket_precedence` | 6.1 | `ping_socket` attr > `socket` attr > `ds_ping_socket` > `ds_default_socket` |
//! | `iuid_from_tag_and_state_by_iuid` | 6.1 | keepalive From tag `<IUID>-xxxx`; the reply updates that exact record |
//! | `no_keepalive_for_noping_and_nodns` | 6.0 / 6.0.1 | no keepalive with flag 32 / flag 16 |
//! | `latency_without_start_time` | 5.8 | a reply for a record without send time adds no latency sample |
//! | `cfg_marks_immediate_events_on_faked_msg` | 6.0.3 | `ds_mark_dst` ignores the thresholds; events run on a faked message with R-URI = destination |
//! | `kemi_event_callback_on_faked_msg` | 6.0.3 | the same for the KEMI `event_callback` (Lua) |
//! | `event_callback_mode_options_and_init` | 6.1 | `event_callback_mode` 1 (keepalives only) and 2 (also from flags 0) |
//! | `dsg_computed_at_each_read` | 5.8 | `$dsg` for group 1 before any fetch, computed at each read, null for an unknown group |
//!
//! Expectations follow the version under test (`kam_at_least`). By default every test runs
//! the Rust module and, where the C module of that version accepts the cfg, the C module
//! too (same expectations, and the observations of both must be equal). With
//! `DS_TEST_MODULE=c` only the C module runs: that checks the expectations themselves.

mod common;
#[path = "common/health_util.rs"]
mod health_util;

use common::*;
use health_util::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const VERSIONS_CFG: &str = include_str!("data/versions/versions.cfg.tmpl");

const DSG_ROUTE: &str = r#"	if ($rU == "dsg") {
		if (is_present_hf("X-Fetch")) {
			$var(g) = $(hdr(X-Fetch){s.int});
			ds_dsg_fetch("$var(g)");
		}
		append_to_reply("X-Dsg: $dsg(count) $dsg(active) $dsg(inactive) $dsg(pactive) $dsg(pinactive)\r\n");
		sl_send_reply("200", "dsg");
		exit;
	}"#;

/// What a test instance needs from the versions cfg template.
#[derive(Clone, Default)]
struct Setup {
    list: String,
    /// modparam lines (may use `{{PORT}}`)
    params: String,
    listen2: bool,
    dsg: bool,
    children: u32,
    fr_timer_ms: u32,
}

/// `$dsv(uri)`/`$dsv(setid)` exist in the Rust module and in the C module from 6.0.3.
fn dsv_extra(kind: ModuleKind) -> bool {
    kind == ModuleKind::Rust || kam_at_least(6, 0, 3)
}

fn opts(kind: ModuleKind, s: &Setup) -> KamOpts {
    let tmpl = VERSIONS_CFG
        .replace("@@LISTEN2@@", if s.listen2 { "listen=udp:127.0.0.2:{{PORT}}" } else { "" })
        .replace("@@DS_PARAMS@@", &s.params)
        .replace("@@DSG_ROUTE@@", if s.dsg { DSG_ROUTE } else { "" })
        .replace("@@DSV_EXTRA@@", if dsv_extra(kind) { "|$dsv(uri)|$dsv(setid)" } else { "" });
    KamOpts {
        list: s.list.clone(),
        extra_params: String::new(),
        fr_timer_ms: if s.fr_timer_ms > 0 { s.fr_timer_ms } else { 1000 },
        fr_inv_timer_ms: 3000,
        children: if s.children > 0 { s.children } else { 2 },
        debug: 2,
        cfg_template: Some(tmpl),
    }
}

/// The modules to run: the one under test (`DS_TEST_MODULE`), plus the C module when
/// `c_accepts` (its version knows every parameter and function of the cfg). Empty when
/// only the C module is asked for and it cannot run this cfg.
fn kinds(c_accepts: bool) -> Vec<ModuleKind> {
    match ModuleKind::from_env() {
        ModuleKind::Rust if c_accepts => vec![ModuleKind::Rust, ModuleKind::C],
        ModuleKind::Rust => vec![ModuleKind::Rust],
        ModuleKind::C if c_accepts => vec![ModuleKind::C],
        ModuleKind::C => {
            println!("[versions] the C module of Kamailio {} does not accept this cfg: nothing to run", kam_version());
            vec![]
        }
    }
}

fn p(name: &str, v: &str) -> String {
    if v.parse::<i64>().is_ok() {
        format!("modparam(\"dispatcher\", \"{name}\", {v})\n")
    } else {
        format!("modparam(\"dispatcher\", \"{name}\", \"{v}\")\n")
    }
}

fn kam(k: &Kamailio, args: &[&str]) -> String {
    k.kamcmd(args).unwrap_or_else(|e| panic!("kamcmd {args:?}: {e}\n{}", k.log_hint()))
}

/// Polls `dispatcher.list` until `pred` holds for the flags map; Err with the last map.
fn wait_flags(
    k: &Kamailio,
    timeout: Duration,
    mut pred: impl FnMut(&BTreeMap<String, String>) -> bool,
) -> Result<Duration, BTreeMap<String, String>> {
    let t0 = Instant::now();
    loop {
        let m = flags_map(k);
        if pred(&m) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return Err(m);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events of `k` with its own port replaced by `PORT` (to compare two instances).
fn norm_events(k: &Kamailio) -> Vec<HealthEvent> {
    let port = format!(":{}", k.port);
    events(k)
        .into_iter()
        .map(|mut e| {
            e.ru = e.ru.replace(&port, ":PORT");
            e.du = e.du.replace(&port, ":PORT");
            e
        })
        .collect()
}

fn short(e: &HealthEvent) -> String {
    let extra = match (&e.uri, &e.setid) {
        (Some(u), Some(s)) => format!(" uri={u} set={s}"),
        _ => String::new(),
    };
    format!("{} ru={} du={} code={} flags={} reason={}{extra}", e.ev, e.ru, e.du, e.code, e.flags, e.reason)
}

/// Asserts that every run observed the same thing (`what` names the observation).
fn all_equal<T: PartialEq + std::fmt::Debug>(what: &str, runs: &[(ModuleKind, T)]) {
    if let Some((k0, first)) = runs.first() {
        for (k, v) in &runs[1..] {
            assert_eq!(v, first, "{what}: the {} module differs from the {} module", k.name(), k0.name());
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. ds_ping_fr_timeout / ds_ping_fr_timer (6.1)
// ---------------------------------------------------------------------------------------

/// tm `fr_timer` 6 s, one dead destination, `ds_ping_fr_timer` 8 (ticks of 1/16 s = 0.5 s):
/// from 6.1 the first keepalive times out after 0.5 s (IP about 2 s after startup); before
/// 6.1 the parameter is ignored with a warning (IP only after tm's 6 s).
#[test]
fn ping_fr_timeout() {
    let dir = run_dir("versions-frtimeout");
    let v61 = kam_at_least(6, 1, 0);
    let mut runs = Vec::new();
    for kind in kinds(v61) {
        let dead = format!("sip:127.0.0.1:{}", Backend::dead_port());
        // the Rust module with the 6.1.2 alias, the C module with the original name
        let name = if kind == ModuleKind::Rust { "ds_ping_fr_timer" } else { "ds_ping_fr_timeout" };
        let s = Setup {
            list: format!("1 {dead} 0 0\n"),
            params: p("ds_probing_mode", "1") + &p(name, "8"),
            fr_timer_ms: 6000,
            ..Default::default()
        };
        let t0 = Instant::now();
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));
        let r = wait_flags(&k, Duration::from_secs(12), |m| m.get(&dead).map(String::as_str) == Some("IP"));
        let t_ip = t0.elapsed().as_secs_f64();
        let warned = k.log_count("ds_ping_fr_timeout (ds_ping_fr_timer) is set but ignored") > 0;
        println!("[versions] {} module: dead destination IP {:.2}s after start (warning: {warned})", kind.name(), t_ip);
        assert!(r.is_ok(), "{} module: never IP: {:?}\n{}", kind.name(), r.err(), k.log_hint());
        if v61 {
            assert!(t_ip < 4.5, "{} module: ds_ping_fr_timer 8 not applied: IP after {t_ip:.2}s\n{}", kind.name(), k.log_hint());
        } else {
            assert!(t_ip > 5.0, "{} module: IP after {t_ip:.2}s before tm's fr_timer (6 s)\n{}", kind.name(), k.log_hint());
        }
        if kind == ModuleKind::Rust {
            assert_eq!(warned, !v61, "warning 'ignored' expected exactly before 6.1\n{}", k.log_hint());
        }
        runs.push((kind, t_ip < 4.5));
    }
    all_equal("fast timeout", &runs);
}

// ---------------------------------------------------------------------------------------
// 2. ds_ping_socket (6.1)
// ---------------------------------------------------------------------------------------

/// From 6.1 startup fails when `ds_ping_socket` is not parsable (`bad socket <...>`) or
/// not one of Kamailio's sockets (`non-local socket <...>`); before 6.1 the parameter is
/// ignored with a warning.
#[test]
fn ping_socket_checked_at_startup() {
    let dir = run_dir("versions-pingsock");
    let v61 = kam_at_least(6, 1, 0);
    for kind in kinds(v61) {
        for (i, (sock, err)) in [("udp:127.0.0.1:abc", "bad socket"), ("udp:10.9.9.9:5060", "non-local socket")].iter().enumerate() {
            let s = Setup { list: "1 sip:127.0.0.1:5 0 0\n".into(), params: p("ds_ping_socket", sock), ..Default::default() };
            let label = format!("{}-{i}", kind.name());
            let res = Kamailio::try_start(&dir, &label, kind, &opts(kind, &s));
            let want = format!("{err} <{sock}>");
            match (v61, res) {
                (true, Err(e)) => {
                    println!("[versions] {} module: ds_ping_socket {sock}: startup refused", kind.name());
                    assert!(e.contains(&want), "{} module: expected '{want}' in the log:\n{e}", kind.name());
                }
                (true, Ok(k)) => panic!("{} module: started with ds_ping_socket {sock}\n{}", kind.name(), k.log_hint()),
                (false, Ok(k)) => {
                    assert!(
                        k.log_count("ds_ping_socket is set but ignored") > 0,
                        "no 'ignored' warning for ds_ping_socket\n{}",
                        k.log_hint()
                    );
                    assert_eq!(k.log_count(&want), 0, "{}", k.log_hint());
                }
                (false, Err(e)) => panic!("{} module: startup failed before 6.1 (parameter must be ignored):\n{e}", kind.name()),
            }
        }
    }
}

/// Two listen sockets (127.0.0.1 and 127.0.0.2), `ds_default_socket` on .1 and
/// `ds_ping_socket` on .2. The address each backend sees in the keepalive's Via:
/// * no socket attr: .2 from 6.1 (`ds_ping_socket` > `ds_default_socket`), .1 before;
/// * `socket` attr .1: .1 (`socket` > `ds_ping_socket`);
/// * `ping_socket` attr .2 with `socket` .1: .2 from 6.1, .1 before (attr unknown there).
#[test]
fn keepalive_socket_precedence() {
    let dir = run_dir("versions-sockprec");
    let v61 = kam_at_least(6, 1, 0);
    let mut runs = Vec::new();
    for kind in kinds(true) {
        let bs: Vec<Backend> =
            ["plain", "sockattr", "pingattr"].iter().map(|l| Backend::start(&dir, &format!("{}-{l}", kind.name()), Behaviour::Ok200)).collect();
        let list = format!(
            "1 {} 0 0\n1 {} 0 0 socket=udp:127.0.0.1:{{{{PORT}}}}\n1 {} 0 0 ping_socket=udp:127.0.0.2:{{{{PORT}}}};socket=udp:127.0.0.1:{{{{PORT}}}}\n",
            bs[0].uri(),
            bs[1].uri(),
            bs[2].uri()
        );
        let mut params = p("ds_probing_mode", "1") + &p("ds_default_socket", "udp:127.0.0.1:{{PORT}}");
        if kind == ModuleKind::Rust || v61 {
            params += &p("ds_ping_socket", "udp:127.0.0.2:{{PORT}}");
        }
        let s = Setup { list, params, listen2: true, ..Default::default() };
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || bs.iter().all(|b| !b.options_raw().is_empty()));
        assert!(ok, "{} module: not every backend got a keepalive\n{}", kind.name(), k.log_hint());
        let hosts: Vec<Option<String>> = bs.iter().map(|b| b.options_raw().first().and_then(|m| via_host(m))).collect();
        println!("[versions] {} module: keepalive Via hosts (plain, socket attr, ping_socket attr): {hosts:?}", kind.name());
        let (two, one) = (Some("127.0.0.2".to_string()), Some("127.0.0.1".to_string()));
        let want = if v61 { vec![two.clone(), one.clone(), two] } else { vec![one.clone(), one.clone(), one] };
        assert_eq!(hosts, want, "{} module: keepalive sending sockets\n{}", kind.name(), k.log_hint());
        runs.push((kind, hosts));
    }
    all_equal("keepalive sockets", &runs);
}

// ---------------------------------------------------------------------------------------
// 3. IUID as keepalive From tag (6.1)
// ---------------------------------------------------------------------------------------

/// From 6.1 a keepalive's From tag is `<IUID>-<4 of [a-z0-9]>` (the IUID as printed by
/// `dispatcher.list`), and the reply updates exactly that record: with three entries of the
/// same dead URI (file flags 0, 8, 0; probing mode 0: only the flag-8 one is pinged) the
/// pinged entry goes inactive. Before 6.1 the reply updates the first entry with the URI.
#[test]
fn iuid_from_tag_and_state_by_iuid() {
    let dir = run_dir("versions-iuid");
    let v61 = kam_at_least(6, 1, 0);
    let mut runs = Vec::new();
    for kind in kinds(true) {
        let b = Backend::start(&dir, &format!("{}-ok", kind.name()), Behaviour::Ok200);
        let dead = format!("sip:127.0.0.1:{}", Backend::dead_port());
        let list = format!("1 {} 0 0\n2 {dead} 0 0\n2 {dead} 8 0\n2 {dead} 0 0\n", b.uri());
        let s = Setup { list, params: p("ds_probing_mode", "0"), ..Default::default() };
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));

        // --- the From tag ---
        // (probing mode 0: set 1's entry has no flag 8, so set probing mode 1 for it by RPC)
        kam(&k, &["dispatcher.set_state", "ap", "1", &b.uri()]);
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(100), || !b.options_raw().is_empty()),
            "{} module: no keepalive\n{}",
            kind.name(),
            k.log_hint()
        );
        let tag = b.options_raw().first().and_then(|m| from_tag(m)).unwrap_or_default();
        let iuid = iuids(&k).into_iter().find(|(_, u, _)| *u == b.uri()).and_then(|(_, _, i)| i);
        println!("[versions] {} module: keepalive From tag {tag:?}, IUID {iuid:?}", kind.name());
        if v61 {
            let iuid = iuid.unwrap_or_else(|| panic!("{} module: no IUID in dispatcher.list on 6.1", kind.name()));
            let suffix = tag.strip_prefix(&format!("{iuid}-")).unwrap_or_else(|| panic!("tag {tag:?} does not start with {iuid}-"));
            assert!(
                suffix.len() == 4 && suffix.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "tag suffix {suffix:?} is not 4 of [a-z0-9]"
            );
        } else {
            assert!(!tag.is_empty() && !tag.starts_with("dspt-"), "{} module: tag {tag:?} before 6.1", kind.name());
            assert_eq!(iuid, None, "no IUID before 6.1");
        }

        // --- state by IUID: let the flag-8 entry's keepalives time out a few times ---
        std::thread::sleep(Duration::from_secs(4));
        let set2: Vec<String> = dests(&k).into_iter().filter(|d| d.set == "2").map(|d| d.flags).collect();
        println!("[versions] {} module: set 2 (same URI, file flags in list order) {set2:?}", kind.name());
        // list order: the flag-8 entry is in the middle whatever the order of equal priorities
        let want: Vec<&str> = if v61 { vec!["AX", "IX", "AX"] } else { vec!["IX", "AP", "AX"] };
        assert_eq!(set2, want, "{} module: states of the three same-URI entries\n{}", kind.name(), k.log_hint());
        runs.push((kind, (tag.starts_with("dspt-"), set2)));
    }
    all_equal("IUID tag / states", &runs);
}

// ---------------------------------------------------------------------------------------
// 4. No keepalive for flag 32 (6.0) and flag 16 (6.0.1)
// ---------------------------------------------------------------------------------------

/// Probing mode 1 (ping all), three live backends with file flags 32 (no ping), 16 (no
/// DNS) and 0: from 6.0 the flag-32 one gets no keepalive, from 6.0.1 the flag-16 one
/// neither; before, all three are pinged. The final FLAGS are equal to the C module's.
#[test]
fn no_keepalive_for_noping_and_nodns() {
    let dir = run_dir("versions-noping");
    let want = [!kam_at_least(6, 0, 0), !kam_at_least(6, 0, 1), true];
    let mut runs = Vec::new();
    for kind in kinds(true) {
        let bs: Vec<Backend> =
            ["f32", "f16", "f0"].iter().map(|l| Backend::start(&dir, &format!("{}-{l}", kind.name()), Behaviour::Ok200)).collect();
        let list = format!("1 {} 32 0\n1 {} 16 0\n1 {} 0 0\n", bs[0].uri(), bs[1].uri(), bs[2].uri());
        let s = Setup { list, params: p("ds_probing_mode", "1"), ..Default::default() };
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(100), || bs[2].options_calls() >= 2),
            "{} module: the flag-0 backend got no keepalives\n{}",
            kind.name(),
            k.log_hint()
        );
        std::thread::sleep(Duration::from_millis(1500));
        let pinged: Vec<bool> = bs.iter().map(|b| b.options_calls() > 0).collect();
        let flags: Vec<String> = dests(&k).into_iter().map(|d| d.flags).collect();
        println!(
            "[versions] {} module: keepalives (flag 32, 16, 0): {:?}, FLAGS {flags:?}",
            kind.name(),
            bs.iter().map(|b| b.options_calls()).collect::<Vec<_>>()
        );
        assert_eq!(pinged, want, "{} module: which destinations got keepalives (flag 32, 16, 0)\n{}", kind.name(), k.log_hint());
        runs.push((kind, (pinged, flags)));
    }
    all_equal("keepalives and FLAGS", &runs);
}

// ---------------------------------------------------------------------------------------
// 5. Latency: no sample without a send time (5.8)
// ---------------------------------------------------------------------------------------

/// A backend answers keepalives after 2 s. Right after it received the first one,
/// `dispatcher.ping_active 0` and `dispatcher.reload` (the new record has no send time);
/// then the reply arrives. From 5.8 it adds no latency sample (AVG = MAX = 0); before, the
/// latency is computed from time 0 (a garbage value).
#[test]
fn latency_without_start_time() {
    let dir = run_dir("versions-latency0");
    let v58 = kam_at_least(5, 8, 0);
    let mut runs = Vec::new();
    for kind in kinds(true) {
        let b = Backend::start(&dir, &format!("{}-slow", kind.name()), Behaviour::Slow2000);
        let s = Setup {
            list: format!("1 {} 8 0\n", b.uri()),
            params: p("ds_probing_mode", "1") + &p("ds_ping_latency_stats", "1"),
            fr_timer_ms: 5000,
            ..Default::default()
        };
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(10), || b.options_calls() >= 1),
            "{} module: no keepalive\n{}",
            kind.name(),
            k.log_hint()
        );
        kam(&k, &["dispatcher.ping_active", "0"]);
        kam(&k, &["dispatcher.reload"]);
        let in_flight = b.options_calls();
        let before = latency_of(&k, &b.uri());
        std::thread::sleep(Duration::from_millis(3500));
        let after = latency_of(&k, &b.uri());
        println!("[versions] {} module: {in_flight} keepalive(s) in flight over the reload; LATENCY {before:?} -> {after:?}", kind.name());
        assert_eq!((before.avg, before.max), (0.0, 0.0), "reload resets the statistics");
        let sampled = after.avg != 0.0 || after.max != 0.0;
        assert_eq!(sampled, !v58, "{} module: latency sample from a reply without send time: {after:?}\n{}", kind.name(), k.log_hint());
        runs.push((kind, sampled));
    }
    all_equal("sample without start time", &runs);
}

// ---------------------------------------------------------------------------------------
// 6./7. Marks from cfg are immediate, events run on a faked message (6.0.3)
// ---------------------------------------------------------------------------------------

/// `ds_probing_threshold` 3 and `ds_inactive_threshold` 3, a destination nobody pings
/// (probing mode 0, file flags 0), marked from the request route with `ds_mark_dst`:
/// * `t`: from 6.0.3 inactive at once (`IX`), before trying (`TX`, 1 of 3);
/// * `i`: inactive (`IX`);
/// * `a`: from 6.0.3 active at once (`AX`), before still inactive (1 of 3).
///
/// The events: from 6.0.3 they run on a faked message whose R-URI is the destination
/// (`$du` null); before, on the request (`$ru` = `sip:mk...@`).
#[test]
fn cfg_marks_immediate_events_on_faked_msg() {
    let dir = run_dir("versions-marks");
    let v603 = kam_at_least(6, 0, 3);
    let mut runs = Vec::new();
    for kind in kinds(true) {
        let dead = format!("sip:127.0.0.1:{}", Backend::dead_port());
        let s = Setup {
            list: format!("1 {dead} 0 0\n"),
            params: p("ds_probing_mode", "0") + &p("ds_probing_threshold", "3") + &p("ds_inactive_threshold", "3"),
            ..Default::default()
        };
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));
        let mut seen = Vec::new();
        for st in ["t", "i", "a"] {
            let r = k.request(&format!("mk{st}"), &[("X-Set", "1"), ("X-Uri", &dead)]);
            assert_eq!(r.hdr("X-Ret"), "1", "{} module: ds_mark_dst(\"{st}\")\n{}", kind.name(), r.raw);
            seen.push(flags_of(&k, &dead));
        }
        std::thread::sleep(Duration::from_millis(300));
        let evs = norm_events(&k);
        println!(
            "[versions] {} module: flags after t, i, a: {seen:?}; events:\n  {}",
            kind.name(),
            evs.iter().map(short).collect::<Vec<_>>().join("\n  ")
        );
        let want_flags = if v603 { ["IX", "IX", "AX"] } else { ["TX", "IX", "IX"] };
        assert_eq!(seen, want_flags, "{} module: flags after ds_mark_dst t, i, a", kind.name());
        let got: Vec<(String, String, String, String)> =
            evs.iter().map(|e| (e.ev.clone(), e.ru.clone(), e.du.clone(), e.code.clone())).collect();
        let d = dead.clone();
        let want: Vec<(String, String, String, String)> = if v603 {
            vec![("down".into(), d.clone(), "<null>".into(), "820".into()), ("up".into(), d.clone(), "<null>".into(), "820".into())]
        } else {
            vec![("down".into(), "sip:mki@127.0.0.1:PORT".into(), "<null>".into(), "820".into())]
        };
        assert_eq!(got, want, "{} module: events (kind, $ru, $du, $dsv(code))", kind.name());
        if dsv_extra(kind) {
            for e in &evs {
                assert_eq!((e.uri.as_deref(), e.setid.as_deref()), (Some(dead.as_str()), Some("1")), "$dsv(uri)/$dsv(setid): {e:?}");
            }
        }
        // each run has its own dead port: compare with the destination named
        let nd = |v: &str| if v == dead { "DEST".to_string() } else { v.to_string() };
        let cmp: Vec<_> = evs.iter().map(|e| (e.ev.clone(), nd(&e.ru), nd(&e.du), e.code.clone(), e.flags.clone(), e.reason.clone())).collect();
        runs.push((kind, (seen, cmp)));
    }
    all_equal("marks and events", &runs);
}

// ---------------------------------------------------------------------------------------
// 8. event_callback_mode (6.1)
// ---------------------------------------------------------------------------------------

/// Probing mode 1, destinations with file flags 0: a live one (`ok`), a dead one, and a live
/// one (`marked`) that is marked `i` from the request route once keepalives settled, then
/// comes back by keepalive.
/// * mode 1 (6.1): keepalive transitions only: dead down, marked up (no event for the mark);
/// * mode 2 (6.1): also from flags 0: ok up, dead down, marked up (first keepalive), marked
///   down (mark), marked up (keepalive);
/// * before 6.1 the parameter is ignored (warning): dead down, marked down, marked up.
#[test]
fn event_callback_mode_options_and_init() {
    let dir = run_dir("versions-evmode");
    let v61 = kam_at_least(6, 1, 0);
    for mode in [1, 2] {
        let mut runs = Vec::new();
        for kind in kinds(v61) {
            let ok = Backend::start(&dir, &format!("{}-m{mode}-ok", kind.name()), Behaviour::Ok200);
            let marked = Backend::start(&dir, &format!("{}-m{mode}-marked", kind.name()), Behaviour::Ok200);
            let dead = format!("sip:127.0.0.1:{}", Backend::dead_port());
            let (uo, um) = (ok.uri(), marked.uri());
            let s = Setup {
                list: format!("1 {uo} 0 0\n1 {dead} 0 0\n2 {um} 0 0\n"),
                params: p("ds_probing_mode", "1") + &p("event_callback_mode", &mode.to_string()),
                fr_timer_ms: 600,
                ..Default::default()
            };
            let k = Kamailio::start(&dir, &format!("{}-mode{mode}", kind.name()), kind, &opts(kind, &s));
            let settled = wait_flags(&k, Duration::from_secs(10), |m| {
                m.get(&uo).map(String::as_str) == Some("AP")
                    && m.get(&dead).map(String::as_str) == Some("IP")
                    && m.get(&um).map(String::as_str) == Some("AP")
            });
            assert!(settled.is_ok(), "{} module: keepalives did not settle: {:?}\n{}", kind.name(), settled.err(), k.log_hint());
            let r = k.request("mki", &[("X-Set", "2"), ("X-Uri", &um)]);
            assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);
            assert_eq!(flags_of(&k, &um), "IX");
            let back = wait_flags(&k, Duration::from_secs(10), |m| m.get(&um).map(String::as_str) == Some("AP"));
            assert!(back.is_ok(), "{} module: marked destination not back: {:?}", kind.name(), back.err());
            std::thread::sleep(Duration::from_millis(1500));
            let evs = norm_events(&k);
            let name = |ru: &str, du: &str| -> &str {
                if ru == uo || du == uo {
                    "ok"
                } else if ru == dead || du == dead {
                    "dead"
                } else if ru == um || du == um || ru.starts_with("sip:mki@") {
                    "marked"
                } else {
                    "?"
                }
            };
            let got: Vec<String> = evs.iter().map(|e| format!("{} {} {}", name(&e.ru, &e.du), e.ev, e.code)).collect();
            println!("[versions] {} module, event_callback_mode {mode}: {got:?}", kind.name());
            let want: Vec<&str> = match (v61, mode) {
                (true, 1) => vec!["dead down 408", "marked up 200"],
                (true, _) => vec!["ok up 200", "dead down 408", "marked up 200", "marked down 820", "marked up 200"],
                (false, _) => vec!["dead down 408", "marked down 820", "marked up 200"],
            };
            // the first keepalives of ok, dead and marked may complete in any order
            let mut g_sorted = got.clone();
            let mut w_sorted: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            g_sorted.sort();
            w_sorted.sort();
            assert_eq!(g_sorted, w_sorted, "{} module, event_callback_mode {mode}: events {got:?}\n{}", kind.name(), k.log_hint());
            // the mark comes after every first-keepalive event
            let mark_pos = got.iter().position(|e| e == "marked down 820");
            if let Some(p) = mark_pos {
                assert_eq!(p, got.len() - 2, "{got:?}");
            }
            if kind == ModuleKind::Rust {
                assert_eq!(k.log_count("event_callback_mode is set but ignored") > 0, !v61, "{}", k.log_hint());
            }
            runs.push((kind, g_sorted));
        }
        all_equal(&format!("events with event_callback_mode {mode}"), &runs);
    }
}

// ---------------------------------------------------------------------------------------
// 9. $dsg (5.8)
// ---------------------------------------------------------------------------------------

/// One SIP worker (`$dsg` selection is per process). Set 1 has 3 destinations, set 2 two;
/// nobody pings them.
/// * from 5.8: before any fetch `$dsg` shows group 1; after `ds_dsg_fetch(2)` group 2, and
///   a later state change shows at the next read without a new fetch; an unknown group is
///   null;
/// * before 5.8 (`$dsg` is this module's extension there): null before any fetch, the
///   figures of the fetch time.
#[test]
fn dsg_computed_at_each_read() {
    let dir = run_dir("versions-dsg");
    let v58 = kam_at_least(5, 8, 0);
    let mut runs = Vec::new();
    for kind in kinds(v58) {
        let d: Vec<String> = (0..5).map(|_| format!("sip:127.0.0.1:{}", Backend::dead_port())).collect();
        let list = format!("1 {} 0 0\n1 {} 0 0\n1 {} 0 0\n2 {} 0 0\n2 {} 0 0\n", d[0], d[1], d[2], d[3], d[4]);
        let s = Setup { list, params: p("ds_probing_mode", "0"), dsg: true, children: 1, ..Default::default() };
        let k = Kamailio::start(&dir, kind.name(), kind, &opts(kind, &s));
        let dsg = |fetch: Option<&str>| -> String {
            let h: Vec<(&str, &str)> = fetch.map(|f| vec![("X-Fetch", f)]).unwrap_or_default();
            let r = k.request("dsg", &h);
            assert_eq!(r.status, 200, "{}", r.raw);
            r.hdr("X-Dsg").to_string()
        };
        let mut seen = Vec::new();
        seen.push(dsg(None));
        seen.push(dsg(Some("2")));
        kam(&k, &["dispatcher.set_state", "i", "2", &d[3]]);
        seen.push(dsg(None));
        seen.push(dsg(Some("99")));
        seen.push(dsg(Some("1")));
        kam(&k, &["dispatcher.set_state", "d", "1", &d[0]]);
        seen.push(dsg(None));
        println!("[versions] {} module: $dsg reads {seen:?}", kind.name());
        let null = "<null> <null> <null> <null> <null>";
        let want: Vec<&str> = if v58 {
            vec!["3 3 0 100 0", "2 2 0 100 0", "2 1 1 50 50", null, "3 3 0 100 0", "3 2 1 66 33"]
        } else {
            vec![null, "2 2 0 100 0", "2 2 0 100 0", null, "3 3 0 100 0", "3 3 0 100 0"]
        };
        assert_eq!(seen, want, "{} module: $dsg(count active inactive pactive pinactive)\n{}", kind.name(), k.log_hint());
        runs.push((kind, seen));
    }
    all_equal("$dsg", &runs);
}

// ---------------------------------------------------------------------------------------
// 7. KEMI event_callback on a faked message (6.0.3)
// ---------------------------------------------------------------------------------------

/// `event_callback` (a Lua function, app_lua) instead of event routes: a keepalive timeout
/// and a recovery run it with `$ru` = the destination on every version; a
/// `KSR.dispatcher.ds_mark_dst_state("i")` from the request runs it on a faked message
/// with `$ru` = the destination from 6.0.3, on the request itself before.
#[test]
fn kemi_event_callback_on_faked_msg() {
    assert!(
        std::path::Path::new(&*MODULES_DIR).join("app_lua.so").is_file(),
        "app_lua.so is missing (apt-get install kamailio-lua-modules)"
    );
    let dir = run_dir("versions-kemiev");
    let v603 = kam_at_least(6, 0, 3);
    let script = data_dir().join("versions").join("ds-event.lua");
    let tmpl = include_str!("data/versions/kemi-event.cfg.tmpl").replace("@LUA_SCRIPT@", &script.display().to_string());
    let mut runs = Vec::new();
    for kind in kinds(true) {
        let b = Backend::start(&dir, &format!("{}-ok", kind.name()), Behaviour::Ok200);
        let dead = format!("sip:127.0.0.1:{}", Backend::dead_port());
        let ub = b.uri();
        let o = KamOpts {
            fr_timer_ms: 600,
            children: 2,
            cfg_template: Some(tmpl.clone()),
            ..KamOpts::with_list(&format!("1 {ub} 0 0\n1 {dead} 0 0\n"))
        };
        let k = Kamailio::start(&dir, kind.name(), kind, &o);
        let settled = wait_flags(&k, Duration::from_secs(10), |m| {
            m.get(&ub).map(String::as_str) == Some("AP") && m.get(&dead).map(String::as_str) == Some("IP")
        });
        assert!(settled.is_ok(), "{} module: keepalives did not settle: {:?}\n{}", kind.name(), settled.err(), k.log_hint());
        let r = k.request("mki", &[("X-Set", "1"), ("X-Uri", &ub)]);
        assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);
        let back = wait_flags(&k, Duration::from_secs(10), |m| m.get(&ub).map(String::as_str) == Some("AP"));
        assert!(back.is_ok(), "{} module: marked destination not back: {:?}", kind.name(), back.err());
        std::thread::sleep(Duration::from_millis(500));
        let port = format!(":{}", k.port);
        let got: Vec<String> = k
            .log_text()
            .lines()
            .filter_map(|l| l.find("KEMIEV|").map(|p| l[p + 7..].trim_end().to_string()))
            .map(|l| l.replace(&port, ":PORT").replace(&ub, "BACKEND").replace(&dead, "DEAD"))
            .collect();
        println!("[versions] {} module: KEMI events {got:?}", kind.name());
        let mark_ru = if v603 { "BACKEND" } else { "sip:mki@127.0.0.1:PORT" };
        let want = vec![
            "dispatcher:dst-down|DEAD|<null>|408|".to_string(),
            format!("dispatcher:dst-down|{mark_ru}|<null>|820|"),
            "dispatcher:dst-up|BACKEND|<null>|200|".to_string(),
        ];
        assert_eq!(got, want, "{} module: KEMI event callbacks (name|$ru|$du|$dsv(code))\n{}", kind.name(), k.log_hint());
        runs.push((kind, got));
    }
    all_equal("KEMI events", &runs);
}
