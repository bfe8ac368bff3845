"""Benchmark 6 (real SIP traffic, issue 14): instructions per call of a stateful load balancer,
Rust against C, under each shm memory manager.

What operators run: Kamailio 5.6.3 with its DEFAULT memory manager (`qm`, no `-x`) unless told
otherwise, cfg traffic.cfg.tmpl (tm + sl + rr + maxfwd + textops + siputils, record_route,
`ds_select_dst` + `t_relay`, failure_route with `ds_next_dst`), a SIPp UAC
(tests/data/uac.xml: INVITE, 200, ACK, BYE, 200 through Kamailio, Record-Route) at a fixed rate
against Kamailio, which dispatches to BENCH_TRAFFIC_BACKENDS SIPp UAS (tests/data/uas_200.xml) on
127.0.0.1.

Kamailio runs under valgrind's callgrind with `children=1` (one SIP worker handles every
message) and counts only `receive_msg` (every SIP message: requests, replies, the tm
transaction, the module call, the xavps) and tm's `wait_handler` (the timer that frees a
finished transaction, and with it the `_dsdst_`/`_dsctx_` xavps tm moved into it). The driver
sends a marker request between phases; the cfg's only `xlog()` runs for it and callgrind dumps
the worker's counters right after it (`--dump-after=xl_print_log`): every phase of
BENCH_TRAFFIC_PHASES calls is counted separately in the same instance (default 100,300,1600: at
20 calls/s the first 100 calls end before tm frees its first transaction, 5 s after it ended,
so that phase runs on a fresh heap and its counts repeat exactly from run to run; in the later
phases the timer process frees transactions concurrently, the heap's layout depends on that
timing and the counts vary between identical runs, under qm by up to ±30 %). The timer process writes its
count when Kamailio exits (after the last transactions' wait timers ran): one figure per run.
From the worker's dumps also: the inclusive cost of the module's selection function
(C `ds_select_dst_limit`, Rust `cmds::select_dst`: the same work below the fixup wrapper) and of
the shm allocator's entry points (`*_shm_malloc`, `*_shm_free`, ...), per call.

Instruction counts do not depend on the machine's load, but retransmissions do (a message
SIPp sends again because the worker under valgrind answered late is processed twice): the
SIPp scenarios (copies of the tests' uac.xml / uas_200.xml) start their retransmission timer at
BENCH_TRAFFIC_RETRANS_MS (default 4000 instead of 500; loopback loses nothing) and the table
shows SIPp's retransmission count of each phase: it should be 0.

Environment: BENCH_TRAFFIC_MEM (memory managers, default `qm,tlsf,fm`; `qm` = Kamailio's
default), BENCH_TRAFFIC_PHASES (calls per phase, default 100,300,1600), BENCH_TRAFFIC_RATE
(calls per second, default 20), BENCH_TRAFFIC_FLAGS (dispatcher `flags`, default 2: failover
records on, what `ds_next_dst` needs), BENCH_TRAFFIC_ALG (default 4, round-robin),
BENCH_TRAFFIC_BACKENDS (default 3), BENCH_TRAFFIC_SHM_MB / BENCH_TRAFFIC_PKG_MB (`-m`/`-M`,
default 64 / 8, Kamailio's defaults), BENCH_TRAFFIC_NOCOUNTERS (default 1: one more column, the
Rust module with `ds_counters 0`), BENCH_TRAFFIC_RUST_BASE (path of another build of the Rust
module, e.g. before a change: one more column, same cfg), BENCH_REPS (repetitions; the
variants alternate).
"""

import csv
import glob
import os
import re
import shutil
import subprocess
import time

import bench as B

UAC_XML = os.path.join(B.ROOT, "tests", "data", "uac.xml")
UAS_XML = os.path.join(B.ROOT, "tests", "data", "uas_200.xml")
ALLOC_RE = re.compile(r"^(?:qm|fm|tlsf)_shm_\w+$")


def dumps(cg_dir, pid):
    return set(glob.glob(os.path.join(cg_dir, f"cg.{pid}.*")) + glob.glob(os.path.join(cg_dir, f"cg.{pid}")))


def dump_total(path):
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def inclusive(path):
    """{function name: inclusive instructions} of one dump (callgrind_annotate)."""
    try:
        out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                             capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    res = {}
    for ln in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\S*?:)?(.+?)(?:\s+\[[^\]]*\])?\s*$", ln)
        if not m:
            continue
        name = m.group(2).strip()
        # "file:function" or "???:function": keep the function (Rust paths contain '::')
        name = re.sub(r"^\?\?\?:", "", name)
        if re.match(r"^[^:]*\.[ch]:", name):
            name = name.split(":", 1)[1]
        v = int(m.group(1).replace(",", ""))
        res[name] = max(res.get(name, 0), v)
    return res


def select_cost(inc):
    for name, v in inc.items():
        if name == "ds_select_dst_limit":
            return v
    for name, v in inc.items():
        if re.search(r"dispatcher::module::cmds::select_dst(?:$|::h)", name):
            return v
    return None


def alloc_cost(inc):
    vals = [v for n, v in inc.items() if ALLOC_RE.match(n)]
    return sum(vals) if vals else None


def wait_new_dump(cg_dir, pid, before, limit=180.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        new = sorted(dumps(cg_dir, pid) - before)
        for f in new:
            if dump_total(f) is not None:
                time.sleep(0.3)  # let callgrind finish writing
                return f
        time.sleep(0.2)
    return None


def mark(kam, sock, cg_dir, pid, label):
    before = dumps(cg_dir, pid)
    r = B.sip_request(sock, kam.port, "mark", headers=[("X-Mark", label)], timeout=120.0)
    if r is None or r[0] != 200:
        raise RuntimeError(f"{kam.name}: marker {label}: no 200")
    f = wait_new_dump(cg_dir, pid, before)
    if f is None:
        raise RuntimeError(f"{kam.name}: marker {label}: no callgrind dump")
    return f


def sipp_stats(path):
    """(successful, failed, retransmissions) from SIPp's -trace_stat CSV (cumulative columns)."""
    try:
        with open(path) as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None, None, None
    if len(rows) < 2:
        return None, None, None
    h, last = rows[0], rows[-1]

    def col(name):
        try:
            return int(last[h.index(name)])
        except (ValueError, IndexError):
            return None
    return col("SuccessfulCall(C)"), col("FailedCall(C)"), col("Retransmissions(C)")


def scenario(d, src, retrans_ms):
    """A copy of a test scenario in the run dir whose SIPp retransmission timer starts at
    `retrans_ms` (loopback loses nothing: a retransmission only means that the worker under
    valgrind answered late, and it would be one more message to count)."""
    with open(src) as f:
        text = f.read()
    dst = os.path.join(d, os.path.basename(src))
    with open(dst, "w") as f:
        f.write(re.sub(r'retrans="\d+"', f'retrans="{retrans_ms}"', text))
    return dst


def run_uac(ctx, d, name, kam_port, calls, rate, uac_xml):
    stat = os.path.join(d, f"{name}.stat.csv")
    argv = [B.SIPP, "-sf", uac_xml, "-s", "ds", f"127.0.0.1:{kam_port}", "-i", "127.0.0.1", "-bind_local",
            "-p", str(B.free_port()), "-cp", str(B.free_port()), "-m", str(calls), "-r", str(rate), "-l", "500",
            "-nostdin", "-timeout", f"{int(calls / rate) + 120}s", "-timeout_error", "-trace_stat", "-stf", stat,
            "-fd", "1", "-trace_err", "-error_file", os.path.join(d, f"{name}.errors.log")]
    p = ctx.procs.start(name, argv, os.path.join(d, f"{name}.out"))
    try:
        p.wait(calls / rate + 180)
    except subprocess.TimeoutExpired:
        B.log(f"{name}: SIPp did not finish")
    ctx.procs.stop(p)
    ok, failed, retr = sipp_stats(stat)
    return ok, failed, retr, p.returncode


def run_once(ctx, d, tag, m, extra, mem, phases, rate, flags, alg, n_be, shm_mb, pkg_mb, retrans_ms):
    """One Kamailio instance: [(phase calls, worker instr, select instr, alloc instr, ok, failed, retr)],
    timer process instructions for the whole run."""
    procs = []
    uac_xml, uas_xml = scenario(d, UAC_XML, retrans_ms), scenario(d, UAS_XML, retrans_ms)
    lst = os.path.join(d, f"{tag}.list")
    with open(lst, "w") as f:
        for j in range(n_be):
            port = B.free_port()
            f.write(f"1 sip:127.0.0.1:{port} 0 0\n")
            procs.append(ctx.procs.start(
                f"{tag}-uas{j}", [B.SIPP, "-sf", uas_xml, "-i", "127.0.0.1", "-bind_local", "-p", str(port), "-cp",
                                  str(B.free_port()), "-nostdin", "-trace_err", "-error_file",
                                  os.path.join(d, f"{tag}-uas{j}.errors.log")],
                os.path.join(d, f"{tag}-uas{j}.out")))
    kam = B.Kam(ctx, tag, m, "traffic.cfg.tmpl", dict(DEBUG=-2, LIST=lst, FLAGS=flags, SET=1, ALG=alg, EXTRA=extra),
                shm_mb=shm_mb, pkg_mb=pkg_mb)
    cg_dir = os.path.join(kam.dir, "cg")
    os.makedirs(cg_dir, exist_ok=True)
    argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=receive_msg",
            "--toggle-collect=wait_handler", "--dump-after=xl_print_log",
            f"--callgrind-out-file={cg_dir}/cg.%p", B.KAMAILIO, "-DD", "-E", "-f", kam.cfg, "-w", kam.dir]
    if mem:
        argv += ["-x", mem]
    argv += ["-m", str(shm_mb), "-M", str(pkg_mb), "-L", B.MODDIR]
    kam.t_spawn = time.monotonic()
    kam.proc = ctx.procs.start(kam.name, argv, kam.log)
    sock = B.bound_udp()
    res, timer = [], None
    try:
        kam.wait_ready(timeout=300.0)
        worker = [p for p, dsc in kam.psx() if "receiver" in dsc and "child=0" in dsc]
        if not worker:
            raise RuntimeError(f"{kam.name}: no SIP worker in core.psx")
        pid = worker[0]
        time.sleep(1.0)
        mark(kam, sock, cg_dir, pid, "start")
        for i, n in enumerate(phases):
            ok, failed, retr, rc = run_uac(ctx, d, f"{tag}-uac{i}", kam.port, n, rate, uac_xml)
            time.sleep(1.0)
            f = mark(kam, sock, cg_dir, pid, f"phase{i}")
            inc = inclusive(f)
            res.append((n, dump_total(f), select_cost(inc), alloc_cost(inc), ok, failed, retr))
            B.log(f"{tag}: phase {i} ({n} calls): worker {res[-1][1]}, select {res[-1][2]}, alloc {res[-1][3]}, "
                  f"sipp ok {ok} failed {failed} retr {retr} rc {rc}")
        worker_files = dumps(cg_dir, pid)
        time.sleep(8.0)  # tm's wait timer (5 s) frees the last transactions
        kam.check_crash("traffic")
    finally:
        sock.close()
        kam.stop()
        for p in procs:
            ctx.procs.stop(p)
    if res:
        tot = 0
        for f in glob.glob(os.path.join(cg_dir, "cg.*")):
            if f in worker_files or re.search(rf"cg\.{pid}(?:\.|$)", f):
                continue
            v = dump_total(f)
            tot += v or 0
        timer = tot
    return res, timer


def bench_traffic(ctx):
    mems = [m for m in re.split(r"[,\s]+", os.environ.get("BENCH_TRAFFIC_MEM", "qm,tlsf,fm")) if m]
    phases = B.env_list("BENCH_TRAFFIC_PHASES", [100, 300, 1600])
    rate = B.env_int("BENCH_TRAFFIC_RATE", 20)
    flags = B.env_int("BENCH_TRAFFIC_FLAGS", 2)
    alg = B.env_int("BENCH_TRAFFIC_ALG", 4)
    n_be = B.env_int("BENCH_TRAFFIC_BACKENDS", 3)
    shm_mb = B.env_int("BENCH_TRAFFIC_SHM_MB", 64)
    pkg_mb = B.env_int("BENCH_TRAFFIC_PKG_MB", 8)
    retrans_ms = B.env_int("BENCH_TRAFFIC_RETRANS_MS", 4000)
    if not os.access("/usr/bin/valgrind", os.X_OK) or not os.access(B.SIPP, os.X_OK):
        return "### 6. Real SIP traffic\n\nskipped: valgrind or sipp not installed", []
    t_begin = time.monotonic()
    d = os.path.join(ctx.run, "traffic")
    os.makedirs(d, exist_ok=True)
    # variants: (key, module, column label, cfg lines); the Rust module's own per-destination
    # counters (ds_counters, default 1; not in the C module) register one TM callback per
    # routed request: "rust0" measures the Rust module with them off, like for like with C
    variants = [(m, m, B.MOD_LABEL[m], "") for m in ctx.mods]
    if "rust" in ctx.mods and B.env_int("BENCH_TRAFFIC_NOCOUNTERS", 1):
        variants.append(("rust0", "rust", "Rust, ds_counters 0", 'modparam("dispatcher", "ds_counters", 0)'))
    base = os.environ.get("BENCH_TRAFFIC_RUST_BASE")
    if base and "rust" in ctx.mods:
        # another build of the Rust module (e.g. the one before a change), same cfg as "rust"
        dst = os.path.join(ctx.run, "module-rustbase", "dispatcher.so")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(base, dst)
        ctx.modules["rustbase"] = dst
        B.MOD_LABEL.setdefault("rustbase", "Rust (base)")
        variants.insert(2, ("rustbase", "rustbase", "Rust (base)", ""))
    keys = [v[0] for v in variants]
    R = {}  # (mem, key) -> list of (phases result, timer)
    for rep in range(ctx.reps):
        for mem in mems:
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for key, m, _, extra in order:
                tag = f"traffic-{mem}-{key}-r{rep}"
                try:
                    r = run_once(ctx, d, tag, m, extra, None if mem == "qm" else mem, phases, rate, flags, alg,
                                 n_be, shm_mb, pkg_mb, retrans_ms)
                    R.setdefault((mem, key), []).append(r)
                except (B.KamDied, RuntimeError, OSError) as e:
                    B.log(f"{tag}: {e}")
    both = "c" in keys and "rust" in keys
    others = [k for k in keys if k.startswith("rust")] if both else []

    def per_call(mem, m, i, k):
        vals = []
        for res, _ in R.get((mem, m), []):
            if i < len(res) and res[i][k] is not None:
                vals.append(res[i][k] / res[i][0])
        return vals

    def timer_per_call(mem, m):
        return [t / sum(x[0] for x in res) for res, t in R.get((mem, m), []) if t is not None and res]

    def cell(vals):
        if not vals:
            return "–"
        med = B.median(vals)
        if len(vals) > 1 and max(vals) - min(vals) > 0.005 * med:
            return f"{med:,.0f} ({min(vals):,.0f}–{max(vals):,.0f})"
        return f"{med:,.0f}"

    rows = []
    starts = [sum(phases[:i]) for i in range(len(phases))]
    for mem in mems:
        mem_label = f"`{mem}`" + (" (default)" if mem == "qm" else "")
        for i, n in enumerate(phases):
            label = f"calls {starts[i] + 1:,}–{starts[i] + n:,}"
            for k, what in ((1, "worker, whole SIP processing"), (2, "of which ds_select_dst"),
                            (3, "of which shm allocator (all callers)")):
                vals = {m: per_call(mem, m, i, k) for m in keys}
                row = [mem_label, label, what] + [cell(vals[m]) for m in keys]
                for o in others:
                    a, b = vals[o], vals["c"]
                    row.append(B.fmt_ratio(B.ratio(B.median(a), B.median(b))) if a and b else "–")
                rows.append(row)
            rows.append([mem_label, label, "SIPp retransmissions / failed calls"] + [
                ", ".join(f"{res[i][6]}/{res[i][5]}" for res, _ in R.get((mem, m), []) if i < len(res)) or "–"
                for m in keys] + [""] * len(others))
        vals = {m: timer_per_call(mem, m) for m in keys}
        row = [mem_label, "whole run", "timer (tm wait_handler: frees)"] + [cell(vals[m]) for m in keys]
        for o in others:
            a, b = vals[o], vals["c"]
            row.append(B.fmt_ratio(B.ratio(B.median(a), B.median(b))) if a and b else "–")
        rows.append(row)
    header = ["shm manager", "phase", "instructions per call"] + [v[2] for v in variants] + [
        f"{dict((v[0], v[2]) for v in variants)[o]}/C" for o in others]
    text = [
        "### 6. Real SIP traffic (callgrind, instructions per call)",
        "",
        f"Kamailio 5.6.3 under `valgrind --tool=callgrind`, `children=1`, `-m {shm_mb} -M {pkg_mb}`, cfg "
        f"`traffic.cfg.tmpl` (tm, rr, record_route, `ds_select_dst(\"1\", \"{alg}\")` + `t_relay`, failure_route "
        f"with `ds_next_dst`), dispatcher `flags` {flags}, {n_be} SIPp UAS backends (`uas_200.xml`); a SIPp UAC "
        f"(`uac.xml`: INVITE/100/200/ACK/BYE/200, Record-Route; SIPp retransmissions after {retrans_ms} ms) at {rate} calls/s, phases of {', '.join(f'{n:,}' for n in phases)} calls "
        "in one instance (a marker request dumps the worker's counters between phases). Counted: `receive_msg` "
        "(every SIP message) in the worker per phase, tm's `wait_handler` (frees finished transactions and "
        "their xavps) in the timer process over the whole run. ds_select_dst = inclusive cost of C "
        "`ds_select_dst_limit` / Rust `cmds::select_dst`; shm allocator = inclusive cost of the "
        "`*_shm_malloc/free/...` entry points in the worker, every caller. Median of "
        f"{ctx.reps} instance(s) (min–max when they differ by more than 0.5 %); C and Rust alternate.",
        "",
        B.md_table(header, rows),
        "",
    ]
    B.log(f"traffic benchmark took {time.monotonic() - t_begin:.0f} s")
    return "\n".join(text), []
