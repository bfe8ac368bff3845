//! Soak test (`make soak`; not part of `make test`): Kamailio with the dispatcher module under
//! a steady call load for a long time, with everything that changes the list or the
//! destinations' state going on at once:
//!   * a SIPp UAC at `SOAK_RATE` calls/s (default 1,000) for `SOAK_SECS` (default 600),
//!     INVITE/200/ACK/BYE, routed by call load (`ds_select_dst(1, 10)`, `ds_load_update()` on
//!     200 and BYE, `ds_load_unset()` when a call fails) with failover (`ds_next_dst()` in the
//!     failure route on 5xx and timeouts);
//!   * keepalives every second (`ds_probing_mode` 1);
//!   * a storm of `dispatcher.reload` (the file alternating between two versions),
//!     `dispatcher.add` and `dispatcher.remove` at `SOAK_STORM_RATE` operations/s (default 50),
//!     on set 2 (set 1 routes the calls and is the same in both versions);
//!   * one of the five backends is killed and restarted on the same port every
//!     `SOAK_FLAP_SECS` (default 10: dies and comes back every 20 s).
//!
//! Asserted at the end:
//!   * Kamailio and every one of its processes is still alive, no crash in the log;
//!   * every call succeeded, or failed because its backend died while the call was
//!     established (BYE to a dead backend): failed calls <= the calls that were on the
//!     flapping backend when it was killed (its `DLGLOAD` just before each kill);
//!   * shared memory is flat after warm-up: growth of `real_used` over the last 80 % of the
//!     run < 1 % (median of the first three vs the last three samples);
//!   * the call-load counters (`DLGLOAD`) of set 1 are back to 0 once the calls are over.
//!
//! Loopback only, random free ports, every process stopped by PID (the harness' `Proc`).

mod common;

use common::*;
use std::fs;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A SIPp UAS answering 200 (INVITE, BYE, OPTIONS) without message tracing (a soak would
/// write gigabytes), on a fixed port so that it can be restarted there.
fn start_uas(dir: &std::path::Path, label: &str, port: u16) -> Proc {
    let out_file = dir.join(format!("{label}.sipp.out"));
    let out = fs::OpenOptions::new().create(true).append(true).open(&out_file).expect("open sipp out");
    let mut cmd = Command::new(SIPP_BIN);
    cmd.arg("-sf")
        .arg(UasKind::Ok200.scenario())
        .args(["-i", "127.0.0.1", "-bind_local"])
        .args(["-p", &port.to_string()])
        .args(["-cp", &free_port().to_string()])
        .arg("-nostdin")
        .current_dir(dir)
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out));
    let mut p = Proc::spawn(&format!("sipp uas {label}"), &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || p.try_wait().is_some() || udp_port_in_use(port));
    assert!(ok && p.try_wait().is_none(), "sipp UAS {label} did not start on port {port}");
    p
}

/// `real_used` of `kamcmd core.shmmem`.
fn shm_real_used(ctl: &std::path::Path) -> Option<u64> {
    let out = kamcmd_at(ctl, &["core.shmmem"]).ok()?;
    out.lines().find_map(|l| l.trim().strip_prefix("real_used:").and_then(|v| v.trim().parse().ok()))
}

/// Shared memory held by the dispatcher module (`mod.stats dispatcher shm`, kex; needs a
/// core built with DBG_SR_MEMORY, as Debian's and the source builds here are).
/// Without the call-load cells (allocation site `rds_shm_malloc_cell`), whose number follows
/// the calls in progress.
fn module_shm(ctl: &std::path::Path) -> Option<u64> {
    let out = kamcmd_at(ctl, &["mod.stats", "dispatcher", "shm"]).ok()?;
    let total: u64 = out.lines().find_map(|l| l.trim().strip_prefix("Total:").and_then(|v| v.trim().parse().ok()))?;
    let cells: u64 = out
        .lines()
        .filter(|l| l.trim().starts_with("rds_shm_malloc_cell("))
        .filter_map(|l| l.rsplit(':').next().and_then(|v| v.trim().parse::<u64>().ok()))
        .sum();
    Some(total.saturating_sub(cells))
}

/// PIDs of `kamcmd core.psx`.
fn kamailio_pids(ctl: &std::path::Path) -> Vec<i32> {
    let out = kamcmd_at(ctl, &["core.psx"]).unwrap_or_default();
    out.lines().filter_map(|l| l.trim().strip_prefix("PID:").and_then(|v| v.trim().parse().ok())).collect()
}

/// DLGLOAD of every destination of set `set`, by URI.
fn dlgloads(ctl: &std::path::Path, set: &str) -> Vec<(String, i64)> {
    let Ok(text) = kamcmd_at(ctl, &["dispatcher.list"]) else { return Vec::new() };
    let list = parse_kamcmd(&text);
    let mut out = Vec::new();
    for s in list.path("RECORDS").map(|r| r.get_all("SET")).unwrap_or_default() {
        if s.path_val("ID") != Some(set) {
            continue;
        }
        for d in s.path("TARGETS").map(|t| t.get_all("DEST")).unwrap_or_default() {
            let uri = d.path_val("URI").unwrap_or("?").to_string();
            let load = d.path_val("RUNTIME/DLGLOAD").and_then(|v| v.parse().ok()).unwrap_or(-1);
            out.push((uri, load));
        }
    }
    out
}

/// (calls that failed with a 408 to their BYE sent to one of `flap_pids`' UAS, other
/// failures as "call-id: reason").
fn classify_failures(path: &std::path::Path, flap_pids: &[i32]) -> (u64, Vec<String>) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut mid = std::collections::BTreeSet::new();
    let mut other = Vec::new();
    for entry in text.split("Aborting call").skip(1) {
        let callid = entry.split('\'').nth(1).unwrap_or("?").to_string();
        let status = entry.split("received 'SIP/2.0 ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("?");
        let bye = entry.lines().any(|l| l.starts_with("CSeq:") && l.trim_end().ends_with("BYE"));
        let to_pid = entry
            .lines()
            .find(|l| l.starts_with("To:"))
            .and_then(|l| l.split("tag=").nth(1))
            .and_then(|t| t.split("SIPpTag").next())
            .and_then(|p| p.parse::<i32>().ok());
        if status == "408" && bye && to_pid.is_some_and(|p| flap_pids.contains(&p)) {
            mid.insert(callid);
        } else {
            other.push(format!("{callid}: {status}{}", if bye { " to BYE" } else { "" }));
        }
    }
    (mid.len() as u64, other)
}

fn median3(v: &[u64]) -> u64 {
    let mut w = v.to_vec();
    w.sort_unstable();
    w.get(w.len() / 2).copied().unwrap_or(0)
}

#[test]
fn soak() {
    let secs = env_u64("SOAK_SECS", 600);
    let rate = env_u64("SOAK_RATE", 1000);
    let storm_rate = env_u64("SOAK_STORM_RATE", 50).max(1);
    let flap = env_u64("SOAK_FLAP_SECS", 10).max(1);
    let kind = ModuleKind::from_env();
    // room for the transactions of 1,000 calls/s (tm keeps each one 5 s after it ends)
    std::env::set_var("DS_KAM_SHM_MB", env_u64("SOAK_SHM_MB", 512).to_string());
    let dir = run_dir("soak");
    eprintln!("[soak] {secs} s at {rate} calls/s, storm {storm_rate} ops/s, backend flap every {flap} s; run dir {}", dir.display());

    // five backends in set 1 (the last one flaps), set 2 is what the storm edits
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut stable: Vec<Proc> = ports[..4].iter().enumerate().map(|(i, &p)| start_uas(&dir, &format!("b{i}"), p)).collect();
    let flap_port = ports[4];
    let (x1, x2) = (free_port(), free_port());
    let set1: String = ports.iter().enumerate().map(|(i, p)| format!("1 sip:127.0.0.1:{p} 0 0 duid=b{i}\n")).collect();
    let list_a = format!("{set1}2 sip:127.0.0.1:{x1} 0 0 duid=x1\n");
    let list_b = format!("{set1}2 sip:127.0.0.1:{x1} 0 0 duid=x1\n2 sip:127.0.0.1:{x2} 0 5 duid=x2\n");
    let opts = KamOpts {
        list: list_a.clone(),
        cfg_template: Some(include_str!("data/soak/soak.cfg.tmpl").to_string()),
        children: 8,
        debug: 1,
        fr_timer_ms: 1000,
        fr_inv_timer_ms: 5000,
        ..KamOpts::default()
    };
    let mut kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    let ctl = kam.ctl_path.clone();
    let pids = kamailio_pids(&ctl);
    assert!(pids.len() > 8, "core.psx lists the Kamailio processes: {pids:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // shm sampler
    let shm: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, shm, ctl) = (stop.clone(), shm.clone(), ctl.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(v), Some(m)) = (shm_real_used(&ctl), module_shm(&ctl)) {
                    shm.lock().unwrap_or_else(|p| p.into_inner()).push((started.elapsed().as_secs_f64(), v, m));
                }
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    // reload / add / remove storm on set 2
    let ops = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let storm = {
        let (stop, ops, ctl, list_path) = (stop.clone(), ops.clone(), ctl.clone(), kam.list_path.clone());
        let (la, lb) = (list_a.clone(), list_b.clone());
        thread::spawn(move || {
            let period = Duration::from_micros(1_000_000 / storm_rate);
            let mut n: u64 = 0;
            let mut next = Instant::now();
            let x3 = format!("sip:127.0.0.1:{}", free_port());
            while !stop.load(Ordering::Relaxed) {
                let r = match n % 4 {
                    0 => {
                        let tmp = list_path.with_extension("tmp");
                        let _ = fs::write(&tmp, if (n / 4) % 2 == 0 { &lb } else { &la });
                        let _ = fs::rename(&tmp, &list_path);
                        kamcmd_at(&ctl, &["dispatcher.reload"])
                    }
                    1 => kamcmd_at(&ctl, &["dispatcher.add", "2", &x3, "0", "0", "duid=x3"]),
                    2 => kamcmd_at(&ctl, &["dispatcher.remove", "2", &x3]),
                    _ => kamcmd_at(&ctl, &["dispatcher.list"]).map(|_| String::new()),
                };
                match (n % 4, r.is_ok()) {
                    (k @ 0..=2, true) => ops[k as usize].fetch_add(1, Ordering::Relaxed),
                    (_, false) => ops[3].fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                n += 1;
                next += period;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })
    };

    // the flapping backend: up `flap` s, down `flap` s; its call load is read before each kill
    let budget = Arc::new(AtomicU64::new(0));
    let kills = Arc::new(AtomicU64::new(0));
    let flap_pids: Arc<Mutex<Vec<i32>>> = Arc::new(Mutex::new(Vec::new()));
    let flapper = {
        let (stop, budget, kills, ctl, dir) = (stop.clone(), budget.clone(), kills.clone(), ctl.clone(), dir.clone());
        let flap_pids = flap_pids.clone();
        let uri = format!("sip:127.0.0.1:{flap_port}");
        thread::spawn(move || {
            let first = start_uas(&dir, "flap", flap_port);
            flap_pids.lock().unwrap_or_else(|p| p.into_inner()).push(first.pid);
            let mut uas = Some(first);
            let mut t = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
                if t.elapsed() < Duration::from_secs(flap) {
                    continue;
                }
                t = Instant::now();
                match uas.take() {
                    Some(mut p) => {
                        let load = dlgloads(&ctl, "1").into_iter().find(|(u, _)| *u == uri).map(|(_, l)| l.max(0) as u64).unwrap_or(0);
                        budget.fetch_add(load, Ordering::Relaxed);
                        kills.fetch_add(1, Ordering::Relaxed);
                        p.stop(Duration::from_millis(200));
                    }
                    None => {
                        let p = start_uas(&dir, "flap", flap_port);
                        flap_pids.lock().unwrap_or_else(|p| p.into_inner()).push(p.pid);
                        uas = Some(p);
                    }
                }
            }
            if let Some(mut p) = uas {
                p.stop(Duration::from_millis(500));
            }
        })
    };

    let idle_before = shm_real_used(&ctl).unwrap_or(0);
    let module_idle_before = module_shm(&ctl).unwrap_or(0);
    let _ = fs::write(dir.join("mod-stats-start.txt"), kamcmd_at(&ctl, &["mod.stats", "all", "shm"]).unwrap_or_else(|e| e));

    // the calls
    let files = UacFiles::new(&dir, "uac");
    let stat_file = files.stat_file.clone();
    let mut cmd = sipp_uac_command(&data_dir().join("uac.xml"), "soak", kam.port, rate * secs, rate, 5000, Duration::from_secs(secs + 120), &dir, &files);
    let mut uac = Proc::spawn("sipp uac", &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(secs + 150);
    let mut kam_died = false;
    while Instant::now() < deadline {
        if uac.try_wait().is_some() {
            break;
        }
        if !pid_alive(kam.pid()) {
            kam_died = true;
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    if uac.try_wait().is_none() {
        uac.stop(Duration::from_secs(2));
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = storm.join();
    let _ = flapper.join();
    let _ = sampler.join();

    // back to the first list, twice: the second reload frees what the first one retired, so
    // the idle figures below compare the same list
    let _ = fs::write(&kam.list_path, &list_a);
    let _ = kamcmd_at(&ctl, &["dispatcher.reload"]);
    let _ = kamcmd_at(&ctl, &["dispatcher.reload"]);
    let (created, ok, failed) = parse_sipp_stat(&stat_file);
    // why calls failed (sipp's error log): a 408 to the BYE of a call whose backend (the
    // To-tag starts with the SIPp UAS' pid) is the flapping one is a call that was established
    // when its backend died: the C module fails it too
    let flap_pids = flap_pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (mid_dialog, other_failures) = classify_failures(&dir.join("uac.errors.log"), &flap_pids);

    // call load back to 0 once every call is over (BYEs processed; failed calls unset)
    let mut loads = Vec::new();
    let zero = wait_until(Duration::from_secs(15), Duration::from_millis(500), || {
        loads = dlgloads(&ctl, "1");
        !loads.is_empty() && loads.iter().all(|(_, l)| *l == 0)
    });
    // idle again: tm's wait timer (5 s) has released the last transactions
    thread::sleep(Duration::from_secs(8));
    let idle_after = shm_real_used(&ctl).unwrap_or(0);
    // a list that a reader (the keepalive timer, say) held during the last rebuild is freed at
    // the next one: rebuild a few more times and keep the lowest figure
    let mut module_idle_after = u64::MAX;
    for _ in 0..5 {
        let _ = kamcmd_at(&ctl, &["dispatcher.reload"]);
        thread::sleep(Duration::from_millis(300));
        module_idle_after = module_idle_after.min(module_shm(&ctl).unwrap_or(u64::MAX));
    }
    let _ = fs::write(dir.join("mod-stats-end.txt"), kamcmd_at(&ctl, &["mod.stats", "all", "shm"]).unwrap_or_else(|e| e));
    let dead: Vec<i32> = pids.iter().copied().filter(|&p| !pid_alive(p)).collect();
    let log = fs::read_to_string(&kam.log_path).unwrap_or_default();
    let crash_lines: Vec<&str> =
        log.lines().filter(|l| l.contains("exited by a signal") || l.contains("core dumped") || l.contains("BUG:") || l.contains("panic")).take(10).collect();

    let samples = shm.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let csv: String = samples.iter().map(|(t, v, m)| format!("{t:.1},{v},{m}\n")).collect();
    let _ = fs::write(dir.join("shm.csv"), format!("seconds,kamailio_real_used,dispatcher_module\n{csv}"));

    let warm = elapsed.as_secs_f64() * 0.2;
    let after: Vec<u64> = samples.iter().filter(|(t, _, _)| *t >= warm).map(|(_, v, _)| *v).collect();
    let after_mod: Vec<u64> = samples.iter().filter(|(t, _, _)| *t >= warm).map(|(_, _, m)| *m).collect();
    let ends = |v: &[u64]| if v.len() >= 6 { (median3(&v[..3]), median3(&v[v.len() - 3..])) } else { (0, 0) };
    // the module: lowest value of the first and of the last third after warm-up (a list that a
    // reader still held when it was replaced is freed at the next rebuild: the lowest samples
    // are the ones without such a list)
    let thirds_min = |v: &[u64]| {
        let k = (v.len() / 3).max(1);
        if v.len() >= 6 {
            (v[..k].iter().copied().min().unwrap_or(0), v[v.len() - k..].iter().copied().min().unwrap_or(0))
        } else {
            (0, 0)
        }
    };
    let pct = |a: u64, b: u64| if a > 0 { (b as f64 - a as f64) / a as f64 * 100.0 } else { f64::NAN };
    let (first, last) = ends(&after);
    let growth = pct(first, last);
    let (mfirst, mlast) = thirds_min(&after_mod);
    let mgrowth = pct(mfirst, mlast);
    let mmax = after_mod.iter().copied().max().unwrap_or(0);
    let allowed = budget.load(Ordering::Relaxed);

    eprintln!("[soak] elapsed {:.0} s; calls created {created}, successful {ok}, failed {failed} (calls on the flapping backend at its {} kills: {allowed})", elapsed.as_secs_f64(), kills.load(Ordering::Relaxed));
    eprintln!(
        "[soak] storm: reload ok {}, add ok {}, remove ok {}, faults {}",
        ops[0].load(Ordering::Relaxed),
        ops[1].load(Ordering::Relaxed),
        ops[2].load(Ordering::Relaxed),
        ops[3].load(Ordering::Relaxed)
    );
    eprintln!("[soak] shm of the dispatcher module (call-load cells aside) after warm-up, lowest of the first and last third: {mfirst} -> {mlast} bytes ({mgrowth:+.3} %), max {mmax}, {} samples", after_mod.len());
    eprintln!("[soak] shm real_used of all of Kamailio after warm-up: {first} -> {last} bytes ({growth:+.3} %; tm's transactions follow the load)");
    eprintln!(
        "[soak] shm real_used idle: before the calls {idle_before}, after them {idle_after} ({:+} bytes); dispatcher module: {module_idle_before} -> {module_idle_after} ({:+} bytes)",
        idle_after as i64 - idle_before as i64,
        module_idle_after as i64 - module_idle_before as i64
    );
    eprintln!("[soak] DLGLOAD at the end: {loads:?}");
    eprintln!("[soak] processes: {} at start, dead at the end: {dead:?}", pids.len());

    let mut problems = Vec::new();
    if kam_died || !pid_alive(kam.pid()) {
        problems.push("Kamailio died".to_string());
    }
    if !dead.is_empty() {
        problems.push(format!("Kamailio processes died: {dead:?}"));
    }
    if !crash_lines.is_empty() {
        problems.push(format!("crash lines in the log: {crash_lines:?}"));
    }
    if created < rate * secs * 9 / 10 {
        problems.push(format!("the UAC created only {created} of {} calls (machine too slow for {rate} calls/s?)", rate * secs));
    }
    eprintln!("[soak] failed calls: {mid_dialog} established on the flapping backend when it died (BYE 408), other: {other_failures:?}");
    if !other_failures.is_empty() || failed > mid_dialog {
        problems.push(format!(
            "{failed} failed calls: {mid_dialog} lost with their backend, unexplained: {other_failures:?}"
        ));
    }
    if ok + failed < created {
        problems.push(format!("{} calls neither succeeded nor failed", created - ok - failed));
    }
    if module_idle_after as f64 > module_idle_before as f64 * 1.01 {
        problems.push(format!("the dispatcher module holds {module_idle_before} bytes of shm before the calls and {module_idle_after} after them"));
    }
    if after_mod.len() < 6 {
        problems.push(format!("too few shm samples after warm-up: {}", after_mod.len()));
    } else if mgrowth >= 1.0 {
        problems.push(format!("the dispatcher module's shm grew {mgrowth:.3} % after warm-up (limit 1 %)"));
    }
    if !zero {
        problems.push(format!("call load not back to 0: {loads:?}"));
    }
    if ops[0].load(Ordering::Relaxed) == 0 || ops[1].load(Ordering::Relaxed) == 0 || ops[2].load(Ordering::Relaxed) == 0 {
        problems.push("the storm did not run every operation".to_string());
    }
    for p in stable.iter_mut() {
        p.stop(Duration::from_millis(500));
    }
    kam.stop();
    assert!(problems.is_empty(), "soak failed:\n  {}\n{}", problems.join("\n  "), kam.log_hint());
}
