//! Destination health: keepalives through TM, the state machine (probing/inactive
//! thresholds, probing modes 0-3, `ds_ping_reply_codes` also changed at runtime), failover
//! while a backend dies, the `dispatcher:dst-down`/`dst-up` event routes and `$dsv`, the
//! RPCs `set_state`/`set_duid_state`/`ping_active`, latency statistics, a differential run
//! against Debian's C module, and (Rust only) state kept across `dispatcher.reload`.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `DS_TEST_MODULE=c`. The
//! differential test always runs both modules.
//!
//! Backends are SIPp UAS processes on 127.0.0.1 (tests/data/uas_200.xml and
//! tests/data/health/*.xml); a "dead" destination is a port nobody listens on. TM's
//! `fr_timer` is 1000 ms and `ds_ping_interval` 1 s, so a timeout takes about a second.
//! Time bounds are generous: the machine may be busy with other tests.

mod common;
#[path = "common/health_util.rs"]
mod health_util;

use common::*;
use health_util::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SET_STATE_OK: &str = "Ok. Dispatcher state updated.";

fn kam(k: &Kamailio, args: &[&str]) -> String {
    k.kamcmd(args).unwrap_or_else(|e| panic!("kamcmd {args:?}: {e}\n{}", k.log_hint()))
}

fn kam_fault(k: &Kamailio, args: &[&str]) -> String {
    match k.kamcmd(args) {
        Ok(out) => panic!("kamcmd {args:?}: expected a fault, got {out:?}"),
        Err(e) => e,
    }
}

fn get<'a>(m: &'a BTreeMap<String, String>, uri: &str) -> &'a str {
    m.get(uri).map(String::as_str).unwrap_or("<missing>")
}

/// Drop leading "AX" (the configured flags before the first keepalive answer).
fn without_initial_ax(seq: Vec<String>) -> Vec<String> {
    let mut s = seq;
    while s.first().map(String::as_str) == Some("AX") {
        s.remove(0);
    }
    s
}

// ---------------------------------------------------------------------------------------
// 1. State transitions
// ---------------------------------------------------------------------------------------

/// Probing mode 1, `ds_probing_threshold` 2, `ds_inactive_threshold` 2, 404 accepted:
/// a SIGKILLed backend goes AP -> TP -> IP and back to AP (through IP only) once restarted;
/// a 503 backend ends IP; a 404 backend stays AP. Then `ping_reply_codes` is changed at
/// runtime to `class=5`: the 503 backend comes up and the 404 one goes down.
#[test]
fn state_transitions() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("health-states");
    let mut ok = Backend::start(&dir, "ok", Behaviour::Ok200);
    let b503 = Backend::start(&dir, "b503", Behaviour::Err503);
    let b404 = Backend::start(&dir, "b404", Behaviour::Err404);
    let (u_ok, u503, u404) = (ok.uri(), b503.uri(), b404.uri());
    let list = format!("1 {u_ok} 0 0\n1 {u503} 0 0\n1 {u404} 0 0\n");
    let extra = modparams(&[
        ("ds_probing_mode", "1"),
        ("ds_probing_threshold", "2"),
        ("ds_inactive_threshold", "2"),
        ("ds_ping_reply_codes", "code=404"),
    ]);
    let k = Kamailio::start(&dir, "kam", kind, &health_opts(kind, &list, &extra));
    let mut rec = StateRecorder::new();

    rec.until(&k, Duration::from_secs(20), "initial keepalive states", |m| {
        get(m, &u_ok) == "AP" && get(m, &u503) == "IP" && get(m, &u404) == "AP"
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));
    assert_eq!(
        without_initial_ax(rec.seq_since(&u503, 0.0)),
        ["TP", "IP"],
        "503 backend: expected trying, then inactive after 2 failed keepalives\n{}",
        rec.dump()
    );

    // --- down ---
    let t_kill = rec.now();
    ok.kill();
    rec.until(&k, Duration::from_secs(20), "killed backend inactive", |m| get(m, &u_ok) == "IP")
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));
    let down_tp = rec.first_time(&u_ok, "TP", t_kill).map(|t| t - t_kill);
    let down_ip = rec.first_time(&u_ok, "IP", t_kill).expect("IP seen") - t_kill;
    assert_eq!(
        rec.seq_since(&u_ok, t_kill),
        ["AP", "TP", "IP"],
        "killed backend: expected AP -> TP -> IP\n{}",
        rec.dump()
    );

    // --- up ---
    rec.watch(&k, Duration::from_millis(1500)); // a few more failed keepalives while IP
    assert_eq!(get(&rec.last, &u_ok), "IP", "dead backend must stay IP\n{}", rec.dump());
    let t_up = rec.now();
    let opts_before_restart = ok.options_calls();
    ok.restart();
    rec.until(&k, Duration::from_secs(20), "restarted backend active", |m| get(m, &u_ok) == "AP")
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));
    let up = rec.first_time(&u_ok, "AP", t_up).expect("AP seen") - t_up;
    assert_eq!(
        rec.seq_since(&u_ok, t_up),
        ["IP", "AP"],
        "restarted backend: expected IP -> AP (no trying on the way up)\n{}",
        rec.dump()
    );
    // ds_inactive_threshold 2: at least two keepalives answered by the restarted backend
    let answered = ok.options_calls() - opts_before_restart;
    assert!(answered >= 2, "AP after {answered} keepalive(s) answered, threshold is 2\n{}", rec.dump());

    // the 404 backend was AP all along, the 503 one IP since it settled
    let s404 = without_initial_ax(rec.seq_since(&u404, 0.0));
    assert_eq!(s404, ["AP"], "404 (in ds_ping_reply_codes) must stay AP\n{}", rec.dump());
    assert_eq!(rec.seq_since(&u503, t_kill), ["IP"], "503 must stay IP\n{}", rec.dump());

    println!(
        "[health] {} module: detection down: TP after {}, IP after {down_ip:.2}s; up: AP after {up:.2}s \
         (threshold 2/2, ping interval 1s, fr_timer 1s)",
        kind.name(),
        down_tp.map(|t| format!("{t:.2}s")).unwrap_or_else(|| "-".into())
    );

    // --- ping_reply_codes at runtime (cfg framework) ---
    let t_cfg = rec.now();
    kam(&k, &["cfg.set_now_string", "dispatcher", "ping_reply_codes", "class=5"]);
    rec.until(&k, Duration::from_secs(20), "reply codes class=5 applied", |m| {
        get(m, &u503) == "AP" && get(m, &u404) == "IP"
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));
    assert_eq!(rec.seq_since(&u503, t_cfg), ["IP", "AP"], "{}", rec.dump());
    assert_eq!(rec.seq_since(&u404, t_cfg), ["AP", "TP", "IP"], "{}", rec.dump());
    assert_eq!(get(&rec.last, &u_ok), "AP", "2xx always counts\n{}", rec.dump());
    println!(
        "[health] {} module: runtime ping_reply_codes=class=5 applied within {:.2}s",
        kind.name(),
        rec.now() - t_cfg
    );
    println!("[health] state history:\n{}", rec.dump());
}

// ---------------------------------------------------------------------------------------
// 2. Failover while a backend dies
// ---------------------------------------------------------------------------------------

/// Calls (INVITE -> 200 -> ACK, no BYE, so an answered call cannot fail afterwards) are
/// round-robined over two backends with `ds_select_dst` and `ds_next_dst` in the failure
/// route (`flags` 2). One backend is SIGKILLed in the middle of the run: no call fails,
/// the dead one ends IP.
#[test]
fn failover_while_backend_dies() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("health-failover");
    let mut a = Backend::start(&dir, "a", Behaviour::CallNoBye);
    let b = Backend::start(&dir, "b", Behaviour::CallNoBye);
    let (ua, ub) = (a.uri(), b.uri());
    let list = format!("1 {ua} 0 0\n1 {ub} 0 0\n");
    let extra = modparams(&[("ds_probing_mode", "1")]);
    let k = Kamailio::start(&dir, "kam", kind, &health_opts(kind, &list, &extra));
    let mut rec = StateRecorder::new();
    rec.until(&k, Duration::from_secs(20), "both AP", |m| get(m, &ua) == "AP" && get(m, &ub) == "AP")
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));

    const CALLS: u32 = 60;
    let start = Instant::now();
    let (mut uac, stat) = spawn_uac_nobye(&dir, "uac", k.port, "call-1-4", CALLS, 15, Duration::from_secs(40));
    std::thread::sleep(Duration::from_millis(1300));
    let invites_before_kill = a.invites();
    a.kill();
    let t_kill = start.elapsed().as_secs_f64();
    let status = uac.wait_timeout(Duration::from_secs(50));
    if status.is_none() {
        uac.stop(Duration::from_secs(2));
    }
    let (created, successful, failed) = parse_sipp_stat(&stat);
    rec.sample(&k);
    let failovers = k.log_count("FAILOVER ");
    println!(
        "[health] {} module: failover: {created} calls, {successful} ok, {failed} failed in {:.1}s; \
         backend a killed at {t_kill:.1}s after {invites_before_kill} INVITEs (total to a {}), b got {}; \
         {failovers} failovers",
        kind.name(),
        start.elapsed().as_secs_f64(),
        a.invites(),
        b.invites()
    );
    assert_eq!(
        (status.and_then(|s| s.code()), created, successful, failed),
        (Some(0), CALLS as u64, CALLS as u64, 0),
        "sipp uac: exit/created/successful/failed (see {})\n{}",
        dir.display(),
        k.log_hint()
    );
    assert!(invites_before_kill > 0, "backend a got no call before it was killed");
    assert!(failovers >= 1, "no call was failed over to the other backend\n{}", k.log_hint());
    assert!(failovers < CALLS as usize, "too many failovers: {failovers}");
    assert_eq!(get(&rec.last, &ua), "IP", "killed backend\n{}", rec.dump());
    assert_eq!(get(&rec.last, &ub), "AP", "live backend\n{}", rec.dump());
}

// ---------------------------------------------------------------------------------------
// 3. Events
// ---------------------------------------------------------------------------------------

/// `event_route[dispatcher:dst-down|dst-up]` fire exactly once per transition, with
/// `$dsv(code)`, `$dsv(flags)`, `$dsv(reason)` (+ `$dsv(uri)`, `$dsv(setid)` with the
/// Rust module): a 503 keepalive reply, a keepalive timeout (408, flags 0), a recovery
/// (200, flags 1, "OK"), and `ds_mark_dst("ip")` from the request route (820) followed by
/// recovery through the next keepalive.
#[test]
fn events_once_per_transition() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("health-events");
    let mut a = Backend::start(&dir, "a", Behaviour::Ok200);
    let b = Backend::start(&dir, "b503", Behaviour::Err503);
    let c = Backend::start(&dir, "c", Behaviour::Ok200);
    let (ua, ub, uc) = (a.uri(), b.uri(), c.uri());
    let list = format!("1 {ua} 0 0\n1 {ub} 0 0\n2 {uc} 0 0\n");
    let extra = modparams(&[("ds_probing_mode", "1")]);
    // fr_timer 600 ms (shorter than the ping interval): a keepalive's timeout is always
    // processed before the next keepalive leaves, so a late timeout of a keepalive sent
    // before the restart cannot follow the first success and add a down/up pair
    let opts = KamOpts { fr_timer_ms: 600, ..health_opts(kind, &list, &extra) };
    let k = Kamailio::start(&dir, "kam", kind, &opts);
    let mut rec = StateRecorder::new();
    rec.until(&k, Duration::from_secs(20), "initial states", |m| {
        get(m, &ua) == "AP" && get(m, &ub) == "IP" && get(m, &uc) == "AP"
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));

    // events of one destination (keepalive events: $ru = the destination)
    let evs_for =
        |uri: &str| -> Vec<HealthEvent> { events(&k).into_iter().filter(|e| e.ru == uri || e.du == uri).collect() };
    let wait_events = |uri: &str, n: usize, what: &str| {
        let ok = wait_until(Duration::from_secs(15), Duration::from_millis(100), || evs_for(uri).len() >= n);
        assert!(ok, "{what}: expected {n} events for {uri}, got {:#?}\n{}", evs_for(uri), k.log_hint());
    };

    // 503 reply: one dst-down with the reply's code and reason, flags 1
    wait_events(&ub, 1, "503 backend down");
    let a0 = evs_for(&ua);
    assert!(a0.is_empty(), "no event for a backend that was always usable: {a0:#?}");

    // timeout
    a.kill();
    rec.until(&k, Duration::from_secs(15), "a IP", |m| get(m, &ua) == "IP").unwrap_or_else(|e| panic!("{e}"));
    wait_events(&ua, 1, "timeout down");
    rec.watch(&k, Duration::from_millis(1500)); // more failed keepalives: no new event
    a.restart();
    rec.until(&k, Duration::from_secs(15), "a AP", |m| get(m, &ua) == "AP").unwrap_or_else(|e| panic!("{e}"));
    wait_events(&ua, 2, "recovery up");

    // ds_mark_dst("ip") from the request route, then recovery by keepalive
    let r = k.request("mark-2", &[]);
    assert_eq!(r.hdr("X-Ret"), "1 1", "mark-2 reply:\n{}", r.raw);
    assert_eq!(r.hdr("X-DU"), uc, "mark-2 reply:\n{}", r.raw);
    wait_events(&uc, 2, "ds_mark_dst down + keepalive up");
    rec.until(&k, Duration::from_secs(15), "c AP", |m| get(m, &uc) == "AP").unwrap_or_else(|e| panic!("{e}"));

    // nothing more must come
    rec.watch(&k, Duration::from_millis(2500));
    let all = events(&k);
    for e in &all {
        println!("[health] {} module: event {e:?}", kind.name());
    }
    let ea = evs_for(&ua);
    let eb = evs_for(&ub);
    let ec = evs_for(&uc);
    assert_eq!(all.len(), 5, "exactly 5 events expected, got {all:#?}\nhistory:\n{}", rec.dump());

    // b: 503 down
    assert_eq!(eb.len(), 1, "{eb:#?}");
    let e = &eb[0];
    assert_eq!(
        (e.ev.as_str(), e.ru.as_str(), e.code.as_str(), e.flags.as_str(), e.reason.as_str()),
        ("down", ub.as_str(), "503", "1", "Service Unavailable"),
        "{e:?}"
    );
    assert_eq!(e.du, "<null>", "keepalive event: $du is null: {e:?}");

    // a: timeout down (408, flags 0, no reason), then up (200, flags 1, OK)
    assert_eq!(ea.len(), 2, "{ea:#?}");
    assert_eq!(
        (ea[0].ev.as_str(), ea[0].ru.as_str(), ea[0].code.as_str(), ea[0].flags.as_str(), ea[0].reason.as_str()),
        ("down", ua.as_str(), "408", "0", "<null>"),
        "{:?}",
        ea[0]
    );
    assert_eq!(
        (ea[1].ev.as_str(), ea[1].ru.as_str(), ea[1].code.as_str(), ea[1].flags.as_str(), ea[1].reason.as_str()),
        ("up", ua.as_str(), "200", "1", "OK"),
        "{:?}",
        ea[1]
    );

    // c: ds_mark_dst down (820, flags 0), then keepalive up. Up to 6.0.2 the event runs on
    // the request ($ru = the request URI, $du = c); from 6.0.3 on a faked message whose
    // R-URI is the destination ($du null)
    assert_eq!(ec.len(), 2, "{ec:#?}");
    assert_eq!(
        (ec[0].ev.as_str(), ec[0].code.as_str(), ec[0].flags.as_str()),
        ("down", "820", "0"),
        "{:?}",
        ec[0]
    );
    if kam_at_least(6, 0, 3) {
        assert_eq!((ec[0].ru.as_str(), ec[0].du.as_str()), (uc.as_str(), "<null>"), "6.0.3+: faked message: {:?}", ec[0]);
    } else {
        assert_eq!(ec[0].du, uc, "{:?}", ec[0]);
        assert!(ec[0].ru.starts_with("sip:mark-2@"), "ds_mark_dst event runs on the request: $ru {:?}", ec[0].ru);
    }
    assert_eq!(ec[0].reason, "<null>", "no reason on a request: {:?}", ec[0]);
    assert_eq!(
        (ec[1].ev.as_str(), ec[1].ru.as_str(), ec[1].code.as_str(), ec[1].flags.as_str(), ec[1].reason.as_str()),
        ("up", uc.as_str(), "200", "1", "OK"),
        "{:?}",
        ec[1]
    );

    if kind == ModuleKind::Rust {
        // $dsv(uri) / $dsv(setid) (Kamailio 6.1 keys)
        for (e, uri, set) in
            [(&eb[0], &ub, "1"), (&ea[0], &ua, "1"), (&ea[1], &ua, "1"), (&ec[0], &uc, "2"), (&ec[1], &uc, "2")]
        {
            assert_eq!((e.uri.as_deref(), e.setid.as_deref()), (Some(uri.as_str()), Some(set)), "{e:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. RPC set_state / set_duid_state / ping_active
// ---------------------------------------------------------------------------------------

fn flat(k: &Kamailio) -> Vec<String> {
    k.ds_list(None).unwrap_or_else(|e| panic!("dispatcher.list: {e}")).flatten()
}

#[test]
fn rpc_set_state_and_ping_active() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("health-rpc");
    let a = Backend::start(&dir, "a", Behaviour::Ok200);
    let b = Backend::start(&dir, "b", Behaviour::Ok200);
    let c = Backend::start(&dir, "c", Behaviour::Ok200);
    let (ua, ub, uc) = (a.uri(), b.uri(), c.uri());
    let list = format!("1 {ua} 0 0 duid=a1\n1 {ub} 0 0 duid=b1\n2 {uc} 0 0 duid=c1;ping_from=sip:pf@test\n");
    let extra = modparams(&[("ds_probing_mode", "1")]);
    let k = Kamailio::start(&dir, "kam", kind, &health_opts(kind, &list, &extra));
    let mut rec = StateRecorder::new();
    rec.until(&k, Duration::from_secs(20), "all AP", |m| m.values().all(|f| f == "AP") && m.len() == 3)
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));

    // --- ping_active ---
    let got = parse_kamcmd(&kam(&k, &["dispatcher.ping_active"]));
    assert_eq!(got.path_val("OldPingState"), Some("1"), "{}", got.pretty());
    let opts0 = a.options_calls();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || a.options_calls() >= opts0 + 2),
        "keepalives do not reach backend a ({} OPTIONS)",
        a.options_calls()
    );
    // the keepalive request: R-URI = To = the destination, From = ds_ping_from or the
    // destination's ping_from attribute
    for (be, from) in [(&a, "<sip:health@127.0.0.1>"), (&c, "<sip:pf@test>")] {
        let raw = be.received_raw();
        let msg = raw.iter().find(|m| m.starts_with("OPTIONS ")).expect("an OPTIONS");
        let hdr = |name: &str| -> String {
            msg.lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        assert!(msg.starts_with(&format!("OPTIONS {} SIP/2.0", be.uri())), "keepalive R-URI:\n{msg}");
        assert_eq!(hdr("To"), format!("<{}>", be.uri()), "keepalive To:\n{msg}");
        assert!(hdr("From").starts_with(&format!("{from};tag=")), "keepalive From (want {from}):\n{msg}");
        assert_eq!(hdr("CSeq").split_whitespace().nth(1), Some("OPTIONS"), "{msg}");
    }
    let got = parse_kamcmd(&kam(&k, &["dispatcher.ping_active", "0"]));
    assert_eq!(
        (got.path_val("NewPingState"), got.path_val("OldPingState")),
        (Some("0"), Some("1")),
        "{}",
        got.pretty()
    );
    let got = parse_kamcmd(&kam(&k, &["dispatcher.ping_active"]));
    assert_eq!(got.path_val("OldPingState"), Some("0"), "{}", got.pretty());
    std::thread::sleep(Duration::from_millis(1500)); // keepalives in flight
    let n_off: Vec<usize> = [&a, &b, &c].iter().map(|x| x.options_calls()).collect();
    let t_off = Instant::now();

    // --- set_state (no keepalives now, so nothing races with the RPCs) ---
    let set = |args: &[&str], expect: &[(&str, &str)]| {
        let mut full = vec!["dispatcher.set_state"];
        full.extend_from_slice(args);
        let out = kam(&k, &full);
        assert_eq!(out.trim(), SET_STATE_OK, "{full:?}");
        let m = flags_map(&k);
        for (uri, fl) in expect {
            assert_eq!(get(&m, uri), *fl, "after {full:?}: {m:?}");
        }
    };
    set(&["ip", "1", &ua], &[(&ua, "IP"), (&ub, "AP"), (&uc, "AP")]);
    set(&["a", "1", &ua], &[(&ua, "AX")]);
    set(&["d", "1", &ua], &[(&ua, "DX")]);
    set(&["dp", "1", &ua], &[(&ua, "DX")]); // probing is ignored with disabled
    set(&["tp", "1", &ua], &[(&ua, "TP")]);
    set(&["I", "1", &ua], &[(&ua, "IX")]);
    set(&["AP", "1", &ua], &[(&ua, "AP")]);
    set(&["t", "1", &ua.to_uppercase()], &[(&ua, "TX")]); // address: case-insensitive
    set(&["ip", "1", "all"], &[(&ua, "IP"), (&ub, "IP"), (&uc, "AP")]);
    set(&["ap", "1", "all"], &[(&ua, "AP"), (&ub, "AP"), (&uc, "AP")]);
    set(&["ip", "99", "all"], &[(&ua, "AP"), (&ub, "AP"), (&uc, "AP")]); // unknown group + all: Ok

    // --- set_duid_state ---
    let set_duid = |args: &[&str], expect: &[(&str, &str)]| {
        let mut full = vec!["dispatcher.set_duid_state"];
        full.extend_from_slice(args);
        let out = kam(&k, &full);
        assert_eq!(out.trim(), SET_STATE_OK, "{full:?}");
        let m = flags_map(&k);
        for (uri, fl) in expect {
            assert_eq!(get(&m, uri), *fl, "after {full:?}: {m:?}");
        }
    };
    set_duid(&["i", "1", "b1"], &[(&ua, "AP"), (&ub, "IX"), (&uc, "AP")]);
    set_duid(&["ap", "1", "B1"], &[(&ub, "AP")]); // duid: case-insensitive
    set_duid(&["tp", "2", "c1"], &[(&uc, "TP")]);
    set_duid(&["d", "1", "all"], &[(&ua, "DX"), (&ub, "DX"), (&uc, "TP")]);
    set_duid(&["ap", "1", "all"], &[(&ua, "AP"), (&ub, "AP")]);
    set(&["ip", "1", &ua], &[(&ua, "IP")]);

    // --- faults: nothing changes ---
    let before = flat(&k);
    let faults: Vec<(Vec<&str>, &str)> = vec![
        (vec!["dispatcher.set_state", "ip", "1", "sip:127.0.0.1:1"], "State Update Failed"),
        (vec!["dispatcher.set_state", "ip", "99", &ua], "State Update Failed"),
        (vec!["dispatcher.set_state", "ip", "2", &ua], "State Update Failed"),
        (vec!["dispatcher.set_state", "x", "1", &ua], "Unknown State Value"),
        (vec!["dispatcher.set_state", "x", "1", "all"], "Unknown State Value"),
        (vec!["dispatcher.set_state", "ip", "1"], "Invalid Parameters"),
        (vec!["dispatcher.set_state", "ip"], "Invalid Parameters"),
        (vec!["dispatcher.set_state"], "Invalid Parameters"),
        (vec!["dispatcher.set_duid_state", "ip", "1", "nosuch"], "State Update Failed"),
        (vec!["dispatcher.set_duid_state", "ip", "2", "a1"], "State Update Failed"),
        (vec!["dispatcher.set_duid_state", "q", "1", "a1"], "Unknown State Value"),
        (vec!["dispatcher.set_duid_state", "ip", "1"], "Invalid Parameters"),
    ];
    for (args, want) in &faults {
        let got = kam_fault(&k, args);
        assert_eq!(got, *want, "{args:?}");
    }
    let after = flat(&k);
    assert!(before == after, "bad RPC input changed the list:\n{}", line_diff(&before, &after));

    // --- still no keepalives; the IP destination (healthy backend) stays IP ---
    let wait_more = Duration::from_millis(3000).saturating_sub(t_off.elapsed());
    std::thread::sleep(wait_more);
    let n_off2: Vec<usize> = [&a, &b, &c].iter().map(|x| x.options_calls()).collect();
    assert_eq!(n_off, n_off2, "OPTIONS were sent while ping_active was 0 ({:.1}s)", t_off.elapsed().as_secs_f64());
    assert_eq!(flags_of(&k, &ua), "IP");

    // --- pings on again: the healthy destination comes back, OPTIONS flow ---
    let got = parse_kamcmd(&kam(&k, &["dispatcher.ping_active", "1"]));
    assert_eq!(
        (got.path_val("NewPingState"), got.path_val("OldPingState")),
        (Some("1"), Some("0")),
        "{}",
        got.pretty()
    );
    rec.until(&k, Duration::from_secs(15), "a back to AP after ping_active 1", |m| get(m, &ua) == "AP")
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            [&a, &b, &c].iter().zip(&n_off).all(|(x, n)| x.options_calls() > *n)
        }),
        "keepalives did not resume: {:?} -> {:?}",
        n_off,
        [&a, &b, &c].iter().map(|x| x.options_calls()).collect::<Vec<_>>()
    );
    println!(
        "[health] {} module: OPTIONS per backend with ping_active 0 for {:.1}s: {:?} -> {:?}",
        kind.name(),
        3.0,
        n_off,
        n_off2
    );
}

// ---------------------------------------------------------------------------------------
// 5. Latency statistics
// ---------------------------------------------------------------------------------------

#[test]
fn latency_stats() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("health-latency");
    let fast = Backend::start(&dir, "fast", Behaviour::Ok200);
    let slow = Backend::start(&dir, "slow", Behaviour::Slow300);
    let dead = Backend::dead_port();
    let (uf, us, ud) = (fast.uri(), slow.uri(), format!("sip:127.0.0.1:{dead}"));
    let list = format!("1 {uf} 0 0\n1 {us} 0 0\n1 {ud} 0 0\n");
    let extra = modparams(&[("ds_probing_mode", "1"), ("ds_ping_latency_stats", "1")]);
    let k = Kamailio::start(&dir, "kam", kind, &health_opts(kind, &list, &extra));

    let t_start = Instant::now();
    let first = latency_of(&k, &us);
    let mut last = (first.clone(), first.clone(), first.clone());
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        last = (latency_of(&k, &uf), latency_of(&k, &us), latency_of(&k, &ud));
        last.1.avg > 200.0 && last.1.est > 200.0 && last.2.timeout >= 2
    });
    let (lf, ls, ld) = last.clone();
    println!("[health] {} module: latency fast {lf:?}\n  slow {ls:?}\n  dead {ld:?}", kind.name());
    assert!(ok, "latency stats did not reach the expected values\n{}", k.log_hint());
    println!("[health] slow backend stats right after startup: {first:?}");
    assert!(ls.avg > 200.0 && ls.est > 200.0 && ls.max >= 250.0, "slow backend (300 ms): {ls:?}");
    assert!(ls.max < 1500.0, "slow backend max: {ls:?}");
    if t_start.elapsed() < Duration::from_secs(8) {
        // fewer than 10 samples (one per second): the estimate is the average (spec §9)
        assert!((ls.est - ls.avg).abs() < 0.01, "EST must equal AVG below 10 samples: {ls:?}");
    }
    assert!(lf.avg < 100.0 && lf.est < 100.0 && lf.max < ls.max, "fast backend: {lf:?}");
    assert!(lf.avg < ls.avg, "fast {lf:?} vs slow {ls:?}");
    assert_eq!((lf.timeout, ls.timeout), (0, 0), "no timeouts for live backends");
    assert!(ld.timeout >= 2, "dead backend: {ld:?}");
    // a timeout adds no latency sample
    assert!(ld.avg == 0.0 && ld.max == 0.0, "dead backend must have no latency samples: {ld:?}");

    // TIMEOUT keeps counting
    let t1 = ld.timeout;
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(250), || latency_of(&k, &ud).timeout >= t1 + 2),
        "TIMEOUT of the dead destination stuck at {:?}",
        latency_of(&k, &ud)
    );
    assert_eq!(flags_of(&k, &ud), "IP");
}

// ---------------------------------------------------------------------------------------
// 6. Differential: C module and Rust module side by side
// ---------------------------------------------------------------------------------------

/// Probing modes 0..3 (and mode 0 with overlapping keepalives), each with a C and a Rust
/// instance running at the same time on the same backends and the same list (file flags
/// 0, 2, 8, 9 and disabled, backends 200, 503, 404 (accepted), dead); after things settle
/// the FLAGS of every destination must be equal.
#[test]
fn differential_final_flags() {
    let dir = run_dir("health-diff");
    let ok = Backend::start(&dir, "ok", Behaviour::Ok200);
    let e503 = Backend::start(&dir, "e503", Behaviour::Err503);
    let e404 = Backend::start(&dir, "e404", Behaviour::Err404);
    let dead = format!("sip:127.0.0.1:{}", Backend::dead_port());
    let uris = [ok.uri(), e503.uri(), e404.uri(), dead.clone()];
    let mut list = String::new();
    for (set, fl) in [(1, 0), (2, 2), (3, 8), (4, 9)] {
        for u in &uris {
            list.push_str(&format!("{set} {u} {fl} 0\n"));
        }
    }
    list.push_str(&format!("5 {} 4 0\n5 {dead} 12 0\n", ok.uri()));
    let mut pairs = Vec::new();
    // (probing mode, fr_timer ms): fr_timer 600 ms, shorter than the ping interval, for
    // every mode; with a timeout as long as the interval, whether the next keepalive
    // leaves before the previous one's timeout has cleared the probing bit (mode 0) is a
    // race between two timers (seen with 1000 ms: C "IX", Rust "TX" for a dead destination
    // with file flags 8 in mode 0). Mode 0 again with 1500 ms: keepalives overlap for sure
    // (a dead destination is pinged twice before the first timeout, so it ends IX).
    for (mode, fr) in [(0, 600), (1, 600), (2, 600), (3, 600), (0, 1500)] {
        let extra = modparams(&[
            ("ds_probing_mode", &mode.to_string()),
            ("ds_probing_threshold", "2"),
            ("ds_inactive_threshold", "2"),
            ("ds_ping_reply_codes", "code=404"),
        ]);
        let opts = |kind| KamOpts { fr_timer_ms: fr, ..health_opts(kind, &list, &extra) };
        let c = Kamailio::start(&dir, &format!("c-mode{mode}-fr{fr}"), ModuleKind::C, &opts(ModuleKind::C));
        let r = Kamailio::start(&dir, &format!("rust-mode{mode}-fr{fr}"), ModuleKind::Rust, &opts(ModuleKind::Rust));
        pairs.push((format!("mode {mode} fr {fr}"), c, r));
    }
    let snap = |k: &Kamailio| -> Vec<(String, String, String)> {
        dests(k).into_iter().map(|d| (d.set, d.uri, d.flags)).collect()
    };
    // settle: every instance unchanged for 3 s
    let start = Instant::now();
    let mut last: Vec<(Vec<_>, Vec<_>)> = pairs.iter().map(|(_, c, r)| (snap(c), snap(r))).collect();
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(3) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(300));
        let now: Vec<(Vec<_>, Vec<_>)> = pairs.iter().map(|(_, c, r)| (snap(c), snap(r))).collect();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    let settled = stable_since.elapsed() >= Duration::from_secs(3);
    let mut report = String::new();
    let mut bad = false;
    let names = ["200", "503", "404", "dead"];
    for ((mode, _, _), (c, r)) in pairs.iter().zip(&last) {
        for (dc, dr) in c.iter().zip(r) {
            let name = names.iter().zip(&uris).find(|(_, u)| **u == dc.1).map(|(n, _)| *n).unwrap_or("?");
            let mark = if dc == dr { " " } else { "!" };
            if dc != dr {
                bad = true;
            }
            report.push_str(&format!("{mark} {mode} set {} {name:>4}: C {} Rust {}\n", dc.0, dc.2, dr.2));
        }
        if c.len() != r.len() {
            bad = true;
            report.push_str(&format!("! {mode}: C has {} destinations, Rust {}\n", c.len(), r.len()));
        }
    }
    println!("[health] differential after {:.1}s (settled: {settled}):\n{report}", start.elapsed().as_secs_f64());
    assert!(settled, "states did not settle within 30 s\n{report}");
    assert!(!bad, "final FLAGS differ between the C and the Rust module:\n{report}");
}

// ---------------------------------------------------------------------------------------
// 7. State across dispatcher.reload (deliberate difference)
// ---------------------------------------------------------------------------------------

/// Rust: runtime state survives `dispatcher.reload` for destinations that stay with the
/// same file flags; a destination whose file flags changed takes the new flags. The C
/// module resets every destination to its file flags (checked too, as documentation).
#[test]
fn reload_keeps_runtime_state() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("health-reload");
    let ok = Backend::start(&dir, "ok", Behaviour::Ok200);
    let d1 = format!("sip:127.0.0.1:{}", Backend::dead_port());
    let d2 = format!("sip:127.0.0.1:{}", Backend::dead_port());
    let d3 = format!("sip:127.0.0.1:{}", Backend::dead_port());
    let uo = ok.uri();
    let list = format!("1 {d1} 0 0\n1 {uo} 0 0\n1 {d2} 0 0\n");
    let extra = modparams(&[("ds_probing_mode", "1"), ("ds_probing_threshold", "2")]);
    let k = Kamailio::start(&dir, "kam", kind, &health_opts(kind, &list, &extra));
    let mut rec = StateRecorder::new();
    rec.until(&k, Duration::from_secs(20), "dead ones IP", |m| {
        get(m, &d1) == "IP" && get(m, &d2) == "IP" && get(m, &uo) == "AP"
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));

    // d1 and ok stay as they are, d2's file flags change to disabled, d3 is new
    replace_file(&k.list_path, &format!("1 {d1} 0 0\n1 {uo} 0 0\n1 {d2} 4 0\n1 {d3} 0 0\n"));
    let out = kam(&k, &["dispatcher.reload"]);
    assert_eq!(out.trim(), "Ok. Dispatcher successfully reloaded.");
    let m = flags_map(&k);
    println!("[health] {} module: flags right after reload: {m:?}", kind.name());
    assert_eq!(get(&m, &d2), "DX", "changed file flags are applied");
    assert!(matches!(get(&m, &d3), "AX" | "TP"), "new destination: {m:?}");
    match kind {
        ModuleKind::Rust => {
            assert_eq!(get(&m, &d1), "IP", "Rust: runtime state kept across reload: {m:?}");
            assert_eq!(get(&m, &uo), "AP", "Rust: runtime state kept across reload: {m:?}");
            // and it stays so (no reset a moment later)
            rec.watch(&k, Duration::from_millis(1500));
            assert_eq!(get(&rec.last, &d1), "IP", "{}", rec.dump());
            assert_eq!(get(&rec.last, &uo), "AP", "{}", rec.dump());
        }
        ModuleKind::C => {
            // 5.6.3 resets to the file flags (a second timeout is needed before IP again)
            assert!(matches!(get(&m, &d1), "AX" | "TP"), "C: state reset by reload expected: {m:?}");
            assert!(matches!(get(&m, &uo), "AX" | "AP"), "C: state reset by reload expected: {m:?}");
        }
    }
    rec.until(&k, Duration::from_secs(20), "new dead destination IP", |m| get(m, &d3) == "IP")
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log_hint()));
    assert_eq!(get(&rec.last, &d2), "DX", "disabled destinations are not pinged\n{}", rec.dump());
}
