"""Benchmark 5 (instructions per call, issue 14): exact per-call costs, Rust against C.

Kamailio runs under valgrind's callgrind (`children=1`, cfg icount.cfg.tmpl) with
`--toggle-collect=receive_msg --dump-after=receive_msg`: only the core's processing of a SIP
message is counted, and every message gets its own dump. One request runs ONE loop of K
iterations; the reference loop (the same statements without the module call) is measured in
the same instance and subtracted: (work - ref) / K = instructions per
`ds_select_dst("1", "<alg>")` call with constant parameters (algs 0, 4, 8), and per
`ds_is_from_list()` (no match, 4 destinations). Instruction counts do not depend on the
machine's load, so one run is enough.

Environment: BENCH_ICOUNT_K (loop count, default 2000), BENCH_ICOUNT_FLAGS (dispatcher
`flags` values, default 0,2: failover records off / on), BENCH_ICOUNT_VGARGS (extra valgrind
arguments, e.g. `--dump-instr=yes` for per-instruction costs in the dumps kept in the run dir),
BENCH_ICOUNT_MEM (Kamailio's memory manager `-x`, default tlsf; e.g. qm, fm), BENCH_ICOUNT_SHM_MB
(`-m`, default 128), BENCH_ICOUNT_PKG_MB (`-M`, default 16): the allocator's share of a call depends
on the heap's layout, these let it be compared. BENCH_ICOUNT_RELOADS (default 0): that many
`dispatcher.reload` RPCs before the measurements (the old list's shm blocks are freed: the heap then
has free fragments that the per-call allocations can be served from).
"""

import glob
import os
import re
import time

import bench as B

ROUTES = ("ref", "a0", "a4", "a8", "isfrom")


def dumps(cg_dir, pid):
    return set(glob.glob(os.path.join(cg_dir, f"cg.{pid}.*")))


def settle(cg_dir, pid, quiet=1.0, limit=120.0):
    """Waits until no new dump appeared for `quiet` seconds (late retransmissions of the
    start-up probe are processed, and dumped, after Kamailio first answered)."""
    deadline = time.monotonic() + limit
    last, t_last = len(dumps(cg_dir, pid)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        n = len(dumps(cg_dir, pid))
        if n != last:
            last, t_last = n, time.monotonic()
        elif time.monotonic() - t_last >= quiet:
            return


def new_dump_total(cg_dir, pid, before):
    """The largest instruction total among the dumps of `pid` written after `before` was
    taken (the request's loop; a stray short message cannot be mistaken for it)."""
    deadline = time.monotonic() + 120
    best = None
    while time.monotonic() < deadline and best is None:
        time.sleep(0.2)
        for f in dumps(cg_dir, pid) - before:
            try:
                with open(f) as fh:
                    text = fh.read()
            except OSError:
                continue
            m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if m:
                best = max(best or 0, int(m.group(1)))
    settle(cg_dir, pid, quiet=0.5)
    return best


def bench_icount(ctx):
    k = B.env_int("BENCH_ICOUNT_K", 2000)
    flags_list = B.env_list("BENCH_ICOUNT_FLAGS", [0, 2])
    mem = os.environ.get("BENCH_ICOUNT_MEM", "tlsf")
    shm_mb = B.env_int("BENCH_ICOUNT_SHM_MB", 128)
    pkg_mb = B.env_int("BENCH_ICOUNT_PKG_MB", 16)
    reloads = B.env_int("BENCH_ICOUNT_RELOADS", 0)
    if not os.access("/usr/bin/valgrind", os.X_OK):
        return "### 5. Instructions per call\n\nskipped: valgrind not installed", []
    t_begin = time.monotonic()
    d = os.path.join(ctx.run, "icount")
    os.makedirs(d, exist_ok=True)
    lst = os.path.join(d, "icount.list")
    with open(lst, "w") as f:
        for i in range(4):
            f.write(f"1 sip:127.3.0.{i + 1}:5060 0 0\n")
    R = {}
    for flags in flags_list:
        for m in ctx.mods:
            kam = B.Kam(ctx, f"icount-f{flags}-{m}", m, "icount.cfg.tmpl",
                        dict(DEBUG=-2, LIST=lst, FLAGS=flags), shm_mb=shm_mb, pkg_mb=pkg_mb)
            cg_dir = os.path.join(kam.dir, "cg")
            os.makedirs(cg_dir, exist_ok=True)
            argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=receive_msg",
                    "--dump-after=receive_msg", *os.environ.get("BENCH_ICOUNT_VGARGS", "").split(),
                    f"--callgrind-out-file={cg_dir}/cg.%p", B.KAMAILIO, "-DD", "-E", "-f", kam.cfg,
                    "-w", kam.dir, "-x", mem, "-m", str(shm_mb), "-M", str(pkg_mb), "-L", B.MODDIR]
            kam.t_spawn = time.monotonic()
            kam.proc = ctx.procs.start(kam.name, argv, kam.log)
            sock = B.bound_udp()
            try:
                kam.wait_ready(timeout=300.0)
                worker = [p for p, dsc in kam.psx() if "receiver" in dsc and "child=0" in dsc]
                if not worker:
                    raise RuntimeError(f"{kam.name}: no SIP worker in core.psx")
                pid = worker[0]
                for _ in range(reloads):
                    rc, out, err, _ = kam.kamcmd("dispatcher.reload")
                    if rc != 0:
                        raise RuntimeError(f"{kam.name}: dispatcher.reload failed: {out}{err}")
                settle(cg_dir, pid)
                for route in ROUTES:
                    best = None
                    for _ in range(2):
                        before = dumps(cg_dir, pid)
                        r = B.sip_request(sock, kam.port, route, method="INVITE", headers=[("X-K", str(k))],
                                          timeout=300.0)
                        if r is None or r[0] != 200:
                            raise RuntimeError(f"{kam.name}: {route}: no 200")
                        tot = new_dump_total(cg_dir, pid, before)
                        if tot is not None:
                            best = tot if best is None else min(best, tot)
                    R[(flags, m, route)] = best
                B.log(f"{kam.name}: " + ", ".join(f"{r} {R.get((flags, m, r))}" for r in ROUTES))
            except (B.KamDied, RuntimeError, OSError) as e:
                B.log(f"{kam.name}: {e}")
            finally:
                sock.close()
                kam.stop()
    both = "c" in ctx.mods and "rust" in ctx.mods
    rows, slow = [], []
    for flags in flags_list:
        tgt = 0.95 if flags & 2 == 0 else 1.00
        for route, label in (("a0", "ds_select_dst alg 0"), ("a4", "ds_select_dst alg 4"),
                             ("a8", "ds_select_dst alg 8"), ("isfrom", "ds_is_from_list, no match")):
            vals = {}
            for m in ctx.mods:
                w, r = R.get((flags, m, route)), R.get((flags, m, "ref"))
                vals[m] = None if w is None or r is None else (w - r) / k
            row = [f"flags {flags} ({'records on' if flags & 2 else 'records off'})", label] + [
                B.fmt_num(vals[m], 0) for m in ctx.mods]
            if both:
                rt = B.ratio(vals["rust"], vals["c"])
                t = tgt if route != "isfrom" else None
                row.append(B.fmt_ratio(rt, t))
                if t is not None and rt is not None and rt > t:
                    slow.append(f"icount flags {flags} {label}: Rust/C = {rt:.3f} (target ≤ {t})")
            rows.append(row)
    header = ["configuration", "instructions per call"] + [B.MOD_LABEL[m] for m in ctx.mods] + (
        ["Rust/C"] if both else [])
    text = [
        "### 5. Instructions per call (callgrind)",
        "",
        f"Kamailio under `valgrind --tool=callgrind`, `children=1`, 4 destinations in set 1, constant "
        f"parameters; per call = (loop with the call − the same loop without it) / {k:,}, both measured "
        "in the same instance (counters zeroed and dumped around one request). Exact and independent of the "
        "machine's load. Targets (issue 14): ≤ 0.95× C with records off, ≤ 1.00× C with them on.",
        "",
        B.md_table(header, rows),
        "",
    ]
    B.log(f"icount benchmark took {time.monotonic() - t_begin:.0f} s")
    return "\n".join(text), slow
