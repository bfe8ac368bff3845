//! Routing behaviour through a real Kamailio: round-robin distribution, serial failover on
//! 5xx and on a dead backend, ds_is_from_list(), and the failover XAVP records.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default; target/release/dispatcher.so or
//! $DS_RUST_MODULE) or `DS_TEST_MODULE=c` (Debian's C module, the reference).

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Wait (bounded) until the backends' message logs show `total` distinct INVITEs.
fn wait_invites(uas: &[SippUas], total: usize) -> Vec<usize> {
    let mut counts = Vec::new();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        counts = uas.iter().map(|u| u.invites()).collect();
        counts.iter().sum::<usize>() >= total
    });
    counts
}

fn failover_lines(kam: &Kamailio) -> usize {
    kam.log_text().lines().filter(|l| l.contains("FAILOVER ") && l.contains(" -> ")).count()
}

#[test]
fn round_robin_even_split() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("round_robin_even_split");
    let uas: Vec<SippUas> = (0..4).map(|i| SippUas::start(&dir, &format!("uas{i}"), UasKind::Ok200)).collect();
    let list: String = uas.iter().map(|u| format!("1 {}\n", u.uri())).collect();
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));

    let res = run_uac(&dir, "uac", kam.port, "rr", 400, 100, Duration::from_secs(60));
    assert_eq!(res.failed, 0, "{}\n{}", res.summary(), kam.log_hint());
    assert_eq!(res.successful, 400, "{}\n{}", res.summary(), kam.log_hint());
    assert_eq!(res.exit_code, Some(0), "{}", res.summary());

    let counts = wait_invites(&uas, 400);
    eprintln!("round robin: INVITEs per backend {counts:?} ({})", res.summary());
    assert_eq!(counts, vec![100, 100, 100, 100], "round-robin over 4 backends must give exactly 100 calls each");
    // every call completed at its backend (ACK and BYE went through the proxy)
    for u in &uas {
        assert_eq!(u.requests("BYE"), 100, "backend {} BYEs", u.label);
    }
    assert_eq!(failover_lines(&kam), 0, "no failover expected");
}

#[test]
fn failover_on_500() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("failover_on_500");
    let ok: Vec<SippUas> = (0..3).map(|i| SippUas::start(&dir, &format!("ok{i}"), UasKind::Ok200)).collect();
    let bad = SippUas::start(&dir, "err500", UasKind::Err500);
    let list = format!("1 {}\n1 {}\n1 {}\n1 {}\n", ok[0].uri(), bad.uri(), ok[1].uri(), ok[2].uri());
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));

    let calls = 200;
    let res = run_uac(&dir, "uac", kam.port, "rr", calls, 100, Duration::from_secs(60));
    assert_eq!(res.failed, 0, "{}\n{}", res.summary(), kam.log_hint());
    assert_eq!(res.successful, calls as u64, "{}", res.summary());
    assert_eq!(res.exit_code, Some(0), "{}", res.summary());

    let ok_counts = wait_invites(&ok, calls as usize);
    let bad_count = bad.invites();
    eprintln!("failover on 500: ok backends {ok_counts:?}, 500 backend {bad_count} ({})", res.summary());
    // round-robin first choices are exact, so the 500 backend gets exactly its share ...
    assert_eq!(bad_count, calls as usize / 4, "the 500 backend must still receive its round-robin share");
    assert_eq!(bad.requests("ACK"), calls as usize / 4, "the proxy ACKs every 500");
    // ... and each of those calls was moved to another backend by ds_next_dst()
    assert_eq!(ok_counts.iter().sum::<usize>(), calls as usize, "every call answered by a 200 backend exactly once");
    for (i, c) in ok_counts.iter().enumerate() {
        assert!(*c >= calls as usize / 4, "backend ok{i} got {c} calls, less than its share");
    }
    assert_eq!(failover_lines(&kam), calls as usize / 4, "one failover per call that hit the 500 backend");
}

#[test]
fn failover_on_dead_backend() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("failover_on_dead_backend");
    let ok: Vec<SippUas> = (0..3).map(|i| SippUas::start(&dir, &format!("ok{i}"), UasKind::Ok200)).collect();
    let dead_port = free_port(); // reserved in this process, nothing listens there
    assert!(!udp_port_in_use(dead_port));
    let list = format!(
        "1 {}\n1 sip:127.0.0.1:{dead_port}\n1 {}\n1 {}\n",
        ok[0].uri(),
        ok[1].uri(),
        ok[2].uri()
    );
    let opts = KamOpts { fr_timer_ms: 1000, fr_inv_timer_ms: 2000, ..KamOpts::with_list(&list) };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);

    let calls = 40;
    let res = run_uac(&dir, "uac", kam.port, "rr", calls, 20, Duration::from_secs(40));
    eprintln!("failover on dead backend: {}", res.summary());
    assert_eq!(res.failed, 0, "{}\n{}", res.summary(), kam.log_hint());
    assert_eq!(res.successful, calls as u64, "{}", res.summary());
    assert_eq!(res.exit_code, Some(0), "{}", res.summary());
    assert!(res.elapsed < Duration::from_secs(30), "took too long: {}", res.summary());

    let counts = wait_invites(&ok, calls as usize);
    eprintln!("live backends {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), calls as usize);
    for (i, c) in counts.iter().enumerate() {
        assert!(*c >= calls as usize / 4, "backend ok{i} got {c} calls, less than its share");
    }
    // the calls whose first choice was the dead backend timed out there and failed over
    assert_eq!(failover_lines(&kam), calls as usize / 4, "one timeout failover per call that hit the dead backend");
}

#[test]
fn is_from_list_true_false() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("is_from_list_true_false");
    // the test client's source ports, bound for the whole test
    let (sa, sb, sc, sx) = (bound_socket(), bound_socket(), bound_socket(), bound_socket());
    let port_of = |s: &UdpSocket| s.local_addr().expect("local_addr").port();
    let pa = port_of(&sa); // set 1, no transport
    let pb = port_of(&sb); // set 2, ;transport=udp
    let pc = port_of(&sc); // set 3, inactive
    let px = port_of(&sx); // not in the list
    let list = format!(
        "# ds_is_from_list test list\n\
         1 sip:127.0.0.1:{pa} 0 0 tag=a\n\
         2 sip:127.0.0.1:{pb};transport=udp 0 0 tag=b\n\
         3 sip:127.0.0.1:{pc} 1 0 tag=c\n\
         4 sip:127.0.0.2 0 0 tag=d\n"
    );
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));
    let from = |port: u16| -> Src {
        Src::Sock(match port {
            p if p == pa => &sa,
            p if p == pb => &sb,
            p if p == pc => &sc,
            _ => &sx,
        })
    };

    enum Src<'a> {
        Sock(&'a UdpSocket),
        Addr(SocketAddr),
    }
    impl std::fmt::Display for Src<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Src::Sock(s) => write!(f, "{:?}", s.local_addr()),
                Src::Addr(a) => write!(f, "{a}"),
            }
        }
    }
    // (source, headers, expected X-Ret, X-Setid, X-Attrs)
    struct Case<'a> {
        what: &'a str,
        src: Src<'a>,
        hdrs: Vec<(&'a str, String)>,
        ret: &'a str,
        setid: &'a str,
        attrs: &'a str,
    }
    let g = |v: &str| ("X-Group", v.to_string());
    let m = |v: &str| ("X-Mode", v.to_string());
    let u = |v: String| ("X-Uri", v);
    let v61 = kam_at_least(6, 1, 0);
    let cases = vec![
        Case { what: "no args, listed source", src: from(pa), hdrs: vec![], ret: "1", setid: "1", attrs: "tag=a" },
        Case { what: "no args, unlisted port", src: from(px), hdrs: vec![], ret: "-1", setid: "unset", attrs: "unset" },
        Case { what: "no args, set 2 source", src: from(pb), hdrs: vec![], ret: "1", setid: "2", attrs: "tag=b" },
        Case { what: "no args, port-less dst in set 4", src: Src::Addr("127.0.0.2:0".parse().unwrap()), hdrs: vec![], ret: "1", setid: "4", attrs: "tag=d" },
        Case { what: "group -1 sets setid", src: from(pa), hdrs: vec![g("-1")], ret: "1", setid: "1", attrs: "tag=a" },
        Case { what: "group 1, right set, no setid", src: from(pa), hdrs: vec![g("1")], ret: "1", setid: "unset", attrs: "tag=a" },
        Case { what: "group 2, wrong set", src: from(pa), hdrs: vec![g("2")], ret: "-1", setid: "unset", attrs: "unset" },
        Case { what: "group 4, other IP", src: from(pa), hdrs: vec![g("4")], ret: "-1", setid: "unset", attrs: "unset" },
        Case { what: "group 9 (unknown)", src: from(pa), hdrs: vec![g("9")], ret: "-1", setid: "unset", attrs: "unset" },
        // mode 0: the protocol must match; a destination without ;transport is proto NONE
        // (Kamailio 6.1: an IP destination without ;transport is UDP, so a UDP sender matches)
        Case { what: "mode 0, no transport in dst", src: from(pa), hdrs: vec![g("1"), m("0")], ret: if v61 { "1" } else { "-1" }, setid: "unset", attrs: if v61 { "tag=a" } else { "unset" } },
        Case { what: "mode 0, transport=udp in dst", src: from(pb), hdrs: vec![g("2"), m("0")], ret: "1", setid: "unset", attrs: "tag=b" },
        Case { what: "mode 2 ignores proto", src: from(pa), hdrs: vec![g("1"), m("2")], ret: "1", setid: "unset", attrs: "tag=a" },
        // mode bit 1 ignores the port
        Case { what: "mode 2, other port", src: from(px), hdrs: vec![g("1"), m("2")], ret: "-1", setid: "unset", attrs: "unset" },
        Case { what: "mode 3, other port", src: from(px), hdrs: vec![g("1"), m("3")], ret: "1", setid: "unset", attrs: "tag=a" },
        Case { what: "mode 3, all groups, other port", src: from(px), hdrs: vec![g("-1"), m("3")], ret: "1", setid: "1", attrs: "tag=a" },
        // mode bit 4: inactive destinations do not match
        Case { what: "inactive dst, mode 2", src: from(pc), hdrs: vec![g("3"), m("2")], ret: "1", setid: "unset", attrs: "tag=c" },
        Case { what: "inactive dst, mode 6", src: from(pc), hdrs: vec![g("3"), m("6")], ret: "-1", setid: "unset", attrs: "unset" },
        // uri form: the uri is matched, not the source
        Case { what: "uri form, match, all groups", src: from(px), hdrs: vec![g("-1"), m("0"), u(format!("sip:127.0.0.1:{pa}"))], ret: "1", setid: "1", attrs: "tag=a" },
        Case { what: "uri form, proto udp vs none, mode 0", src: from(px), hdrs: vec![g("-1"), m("0"), u(format!("sip:127.0.0.1:{pa};transport=udp"))], ret: if v61 { "1" } else { "-1" }, setid: if v61 { "1" } else { "unset" }, attrs: if v61 { "tag=a" } else { "unset" } },
        Case { what: "uri form, proto udp vs none, mode 2", src: from(px), hdrs: vec![g("1"), m("2"), u(format!("sip:127.0.0.1:{pa};transport=udp"))], ret: "1", setid: "unset", attrs: "tag=a" },
        Case { what: "uri form, unlisted port", src: from(pa), hdrs: vec![g("-1"), m("2"), u(format!("sip:127.0.0.1:{px}"))], ret: "-1", setid: "unset", attrs: "unset" },
        Case { what: "uri form, set 2", src: from(pa), hdrs: vec![g("2"), m("0"), u(format!("sip:127.0.0.1:{pb};transport=udp"))], ret: "1", setid: "unset", attrs: "tag=b" },
        Case { what: "uri form, port-less dst any port", src: from(pa), hdrs: vec![g("4"), m("0"), u("sip:127.0.0.2:7777".to_string())], ret: "1", setid: "unset", attrs: "tag=d" },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let hdrs: Vec<(&str, &str)> = c.hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = match &c.src {
            Src::Sock(s) => kam.request_on(s, "isfrom", &hdrs),
            Src::Addr(a) => kam.request_from(*a, "isfrom", &hdrs),
        };
        let got = (r.hdr("X-Ret").to_string(), r.hdr("X-Setid").to_string(), r.hdr("X-Attrs").to_string());
        let want = (c.ret.to_string(), c.setid.to_string(), c.attrs.to_string());
        if r.status != 200 || got != want {
            failures.push(format!(
                "{}: from {} {:?}: got status {} (ret, setid, attrs) = {:?}, want {:?}",
                c.what, c.src, c.hdrs, r.status, got, want
            ));
        }
    }
    assert!(failures.is_empty(), "ds_is_from_list mismatches:\n{}\n{}", failures.join("\n"), kam.log_hint());
}

#[test]
fn select_xavp_records() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("select_xavp_records");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    // equal priorities: the array order is the reverse of the file order -> [C, B, A];
    // B is inactive in the file
    let list = format!(
        "1 sip:127.0.0.1:{pa} 0 0 name=a\n\
         1 sip:127.0.0.1:{pb} 1 0 name=b\n\
         1 sip:127.0.0.1:{pc} 0 0 name=c;duid=dc\n"
    );
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));
    let (a, c) = (format!("sip:127.0.0.1:{pa}"), format!("sip:127.0.0.1:{pc}"));

    // round-robin: C (idx 0), then B (idx 1) is inactive -> probe to A (idx 2), then C ...
    let r = kam.request("sel-1-4", &[]);
    assert_eq!((r.status, r.hdr("X-Ret")), (200, "1"), "{}", r.raw);
    assert_eq!(r.hdr("X-DU"), c, "{}", r.raw);
    assert_eq!(r.hdr("X-Cnt"), "2", "{}", r.raw);
    assert_eq!(dsdst_uris(&r), vec![c.clone(), a.clone()], "alg 4, first call\n{}", r.raw);
    let recs = dsdst_records(&r);
    assert_eq!(recs[0].grp, "1");
    assert_eq!(recs[0].attrs, "name=c;duid=dc");
    assert_eq!(recs[1].attrs, "name=a");
    assert_eq!(recs[0].dstid, "<null>", "dstid is only set by alg 10");

    let r = kam.request("sel-1-4", &[]);
    assert_eq!(r.hdr("X-DU"), a, "alg 4, second call skips the inactive B\n{}", r.raw);
    assert_eq!(r.hdr("X-Cnt"), "2", "{}", r.raw);
    assert_eq!(dsdst_uris(&r), vec![a.clone(), c.clone()], "alg 4, second call: selected, then wrap around\n{}", r.raw);

    let r = kam.request("sel-1-4", &[]);
    assert_eq!(r.hdr("X-DU"), c, "alg 4, third call is back at C\n{}", r.raw);

    // limit 1: only the selected record
    let r = kam.request("sel-1-4-1", &[]);
    assert_eq!(r.hdr("X-DU"), a, "{}", r.raw);
    assert_eq!(r.hdr("X-Cnt"), "1", "{}", r.raw);
    assert_eq!(dsdst_uris(&r), vec![a.clone()], "limit 1\n{}", r.raw);

    // serial (alg 8): always the first active one, alternatives in array order
    for _ in 0..3 {
        let r = kam.request("sel-1-8", &[]);
        assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);
        assert_eq!(r.hdr("X-DU"), c, "{}", r.raw);
        assert_eq!(r.hdr("X-Cnt"), "2", "{}", r.raw);
        assert_eq!(dsdst_uris(&r), vec![c.clone(), a.clone()], "alg 8\n{}", r.raw);
    }
    let r = kam.request("sel-1-8-5", &[]);
    assert_eq!(r.hdr("X-Cnt"), "2", "a limit above the usable count changes nothing\n{}", r.raw);

    // two selections in one message: the new block is inserted before the old one and a
    // second _dsctx_ record is prepended
    let r = kam.request("sel-1-8", &[("X-Repeat", "2")]);
    assert_eq!(dsdst_uris(&r), vec![c.clone(), a.clone(), c.clone(), a.clone()], "{}", r.raw);
    assert_eq!(r.hdr("X-Ctx"), "2 2", "{}", r.raw);

    // ds_next_dst walks the records: A, then nothing left ($du unchanged)
    let r = kam.request("sel-1-8", &[("X-Next", "2")]);
    let next = r.headers_all("X-Next");
    assert_eq!(next.len(), 2, "{}", r.raw);
    assert!(next[0].starts_with(&format!("1 {a} ")), "first ds_next_dst -> A: {next:?}");
    assert!(next[1].starts_with(&format!("-1 {a} ")), "second ds_next_dst fails, $du kept: {next:?}");

    // ds_select_domain rewrites the R-URI host part, not $du
    let r = kam.request("sel-1-8", &[("X-Func", "domain")]);
    assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);
    assert_eq!(r.hdr("X-DU"), "<null>", "{}", r.raw);
    assert_eq!(r.hdr("X-RU"), format!("sip:sel-1-8@127.0.0.1:{pc}"), "{}", r.raw);

    // ds_select only fills the XAVPs
    let r = kam.request("sel-1-8", &[("X-Func", "select")]);
    assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);
    assert_eq!(r.hdr("X-DU"), "<null>", "{}", r.raw);
    assert_eq!(r.hdr("X-RU"), format!("sip:sel-1-8@127.0.0.1:{}", kam.port), "{}", r.raw);
    assert_eq!(dsdst_uris(&r), vec![c.clone(), a.clone()], "{}", r.raw);

    // ds_is_active: the set has an active destination; B (inactive in the file) is not
    let b = format!("sip:127.0.0.1:{pb}");
    assert_eq!(kam.request("active-1", &[]).hdr("X-Ret"), "1");
    assert_eq!(kam.request("active-1", &[("X-Uri", &c)]).hdr("X-Ret"), "1");
    assert_eq!(kam.request("active-1", &[("X-Uri", &b)]).hdr("X-Ret"), "-1");
    assert_eq!(kam.request("active-7", &[]).hdr("X-Ret"), "-1");

    // unknown set: false, no records, no context
    let r = kam.request("sel-7-4", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "{}", r.raw);
    assert_eq!(r.hdr("X-Cnt"), "<null>", "{}", r.raw);
    assert!(dsdst_records(&r).is_empty(), "{}", r.raw);
}
