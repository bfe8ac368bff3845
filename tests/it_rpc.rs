//! RPC behaviour through kamcmd: dispatcher.list compared with Debian's C module,
//! dispatcher.reload (changed, broken and missing lists), dispatcher.hash and the empty list.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `DS_TEST_MODULE=c`.

mod common;

use common::*;
use std::fs;

const RELOAD_OK: &str = "Ok. Dispatcher successfully reloaded.";

/// Set ids in `dispatcher.list` order.
fn set_ids(list: &Node) -> Vec<String> {
    list.path("RECORDS")
        .map(|r| r.get_all("SET").iter().filter_map(|s| s.path_val("ID").map(str::to_string)).collect())
        .unwrap_or_default()
}

/// All destination URIs of set `id`, in list order.
fn set_uris(list: &Node, id: &str) -> Vec<String> {
    let Some(records) = list.path("RECORDS") else { return vec![] };
    for s in records.get_all("SET") {
        if s.path_val("ID") == Some(id) {
            return s
                .path("TARGETS")
                .map(|t| t.get_all("DEST").iter().filter_map(|d| d.path_val("URI").map(str::to_string)).collect())
                .unwrap_or_default();
        }
    }
    vec![]
}

/// The flattened tree with this instance's port replaced by `{{PORT}}` (list files refer
/// to the listen socket, which differs between the two Kamailio instances).
fn normalized(list: &Node, port: u16) -> Vec<String> {
    let p = format!("127.0.0.1:{port}");
    list.flatten().into_iter().map(|l| normalize_iuid(&l.replace(&p, "127.0.0.1:{{PORT}}"))).collect()
}


struct ListCase {
    file: &'static str,
    /// expected set order of dispatcher.list (AVL post-order) and NRSETS
    sets: &'static [&'static str],
    /// expected URIs of the first listed set, in array order
    first_set_uris: &'static [&'static str],
}

const LIST_CASES: &[ListCase] = &[
    ListCase {
        file: "priorities.list",
        sets: &["2", "1"],
        first_set_uris: &[
            "sips:127.0.0.1:5085",
            "sip:localhost:5084",
            "sip:127.0.0.1:5083",
            "sip:127.0.0.1:5082;transport=tcp",
            "sip:127.0.0.1:5081;transport=udp",
        ],
    },
    ListCase {
        file: "sets-order.list",
        sets: &["1", "3", "10", "4", "2"],
        first_set_uris: &["sip:127.0.0.1:5103", "sip:127.0.0.1:5102", "sip:127.0.0.1:5101"],
    },
    ListCase {
        file: "edge-crlf.list",
        sets: &["6", "5"],
        first_set_uris: &["sip:127.0.0.1:5602", "sip:127.0.0.1:5601"],
    },
    ListCase {
        file: "skipped.list",
        sets: &["8", "7"],
        first_set_uris: &["sip:127.0.0.1:5801"],
    },
];

#[test]
fn list_equals_c_module() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("list_equals_c_module");
    let mut problems = Vec::new();
    for case in LIST_CASES {
        let text = fs::read_to_string(data_dir().join("lists").join(case.file))
            .unwrap_or_else(|e| panic!("read {}: {e}", case.file));
        let label = case.file.trim_end_matches(".list");
        let opts = KamOpts { children: 1, ..KamOpts::with_list(&text) };
        let c = Kamailio::start(&dir, &format!("{label}-c"), ModuleKind::C, &opts);
        let t = Kamailio::start(&dir, &format!("{label}-test-{}", kind.name()), kind, &opts);
        for mode in [None, Some("short"), Some("full")] {
            let mname = mode.unwrap_or("normal");
            let lc = c.ds_list(mode).unwrap_or_else(|e| panic!("C module dispatcher.list {mname} on {}: {e}", case.file));
            let lt = match t.ds_list(mode) {
                Ok(l) => l,
                Err(e) => {
                    problems.push(format!("{} [{mname}]: dispatcher.list failed: {e}\n{}", case.file, t.log_hint()));
                    continue;
                }
            };
            // sanity of the reference itself, so that C-vs-C still checks something
            assert_eq!(set_ids(&lc), case.sets, "C module set order for {}", case.file);
            assert_eq!(lc.path_val("NRSETS"), Some(case.sets.len().to_string().as_str()), "C NRSETS for {}", case.file);
            assert_eq!(set_uris(&lc, case.sets[0]), case.first_set_uris, "C module set {} of {}", case.sets[0], case.file);

            let (nc, nt) = (normalized(&lc, c.port), normalized(&lt, t.port));
            if nc != nt {
                problems.push(format!(
                    "{} [dispatcher.list {mname}] differs (- C module, + module under test: {}):\n{}",
                    case.file,
                    kind.name(),
                    line_diff(&nc, &nt)
                ));
            }
        }
        // the mode argument is case-insensitive; an unknown mode is the normal output
        for (variant, base) in [("SHORT", Some("short")), ("Full", Some("full")), ("bogus", None)] {
            let a = t.ds_list(Some(variant));
            let b = t.ds_list(base);
            match (a, b) {
                (Ok(a), Ok(b)) if a == b => {}
                (a, b) => problems.push(format!(
                    "{}: dispatcher.list {variant} != dispatcher.list {}: {:?} vs {:?}",
                    case.file,
                    base.unwrap_or("(no mode)"),
                    a.map(|n| n.pretty()),
                    b.map(|n| n.pretty())
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn reload_changed_list() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("reload_changed_list");
    let list_a = "1 sip:127.0.0.1:5101\n1 sip:127.0.0.1:5102 0 5 duid=a2\n";
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(list_a));
    let before = kam.ds_list(None).expect("dispatcher.list");
    assert_eq!(set_ids(&before), vec!["1"]);
    assert_eq!(set_uris(&before, "1"), vec!["sip:127.0.0.1:5102", "sip:127.0.0.1:5101"]);
    let r = kam.request("sel-1-8", &[]);
    assert_eq!(r.hdr("X-DU"), "sip:127.0.0.1:5102", "{}", r.raw);

    let list_b = "# changed\n1 sip:127.0.0.1:5111 0 0 duid=b1\n2 sip:127.0.0.1:5201\n2 sip:127.0.0.1:5202 0 9\n";
    replace_file(&kam.list_path, list_b);
    assert_eq!(kam.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()), Ok(RELOAD_OK.to_string()));
    let after = kam.ds_list(None).expect("dispatcher.list after reload");
    assert_eq!(after.path_val("NRSETS"), Some("2"), "{}", after.pretty());
    assert_eq!(set_uris(&after, "1"), vec!["sip:127.0.0.1:5111"], "{}", after.pretty());
    assert_eq!(set_uris(&after, "2"), vec!["sip:127.0.0.1:5202", "sip:127.0.0.1:5201"], "{}", after.pretty());
    let r = kam.request("sel-1-8", &[]);
    assert_eq!(r.hdr("X-DU"), "sip:127.0.0.1:5111", "routing uses the reloaded list\n{}", r.raw);
    let r = kam.request("sel-2-8", &[]);
    assert_eq!(r.hdr("X-DU"), "sip:127.0.0.1:5202", "the new set 2 routes\n{}", r.raw);
    let r = kam.request("exists-2", &[]);
    assert_eq!(r.hdr("X-Ret"), "1", "{}", r.raw);

    // reload_delta=0 in the test cfg: back-to-back reloads are allowed
    replace_file(&kam.list_path, list_a);
    assert_eq!(kam.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()), Ok(RELOAD_OK.to_string()));
    assert_eq!(kam.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()), Ok(RELOAD_OK.to_string()));
    let again = kam.ds_list(None).expect("dispatcher.list");
    // (Kamailio 6.1: a reloaded destination gets a new IUID, as in the C module)
    assert_eq!(normalized(&again, kam.port), normalized(&before, kam.port), "reloading the first list again gives the first listing");
    let r = kam.request("exists-2", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "set 2 is gone\n{}", r.raw);
}

#[test]
fn reload_rate_limited() {
    // with the default reload_delta (5 s) a second reload right after the first is refused
    let kind = ModuleKind::from_env();
    let dir = run_dir("reload_rate_limited");
    let opts = KamOpts {
        extra_params: "modparam(\"dispatcher\", \"reload_delta\", 5)\n".to_string(),
        ..KamOpts::with_list("1 sip:127.0.0.1:5101\n")
    };
    let kam = Kamailio::start(&dir, "kamailio", kind, &opts);
    // the startup load does not set the reload timestamp: the first reload is allowed
    let first = kam.kamcmd(&["dispatcher.reload"]);
    let second = kam.kamcmd(&["dispatcher.reload"]);
    assert_eq!(first.as_deref().map(str::trim), Ok(RELOAD_OK), "first reload after startup");
    assert_eq!(second, Err("Ongoing reload".to_string()), "first: {first:?}");
}

#[test]
fn reload_broken_keeps_old() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("reload_broken_keeps_old");
    let good = "1 sip:127.0.0.1:5101 0 0 duid=one\n1 sip:127.0.0.1:5102\n";
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts::with_list(good));
    let before = kam.ds_list(None).expect("dispatcher.list");
    assert_eq!(set_uris(&before, "1"), vec!["sip:127.0.0.1:5102", "sip:127.0.0.1:5101"]);

    // line 3 has a set id and nothing else: "bad line", the whole load fails
    let broken = "# broken list\n2 sip:127.0.0.1:5201\n2\n2 sip:127.0.0.1:5203\n";
    replace_file(&kam.list_path, broken);
    let err = kam.kamcmd(&["dispatcher.reload"]).expect_err("reloading a broken list must fail");
    assert!(err.starts_with("Reload Failed"), "fault text {err:?} must start with `Reload Failed`");
    if kind == ModuleKind::Rust {
        let want = format!("{}:3:", kam.list_path.display());
        assert!(err.contains(&want), "the Rust module's fault {err:?} must name the bad line as {want:?}");
    }
    let after = kam.ds_list(None).expect("dispatcher.list after failed reload");
    assert_eq!(after, before, "the old list must still be active after a failed reload");
    let r = kam.request("sel-1-8", &[]);
    assert_eq!(r.hdr("X-DU"), "sip:127.0.0.1:5102", "the old list still routes\n{}", r.raw);
    let r = kam.request("sel-2-8", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "nothing of the broken list is active\n{}", r.raw);

    // a missing file fails the same way
    fs::remove_file(&kam.list_path).expect("rm list");
    let err = kam.kamcmd(&["dispatcher.reload"]).expect_err("reloading a missing list must fail");
    assert!(err.starts_with("Reload Failed"), "fault text {err:?} must start with `Reload Failed`");
    assert_eq!(kam.ds_list(None).expect("dispatcher.list"), before);

    // and a good file afterwards is taken again
    replace_file(&kam.list_path, "3 sip:127.0.0.1:5301\n");
    assert_eq!(kam.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()), Ok(RELOAD_OK.to_string()));
    assert_eq!(set_ids(&kam.ds_list(None).expect("list")), vec!["3"]);
}

#[test]
fn hash_rpc() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("hash_rpc");
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts { children: 1, ..KamOpts::with_list("1 sip:127.0.0.1:5101\n") });
    // (nslots, x, y, hashid) -- spec §6.1; kamcmd prints the 32-bit value as a signed int
    let vectors: &[(&str, &str, Option<&str>, u32)] = &[
        ("4", "bob", Some("server.com"), 3883463682),
        ("4", "a", None, 109),
        ("4", "abc", None, 7167810),
        ("7", "s:", None, 1),
        ("7", "s:abc", Some("s:"), 7167810),
        ("4", "1234@host", None, 2139997296),
        ("5", "carol", None, 1864284022),
        ("4", "alice", Some("server.com"), 1412806172),
        ("3", "alice", Some("example.org"), 1441481473),
        ("4", "alice", Some("example.org:5080"), 3956439950),
        ("6", "bob", Some("example.com:5061"), 2337664521),
        ("4", "été", None, 3139016441),
        ("0", "abc", None, 7167810),
        ("-3", "abc", None, 7167810),
        ("4", "s:12345", None, 924651812),
    ];
    let mut problems = Vec::new();
    for (n, x, y, h) in vectors {
        let mut args = vec!["dispatcher.hash", "--", n, x];
        if let Some(y) = y {
            args.push(y);
        }
        let nslots: i64 = n.parse().unwrap();
        let slot = if nslots > 0 { (*h as i64) % nslots } else { 0 };
        let want_hash = (*h as i32).to_string();
        match kam.kamcmd(&args) {
            Ok(out) => {
                let t = parse_kamcmd(&out);
                let got = (t.path_val("hashid").unwrap_or("?").to_string(), t.path_val("slot").unwrap_or("?").to_string());
                if got != (want_hash.clone(), slot.to_string()) {
                    problems.push(format!(
                        "{args:?}: got (hashid, slot) {got:?}, want ({want_hash} = {h} as i32, {slot})"
                    ));
                }
            }
            Err(e) => problems.push(format!("{args:?}: fault {e:?}")),
        }
    }
    // faults: fewer than 2 params, and an integer where a string is expected
    for args in [&["dispatcher.hash"][..], &["dispatcher.hash", "4"][..], &["dispatcher.hash", "4", "12345"][..]] {
        match kam.kamcmd(args) {
            Err(e) if e == "Invalid Parameters" => {}
            other => problems.push(format!("{args:?}: want fault `Invalid Parameters`, got {other:?}")),
        }
    }
    assert!(problems.is_empty(), "dispatcher.hash mismatches:\n{}\n{}", problems.join("\n"), kam.log_hint());
}

#[test]
fn list_no_sets() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("list_no_sets");
    // the C module starts with an empty list file and reports no sets
    let kam = Kamailio::start(&dir, "kamailio", kind, &KamOpts { children: 1, ..KamOpts::with_list("") });
    for mode in [None, Some("short"), Some("full")] {
        assert_eq!(kam.ds_list(mode).map(|n| n.pretty()), Err("No Destination Sets".to_string()), "mode {mode:?}");
    }
    let r = kam.request("sel-1-4", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "no list, no selection\n{}", r.raw);
    let r = kam.request("exists-1", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "{}", r.raw);

    replace_file(&kam.list_path, "1 sip:127.0.0.1:5101\n");
    assert_eq!(kam.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()), Ok(RELOAD_OK.to_string()));
    assert_eq!(set_ids(&kam.ds_list(None).expect("list")), vec!["1"]);
    let r = kam.request("sel-1-4", &[]);
    assert_eq!(r.hdr("X-DU"), "sip:127.0.0.1:5101", "{}", r.raw);

    // a file with only comments and blank lines is an empty list too (reload succeeds)
    replace_file(&kam.list_path, "# nothing here\n\n   \n\t# still nothing\n");
    assert_eq!(kam.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string()), Ok(RELOAD_OK.to_string()));
    assert_eq!(kam.ds_list(None).map(|n| n.pretty()), Err("No Destination Sets".to_string()));
    let r = kam.request("sel-1-4", &[]);
    assert_eq!(r.hdr("X-Ret"), "-1", "{}", r.raw);
}
