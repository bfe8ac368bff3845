//! `dispatcher.add` / `dispatcher.remove` against Debian's C module: after every edit of a
//! sequence (into existing sets, new set ids, a set emptied and gone, a failed add), the set
//! order of `dispatcher.list` (the C module rebuilds its AVL tree from the previous post-order
//! on every edit) and the destinations of every set are the same. The Rust module derives a
//! new list version that shares the untouched sets (issue 14), so this checks the order it
//! computes without rebuilding, the sets it shares and the set it rebuilds.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `DS_TEST_MODULE=c`.

mod common;

use common::*;

/// (set id, destination URIs sorted) in `dispatcher.list` order. (The order inside a set
/// differs on purpose: the C module reverses equal priorities on every edit, see README.)
fn sets(list: &Node) -> Vec<(String, Vec<String>)> {
    let Some(records) = list.path("RECORDS") else { return vec![] };
    records
        .get_all("SET")
        .iter()
        .map(|s| {
            let mut uris: Vec<String> = s
                .path("TARGETS")
                .map(|t| t.get_all("DEST").iter().filter_map(|d| d.path_val("URI").map(str::to_string)).collect())
                .unwrap_or_default();
            uris.sort();
            (s.path_val("ID").unwrap_or("?").to_string(), uris)
        })
        .collect()
}

#[test]
fn edit_sequence_set_order_equals_c_module() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("edit_sequence_set_order_equals_c_module");
    // 14 sets, first appearance not sorted (the tree's shape depends on it)
    let ids = [7, 3, 11, 1, 9, 14, 2, 5, 12, 4, 8, 13, 6, 10];
    let mut list = String::new();
    for (k, id) in ids.iter().enumerate() {
        for j in 0..1 + k % 3 {
            list.push_str(&format!("{id} sip:127.0.{id}.{}:5060 0 {}\n", j + 1, j % 2));
        }
    }
    let opts = KamOpts { children: 1, ..KamOpts::with_list(&list) };
    let c = Kamailio::start(&dir, "c", ModuleKind::C, &opts);
    let t = Kamailio::start(&dir, &format!("test-{}", kind.name()), kind, &opts);
    let steps: Vec<Vec<String>> = [
        // into an existing set
        "dispatcher.add 3 sip:127.1.0.1:5060 0",
        "dispatcher.add 3 sip:127.1.0.2:5060 0 2",
        // new set ids: larger, smaller, in between
        "dispatcher.add 20 sip:127.1.0.3:5060 0",
        "dispatcher.add 0 sip:127.1.0.4:5060 0",
        "dispatcher.add 15 sip:127.1.0.5:5060 0",
        // remove from a set that keeps others
        "dispatcher.remove 3 sip:127.1.0.1:5060",
        // empty a set (it vanishes), twice
        "dispatcher.remove 7 sip:127.0.7.1:5060",
        "dispatcher.remove 20 sip:127.1.0.3:5060",
        // the same id again, now new
        "dispatcher.add 7 sip:127.1.0.6:5060 0",
        // nothing to remove: the list is rebuilt anyway
        "dispatcher.remove 9 sip:127.9.9.9:5060",
        "dispatcher.add 1 sip:127.1.0.7:5060 0",
        "dispatcher.remove 14 sip:127.0.14.1:5060",
        "dispatcher.add 21 sip:127.1.0.8:5060 0",
    ]
    .iter()
    .map(|s| s.split(' ').map(str::to_string).collect())
    .collect();
    let mut problems = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let rc = c.kamcmd(&args).map(|_| ()).map_err(|e| e.lines().next().unwrap_or("").to_string());
        let rt = t.kamcmd(&args).map(|_| ()).map_err(|e| e.lines().next().unwrap_or("").to_string());
        if rc.is_ok() != rt.is_ok() {
            problems.push(format!("step {i} {args:?}: C {rc:?}, {} {rt:?}", kind.name()));
        }
        let lc = c.ds_list(None).unwrap_or_else(|e| panic!("C module dispatcher.list after step {i}: {e}"));
        let lt = t.ds_list(None).unwrap_or_else(|e| panic!("dispatcher.list after step {i}: {e}\n{}", t.log_hint()));
        let (sc, st) = (sets(&lc), sets(&lt));
        assert!(!sc.is_empty(), "C module list empty after step {i}");
        if sc != st {
            problems.push(format!("after step {i} {args:?}:\n  C:    {sc:?}\n  {}: {st:?}", kind.name()));
        }
    }
    // the sequence really reordered the sets (else the test checks little)
    let first: Vec<String> = sets(&c.ds_list(None).expect("list")).into_iter().map(|s| s.0).collect();
    assert_ne!(first.first().map(String::as_str), Some("1"), "set order after the edits: {first:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
