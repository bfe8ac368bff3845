#!/usr/bin/env python3
"""Benchmarks of the Rust dispatcher module against Debian's C dispatcher module.

Both modules run in the same Kamailio 5.6.3 binary, with `-x tlsf` and the same cfg
(bench/cfg/*.cfg.tmpl); every number is measured for both modules in the same run and
printed as a Markdown table with the ratio Rust/C. Benchmarks are not tests: nothing
here fails on a ratio. Python 3 standard library only. Loopback only (127.0.0.0/8),
random free ports, every process started here is stopped by PID (also on errors and
signals).

    bench/bench.py run [--bench select,ping,lists,counters] [--out bench/results.md]
    bench/bench.py sink ...        (internal: the UDP sink of the keepalive benchmark)

Environment (all optional):
    BENCH                    which benchmarks: select, ping, lists, scale, icount, counters,
                             traffic (comma, | or space separated; default all = all but
                             traffic, which is opt-in: bench/traffic.py)
    BENCH_COUNTERS_ALGS      counters benchmark: algorithms (default 0,4,10)
    BENCH_COUNTERS_K         counters benchmark: loop count (default 200000)
    BENCH_COUNTERS_FLAGS     counters benchmark: dispatcher "flags" (default 0)
    BENCH_REPS               repetitions of every measurement (default 3; the median
                             is reported)
    BENCH_MODULES            c,rust (default both)
    DS_RUST_MODULE           the Rust module (default target/release/dispatcher.so)
    BENCH_SELECT_ALGS        algorithms (default 0-13), e.g. "0,4,9"
    BENCH_SELECT_SIZES       destinations per set (default 4,100)
    BENCH_SELECT_FLAGS       dispatcher "flags" values (default 0,2)
    BENCH_SELECT_KMAX        largest loop count K (default 300000)
    BENCH_SELECT_KMIN        smallest loop count K (default 1000)
    BENCH_SELECT_TARGET_MS   K is chosen so that the measured loops take about this
                             long for the slower module (default 300)
    BENCH_ISFROM_DESTS       size of the ds_is_from_list() list (default 10000)
    BENCH_PING_DESTS         keepalive destinations (default 10000)
    BENCH_PING_ANSWERED      of which answered by SIPp (default 100)
    BENCH_PING_WINDOW        measuring window in seconds (default 25)
    BENCH_PING_WARMUP        seconds between start-up and the window (default 3)
    BENCH_PING_TIMER_MODE    ds_timer_mode for both modules (default 0; 2 = the Rust module's
                             own keepalive process with 10 ms pacing, the C module treats 2 as 0)
    BENCH_LISTS_DESTS        destinations of the lists benchmark (default 10000)
    BENCH_LISTS_SETS         in that many sets (default 100)
    BENCH_LISTS_RELOADS      reloads for the shm-flatness check (default 1000)
    BENCH_LISTS_RELOAD_MAX_S time bound of those reloads per module (default 240)
"""

import argparse
import errno
import json
import os
import random
import re
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "bench")
CFG_DIR = os.path.join(BENCH_DIR, "cfg")
KAMAILIO = os.environ.get("KAMAILIO_BIN", "/usr/sbin/kamailio")
KAMCMD = os.environ.get("KAMCMD_BIN", "/usr/sbin/kamcmd")
SIPP = os.environ.get("SIPP_BIN", "/usr/bin/sipp")
MODDIR = os.environ.get("KAMAILIO_MODULES", "/usr/lib/x86_64-linux-gnu/kamailio/modules")
C_MODULE = os.path.join(MODDIR, "dispatcher.so")
CLK_TCK = os.sysconf("SC_CLK_TCK")

SO_TIMESTAMP = 29  # Linux (SO_TIMESTAMP_OLD); the cmsg type is the same number
MOD_LABEL = {"c": "C", "rust": "Rust"}


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return int(v)
    except ValueError:
        sys.exit(f"bench: {name}={v!r} is not an integer")


def env_list(name, default):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    out = []
    for part in re.split(r"[,\s|]+", v):
        if not part:
            continue
        if re.fullmatch(r"\d+-\d+", part):
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------
# processes: every process started here is tracked by PID, in its own process group
# ---------------------------------------------------------------------------------------

class Procs:
    def __init__(self, pidfile):
        self.live = {}
        self.pidfile = pidfile

    def start(self, name, argv, out_path):
        with open(out_path, "ab") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=os.path.dirname(out_path))
        self.live[p.pid] = (name, p)
        with open(self.pidfile, "a") as pf:
            pf.write(f"{p.pid} {name}\n")
        return p

    def stop(self, p, grace=8.0):
        if p is None or p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} ({self.live[p.pid][0]}) ignored SIGTERM: SIGKILL to its group")
                self._killpg(p.pid)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        # leftovers of its process group (Kamailio's children), started by it
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and self._group_alive(p.pid):
            time.sleep(0.05)
        if self._group_alive(p.pid):
            self._killpg(p.pid)
        del self.live[p.pid]

    @staticmethod
    def _group_alive(pgid):
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    @staticmethod
    def _killpg(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self):
        for pid in reversed(list(self.live)):
            self.stop(self.live[pid][1], grace=5.0)


# ---------------------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------------------

_USED_PORTS = set()


def _ephemeral_lo():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
        return lo if lo > 12000 else 32768
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A UDP+TCP port free on 127.0.0.1, drawn below the ephemeral range (so that no
    bind(0) elsewhere can take it before its user binds it), never handed out twice."""
    hi = _ephemeral_lo() - 1
    for _ in range(2000):
        p = random.randint(10000, hi)
        if p in _USED_PORTS:
            continue
        ok = True
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if not ok:
            continue
        _USED_PORTS.add(p)
        return p
    raise RuntimeError("no free port on 127.0.0.1")


def bound_udp():
    for _ in range(50):
        p = free_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", p))
            return s
        except OSError:
            s.close()
    raise RuntimeError("cannot bind a UDP socket on 127.0.0.1")


# ---------------------------------------------------------------------------------------
# a tiny SIP client
# ---------------------------------------------------------------------------------------

def _rand(n=12):
    return "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def sip_send(sock, port, user, method="OPTIONS", headers=()):
    lport = sock.getsockname()[1]
    branch = "z9hG4bK-" + _rand(16)
    msg = (f"{method} sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch}\r\n"
           "Max-Forwards: 70\r\n"
           f"From: <sip:alice@bench.invalid>;tag={_rand(8)}\r\n"
           f"To: <sip:{user}@bench.invalid>\r\n"
           f"Call-ID: {_rand(20)}@bench\r\n"
           f"CSeq: 1 {method}\r\n"
           f"Contact: <sip:alice@127.0.0.1:{lport}>\r\n"
           'Authorization: Digest username="alice", realm="bench.invalid", nonce="0123456789abcdef", '
           'uri="sip:bench.invalid", response="00000000000000000000000000000000"\r\n'
           + "".join(f"{k}: {v}\r\n" for k, v in headers)
           + "Content-Length: 0\r\n\r\n")
    sock.sendto(msg.encode(), ("127.0.0.1", port))
    return branch


def sip_wait(sock, branch, timeout):
    """The final reply to `branch` as (code, {header-lower: value}); None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rem = deadline - time.monotonic()
        if rem <= 0:
            return None
        sock.settimeout(rem)
        try:
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            return None
        text = data.decode(errors="replace")
        if branch is not None and branch not in text:
            continue  # a late reply to an earlier request
        lines = text.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("SIP/2.0"):
            continue
        try:
            code = int(parts[1])
        except ValueError:
            continue
        if code < 200:
            continue
        hdrs = {}
        for ln in lines[1:]:
            if not ln:
                break
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs.setdefault(k.strip().lower(), v.strip())
        return code, hdrs


def sip_request(sock, port, user, method="OPTIONS", headers=(), timeout=5.0):
    b = sip_send(sock, port, user, method, headers)
    return sip_wait(sock, b, timeout)


# ---------------------------------------------------------------------------------------
# Kamailio instances
# ---------------------------------------------------------------------------------------

class KamDied(RuntimeError):
    pass


CRASH_RE = re.compile(r"exited by a signal|segfault|core dumped|SIGSEGV|SIGABRT|panicked", re.I)


class Kam:
    def __init__(self, ctx, name, module, tmpl, fill, shm_mb=256, pkg_mb=16):
        self.ctx = ctx
        self.name = name
        self.module = module
        self.dir = os.path.join(ctx.run, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.ctl = os.path.join(ctx.sockdir, f"{name}.ctl")
        self.log = os.path.join(self.dir, "kamailio.log")
        self.shm_mb = shm_mb
        self.pkg_mb = pkg_mb
        values = dict(fill)
        values.setdefault("EXTRA", "")
        values.update(PORT=self.port, CTL=self.ctl, DISPATCHER_SO=ctx.modules[module])
        with open(os.path.join(CFG_DIR, tmpl)) as f:
            text = f.read()
        if "{{JSONRPC_FIFO}}" in text:
            # jsonrpcs FIFO transport: the reply dir must end with '/', paths stay short
            self.reply_dir = os.path.join(ctx.sockdir, name) + "/"
            os.makedirs(self.reply_dir, exist_ok=True)
            self.fifo = os.path.join(self.reply_dir, "jsonrpc.fifo")
            values.update(JSONRPC_FIFO=self.fifo, JSONRPC_REPLY_DIR=self.reply_dir)
        for k, v in values.items():
            text = text.replace("{{" + k + "}}", str(v))
        left = re.findall(r"\{\{[A-Z_]+\}\}", text)
        if left:
            raise RuntimeError(f"{tmpl}: unfilled placeholders {left}")
        self.cfg = os.path.join(self.dir, "kamailio.cfg")
        with open(self.cfg, "w") as f:
            f.write(text)
        self.proc = None
        self.t_spawn = None

    def start(self):
        argv = [KAMAILIO, "-DD", "-E", "-f", self.cfg, "-w", self.dir, "-x", "tlsf",
                "-m", str(self.shm_mb), "-M", str(self.pkg_mb), "-L", MODDIR]
        self.t_spawn = time.monotonic()
        self.proc = self.ctx.procs.start(self.name, argv, self.log)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=15):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def log_since(self, off):
        try:
            with open(self.log, "rb") as f:
                f.seek(off)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def check_crash(self, where):
        """Records (and returns) a crash seen in the log or a dead main process."""
        text = self.log_since(0)
        m = CRASH_RE.search(text)
        if m or not self.alive():
            line = ""
            if m:
                s = text.rfind("\n", 0, m.start()) + 1
                e = text.find("\n", m.end())
                line = text[s:e if e >= 0 else None].strip()
            msg = f"{MOD_LABEL[self.module]} module, {self.name}, {where}: " + (
                line or f"Kamailio exited (code {self.proc.poll()})")
            if msg not in self.ctx.crashes:
                self.ctx.crashes.append(msg)
                log("CRASH: " + msg)
            return True
        return False

    def wait_ready(self, timeout=90.0):
        """Seconds from spawn until Kamailio answers SIP (the list is loaded in mod_init,
        before the listeners exist), then waits for the ctl socket."""
        sock = bound_udp()
        try:
            deadline = time.monotonic() + timeout
            t_ready = None
            while time.monotonic() < deadline:
                if not self.alive():
                    raise KamDied(f"{self.name}: Kamailio exited during start-up:\n{self.log_tail()}")
                sip_send(sock, self.port, "ready")
                r = sip_wait(sock, None, 0.005)
                if r is not None and r[0] == 200:
                    t_ready = time.monotonic()
                    break
            if t_ready is None:
                raise KamDied(f"{self.name}: no SIP answer after {timeout:.0f} s:\n{self.log_tail()}")
            while time.monotonic() < deadline:
                rc, _, _, _ = self.kamcmd("core.uptime", timeout=10)
                if rc == 0:
                    return t_ready - self.t_spawn
                if not self.alive():
                    raise KamDied(f"{self.name}: Kamailio exited:\n{self.log_tail()}")
                time.sleep(0.05)
            raise KamDied(f"{self.name}: ctl socket did not answer:\n{self.log_tail()}")
        finally:
            sock.close()

    def kamcmd(self, *args, timeout=120):
        t0 = time.monotonic()
        try:
            r = subprocess.run([KAMCMD, "-s", "unix:" + self.ctl, *args], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return -1, "", "timeout", time.monotonic() - t0
        dt = time.monotonic() - t0
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"), dt

    def set_debug(self, level):
        rc, out, err, _ = self.kamcmd("cfg.set_now_int", "core", "debug", "--", str(level), timeout=10)
        if rc != 0:
            log(f"{self.name}: cannot set debug {level}: {out}{err}")

    def psx(self):
        rc, out, _, _ = self.kamcmd("core.psx", timeout=20)
        if rc != 0:
            return []
        return [(int(p), d.strip()) for p, d in re.findall(r"PID:\s*(\d+)\s*\n\s*DSC:\s*([^\n]*)", out)]

    def shm(self):
        rc, out, _, _ = self.kamcmd("core.shmmem", timeout=20)
        if rc != 0:
            return None
        return {k: int(v) for k, v in re.findall(r"(\w+):\s*(\d+)", out)}

    def stop(self):
        if self.proc is not None:
            self.ctx.procs.stop(self.proc)


def proc_cpu_ticks(pid):
    """utime+stime of one process in clock ticks (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    # fields after the command: state(3) ... utime(14) stime(15) -> index 11, 12 here
    return int(rest[11]) + int(rest[12])


# ---------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------

def fmt_num(v, nd=0):
    if v is None:
        return "–"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def fmt_ratio(r, target=None, lower_is_better=True):
    if r is None:
        return "–"
    s = f"{r:.2f}" if r >= 0.01 else f"{r:.4f}"
    if target is not None:
        ok = r <= target if lower_is_better else r >= target
        s += " ✓" if ok else " ✗"
    return s


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    if a <= 0:
        return 0.0
    return a / b


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# benchmark 1: selection cost
# ---------------------------------------------------------------------------------------

ALG_NAMES = {0: "hash Call-ID", 1: "hash From URI", 2: "hash To URI", 3: "hash R-URI",
             4: "round-robin", 5: "hash auth user", 6: "random", 7: "hash PV ($fU)",
             8: "serial", 9: "weight", 10: "call load", 11: "relative weight",
             12: "parallel", 13: "latency RR", 32: "consistent Call-ID", 41: "exact weight"}


def write_select_list(path, sizes, isfrom_n, match_port):
    """set 1 = the ds_is_from_list() list: the benchmark client's own address is the
    first line, which the C module (and, equal to it, the Rust module) keeps as the last
    entry of the set, and set 1 is the first set the C module's no-group search visits;
    sets 2.. = the selection sets (one per size)."""
    sets = {}
    with open(path, "w") as f:
        f.write("# bench/bench.py: selection benchmark list\n")
        f.write(f"1 sip:127.0.0.1:{match_port} 0 0 duid=me\n")
        for i in range(isfrom_n - 1):
            a, b = divmod(i, 250)
            f.write(f"1 sip:127.11.{a}.{b + 1}:5060 0 0 duid=f{i}\n")
        for si, n in enumerate(sizes):
            setid = si + 2
            sets[n] = setid
            w = max(1, 100 // n)
            for i in range(n):
                a, b = divmod(i, 250)
                f.write(f"{setid} sip:127.10.{setid * 4 + a}.{b + 1}:5060 0 0 "
                        f"duid=s{setid}d{i};weight={w};rweight=50\n")
    return sets


def select_request(kam, sock, user, k, headers=(), timeout=180.0):
    """One timed loop in the worker: (empty_us, work_us, fail, ret) or None."""
    hdrs = [("X-K", str(k))] + list(headers)
    r = sip_request(sock, kam.port, user, method="INVITE", headers=hdrs, timeout=timeout)
    if r is None or r[0] != 200:
        kam.check_crash(f"{user} {dict(headers)} K={k}")
        return None
    h = r[1]
    try:
        return (int(h["x-empty-us"]), int(h["x-work-us"]), int(h["x-fail"]), int(h["x-ret"]))
    except (KeyError, ValueError):
        return None


def bench_select(ctx):
    reps = ctx.reps
    algs = env_list("BENCH_SELECT_ALGS", list(range(14)))
    sizes = env_list("BENCH_SELECT_SIZES", [4, 100])
    flag_values = env_list("BENCH_SELECT_FLAGS", [0, 2])
    kmax = env_int("BENCH_SELECT_KMAX", 300000)
    kmin = env_int("BENCH_SELECT_KMIN", 1000)
    target_s = env_int("BENCH_SELECT_TARGET_MS", 300) / 1000.0
    isfrom_n = env_int("BENCH_ISFROM_DESTS", 10000)
    kcal = min(kmax, max(kmin, 1000))

    sock_match = bound_udp()     # its address is the last line of set 99
    sock_other = bound_udp()     # an address that is in no set
    d = os.path.join(ctx.run, "select")
    os.makedirs(d, exist_ok=True)
    lst = os.path.join(d, "dispatcher.list")
    sets = write_select_list(lst, sizes, isfrom_n, sock_match.getsockname()[1])

    # results[(flags, size, alg)][module] = [ns, ...]; notes[(flags, size, alg)] = [...]
    res = {}
    notes = {}
    empty_ns = {m: [] for m in ctx.mods}
    isfrom = {}
    t_begin = time.monotonic()

    def measure(kams, key, user, headers, sock, expect_fail=False):
        # probe with K=1 at debug=-1: what does one call log?
        for m in ctx.mods:
            kam = kams[m]
            kam.set_debug(-1)
            off = kam.log_size()
            # K=4: one call in each of the 4 rounds
            r = select_request(kam, sock, user, 4, headers, timeout=30)
            time.sleep(0.02)
            text = kam.log_since(off)
            kam.set_debug(-2)
            errs = [ln for ln in text.splitlines() if re.search(r"\b(ERROR|WARNING|CRITICAL|ALERT|BUG)\b", ln)]
            if r is None:
                notes.setdefault(key, []).append(f"{MOD_LABEL[m]}: probe failed")
            elif r[3] < 0 and not expect_fail:
                notes.setdefault(key, []).append(f"{MOD_LABEL[m]}: returns {r[3]}")
            if errs:
                first = re.sub(r"^.*?(ERROR|WARNING|CRITICAL|ALERT|BUG)", r"\1", errs[0]).strip()
                notes.setdefault(key, []).append(
                    f"{MOD_LABEL[m]} logs {len(errs) / 4:g} line(s)/call: `{first[:90]}`")
        # calibration: the same K for both modules, from the slower one
        k = kmax
        for m in ctx.mods:
            r = select_request(kams[m], sock, user, kcal, headers)
            if r is None:
                continue
            per = max(r[1], 1) / kcal / 1e6
            k = min(k, int(target_s / per))
        k = max(kmin, min(kmax, k))
        k = int(round(k, -2)) if k >= 1000 else k - k % 4
        out = {m: [] for m in ctx.mods}
        fails = {m: 0 for m in ctx.mods}
        for rep in range(reps):
            order = ctx.mods if rep % 2 == 0 else list(reversed(ctx.mods))
            for m in order:
                r = select_request(kams[m], sock, user, k, headers)
                if r is None:
                    out[m].append(None)
                    continue
                e_us, w_us, fail, _ = r
                out[m].append((w_us - e_us) * 1000.0 / k)
                empty_ns[m].append(e_us * 1000.0 / k)
                fails[m] = max(fails[m], fail)
        for m in ctx.mods:
            if fails[m] and not expect_fail:
                notes.setdefault(key, []).append(f"{MOD_LABEL[m]}: {fails[m]}/{k} calls return < 0")
        return out, k

    for flags in flag_values:
        kams = {}
        try:
            for m in ctx.mods:
                kams[m] = Kam(ctx, f"select-flags{flags}-{m}", m, "select.cfg.tmpl",
                              dict(DEBUG=-2, LIST=lst, FLAGS=flags), shm_mb=256, pkg_mb=16)
                kams[m].start()
            for m in ctx.mods:
                kams[m].wait_ready()
            for n in sizes:
                for alg in algs:
                    key = (flags, n, alg)
                    if any(not kams[m].alive() for m in ctx.mods):
                        notes.setdefault(key, []).append("Kamailio not running")
                        continue
                    hdrs = [("X-Set", sets[n]), ("X-Alg", alg)]
                    if alg == 10:
                        hdrs.append(("X-Unset", 1))
                    out, k = measure(kams, key, "sel", hdrs, sock_match)
                    res[key] = (out, k)
                    log(f"select flags={flags} dests={n} alg={alg} K={k}: " + ", ".join(
                        f"{MOD_LABEL[m]} {fmt_num(median(out[m]))} ns" for m in ctx.mods))
            if flags == flag_values[0]:
                for case, sock in (("match", sock_match), ("nomatch", sock_other)):
                    key = ("isfrom", case)
                    if any(not kams[m].alive() for m in ctx.mods):
                        notes.setdefault(key, []).append("Kamailio not running")
                        continue
                    out, k = measure(kams, key, "isfrom", [], sock, expect_fail=(case == "nomatch"))
                    isfrom[case] = (out, k)
                    log(f"ds_is_from_list {case} K={k}: " + ", ".join(
                        f"{MOD_LABEL[m]} {fmt_num(median(out[m]))} ns" for m in ctx.mods))
            for m in ctx.mods:
                kams[m].check_crash("selection benchmark")
        except KamDied as e:
            log(str(e))
            ctx.crashes.append(str(e).splitlines()[0])
        finally:
            for m in ctx.mods:
                if m in kams:
                    kams[m].check_crash("selection benchmark")
                    kams[m].stop()
    sock_match.close()
    sock_other.close()

    # ---- tables
    both = "c" in ctx.mods and "rust" in ctx.mods
    target = {0: 0.7, 2: 1.0}
    header = ["alg", "dests"]
    for flags in flag_values:
        fl = "failover off" if flags == 0 else f"flags={flags}" if flags != 2 else "failover on"
        for m in ctx.mods:
            header.append(f"{MOD_LABEL[m]} ns ({fl})")
        if both:
            t = target.get(flags)
            header.append(f"Rust/C ({fl}" + (f", target ≤ {t}" if t else "") + ")")
    rows = []
    slow = []
    judged = {}
    note_lines = []
    for n in sizes:
        for alg in algs:
            row = [f"{alg} {ALG_NAMES.get(alg, '')}".strip(), n]
            for flags in flag_values:
                out, _k = res.get((flags, n, alg), ({}, 0))
                meds = {m: median(out.get(m, [])) for m in ctx.mods}
                for m in ctx.mods:
                    row.append(fmt_num(meds[m]))
                if both:
                    r = ratio(meds["rust"], meds["c"])
                    t = target.get(flags)
                    row.append(fmt_ratio(r, t))
                    if r is not None and t is not None:
                        judged.setdefault(flags, []).append((r, alg, n, meds["c"], meds["rust"]))
                for nt in notes.get((flags, n, alg), []):
                    note_lines.append(f"alg {alg}, {n} dests, flags={flags}: {nt}")
            rows.append(row)
    t1 = md_table(header, rows)
    for flags, lst_ in sorted(judged.items()):
        t = target[flags]
        miss = sorted([x for x in lst_ if x[0] > t], reverse=True)
        if not miss:
            continue
        fl = "failover off" if flags == 0 else "failover on"
        rs = [x[0] for x in lst_]
        worst = "; ".join(f"alg {a}/{n} dests {r:.2f} (C {fmt_num(c)} ns, Rust {fmt_num(ru)} ns)"
                          for r, a, n, c, ru in miss[:3])
        slow.append(f"ds_select_dst, {fl} (flags={flags}, target ≤ {t}): Rust beyond the target in "
                    f"{len(miss)} of {len(lst_)} rows (Rust/C {min(rs):.2f}–{max(rs):.2f}); worst: {worst}")

    rows2 = []
    for case, label in (("match", f"match: sender is the last of {isfrom_n:,} destinations"),
                        ("nomatch", f"no match ({isfrom_n:,} destinations)")):
        out, k = isfrom.get(case, ({}, 0))
        meds = {m: median(out.get(m, [])) for m in ctx.mods}
        row = [label] + [fmt_num(meds[m], 0) for m in ctx.mods]
        if both:
            r = ratio(meds["rust"], meds["c"])
            row.append(fmt_ratio(r, 0.05))
            if r is not None and r > 0.05:
                slow.append(f"ds_is_from_list() {case}: Rust/C = {r:.3f} (target ≤ 0.05)")
        row.append(k)
        rows2.append(row)
        for nt in notes.get(("isfrom", case), []):
            note_lines.append(f"ds_is_from_list() {case}: {nt}")
    h2 = ["ds_is_from_list()"] + [f"{MOD_LABEL[m]} ns/call" for m in ctx.mods]
    if both:
        h2.append("Rust/C (target ≤ 0.05)")
    h2.append("K")
    t2 = md_table(h2, rows2)

    ks = sorted({k for (_o, k) in res.values()})
    emp = ", ".join(f"{MOD_LABEL[m]} {fmt_num(median(empty_ns[m]))} ns" for m in ctx.mods)
    text = [
        "### 1. Selection cost (ns per call, in-process loop)",
        "",
        f"One INVITE makes the only worker (`children=1`) run `ds_select_dst(\"$var(set)\", \"$var(alg)\")` "
        f"K times in cfg `while` loops (K = {ks[0] if ks else '–'}–{ks[-1] if ks else '–'}, chosen per row so "
        f"that the loops of the slower module take ≈ {target_s * 1000:.0f} ms; the same K for both modules). "
        f"Every iteration resets `$du`, the `_dsdst_`/`_dsctx_` XAVPs and the branches (alg 10 also sets "
        f"a `_dsdst_` dstid and calls `ds_load_unset()`, so the number is select + unset). A reference loop "
        f"with the same statements and no module call is subtracted (it costs {emp} per iteration); "
        f"reference and measured loops alternate in 4 rounds of K/4 (ABBA order), timed with `$TV(Sn)`. "
        f"Median of {reps} requests per module; C and Rust run side by side (same Kamailio binary, "
        f"same cfg and list) and alternate. Alg 5 requests carry an `Authorization` header, alg 7 hashes "
        f"`$fU`, alg 9/11 use `weight`/`rweight` attributes, alg 10 `duid` and `ds_hash_size` 9. "
        f"Alg 12 adds the other destinations as branches: with 100 destinations both modules hit "
        f"Kamailio's 12-branch limit on every call (error path, see notes).",
        "",
        t1,
        "",
        t2,
    ]
    if note_lines:
        text += ["", "Notes (probe run with one call at `debug=-1`; timed runs at `debug=-2`):", ""]
        text += [f"* {x}" for x in note_lines]
    log(f"selection benchmark took {time.monotonic() - t_begin:.0f} s")
    return "\n".join(text), slow


# ---------------------------------------------------------------------------------------
# benchmark 1b: the cost of the per-destination counters (Rust module only)
# ---------------------------------------------------------------------------------------

def bench_counters(ctx):
    """ds_select_dst with the counters on (default) and off (modparam ds_counters 0):
    same in-process loop as benchmark 1, Rust module, failover on, 4 destinations."""
    if "rust" not in ctx.mods:
        return "### 1b. Counters\n\nskipped (BENCH_MODULES without rust)", []
    reps = ctx.reps
    algs = env_list("BENCH_COUNTERS_ALGS", [0, 4, 10])
    k = env_int("BENCH_COUNTERS_K", 200000)
    flags = env_int("BENCH_COUNTERS_FLAGS", 0)
    sock = bound_udp()
    d = os.path.join(ctx.run, "counters")
    os.makedirs(d, exist_ok=True)
    lst = os.path.join(d, "dispatcher.list")
    sets = write_select_list(lst, [4], 1, sock.getsockname()[1])
    variants = (("on", 1), ("off", 0))
    kams = {}
    res = {}
    try:
        for name, v in variants:
            kams[name] = Kam(ctx, f"counters-{name}", "rust", "select.cfg.tmpl",
                             dict(DEBUG=-2, LIST=lst, FLAGS=flags,
                                  EXTRA=f'modparam("dispatcher", "ds_counters", {v})'), shm_mb=256, pkg_mb=16)
            kams[name].start()
        for name, _v in variants:
            kams[name].wait_ready()
        for alg in algs:
            hdrs = [("X-Set", sets[4]), ("X-Alg", alg)] + ([("X-Unset", 1)] if alg == 10 else [])
            out = {name: [] for name, _v in variants}
            for rep in range(reps):
                order = variants if rep % 2 == 0 else tuple(reversed(variants))
                for name, _v in order:
                    r = select_request(kams[name], sock, "sel", k, hdrs)
                    if r is not None:
                        out[name].append((r[1] - r[0]) * 1000.0 / k)
            res[alg] = out
            log(f"counters alg={alg} K={k}: " + ", ".join(f"{n} {fmt_num(median(out[n]))} ns" for n, _v in variants))
    finally:
        for name, _v in variants:
            if name in kams:
                kams[name].check_crash("counters benchmark")
                kams[name].stop()
        sock.close()
    rows = []
    for alg in algs:
        on, off = median(res[alg]["on"]), median(res[alg]["off"])
        delta = None if on is None or off is None else on - off
        rows.append([f"{alg} {ALG_NAMES.get(alg, '')}", 4, fmt_num(on), fmt_num(off),
                     "–" if delta is None else f"{delta:+.0f}", fmt_ratio(ratio(on, off))])
    t = md_table(["alg", "dests", "counters on ns", "counters off ns", "difference ns", "on/off"], rows)
    text = ["### 1b. Counters: `ds_select_dst()` with and without the per-destination counters", "",
            f"Rust module only, flags={flags} (BENCH_COUNTERS_FLAGS; 2 = failover records), 4 destinations, K = {k} calls per request in the "
            f"benchmark-1 loop (reference loop subtracted), median of {reps}; `ds_counters 1` (default: "
            f"`SELECTED` counted, the reply tracking registered once per request and branch) vs "
            f"`ds_counters 0`.", "", t]
    return "\n".join(text), []


# ---------------------------------------------------------------------------------------
# benchmark 2: keepalives
# ---------------------------------------------------------------------------------------

SINK_NET = "127.2"


def sink_addr(j):
    a, b = divmod(j, 250)
    return f"{SINK_NET}.{a}.{b + 1}"


def sink_main(args):
    """UDP sink: one socket per destination address (127.2.x.y:port), never answers,
    records the kernel receive time (SO_TIMESTAMP) of every datagram and whether its Via
    branch is new (first transmission) or a retransmission."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.count + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sel = selectors.EpollSelector()
    socks = []
    for j in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.setblocking(False)
        s.bind((sink_addr(j), args.port))
        sel.register(s, selectors.EVENT_READ, j)
        socks.append(s)
    with open(args.ready, "w") as f:
        f.write("ready\n")
    branch_re = re.compile(rb"branch=([^;,\s]+)")
    seen = set()
    recs = []
    deadline = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < deadline:
        try:
            events = sel.select(0.2)
        except InterruptedError:
            continue
        for key, _ in events:
            s = key.fileobj
            while True:
                try:
                    data, anc, _flags, _addr = s.recvmsg(8192, 64)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                ts = time.time()
                for lvl, typ, cd in anc:
                    if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMP and len(cd) >= 16:
                        sec, usec = struct.unpack("qq", cd[:16])
                        ts = sec + usec / 1e6
                m = branch_re.search(data)
                b = m.group(1) if m else None
                new = 1 if b not in seen else 0
                if b is not None:
                    seen.add(b)
                recs.append(f"{ts:.6f} {new} {1 if data.startswith(b'OPTIONS') else 0} {key.data}\n")
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(recs)
    os.replace(tmp, args.out)
    return 0


def analyse_sink(path, ws, we, win=0.1):
    """Rates in [ws, we) in bins of `win` seconds, and the interval between two first
    transmissions to the same destination (whole run)."""
    nbins = max(1, int(round((we - ws) / win)))
    new_bins = [0] * nbins
    all_bins = [0] * nbins
    n_new = n_all = 0
    last = {}
    gaps = []
    try:
        with open(path) as f:
            for ln in f:
                p = ln.split()
                if len(p) < 4 or p[2] != "1":
                    continue
                ts = float(p[0])
                if p[1] == "1":
                    j = p[3]
                    if j in last:
                        gaps.append(ts - last[j])
                    last[j] = ts
                if ts < ws or ts >= we:
                    continue
                i = min(nbins - 1, int((ts - ws) / win))
                all_bins[i] += 1
                n_all += 1
                if p[1] == "1":
                    new_bins[i] += 1
                    n_new += 1
    except OSError:
        return None
    dur = nbins * win
    gaps.sort()
    per_s = max(1, int(round(1.0 / win)))
    sec_bins = [sum(new_bins[i:i + per_s]) for i in range(0, nbins - per_s + 1, per_s)] or [n_new]
    return dict(new_mean=n_new / dur, new_max=max(new_bins) / win, new_max_1s=max(sec_bins) * 1.0,
                all_mean=n_all / dur,
                all_max=max(all_bins) / win, n_new=n_new, n_all=n_all,
                empty_bins=sum(1 for x in new_bins if x == 0), nbins=nbins,
                gap_med=gaps[len(gaps) // 2] if gaps else None,
                gap_min=gaps[0] if gaps else None, gap_max=gaps[-1] if gaps else None)


def role_of(dsc):
    d = dsc.lower()
    if "timer" in d or "dispatcher" in d or "keepalive" in d:
        return "timers"
    if "receiver" in d or "worker" in d:
        return "workers"
    return "other"


def run_ping_once(ctx, m, rep, n_dests, n_answered, interval, window, warmup):
    name = f"ping-{m}-{rep + 1}"
    d = os.path.join(ctx.run, name)
    os.makedirs(d, exist_ok=True)
    sink_port = free_port()
    sipp_port = free_port()
    sipp_cport = free_port()
    n_sets = 10
    per_set = max(1, n_dests // n_sets)
    every = max(1, n_dests // n_answered) if n_answered else 0
    lst = os.path.join(d, "dispatcher.list")
    n_sink = 0
    n_sipp = 0
    with open(lst, "w") as f:
        f.write("# bench/bench.py: keepalive benchmark list\n")
        for i in range(n_dests):
            setid = 1 + min(n_sets - 1, i // per_set)
            if every and i % every == 0 and n_sipp < n_answered:
                f.write(f"{setid} sip:ka{i}@127.0.0.1:{sipp_port}\n")
                n_sipp += 1
            else:
                f.write(f"{setid} sip:{sink_addr(n_sink)}:{sink_port}\n")
                n_sink += 1
    sink_out = os.path.join(d, "sink.txt")
    ready = os.path.join(d, "sink.ready")
    procs = []
    kam = None
    result = None
    try:
        sink = ctx.procs.start(f"sink-{name}", [sys.executable, os.path.abspath(__file__), "sink",
                                                "--port", str(sink_port), "--count", str(n_sink),
                                                "--out", sink_out, "--ready", ready,
                                                "--max-seconds", str(warmup + window + 120)],
                               os.path.join(d, "sink.log"))
        procs.append(sink)
        sipp = ctx.procs.start(f"sipp-{name}", [SIPP, "-sn", "uas", "-aa", "-i", "127.0.0.1", "-bind_local",
                                                "-p", str(sipp_port), "-cp", str(sipp_cport), "-nostdin",
                                                "-trace_err", "-error_file", os.path.join(d, "sipp.errors.log")],
                               os.path.join(d, "sipp.out"))
        procs.append(sipp)
        deadline = time.monotonic() + 60
        while not os.path.exists(ready) and time.monotonic() < deadline:
            if sink.poll() is not None:
                raise RuntimeError(f"sink exited: {open(os.path.join(d, 'sink.log')).read()[-500:]}")
            time.sleep(0.05)
        if not os.path.exists(ready):
            raise RuntimeError("sink not ready after 60 s")
        kam = Kam(ctx, name, m, "ping.cfg.tmpl",
                  dict(DEBUG=0, CHILDREN=2, LIST=lst, FR_TIMER=2000, PING_INTERVAL=interval,
                       TIMER_MODE=env_int("BENCH_PING_TIMER_MODE", 0)),
                  shm_mb=512, pkg_mb=64)
        kam.start()
        kam.wait_ready()
        time.sleep(warmup)
        pids = kam.psx()
        c0 = {pid: proc_cpu_ticks(pid) for pid, _ in pids}
        ws = time.time()
        m0 = time.monotonic()
        time.sleep(window)
        we = time.time()
        wall = time.monotonic() - m0
        c1 = {pid: proc_cpu_ticks(pid) for pid, _ in pids}
        cpu = {"timers": 0.0, "workers": 0.0, "other": 0.0}
        detail = []
        for pid, dsc in pids:
            if c0.get(pid) is None or c1.get(pid) is None:
                continue
            sec = (c1[pid] - c0[pid]) / CLK_TCK
            cpu[role_of(dsc)] += sec
            detail.append(f"{dsc}: {100 * sec / wall:.2f} %")
        pct = {k: 100.0 * v / wall for k, v in cpu.items()}
        pct["total"] = sum(pct.values())
        try:
            _dt, body = jsonrpc_fifo(kam, "dispatcher.list")
            flags = [f.decode() for f in re.findall(rb'"FLAGS"\s*:\s*"(\w+)"', body)]
        except (OSError, TimeoutError) as e:
            log(f"{kam.name}: JSON-RPC dispatcher.list failed: {e}")
            flags = []
        active = sum(1 for f in flags if f.startswith("A"))
        inactive = sum(1 for f in flags if f.startswith("I"))
        kam.check_crash("keepalive benchmark")
        kam.stop()
        kam = None
        ctx.procs.stop(sink, grace=20)
        st = analyse_sink(sink_out, ws, we)
        result = dict(cpu=pct, rates=st, active=active, inactive=inactive, listed=len(flags),
                      detail=detail, sink=n_sink, sipp=n_sipp)
        log(f"keepalive {MOD_LABEL[m]} run {rep + 1}: CPU timers {pct['timers']:.2f} %, workers "
            f"{pct['workers']:.2f} %, total {pct['total']:.2f} %; OPTIONS/s mean "
            f"{st['new_mean'] if st else 0:.0f}, max/100ms {st['new_max'] if st else 0:.0f}; "
            f"active {active}, inactive {inactive} of {len(flags)}")
    except (KamDied, RuntimeError, OSError) as e:
        log(f"keepalive {MOD_LABEL[m]} run {rep + 1} failed: {e}")
        if kam is not None:
            kam.check_crash("keepalive benchmark")
    finally:
        if kam is not None:
            kam.stop()
        for p in reversed(procs):
            ctx.procs.stop(p, grace=20)
    return result


def bench_ping(ctx):
    n_dests = env_int("BENCH_PING_DESTS", 10000)
    n_answered = env_int("BENCH_PING_ANSWERED", 100)
    window = env_int("BENCH_PING_WINDOW", 25)
    warmup = env_int("BENCH_PING_WARMUP", 3)
    interval = 10
    t_begin = time.monotonic()
    runs = {m: [] for m in ctx.mods}
    for rep in range(ctx.reps):
        order = ctx.mods if rep % 2 == 0 else list(reversed(ctx.mods))
        for m in order:
            r = run_ping_once(ctx, m, rep, n_dests, n_answered, interval, window, warmup)
            if r is not None:
                runs[m].append(r)

    def med(m, f):
        return median([f(r) for r in runs[m]])

    def safe(f, r):
        try:
            return f(r)
        except (TypeError, KeyError, ZeroDivisionError):
            return None

    both = "c" in ctx.mods and "rust" in ctx.mods
    rows = []
    slow = []
    metrics = [
        ("CPU, timer processes (% of one core)", lambda r: r["cpu"]["timers"], 2, None),
        ("CPU, SIP workers (% of one core)", lambda r: r["cpu"]["workers"], 2, None),
        ("CPU, all Kamailio processes (% of one core) — target < 5 %", lambda r: r["cpu"]["total"], 2, 5.0),
        ("OPTIONS/s, mean (first transmissions)", lambda r: r["rates"]["new_mean"], 0, None),
        ("OPTIONS/s, max 100 ms window", lambda r: r["rates"]["new_max"], 0, None),
        ("max 100 ms window / mean — target ≤ 1.2", lambda r: r["rates"]["new_max"] / r["rates"]["new_mean"]
         if r["rates"]["new_mean"] else None, 2, 1.2),
        ("max 1 s window / mean", lambda r: r["rates"]["new_max_1s"] / r["rates"]["new_mean"]
         if r["rates"]["new_mean"] else None, 2, None),
        ("100 ms windows without any OPTIONS", lambda r: r["rates"]["empty_bins"], 0, None),
        ("interval between two OPTIONS to one destination, median (s)", lambda r: r["rates"]["gap_med"], 2, None),
        ("  min / max (s)", "gaps", 2, None),
        ("packets/s incl. retransmissions, mean", lambda r: r["rates"]["all_mean"], 0, None),
        ("packets/s incl. retransmissions, max 100 ms window", lambda r: r["rates"]["all_max"], 0, None),
        ("destinations active / inactive at the end", None, 0, None),
    ]
    for label, f, nd, tgt in metrics:
        row = [label]
        for m in ctx.mods:
            if f == "gaps":
                a = med(m, lambda r: safe(lambda x: x["rates"]["gap_min"], r))
                b = med(m, lambda r: safe(lambda x: x["rates"]["gap_max"], r))
                row.append(f"{fmt_num(a, 2)} / {fmt_num(b, 2)}")
                continue
            if f is None:
                a = med(m, lambda r: r["active"])
                i = med(m, lambda r: r["inactive"])
                row.append(f"{fmt_num(a)} / {fmt_num(i)}")
                continue
            v = med(m, lambda r: safe(f, r))
            s = fmt_num(v, nd)
            if tgt is not None and v is not None:
                s += " ✓" if v <= tgt else " ✗"
                if m == "rust" and v > tgt:
                    slow.append(f"keepalives: {label}: Rust {v:.2f}")
            row.append(s)
        rows.append(row)
    header = ["keepalives, 10,000 destinations"] + [f"{MOD_LABEL[m]} (median of {len(runs[m])})" for m in ctx.mods]
    t = md_table(header, rows)
    text = [
        "### 2. Keepalives",
        "",
        f"{n_dests:,} destinations in 10 sets: {n_dests - n_answered:,} UDP sink sockets on "
        f"127.2.x.y that never answer (each OPTIONS runs into `fr_timer` 2000 ms, tm retransmits it at "
        f"0.5 s and 1.5 s) and {n_answered} URIs of one `sipp -sn uas -aa` (200 OK). `ds_ping_interval` "
        f"{interval}, `ds_probing_mode` 1, `children=2`, `-m 512`. Window: {window} s, starting {warmup} s "
        f"after Kamailio answers SIP. CPU = utime+stime from `/proc/<pid>/stat` of every process in "
        f"`kamcmd core.psx` (timer processes: `timer`, `slow timer`, `secondary timer`, and any process "
        f"named after the dispatcher; workers: `udp receiver`). OPTIONS are counted by the sink itself "
        f"(one socket per destination address, kernel receive timestamps via `SO_TIMESTAMP`, 100 ms bins "
        f"aligned to the window start; a retransmission is a Via branch seen before), so no capture tool "
        f"or privileges are needed. The C module pings every destination at once each interval; "
        f"the Rust module spreads them over its timer ticks.",
        "",
        t,
    ]
    for m in ctx.mods:
        if runs[m]:
            text.append("")
            text.append(f"CPU per process, {MOD_LABEL[m]}, run 1: " + "; ".join(runs[m][0]["detail"]))
    log(f"keepalive benchmark took {time.monotonic() - t_begin:.0f} s")
    return "\n".join(text), slow


# ---------------------------------------------------------------------------------------
# benchmark 3: lists
# ---------------------------------------------------------------------------------------

def write_lists_list(path, n, n_sets):
    per = max(1, n // n_sets)
    with open(path, "w") as f:
        f.write("# bench/bench.py: lists benchmark list\n")
        for i in range(n):
            setid = 1 + min(n_sets - 1, i // per)
            a, b = divmod(i, 250)
            f.write(f"{setid} sip:127.3.{a}.{b + 1}:5060 0 {i % 3} duid=d{i};weight=1\n")


def jsonrpc_fifo(kam, method, params=(), timeout=120.0):
    """One JSON-RPC request over the jsonrpcs FIFO transport: (seconds, reply bytes)."""
    kam.rpc_n = getattr(kam, "rpc_n", 0) + 1
    name = f"rpl{os.getpid()}n{kam.rpc_n}"
    path = os.path.join(kam.reply_dir, name)
    os.mkfifo(path, 0o600)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        req = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                          "reply_name": name, "id": kam.rpc_n}).encode() + b"\n"
        t0 = time.monotonic()
        wfd = os.open(kam.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(wfd, req)
        finally:
            os.close(wfd)
        poller = select.poll()
        poller.register(rfd, select.POLLIN | select.POLLHUP)
        chunks = []
        deadline = t0 + timeout
        while True:
            rem = deadline - time.monotonic()
            if rem <= 0:
                raise TimeoutError(f"jsonrpc {method}: no reply in {timeout} s")
            if not poller.poll(rem * 1000):
                continue
            try:
                data = os.read(rfd, 1 << 20)
            except BlockingIOError:
                continue
            if data:
                chunks.append(data)
            else:
                break
        return time.monotonic() - t0, b"".join(chunks)
    finally:
        os.close(rfd)
        try:
            os.unlink(path)
        except OSError:
            pass


def count_json_dests(body):
    """Destinations in a dispatcher.list JSON-RPC reply (None if it is no valid result)."""
    try:
        j = json.loads(body)
    except ValueError:
        return None
    if not isinstance(j, dict) or "result" not in j:
        return None
    return body.count(b'"URI"')


def bench_lists(ctx):
    n = env_int("BENCH_LISTS_DESTS", 10000)
    n_sets = env_int("BENCH_LISTS_SETS", 100)
    n_reloads = env_int("BENCH_LISTS_RELOADS", 1000)
    reload_max_s = env_int("BENCH_LISTS_RELOAD_MAX_S", 240)
    t_begin = time.monotonic()
    d = os.path.join(ctx.run, "lists")
    os.makedirs(d, exist_ok=True)
    big = os.path.join(d, "big.list")
    one = os.path.join(d, "one.list")
    write_lists_list(big, n, n_sets)
    with open(one, "w") as f:
        f.write("1 sip:127.3.0.1:5060 0 0 duid=d0\n")

    R = {m: {} for m in ctx.mods}

    def add(m, k, v):
        R[m].setdefault(k, []).append(v)

    def new_kam(m, tag, lst):
        return Kam(ctx, f"lists-{m}-{tag}", m, "lists.cfg.tmpl", dict(DEBUG=0, CHILDREN=2, LIST=lst),
                   shm_mb=512, pkg_mb=64)

    # start-up and shm: REPS start-ups per module and list, interleaved
    for rep in range(ctx.reps):
        order = ctx.mods if rep % 2 == 0 else list(reversed(ctx.mods))
        for m in order:
            for tag, lst in (("one", one), ("big", big)):
                kam = new_kam(m, f"{tag}{rep + 1}", lst)
                try:
                    kam.start()
                    t = kam.wait_ready()
                    add(m, f"start_{tag}", t)
                    time.sleep(0.5)
                    s = kam.shm()
                    if s:
                        add(m, f"shm_{tag}", s["real_used"])
                except KamDied as e:
                    log(str(e))
                    ctx.crashes.append(str(e).splitlines()[0])
                finally:
                    kam.check_crash("lists start-up")
                    kam.stop()
        log(f"lists start-up run {rep + 1}: " + ", ".join(
            f"{MOD_LABEL[m]} {1000 * R[m]['start_big'][-1]:.0f} ms" for m in ctx.mods if R[m].get("start_big")))

    # RPC timings and the reload loop: one instance per module
    for m in ctx.mods:
        kam = new_kam(m, "rpc", big)
        try:
            kam.start()
            kam.wait_ready()
            time.sleep(0.5)
            for _ in range(5):
                add(m, "noop", kam.kamcmd("core.uptime")[3])
            for i in range(5):
                rc, out, err, dt = kam.kamcmd("dispatcher.reload")
                if rc != 0:
                    log(f"{kam.name}: dispatcher.reload failed: {out}{err}")
                    add(m, "reload_fail", 1)
                else:
                    add(m, "reload", dt)
            for i in range(5):
                rc, out, err, dt = kam.kamcmd("dispatcher.list")
                cnt = len(re.findall(r"\bURI:", out))
                if rc != 0 or cnt != n:
                    R[m]["list_kamcmd_err"] = f"rc {rc}, {cnt} URIs, {(err or out).strip()[:80]}"
                    break
                if rc == 0:
                    add(m, "list_kamcmd", dt)
                    add(m, "list_kamcmd_bytes", len(out))
            for i in range(5):
                try:
                    dt, body = jsonrpc_fifo(kam, "dispatcher.list")
                    cnt = count_json_dests(body)
                    if cnt != n:
                        log(f"{kam.name}: JSON-RPC dispatcher.list: {cnt} destinations, "
                            f"{len(body)} bytes: {body[:200]!r}")
                    else:
                        add(m, "list_json", dt)
                        add(m, "list_json_bytes", len(body))
                except (OSError, TimeoutError) as e:
                    log(f"{kam.name}: JSON-RPC dispatcher.list failed: {e}")
                    break
            # shm flatness: N reloads, real_used sampled along the way
            s0 = kam.shm()
            samples = [(0, s0["real_used"] if s0 else None)]
            marks = {1, 10, 100, 250, 500, 750, n_reloads}
            t0 = time.monotonic()
            done = 0
            fails = 0
            for i in range(1, n_reloads + 1):
                if time.monotonic() - t0 > reload_max_s:
                    log(f"{kam.name}: reload loop stopped by its time bound after {done} reloads")
                    break
                rc, out, err, _ = kam.kamcmd("dispatcher.reload", timeout=60)
                if rc != 0:
                    fails += 1
                    if fails <= 3:
                        log(f"{kam.name}: reload {i} failed: {out}{err}")
                    if not kam.alive():
                        break
                done = i
                if i in marks:
                    s = kam.shm()
                    samples.append((i, s["real_used"] if s else None))
            loop_s = time.monotonic() - t0
            time.sleep(2.0)
            s = kam.shm()
            samples.append(("settled", s["real_used"] if s else None))
            R[m]["reload_loop"] = dict(done=done, fails=fails, secs=loop_s, samples=samples,
                                       max_used=s["max_used"] if s else None)
            log(f"{kam.name}: {done} reloads in {loop_s:.1f} s; shm real_used " +
                ", ".join(f"{k}: {v}" for k, v in samples))
        except KamDied as e:
            log(str(e))
            ctx.crashes.append(str(e).splitlines()[0])
        finally:
            kam.check_crash("lists RPC/reload")
            kam.stop()

    both = "c" in ctx.mods and "rust" in ctx.mods
    slow = []

    def mv(m, k, scale=1.0):
        v = median(R[m].get(k, []))
        return None if v is None else v * scale

    rows = []

    def line(label, key, scale, nd, target=None, unit_fn=None):
        vals = {m: mv(m, key, scale) for m in ctx.mods}
        row = [label] + [fmt_num(vals[m], nd) for m in ctx.mods]
        if both:
            r = ratio(vals["rust"], vals["c"])
            row.append(fmt_ratio(r, target))
            if target is not None and r is not None and r > target:
                slow.append(f"lists: {label}: Rust/C = {r:.2f} (target ≤ {target})")
        rows.append(row)

    line(f"start-up, {n:,} destinations (ms)", "start_big", 1000, 0)
    line("start-up, 1 destination (ms)", "start_one", 1000, 0)
    # derived: start-up delta and shm delta
    for m in ctx.mods:
        a, b = mv(m, "start_big", 1000), mv(m, "start_one", 1000)
        R[m]["start_delta"] = [a - b] if a is not None and b is not None else []
        a, b = mv(m, "shm_big"), mv(m, "shm_one")
        R[m]["shm_delta"] = [a - b] if a is not None and b is not None else []
    line("start-up, difference (ms)", "start_delta", 1, 0)
    line(f"shm real_used after start-up, {n:,} destinations (KiB)", "shm_big", 1 / 1024, 0, 1.0)
    line("shm real_used after start-up, 1 destination (KiB)", "shm_one", 1 / 1024, 0)
    line("shm used by the list: difference (KiB)", "shm_delta", 1 / 1024, 0, 1.0)
    line("`kamcmd core.uptime` (no-op RPC, ms)", "noop", 1000, 1)
    line("`kamcmd dispatcher.reload` wall time (ms, median of 5) — target ≤ 0.5× C", "reload", 1000, 1, 0.5)
    for m in ctx.mods:
        a, b = mv(m, "reload", 1000), mv(m, "noop", 1000)
        R[m]["reload_net"] = [max(0.0, a - b)] if a is not None and b is not None else []
    line("dispatcher.reload minus the no-op RPC (ms)", "reload_net", 1, 1, 0.5)
    line("`dispatcher.list` over JSON-RPC FIFO (ms, median of 5)", "list_json", 1000, 1)
    line("  its reply size (KiB)", "list_json_bytes", 1 / 1024, 0)
    line("`kamcmd dispatcher.list` (binrpc, ms, median of 5)", "list_kamcmd", 1000, 1)
    kerr = {m: R[m].get("list_kamcmd_err") for m in ctx.mods}
    if any(kerr.values()):
        rows[-1] = [rows[-1][0]] + [f"fails: {kerr[m]}" if kerr[m] else rows[-1][1 + i]
                                    for i, m in enumerate(ctx.mods)] + rows[-1][1 + len(ctx.mods):]
    # reload loop
    rl = {m: R[m].get("reload_loop") for m in ctx.mods}

    def rlv(m, what):
        x = rl[m]
        if not x:
            return None
        smp = dict((k, v) for k, v in x["samples"])
        if what == "done":
            return x["done"]
        if what == "rate":
            return x["done"] / x["secs"] if x["secs"] else None
        if what == "first":
            return smp.get(1)
        if what == "settled":
            return smp.get("settled")
        if what == "growth":
            a, b = smp.get(1), smp.get("settled")
            return None if a is None or b is None else b - a
        if what == "max":
            return x["max_used"]
        return None

    for label, what, scale, nd, tgt in (
            ("reloads done (bounded by time)", "done", 1, 0, None),
            ("reloads per second (kamcmd per reload)", "rate", 1, 1, None),
            ("shm real_used after 1 reload (KiB)", "first", 1 / 1024, 0, None),
            (f"shm real_used after all reloads, settled 2 s (KiB) — target ≤ 1.0× C", "settled", 1 / 1024, 0, 1.0),
            ("shm growth from reload 1 to the last (KiB) — target: flat", "growth", 1 / 1024, 0, None),
            ("shm max_used (KiB)", "max", 1 / 1024, 0, None)):
        vals = {m: rlv(m, what) for m in ctx.mods}
        vals = {m: (None if v is None else v * scale) for m, v in vals.items()}
        row = [label] + [fmt_num(vals[m], nd) for m in ctx.mods]
        if both:
            r = ratio(vals["rust"], vals["c"]) if what not in ("growth", "done") else None
            row.append(fmt_ratio(r, tgt) if what not in ("growth", "done") else "")
            if tgt is not None and r is not None and r > tgt:
                slow.append(f"lists: {label}: Rust/C = {r:.2f}")
        if what == "growth" and vals.get("rust") is not None and vals["rust"] > 64:
            slow.append(f"lists: shm of the Rust module grows by {vals['rust']:.0f} KiB over the reloads")
        rows.append(row)
    header = [f"lists: {n:,} destinations in {n_sets} sets"] + [MOD_LABEL[m] for m in ctx.mods]
    if both:
        header.append("Rust/C")
    samples_txt = []
    for m in ctx.mods:
        if rl[m]:
            samples_txt.append(f"shm real_used (KiB) by reload count, {MOD_LABEL[m]}: " + ", ".join(
                f"{k}: {v / 1024:,.0f}" if v is not None else f"{k}: –" for k, v in rl[m]["samples"]))
    text = [
        "### 3. Lists",
        "",
        f"{n:,} destinations (IP addresses, no DNS) in {n_sets} sets, `reload_delta` 0, `-m 512 -M 64`, "
        f"`children=2`. Start-up: from spawning `kamailio` until it answers SIP (the list is loaded in "
        f"mod_init), median of {ctx.reps}. shm: `real_used` of `kamcmd core.shmmem` 0.5 s after start-up. "
        f"RPC times are wall times of one `kamcmd` process (binrpc, includes spawning kamcmd; the no-op "
        f"row shows that share; kamcmd cannot receive replies above 128 KiB, so it fails on "
        f"`dispatcher.list` of {n:,} destinations) or of one JSON-RPC request through the `jsonrpcs` FIFO (request written "
        f"→ reply FIFO closed). Then `dispatcher.reload` is called {n_reloads} times (one `kamcmd` each, "
        f"at most {reload_max_s} s) and `real_used` is sampled along the way.",
        "",
        md_table(header, rows),
        "",
    ] + [f"* {x}" for x in samples_txt]
    log(f"lists benchmark took {time.monotonic() - t_begin:.0f} s")
    return "\n".join(text), slow


def bench_scale(ctx):
    """Benchmark 4 (issue 14), in bench/scale.py."""
    sys.path.insert(0, BENCH_DIR)
    # scale.py uses this module's helpers: the running script, not a second copy of it
    sys.modules.setdefault("bench", sys.modules[__name__])
    import scale
    return scale.bench_scale(ctx)


def bench_icount(ctx):
    """Benchmark 5 (issue 14), in bench/icount.py."""
    sys.path.insert(0, BENCH_DIR)
    sys.modules.setdefault("bench", sys.modules[__name__])
    import icount
    return icount.bench_icount(ctx)


def bench_traffic(ctx):
    """Benchmark 6 (issue 14, opt-in: not part of `all`), in bench/traffic.py."""
    sys.path.insert(0, BENCH_DIR)
    sys.modules.setdefault("bench", sys.modules[__name__])
    import traffic
    return traffic.bench_traffic(ctx)


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------

class Ctx:
    pass


def sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def run_main(args):
    which = [w for w in re.split(r"[,\s|]+", args.bench or os.environ.get("BENCH", "") or "all") if w]
    if "all" in which:
        which = ["select", "ping", "lists", "counters", "scale", "icount"]
    for w in which:
        if w not in ("select", "ping", "lists", "counters", "scale", "icount", "traffic"):
            sys.exit(f"bench: unknown benchmark {w!r} (select, ping, lists, counters, scale, icount, traffic, all)")
    mods = [m for m in re.split(r"[,\s|]+", os.environ.get("BENCH_MODULES", "c,rust")) if m]
    for m in mods:
        if m not in ("c", "rust"):
            sys.exit(f"bench: BENCH_MODULES: unknown module {m!r} (c, rust)")

    ctx = Ctx()
    ctx.mods = mods
    ctx.reps = max(1, env_int("BENCH_REPS", 3))
    ctx.crashes = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx.run = os.path.join(ROOT, "target", "bench-run", f"{stamp}-{os.getpid()}")
    os.makedirs(ctx.run, exist_ok=True)
    ctx.sockdir = f"/tmp/dsbench-{os.getpid()}"
    os.makedirs(ctx.sockdir, exist_ok=True)
    ctx.procs = Procs(os.path.join(ctx.run, "pids"))

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # a private copy of each module: a rebuild during the run changes nothing
    ctx.modules = {}
    for m in mods:
        src = C_MODULE if m == "c" else os.environ.get("DS_RUST_MODULE") or os.path.join(
            ROOT, "target", "release", "dispatcher.so")
        if not os.path.isabs(src):
            src = os.path.join(ROOT, src)
        if not os.path.isfile(src):
            sys.exit(f"bench: the {MOD_LABEL[m]} module {src} does not exist"
                     + (" (build it with `make build`)" if m == "rust" else ""))
        dst_dir = os.path.join(ctx.run, f"module-{m}")
        os.makedirs(dst_dir, exist_ok=True)
        dst = os.path.join(dst_dir, "dispatcher.so")
        shutil.copy2(src, dst)
        ctx.modules[m] = dst
    for b in (KAMAILIO, KAMCMD) + ((SIPP,) if "ping" in which or "traffic" in which else ()):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench: {b} not found (run `make setup`)")

    try:
        kv = subprocess.run([KAMAILIO, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
        kv = kv.replace("version:", "").strip()
    except (OSError, IndexError):
        kv = "kamailio ?"
    try:
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        rev = "?"
    la0 = loadavg()
    t0 = time.monotonic()
    log(f"run dir {ctx.run}; benchmarks: {', '.join(which)}; modules: {', '.join(mods)}; reps {ctx.reps}")

    sections = []
    slow = []
    try:
        for w in which:
            log(f"=== benchmark: {w}")
            fn = {"select": bench_select, "ping": bench_ping, "lists": bench_lists, "counters": bench_counters,
                  "scale": bench_scale, "icount": bench_icount, "traffic": bench_traffic}[w]
            try:
                text, s = fn(ctx)
            except (KamDied, RuntimeError, OSError) as e:
                log(f"benchmark {w} aborted: {e}")
                text, s = f"### {w}\n\naborted: {e}", []
            sections.append(text)
            slow += s
            write_results(args.out, ctx, sections, slow, kv, rev, la0, t0, partial=(w != which[-1]))
    finally:
        ctx.procs.stop_all()
        shutil.rmtree(ctx.sockdir, ignore_errors=True)
    print(open(args.out).read() if args.out else "")
    log(f"done in {time.monotonic() - t0:.0f} s; tables in {args.out}; run dir {ctx.run}")
    return 0


def write_results(path, ctx, sections, slow, kv, rev, la0, t0, partial):
    mod_lines = []
    for m in ctx.mods:
        mod_lines.append(f"{MOD_LABEL[m]} `{ctx.modules[m]}` (sha256 {sha256(ctx.modules[m])})")
    head = [
        "## Benchmarks",
        "",
        f"`make bench` (bench/run.sh), {time.strftime('%Y-%m-%d %H:%M %Z')}, {kv}, `-x tlsf`, "
        f"git {rev}, {os.cpu_count()} CPUs, load average {la0} at the start and {loadavg()} at the end, "
        f"{time.monotonic() - t0:.0f} s.",
        "",
        "**The numbers are noisy**: the machine has 2 cores shared with other jobs (tests of other "
        "sessions may run at the same time); every value is the median of "
        f"{ctx.reps} runs and C and Rust alternate, but differences of ±20 % between runs are normal. "
        "Benchmarks print numbers; they never fail on a ratio. ✓/✗ marks whether a target is met.",
        "",
        "Modules: " + "; ".join(mod_lines) + ".",
        "",
    ]
    tail = ["", "### Summary", ""]
    if slow:
        tail.append("Rust beyond its target:")
        tail.append("")
        tail += [f"* {s}" for s in slow]
    else:
        tail.append("No Rust result beyond its target" + (" so far." if partial else "."))
    tail.append("")
    if ctx.crashes:
        tail.append("Crashes / Kamailio exits:")
        tail.append("")
        tail += [f"* {c}" for c in ctx.crashes]
    else:
        tail.append("No crash.")
    if partial:
        tail += ["", "_(partial: more benchmarks still running)_"]
    text = "\n".join(head) + "\n" + "\n\n".join(sections) + "\n" + "\n".join(tail) + "\n"
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bench", default=None, help="select,ping,lists (default: $BENCH or all)")
    r.add_argument("--out", default=os.path.join(BENCH_DIR, "results.md"))
    s = sub.add_parser("sink")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--ready", required=True)
    s.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()
    if args.cmd == "sink":
        return sink_main(args)
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
