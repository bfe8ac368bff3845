//! Integration-test harness: runs a real Kamailio 5.6.3 with the dispatcher module under
//! test (the Rust build or, with `DS_TEST_MODULE=c`, Debian's C module), SIPp backends and
//! clients, `kamcmd`, and a raw UDP SIP client. Everything stays on 127.0.0.1.
//!
//! * Every process started here is tracked by PID in its own process group and is stopped
//!   in `Drop` (SIGTERM, then SIGKILL after a grace period, then waited), so also when a
//!   test panics.
//! * Run dirs: `<CARGO_MANIFEST_DIR>/target/it-run/<test>-<pid>-<counter>/` (kept for
//!   debugging). Kamailio's stderr log is `kamailio.log` there; its tail is printed when
//!   a test fails.
//! * Ports are chosen by binding port 0 and are never handed out twice in one process, so
//!   tests running in parallel threads do not collide.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SIPP_BIN: &str = "/usr/bin/sipp";

/// The Kamailio under test: Debian's by default; `make test KAMAILIO_PREFIX=...` exports
/// `KAMAILIO_BIN`, `KAMCMD_BIN` and `KAMAILIO_MODULES` for a source-built release.
pub static KAMAILIO_BIN: once_cell::sync::Lazy<String> =
    once_cell::sync::Lazy::new(|| env_or("KAMAILIO_BIN", "/usr/sbin/kamailio"));
pub static KAMCMD_BIN: once_cell::sync::Lazy<String> =
    once_cell::sync::Lazy::new(|| env_or("KAMCMD_BIN", "/usr/sbin/kamcmd"));
pub static MODULES_DIR: once_cell::sync::Lazy<String> =
    once_cell::sync::Lazy::new(|| env_or("KAMAILIO_MODULES", "/usr/lib/x86_64-linux-gnu/kamailio/modules"));
/// The C dispatcher of the same Kamailio: the reference of the differential tests.
pub static C_MODULE: once_cell::sync::Lazy<String> =
    once_cell::sync::Lazy::new(|| env_or("DS_C_MODULE", &format!("{}/dispatcher.so", &*MODULES_DIR)));

fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_string(),
    }
}

/// Version of the Kamailio under test as `major*1_000_000 + minor*1000 + patch` (like the
/// core's VERSIONVAL), read from `kamailio -V` once.
pub fn kam_version() -> u32 {
    static V: once_cell::sync::Lazy<u32> = once_cell::sync::Lazy::new(|| {
        let out = Command::new(&*KAMAILIO_BIN).arg("-V").output().expect("run kamailio -V");
        let text = String::from_utf8_lossy(&out.stdout);
        let ver = text
            .lines()
            .find_map(|l| l.strip_prefix("version: kamailio "))
            .and_then(|r| r.split_whitespace().next())
            .expect("version line in kamailio -V");
        let n: Vec<u32> = ver.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        n.first().copied().unwrap_or(0) * 1_000_000 + n.get(1).copied().unwrap_or(0) * 1000 + n.get(2).copied().unwrap_or(0)
    });
    *V
}

/// True when the Kamailio under test is at least `major.minor.patch`.
pub fn kam_at_least(major: u32, minor: u32, patch: u32) -> bool {
    kam_version() >= major * 1_000_000 + minor * 1000 + patch
}

/// The test cfg template (see the comment at its top for the test entry points).
pub const CFG_TEMPLATE: &str = include_str!("../data/ds-test.cfg.tmpl");

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn data_dir() -> PathBuf {
    manifest_dir().join("tests").join("data")
}

// ---------------------------------------------------------------------------------------
// Module under test
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Rust,
    C,
}

impl ModuleKind {
    /// `DS_TEST_MODULE=c` selects Debian's C module, `rust` (or unset) the Rust build.
    pub fn from_env() -> ModuleKind {
        match std::env::var("DS_TEST_MODULE") {
            Err(_) => ModuleKind::Rust,
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "rust" | "rs" => ModuleKind::Rust,
                "c" => ModuleKind::C,
                other => panic!("DS_TEST_MODULE={other:?}: expected `rust` (default) or `c`"),
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Rust => "rust",
            ModuleKind::C => "c",
        }
    }

    /// Absolute path of the module's .so. Panics (the test fails, it is not skipped) when
    /// the file is missing.
    pub fn so_path(self) -> PathBuf {
        let p = match self {
            ModuleKind::C => PathBuf::from(&*C_MODULE),
            ModuleKind::Rust => match std::env::var_os("DS_RUST_MODULE") {
                Some(v) if !v.is_empty() => PathBuf::from(v),
                _ => manifest_dir().join("target").join("release").join("dispatcher.so"),
            },
        };
        let p = if p.is_relative() { manifest_dir().join(p) } else { p };
        if !p.is_file() {
            match self {
                ModuleKind::Rust => panic!(
                    "the Rust dispatcher module {} does not exist: build it with `make` \
                     (or set DS_RUST_MODULE, or run the tests against the C module with \
                     DS_TEST_MODULE=c)",
                    p.display()
                ),
                ModuleKind::C => panic!(
                    "Debian's C dispatcher module {} does not exist (apt-get install kamailio)",
                    p.display()
                ),
            }
        }
        p
    }
}

// ---------------------------------------------------------------------------------------
// Ports, run dirs, small utilities
// ---------------------------------------------------------------------------------------

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static RNG: Mutex<u64> = Mutex::new(0);

/// The kernel's ephemeral port range (ports that `bind(0)` hands out).
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

fn next_random() -> u64 {
    let mut g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    if *g == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        *g = t ^ ((std::process::id() as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    }
    // xorshift64*
    let mut x = *g;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *g = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn port_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free UDP (and TCP) port on 127.0.0.1, never returned twice in this process.
///
/// Ports are drawn at random from *below* the kernel's ephemeral range, so that sockets
/// bound to port 0 (by this process, Kamailio, SIPp, kamcmd, ...) can never take a port
/// between the moment it is chosen here and the moment its user binds it.
pub fn free_port() -> u16 {
    let (eph_lo, eph_hi) = ephemeral_range();
    let (lo, hi) = if eph_lo > 12000 { (10000u32, eph_lo as u32 - 1) } else { (eph_hi as u32 + 1, 65535u32) };
    let span = hi.saturating_sub(lo) + 1;
    for _ in 0..1000 {
        let port = if span > 1000 {
            (lo + (next_random() % span as u64) as u32) as u16
        } else {
            // no usable range outside the ephemeral one: let the kernel choose
            match UdpSocket::bind("127.0.0.1:0") {
                Ok(s) => s.local_addr().expect("local_addr").port(),
                Err(e) => panic!("cannot bind a UDP socket on 127.0.0.1: {e}"),
            }
        };
        {
            let g = PORTS.lock().unwrap_or_else(|e| e.into_inner());
            if g.as_ref().is_some_and(|set| set.contains(&port)) {
                continue;
            }
        }
        if !port_free(port) {
            continue;
        }
        let mut g = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("could not find a free UDP port on 127.0.0.1 after 1000 tries");
}

/// A UDP socket bound to 127.0.0.1 on a port from `free_port()` (kept bound, so nobody
/// else can take it; use it with `sip_request_on`).
pub fn bound_socket() -> UdpSocket {
    for _ in 0..20 {
        let p = free_port();
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", p)) {
            return s;
        }
    }
    panic!("could not bind a UDP socket on 127.0.0.1");
}

/// True while something is bound to 127.0.0.1:`port` (UDP).
pub fn udp_port_in_use(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh run dir `target/it-run/<name>-<pid>-<counter>/` (kept after the test).
pub fn run_dir(name: &str) -> PathBuf {
    let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let dir = manifest_dir()
        .join("target")
        .join("it-run")
        .join(format!("{safe}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

pub fn write_file(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The last `n` lines of a (log) file, or a note that it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Replace every `{{KEY}}` in `tmpl`; panics if a placeholder is left over.
pub fn render(tmpl: &str, vars: &[(&str, String)]) -> String {
    let mut out = tmpl.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(pos) = out.find("{{") {
        let end = out[pos..].find("}}").map(|e| pos + e + 2).unwrap_or(out.len().min(pos + 40));
        panic!("unfilled placeholder {} in rendered template", &out[pos..end]);
    }
    out
}

/// Poll `f` every `step` until it returns true or `timeout` elapses.
pub fn wait_until(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Run a command (stdin null) and kill it if it runs longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let pid = child.id() as i32;
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!("{:?} timed out after {timeout:?} (killed)", cmd.get_program()));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// A child process in its own process group, stopped in `Drop`.
pub struct Proc {
    pub label: String,
    child: Option<Child>,
    pub pid: i32,
}

impl Proc {
    /// Spawn `cmd` (stdin null, stdout/stderr as configured by the caller) in a new
    /// process group.
    pub fn spawn(label: &str, cmd: &mut Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::null());
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| format!("{label}: spawn {:?}: {e}", cmd.get_program()))?;
        let pid = child.id() as i32;
        Ok(Proc { label: label.to_string(), child: Some(child), pid })
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten(),
            None => None,
        }
    }

    /// Wait for the process to exit by itself, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn group_alive(&self) -> bool {
        unsafe { libc::kill(-self.pid, 0) == 0 }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL the process and its group; always waits.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = self.pid;
        let mut status = child.try_wait().ok().flatten();
        if status.is_none() {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while status.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                status = child.try_wait().ok().flatten();
            }
            if status.is_none() {
                eprintln!("[it] {}: pid {pid} did not stop after SIGTERM, sending SIGKILL", self.label);
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
                status = child.wait().ok();
            }
        }
        // Children of the process (Kamailio's workers) live in the same group: give them
        // a moment to follow their parent, then kill whatever is left of the group.
        let deadline = Instant::now() + Duration::from_millis(1500);
        while self.group_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.group_alive() {
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------------------
// Kamailio
// ---------------------------------------------------------------------------------------

/// Settings for the test cfg template (tests/data/ds-test.cfg.tmpl).
#[derive(Clone, Debug)]
pub struct KamOpts {
    /// Dispatcher list file contents; `{{PORT}}` in it is replaced by Kamailio's port.
    pub list: String,
    /// Extra cfg lines (typically `modparam("dispatcher", ...)`) placed after the defaults.
    pub extra_params: String,
    pub fr_timer_ms: u32,
    pub fr_inv_timer_ms: u32,
    pub children: u32,
    pub debug: i32,
    /// A cfg text to use instead of tests/data/ds-test.cfg.tmpl; the same placeholders
    /// are filled in (every one that appears must be known).
    pub cfg_template: Option<String>,
}

impl Default for KamOpts {
    fn default() -> Self {
        KamOpts {
            list: String::new(),
            extra_params: String::new(),
            fr_timer_ms: 1000,
            fr_inv_timer_ms: 3000,
            children: 4,
            debug: 2,
            cfg_template: None,
        }
    }
}

impl KamOpts {
    pub fn with_list(list: &str) -> KamOpts {
        KamOpts { list: list.to_string(), ..KamOpts::default() }
    }
}

pub struct Kamailio {
    pub kind: ModuleKind,
    pub dir: PathBuf,
    pub port: u16,
    pub cfg_path: PathBuf,
    pub list_path: PathBuf,
    pub log_path: PathBuf,
    pub ctl_path: PathBuf,
    proc_: Proc,
}

impl Kamailio {
    /// Start Kamailio with the test cfg template and `opts`, in `<parent>/<label>/`.
    /// Panics with the log tail when it does not come up.
    pub fn start(parent: &Path, label: &str, kind: ModuleKind, opts: &KamOpts) -> Kamailio {
        match Kamailio::try_start(parent, label, kind, opts) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like `start`, but returns the error text (including the log tail) when Kamailio
    /// exits or does not become ready.
    pub fn try_start(parent: &Path, label: &str, kind: ModuleKind, opts: &KamOpts) -> Result<Kamailio, String> {
        // a port taken by a foreign process in the meantime: try again on another one
        let mut last = String::new();
        for _ in 0..3 {
            match Kamailio::try_start_once(parent, label, kind, opts) {
                Err(e) if e.contains("Address already in use") => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    fn try_start_once(parent: &Path, label: &str, kind: ModuleKind, opts: &KamOpts) -> Result<Kamailio, String> {
        let so = kind.so_path();
        let dir = parent.join(label);
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let port = free_port();
        let list_path = dir.join("dispatcher.list");
        write_file(&list_path, &opts.list.replace("{{PORT}}", &port.to_string()));
        let ctl_path = ctl_socket_path(&dir);
        let cfg = render(
            opts.cfg_template.as_deref().unwrap_or(CFG_TEMPLATE),
            &[
                ("DEBUG", opts.debug.to_string()),
                ("CHILDREN", opts.children.to_string()),
                ("PORT", port.to_string()),
                ("DISPATCHER_SO", so.display().to_string()),
                ("FR_TIMER", opts.fr_timer_ms.to_string()),
                ("FR_INV_TIMER", opts.fr_inv_timer_ms.to_string()),
                ("RUNDIR", dir.display().to_string()),
                ("LIST_FILE", list_path.display().to_string()),
                ("EXTRA_PARAMS", opts.extra_params.clone()),
            ],
        );
        // the ctl socket may have to live outside the run dir (unix socket path length)
        let cfg = cfg.replace(
            &format!("unix:{}/kamailio_ctl", dir.display()),
            &format!("unix:{}", ctl_path.display()),
        );
        let cfg = if alloc_check() { alloc_check_cfg(&cfg) } else { cfg };
        let cfg_path = dir.join("kamailio.cfg");
        write_file(&cfg_path, &cfg);
        Kamailio::spawn(kind, dir, port, cfg_path, list_path, ctl_path, &[])
    }

    /// Start Kamailio on an arbitrary cfg file (e.g. cfg-examples/*.cfg) with `-A` defines.
    /// `port` is the UDP port it will listen on and `ctl_path` its binrpc unix socket.
    pub fn start_cfg(
        dir: &Path,
        kind: ModuleKind,
        cfg_path: &Path,
        list_path: &Path,
        port: u16,
        ctl_path: &Path,
        extra_args: &[String],
    ) -> Result<Kamailio, String> {
        Kamailio::spawn(
            kind,
            dir.to_path_buf(),
            port,
            cfg_path.to_path_buf(),
            list_path.to_path_buf(),
            ctl_path.to_path_buf(),
            extra_args,
        )
    }

    fn spawn(
        kind: ModuleKind,
        dir: PathBuf,
        port: u16,
        cfg_path: PathBuf,
        list_path: PathBuf,
        ctl_path: PathBuf,
        extra_args: &[String],
    ) -> Result<Kamailio, String> {
        let log_path = dir.join("kamailio.log");
        let log = fs::File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let out = fs::File::create(dir.join("kamailio.stdout")).map_err(|e| format!("create stdout: {e}"))?;
        let _ = fs::remove_file(&ctl_path);
        let mut cmd = Command::new(&*KAMAILIO_BIN);
        cmd.arg("-DD")
            .arg("-E")
            .arg("-f")
            .arg(&cfg_path)
            .arg("-w")
            .arg(&dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .arg("-m")
            // shared memory in MB (DS_KAM_SHM_MB; the soak test needs more)
            .arg(env_or("DS_KAM_SHM_MB", "64"))
            .arg("-M")
            .arg("8")
            .arg("-L")
            .arg(&*MODULES_DIR)
            .args(if alloc_check() { &["-x", "qm"][..] } else { &[][..] })
            .args(extra_args)
            .current_dir(&dir)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log));
        let proc_ = Proc::spawn("kamailio", &mut cmd)?;
        let mut k = Kamailio { kind, dir, port, cfg_path, list_path, log_path, ctl_path, proc_ };
        k.wait_ready(Duration::from_secs(20))?;
        Ok(k)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.proc_.try_wait() {
                return Err(format!(
                    "kamailio ({} module) exited during startup with {st}; run dir {}\n--- kamailio.log tail ---\n{}",
                    self.kind.name(),
                    self.dir.display(),
                    tail(&self.log_path, 40)
                ));
            }
            if self.ctl_path.exists() {
                // A 404 from the request route proves a SIP worker is up.
                if let Ok(r) = sip_request(None, self.port, "OPTIONS", "probe", &[], Duration::from_millis(300)) {
                    if r.status == 404 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kamailio ({} module) not ready after {timeout:?}; run dir {}\n--- kamailio.log tail ---\n{}",
                    self.kind.name(),
                    self.dir.display(),
                    tail(&self.log_path, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kamcmd -s unix:<ctl> args...`: Ok(stdout) or Err(fault text), where the fault text
    /// is what follows `error: <code> - ` (e.g. `Reload Failed`). Transport problems are
    /// reported as `kamcmd: ...`.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        kamcmd_at(&self.ctl_path, args)
    }

    /// `dispatcher.list [mode]` parsed into a tree.
    pub fn ds_list(&self, mode: Option<&str>) -> Result<Node, String> {
        let mut args = vec!["dispatcher.list"];
        if let Some(m) = mode {
            args.push(m);
        }
        self.kamcmd(&args).map(|s| parse_kamcmd(&s))
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Number of lines in the Kamailio log containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    /// Send one dialog-less request to this Kamailio and return its reply.
    pub fn request(&self, user: &str, headers: &[(&str, &str)]) -> SipReply {
        sip_request(None, self.port, "OPTIONS", user, headers, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("request to {user}: {e}\n{}", self.log_hint()))
    }

    /// Like `request`, but sent from `local` (an address to bind, e.g. 127.0.0.2:0).
    pub fn request_from(&self, local: SocketAddr, user: &str, headers: &[(&str, &str)]) -> SipReply {
        sip_request(Some(local), self.port, "OPTIONS", user, headers, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("request to {user} from {local}: {e}\n{}", self.log_hint()))
    }

    /// Like `request`, but sent from an already bound socket.
    pub fn request_on(&self, sock: &UdpSocket, user: &str, headers: &[(&str, &str)]) -> SipReply {
        sip_request_on(sock, self.port, "OPTIONS", user, headers, Duration::from_secs(3)).unwrap_or_else(|e| {
            panic!("request to {user} from {:?}: {e}\n{}", sock.local_addr(), self.log_hint())
        })
    }

    pub fn log_hint(&self) -> String {
        format!("run dir {}\n--- kamailio.log tail ---\n{}", self.dir.display(), tail(&self.log_path, 30))
    }

    /// Stop Kamailio now (SIGTERM, grace, SIGKILL); `Drop` does the same.
    pub fn stop(&mut self) {
        self.proc_.stop(Duration::from_secs(5));
    }

    pub fn pid(&self) -> i32 {
        self.proc_.pid
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[it] kamailio ({} module) run dir: {}\n--- kamailio.log tail ---\n{}\n---",
                self.kind.name(),
                self.dir.display(),
                tail(&self.log_path, 40)
            );
        }
        self.proc_.stop(Duration::from_secs(5));
        let _ = fs::remove_file(&self.ctl_path);
        if alloc_check() {
            alloc_check_report(&self.log_path, &self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Allocator checks (`make alloc-check`: DS_ALLOC_CHECK=1)
// ---------------------------------------------------------------------------------------

/// `DS_ALLOC_CHECK=1`: Kamailio runs with the debugging shm allocator (`-x qm`, which records
/// file/function/line of every block), logs double frees instead of aborting (`mem_safety`),
/// and dumps every shm block still in use at shutdown, after the modules' destroy functions
/// (`mem_summary` 2). Every stop then appends what it finds to `alloc_check_findings()`.
pub fn alloc_check() -> bool {
    matches!(std::env::var("DS_ALLOC_CHECK").as_deref(), Ok("1"))
}

/// Where the allocator findings of this test run are collected (one block per Kamailio).
pub fn alloc_check_findings() -> PathBuf {
    manifest_dir().join("target").join("alloc-check").join("findings.txt")
}

fn alloc_check_cfg(cfg: &str) -> String {
    // core parameters: before the first loadmodule
    let params = "mem_summary=2\nmemlog=1\nmem_safety=1\n";
    match cfg.find("loadmodule") {
        Some(i) => format!("{}{}{}", &cfg[..i], params, &cfg[i..]),
        None => format!("{params}{cfg}"),
    }
}

/// Reads a stopped Kamailio's log: allocator errors (double free, bad pointer, overwritten
/// fragment borders) anywhere, and shm blocks allocated by this module (through the C shim,
/// `kamailio-headers/shim.c`) that are still in use in the shutdown dump. Appends them, with
/// the run dir, to `alloc_check_findings()`; also notes when no shutdown dump was found.
pub fn alloc_check_report(log_path: &Path, dir: &Path) {
    let log = String::from_utf8_lossy(&fs::read(log_path).unwrap_or_default()).into_owned();
    let mut found: Vec<String> = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("freeing already freed") || l.contains("bad pointer") || l.contains("overwritten(") {
            found.push(format!("allocator error: {}", l.trim()));
        }
        // "   12. N  address=0x... frag=... size=64 used=1" then "alloc'd from <file>: <func>(<line>)"
        if l.contains("alloc'd from") && l.contains("shim.c") {
            let head = if i > 0 { lines[i - 1].trim() } else { "" };
            found.push(format!("held at shutdown: {} | {}", l.trim(), head));
        }
    }
    let dumped = log.contains("Memory status (shm)");
    let dest = alloc_check_findings();
    if let Some(p) = dest.parent() {
        let _ = fs::create_dir_all(p);
    }
    let mut text = format!("== {} (shutdown dump: {})\n", dir.display(), if dumped { "yes" } else { "NO" });
    for f in &found {
        text.push_str(f);
        text.push('\n');
    }
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&dest) {
        let _ = f.write_all(text.as_bytes());
    }
}

static CTL_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `<dir>/kamailio_ctl`, or a short path under /tmp when that would be too long for a
/// unix socket (108 bytes including the NUL).
/// `kamailio -DD -E -m 64 -M 8 -f <cfg> -L <modules> -w <dir> -P <dir>/kamailio.pid`: the
/// command line of a test that runs a cfg example with its own `-A` defines (add those, the
/// output files and spawn it).
pub fn kamailio_cmd(cfg: &Path, modules: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(&*KAMAILIO_BIN);
    cmd.args(["-DD", "-E", "-m", "64", "-M", "8"])
        .arg("-f")
        .arg(cfg)
        .arg("-L")
        .arg(modules)
        .arg("-w")
        .arg(dir)
        .arg("-P")
        .arg(dir.join("kamailio.pid"));
    cmd
}

pub fn ctl_socket_path(dir: &Path) -> PathBuf {
    let p = dir.join("kamailio_ctl");
    if p.as_os_str().len() < 100 {
        p
    } else {
        let n = CTL_COUNTER.fetch_add(1, Ordering::SeqCst);
        PathBuf::from(format!("/tmp/ds-it-{}-{n}.ctl", std::process::id()))
    }
}

/// `kamcmd -s unix:<ctl> args...` (see `Kamailio::kamcmd`).
pub fn kamcmd_at(ctl: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(&*KAMCMD_BIN);
    cmd.arg("-s").arg(format!("unix:{}", ctl.display())).args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10)).map_err(|e| format!("kamcmd: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("kamcmd: {args:?} failed with {}: {}{}", out.status, stdout.trim(), stderr.trim()));
    }
    if let Some(rest) = stdout.strip_prefix("error: ") {
        // "error: 500 - Reload Failed"
        let rest = rest.trim_end_matches('\n');
        return Err(match rest.split_once(" - ") {
            Some((code, text)) if code.chars().all(|c| c.is_ascii_digit()) => text.to_string(),
            _ => rest.to_string(),
        });
    }
    Ok(stdout)
}

// ---------------------------------------------------------------------------------------
// kamcmd output parser
// ---------------------------------------------------------------------------------------

/// kamcmd's printed RPC reply. A struct keeps member order and repeated members (kamcmd
/// prints arrays of structs as repeated `KEY: {` blocks). Anonymous items have key "".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Val(String),
    Struct(Vec<(String, Node)>),
}

impl Node {
    /// The value of a leaf.
    pub fn val(&self) -> Option<&str> {
        match self {
            Node::Val(s) => Some(s),
            Node::Struct(_) => None,
        }
    }

    pub fn members(&self) -> &[(String, Node)] {
        match self {
            Node::Struct(m) => m,
            Node::Val(_) => &[],
        }
    }

    /// Descend through single anonymous wrappers (`{ ... }` at the top level).
    pub fn unwrap_anon(&self) -> &Node {
        let mut n = self;
        while let Node::Struct(m) = n {
            if m.len() == 1 && m[0].0.is_empty() {
                n = &m[0].1;
            } else {
                break;
            }
        }
        n
    }

    /// First member called `key` (after unwrapping anonymous wrappers).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.unwrap_anon().members().iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// All members called `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&Node> {
        self.unwrap_anon().members().iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect()
    }

    /// Follow a `/`-separated path of member names, e.g. `RECORDS/SET`.
    pub fn path(&self, path: &str) -> Option<&Node> {
        let mut n = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            n = n.get(part)?;
        }
        Some(n)
    }

    pub fn path_val(&self, path: &str) -> Option<&str> {
        self.path(path).and_then(|n| n.val())
    }

    /// One line per leaf: `A/B[1]/C = value` (the index is the position among siblings
    /// with the same key; shown when the key repeats or is anonymous).
    pub fn flatten(&self) -> Vec<String> {
        let mut out = Vec::new();
        flatten_into(self, "", &mut out);
        out
    }

    /// Re-print in kamcmd's layout (for messages).
    pub fn pretty(&self) -> String {
        let mut s = String::new();
        pretty_into(self, 0, &mut s);
        s
    }
}

fn flatten_into(n: &Node, prefix: &str, out: &mut Vec<String>) {
    match n {
        Node::Val(v) => out.push(format!("{prefix} = {v}")),
        Node::Struct(m) => {
            if m.is_empty() {
                out.push(format!("{prefix} = {{}}"));
            }
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for (k, _) in m {
                *counts.entry(k.as_str()).or_default() += 1;
            }
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (k, v) in m {
                let i = seen.entry(k.as_str()).or_default();
                let name = if counts[k.as_str()] > 1 || k.is_empty() { format!("{k}[{i}]") } else { k.clone() };
                *i += 1;
                let p = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                flatten_into(v, &p, out);
            }
        }
    }
}

fn pretty_into(n: &Node, depth: usize, s: &mut String) {
    for (k, v) in n.members() {
        let ind = "\t".repeat(depth);
        let key = if k.is_empty() { String::new() } else { format!("{k}: ") };
        match v {
            Node::Val(x) => {
                let _ = writeln!(s, "{ind}{key}{x}");
            }
            Node::Struct(_) => {
                let _ = writeln!(s, "{ind}{key}{{");
                pretty_into(v, depth + 1, s);
                let _ = writeln!(s, "{ind}}}");
            }
        }
    }
}

/// Parse kamcmd's printed output: `{` / `KEY: {` open a struct, `}` closes it,
/// `KEY: value` is a member, any other line an anonymous value. The result is always a
/// `Node::Struct` holding the top-level items.
pub fn parse_kamcmd(text: &str) -> Node {
    let mut stack: Vec<(String, Vec<(String, Node)>)> = vec![(String::new(), Vec::new())];
    for raw in text.lines() {
        let line = raw.trim_start_matches([' ', '\t']).trim_end_matches('\r');
        if line.is_empty() && raw.trim().is_empty() {
            continue;
        }
        if line == "}" {
            if stack.len() > 1 {
                let (k, m) = stack.pop().expect("stack");
                stack.last_mut().expect("stack").1.push((k, Node::Struct(m)));
                continue;
            }
        }
        if line == "{" {
            stack.push((String::new(), Vec::new()));
            continue;
        }
        if let Some(key) = line.strip_suffix(": {") {
            stack.push((key.to_string(), Vec::new()));
            continue;
        }
        let (k, v) = match line.split_once(": ") {
            Some((k, v)) if !k.is_empty() && !k.contains(' ') => (k.to_string(), v.to_string()),
            _ => match line.strip_suffix(':') {
                Some(k) if !k.is_empty() && !k.contains(' ') => (k.to_string(), String::new()),
                _ => (String::new(), line.to_string()),
            },
        };
        stack.last_mut().expect("stack").1.push((k, Node::Val(v)));
    }
    // unbalanced output: close what is open
    while stack.len() > 1 {
        let (k, m) = stack.pop().expect("stack");
        stack.last_mut().expect("stack").1.push((k, Node::Struct(m)));
    }
    Node::Struct(stack.pop().expect("stack").1)
}

/// A readable line diff of two flattened trees ("-" only in `a`, "+" only in `b`), or
/// None when they are equal.
pub fn tree_diff(a: &Node, b: &Node, a_name: &str, b_name: &str) -> Option<String> {
    let fa: Vec<String> = a.flatten().iter().map(|l| normalize_iuid(l)).collect();
    let fb: Vec<String> = b.flatten().iter().map(|l| normalize_iuid(l)).collect();
    if fa == fb {
        return None;
    }
    Some(format!("--- {a_name}\n+++ {b_name}\n{}", line_diff(&fa, &fb)))
}

/// LCS-based diff of two line lists: changed lines marked "-" (only in `a`) and "+" (only
/// in `b`), with up to 3 unchanged lines of context around them.
pub fn line_diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if a[i] == b[j] { l[i + 1][j + 1] + 1 } else { l[i + 1][j].max(l[i][j + 1]) };
        }
    }
    // (marker, line)
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', &a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || l[i + 1][j] >= l[i][j + 1]) {
            ops.push(('-', &a[i]));
            i += 1;
        } else {
            ops.push(('+', &b[j]));
            j += 1;
        }
    }
    const CTX: usize = 3;
    let changed: Vec<usize> = ops.iter().enumerate().filter(|(_, o)| o.0 != ' ').map(|(k, _)| k).collect();
    let mut out = String::new();
    let mut last_shown: Option<usize> = None;
    for (k, (mark, line)) in ops.iter().enumerate() {
        let near = changed.iter().any(|&c| c.abs_diff(k) <= CTX);
        if !near {
            continue;
        }
        if let Some(p) = last_shown {
            if k > p + 1 {
                out.push_str("  ...\n");
            }
        } else if k > 0 {
            out.push_str("  ...\n");
        }
        let _ = writeln!(out, "{mark} {line}");
        last_shown = Some(k);
    }
    if matches!(last_shown, Some(p) if p + 1 < ops.len()) {
        out.push_str("  ...\n");
    }
    out
}

// ---------------------------------------------------------------------------------------
// Raw UDP SIP client
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct SipReply {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl SipReply {
    /// First header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Header `name` or a panic that shows the whole reply.
    pub fn hdr(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| panic!("reply has no {name} header:\n{}", self.raw))
    }

    /// All headers `name`, in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

pub fn parse_sip_reply(raw: &str) -> Result<SipReply, String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    if proto != "SIP/2.0" {
        return Err(format!("not a SIP reply: {first:?}"));
    }
    let status: u16 = parts.next().unwrap_or("").parse().map_err(|_| format!("bad status line {first:?}"))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(SipReply { status, reason, headers, raw: raw.to_string() })
}

static BRANCH_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Send one dialog-less request `method sip:<user>@127.0.0.1:<port>` with extra headers
/// from `local` (or an ephemeral port) and wait for a final reply. No retransmission (the
/// test routes are not idempotent; loopback does not lose packets).
pub fn sip_request(
    local: Option<SocketAddr>,
    port: u16,
    method: &str,
    user: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<SipReply, String> {
    let bind: SocketAddr = local.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"));
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    sip_request_on(&sock, port, method, user, headers, timeout)
}

/// Like `sip_request`, from an already bound socket.
pub fn sip_request_on(
    sock: &UdpSocket,
    port: u16,
    method: &str,
    user: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<SipReply, String> {
    let la = sock.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let n = BRANCH_COUNTER.fetch_add(1, Ordering::SeqCst);
    let tag = format!("{}-{n}-{}", std::process::id(), la.port());
    let mut msg = String::new();
    let _ = write!(
        msg,
        "{method} sip:{user}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ip}:{lport};branch=z9hG4bK-it-{tag};rport\r\n\
         From: <sip:it@{ip}:{lport}>;tag=it{tag}\r\n\
         To: <sip:{user}@127.0.0.1:{port}>\r\n\
         Call-ID: it-{tag}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n",
        ip = la.ip(),
        lport = la.port()
    );
    for (k, v) in headers {
        let _ = write!(msg, "{k}: {v}\r\n");
    }
    msg.push_str("Content-Length: 0\r\n\r\n");
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no final reply to {method} sip:{user}@127.0.0.1:{port} within {timeout:?}"));
        }
        sock.set_read_timeout(Some(left)).map_err(|e| format!("set_read_timeout: {e}"))?;
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                let raw = String::from_utf8_lossy(&buf[..len]).into_owned();
                let r = parse_sip_reply(&raw)?;
                // ignore provisional replies and stale replies to earlier requests
                if r.status >= 200 && r.header("Call-ID") == Some(&format!("it-{tag}@127.0.0.1")) {
                    return Ok(r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                continue;
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UasKind {
    /// 200 to INVITE (then ACK, BYE -> 200) and 200 to OPTIONS (tests/data/uas_200.xml)
    Ok200,
    /// 500 to every INVITE (tests/data/uas_500.xml)
    Err500,
    /// another scenario file of tests/data (e.g. uas_503.xml, uas_200_slow.xml)
    Data(&'static str),
}

impl UasKind {
    pub fn scenario(self) -> PathBuf {
        data_dir().join(match self {
            UasKind::Ok200 => "uas_200.xml",
            UasKind::Err500 => "uas_500.xml",
            UasKind::Data(f) => f,
        })
    }
}

/// A SIPp backend (UAS) on 127.0.0.1:`port`; every message it receives is logged with
/// `-trace_msg` so the test can count what reached it.
pub struct SippUas {
    pub label: String,
    pub port: u16,
    pub msg_file: PathBuf,
    pub out_file: PathBuf,
    proc_: Proc,
}

impl SippUas {
    /// Start a backend on a free port (retried on another port if it cannot bind).
    pub fn start(dir: &Path, label: &str, kind: UasKind) -> SippUas {
        let mut last = String::new();
        for _ in 0..3 {
            match SippUas::try_start_on(dir, label, kind, free_port()) {
                Ok(u) => return u,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    pub fn start_on(dir: &Path, label: &str, kind: UasKind, port: u16) -> SippUas {
        SippUas::try_start_on(dir, label, kind, port).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start_on(dir: &Path, label: &str, kind: UasKind, port: u16) -> Result<SippUas, String> {
        let cport = free_port();
        let msg_file = dir.join(format!("{label}.messages.log"));
        let out_file = dir.join(format!("{label}.sipp.out"));
        let err_file = dir.join(format!("{label}.errors.log"));
        let out = fs::File::create(&out_file).unwrap_or_else(|e| panic!("create {}: {e}", out_file.display()));
        let mut cmd = Command::new(SIPP_BIN);
        cmd.arg("-sf")
            .arg(kind.scenario())
            .args(["-i", "127.0.0.1", "-bind_local"])
            .args(["-p", &port.to_string()])
            .args(["-cp", &cport.to_string()])
            .arg("-nostdin")
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&msg_file)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&err_file)
            .current_dir(dir)
            .stdout(Stdio::from(out.try_clone().expect("dup")))
            .stderr(Stdio::from(out));
        let mut proc_ = Proc::spawn(&format!("sipp uas {label}"), &mut cmd)?;
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            proc_.try_wait().is_some() || udp_port_in_use(port)
        });
        if let Some(st) = proc_.try_wait() {
            return Err(format!("sipp UAS {label} exited at startup with {st}:\n{}", tail(&out_file, 20)));
        }
        if !ok {
            return Err(format!("sipp UAS {label} did not bind 127.0.0.1:{port} within 10 s:\n{}", tail(&out_file, 20)));
        }
        Ok(SippUas { label: label.to_string(), port, msg_file, out_file, proc_ })
    }

    pub fn uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    /// Received messages as (first line, Call-ID).
    pub fn received(&self) -> Vec<(String, String)> {
        parse_sipp_messages(&fs::read(&self.msg_file).unwrap_or_default())
    }

    /// Number of distinct calls (Call-IDs) whose INVITE reached this backend.
    pub fn invites(&self) -> usize {
        let ids: HashSet<String> = self
            .received()
            .into_iter()
            .filter(|(l, _)| l.starts_with("INVITE "))
            .map(|(_, c)| c)
            .collect();
        ids.len()
    }

    /// Number of received requests whose method is `method` (retransmissions included).
    pub fn requests(&self, method: &str) -> usize {
        let p = format!("{method} ");
        self.received().iter().filter(|(l, _)| l.starts_with(&p)).count()
    }

    pub fn stop(&mut self) {
        self.proc_.stop(Duration::from_secs(3));
    }
}

impl Drop for SippUas {
    fn drop(&mut self) {
        self.proc_.stop(Duration::from_secs(3));
    }
}

/// Parse a SIPp `-trace_msg` log into the received messages' (first line, Call-ID).
pub fn parse_sipp_messages(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if !(l.contains("message received") && l.contains("bytes")) {
            continue;
        }
        // skip blank lines, then the start line and headers up to the next blank line
        while matches!(lines.peek(), Some(x) if x.trim().is_empty()) {
            lines.next();
        }
        let first = match lines.next() {
            Some(f) => f.trim().to_string(),
            None => break,
        };
        let mut callid = String::new();
        while let Some(h) = lines.peek() {
            if h.trim().is_empty() || h.starts_with("-----------------") {
                break;
            }
            let h = lines.next().expect("peeked");
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim();
                if k.eq_ignore_ascii_case("Call-ID") || k == "i" {
                    callid = v.trim().to_string();
                }
            }
        }
        out.push((first, callid));
    }
    out
}

#[derive(Clone, Debug)]
pub struct UacResult {
    /// sipp's exit code (0: all calls successful, 1: some failed, ...); None if killed
    pub exit_code: Option<i32>,
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub dir_hint: String,
}

impl UacResult {
    pub fn summary(&self) -> String {
        format!(
            "sipp uac: exit={:?} created={} successful={} failed={} elapsed={:.1}s ({})",
            self.exit_code,
            self.created,
            self.successful,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.dir_hint
        )
    }
}

/// Files of one SIPp UAC run: statistics CSV, stdout/stderr, error log.
pub struct UacFiles {
    pub stat_file: PathBuf,
    pub out_file: PathBuf,
    pub err_file: PathBuf,
}

impl UacFiles {
    pub fn new(dir: &Path, label: &str) -> UacFiles {
        UacFiles {
            stat_file: dir.join(format!("{label}.stat.csv")),
            out_file: dir.join(format!("{label}.sipp.out")),
            err_file: dir.join(format!("{label}.errors.log")),
        }
    }
}

/// The SIPp UAC command shared by the tests: `scenario` against 127.0.0.1:`target_port` with
/// R-URI user `service`, `calls` calls at `rate` calls/s (at most `limit` at once), sipp's own
/// `-timeout`, statistics and errors into `files`, output appended to `files.out_file`.
#[allow(clippy::too_many_arguments)]
pub fn sipp_uac_command(
    scenario: &Path,
    service: &str,
    target_port: u16,
    calls: u64,
    rate: u64,
    limit: u32,
    timeout: Duration,
    dir: &Path,
    files: &UacFiles,
) -> Command {
    let _ = fs::remove_file(&files.stat_file);
    let out = fs::File::create(&files.out_file).unwrap_or_else(|e| panic!("create {}: {e}", files.out_file.display()));
    let mut cmd = Command::new(SIPP_BIN);
    cmd.arg("-sf")
        .arg(scenario)
        .args(["-s", service])
        .arg(format!("127.0.0.1:{target_port}"))
        .args(["-i", "127.0.0.1", "-bind_local"])
        .args(["-p", &free_port().to_string()])
        .args(["-cp", &free_port().to_string()])
        .args(["-m", &calls.to_string()])
        .args(["-r", &rate.to_string()])
        .args(["-l", &limit.to_string()])
        .arg("-nostdin")
        .args(["-timeout", &format!("{}s", timeout.as_secs().max(1))])
        .arg("-timeout_error")
        .arg("-trace_stat")
        .arg("-stf")
        .arg(&files.stat_file)
        .args(["-fd", "1"])
        .arg("-trace_err")
        .arg("-error_file")
        .arg(&files.err_file)
        .current_dir(dir)
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out));
    cmd
}

/// Run the SIPp UAC (tests/data/uac.xml) against 127.0.0.1:`target_port` with R-URI user
/// `service`: `calls` calls at `rate` calls/s, at most `timeout` (sipp's own -timeout plus
/// a hard kill a few seconds later).
pub fn run_uac(dir: &Path, label: &str, target_port: u16, service: &str, calls: u32, rate: u32, timeout: Duration) -> UacResult {
    let files = UacFiles::new(dir, label);
    let (stat_file, out_file, err_file) = (files.stat_file.clone(), files.out_file.clone(), files.err_file.clone());
    let mut cmd = sipp_uac_command(&data_dir().join("uac.xml"), service, target_port, calls as u64, rate as u64, 200, timeout, dir, &files);
    let start = Instant::now();
    let mut proc_ = Proc::spawn(&format!("sipp uac {label}"), &mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let status = proc_.wait_timeout(timeout + Duration::from_secs(10));
    if status.is_none() {
        proc_.stop(Duration::from_secs(2));
    }
    let elapsed = start.elapsed();
    let (created, successful, failed) = parse_sipp_stat(&stat_file);
    UacResult {
        exit_code: status.and_then(|s| s.code()),
        created,
        successful,
        failed,
        elapsed,
        dir_hint: format!("see {} and {}", out_file.display(), err_file.display()),
    }
}

/// (TotalCallCreated, SuccessfulCall(C), FailedCall(C)) from the last line of a SIPp
/// `-trace_stat` CSV; zeros when the file is missing.
pub fn parse_sipp_stat(path: &Path) -> (u64, u64, u64) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = match lines.next() {
        Some(h) => h.split(';').collect(),
        None => return (0, 0, 0),
    };
    let last: Vec<&str> = match lines.last() {
        Some(l) => l.split(';').collect(),
        None => return (0, 0, 0),
    };
    let col = |name: &str| -> u64 {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (col("TotalCallCreated"), col("SuccessfulCall(C)"), col("FailedCall(C)"))
}

// ---------------------------------------------------------------------------------------
// Helpers for the SEL test route
// ---------------------------------------------------------------------------------------

/// One `_dsdst_` record as reported by the SEL route's X-Dsdst header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsDst {
    pub uri: String,
    pub grp: String,
    /// `<null>` when the field is absent
    pub attrs: String,
    pub dstid: String,
    pub socket: String,
    pub sockname: String,
}

/// The X-Dsdst headers of a SEL reply, in record order.
pub fn dsdst_records(r: &SipReply) -> Vec<DsDst> {
    r.headers_all("X-Dsdst")
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let f: Vec<&str> = h.split(' ').collect();
            assert!(f.len() == 7, "malformed X-Dsdst header {h:?} in\n{}", r.raw);
            assert_eq!(f[0], i.to_string(), "X-Dsdst index out of order in\n{}", r.raw);
            DsDst {
                uri: f[1].to_string(),
                grp: f[2].to_string(),
                attrs: f[3].to_string(),
                dstid: f[4].to_string(),
                socket: f[5].to_string(),
                sockname: f[6].to_string(),
            }
        })
        .collect()
}

/// The URIs of the X-Dsdst records.
pub fn dsdst_uris(r: &SipReply) -> Vec<String> {
    dsdst_records(r).into_iter().map(|d| d.uri).collect()
}

/// Write `text` to `path` atomically enough for a reload (write + rename).
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
        f.write_all(text.as_bytes()).expect("write");
        f.sync_all().ok();
    }
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Kamailio 6.1's `IUID` (`dspt-<time hex>-<pid hex>-<counter hex>-<setid>`) differs between
/// two instances: keep its shape and the set id of a flattened `path = value` line, drop the
/// instance-specific parts.
pub fn normalize_iuid(line: &str) -> String {
    let Some((path, v)) = line.split_once(" = ") else { return line.to_string() };
    if !path.ends_with("IUID") {
        return line.to_string();
    }
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    if parts.len() == 5 && parts[0] == "dspt" && parts[1..4].iter().all(|p| hex(p)) {
        format!("{path} = dspt-*-*-*-{}", parts[4])
    } else {
        format!("{path} = malformed IUID {v}")
    }
}

/// A numeric environment knob (`default` when unset or empty; a test error when not a number).
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}: expected a number")),
        _ => default,
    }
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(s[i + 1..].trim_start().chars().next(), Some('Z') | Some('X') | None),
            None => false,
        },
        Err(_) => false,
    }
}
