#!/usr/bin/env python3
"""Helper of push_latency.sh: runs one push load and measures the server's CPU during the push
phase only; prints the tables of a whole invocation.

    push_latency.py measure --server-pid PID --report R.json --log L.txt --meta JSON -- LOADTEST ARGS...
        Runs the load tester (its stderr is read, so it must not be given --quiet), and writes
        one JSON object (the meta fields plus the measurements) to stdout, a summary line to
        stderr.
    push_latency.py table RESULTS.jsonl [--gate 1.05]
        The per-run table and the medians of each build with the ratio new/old.

The push window starts when the load tester logs `pushing` (all connections are up, the
push driver starts) and ends `push_seconds + drain_seconds` later (the report's times: the
last push accepted, then every expected message received). Minting the sessions, the
upgrades and the closes at the end are left out. The server's CPU is read from its
process-wide CPU clock (clock_gettime on the PID's CPUCLOCK_SCHED: nanoseconds, every thread
of the process, exited ones included) every 20 ms; the window's end takes the last reading at
or before it, so the closes that follow cannot leak in (the drain before it is idle time).
Other processes' share of the machine during the window (noise) = machine busy jiffies minus
the server and the load tester (coordinator and workers), in cores.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

from cpu_sampler import children_map, machine, tree_ticks

SAMPLE_S = 0.02
HZ = os.sysconf("SC_CLK_TCK")


def server_cpu_s(pid):
    """CPU seconds of the whole process `pid` (CPUCLOCK_SCHED of the thread group)."""
    return time.clock_gettime(((~pid) << 3) | 2)


def sample(server_pid, client_pid, kids):
    """Now: the server's CPU seconds, the load tester's (with the workers in `kids`) ticks,
    the machine's busy ticks."""
    try:
        srv = server_cpu_s(server_pid)
    except OSError:
        srv = None
    return {
        "t": time.monotonic(),
        "server": srv,
        "client": tree_ticks(client_pid, kids),
        "busy": machine()[0],
    }


def measure(argv):
    opts, cmd = parse_measure_args(argv)
    pid = int(opts["--server-pid"])
    meta = json.loads(opts.get("--meta", "{}"))
    srv0 = server_cpu_s(pid)
    wall0 = time.monotonic()
    pushing = threading.Event()
    with open(opts["--log"], "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.PIPE, text=True)
        start = {}

        def read_stderr():
            for line in proc.stderr:
                # "pushing: ..." (older load testers) or "pushing 5000 per second ...".
                if line.startswith("pushing") and not pushing.is_set():
                    # The workers are all started by now.
                    start["kids"] = children_map()
                    start.update(sample(pid, proc.pid, start["kids"]))
                    pushing.set()
                log.write(line)
                log.flush()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        samples = []
        while proc.poll() is None:
            if pushing.is_set():
                samples.append(sample(pid, proc.pid, start["kids"]))
            time.sleep(SAMPLE_S)
        reader.join(5)
    rc = proc.returncode
    wall = time.monotonic() - wall0
    try:
        srv_total = server_cpu_s(pid) - srv0
    except OSError:
        srv_total = None
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = dict(meta)
    out.update(loadtest_rc=rc, wall_s=round(wall, 3), server_cpu_total_s=srv_total,
               client_cpu_total_s=ru.ru_utime + ru.ru_stime)
    try:
        with open(opts["--report"]) as f:
            rep = json.load(f)
    except (OSError, ValueError) as e:
        out["error"] = f"no report: {e}"
        print(json.dumps(out))
        return
    out.update(report_fields(rep))
    out.update(window_fields(rep, start, samples))
    print(json.dumps(out))
    print(f"p50 / p99 {fmt(out['p50_us'], 1e-3)} / {fmt(out['p99_us'], 1e-3)} ms, "
          f"{fmt(out.get('server_us_per_push'))} µs server CPU per push, {out['missing']} missing, "
          f"{out['connected']} of {out['requested']} connected, load tester exit {rc}; "
          f"other processes {fmt(out.get('noise_cores'))} cores", file=sys.stderr)


def parse_measure_args(argv):
    if "--" not in argv:
        sys.exit("usage: push_latency.py measure --server-pid PID --report R --log L [--meta J] -- CMD...")
    i = argv.index("--")
    opts = dict(zip(argv[:i:2], argv[1:i:2]))
    for k in ("--server-pid", "--report", "--log"):
        if k not in opts:
            sys.exit(f"push_latency.py measure: {k} is required")
    return opts, argv[i + 1:]


def report_fields(rep):
    conns = rep.get("connections", {})
    push = rep.get("push") or {}
    lat = push.get("latency_us") or {}
    api = push.get("api_latency_us") or {}
    return {
        "requested": conns.get("requested", 0),
        "connected": conns.get("connected", 0),
        "connect_failed": conns.get("failed", 0),
        "dropped": conns.get("dropped", 0),
        "workers": rep.get("config", {}).get("workers"),
        "connect_s": rep.get("time_to_connect_all_s"),
        "push_seconds": push.get("push_seconds"),
        "drain_seconds": push.get("drain_seconds"),
        "drain_complete": push.get("drain_complete"),
        "pushes_accepted": push.get("pushes_accepted", 0),
        "pushes_accepted_per_s": push.get("pushes_accepted_per_s", 0),
        "late_requests": push.get("late_requests", 0),
        "http_errors": push.get("http_errors", 0),
        "messages_expected": push.get("messages_expected", 0),
        "messages_received": push.get("messages_received", 0),
        "missing": push.get("missing", 0),
        "latency_count": lat.get("count", 0),
        "p50_us": lat.get("p50_us"),
        "p90_us": lat.get("p90_us"),
        "p99_us": lat.get("p99_us"),
        "p999_us": lat.get("p999_us"),
        "max_us": lat.get("max_us"),
        "api_p50_us": api.get("p50_us"),
        "api_p99_us": api.get("p99_us"),
        "violations": rep.get("violations", []),
    }


def window_fields(rep, start, samples):
    push = rep.get("push") or {}
    if not start or not samples or push.get("push_seconds") is None:
        return {"window_s": None}
    t_end = start["t"] + push["push_seconds"] + (push.get("drain_seconds") or 0.0)
    inside = [s for s in samples if s["t"] <= t_end and s["server"] is not None]
    if not inside:
        return {"window_s": None}
    end = inside[-1]
    window = end["t"] - start["t"]
    srv = end["server"] - start["server"]
    cli = (end["client"] - start["client"]) / HZ
    busy = (end["busy"] - start["busy"]) / HZ
    accepted = push.get("pushes_accepted", 0)
    return {
        "window_s": round(window, 3),
        "window_short_s": round(t_end - end["t"], 3),
        "server_cpu_s": round(srv, 6),
        "server_us_per_push": round(srv * 1e6 / accepted, 3) if accepted else None,
        "server_cores": round(srv / window, 3) if window > 0 else None,
        "client_cores": round(cli / window, 3) if window > 0 else None,
        "noise_cores": round(max(0.0, busy - srv - cli) / window, 3) if window > 0 else None,
    }


# ------------------------------------------------------------------------------------ tables

COLS = [
    ("p50 ms", "p50_us", 1e-3),
    ("p99 ms", "p99_us", 1e-3),
    ("p999 ms", "p999_us", 1e-3),
    ("srv CPU µs/push", "server_us_per_push", 1.0),
]


def fmt(v, scale=1.0, nd=2):
    return "-" if v is None else f"{v * scale:,.{nd}f}"


def table(argv):
    path = argv[0]
    gate = float(argv[argv.index("--gate") + 1]) if "--gate" in argv else 1.05
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    builds = []
    for r in runs:
        if r["build"] not in builds:
            builds.append(r["build"])
    out = ["| rep | build | conns | pushes | pushes/s | missing | p50 ms | p99 ms | p999 ms "
           "| max ms | srv CPU µs/push | cores srv / client / other | window s | rc |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        cores = "/".join(fmt(r.get(k)) for k in ("server_cores", "client_cores", "noise_cores"))
        out.append(
            f"| {r['rep']} | {r['build']}{' (noisy)' if r.get('noisy') else ''} "
            f"| {r.get('connected', 0):,} | {r.get('pushes_accepted', 0):,} "
            f"| {fmt(r.get('pushes_accepted_per_s'), nd=0)} | {r.get('missing', 0):,} "
            f"| {fmt(r.get('p50_us'), 1e-3)} | {fmt(r.get('p99_us'), 1e-3)} "
            f"| {fmt(r.get('p999_us'), 1e-3)} | {fmt(r.get('max_us'), 1e-3)} "
            f"| {fmt(r.get('server_us_per_push'))} | {cores} | {fmt(r.get('window_s'))} "
            f"| {r.get('loadtest_rc')} |")
    out += ["", "Medians of the repetitions:", "",
            "| build | reps | " + " | ".join(c[0] for c in COLS) + " |",
            "|---|---:|" + "---:|" * len(COLS)]
    noisy = sum(1 for r in runs if r.get("noisy"))
    med = {}
    for b in builds:
        rs = [r for r in runs if r["build"] == b]
        med[b] = {}
        for _, key, _ in COLS:
            vals = [r[key] for r in rs if r.get(key) is not None]
            med[b][key] = statistics.median(vals) if vals else None
        out.append(f"| {b} | {len(rs)} | "
                   + " | ".join(fmt(med[b][k], s) for _, k, s in COLS) + " |")
    if "old" in med and "new" in med:
        ratio = {k: (med["new"][k] / med["old"][k]
                     if med["new"][k] is not None and med["old"][k] else None)
                 for _, k, _ in COLS}
        out.append("| **new / old** | | " + " | ".join(
            "-" if ratio[k] is None else f"**{ratio[k]:.3f}**" for _, k, _ in COLS) + " |")
        checks = [("CPU per push", ratio["server_us_per_push"]), ("p99", ratio["p99_us"])]
        ok = all(v is not None and v <= gate for _, v in checks)
        out += ["", f"Gate (new within {(gate - 1) * 100:.0f} % of old on CPU per push and p99): "
                + ("pass" if ok else "FAIL") + " ("
                + ", ".join(f"{n} x{'-' if v is None else f'{v:.3f}'}" for n, v in checks) + ")"
                + (f"; {noisy} of {len(runs)} runs noisy: not a verdict" if noisy else "")]
    bad = [r for r in runs if r.get("missing") or r.get("loadtest_rc") or
           r.get("connected", 0) < r.get("requested", 0)]
    if bad:
        out.append(f"\nWARNING: {len(bad)} run(s) with missing messages, unconnected users or a "
                   "load tester exit code != 0: see their logs.")
    if noisy:
        out.append("\n(noisy): other processes used more than NOISE_MAX cores during the push "
                   "window after all re-runs.")
    print("\n".join(out))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "measure":
        return measure(sys.argv[2:])
    if len(sys.argv) > 2 and sys.argv[1] == "table":
        return table(sys.argv[2:])
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
