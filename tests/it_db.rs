//! DB mode (`db_url`) with db_sqlite and db_postgres: dispatcher.list compared with
//! Debian's C module on the same database, reload after INSERT/DELETE, bad rows with
//! `ds_load_mode` 0 and 1, table versions; and hostname (DNS) destinations.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `DS_TEST_MODULE=c`. With the Rust
//! module, every list is also compared with the C module's list for the same database.

mod common;
#[path = "common/db_util.rs"]
mod db_util;

use common::*;
use db_util::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const RELOAD_OK: &str = "Ok. Dispatcher successfully reloaded.";

/// Set ids in `dispatcher.list` order.
fn set_ids(list: &Node) -> Vec<String> {
    list.path("RECORDS")
        .map(|r| r.get_all("SET").iter().filter_map(|s| s.path_val("ID").map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The DEST nodes of set `id`, in list order.
fn set_dests<'a>(list: &'a Node, id: &str) -> Vec<&'a Node> {
    let Some(records) = list.path("RECORDS") else { return vec![] };
    for s in records.get_all("SET") {
        if s.path_val("ID") == Some(id) {
            return s.path("TARGETS").map(|t| t.get_all("DEST")).unwrap_or_default();
        }
    }
    vec![]
}

/// All destination URIs of set `id`, in list order.
fn set_uris(list: &Node, id: &str) -> Vec<String> {
    set_dests(list, id).iter().filter_map(|d| d.path_val("URI").map(str::to_string)).collect()
}

/// (URI, FLAGS, PRIORITY, ATTRS/BODY or "-") of every destination of set `id`.
fn set_rows(list: &Node, id: &str) -> Vec<(String, String, String, String)> {
    set_dests(list, id)
        .iter()
        .map(|d| {
            (
                d.path_val("URI").unwrap_or("?").to_string(),
                d.path_val("FLAGS").unwrap_or("?").to_string(),
                d.path_val("PRIORITY").unwrap_or("?").to_string(),
                d.path_val("ATTRS/BODY").unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn row(uri: &str, flags: &str, prio: &str, attrs: &str) -> (String, String, String, String) {
    // Kamailio 6.1 drops the probing flag at load when keepalives are off (tm not bound),
    // and these tests run without keepalives
    let flags = if kam_at_least(6, 1, 0) { flags.replace('P', "X") } else { flags.to_string() };
    (uri.to_string(), flags, prio.to_string(), attrs.to_string())
}

/// Start Kamailio in DB mode: `db_module` loaded before the dispatcher, `db_url` = `url`.
fn start_db(
    dir: &Path,
    label: &str,
    kind: ModuleKind,
    db_module: &str,
    url: &str,
    extra: &str,
) -> Result<Kamailio, String> {
    let opts = KamOpts {
        children: 2,
        extra_params: db_params(url, extra),
        cfg_template: Some(db_cfg_template(db_module)),
        ..KamOpts::default()
    };
    Kamailio::try_start(dir, label, kind, &opts)
}

/// The reference instance (the C module) when the module under test is not the C module.
fn reference(dir: &Path, kind: ModuleKind, db_module: &str, url: &str, extra: &str) -> Option<Kamailio> {
    if kind == ModuleKind::C {
        return None;
    }
    Some(
        start_db(dir, "reference-c", ModuleKind::C, db_module, url, extra)
            .unwrap_or_else(|e| panic!("C reference: {e}")),
    )
}

/// Compare `dispatcher.list` (normal, short, full) of `t` with the C reference `c`.
fn compare_with_c(t: &Kamailio, c: Option<&Kamailio>, what: &str, problems: &mut Vec<String>) {
    let Some(c) = c else { return };
    for mode in [None, Some("short"), Some("full")] {
        let mname = mode.unwrap_or("normal");
        let lc = c.ds_list(mode);
        let lt = t.ds_list(mode);
        match (&lc, &lt) {
            (Ok(a), Ok(b)) => {
                if let Some(d) = tree_diff(a, b, "C module", "module under test") {
                    problems.push(format!("{what}: dispatcher.list {mname} differs from the C module:\n{d}"));
                }
            }
            _ => {
                if lc != lt {
                    problems.push(format!("{what}: dispatcher.list {mname}: C {lc:?}, module under test {lt:?}"));
                }
            }
        }
    }
}

fn reload(k: &Kamailio) -> Result<String, String> {
    k.kamcmd(&["dispatcher.reload"]).map(|s| s.trim().to_string())
}

/// A reload reply reduced to what the C module says: the Rust module may add details
/// after `Reload Failed` (`Reload Failed: <why>`), which is kept as `Reload Failed`.
fn reload_class(r: &Result<String, String>) -> Result<String, String> {
    match r {
        Err(e) if e.starts_with("Reload Failed") => Err("Reload Failed".to_string()),
        other => other.clone(),
    }
}

/// $du after `ds_select_dst(set, 8)` (first active destination by list order), or the
/// return code when the selection failed.
fn first_dst(k: &Kamailio, set: u32) -> String {
    let r = k.request(&format!("sel-{set}-8"), &[]);
    if r.hdr("X-Ret") == "1" {
        r.hdr("X-DU").to_string()
    } else {
        format!("ret {}", r.hdr("X-Ret"))
    }
}

fn exists(k: &Kamailio, set: u32) -> String {
    k.request(&format!("exists-{set}"), &[]).hdr("X-Ret").to_string()
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

const SQLITE_MOD: &str = "db_sqlite.so";

/// Two extra columns read through `ds_db_extra_attrs`.
const SQLITE_EXTRA_COLS: &str = "ALTER TABLE dispatcher ADD COLUMN region VARCHAR(32) DEFAULT NULL; \
     ALTER TABLE dispatcher ADD COLUMN pipe_id VARCHAR(32) DEFAULT NULL;";
const EXTRA_ATTRS: &str = "modparam(\"dispatcher\", \"ds_db_extra_attrs\", \"region=region;pipe=pipe_id\")\n";

const SQLITE_ROWS_A: &str =
    "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description, region, pipe_id) VALUES \
     (1, 'sip:127.0.0.1:5101', 0, 10, 'duid=a1;weight=50', 'first', 'eu', NULL), \
     (1, 'sip:127.0.0.1:5102', 0, 20, 'duid=a2', '', '', 'p2'), \
     (1, 'sip:127.0.0.1:5103;transport=udp', 8, 20, '', '', 'us', 'p3'), \
     (1, 'sip:127.0.0.1:5104', 4, 0, 'duid=a4;', '', NULL, NULL), \
     (2, 'sip:127.0.0.1:5201', 0, 0, 'duid=b1', '', 'eu', NULL), \
     (2, 'sip:127.0.0.1:5202', 1, -5, '', '', NULL, NULL), \
     (10, '127.0.0.1:5301', 0, 0, '', '', '', '');";

#[test]
fn sqlite_list_and_reload() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("sqlite_list_and_reload");
    let db = dir.join("ds.sqlite");
    sqlite_create(&db, &format!("{SQLITE_EXTRA_COLS} {SQLITE_ROWS_A}"));
    let url = sqlite_url(&db);
    let t = start_db(&dir, "kamailio", kind, SQLITE_MOD, &url, EXTRA_ATTRS).unwrap_or_else(|e| panic!("{e}"));
    let c = reference(&dir, kind, SQLITE_MOD, &url, EXTRA_ATTRS);
    let mut problems = Vec::new();

    let l = t.ds_list(None).unwrap_or_else(|e| panic!("dispatcher.list: {e}\n{}", t.log_hint()));
    let mut ids = set_ids(&l);
    ids.sort();
    assert_eq!(ids, vec!["1", "10", "2"], "{}", l.pretty());
    assert_eq!(l.path_val("NRSETS"), Some("3"), "{}", l.pretty());
    // priority: larger first; equal priorities in reverse row order; extra columns
    // appended to attrs as name=value, last modparam item first (NULL and '' skipped);
    // BODY has no trailing `;`
    assert_eq!(
        set_rows(&l, "1"),
        vec![
            row("sip:127.0.0.1:5103;transport=udp", "AP", "20", "pipe=p3;region=us"),
            row("sip:127.0.0.1:5102", "AX", "20", "duid=a2;pipe=p2"),
            row("sip:127.0.0.1:5101", "AX", "10", "duid=a1;weight=50;region=eu"),
            row("sip:127.0.0.1:5104", "DX", "0", "duid=a4"),
        ],
        "set 1\n{}",
        l.pretty()
    );
    assert_eq!(
        set_rows(&l, "2"),
        vec![row("sip:127.0.0.1:5201", "AX", "0", "duid=b1;region=eu"), row("sip:127.0.0.1:5202", "IX", "-5", "-")],
        "set 2 (negative priority from the DB)\n{}",
        l.pretty()
    );
    assert_eq!(set_uris(&l, "10"), vec!["sip:127.0.0.1:5301"], "`sip:` added to a bare host:port\n{}", l.pretty());
    compare_with_c(&t, c.as_ref(), "initial load", &mut problems);

    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5103;transport=udp");
    assert_eq!(first_dst(&t, 2), "sip:127.0.0.1:5201");
    assert_eq!(first_dst(&t, 10), "sip:127.0.0.1:5301");

    // change the table, reload
    sqlite_exec(
        &db,
        "DELETE FROM dispatcher WHERE destination = 'sip:127.0.0.1:5103;transport=udp'; \
         DELETE FROM dispatcher WHERE setid = 10; \
         UPDATE dispatcher SET priority = 50 WHERE destination = 'sip:127.0.0.1:5202'; \
         INSERT INTO dispatcher (setid, destination, flags, priority, attrs, region, pipe_id) VALUES \
           (1, 'sip:127.0.0.1:5105', 0, 30, 'duid=a5', 'ap', 'p5'), \
           (3, 'sip:127.0.0.1:5401', 0, 0, '', NULL, NULL);",
    );
    assert_eq!(reload(&t), Ok(RELOAD_OK.to_string()), "{}", t.log_hint());
    if let Some(c) = &c {
        assert_eq!(reload(c), Ok(RELOAD_OK.to_string()), "C reference reload");
    }
    let l = t.ds_list(None).expect("dispatcher.list after reload");
    let mut ids = set_ids(&l);
    ids.sort();
    assert_eq!(ids, vec!["1", "2", "3"], "{}", l.pretty());
    assert_eq!(
        set_uris(&l, "1"),
        vec!["sip:127.0.0.1:5105", "sip:127.0.0.1:5102", "sip:127.0.0.1:5101", "sip:127.0.0.1:5104"],
        "{}",
        l.pretty()
    );
    assert_eq!(
        set_rows(&l, "1")[0],
        row("sip:127.0.0.1:5105", "AX", "30", "duid=a5;pipe=p5;region=ap"),
        "{}",
        l.pretty()
    );
    assert_eq!(set_uris(&l, "2"), vec!["sip:127.0.0.1:5202", "sip:127.0.0.1:5201"], "{}", l.pretty());
    assert_eq!(set_uris(&l, "3"), vec!["sip:127.0.0.1:5401"], "{}", l.pretty());
    compare_with_c(&t, c.as_ref(), "after INSERT/DELETE/UPDATE + reload", &mut problems);

    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5105", "routing uses the reloaded list");
    assert_eq!(first_dst(&t, 2), "sip:127.0.0.1:5201", "5202 (first by priority) is inactive");
    assert_eq!(exists(&t, 10), "-1");
    assert_eq!(exists(&t, 3), "1");

    // an empty table: reload succeeds (warning only) and the list is empty
    sqlite_exec(&db, "DELETE FROM dispatcher;");
    assert_eq!(reload(&t), Ok(RELOAD_OK.to_string()), "{}", t.log_hint());
    assert_eq!(t.ds_list(None).map(|n| n.pretty()), Err("No Destination Sets".to_string()));
    assert_eq!(exists(&t, 1), "-1");
    if let Some(c) = &c {
        assert_eq!(reload(c), Ok(RELOAD_OK.to_string()), "C reference reload");
    }
    compare_with_c(&t, c.as_ref(), "empty table", &mut problems);

    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), t.log_hint());
}

const BAD_HOST: &str = "sip:nonexistent-host.invalid:5060";

#[test]
fn sqlite_bad_row_load_mode_0() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("sqlite_bad_row_load_mode_0");
    let db = dir.join("ds.sqlite");
    sqlite_create(
        &db,
        &format!(
            "INSERT INTO dispatcher (setid, destination, flags, priority, attrs) VALUES \
               (1, 'sip:127.0.0.1:5101', 0, 0, 'duid=a1'), (1, '{BAD_HOST}', 0, 0, '');"
        ),
    );
    let url = sqlite_url(&db);
    let extra = "modparam(\"dispatcher\", \"ds_load_mode\", 0)\n";
    // startup: the unresolvable row is skipped with a warning, the rest is loaded
    let t = start_db(&dir, "kamailio", kind, SQLITE_MOD, &url, extra).unwrap_or_else(|e| panic!("{e}"));
    let c = reference(&dir, kind, SQLITE_MOD, &url, extra);
    let mut problems = Vec::new();
    let l = t.ds_list(None).expect("dispatcher.list");
    assert_eq!(set_uris(&l, "1"), vec!["sip:127.0.0.1:5101"], "the bad row is skipped at startup\n{}", l.pretty());
    compare_with_c(&t, c.as_ref(), "startup with a bad row", &mut problems);

    // reload with the bad row still there: the C module answers `Reload Failed` (some rows
    // were skipped) but has switched to the new list
    sqlite_exec(
        &db,
        "INSERT INTO dispatcher (setid, destination) VALUES (1, 'sip:127.0.0.1:5102'), (2, 'sip:127.0.0.1:5201');",
    );
    let rt = reload(&t);
    if let Some(c) = &c {
        let rc = reload(c);
        assert_eq!(
            reload_class(&rt),
            reload_class(&rc),
            "reload reply with a skipped row: module under test {rt:?} vs C {rc:?}"
        );
    }
    // from Kamailio 6.1 skipped rows no longer fail the reload
    let want = if kam_at_least(6, 1, 0) { Ok(RELOAD_OK.to_string()) } else { Err("Reload Failed".to_string()) };
    assert_eq!(reload_class(&rt), want, "reload with a skipped row: {rt:?}\n{}", t.log_hint());
    let l = t.ds_list(None).expect("dispatcher.list");
    assert_eq!(
        set_uris(&l, "1"),
        vec!["sip:127.0.0.1:5102", "sip:127.0.0.1:5101"],
        "the new list is active although the reply says `Reload Failed`\n{}",
        l.pretty()
    );
    assert_eq!(set_uris(&l, "2"), vec!["sip:127.0.0.1:5201"], "{}", l.pretty());
    assert_eq!(first_dst(&t, 2), "sip:127.0.0.1:5201", "the new list routes");
    compare_with_c(&t, c.as_ref(), "reload with a skipped row", &mut problems);

    // without the bad row the reload is clean again
    sqlite_exec(&db, &format!("DELETE FROM dispatcher WHERE destination = '{BAD_HOST}';"));
    assert_eq!(reload(&t), Ok(RELOAD_OK.to_string()), "{}", t.log_hint());
    assert_eq!(set_uris(&t.ds_list(None).expect("list"), "1"), vec!["sip:127.0.0.1:5102", "sip:127.0.0.1:5101"]);
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), t.log_hint());
}

#[test]
fn sqlite_bad_row_load_mode_1() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("sqlite_bad_row_load_mode_1");
    let db = dir.join("ds.sqlite");
    sqlite_create(
        &db,
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs) VALUES \
           (1, 'sip:127.0.0.1:5101', 0, 0, 'duid=a1'), (1, 'sip:127.0.0.1:5102', 0, 0, 'duid=a2');",
    );
    let url = sqlite_url(&db);
    let extra = "modparam(\"dispatcher\", \"ds_load_mode\", 1)\n";
    let t = start_db(&dir, "kamailio", kind, SQLITE_MOD, &url, extra).unwrap_or_else(|e| panic!("{e}"));
    let before = t.ds_list(None).expect("dispatcher.list");
    assert_eq!(set_uris(&before, "1"), vec!["sip:127.0.0.1:5102", "sip:127.0.0.1:5101"], "{}", before.pretty());
    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5102");

    // a bad row aborts the reload: the old list stays listed and routing
    sqlite_exec(
        &db,
        &format!("INSERT INTO dispatcher (setid, destination) VALUES (2, 'sip:127.0.0.1:5201'), (2, '{BAD_HOST}'), (1, 'sip:127.0.0.1:5103');"),
    );
    assert_eq!(
        reload_class(&reload(&t)),
        Err("Reload Failed".to_string()),
        "ds_load_mode=1 refuses a list with a bad row\n{}",
        t.log_hint()
    );
    assert_eq!(t.ds_list(None).expect("dispatcher.list"), before, "the old list is still active");
    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5102", "the old list still routes");
    assert_eq!(exists(&t, 2), "-1", "nothing of the refused list is active");

    // and with ds_load_mode=1 the same table makes the startup fail
    match start_db(&dir, "startup-bad-row", kind, SQLITE_MOD, &url, extra) {
        Ok(k) => panic!("startup with a bad row and ds_load_mode=1 must fail\n{}", k.log_hint()),
        Err(e) => assert!(e.contains("exited during startup"), "{e}"),
    }

    // without the bad row the reload goes through
    sqlite_exec(&db, &format!("DELETE FROM dispatcher WHERE destination = '{BAD_HOST}';"));
    assert_eq!(reload(&t), Ok(RELOAD_OK.to_string()), "{}", t.log_hint());
    let l = t.ds_list(None).expect("dispatcher.list");
    assert_eq!(
        set_uris(&l, "1"),
        vec!["sip:127.0.0.1:5103", "sip:127.0.0.1:5102", "sip:127.0.0.1:5101"],
        "{}",
        l.pretty()
    );
    assert_eq!(set_uris(&l, "2"), vec!["sip:127.0.0.1:5201"], "{}", l.pretty());
    assert_eq!(first_dst(&t, 2), "sip:127.0.0.1:5201");
}

#[test]
fn sqlite_table_version() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("sqlite_table_version");
    let db = dir.join("ds.sqlite");
    let rows = "INSERT INTO dispatcher (setid, destination, flags, priority, attrs) VALUES \
                  (1, 'sip:127.0.0.1:5101', 0, 1, 'duid=a1'), (1, 'sip:127.0.0.1:5102', 8, 5, 'duid=a2');";
    sqlite_create(&db, &format!("{rows} UPDATE version SET table_version = 9 WHERE table_name = 'dispatcher';"));
    let url = sqlite_url(&db);

    // an unknown table version: startup fails
    match start_db(&dir, "version-9", kind, SQLITE_MOD, &url, "") {
        Ok(k) => panic!("startup with dispatcher table version 9 must fail\n{}", k.log_hint()),
        Err(e) => {
            assert!(e.contains("exited during startup"), "{e}");
            assert!(e.contains("invalid table version"), "the log must say `invalid table version`:\n{e}");
        }
    }

    // version 3: setid, destination, flags and priority are read, attrs are not
    sqlite_exec(&db, "UPDATE version SET table_version = 3 WHERE table_name = 'dispatcher';");
    let t = start_db(&dir, "version-3", kind, SQLITE_MOD, &url, "").unwrap_or_else(|e| panic!("{e}"));
    let l = t.ds_list(None).expect("dispatcher.list");
    assert_eq!(
        set_rows(&l, "1"),
        vec![row("sip:127.0.0.1:5102", "AP", "5", "-"), row("sip:127.0.0.1:5101", "AX", "1", "-")],
        "version 3: no attrs\n{}",
        l.pretty()
    );
}

#[test]
fn sqlite_table_version_read_once() {
    // the C module reads the table version once, in mod_init (ds_init_db), and reuses it
    // for every reload (ds_reload_db): a later change of the version row has no effect
    let kind = ModuleKind::from_env();
    let dir = run_dir("sqlite_table_version_read_once");
    let db = dir.join("ds.sqlite");
    sqlite_create(
        &db,
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs) VALUES \
           (1, 'sip:127.0.0.1:5101', 0, 1, 'duid=a1'), (1, 'sip:127.0.0.1:5102', 8, 5, 'duid=a2'); \
         UPDATE version SET table_version = 3 WHERE table_name = 'dispatcher';",
    );
    let t = start_db(&dir, "version-3", kind, SQLITE_MOD, &sqlite_url(&db), "").unwrap_or_else(|e| panic!("{e}"));
    sqlite_exec(&db, "UPDATE version SET table_version = 9 WHERE table_name = 'dispatcher'; \
                      INSERT INTO dispatcher (setid, destination, priority, attrs) VALUES (1, 'sip:127.0.0.1:5103', 9, 'duid=a3');");
    assert_eq!(reload(&t), Ok(RELOAD_OK.to_string()), "reload after the version row changed\n{}", t.log_hint());
    let l = t.ds_list(None).expect("dispatcher.list");
    assert_eq!(
        set_rows(&l, "1"),
        vec![
            row("sip:127.0.0.1:5103", "AX", "9", "-"),
            row("sip:127.0.0.1:5102", "AP", "5", "-"),
            row("sip:127.0.0.1:5101", "AX", "1", "-")
        ],
        "still read as version 3\n{}",
        l.pretty()
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

#[test]
fn postgres_list_and_reload() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("postgres_list_and_reload");
    let pg =
        Postgres::start("kamtest", "kamPass-42", "kamailio").unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    pg.psql(
        "ALTER TABLE dispatcher ADD COLUMN region VARCHAR(32) DEFAULT NULL; \
         INSERT INTO dispatcher (setid, destination, flags, priority, attrs, region) VALUES \
           (1, 'sip:127.0.0.1:5101', 0, 0, 'duid=p1', 'eu'), \
           (1, 'sip:127.0.0.1:5102', 0, 10, 'duid=p2;weight=30', NULL), \
           (1, 'sip:127.0.0.1:5103', 8, 0, '', 'us'), \
           (4, 'sip:127.0.0.1:5401;transport=udp', 0, -1, 'duid=p4', '');",
    )
    .expect("insert rows");
    let url = pg.url();
    let extra = "modparam(\"dispatcher\", \"ds_db_extra_attrs\", \"region=region\")\n";
    let t = start_db(&dir, "kamailio", kind, "db_postgres.so", &url, extra).unwrap_or_else(|e| panic!("{e}"));
    let c = reference(&dir, kind, "db_postgres.so", &url, extra);
    let mut problems = Vec::new();

    let l = t.ds_list(None).expect("dispatcher.list");
    let mut ids = set_ids(&l);
    ids.sort();
    assert_eq!(ids, vec!["1", "4"], "{}", l.pretty());
    assert_eq!(
        set_rows(&l, "1"),
        vec![
            row("sip:127.0.0.1:5102", "AX", "10", "duid=p2;weight=30"),
            row("sip:127.0.0.1:5103", "AP", "0", "region=us"),
            row("sip:127.0.0.1:5101", "AX", "0", "duid=p1;region=eu"),
        ],
        "{}",
        l.pretty()
    );
    assert_eq!(
        set_rows(&l, "4"),
        vec![row("sip:127.0.0.1:5401;transport=udp", "AX", "-1", "duid=p4")],
        "{}",
        l.pretty()
    );
    compare_with_c(&t, c.as_ref(), "postgres initial load", &mut problems);
    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5102");

    pg.psql(
        "INSERT INTO dispatcher (setid, destination, priority, attrs) VALUES (1, 'sip:127.0.0.1:5104', 20, 'duid=p5'), \
           (2, 'sip:127.0.0.1:5201', 0, ''); \
         DELETE FROM dispatcher WHERE setid = 4;",
    )
    .expect("change rows");
    assert_eq!(reload(&t), Ok(RELOAD_OK.to_string()), "{}", t.log_hint());
    if let Some(c) = &c {
        assert_eq!(reload(c), Ok(RELOAD_OK.to_string()), "C reference reload");
    }
    let l = t.ds_list(None).expect("dispatcher.list");
    let mut ids = set_ids(&l);
    ids.sort();
    assert_eq!(ids, vec!["1", "2"], "{}", l.pretty());
    assert_eq!(
        set_uris(&l, "1"),
        vec!["sip:127.0.0.1:5104", "sip:127.0.0.1:5102", "sip:127.0.0.1:5103", "sip:127.0.0.1:5101"],
        "{}",
        l.pretty()
    );
    compare_with_c(&t, c.as_ref(), "postgres after reload", &mut problems);
    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5104");
    assert_eq!(first_dst(&t, 2), "sip:127.0.0.1:5201");
    assert_eq!(exists(&t, 4), "-1");

    // the database going away: reload fails, the old list stays
    let before = t.ds_list(None).expect("list");
    pg.psql("ALTER TABLE dispatcher RENAME TO dispatcher_gone;").expect("rename table");
    assert_eq!(
        reload_class(&reload(&t)),
        Err("Reload Failed".to_string()),
        "reload without the table\n{}",
        t.log_hint()
    );
    assert_eq!(t.ds_list(None).expect("list"), before, "the old list stays after a failed DB reload");
    assert_eq!(first_dst(&t, 1), "sip:127.0.0.1:5104");

    drop(c);
    drop(t);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Hostname destinations (DNS)
// ---------------------------------------------------------------------------------------

/// A name other than `localhost` that /etc/hosts maps to 127.0.0.1, if any.
fn hosts_alias() -> Option<String> {
    let text = fs::read_to_string("/etc/hosts").ok()?;
    for l in text.lines() {
        let l = l.split('#').next().unwrap_or("");
        let mut f = l.split_whitespace();
        if f.next() != Some("127.0.0.1") {
            continue;
        }
        if let Some(n) = f.find(|n| {
            *n != "localhost"
                && !n.starts_with("localhost.")
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }) {
            return Some(n.to_string());
        }
    }
    None
}

#[test]
fn hostname_destination() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("hostname_destination");
    let alias = hosts_alias().unwrap_or_else(|| "localhost".to_string());
    eprintln!("[it] hostname_destination: set 1 -> localhost, set 2 -> {alias}");
    let uas = SippUas::start(&dir, "uas", UasKind::Ok200);
    let peer = bound_socket();
    let peer_port = peer.local_addr().expect("addr").port();
    let other = bound_socket();
    let list = format!("1 sip:localhost:{} 0 0 duid=lh\n2 sip:{alias}:{peer_port} 0 0 duid=peer\n", uas.port);

    let mut problems = Vec::new();
    let mut calls_done = 0usize;
    for (label, dns_mode) in [("dns-mode-1", 1), ("dns-mode-2", 2)] {
        let opts = KamOpts {
            children: 2,
            extra_params: format!("modparam(\"dispatcher\", \"ds_dns_mode\", {dns_mode})\n"),
            ..KamOpts::with_list(&list)
        };
        let k = Kamailio::start(&dir, label, kind, &opts);
        let full = k.ds_list(Some("full")).expect("dispatcher.list full");
        let d = set_dests(&full, "1");
        assert_eq!(d.len(), 1, "{}", full.pretty());
        assert_eq!(d[0].path_val("URI"), Some(format!("sip:localhost:{}", uas.port).as_str()));
        assert_eq!(d[0].path_val("HOST"), Some("localhost"), "{}", full.pretty());
        if dns_mode == 1 {
            assert_eq!(d[0].path_val("IPADDR"), Some("127.0.0.1"), "resolved at load\n{}", full.pretty());
        }
        if kind != ModuleKind::C {
            let c = Kamailio::start(&dir, &format!("{label}-c"), ModuleKind::C, &opts);
            compare_with_c(&k, Some(&c), &format!("hostname list, ds_dns_mode {dns_mode}"), &mut problems);
        }

        // calls to the hostname destination
        let res = run_uac(&dir, &format!("uac-{label}"), k.port, "rr", 20, 20, Duration::from_secs(30));
        calls_done += 20;
        assert_eq!(
            (res.successful, res.failed),
            (20, 0),
            "ds_dns_mode {dns_mode}: {}\n{}",
            res.summary(),
            k.log_hint()
        );
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(100), || uas.invites() >= calls_done),
            "the backend got {} of {calls_done} INVITEs",
            uas.invites()
        );

        // ds_is_from_list matches the source address against the resolved name
        let r = k.request_on(&peer, "isfrom", &[]);
        assert_eq!(
            (r.hdr("X-Ret"), r.hdr("X-Setid")),
            ("1", "2"),
            "ds_dns_mode {dns_mode}: from {alias}:{peer_port}\n{}",
            r.raw
        );
        let r = k.request_on(&peer, "isfrom", &[("X-Group", "2")]);
        assert_eq!(r.hdr("X-Ret"), "1", "ds_dns_mode {dns_mode}: group 2\n{}", r.raw);
        let r = k.request_on(&peer, "isfrom", &[("X-Group", "1")]);
        assert_eq!(r.hdr("X-Ret"), "-1", "ds_dns_mode {dns_mode}: group 1 has another port\n{}", r.raw);
        let r = k.request_on(&other, "isfrom", &[]);
        assert_eq!(r.hdr("X-Ret"), "-1", "ds_dns_mode {dns_mode}: unknown port\n{}", r.raw);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// cfg-examples/db-mode.cfg
// ---------------------------------------------------------------------------------------

/// A module dir for `-L`: symlinks to all of Debian's modules, `dispatcher.so` pointing at
/// the module under test (the example cfg loads it by name).
fn module_dir(dir: &Path, kind: ModuleKind) -> std::path::PathBuf {
    let md = dir.join("modules");
    fs::create_dir_all(&md).expect("mkdir modules");
    for e in fs::read_dir(&*MODULES_DIR).expect("read modules dir").flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".so") && name != "dispatcher.so" {
            let _ = std::os::unix::fs::symlink(e.path(), md.join(&name));
        }
    }
    std::os::unix::fs::symlink(kind.so_path(), md.join("dispatcher.so")).expect("symlink dispatcher.so");
    md
}

#[test]
fn example_db_mode_cfg() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("example_db_mode_cfg");
    let cfg = manifest_dir().join("cfg-examples").join("db-mode.cfg");
    let ok1 = SippUas::start(&dir, "ok1", UasKind::Ok200);
    let ok2 = SippUas::start(&dir, "ok2", UasKind::Ok200);
    let bad = SippUas::start(&dir, "bad", UasKind::Err500);
    let db = dir.join("kamailio.sqlite");
    sqlite_create(
        &db,
        &format!(
            "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) VALUES \
               (1, '{}', 0, 0, 'duid=ok1', 'backend 1'), (1, '{}', 0, 0, 'duid=bad', 'backend 2'), \
               (1, '{}', 0, 0, 'duid=ok2', 'backend 3');",
            ok1.uri(),
            bad.uri(),
            ok2.uri()
        ),
    );
    let kdir = dir.join("kamailio");
    fs::create_dir_all(&kdir).expect("mkdir");
    let md = module_dir(&dir, kind);
    let port = free_port();
    let ctl = ctl_socket_path(&kdir);
    let log_path = kdir.join("kamailio.log");
    let mut cmd = kamailio_cmd(&cfg, &md, &kdir);
    cmd.args(["-A", &format!("LISTEN_PORT={port}")])
        .args(["-A", &format!("DBURL=\"{}\"", sqlite_url(&db))])
        .args(["-A", &format!("CTL_SOCKET=\"unix:{}\"", ctl.display())])
        .current_dir(&kdir)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log_path).expect("log"));
    let mut kam = Proc::spawn("kamailio db-mode.cfg", &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let hint = || format!("run dir {}\n--- kamailio.log tail ---\n{}", kdir.display(), tail(&log_path, 30));
    let ready = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        kam.try_wait().is_some() || (ctl.exists() && kamcmd_at(&ctl, &["dispatcher.list"]).is_ok())
    });
    assert!(ready && kam.try_wait().is_none(), "db-mode.cfg did not come up\n{}", hint());

    let l = parse_kamcmd(&kamcmd_at(&ctl, &["dispatcher.list"]).expect("list"));
    assert_eq!(set_uris(&l, "1"), vec![ok2.uri(), bad.uri(), ok1.uri()], "{}", l.pretty());
    let flags: Vec<String> = set_rows(&l, "1").into_iter().map(|r| r.1).collect();
    // ds_probing_mode 1 pings every destination without setting the probing flag at load
    assert_eq!(flags, vec!["AX", "AX", "AX"], "{}", l.pretty());

    let res = run_uac(&dir, "uac", port, "svc", 30, 30, Duration::from_secs(30));
    assert_eq!((res.successful, res.failed), (30, 0), "{}\n{}", res.summary(), hint());
    // the 500 backend was marked (trying/probing) by ds_mark_dst("tp") in the failure route
    let l = parse_kamcmd(&kamcmd_at(&ctl, &["dispatcher.list"]).expect("list"));
    let rows = set_rows(&l, "1");
    assert!(
        rows.iter().any(|r| r.0 == bad.uri() && (r.1 == "TP" || r.1 == "IP")),
        "the 500 backend must be in trying or inactive state\n{}",
        l.pretty()
    );

    // a new row and a reload
    sqlite_exec(&db, "INSERT INTO dispatcher (setid, destination, attrs) VALUES (2, 'sip:127.0.0.1:5201', 'duid=b1');");
    assert_eq!(
        kamcmd_at(&ctl, &["dispatcher.reload"]).map(|s| s.trim().to_string()),
        Ok(RELOAD_OK.to_string()),
        "{}",
        hint()
    );
    let l = parse_kamcmd(&kamcmd_at(&ctl, &["dispatcher.list"]).expect("list"));
    assert_eq!(set_uris(&l, "2"), vec!["sip:127.0.0.1:5201"], "{}", l.pretty());
    assert_eq!(l.path_val("NRSETS"), Some("2"), "{}", l.pretty());
    kam.stop(Duration::from_secs(5));
    let _ = fs::remove_file(&ctl);
}
