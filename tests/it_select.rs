//! Selection-side parity through a real Kamailio (tests/data/select.cfg.tmpl):
//!
//! * `ds_is_from_list` mode bit 8 (socket) and bit 16 (best match; the 5.8.x and the
//!   6.0.2+ variant), compared with the C module of the Kamailio under test, and with fixed
//!   expectations per version (5.6.3 ignores both bits);
//! * `SND_F_FORCE_SOCKET` with a destination's `socket` (a TCP connection to the backend
//!   starts from that socket's address), compared with the C module;
//! * algorithm 15 (Kamailio master: priority, then weight), checked against its semantics
//!   (no C module of a supported release has it);
//! * `ds_dns_match_all` (Kamailio master), in a private mount namespace whose `/etc/hosts`
//!   gives one name three addresses (needs root and `unshare`); with the parameter off the
//!   result is compared with the C module.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `c`. The tests of features no C
//! module has (algorithm 15, `ds_dns_match_all` 1) say so and return early for `c`.

mod common;

use common::*;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TMPL: &str = include_str!("data/select.cfg.tmpl");

/// Test options for the select template: `port2` is the second UDP port (and the TCP port
/// on 127.0.0.2); `{{PORT2}}` in the list is replaced too.
fn sel_opts(list: &str, port2: u16, extra: &str) -> KamOpts {
    KamOpts {
        list: list.replace("{{PORT2}}", &port2.to_string()),
        extra_params: extra.to_string(),
        cfg_template: Some(TMPL.replace("{{PORT2}}", &port2.to_string())),
        ..KamOpts::default()
    }
}

/// One `ds_is_from_list` call: from `src` to Kamailio's `to` port (1 = the main port,
/// 2 = the second one), with the request headers that select the form.
struct Call<'a> {
    what: &'a str,
    src: &'a UdpSocket,
    to: u8,
    hdrs: Vec<(&'static str, String)>,
}

/// (X-Ret, X-Setid, X-Attrs) of a call.
fn isfrom(kam: &Kamailio, port2: u16, c: &Call<'_>) -> (String, String, String) {
    let port = if c.to == 2 { port2 } else { kam.port };
    let hdrs: Vec<(&str, &str)> = c.hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = sip_request_on(c.src, port, "OPTIONS", "isfrom", &hdrs, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", c.what, kam.log_hint()));
    assert_eq!(r.status, 200, "{}: {}\n{}", c.what, r.raw, kam.log_hint());
    (r.hdr("X-Ret").to_string(), r.hdr("X-Setid").to_string(), tag_of(r.hdr("X-Attrs")))
}

/// The `tag` of an attrs body (the socket attrs differ between the two Kamailios), or the
/// value itself ("unset").
fn tag_of(attrs: &str) -> String {
    attrs.split(';').find_map(|p| p.strip_prefix("tag=")).unwrap_or(attrs).to_string()
}

fn port_of(s: &UdpSocket) -> u16 {
    s.local_addr().expect("local_addr").port()
}

fn g(v: &str) -> (&'static str, String) {
    ("X-Group", v.to_string())
}
fn m(v: i32) -> (&'static str, String) {
    ("X-Mode", v.to_string())
}
fn u(v: String) -> (&'static str, String) {
    ("X-Uri", v)
}

#[test]
fn is_from_list_socket_and_best_match_modes() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("is_from_list_socket_and_best_match_modes");
    let (sa, sb, sc, sd, sx) = (bound_socket(), bound_socket(), bound_socket(), bound_socket(), bound_socket());
    let (pa, pb, pc, pd) = (port_of(&sa), port_of(&sb), port_of(&sc), port_of(&sd));
    // every destination is on 127.0.0.1 (so group -1 sees all of them); priorities fix the
    // array order; every URI has a transport (6.1's defaulting changes nothing here)
    let list = format!(
        "1 sip:127.0.0.1;transport=udp 0 9 tag=ip\n\
         1 sip:127.0.0.1:{pa};transport=udp 0 8 tag=portproto\n\
         1 sip:127.0.0.1:{pa};transport=udp;x=full 0 7 socket=udp:127.0.0.1:{{{{PORT2}}}};tag=full\n\
         1 sip:127.0.0.1;transport=tcp 0 6 socket=udp:127.0.0.1:{{{{PORT2}}}};tag=tcpsock\n\
         2 sip:127.0.0.1:{pb};transport=udp 0 9 socket=udp:127.0.0.1:{{{{PORT2}}}};tag=s2\n\
         2 sip:127.0.0.1:{pb};transport=udp;x=nosock 0 8 tag=nosock\n\
         3 sip:127.0.0.1:{pc};transport=udp 0 0 socket=udp:127.0.0.1:{{{{PORT2}}}};tag=only\n\
         4 sip:127.0.0.1:{pd};transport=udp 1 9 socket=udp:127.0.0.1:{{{{PORT2}}}};tag=inact\n\
         4 sip:127.0.0.1:{pd};transport=udp;x=act 0 8 tag=act\n"
    );
    let v58 = kam_at_least(5, 8, 0);
    let v602 = kam_at_least(6, 0, 2);
    // (call, expected (ret, setid, attrs)): `pick(a, b, c)` = 6.0.2+, 5.8.x, 5.6/5.7
    let pick = |new: &'static str, v58x: &'static str, old: &'static str| if v602 { new } else if v58 { v58x } else { old };
    let one = |attrs: &'static str| ("1", "unset", attrs);
    let none = ("-1", "unset", "unset");
    #[rustfmt::skip]
    let cases: Vec<(Call<'_>, (&str, &str, &str))> = vec![
        // mode 16 in set 1: address 1, port 2, proto 4, socket 8
        (Call { what: "16: port+proto on S1", src: &sa, to: 1, hdrs: vec![g("1"), m(16)] }, one(pick("portproto", "portproto", "ip"))),
        (Call { what: "16: full match on S2", src: &sa, to: 2, hdrs: vec![g("1"), m(16)] }, one(pick("full", "full", "ip"))),
        (Call { what: "16: other port on S1", src: &sx, to: 1, hdrs: vec![g("1"), m(16)] }, one("ip")),
        (Call { what: "16: other port on S2 (5.8 drops mismatches)", src: &sx, to: 2, hdrs: vec![g("1"), m(16)] }, one(pick("full", "ip", "ip"))),
        (Call { what: "16|8: other port on S2", src: &sx, to: 2, hdrs: vec![g("1"), m(24)] }, one(pick("full", "ip", "ip"))),
        (Call { what: "16|8: port on S1, socket dsts out", src: &sa, to: 1, hdrs: vec![g("1"), m(24)] }, one(pick("portproto", "portproto", "ip"))),
        (Call { what: "16|3: bits 1, 2 change nothing", src: &sx, to: 2, hdrs: vec![g("1"), m(19)] }, one(pick("full", "ip", "ip"))),
        (Call { what: "16, URI on S1", src: &sx, to: 1, hdrs: vec![g("1"), m(16), u(format!("sip:127.0.0.1:{pa};transport=udp"))] }, one(pick("portproto", "portproto", "ip"))),
        (Call { what: "16, URI on S2", src: &sx, to: 2, hdrs: vec![g("1"), m(16), u(format!("sip:127.0.0.1:{pa};transport=udp"))] }, one(pick("full", "full", "ip"))),
        // mode 8: a destination with a socket matches only on that socket
        (Call { what: "8: on S1 skips the socket dst", src: &sb, to: 1, hdrs: vec![g("2"), m(8)] }, one(pick("nosock", "nosock", "s2"))),
        (Call { what: "8: on S2", src: &sb, to: 2, hdrs: vec![g("2"), m(8)] }, one("s2")),
        (Call { what: "10: on S1", src: &sb, to: 1, hdrs: vec![g("2"), m(10)] }, one(pick("nosock", "nosock", "s2"))),
        (Call { what: "0: socket ignored", src: &sb, to: 1, hdrs: vec![g("2"), m(0)] }, one("s2")),
        (Call { what: "8: only a socket dst, on S1", src: &sc, to: 1, hdrs: vec![g("3"), m(8)] }, if v58 { none } else { one("only") }),
        (Call { what: "8: only a socket dst, on S2", src: &sc, to: 2, hdrs: vec![g("3"), m(8)] }, one("only")),
        // bit 4 still filters with 16
        (Call { what: "20: inactive full match skipped", src: &sd, to: 2, hdrs: vec![g("4"), m(20)] }, one("act")),
        (Call { what: "16: inactive full match", src: &sd, to: 2, hdrs: vec![g("4"), m(16)] }, one("inact")),
        // all groups: the walk order of the C module, setid exported
        (Call { what: "-1/16: full match in set 1", src: &sa, to: 2, hdrs: vec![g("-1"), m(16)] }, ("1", "1", pick("full", "full", "ip"))),
        (Call { what: "-1/24: best over every set", src: &sb, to: 1, hdrs: vec![g("-1"), m(24)] }, if v58 { ("1", "2", "nosock") } else { ("1", "1", "ip") }),
        (Call { what: "-1/16: other port on S2", src: &sx, to: 2, hdrs: vec![g("-1"), m(16)] }, ("1", "1", pick("full", "ip", "ip"))),
        (Call { what: "-1/8: S1, first in the walk", src: &sc, to: 1, hdrs: vec![g("-1"), m(8)] }, ("1", "1", "ip")),
    ];

    // the module under test and the C module of this Kamailio, with the same list
    let p2 = free_port();
    let kam = Kamailio::start(&dir, "kamailio", kind, &sel_opts(&list, p2, ""));
    let c_p2 = free_port();
    let ckam = Kamailio::start(&dir, "kamailio-c", ModuleKind::C, &sel_opts(&list, c_p2, ""));
    let mut failures = Vec::new();
    for (c, want) in &cases {
        let got = isfrom(&kam, p2, c);
        let cgot = isfrom(&ckam, c_p2, c);
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        if got != want || got != cgot {
            failures.push(format!(
                "{}: from port {} to {}: {:?}: got {:?}, C module {:?}, want {:?}",
                c.what,
                port_of(c.src),
                if c.to == 2 { "S2" } else { "S1" },
                c.hdrs,
                got,
                cgot,
                want
            ));
        }
    }
    assert!(failures.is_empty(), "ds_is_from_list mismatches ({} module):\n{}\n{}", kind.name(), failures.join("\n"), kam.log_hint());
}

/// Accepts one TCP connection on `l` within `timeout`: the peer's address.
fn accept_peer(l: &TcpListener, timeout: Duration) -> Option<SocketAddr> {
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((mut s, a)) => {
                // read what arrives, so Kamailio's send completes
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b);
                return Some(a);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    }
}

/// Forwards one request to a TCP backend through `kind`'s module; the source address of the
/// connection Kamailio opened, and the `$fs` it had.
fn forwarded_from(dir: &Path, label: &str, kind: ModuleKind, with_socket: bool) -> (IpAddr, String) {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind tcp backend");
    let bp = backend.local_addr().expect("addr").port();
    let p2 = free_port();
    let attrs = if with_socket { "socket=tcp:127.0.0.2:{{PORT2}};tag=s" } else { "tag=n" };
    let list = format!("1 sip:127.0.0.1:{bp};transport=tcp 0 0 {attrs}\n");
    let kam = Kamailio::start(dir, label, kind, &sel_opts(&list, p2, ""));
    let r = kam.request("fwd-1-4", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.raw, kam.log_hint());
    let peer = accept_peer(&backend, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{label}: no TCP connection from Kamailio\n{}", kam.log_hint()));
    (peer.ip(), r.hdr("X-Fs").to_string())
}

#[test]
fn forced_socket_sets_send_flag() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("forced_socket_sets_send_flag");
    // the C module sets SND_F_FORCE_SOCKET from 5.6.5, 5.7.1 and 5.8.0 on
    let flag = kam_at_least(5, 7, 1) || (kam_at_least(5, 6, 5) && !kam_at_least(5, 7, 0));
    let want_src: IpAddr = if flag { "127.0.0.2".parse().expect("ip") } else { "127.0.0.1".parse().expect("ip") };
    let (src, fs) = forwarded_from(&dir, "sock", kind, true);
    let (c_src, c_fs) = forwarded_from(&dir, "sock-c", ModuleKind::C, true);
    assert!(fs.starts_with("tcp:127.0.0.2:"), "$fs with the socket attr: {fs}");
    assert!(c_fs.starts_with("tcp:127.0.0.2:"), "C module $fs: {c_fs}");
    assert_eq!(src, want_src, "TCP source with the socket attr ({} module; C module: {c_src})", kind.name());
    assert_eq!(src, c_src, "TCP source: {} module vs C module", kind.name());
    // no socket: nothing forced, the kernel's source
    let (src, fs) = forwarded_from(&dir, "nosock", kind, false);
    assert_eq!(src, "127.0.0.1".parse::<IpAddr>().expect("ip"), "TCP source without a socket attr");
    assert_eq!(fs, "<null>", "$fs without a socket attr");
}

/// `X-Repeat` selections of `sel-<set>-15`: how many went to each `$du`, and the failover
/// records of the last one.
fn alg15_counts(kam: &Kamailio, set: i32, n: usize) -> (std::collections::BTreeMap<String, usize>, Vec<String>) {
    let r = kam.request(&format!("sel-{set}-15"), &[("X-Repeat", &n.to_string())]);
    assert_eq!(r.status, 200, "{}\n{}", r.raw, kam.log_hint());
    let sels = r.headers_all("X-Sel");
    assert_eq!(sels.len(), n, "{}", r.raw);
    let mut counts = std::collections::BTreeMap::new();
    for s in sels {
        let (ret, du) = s.split_once(' ').unwrap_or((s, ""));
        assert_eq!(ret, "1", "selection failed: {s}\n{}", kam.log_hint());
        *counts.entry(du.to_string()).or_insert(0) += 1;
    }
    (counts, r.headers_all("X-Dsdst").iter().map(|s| s.to_string()).collect())
}

fn counts_of(pairs: &[(&str, usize)]) -> std::collections::BTreeMap<String, usize> {
    pairs.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn alg15_priority_then_weight() {
    let kind = ModuleKind::from_env();
    if kind == ModuleKind::C {
        eprintln!("alg15_priority_then_weight: no C module of a supported release has algorithm 15 (Kamailio master only); nothing to run");
        return;
    }
    let dir = run_dir("alg15_priority_then_weight");
    let (p1, p2, p3, q1, q2, q3) = (free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
    let (a, b, c) = (format!("sip:127.0.0.1:{p1}"), format!("sip:127.0.0.1:{p2}"), format!("sip:127.0.0.1:{p3}"));
    let (qa, qb, qc) = (format!("sip:127.0.0.1:{q1}"), format!("sip:127.0.0.1:{q2}"), format!("sip:127.0.0.1:{q3}"));
    // array order: priority descending, equal priorities in reverse file order:
    // set 15 = [c (prio 2), b (prio 1, weight 70), a (prio 1, weight 30)]
    let list = format!(
        "15 {a} 0 1 weight=30\n\
         15 {b} 0 1 weight=70\n\
         15 {c} 0 2 weight=90\n\
         16 {qa} 0 1 weight=30;rweight=1\n\
         16 {qb} 0 1 weight=70;rweight=1\n\
         16 {qc} 0 2 weight=90;rweight=1\n\
         17 sip:127.0.0.1:{p1};x=1 0 5\n\
         17 sip:127.0.0.1:{p1};x=2 0 5\n\
         17 sip:127.0.0.1:{p1};x=3 0 5\n\
         17 sip:127.0.0.1:{p1};x=4 0 9\n"
    );
    let p2k = free_port();
    let kam = Kamailio::start(&dir, "kamailio", kind, &sel_opts(&list, p2k, ""));

    // the lowest priority value wins; its destinations split 100 selections by weight,
    // exactly (the cursor walks the 100 slots)
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&b, 70), (&a, 30)]), "alg 15, first 100 selections");
    let (cnt, _) = alg15_counts(&kam, 15, 200);
    assert_eq!(cnt, counts_of(&[(&b, 140), (&a, 60)]), "alg 15, next 200 selections");
    // failover records: the generic ones (selected, then the following ones in array order)
    let (_, recs1) = alg15_counts(&kam, 15, 1);
    let want_recs = if recs1.first() == Some(&b) { vec![b.clone(), a.clone(), c.clone()] } else { vec![a.clone(), c.clone(), b.clone()] };
    assert_eq!(recs1, want_recs, "alg 15 failover records");
    // weights 0 at the best level: equal split, the last in array order takes the rest
    let (cnt, _) = alg15_counts(&kam, 17, 300);
    let x = |i: u32| format!("sip:127.0.0.1:{p1};x={i}");
    // array [x4 (prio 9), x3, x2, x1]; best = 5: x3 33, x2 33, x1 34 per 100
    assert_eq!(cnt, counts_of(&[(&x(3), 99), (&x(2), 99), (&x(1), 102)]), "alg 15, equal split");

    // a state change without rweight does not rebuild the table: the slots of the
    // inactive destination go to the next index in array order (a -> index 0 = c)
    kam.kamcmd(&["dispatcher.set_state", "ip", "15", &a]).expect("set_state");
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&b, 70), (&c, 30)]), "alg 15 after marking a inactive (no rweight)");
    // a reload rebuilds it from the state kept across the reload: b takes every slot
    kam.kamcmd(&["dispatcher.reload"]).expect("reload");
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&b, 100)]), "alg 15 after reload (a still inactive)");
    // back to active: no rebuild without rweight (b keeps every slot) until the next reload
    kam.kamcmd(&["dispatcher.set_state", "a", "15", &a]).expect("set_state");
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&b, 100)]), "alg 15 after marking a active (no rweight)");
    kam.kamcmd(&["dispatcher.reload"]).expect("reload");
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&b, 70), (&a, 30)]), "alg 15 after the second reload");
    // whole best level down: the next priority level after a rebuild
    kam.kamcmd(&["dispatcher.set_state", "ip", "15", &b]).expect("set_state");
    kam.kamcmd(&["dispatcher.set_state", "ip", "15", &a]).expect("set_state");
    kam.kamcmd(&["dispatcher.reload"]).expect("reload");
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&c, 100)]), "alg 15, best level down, after reload");
    // dispatcher.add rebuilds it too: a new prio-0 destination takes everything
    kam.kamcmd(&["dispatcher.add", "15", &format!("sip:127.0.0.1:{q1}"), "0", "0"]).expect("add");
    let (cnt, _) = alg15_counts(&kam, 15, 100);
    assert_eq!(cnt, counts_of(&[(&qa, 100)]), "alg 15 after dispatcher.add of a priority-0 destination");
    let _ = (qb, qc);
}

/// With `rweight` > 0 a usability change rebuilds the alg-15 table at once (as it does the
/// alg-11 table). Needs `cmds::rebuild_pwlist` called next to `health::rebuild_rweights`.
#[test]
fn alg15_rebuilt_on_state_change_with_rweight() {
    let kind = ModuleKind::from_env();
    if kind == ModuleKind::C {
        eprintln!("alg15_rebuilt_on_state_change_with_rweight: no C module has algorithm 15; nothing to run");
        return;
    }
    let dir = run_dir("alg15_rebuilt_on_state_change_with_rweight");
    let (q1, q2, q3) = (free_port(), free_port(), free_port());
    let (qa, qb, qc) = (format!("sip:127.0.0.1:{q1}"), format!("sip:127.0.0.1:{q2}"), format!("sip:127.0.0.1:{q3}"));
    let list = format!(
        "16 {qa} 0 1 weight=30;rweight=1\n\
         16 {qb} 0 1 weight=70;rweight=1\n\
         16 {qc} 0 2 weight=90;rweight=1\n"
    );
    let kam = Kamailio::start(&dir, "kamailio", kind, &sel_opts(&list, free_port(), ""));
    let (cnt, _) = alg15_counts(&kam, 16, 100);
    assert_eq!(cnt, counts_of(&[(&qb, 70), (&qa, 30)]), "alg 15 with rweight, at load");
    kam.kamcmd(&["dispatcher.set_state", "ip", "16", &qa]).expect("set_state");
    let (cnt, _) = alg15_counts(&kam, 16, 100);
    assert_eq!(cnt, counts_of(&[(&qb, 100)]), "alg 15 with rweight, a inactive: rebuilt at once");
    kam.kamcmd(&["dispatcher.set_state", "a", "16", &qa]).expect("set_state");
    let (cnt, _) = alg15_counts(&kam, 16, 100);
    assert_eq!(cnt, counts_of(&[(&qb, 70), (&qa, 30)]), "alg 15 with rweight, a active again: rebuilt at once");
    // cfg marks too (ds_mark_addr is 6.1; the RPC is on every version)
    kam.kamcmd(&["dispatcher.set_state", "ip", "16", &qb]).expect("set_state");
    kam.kamcmd(&["dispatcher.set_state", "ip", "16", &qa]).expect("set_state");
    let (cnt, _) = alg15_counts(&kam, 16, 100);
    assert_eq!(cnt, counts_of(&[(&qc, 100)]), "alg 15 with rweight, best level down: next level at once");
}

// ---- ds_dns_match_all: Kamailio in a mount namespace with its own /etc/hosts --------------

/// A Kamailio started with `unshare -m` and `/etc/hosts` bind-mounted from `hosts`.
struct NsKam {
    proc_: Proc,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    ctl: PathBuf,
}

impl NsKam {
    fn start(parent: &Path, label: &str, kind: ModuleKind, list: &str, extra: &str, hosts: &Path) -> NsKam {
        let dir = parent.join(label);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let port = free_port();
        let port2 = free_port();
        let list_path = dir.join("dispatcher.list");
        write_file(&list_path, &list.replace("{{PORT}}", &port.to_string()));
        let ctl = ctl_socket_path(&dir);
        let cfg = render(
            &TMPL.replace("{{PORT2}}", &port2.to_string()),
            &[
                ("DEBUG", "2".to_string()),
                ("CHILDREN", "2".to_string()),
                ("PORT", port.to_string()),
                ("DISPATCHER_SO", kind.so_path().display().to_string()),
                ("FR_TIMER", "1000".to_string()),
                ("FR_INV_TIMER", "3000".to_string()),
                ("RUNDIR", dir.display().to_string()),
                ("LIST_FILE", list_path.display().to_string()),
                ("EXTRA_PARAMS", extra.to_string()),
            ],
        )
        .replace(&format!("unix:{}/kamailio_ctl", dir.display()), &format!("unix:{}", ctl.display()));
        let cfg_path = dir.join("kamailio.cfg");
        write_file(&cfg_path, &cfg);
        let log = dir.join("kamailio.log");
        let _ = std::fs::remove_file(&ctl);
        let mut cmd = Command::new("unshare");
        cmd.arg("-m")
            .arg("sh")
            .arg("-c")
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(hosts)
            .arg(&*KAMAILIO_BIN)
            .args(["-DD", "-E", "-f"])
            .arg(&cfg_path)
            .arg("-w")
            .arg(&dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .args(["-m", "64", "-M", "8", "-L"])
            .arg(&*MODULES_DIR)
            .current_dir(&dir)
            .stdout(Stdio::from(std::fs::File::create(dir.join("kamailio.stdout")).expect("stdout")))
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
        let mut proc_ = Proc::spawn(label, &mut cmd).expect("spawn unshare kamailio");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = proc_.try_wait() {
                panic!(
                    "kamailio in a mount namespace ({label}) exited with {st} (needs root and unshare)\n{}",
                    tail(&log, 30)
                );
            }
            if ctl.exists() {
                if let Ok(r) = sip_request(None, port, "OPTIONS", "probe", &[], Duration::from_millis(300)) {
                    if r.status == 404 {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "kamailio ({label}) not ready\n{}", tail(&log, 30));
            std::thread::sleep(Duration::from_millis(50));
        }
        NsKam { proc_, port, dir, log, ctl }
    }

    fn hint(&self) -> String {
        format!("run dir {}\n{}", self.dir.display(), tail(&self.log, 30))
    }

    /// (X-Ret, X-Attrs) of ds_is_from_list(group, mode[, uri]) sent from `src`.
    fn isfrom(&self, src: &UdpSocket, group: i32, mode: i32, uri: Option<&str>) -> (String, String) {
        let (gs, ms) = (group.to_string(), mode.to_string());
        let mut h = vec![("X-Group", gs.as_str()), ("X-Mode", ms.as_str())];
        if let Some(u) = uri {
            h.push(("X-Uri", u));
        }
        let r = sip_request_on(src, self.port, "OPTIONS", "isfrom", &h, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("isfrom: {e}\n{}", self.hint()));
        (r.hdr("X-Ret").to_string(), r.hdr("X-Attrs").to_string())
    }
}

impl Drop for NsKam {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[it] {}", self.hint());
        }
        self.proc_.stop(Duration::from_secs(5));
        let _ = std::fs::remove_file(&self.ctl);
    }
}

/// A UDP socket on `ip` with a port free there.
fn socket_on(ip: &str) -> UdpSocket {
    for _ in 0..50 {
        if let Ok(s) = UdpSocket::bind((ip, free_port())) {
            return s;
        }
    }
    panic!("cannot bind a UDP socket on {ip}");
}

const HOSTS3: &str = "127.0.0.1 localhost\n127.0.0.3 dsmulti.test\n127.0.0.4 dsmulti.test\n127.0.0.5 dsmulti.test\n";

#[test]
fn dns_match_all_off_is_unchanged() {
    // the default (0): only the first address of a name counts, as every C module
    let kind = ModuleKind::from_env();
    let dir = run_dir("dns_match_all_off_is_unchanged");
    let hosts = dir.join("hosts");
    write_file(&hosts, HOSTS3);
    let (s3, s4, s5) = (socket_on("127.0.0.3"), socket_on("127.0.0.4"), socket_on("127.0.0.5"));
    let list = "1 sip:dsmulti.test 0 0 tag=multi\n2 sip:127.0.0.4 0 0 tag=four\n";
    let uri = "sip:dsmulti.test";
    let calls: Vec<(&str, &UdpSocket, i32, Option<&str>)> = vec![
        ("first address", &s3, 1, None),
        ("second address", &s4, 1, None),
        ("third address", &s5, 1, None),
        ("uri, its first address in set 1", &s5, 1, Some(uri)),
        ("uri, second address in set 2", &s5, 2, Some(uri)),
    ];
    let want = [("1", "tag=multi"), ("-1", "unset"), ("-1", "unset"), ("1", "tag=multi"), ("-1", "unset")];
    let kam = NsKam::start(&dir, "kamailio", kind, list, "", &hosts);
    let ckam = NsKam::start(&dir, "kamailio-c", ModuleKind::C, list, "", &hosts);
    for (i, (what, src, group, uri)) in calls.iter().enumerate() {
        let got = kam.isfrom(src, *group, 2, *uri);
        let cgot = ckam.isfrom(src, *group, 2, *uri);
        let want = (want[i].0.to_string(), want[i].1.to_string());
        assert_eq!(got, want, "{what} ({} module)\n{}", kind.name(), kam.hint());
        assert_eq!(got, cgot, "{what}: {} module vs C module", kind.name());
    }
}

#[test]
fn dns_match_all_on() {
    let kind = ModuleKind::from_env();
    if kind == ModuleKind::C {
        eprintln!("dns_match_all_on: no C module of a supported release has ds_dns_match_all (Kamailio master only); nothing to run");
        return;
    }
    let dir = run_dir("dns_match_all_on");
    let hosts = dir.join("hosts");
    write_file(&hosts, HOSTS3);
    let (s3, s4, s5, s6) = (socket_on("127.0.0.3"), socket_on("127.0.0.4"), socket_on("127.0.0.5"), socket_on("127.0.0.6"));
    let list = "1 sip:dsmulti.test 0 0 tag=multi\n2 sip:127.0.0.4 0 0 tag=four\n";
    let uri = "sip:dsmulti.test";

    // addresses stored at load (ds_dns_mode 1), and the URI argument's addresses tried in turn
    let kam = NsKam::start(&dir, "stored", kind, list, "modparam(\"dispatcher\", \"ds_dns_match_all\", 1)\n", &hosts);
    assert_eq!(kam.isfrom(&s3, 1, 2, None), ("1".into(), "tag=multi".into()), "first address\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s4, 1, 2, None), ("1".into(), "tag=multi".into()), "second address\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s5, -1, 2, None), ("1".into(), "tag=multi".into()), "third address, all groups\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s6, 1, 2, None), ("-1".into(), "unset".into()), "not an address of the name\n{}", kam.hint());
    // 127.0.0.4 is in both sets
    assert_eq!(kam.isfrom(&s4, 2, 2, None), ("1".into(), "tag=four".into()), "set 2\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s6, 2, 2, Some(uri)), ("1".into(), "tag=four".into()), "uri: second address matches set 2\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s6, 1, 2, Some(uri)), ("1".into(), "tag=multi".into()), "uri: set 1\n{}", kam.hint());
    drop(kam);

    // ds_dns_mode 2: every result of the live lookup is compared
    let kam = NsKam::start(
        &dir,
        "live",
        kind,
        list,
        "modparam(\"dispatcher\", \"ds_dns_match_all\", 1)\nmodparam(\"dispatcher\", \"ds_dns_mode\", 2)\n",
        &hosts,
    );
    assert_eq!(kam.isfrom(&s5, 1, 2, None), ("1".into(), "tag=multi".into()), "live lookup, third address\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s6, 1, 2, None), ("-1".into(), "unset".into()), "live lookup, other address\n{}", kam.hint());
    // the answer changes: the next request sees it (nss_files reads the file each time;
    // written in place so the bind mount shows it)
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.3 dsmulti.test\n127.0.0.6 dsmulti.test\n").expect("rewrite hosts");
    assert_eq!(kam.isfrom(&s6, 1, 2, None), ("1".into(), "tag=multi".into()), "live lookup after the change\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s5, 1, 2, None), ("-1".into(), "unset".into()), "live lookup after the change, old address\n{}", kam.hint());
    drop(kam);

    // ds_dns_mode 4 (+1): the DNS timer stores every address again
    std::fs::write(&hosts, HOSTS3).expect("rewrite hosts");
    let kam = NsKam::start(
        &dir,
        "timer",
        kind,
        list,
        "modparam(\"dispatcher\", \"ds_dns_match_all\", 1)\nmodparam(\"dispatcher\", \"ds_dns_mode\", 5)\nmodparam(\"dispatcher\", \"ds_dns_interval\", 1)\n",
        &hosts,
    );
    assert_eq!(kam.isfrom(&s5, 1, 2, None), ("1".into(), "tag=multi".into()), "timer mode, at load\n{}", kam.hint());
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.6 dsmulti.test\n127.0.0.4 dsmulti.test\n").expect("rewrite hosts");
    let ok = wait_until(Duration::from_secs(6), Duration::from_millis(200), || kam.isfrom(&s6, 1, 2, None).0 == "1");
    assert!(ok, "the DNS timer did not store the new first address\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s4, 1, 2, None), ("1".into(), "tag=multi".into()), "timer: second new address\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s5, 1, 2, None), ("-1".into(), "unset".into()), "timer: old address gone\n{}", kam.hint());
    assert_eq!(kam.isfrom(&s3, 1, 2, None), ("-1".into(), "unset".into()), "timer: old first address gone\n{}", kam.hint());
}
