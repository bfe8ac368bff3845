//! Reload storm: while a SIPp UAC sends calls at a high rate through the proxy
//! (`ds_select_dst(1, 4)`, failover with `ds_next_dst()` in the failure route, `flags` 2)
//! to SIPp backends, concurrent loops rebuild the list as fast as they can
//! (`reload_delta` 0):
//!   * `dispatcher.reload` (kamcmd), the list file alternating between two versions,
//!   * `dispatcher.add` / `dispatcher.remove` (kamcmd) of two extra backends,
//!   * `ds_reload()` from the routing script (a SIP request per call, so the rebuild runs
//!     in a SIP worker, concurrently with the RPC process),
//!   * `dispatcher.list` (kamcmd), checking that the backends present in every version
//!     of the list are always listed.
//! Then: 0 failed calls, Kamailio still running (no "exited by a signal"), and after a
//! final serial reload + add/remove sequence `dispatcher.list` equals the expected list.
//!
//! Environment:
//!   DS_STORM_SECS  storm duration in seconds (default 60)
//!   DS_STORM_RATE  calls per second (default 300); the UAC makes rate * secs calls
//!   DS_STORM_SCRIPT_RELOAD=0  no ds_reload() loop from the script (RPC rebuilds only)
//!   DS_STORM_C=1   also run it with DS_TEST_MODULE=c (Debian's C module): the outcome is
//!                  only printed, not asserted (the C module has no reference counting
//!                  of lists, a reload storm with reload_delta 0 is not expected to be safe)

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The SIPp UAC (tests/data/uac.xml), started in the background so that the test can stop
/// it early when Kamailio dies.
struct Uac {
    proc_: Proc,
    stat_file: std::path::PathBuf,
    out_file: std::path::PathBuf,
    started: Instant,
}

impl Uac {
    fn start(dir: &std::path::Path, label: &str, target_port: u16, calls: u64, rate: u64, timeout: Duration) -> Uac {
        let files = UacFiles::new(dir, label);
        let (stat_file, out_file) = (files.stat_file.clone(), files.out_file.clone());
        let mut cmd = sipp_uac_command(&data_dir().join("uac.xml"), "rr", target_port, calls, rate, 1000, timeout, dir, &files);
        let proc_ = Proc::spawn(&format!("sipp uac {label}"), &mut cmd).unwrap_or_else(|e| panic!("{e}"));
        Uac { proc_, stat_file, out_file, started: Instant::now() }
    }

    /// (created, successful, failed) so far.
    fn stats(&self) -> (u64, u64, u64) {
        parse_sipp_stat(&self.stat_file)
    }
}

/// Outcome counters of one kind of operation.
#[derive(Default)]
struct OpStats {
    ok: AtomicU64,
    fault: AtomicU64,
    faults: Mutex<BTreeMap<String, u64>>,
}

impl OpStats {
    fn record(&self, r: &Result<String, String>) {
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.fault.fetch_add(1, Ordering::Relaxed);
                let key: String = e.chars().take(120).collect();
                *self.faults.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
            }
        }
    }

    fn summary(&self) -> String {
        let f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "ok={} fault={}{}",
            self.ok.load(Ordering::Relaxed),
            self.fault.load(Ordering::Relaxed),
            if f.is_empty() { String::new() } else { format!(" {f:?}") }
        )
    }
}

/// (URI, FLAGS, PRIORITY, ATTRS/BODY) per set id.
fn list_rows(list: &Node) -> BTreeMap<String, Vec<(String, String, String, String)>> {
    let mut out = BTreeMap::new();
    if let Some(records) = list.path("RECORDS") {
        for s in records.get_all("SET") {
            let id = s.path_val("ID").unwrap_or("?").to_string();
            let rows = s
                .path("TARGETS")
                .map(|t| t.get_all("DEST"))
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    (
                        d.path_val("URI").unwrap_or("?").to_string(),
                        d.path_val("FLAGS").unwrap_or("?").to_string(),
                        d.path_val("PRIORITY").unwrap_or("?").to_string(),
                        d.path_val("ATTRS/BODY").unwrap_or("-").to_string(),
                    )
                })
                .collect();
            out.insert(id, rows);
        }
    }
    out
}

/// Print the top of the backtrace of every core file in `dir` (gdb, if installed), then
/// delete the cores (tens of MB each).
fn report_cores(dir: &std::path::Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name == "core" || name.starts_with("core.")) {
            continue;
        }
        let mut cmd = Command::new("gdb");
        cmd.args(["-batch", "-ex", "bt 12"]).arg(&*KAMAILIO_BIN).arg(e.path());
        match run_with_timeout(&mut cmd, Duration::from_secs(60)) {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
                eprintln!("[it] backtrace of {}:\n{}", e.path().display(), frames.join("\n"));
            }
            Err(err) => eprintln!("[it] no backtrace of {} ({err})", e.path().display()),
        }
        let _ = fs::remove_file(e.path());
    }
}

#[test]
fn reload_storm() {
    let kind = ModuleKind::from_env();
    if kind == ModuleKind::C && std::env::var("DS_STORM_C").as_deref() != Ok("1") {
        eprintln!(
            "[it] reload_storm: skipped for the C module (set DS_STORM_C=1 to run it; the outcome is reported, not asserted)"
        );
        return;
    }
    let secs = env_u64("DS_STORM_SECS", 60).max(1);
    let rate = env_u64("DS_STORM_RATE", 300).max(1);
    let calls = rate * secs;
    let script_reload = env_u64("DS_STORM_SCRIPT_RELOAD", 1) != 0;
    let dir = run_dir("reload_storm");

    // backends: s1, s2 and e1 (answers 500) are in every version of the list; c1 and c2 come
    // and go (file version B, dispatcher.add/remove); all distinct priorities, so the list
    // order is fixed whatever the order of the rebuilds
    let s1 = SippUas::start(&dir, "s1", UasKind::Ok200);
    let s2 = SippUas::start(&dir, "s2", UasKind::Ok200);
    let e1 = SippUas::start(&dir, "e1", UasKind::Err500);
    let c1 = SippUas::start(&dir, "c1", UasKind::Ok200);
    let c2 = SippUas::start(&dir, "c2", UasKind::Ok200);
    let stable = [s1.uri(), s2.uri(), e1.uri()];
    let list_a = format!(
        "# storm list, version A\n1 {} 0 30 duid=s1\n1 {} 0 20 duid=s2\n1 {} 0 10 duid=e1\n",
        s1.uri(),
        s2.uri(),
        e1.uri()
    );
    let list_b = format!("{list_a}# version B\n1 {} 0 5 duid=c1\n2 sip:127.0.0.1:5999 0 0 duid=x\n", c1.uri());

    // the test cfg plus a `dsreload` entry point that runs ds_reload() in a SIP worker
    let anchor = "\tif ($rU == \"isfrom\") {";
    assert!(CFG_TEMPLATE.contains(anchor), "cfg template anchor missing");
    let tmpl = CFG_TEMPLATE.replacen(
        anchor,
        "\tif ($rU == \"dsreload\") {\n\t\tif (ds_reload()) {\n\t\t\tsl_send_reply(\"200\", \"reloaded\");\n\t\t} else {\n\t\t\tsl_send_reply(\"500\", \"reload failed\");\n\t\t}\n\t\texit;\n\t}\n\tif ($rU == \"isfrom\") {",
        1,
    );
    let opts = KamOpts { cfg_template: Some(tmpl), ..KamOpts::with_list(&list_a) };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    let kpid = kam.pid();
    eprintln!(
        "[it] reload_storm ({} module): {secs} s, {calls} calls at {rate}/s, ds_reload() loop {}; run dir {}",
        kind.name(),
        if script_reload { "on" } else { "off" },
        dir.display()
    );

    let uac = Uac::start(&dir, "uac", kam.port, calls, rate, Duration::from_secs(secs + 60));
    let stop = Arc::new(AtomicBool::new(false));
    let st_reload = Arc::new(OpStats::default());
    let st_add = Arc::new(OpStats::default());
    let st_remove = Arc::new(OpStats::default());
    let st_list = Arc::new(OpStats::default());
    let st_script = Arc::new(OpStats::default());
    let missing: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let pause = Duration::from_millis(5);
    let mut threads = Vec::new();

    {
        // file reloads, alternating A and B
        let (stop, st, ctl, path) = (stop.clone(), st_reload.clone(), kam.ctl_path.clone(), kam.list_path.clone());
        let (a, b) = (list_a.clone(), list_b.clone());
        threads.push(thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                replace_file(&path, if n % 2 == 0 { &b } else { &a });
                st.record(&kamcmd_at(&ctl, &["dispatcher.reload"]));
                n += 1;
                thread::sleep(pause);
            }
        }));
    }
    {
        let (stop, st, ctl) = (stop.clone(), st_add.clone(), kam.ctl_path.clone());
        let (u1, u2) = (c1.uri(), c2.uri());
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                st.record(&kamcmd_at(&ctl, &["dispatcher.add", "1", &u1, "0", "5", "duid=c1"]));
                st.record(&kamcmd_at(&ctl, &["dispatcher.add", "1", &u2, "0", "4", "duid=c2"]));
                thread::sleep(pause);
            }
        }));
    }
    {
        let (stop, st, ctl) = (stop.clone(), st_remove.clone(), kam.ctl_path.clone());
        let (u1, u2) = (c1.uri(), c2.uri());
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                st.record(&kamcmd_at(&ctl, &["dispatcher.remove", "1", &u1]));
                st.record(&kamcmd_at(&ctl, &["dispatcher.remove", "1", &u2]));
                thread::sleep(pause);
            }
        }));
    }
    if script_reload {
        // ds_reload() in the SIP workers
        let (stop, st, port) = (stop.clone(), st_script.clone(), kam.port);
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = sip_request(None, port, "OPTIONS", "dsreload", &[], Duration::from_secs(5));
                st.record(&match r {
                    Ok(r) if r.status == 200 => Ok(String::new()),
                    Ok(r) => Err(format!("{} {}", r.status, r.reason)),
                    Err(e) => Err(e),
                });
                thread::sleep(pause * 4);
            }
        }));
    }
    {
        // the stable backends must be listed at every moment
        let (stop, st, ctl, missing) = (stop.clone(), st_list.clone(), kam.ctl_path.clone(), missing.clone());
        let stable = stable.clone();
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = kamcmd_at(&ctl, &["dispatcher.list"]);
                if let Ok(text) = &r {
                    let rows = list_rows(&parse_kamcmd(text));
                    let set1: Vec<&str> =
                        rows.get("1").map(|v| v.iter().map(|x| x.0.as_str()).collect()).unwrap_or_default();
                    for s in &stable {
                        if !set1.contains(&s.as_str()) {
                            let mut m = missing.lock().unwrap_or_else(|p| p.into_inner());
                            if m.len() < 20 {
                                m.push(format!("{s} missing from set 1: {set1:?}"));
                            }
                        }
                    }
                }
                st.record(&r);
                thread::sleep(pause * 2);
            }
        }));
    }

    // wait for the UAC (or for Kamailio to die)
    let mut uac = uac;
    let mut died_at: Option<Duration> = None;
    let uac_status = loop {
        if let Some(st) = uac.proc_.try_wait() {
            break Some(st);
        }
        if !pid_alive(kpid) || kam.log_count("exited by a signal") > 0 {
            died_at = Some(uac.started.elapsed());
            eprintln!(
                "[it] reload_storm: Kamailio died after {:.1} s, stopping the UAC",
                uac.started.elapsed().as_secs_f64()
            );
            // let the UAC notice a few failures, then stop it
            thread::sleep(Duration::from_secs(3));
            uac.proc_.stop(Duration::from_secs(3));
            break None;
        }
        if uac.started.elapsed() > Duration::from_secs(secs + 90) {
            eprintln!("[it] reload_storm: the UAC did not finish in time, stopping it");
            uac.proc_.stop(Duration::from_secs(3));
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let elapsed = uac.started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    thread::sleep(Duration::from_millis(1200)); // the last stat line
    let (created, successful, failed) = uac.stats();
    let alive = pid_alive(kpid);
    let signal_lines: Vec<String> = kam
        .log_text()
        .lines()
        .filter(|l| l.contains("exited by a signal") || l.contains("core dumped") || l.contains("Segmentation"))
        .map(|l| l.to_string())
        .take(10)
        .collect();
    let report = format!(
        "reload storm, {} module: {:.1} s, UAC exit {:?}: created={created} successful={successful} failed={failed} \
         unfinished={} (of {calls})\n\
         \x20 kamailio main pid {kpid} alive={alive}{}\n\
         \x20 dispatcher.reload: {}\n  dispatcher.add: {}\n  dispatcher.remove: {}\n  ds_reload() via SIP: {}\n  dispatcher.list: {}\n\
         \x20 stable backends missing from a listing: {:?}\n  crash lines: {signal_lines:?}\n  run dir {} (UAC output {})",
        kind.name(),
        elapsed.as_secs_f64(),
        uac_status.and_then(|s| s.code()),
        created.saturating_sub(successful + failed),
        died_at.map(|d| format!(" (died after {:.1} s)", d.as_secs_f64())).unwrap_or_default(),
        st_reload.summary(),
        st_add.summary(),
        st_remove.summary(),
        st_script.summary(),
        st_list.summary(),
        missing.lock().unwrap_or_else(|p| p.into_inner()),
        dir.display(),
        uac.out_file.display(),
    );
    eprintln!("[it] {report}");
    if !alive || !signal_lines.is_empty() {
        report_cores(&kam.dir);
    }

    if kind == ModuleKind::C {
        eprintln!("[it] reload_storm: C module outcome reported above (not asserted)");
        return;
    }

    // ---- assertions (module under test) -------------------------------------------------
    assert!(alive && signal_lines.is_empty(), "Kamailio crashed during the reload storm\n{report}\n{}", kam.log_hint());
    assert_eq!(uac_status.and_then(|s| s.code()), Some(0), "the UAC did not finish cleanly\n{report}");
    assert_eq!((successful, failed), (calls, 0), "every call must succeed\n{report}");
    assert!(missing.lock().unwrap_or_else(|p| p.into_inner()).is_empty(), "stable backends went missing\n{report}");
    for (name, st) in [
        ("reload", &st_reload),
        ("add", &st_add),
        ("remove", &st_remove),
        ("ds_reload()", &st_script),
        ("list", &st_list),
    ] {
        assert_eq!(st.fault.load(Ordering::Relaxed), 0, "{name} faults during the storm\n{report}");
        if name != "ds_reload()" || script_reload {
            assert!(st.ok.load(Ordering::Relaxed) > 0, "no successful {name} during the storm\n{report}");
        }
    }

    // ---- final serial sequence: file version A, reload, then adds/removes ---------------
    replace_file(&kam.list_path, &list_a);
    let steps: Vec<Vec<String>> = vec![
        vec!["dispatcher.reload".into()],
        vec!["dispatcher.add".into(), "1".into(), c1.uri(), "0".into(), "5".into(), "duid=c1".into()],
        vec!["dispatcher.add".into(), "1".into(), c2.uri(), "0".into(), "4".into(), "duid=c2".into()],
        vec!["dispatcher.remove".into(), "1".into(), c1.uri()],
        vec!["dispatcher.add".into(), "3".into(), "sip:127.0.0.1:5997".into(), "0".into(), "0".into(), "duid=z".into()],
    ];
    for s in &steps {
        let args: Vec<&str> = s.iter().map(String::as_str).collect();
        let r = kam.kamcmd(&args);
        assert!(r.is_ok(), "{args:?}: {r:?}\n{}", kam.log_hint());
    }
    let row = |u: &str, p: &str, a: &str| (u.to_string(), "AX".to_string(), p.to_string(), a.to_string());
    let mut want = BTreeMap::new();
    want.insert(
        "1".to_string(),
        vec![
            row(&s1.uri(), "30", "duid=s1"),
            row(&s2.uri(), "20", "duid=s2"),
            row(&e1.uri(), "10", "duid=e1"),
            row(&c2.uri(), "4", "duid=c2"),
        ],
    );
    want.insert("3".to_string(), vec![row("sip:127.0.0.1:5997", "0", "duid=z")]);
    let fin = kam.ds_list(None).expect("final dispatcher.list");
    assert_eq!(list_rows(&fin), want, "final list\n{}", fin.pretty());
    assert_eq!(fin.path_val("NRSETS"), Some("2"), "{}", fin.pretty());

    // and it routes: c2 is one of the backends now
    let res = run_uac(&dir, "uac-final", kam.port, "rr", 40, 40, Duration::from_secs(30));
    assert_eq!((res.successful, res.failed), (40, 0), "calls after the storm: {}\n{}", res.summary(), kam.log_hint());
    assert!(pid_alive(kpid), "Kamailio died after the storm\n{}", kam.log_hint());

    // the backends' message traces are large after a storm: drop them when all went well
    drop((s1, s2, e1, c1, c2));
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".messages.log") {
            let _ = fs::remove_file(e.path());
        }
    }
}
