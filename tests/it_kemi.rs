//! KEMI: the dispatcher module driven from a Lua routing script (app_lua, `cfgengine
//! "lua"`, tests/data/kemi/ds-test.lua): `KSR.dispatcher.ds_select_dst(1, 4)` with
//! failover by `KSR.dispatcher.ds_next_dst()` in a failure-route callback, SIPp calls with
//! one backend answering 500, `ds_is_from_lists()` / `ds_is_from_list(g)`,
//! `ds_list_exists(set)` and the presence of all 24 KEMI exports of 5.6.3.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `DS_TEST_MODULE=c`.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

fn kemi_opts(list: &str) -> KamOpts {
    let tmpl_path = data_dir().join("kemi").join("kemi.cfg.tmpl");
    let script = data_dir().join("kemi").join("ds-test.lua");
    assert!(script.is_file(), "{} missing", script.display());
    let tmpl = fs::read_to_string(&tmpl_path).unwrap_or_else(|e| panic!("read {}: {e}", tmpl_path.display()));
    KamOpts {
        children: 2,
        cfg_template: Some(tmpl.replace("@LUA_SCRIPT@", &script.display().to_string())),
        ..KamOpts::with_list(list)
    }
}

fn lua_available() -> bool {
    std::path::Path::new(&*MODULES_DIR).join("app_lua.so").is_file()
}

#[test]
fn kemi_select_and_failover() {
    assert!(lua_available(), "app_lua.so is missing (apt-get install kamailio-lua-modules)");
    let kind = ModuleKind::from_env();
    let dir = run_dir("kemi_select_and_failover");
    let ok = SippUas::start(&dir, "uas-200", UasKind::Ok200);
    let bad = SippUas::start(&dir, "uas-500", UasKind::Err500);
    let list = format!("1 sip:127.0.0.1:{} 0 0 duid=ok\n1 sip:127.0.0.1:{} 0 0 duid=bad\n", ok.port, bad.port);
    let k = Kamailio::start(&dir, "kamailio", kind, &kemi_opts(&list));

    // every KEMI export of 5.6.3 is visible in KSR.dispatcher
    let r = k.request("kemi-names", &[]);
    assert_eq!(r.hdr("X-Missing"), "none", "KEMI exports missing from KSR.dispatcher\n{}", r.raw);

    // selection and ds_next_dst through KEMI (alg 8: first by list order = reverse file order)
    let r = k.request("sel-1-8", &[("X-Next", "2")]);
    assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);
    assert_eq!(r.hdr("X-DU"), bad.uri(), "{}", r.raw);
    assert_eq!(
        r.headers_all("X-Next"),
        vec![format!("1 {}", ok.uri()), format!("-1 {}", ok.uri())],
        "ds_next_dst: the next one, then nothing left\n{}",
        r.raw
    );
    let r = k.request("sel-1-8", &[("X-Limit", "1"), ("X-Next", "1")]);
    assert_eq!((r.hdr("X-Ret"), r.hdr("X-DU")), ("1", bad.uri().as_str()), "{}", r.raw);
    assert_eq!(r.headers_all("X-Next"), vec![format!("-1 {}", bad.uri())], "limit 1: no alternative\n{}", r.raw);
    let r = k.request("sel-9-4", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "unknown set\n{}", r.raw);

    // calls: round-robin over a good and a 500 backend, failover in the KEMI failure route
    let calls = 40u32;
    let res = run_uac(&dir, "uac", k.port, "rr", calls, 40, Duration::from_secs(40));
    assert_eq!(
        (res.successful, res.failed),
        (calls as u64, 0),
        "every call must succeed through the KEMI failover: {}\n{}",
        res.summary(),
        k.log_hint()
    );
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || ok.invites() >= calls as usize),
        "the 200 backend got {} of {calls} INVITEs",
        ok.invites()
    );
    let failed_first = bad.invites();
    assert!(
        failed_first >= (calls as usize) / 4 && failed_first <= (calls as usize) * 3 / 4,
        "round-robin should send about half of the calls to the 500 backend first, got {failed_first} of {calls}"
    );
    let failovers = k.log_count("KEMI FAILOVER");
    assert_eq!(failovers, failed_first, "one KEMI failover per call rejected by the 500 backend\n{}", k.log_hint());
    assert_eq!(k.log_count("no destination left"), 0, "{}", k.log_hint());
}

#[test]
fn kemi_is_from_and_exists() {
    assert!(lua_available(), "app_lua.so is missing (apt-get install kamailio-lua-modules)");
    let kind = ModuleKind::from_env();
    let dir = run_dir("kemi_is_from_and_exists");
    let peer = bound_socket();
    let peer_port = peer.local_addr().expect("addr").port();
    let other = bound_socket();
    let list =
        format!("1 sip:127.0.0.1:5101\n2 sip:127.0.0.1:{peer_port} 0 0 duid=peer;region=eu\n4 sip:127.0.0.1:5401 4\n");
    let k = Kamailio::start(&dir, "kamailio", kind, &kemi_opts(&list));

    let r = k.request_on(&peer, "isfrom", &[]);
    assert_eq!(
        (r.hdr("X-Ret"), r.hdr("X-Setid"), r.hdr("X-Attrs")),
        ("1", "2", "duid=peer;region=eu"),
        "ds_is_from_lists() from a set-2 destination\n{}",
        r.raw
    );
    let r = k.request_on(&other, "isfrom", &[]);
    assert_eq!((r.hdr("X-Ret"), r.hdr("X-Setid")), ("-1", "unset"), "from an unknown port\n{}", r.raw);
    for (g, want) in [("2", "1"), ("1", "-1"), ("3", "-1")] {
        let r = k.request_on(&peer, &format!("isfrom-{g}"), &[]);
        assert_eq!(r.hdr("X-Ret"), want, "ds_is_from_list({g})\n{}", r.raw);
    }
    for (set, want) in [("1", "1"), ("2", "1"), ("4", "1"), ("3", "-1"), ("0", "-1")] {
        let r = k.request(&format!("exists-{set}"), &[]);
        assert_eq!(r.hdr("X-Ret"), want, "ds_list_exists({set})\n{}", r.raw);
    }
    for (set, want) in [("1", "1"), ("4", "-1"), ("3", "-1")] {
        let r = k.request(&format!("active-{set}"), &[]);
        assert_eq!(r.hdr("X-Ret"), want, "ds_is_active({set})\n{}", r.raw);
    }

    // after a reload the KEMI functions see the new list
    replace_file(&k.list_path, "3 sip:127.0.0.1:5301\n");
    assert_eq!(
        k.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()),
        Ok("Ok. Dispatcher successfully reloaded.".to_string())
    );
    for (set, want) in [("1", "-1"), ("3", "1")] {
        let r = k.request(&format!("exists-{set}"), &[]);
        assert_eq!(r.hdr("X-Ret"), want, "ds_list_exists({set}) after reload\n{}", r.raw);
    }
    let r = k.request_on(&peer, "isfrom", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "the peer is no longer listed\n{}", r.raw);
}
