//! Issue 12 (counters, `dispatcher.stats` / `dispatcher.metrics`, the xhttp scrape
//! endpoint of cfg-examples/metrics.cfg) and issue 11 part 4 (passive failure detection),
//! through a real Kamailio and SIPp backends. Rust module only (the C module has none of
//! this): with `DS_TEST_MODULE=c` the tests return at once.

mod common;
#[path = "common/db_util.rs"]
mod db_util;

use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::time::Duration;

fn rust_only() -> bool {
    ModuleKind::from_env() == ModuleKind::Rust
}

/// `dispatcher.stats` as one map per destination URI: "SELECTED", "REPLIES/5xx", ...
fn stats(kam: &Kamailio, args: &[&str]) -> BTreeMap<String, HashMap<String, String>> {
    let mut a = vec!["dispatcher.stats"];
    a.extend_from_slice(args);
    let text = kam.kamcmd(&a).unwrap_or_else(|e| panic!("dispatcher.stats: {e}"));
    parse_stats(&text)
}

fn parse_stats(text: &str) -> BTreeMap<String, HashMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut cur: HashMap<String, String> = HashMap::new();
    let mut prefix: Vec<String> = Vec::new();
    let mut depth = 0;
    for line in text.lines() {
        let l = line.trim();
        if l == "{" {
            depth += 1;
            continue;
        }
        if l == "}" {
            depth -= 1;
            if depth == 0 {
                let uri = cur.get("URI").cloned().unwrap_or_default();
                out.insert(uri, std::mem::take(&mut cur));
            } else {
                prefix.pop();
            }
            continue;
        }
        if let Some(k) = l.strip_suffix(": {") {
            depth += 1;
            prefix.push(k.to_string());
            continue;
        }
        if let Some((k, v)) = l.split_once(": ") {
            let key = if prefix.is_empty() { k.to_string() } else { format!("{}/{k}", prefix.join("/")) };
            cur.insert(key, v.to_string());
        }
    }
    out
}

fn n(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {k} in {m:?}"))
}

/// One sample of the exposition: (family, labels, value).
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict checker of the Prometheus text exposition format (0.0.4): every line is a
/// `# HELP`, a `# TYPE` or a sample; metric and label names valid; label values quoted with
/// only `\\`, `\"`, `\n` escapes; each family's TYPE once, before its samples, samples of a
/// family contiguous; no duplicate series; values floats. Returns the samples.
fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
    fn name_ok(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    if !text.ends_with('\n') {
        return Err("text does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut done_families: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let fam = parts.next().ok_or(format!("line {ln}: no metric name"))?.to_string();
            if !name_ok(&fam) {
                return Err(format!("line {ln}: bad metric name {fam}"));
            }
            let arg = parts.next().unwrap_or("");
            match kw {
                "HELP" => {
                    if !helped.insert(fam.clone()) {
                        return Err(format!("line {ln}: second HELP for {fam}"));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(format!("line {ln}: bad type {arg}"));
                    }
                    if types.insert(fam.clone(), arg.to_string()).is_some() {
                        return Err(format!("line {ln}: second TYPE for {fam}"));
                    }
                    if done_families.contains(&fam) || current.as_deref() == Some(&fam) {
                        return Err(format!("line {ln}: TYPE after samples of {fam}"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // name{labels} value
        let (name, rest) = match line.find('{') {
            Some(p) => (&line[..p], &line[p..]),
            None => line.split_at(line.find(' ').ok_or(format!("line {ln}: no value"))?),
        };
        if !name_ok(name) {
            return Err(format!("line {ln}: bad metric name {name}"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if rest.starts_with('{') {
            let b = rest.as_bytes();
            let mut i = 1;
            loop {
                if b.get(i) == Some(&b'}') {
                    i += 1;
                    break;
                }
                let eq = rest[i..].find('=').ok_or(format!("line {ln}: label without ="))? + i;
                let lname = &rest[i..eq];
                if !name_ok(lname) || lname.contains(':') {
                    return Err(format!("line {ln}: bad label name {lname:?}"));
                }
                if b.get(eq + 1) != Some(&b'"') {
                    return Err(format!("line {ln}: unquoted label value"));
                }
                let mut j = eq + 2;
                let mut val = String::new();
                loop {
                    match b.get(j) {
                        None => return Err(format!("line {ln}: unterminated label value")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            match b.get(j + 1) {
                                Some(b'\\') => val.push('\\'),
                                Some(b'"') => val.push('"'),
                                Some(b'n') => val.push('\n'),
                                _ => return Err(format!("line {ln}: bad escape")),
                            }
                            j += 2;
                        }
                        Some(_) => {
                            let ch = rest[j..].chars().next().ok_or("utf8")?;
                            val.push(ch);
                            j += ch.len_utf8();
                        }
                    }
                }
                if labels.insert(lname.to_string(), val).is_some() {
                    return Err(format!("line {ln}: duplicate label {lname}"));
                }
                i = j + 1;
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {}
                    _ => return Err(format!("line {ln}: expected , or }}")),
                }
            }
            rest = &rest[i..];
        }
        let value = rest.strip_prefix(' ').ok_or(format!("line {ln}: no space before the value"))?;
        let v: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().map_err(|_| format!("line {ln}: bad value {s:?}"))?,
        };
        let fam = name.to_string();
        if !types.contains_key(&fam) {
            return Err(format!("line {ln}: sample of {fam} without TYPE before it"));
        }
        if current.as_deref() != Some(&fam) {
            if let Some(c) = current.take() {
                done_families.insert(c);
            }
            if done_families.contains(&fam) {
                return Err(format!("line {ln}: samples of {fam} not contiguous"));
            }
            current = Some(fam.clone());
        }
        if !series.insert(format!("{fam}{labels:?}")) {
            return Err(format!("line {ln}: duplicate series"));
        }
        samples.push((fam, labels, v));
    }
    Ok(samples)
}

fn metric(samples: &[Sample], fam: &str, uri: &str, class: Option<&str>) -> f64 {
    samples
        .iter()
        .find(|(f, l, _)| f == fam && l.get("uri").map(String::as_str) == Some(uri) && l.get("class").map(String::as_str) == class)
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no sample {fam} uri={uri} class={class:?}"))
}

/// Python's prometheus_client parser, when installed (optional cross-check).
fn python_parse(text: &str, dir: &std::path::Path) -> Option<Result<usize, String>> {
    let ok = std::process::Command::new("python3").args(["-c", "import prometheus_client"]).output().ok()?;
    if !ok.status.success() {
        return None;
    }
    let f = dir.join("metrics.txt");
    fs::write(&f, text).ok()?;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nn=sum(len(f.samples) for f in p(open(sys.argv[1]).read()))\nprint(n)")
        .arg(&f)
        .output()
        .ok()?;
    Some(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

#[test]
fn exposition_checker_rejects_bad_text() {
    assert!(check_exposition("# TYPE a counter\na{x=\"1\"} 2\n").is_ok());
    assert!(check_exposition("a 1\n").is_err(), "no TYPE");
    assert!(check_exposition("# TYPE a counter\na{x=\"1} 2\n").is_err(), "unterminated");
    assert!(check_exposition("# TYPE a counter\na{x=\"\\q\"} 2\n").is_err(), "bad escape");
    assert!(check_exposition("# TYPE a counter\n# TYPE b counter\na 1\nb 1\na{x=\"2\"} 1\n").is_err(), "not contiguous");
    assert!(check_exposition("# TYPE a counter\na 1\na 2\n").is_err(), "duplicate");
    assert!(check_exposition("# TYPE a counter\na x\n").is_err(), "bad value");
}

/// 3 backends (200, 503, slow 200), alg 4, failover with ds_next_dst: the counters equal
/// what the backends themselves received; `dispatcher.metrics` is valid exposition text
/// with the same numbers.
#[test]
fn counters_match_backend_counts() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("counters_match_backend_counts");
    let ok = SippUas::start(&dir, "ok", UasKind::Ok200);
    let bad = SippUas::start(&dir, "e503", UasKind::Data("uas_503.xml"));
    let slow = SippUas::start(&dir, "slow", UasKind::Data("uas_200_slow.xml"));
    let list = format!("1 {}\n1 {}\n1 {}\n", ok.uri(), bad.uri(), slow.uri());
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));
    let list_before = kam.kamcmd(&["dispatcher.list"]).expect("list");

    let calls = 300u64;
    let res = run_uac(&dir, "uac", kam.port, "rr", calls as u32, 60, Duration::from_secs(90));
    assert_eq!((res.successful, res.failed), (calls, 0), "{}\n{}", res.summary(), kam.log_hint());

    let (a, b, c) = {
        let mut v = (0, 0, 0);
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            v = (ok.invites() as u64, bad.invites() as u64, slow.invites() as u64);
            v.0 + v.2 >= calls
        });
        v
    };
    eprintln!("backends: 200 {a}, 503 {b}, slow {c}");
    assert_eq!(a + c, calls, "every call answered once by a 200 backend");
    // the in-flight count drains when the transactions end
    let mut st = stats(&kam, &[]);
    wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        st = stats(&kam, &[]);
        st.values().all(|m| n(m, "INFLIGHT") == 0)
    });
    eprintln!("stats: {st:?}");
    let (sa, sb, sc) = (&st[&ok.uri()], &st[&bad.uri()], &st[&slow.uri()]);
    // round-robin first choices are exact: a third each
    for m in [sa, sb, sc] {
        assert_eq!(n(m, "SELECTED"), calls / 3, "{m:?}");
        assert_eq!(n(m, "INFLIGHT"), 0, "{m:?}");
        assert_eq!(n(m, "TIMEOUTS"), 0, "{m:?}");
    }
    // every INVITE a backend received was one selection or one failover to it
    assert_eq!(n(sa, "SELECTED") + n(sa, "FAILOVER"), a);
    assert_eq!(n(sb, "SELECTED") + n(sb, "FAILOVER"), b);
    assert_eq!(n(sc, "SELECTED") + n(sc, "FAILOVER"), c);
    assert_eq!(n(sb, "SELECTED"), b, "the 503 backend only gets first attempts");
    assert_eq!(n(sa, "FAILOVER") + n(sb, "FAILOVER") + n(sc, "FAILOVER"), b, "one failover per 503");
    // replies by class
    assert_eq!(n(sb, "REPLIES/5xx"), b, "{sb:?}");
    assert_eq!(n(sb, "REPLIES/2xx"), 0);
    assert_eq!(n(sa, "REPLIES/2xx"), a);
    assert_eq!(n(sc, "REPLIES/2xx"), c);
    for m in [sa, sc] {
        assert_eq!(n(m, "REPLIES/5xx"), 0);
    }
    // one set: the same with the set id, an unknown set is a fault
    assert_eq!(stats(&kam, &["1"]).len(), 3);
    assert!(kam.kamcmd(&["dispatcher.stats", "7"]).is_err());

    // metrics: valid exposition, same numbers
    let text = kam.kamcmd(&["dispatcher.metrics"]).expect("metrics");
    // kamcmd prints the string without its last newline (the HTTP test checks the raw text)
    let text = format!("{}\n", text.trim_end_matches('\n'));
    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (uri, m) in [(ok.uri(), sa), (bad.uri(), sb), (slow.uri(), sc)] {
        assert_eq!(metric(&samples, "kamailio_dispatcher_selected_total", &uri, None) as u64, n(m, "SELECTED"));
        assert_eq!(metric(&samples, "kamailio_dispatcher_failover_total", &uri, None) as u64, n(m, "FAILOVER"));
        for k in 1..=6 {
            let class = format!("{k}xx");
            assert_eq!(
                metric(&samples, "kamailio_dispatcher_replies_total", &uri, Some(&class)) as u64,
                n(m, &format!("REPLIES/{class}"))
            );
        }
        assert_eq!(metric(&samples, "kamailio_dispatcher_up", &uri, None), 1.0);
        assert_eq!(metric(&samples, "kamailio_dispatcher_inflight", &uri, None), 0.0);
    }
    if let Some(r) = python_parse(&text, &dir) {
        assert_eq!(r.expect("prometheus_client parse"), samples.len());
    }
    // counting changed nothing of dispatcher.list
    assert_eq!(kam.kamcmd(&["dispatcher.list"]).expect("list"), list_before);

    // counters survive a reload for destinations that stay
    write_file(&kam.list_path, &format!("1 {}\n1 {}\n", ok.uri(), slow.uri()));
    kam.kamcmd(&["dispatcher.reload"]).expect("reload");
    let st2 = stats(&kam, &[]);
    assert_eq!(st2.len(), 2);
    assert_eq!(n(&st2[&ok.uri()], "SELECTED"), n(sa, "SELECTED"));
    assert_eq!(n(&st2[&slow.uri()], "REPLIES/2xx"), c);
}

/// cfg-examples/metrics.cfg: the scrape endpoint over HTTP (xhttp on Kamailio's own TCP
/// listener), read with curl.
#[test]
fn metrics_scrape_endpoint() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("metrics_scrape_endpoint");
    let ok = SippUas::start(&dir, "ok", UasKind::Ok200);
    let bad = SippUas::start(&dir, "e503", UasKind::Data("uas_503.xml"));
    let kdir = dir.join("kamailio");
    fs::create_dir_all(&kdir).expect("mkdir");
    let list = kdir.join("dispatcher.list");
    write_file(&list, &format!("1 {}\n1 {}\n", ok.uri(), bad.uri()));
    let (port, http) = (free_port(), free_port());
    let ctl = ctl_socket_path(&kdir);
    let cfg = manifest_dir().join("cfg-examples").join("metrics.cfg");
    let md = module_dir(&dir, kind);
    let log_path = kdir.join("kamailio.log");
    let mut cmd = kamailio_cmd(&cfg, &md, &kdir);
    cmd.args(["-A", &format!("LISTEN_PORT={port}")])
        .args(["-A", &format!("HTTP_PORT={http}")])
        .args(["-A", &format!("DS_LIST_FILE=\"{}\"", list.display())])
        .args(["-A", &format!("CTL_SOCKET=\"unix:{}\"", ctl.display())])
        .current_dir(&kdir)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log_path).expect("log"));
    let mut kam = Proc::spawn("kamailio metrics.cfg", &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let hint = || format!("run dir {}\n--- kamailio.log tail ---\n{}", kdir.display(), tail(&log_path, 30));
    let ready = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        kam.try_wait().is_some() || (ctl.exists() && kamcmd_at(&ctl, &["dispatcher.list"]).is_ok())
    });
    assert!(ready && kam.try_wait().is_none(), "metrics.cfg did not come up\n{}", hint());
    let res = run_uac(&dir, "uac", port, "svc", 20, 20, Duration::from_secs(30));
    assert_eq!((res.successful, res.failed), (20, 0), "{}\n{}", res.summary(), hint());

    let url = format!("http://127.0.0.1:{http}/metrics");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", &url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let resp = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP header end: {resp}"));
    assert!(head.starts_with("HTTP/1.") && head.lines().next().unwrap_or("").contains(" 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let samples = check_exposition(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(metric(&samples, "kamailio_dispatcher_selected_total", &ok.uri(), None), 10.0, "{body}");
    assert_eq!(metric(&samples, "kamailio_dispatcher_selected_total", &bad.uri(), None), 10.0, "{body}");
    assert_eq!(metric(&samples, "kamailio_dispatcher_failover_total", &ok.uri(), None), 10.0, "{body}");
    assert_eq!(metric(&samples, "kamailio_dispatcher_replies_total", &bad.uri(), Some("5xx")), 10.0, "{body}");
    assert_eq!(metric(&samples, "kamailio_dispatcher_replies_total", &ok.uri(), Some("2xx")), 20.0, "{body}");
    // anything else: 404
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", &format!("http://127.0.0.1:{http}/other")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    kam.stop(Duration::from_secs(5));
    let _ = fs::remove_file(&ctl);
}

/// A module dir for `-L`: Kamailio's modules, `dispatcher.so` the module under test.
fn module_dir(dir: &std::path::Path, kind: ModuleKind) -> std::path::PathBuf {
    let md = dir.join("modules");
    fs::create_dir_all(&md).expect("mkdir modules");
    for e in fs::read_dir(&*MODULES_DIR).expect("read modules dir").flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".so") && name != "dispatcher.so" {
            let _ = std::os::unix::fs::symlink(e.path(), md.join(&name));
        }
    }
    let _ = std::os::unix::fs::symlink(kind.so_path(), md.join("dispatcher.so"));
    md
}

/// `calls` calls one after the other (sipp -l 1) against the test cfg's `rr` route.
fn run_serial(dir: &std::path::Path, label: &str, port: u16, calls: u64) -> UacResult {
    let files = UacFiles::new(dir, label);
    let timeout = Duration::from_secs(60);
    let mut cmd = sipp_uac_command(&data_dir().join("uac.xml"), "rr", port, calls, 20, 1, timeout, dir, &files);
    let start = std::time::Instant::now();
    let mut p = Proc::spawn(&format!("sipp uac {label}"), &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let st = p.wait_timeout(timeout + Duration::from_secs(10));
    if st.is_none() {
        p.stop(Duration::from_secs(2));
    }
    let (created, successful, failed) = parse_sipp_stat(&files.stat_file);
    UacResult {
        exit_code: st.and_then(|s| s.code()),
        created,
        successful,
        failed,
        elapsed: start.elapsed(),
        dir_hint: format!("see {}", files.out_file.display()),
    }
}

/// The FLAGS of `uri` in `dispatcher.list`.
fn flags_of(kam: &Kamailio, uri: &str) -> String {
    let text = kam.kamcmd(&["dispatcher.list"]).unwrap_or_default();
    let mut it = text.lines().map(str::trim);
    while let Some(l) = it.next() {
        if l == format!("URI: {uri}") {
            for l2 in it.by_ref() {
                if let Some(f) = l2.strip_prefix("FLAGS: ") {
                    return f.to_string();
                }
            }
        }
    }
    String::new()
}

const EVENT_ROUTE: &str = "event_route[dispatcher:dst-down] {\n\txlog(\"L_INFO\", \"DSTDOWN $rm $ru\\n\");\n}\n";

/// Passive failure detection, keepalives off: a backend that answers 503 receives no INVITE
/// after its 3rd failed call; the dst-down event runs once.
#[test]
fn passive_detection_503() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("passive_detection_503");
    let ok = SippUas::start(&dir, "ok", UasKind::Ok200);
    let bad = SippUas::start(&dir, "e503", UasKind::Data("uas_503.xml"));
    let list = format!("1 {}\n1 {}\n", ok.uri(), bad.uri());
    let tmpl = format!("{CFG_TEMPLATE}\n{EVENT_ROUTE}");
    let opts = KamOpts {
        extra_params: "modparam(\"dispatcher\", \"ds_passive_threshold\", 3)\n".into(),
        cfg_template: Some(tmpl),
        ..KamOpts::with_list(&list)
    };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    let res = run_serial(&dir, "uac", kam.port, 20);
    assert_eq!((res.successful, res.failed), (20, 0), "{}\n{}", res.summary(), kam.log_hint());
    assert_eq!(bad.invites(), 3, "no INVITE after the 3rd failed call\n{}", kam.log_hint());
    assert_eq!(ok.invites(), 20);
    assert_eq!(flags_of(&kam, &bad.uri()), "IX", "inactive, not probing (keepalives off)");
    assert_eq!(flags_of(&kam, &ok.uri()), "AX");
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(100), || kam.log_count("DSTDOWN") == 1), "one dst-down event\n{}", kam.log_hint());
    let st = stats(&kam, &[]);
    assert_eq!(n(&st[&bad.uri()], "REPLIES/5xx"), 3);
}

/// Passive failure detection on timeouts (keepalives off): a dead backend gets no new
/// INVITE after its 3rd timeout. Then, with keepalives on, a passively marked backend
/// comes back to AP when it answers again.
#[test]
fn passive_detection_timeouts_and_recovery() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("passive_detection_timeouts");
    let ok = SippUas::start(&dir, "ok", UasKind::Ok200);
    let dead_port = free_port();
    let dead = format!("sip:127.0.0.1:{dead_port}");
    let list = format!("1 {}\n1 {dead}\n", ok.uri());
    let opts = KamOpts {
        extra_params: "modparam(\"dispatcher\", \"ds_passive_threshold\", 3)\n".into(),
        fr_timer_ms: 500,
        fr_inv_timer_ms: 500,
        ..KamOpts::with_list(&list)
    };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    let res = run_serial(&dir, "uac", kam.port, 12);
    assert_eq!((res.successful, res.failed), (12, 0), "{}\n{}", res.summary(), kam.log_hint());
    let st = stats(&kam, &[]);
    let d = &st[&dead];
    assert_eq!((n(d, "SELECTED"), n(d, "TIMEOUTS")), (3, 3), "no new INVITE after the 3rd timeout: {d:?}");
    assert_eq!(n(d, "REPLIES/4xx"), 0, "local timeouts are no received replies");
    assert_eq!(flags_of(&kam, &dead), "IX");
    drop(kam);

    // keepalives on: marked inactive + probing, back to AP once the backend answers
    let opts = KamOpts {
        extra_params: "modparam(\"dispatcher\", \"ds_passive_threshold\", 3)\nmodparam(\"dispatcher\", \"ds_ping_interval\", 1)\nmodparam(\"dispatcher\", \"ds_probing_mode\", 1)\n".into(),
        fr_timer_ms: 500,
        fr_inv_timer_ms: 500,
        ..KamOpts::with_list(&list)
    };
    let kam = Kamailio::start(&dir, "kamailio2", kind, &opts);
    let res = run_serial(&dir, "uac2", kam.port, 8);
    assert_eq!((res.successful, res.failed), (8, 0), "{}\n{}", res.summary(), kam.log_hint());
    let f = flags_of(&kam, &dead);
    assert!(f == "IP" || f == "TP", "down and probing: {f}\n{}", kam.log_hint());
    let back = SippUas::start_on(&dir, "back", UasKind::Ok200, dead_port);
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || flags_of(&kam, &dead) == "AP"),
        "back to AP after keepalives succeed: {}\n{}",
        flags_of(&kam, &dead),
        kam.log_hint()
    );
    let st = stats(&kam, &[]);
    assert!(n(&st[&dead], "PINGS/OK") >= 1 && n(&st[&dead], "PINGS/SENT") >= n(&st[&dead], "PINGS/OK"), "{:?}", st[&dead]);
    drop(back);
}

/// Detection time of a dead backend under traffic (10 calls/s): passive detection (Rust
/// module, threshold 3, keepalives off) vs keepalives only (the C module, ds_ping_interval
/// 10, defaults otherwise). Prints both figures; asserts only that passive detection happened.
#[test]
fn detection_time_passive_vs_keepalive() {
    if !rust_only() {
        return;
    }
    let dir = run_dir("detection_time");
    let ok = SippUas::start(&dir, "ok", UasKind::Ok200);
    let dead_port = free_port();
    let dead = format!("sip:127.0.0.1:{dead_port}");
    let list = format!("1 {}\n1 {dead}\n", ok.uri());
    let mut times = Vec::new();
    for (kind, params, label) in [
        (ModuleKind::Rust, "modparam(\"dispatcher\", \"ds_passive_threshold\", 3)\n", "rust-passive"),
        (
            ModuleKind::C,
            "modparam(\"dispatcher\", \"ds_ping_interval\", 10)\nmodparam(\"dispatcher\", \"ds_probing_mode\", 1)\n",
            "c-keepalive",
        ),
    ] {
        let opts = KamOpts { extra_params: params.into(), fr_timer_ms: 1000, fr_inv_timer_ms: 1000, ..KamOpts::with_list(&list) };
        let kam = Kamailio::start(&dir, label, kind, &opts);
        let files = UacFiles::new(&dir, &format!("uac-{label}"));
        let mut cmd = sipp_uac_command(&data_dir().join("uac.xml"), "rr", kam.port, 400, 10, 50, Duration::from_secs(40), &dir, &files);
        let start = std::time::Instant::now();
        let mut p = Proc::spawn("sipp uac", &mut cmd).unwrap_or_else(|e| panic!("{e}"));
        let mut t = None;
        wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            if !flags_of(&kam, &dead).starts_with('A') {
                t = Some(start.elapsed());
                true
            } else {
                false
            }
        });
        p.stop(Duration::from_secs(2));
        eprintln!("detection time {label}: {:?}", t);
        times.push((label, t));
    }
    let passive = times[0].1.expect("passive detection happened");
    assert!(passive < Duration::from_secs(10), "{times:?}");
    eprintln!("DETECTION {times:?}");
}

/// `dispatcher.validate` names every bad line and changes nothing; `dispatcher.diff`
/// reports exactly the added, removed and changed destinations.
#[test]
fn validate_and_diff() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("validate_and_diff");
    let (a, b, c, d) = ("sip:127.0.0.1:5071", "sip:127.0.0.1:5072", "sip:127.0.0.1:5073", "sip:127.0.0.1:5074");
    let list = format!("1 {a}\n1 {b} 0 0 duid=b\n2 {c} 0 1 duid=c\n");
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));
    let before = kam.kamcmd(&["dispatcher.list"]).expect("list");

    // the configured source
    let ok = kam.kamcmd(&["dispatcher.validate"]).expect("validate");
    assert!(ok.contains("STATUS: OK") && ok.contains("SETS: 2") && ok.contains("DESTINATIONS: 3"), "{ok}");

    // a broken file: every bad line named with file:line:col
    // relative to Kamailio's working dir (its run dir): short names keep the fault text
    // under binrpc's 256-byte limit
    let broken = kam.dir.join("b.list");
    write_file(&broken, &format!("1 {a}\n7\n2 sip:127.0.0.1:5075 0 0 weight=abc\n3 sip:@@@:bad:uri\n1 {d}\n"));
    let p = "b.list".to_string();
    let err = kam.kamcmd(&["dispatcher.validate", &p]).expect_err("broken list must fail");
    eprintln!("validate: {err}");
    assert!(err.contains(&format!("{p}:2:")), "line 2 named: {err}");
    assert!(err.contains(&format!("{p}:4:")), "line 4 named: {err}");
    assert!(!err.contains(&format!("{p}:1:")) && !err.contains(&format!("{p}:5:")), "good lines not named: {err}");
    // a missing file
    assert!(kam.kamcmd(&["dispatcher.validate", "/nonexistent/x.list"]).is_err());
    assert_eq!(kam.kamcmd(&["dispatcher.list"]).expect("list"), before, "validate changed the running list");

    // diff: b removed, d added, c's priority and attrs changed, a unchanged
    let next = dir.join("next.list");
    write_file(&next, &format!("1 {a}\n1 {d}\n2 {c} 0 5 duid=c;weight=50\n"));
    let out = kam.kamcmd(&["dispatcher.diff", &next.display().to_string()]).expect("diff");
    eprintln!("diff:\n{out}");
    assert!(out.contains("ADDED: 1") && out.contains("REMOVED: 1") && out.contains("CHANGED: 1"), "{out}");
    let blocks: Vec<&str> = out.split("}\n{").collect();
    let find = |action: &str, uri: &str| blocks.iter().any(|b| b.contains(&format!("ACTION: {action}")) && b.contains(&format!("URI: {uri}")));
    assert!(find("add", d) && find("remove", b) && find("change", c), "{out}");
    assert!(!out.contains(&format!("URI: {a}")), "unchanged destination listed: {out}");
    assert!(out.contains("priority: 1 -> 5") && out.contains("attrs: duid=c -> duid=c;weight=50"), "{out}");
    assert!(!out.contains("flags:"), "{out}");
    // the configured source: no change
    let none = kam.kamcmd(&["dispatcher.diff"]).expect("diff");
    assert!(none.contains("ADDED: 0") && none.contains("REMOVED: 0") && none.contains("CHANGED: 0"), "{none}");
    assert_eq!(kam.kamcmd(&["dispatcher.list"]).expect("list"), before, "diff changed the running list");
}

/// `dispatcher.update` changes priority and attrs in place; the state flags and counters
/// stay; every bad call changes nothing; `reload_delta` applies.
#[test]
fn update_in_place() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("update_in_place");
    let a = SippUas::start(&dir, "a", UasKind::Ok200);
    let b = SippUas::start(&dir, "b", UasKind::Ok200);
    let (ua, ub) = (a.uri(), b.uri());
    let list = format!("1 {ua} 0 0 duid=a\n1 {ub} 0 0 duid=b\n");
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));
    let res = run_uac(&dir, "uac", kam.port, "rr", 10, 20, Duration::from_secs(30));
    assert_eq!((res.successful, res.failed), (10, 0), "{}", res.summary());
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || stats(&kam, &[]).values().all(|m| n(m, "INFLIGHT") == 0));
    kam.kamcmd(&["dispatcher.set_state", "ip", "1", &ua]).expect("set_state");
    let st0 = stats(&kam, &[]);
    assert_eq!(n(&st0[&ua], "SELECTED"), 5);
    assert_eq!(flags_of(&kam, &ua), "IP");

    let out = kam.kamcmd(&["dispatcher.update", "1", &ua, "0", "7", "duid=a;weight=20"]).expect("update");
    assert!(out.contains("updated"), "{out}");
    let l = kam.kamcmd(&["dispatcher.list"]).expect("list");
    let block = l.split("DEST: {").find(|blk| blk.contains(&format!("URI: {ua}"))).unwrap_or_else(|| panic!("{l}"));
    assert!(block.contains("PRIORITY: 7") && block.contains("BODY: duid=a;weight=20"), "{block}");
    assert_eq!(flags_of(&kam, &ua), "IP", "the state stays");
    assert_eq!(stats(&kam, &[]), st0, "the counters stay");
    // the higher priority goes first, as a reload would place it
    assert!(l.find(&ua) < l.find(&ub), "{l}");

    let before = kam.kamcmd(&["dispatcher.list"]).expect("list");
    for bad in [
        vec!["9", ua.as_str(), "0", "0", ""],
        vec!["1", "sip:127.0.0.1:1", "0", "0", ""],
        vec!["1", ua.as_str(), "999", "0", ""],
        vec!["1", ua.as_str(), "-1", "0", ""],
        vec!["1", ua.as_str(), "0", "0", "duid=\"open"],
        vec!["1", ua.as_str(), "0", "0", "a=1;;"],
        vec!["1", ua.as_str()],
    ] {
        let mut args = vec!["dispatcher.update"];
        args.extend(bad.iter().copied());
        assert!(kam.kamcmd(&args).is_err(), "{bad:?} must fail");
        assert_eq!(kam.kamcmd(&["dispatcher.list"]).expect("list"), before, "{bad:?} changed the list");
        assert_eq!(stats(&kam, &[]), st0, "{bad:?} changed the counters");
    }
    drop(kam);

    // reload_delta: a second update within the delta is refused and changes nothing
    let opts = KamOpts { extra_params: "modparam(\"dispatcher\", \"reload_delta\", 30)\n".into(), ..KamOpts::with_list(&list) };
    let kam = Kamailio::start(&dir, "kamailio2", kind, &opts);
    kam.kamcmd(&["dispatcher.update", "1", &ub, "0", "3", "duid=b"]).expect("first update");
    let before = kam.kamcmd(&["dispatcher.list"]).expect("list");
    let e = kam.kamcmd(&["dispatcher.update", "1", &ua, "0", "9", "duid=a"]).expect_err("within reload_delta");
    assert!(e.contains("Ongoing reload"), "{e}");
    assert_eq!(kam.kamcmd(&["dispatcher.list"]).expect("list"), before);
}

/// A send failure (TCP connect refused: `t_relay` fails, the script answers 477) counts as a
/// failed transaction when TM ends the transaction (TM records a local 408 on the branch):
/// after 3 of them the destination is inactive and gets no more requests.
#[test]
fn passive_detection_send_failure() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("passive_detection_send_failure");
    let ok = SippUas::start(&dir, "ok", UasKind::Ok200);
    let closed = free_port();
    let bad = format!("sip:127.0.0.1:{closed};transport=tcp");
    let list = format!("1 {}\n1 {bad}\n", ok.uri());
    let tmpl = CFG_TEMPLATE.replace("disable_tcp=yes", "listen=tcp:127.0.0.1:{{PORT}}");
    let opts = KamOpts {
        extra_params: "modparam(\"dispatcher\", \"ds_passive_threshold\", 3)\n".into(),
        cfg_template: Some(tmpl),
        ..KamOpts::with_list(&list)
    };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    let res = run_serial(&dir, "uac1", kam.port, 6);
    assert_eq!(res.failed, 3, "the calls to the closed TCP port fail: {}", res.summary());
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || flags_of(&kam, &bad) == "IX"),
        "inactive after 3 send failures: {}\n{}",
        flags_of(&kam, &bad),
        kam.log_hint()
    );
    let st = stats(&kam, &[]);
    assert_eq!(n(&st[&bad], "SELECTED"), 3);
    let res = run_serial(&dir, "uac2", kam.port, 6);
    assert_eq!((res.successful, res.failed), (6, 0), "{}", res.summary());
    assert_eq!(n(&stats(&kam, &[])[&bad], "SELECTED"), 3, "no request to the inactive destination");
}

/// Counters stay exact across reloads under traffic: what a process counts on a list that a
/// reload has just replaced is forwarded to the new list when the old one is freed.
#[test]
fn counters_exact_across_reload_storm() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("counters_exact_across_reload_storm");
    let uas: Vec<SippUas> = (0..3).map(|i| SippUas::start(&dir, &format!("ok{i}"), UasKind::Ok200)).collect();
    let list: String = uas.iter().map(|u| format!("1 {}\n", u.uri())).collect();
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&list));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ctl = kam.ctl_path.clone();
    let s2 = stop.clone();
    let storm = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
            if kamcmd_at(&ctl, &["dispatcher.reload"]).is_ok() {
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    let calls = 300u64;
    let res = run_uac(&dir, "uac", kam.port, "rr", calls as u32, 100, Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reloads = storm.join().expect("storm thread");
    assert_eq!((res.successful, res.failed), (calls, 0), "{}", res.summary());
    // two more reloads free the lists the storm retired
    std::thread::sleep(Duration::from_millis(300));
    kam.kamcmd(&["dispatcher.reload"]).expect("reload");
    kam.kamcmd(&["dispatcher.reload"]).expect("reload");
    let mut st = stats(&kam, &[]);
    wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        st = stats(&kam, &[]);
        st.values().all(|m| n(m, "INFLIGHT") == 0)
    });
    eprintln!("{reloads} reloads during the calls; stats {st:?}");
    assert!(reloads >= 20, "the storm ran: {reloads}");
    let total: u64 = st.values().map(|m| n(m, "SELECTED")).sum();
    let ok: u64 = st.values().map(|m| n(m, "REPLIES/2xx")).sum();
    assert_eq!((total, ok), (calls, calls), "{st:?}");
    for u in &uas {
        let m = &st[&u.uri()];
        assert_eq!(n(m, "SELECTED"), u.invites() as u64, "{}: {m:?}", u.label);
        assert_eq!(n(m, "INFLIGHT"), 0, "{m:?}");
    }
}

/// `ds_select()` (XAVP mode) counts `SELECTED` without reply tracking; `ds_select_dst()`
/// run several times on one request (a cfg loop) counts each selection and tracks the
/// request once.
#[test]
fn selected_by_ds_select_and_loops() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("selected_by_ds_select_and_loops");
    let list = "1 sip:127.0.0.1:5091\n1 sip:127.0.0.1:5092\n";
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(list));
    for _ in 0..4 {
        let r = kam.request("sel-1-4", &[("X-Func", "select")]);
        assert_eq!(r.status, 200, "{}", r.raw);
    }
    let st = stats(&kam, &[]);
    for m in st.values() {
        assert_eq!((n(m, "SELECTED"), n(m, "INFLIGHT")), (2, 0), "{m:?}");
    }
    let r = kam.request("sel-1-4", &[("X-Repeat", "3")]);
    assert_eq!(r.status, 200, "{}", r.raw);
    let st = stats(&kam, &[]);
    assert_eq!(st.values().map(|m| n(m, "SELECTED")).sum::<u64>(), 7, "{st:?}");
    // answered statelessly (never forwarded): nothing in flight
    assert!(stats(&kam, &[]).values().all(|m| n(m, "INFLIGHT") == 0));
}

/// `INFLIGHT` counts the transactions open at a slow backend and drains to 0.
#[test]
fn inflight_rises_and_drains() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("inflight_rises_and_drains");
    let slow = SippUas::start(&dir, "slow", UasKind::Data("uas_200_slow.xml"));
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(&format!("1 {}\n", slow.uri())));
    let files = UacFiles::new(&dir, "uac");
    let mut cmd = sipp_uac_command(&data_dir().join("uac.xml"), "rr", kam.port, 40, 40, 40, Duration::from_secs(30), &dir, &files);
    let mut p = Proc::spawn("sipp uac", &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let mut max = 0;
    wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        max = max.max(n(&stats(&kam, &[])[&slow.uri()], "INFLIGHT"));
        max >= 3
    });
    let _ = p.wait_timeout(Duration::from_secs(40));
    assert!(max >= 3, "transactions in flight seen: {max}");
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(100), || n(&stats(&kam, &[])[&slow.uri()], "INFLIGHT") == 0));
    assert_eq!(n(&stats(&kam, &[])[&slow.uri()], "REPLIES/2xx"), 40);
}

/// `dispatcher.validate` and `dispatcher.diff` with the configured DB source (db_sqlite).
#[test]
fn validate_and_diff_db_source() {
    if !rust_only() {
        return;
    }
    let kind = ModuleKind::from_env();
    let dir = run_dir("validate_and_diff_db_source");
    let db = dir.join("ds.sqlite");
    db_util::sqlite_create(
        &db,
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) VALUES \
           (1, 'sip:127.0.0.1:5081', 0, 0, 'duid=a', 'a'), (1, 'sip:127.0.0.1:5082', 0, 0, 'duid=b', 'b');",
    );
    let opts = KamOpts {
        children: 2,
        extra_params: db_util::db_params(&db_util::sqlite_url(&db), ""),
        cfg_template: Some(db_util::db_cfg_template("db_sqlite.so")),
        ..KamOpts::default()
    };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    let before = kam.kamcmd(&["dispatcher.list"]).expect("list");
    let ok = kam.kamcmd(&["dispatcher.validate"]).expect("validate");
    assert!(ok.contains("SOURCE: table dispatcher") && ok.contains("DESTINATIONS: 2"), "{ok}");
    db_util::sqlite_exec(&db, "INSERT INTO dispatcher (setid, destination, attrs) VALUES (2, 'sip:127.0.0.1:5083', 'duid=c'); DELETE FROM dispatcher WHERE destination='sip:127.0.0.1:5082';");
    let d = kam.kamcmd(&["dispatcher.diff"]).expect("diff");
    assert!(d.contains("ADDED: 1") && d.contains("REMOVED: 1") && d.contains("CHANGED: 0"), "{d}");
    assert!(d.contains("URI: sip:127.0.0.1:5083") && d.contains("URI: sip:127.0.0.1:5082"), "{d}");
    assert_eq!(kam.kamcmd(&["dispatcher.list"]).expect("list"), before, "diff/validate changed the running list");
}
