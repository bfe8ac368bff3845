//! DB helpers for the DB-mode integration tests: SQLite databases built from Debian's
//! Kamailio schema, a throw-away PostgreSQL server (initdb + postgres, stopped by PID),
//! and the test cfg template with a DB driver module loaded.
//!
//! Include it with `mod common; #[path = "common/db_util.rs"] mod db_util;`.
#![allow(dead_code)]

use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const SQLITE_BIN: &str = "/usr/bin/sqlite3";
pub const PSQL_BIN: &str = "/usr/bin/psql";
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Debian's Kamailio DB schema scripts: `<dir>/<db>/standard-create.sql` (the `version`
/// table) and `<dir>/<db>/dispatcher-create.sql` (the table, version row 4).
pub const SCHEMA_DIR: &str = "/usr/share/kamailio";

/// The test cfg template (tests/data/ds-test.cfg.tmpl) with `loadmodule "<db_module>"`
/// right before the dispatcher module.
pub fn db_cfg_template(db_module: &str) -> String {
    let anchor = "loadmodule \"{{DISPATCHER_SO}}\"";
    assert!(CFG_TEMPLATE.contains(anchor), "the cfg template has no `{anchor}` line");
    CFG_TEMPLATE.replacen(anchor, &format!("loadmodule \"{db_module}\"\n{anchor}"), 1)
}

/// `modparam` lines for DB mode (plus `extra`).
pub fn db_params(url: &str, extra: &str) -> String {
    format!("modparam(\"dispatcher\", \"db_url\", \"{url}\")\n{extra}")
}

fn schema(db: &str, file: &str) -> String {
    let p = Path::new(SCHEMA_DIR).join(db).join(file);
    fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!("read {}: {e} (Debian's kamailio-sqlite-modules / kamailio-postgres-modules ship it)", p.display())
    })
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

/// db_sqlite wants FOUR slashes for an absolute path: `sqlite:////abs/path`.
pub fn sqlite_url(db: &Path) -> String {
    assert!(db.is_absolute(), "sqlite db path must be absolute: {}", db.display());
    format!("sqlite:///{}", db.display())
}

/// Run SQL statements on the SQLite file `db` (created if missing); panics on error.
pub fn sqlite_exec(db: &Path, sql: &str) {
    let mut cmd = Command::new(SQLITE_BIN);
    cmd.arg("-bail").arg(db).arg(sql);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("sqlite3: {e}"));
    if !out.status.success() || !out.stderr.is_empty() {
        panic!(
            "sqlite3 {} failed ({}): {}\nSQL: {sql}",
            db.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Query `db` and return sqlite3's output (`|`-separated rows).
pub fn sqlite_query(db: &Path, sql: &str) -> String {
    let mut cmd = Command::new(SQLITE_BIN);
    cmd.arg("-bail").arg(db).arg(sql);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(out.status.success(), "sqlite3 query failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new SQLite file with Debian's `version` and `dispatcher` tables (version 4), then `sql`.
pub fn sqlite_create(db: &Path, sql: &str) {
    let _ = fs::remove_file(db);
    sqlite_exec(db, &schema("db_sqlite", "standard-create.sql"));
    sqlite_exec(db, &schema("db_sqlite", "dispatcher-create.sql"));
    if !sql.trim().is_empty() {
        sqlite_exec(db, sql);
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

static PG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private PostgreSQL 15 server on 127.0.0.1:`port` (data dir and unix socket under a
/// temp dir in /tmp), with superuser `user`/`password` (scram over TCP, trust on the unix
/// socket) and database `db` holding Debian's Kamailio `version` + `dispatcher` tables.
/// initdb/postgres refuse to run as root: as root they run as the `postgres` user
/// (`setpriv`, which execs, so the PID we track is the postmaster's). Stopped in Drop
/// (SIGINT = fast shutdown, then the Proc's SIGTERM/SIGKILL by PID).
pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
    pub log_path: PathBuf,
    proc_: Proc,
}

fn postgres_ids() -> Option<(u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            return Some((f[2].parse().ok()?, f[3].parse().ok()?));
        }
    }
    None
}

/// `cmd` run as the postgres user when we are root (a new Command), else unchanged.
fn pg_command(bin: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl Postgres {
    /// Start the server or return why it is not possible (binaries missing, ...).
    pub fn start(user: &str, password: &str, db: &str) -> Result<Postgres, String> {
        let pg_bin = Path::new(PG_BIN_DIR);
        for b in ["initdb", "postgres"] {
            if !pg_bin.join(b).is_file() {
                return Err(format!("{} not found (apt-get install postgresql-15)", pg_bin.join(b).display()));
            }
        }
        let root = unsafe { libc::geteuid() } == 0;
        let n = PG_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/ds-it-pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let pwfile = dir.join("pw");
        fs::write(&pwfile, format!("{password}\n")).map_err(|e| format!("write pwfile: {e}"))?;
        if root {
            let (uid, gid) = postgres_ids().ok_or("running as root and there is no `postgres` user")?;
            for p in [&dir, &pwfile] {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
                if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
                    return Err(format!("chown {} to postgres: {}", p.display(), std::io::Error::last_os_error()));
                }
            }
        }
        let data = dir.join("data");
        let mut cmd = pg_command(&format!("{PG_BIN_DIR}/initdb"), root);
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", user, "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C.UTF-8"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(120))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let log_path = dir.join("postgres.log");
        let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let port = free_port();
        let mut cmd = pg_command(&format!("{PG_BIN_DIR}/postgres"), root);
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40"])
            .args(["-c", "shared_buffers=16MB", "-c", "dynamic_shared_memory_type=mmap"])
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log));
        let proc_ = Proc::spawn("postgres", &mut cmd)?;
        let mut pg = Postgres {
            dir,
            port,
            user: user.to_string(),
            password: password.to_string(),
            db: db.to_string(),
            log_path,
            proc_,
        };
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            if pg.proc_.try_wait().is_some() {
                return true;
            }
            match pg.psql_on("postgres", "SELECT 1") {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if let Some(st) = pg.proc_.try_wait() {
            return Err(format!("postgres exited at startup with {st}:\n{}", tail(&pg.log_path, 30)));
        }
        if !ok {
            return Err(format!("postgres not ready after 30 s ({last}):\n{}", tail(&pg.log_path, 30)));
        }
        pg.psql_on("postgres", &format!("CREATE DATABASE {db}"))?;
        pg.psql(&schema("postgres", "standard-create.sql"))?;
        pg.psql(&schema("postgres", "dispatcher-create.sql"))?;
        Ok(pg)
    }

    /// `postgres://user:password@127.0.0.1:port/db` (TCP, password auth).
    pub fn url(&self) -> String {
        format!("postgres://{}:{}@127.0.0.1:{}/{}", self.user, self.password, self.port, self.db)
    }

    /// Run SQL on the test database (through the unix socket); Err with psql's message.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_on(&self.db, sql)
    }

    fn psql_on(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(PSQL_BIN);
        cmd.arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", &self.user, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5");
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
        if !out.status.success() {
            return Err(format!("psql failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn pid(&self) -> i32 {
        self.proc_.pid
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[it] postgres dir {}\n--- postgres.log tail ---\n{}\n---",
                self.dir.display(),
                tail(&self.log_path, 20)
            );
        }
        // fast shutdown (SIGINT) of the postmaster we started, by its PID
        if self.proc_.try_wait().is_none() {
            unsafe {
                libc::kill(self.proc_.pid, libc::SIGINT);
            }
            self.proc_.wait_timeout(Duration::from_secs(10));
        }
        self.proc_.stop(Duration::from_secs(3));
        // the log tail was printed above when the test failed
        let _ = fs::remove_dir_all(&self.dir);
    }
}
