"""Benchmark 4 (scale, issue 14): how the costs grow with the list, Rust against C.

For N destinations (1,000 / 10,000 / 100,000 / 300,000, up to BENCH_SCALE_MAX, default
10,000: the long runs are opt-in) in two shapes — a: 100 sets, b: N/10 sets of 10 — and for
both modules, interleaved over BENCH_REPS runs (median reported):

* start-up: spawn → first SIP answer (the list is loaded in mod_init);
* shm `real_used` after start-up, and PSS summed over every Kamailio process (what the
  machine really spends: shared pages divided among the processes mapping them);
* `dispatcher.reload`: wall time of one `kamcmd`, median of 3;
* `dispatcher.add` / `dispatcher.remove` of one destination into set 1 (`reload_delta` 0),
  median of 3 each;
* `ds_is_from_list()` per call (from an address in no set: the C module scans every
  destination), timed inside the worker with an empty loop subtracted (cfg
  select.cfg.tmpl), K chosen per module so that the loop takes about 200 ms;
* `dispatcher.list` over the jsonrpcs FIFO, once;
* edit rate: back-to-back `dispatcher.add` of new destinations into existing sets (spread
  over the sets), then `dispatcher.remove` of them, each one JSON-RPC request over the
  jsonrpcs FIFO (no process spawned per call), up to BENCH_SCALE_EDITS (default 200) each
  or BENCH_SCALE_EDIT_S seconds (default 3): edits per second sustained, and the per-edit
  server time = median request time − median time of a no-op request (`core.uptime`) over
  the same FIFO, and the CPU time of the process serving the FIFO per edit (user + system
  from /proc, 10 ms ticks over all the edits: unlike wall times, it hardly depends on the
  machine's load).

Environment: BENCH_SCALE_MAX (largest N, default 10000), BENCH_SCALE_SIZES (default
1000,10000,100000,300000, cut at BENCH_SCALE_MAX), BENCH_SCALE_SHAPES (default a,b),
BENCH_SCALE_EDITS / BENCH_SCALE_EDIT_S (edit rate, above), BENCH_SCALE_LIST=0 skips
`dispatcher.list` (minutes at 300,000 in 30,000 sets).
"""

import json
import os
import re
import signal
import subprocess
import time

import bench as B


def write_scale_list(path, n, shape):
    n_sets = 100 if shape == "a" else max(1, n // 10)
    per = max(1, -(-n // n_sets))
    with open(path, "w") as f:
        f.write(f"# bench/scale.py: {n} destinations, shape {shape} ({n_sets} sets)\n")
        for i in range(n):
            setid = 1 + i // per
            a, b = divmod(i, 250)
            a1, a2 = divmod(a, 250)
            f.write(f"{setid} sip:127.{3 + a1}.{a2}.{b + 1}:5060 0 {i % 3} duid=d{i};weight=1\n")
    return n_sets


def pss_kb(kam):
    """PSS summed over every process of this Kamailio (kB), from /proc/<pid>/smaps_rollup."""
    pids = [p for p, _ in kam.psx()]
    if kam.proc is not None and kam.proc.pid not in pids:
        pids.append(kam.proc.pid)
    tot = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                m = re.search(r"^Pss:\s+(\d+)", f.read(), re.M)
                tot += int(m.group(1)) if m else 0
        except OSError:
            return None
    return tot


def isfrom_us(kam):
    """µs per ds_is_from_list() call (K calibrated so that the loop takes ~200 ms)."""
    sock = B.bound_udp()
    try:
        k = 10
        for _ in range(4):
            r = B.select_request(kam, sock, "isfrom", k, timeout=300.0)
            if r is None:
                return None
            empty, work, _fail, _ret = r
            per = max(work - empty, 1) / k
            if work >= 150_000 or k >= 200_000:
                return max(work - empty, 0) / k
            k = int(min(200_000, max(k * 2, 200_000 / per)))
        return max(work - empty, 0) / k
    finally:
        sock.close()


def rpc_ok(body):
    try:
        r = json.loads(body.decode("utf-8", "replace") or "{}")
    except ValueError:
        return False
    return isinstance(r, dict) and "error" not in r


def cpu_s(pid):
    """CPU time (user + system, seconds) of process `pid` so far, None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def edit_rate(kam, n_sets, rep, add):
    """Back-to-back adds then removes over the jsonrpcs FIFO (see the module doc)."""
    kmax = B.env_int("BENCH_SCALE_EDITS", 200)
    # the process that serves the FIFO: its CPU time per edit does not depend on the load
    fifo_pid = next((p for p, d in kam.psx() if "JSONRPCS FIFO" in d.upper()), None)
    tmax = float(os.environ.get("BENCH_SCALE_EDIT_S", "3"))
    noop = []
    for _ in range(7):
        dt, body = B.jsonrpc_fifo(kam, "core.uptime", timeout=60.0)
        noop.append(dt)
    nmed = B.median(noop)
    add("rpc_noop", nmed)
    uris = []
    for what in ("add", "remove"):
        times = []
        # BENCH_SCALE_PERF=1: `perf record -g` of the process serving the FIFO during each
        # edit loop of the Rust module (profile files in the run dir)
        perf = None
        if os.environ.get("BENCH_SCALE_PERF") == "1" and kam.module == "rust" and fifo_pid:
            out = os.path.join(kam.ctx.run, f"{kam.name}-{what}.perf.data")
            perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o", out, "-p", str(fifo_pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        c0 = cpu_s(fifo_pid) if fifo_pid else None
        t0 = time.monotonic()
        items = range(kmax) if what == "add" else list(uris)
        for i in items:
            if what == "add":
                setid = 1 + (i * 7919) % n_sets
                uri = f"sip:10.{100 + rep}.{i // 250}.{i % 250 + 1}:5060"
                params = [setid, uri, 0]
            else:
                setid, uri = i
                params = [setid, uri]
            dt, body = B.jsonrpc_fifo(kam, f"dispatcher.{what}", params, timeout=300.0)
            if not rpc_ok(body):
                B.log(f"{kam.name}: dispatcher.{what} {params} failed: {body[:200]!r}")
                break
            times.append(dt)
            if what == "add":
                uris.append((setid, uri))
            if time.monotonic() - t0 >= tmax and len(times) >= 3:
                break
        total = time.monotonic() - t0
        c1 = cpu_s(fifo_pid) if fifo_pid else None
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(timeout=60)
            except subprocess.TimeoutExpired:
                perf.kill()
                perf.wait()
        if times and c0 is not None and c1 is not None:
            add(f"{what}_cpu", (c1 - c0) / len(times))
        if times:
            add(f"{what}_rate", len(times) / total)
            add(f"{what}_srv", max(B.median(times) - nmed, 0.0))
            add(f"{what}_p90", max(sorted(times)[int(0.9 * (len(times) - 1))] - nmed, 0.0))
            add(f"{what}_n", len(times))


def bench_scale(ctx):
    nmax = B.env_int("BENCH_SCALE_MAX", 10000)
    sizes = [n for n in B.env_list("BENCH_SCALE_SIZES", [1000, 10000, 100000, 300000]) if n <= nmax]
    shapes = [s for s in re.split(r"[,\s|]+", os.environ.get("BENCH_SCALE_SHAPES", "a,b")) if s in ("a", "b")]
    t_begin = time.monotonic()
    d = os.path.join(ctx.run, "scale")
    os.makedirs(d, exist_ok=True)
    both = "c" in ctx.mods and "rust" in ctx.mods
    rows = []
    slow = []
    for n in sizes:
        for shape in shapes:
            lst = os.path.join(d, f"scale-{n}-{shape}.list")
            n_sets = write_scale_list(lst, n, shape)
            R = {m: {} for m in ctx.mods}

            def add(m, k, v):
                if v is not None:
                    R[m].setdefault(k, []).append(v)

            for rep in range(ctx.reps):
                order = ctx.mods if rep % 2 == 0 else list(reversed(ctx.mods))
                for m in order:
                    shm_mb = max(256, 64 + n // 200)
                    kam = B.Kam(ctx, f"scale-{n}{shape}-{m}-{rep + 1}", m, "select.cfg.tmpl",
                                dict(DEBUG=-2, LIST=lst, FLAGS=0), shm_mb=shm_mb, pkg_mb=64)
                    try:
                        kam.start()
                        add(m, "start", kam.wait_ready(timeout=300.0))
                        time.sleep(1.0)
                        s = kam.shm()
                        add(m, "shm", s["real_used"] / 1024 if s else None)
                        add(m, "pss", pss_kb(kam))
                        for _ in range(3):
                            rc, out, err, dt = kam.kamcmd("dispatcher.reload", timeout=300)
                            add(m, "reload", dt if rc == 0 else None)
                        for i in range(3):
                            uri = f"sip:10.99.{rep}.{i + 1}:5060"
                            rc, out, err, dt = kam.kamcmd("dispatcher.add", "1", uri, "0", timeout=300)
                            add(m, "add", dt if rc == 0 else None)
                            if rc != 0:
                                B.log(f"{kam.name}: dispatcher.add failed: {out}{err}")
                            rc, out, err, dt = kam.kamcmd("dispatcher.remove", "1", uri, timeout=300)
                            add(m, "remove", dt if rc == 0 else None)
                        for _ in range(3):
                            add(m, "noop", kam.kamcmd("core.uptime")[3])
                        add(m, "isfrom", isfrom_us(kam))
                        try:
                            if os.environ.get("BENCH_SCALE_LIST", "1") == "0":
                                raise TimeoutError("skipped (BENCH_SCALE_LIST=0)")
                            dt, body = B.jsonrpc_fifo(kam, "dispatcher.list", timeout=300.0)
                            if B.count_json_dests(body) == n:
                                add(m, "list", dt)
                        except (OSError, TimeoutError) as e:
                            B.log(f"{kam.name}: dispatcher.list failed: {e}")
                        try:
                            edit_rate(kam, n_sets, rep, lambda k, v, m=m: add(m, k, v))
                        except (OSError, TimeoutError) as e:
                            B.log(f"{kam.name}: edit rate failed: {e}")
                    except B.KamDied as e:
                        B.log(str(e))
                        ctx.crashes.append(str(e).splitlines()[0])
                    finally:
                        kam.check_crash("scale")
                        kam.stop()
            med = {m: {k: B.median(v) for k, v in R[m].items()} for m in ctx.mods}
            for label, key, scale, nd, tgt in (
                    ("start-up (ms)", "start", 1000, 0, 1.0),
                    ("shm real_used (KiB)", "shm", 1, 0, None),
                    ("PSS, all processes (KiB)", "pss", 1, 0, 1.0),
                    ("reload (ms)", "reload", 1000, 1, 0.5),
                    ("add one (ms)", "add", 1000, 1, None),
                    ("remove one (ms)", "remove", 1000, 1, None),
                    ("ds_is_from_list, no match (µs/call)", "isfrom", 1, 2, None),
                    ("dispatcher.list, JSON-RPC (ms)", "list", 1000, 0, None),
                    ("add, server time per edit, FIFO (ms)", "add_srv", 1000, 2, None),
                    ("add, 90th percentile (ms)", "add_p90", 1000, 2, None),
                    ("add, CPU time of the RPC process per edit (ms)", "add_cpu", 1000, 2, None),
                    ("adds/s sustained, FIFO", "add_rate", 1, 1, None),
                    ("remove, server time per edit, FIFO (ms)", "remove_srv", 1000, 2, None),
                    ("remove, CPU time of the RPC process per edit (ms)", "remove_cpu", 1000, 2, None),
                    ("removes/s sustained, FIFO", "remove_rate", 1, 1, None),
                    ("edits per run (add)", "add_n", 1, 0, None),
                    ("no-op JSON-RPC request, FIFO (ms)", "rpc_noop", 1000, 2, None)):
                vals = {m: (None if med[m].get(key) is None else med[m][key] * scale) for m in ctx.mods}
                row = [f"{n:,} {shape} ({n_sets:,} sets)", label] + [B.fmt_num(vals[m], nd) for m in ctx.mods]
                if both:
                    r = B.ratio(vals["rust"], vals["c"])
                    row.append(B.fmt_ratio(r, tgt))
                    if tgt is not None and r is not None and r > tgt:
                        slow.append(f"scale {n:,} {shape}: {label}: Rust/C = {r:.2f} (target ≤ {tgt})")
                rows.append(row)
            noop = {m: med[m].get("noop") for m in ctx.mods}
            B.log(f"scale {n} {shape}: " + "; ".join(
                f"{B.MOD_LABEL[m]} reload {1000 * (med[m].get('reload') or 0):.0f} ms, add {1000 * (med[m].get('add') or 0):.1f} ms"
                f", FIFO add {1000 * (med[m].get('add_srv') or 0):.2f} ms ({med[m].get('add_rate') or 0:.0f}/s)"
                f", remove {1000 * (med[m].get('remove_srv') or 0):.2f} ms ({med[m].get('remove_rate') or 0:.0f}/s)"
                f" (no-op RPC {1000 * (noop[m] or 0):.1f} ms)" for m in ctx.mods))
    header = ["N, shape", "measure"] + [B.MOD_LABEL[m] for m in ctx.mods] + (["Rust/C"] if both else [])
    text = [
        "### 4. Scale",
        "",
        f"Sizes {', '.join(f'{n:,}' for n in sizes)} (BENCH_SCALE_MAX={nmax:,}); shape a = 100 sets, b = N/10 sets "
        f"of 10; `children=1`, `reload_delta` 0, median of {ctx.reps} interleaved runs. RPC times are wall times of "
        "one `kamcmd` (spawning kamcmd included: about 2–5 ms), `dispatcher.list` of one JSON-RPC FIFO request. "
        "Targets (issue 14): start-up ≤ 1.0× C, PSS ≤ 1.0× C, reload ≤ 0.5× C, add/remove ≤ 2 ms of server time and ≥ 500 adds/s (the FIFO rows).",
        "",
        B.md_table(header, rows),
        "",
    ]
    B.log(f"scale benchmark took {time.monotonic() - t_begin:.0f} s")
    return "\n".join(text), slow
