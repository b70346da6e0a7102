#!/usr/bin/env python3
"""Turns run.sh's results.jsonl (+ the load tester's JSON reports) into markdown tables.

    python3 benches/compare/table.py target/compare/<run>/results.jsonl

Per run:
  msg/s        echoes received per second while holding (from the load tester's timeline)
  x rw         that throughput / ringwire's in the same setting and repetition
  p50, p99     round-trip latency of those echoes (client send -> echo read), ms
  srv CPU s    server utime+stime (whole process tree) from before connecting to after the
               load tester exited (connect + hold + close)
  msg/CPU-s    all echoes of the run / server CPU seconds; "x rw" is that / ringwire's
  cores        CPU cores in use during the hold window (cpu_sampler.py, 500 ms samples):
               server / load tester / whole machine (2.00 = both cores busy)
  client CPU s the load tester (coordinator + workers) over the same span as srv CPU s
  other CPU s  whole-machine busy CPU seconds - server - client over that span (kernel
               threads such as ksoftirqd, and anything else that ran: a neighbour's build)
  RSS MiB      server resident set, largest sample during the hold window
  conns        connections established (of --connections)
  errors       failed + dropped connections, missing / mismatched echoes, send errors
"""
import json
import sys
from collections import OrderedDict

NOISY = 0.25  # cores used by other processes during a hold window that make a run "noisy"


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            try:
                with open(r["report"]) as rf:
                    rep = json.load(rf)
            except (OSError, ValueError):
                rep = None
            r["lt"] = rep
            runs.append(r)
    return runs


def metrics(r):
    rep = r["lt"]
    m = {"ok": rep is not None}
    if not rep:
        return m
    msgs = rep.get("messages", {})
    conns = rep.get("connections", {})
    steady = msgs.get("latency_steady_us") or msgs.get("latency_us") or {}
    phases = rep.get("outcome", {}).get("phase_seconds", {})
    hold = phases.get("hold") or r["duration"]
    m["rate"] = hold_rate(rep.get("timeline") or [], phases.get("connect", 0.0), hold)
    if m["rate"] is None:
        m["rate"] = steady.get("count", 0) / hold if hold else 0.0
    m["p50_ms"] = steady.get("p50_us", 0) / 1000.0
    m["p99_ms"] = steady.get("p99_us", 0) / 1000.0
    m["received"] = msgs.get("received", 0)
    m["offered"] = r["connections"] * 1000.0 / r["interval_ms"]
    m["srv_cpu"] = r["server_cpu_s"]
    m["per_cpu"] = m["received"] / r["server_cpu_s"] if r["server_cpu_s"] > 0 else float("nan")
    m["cli_cpu"] = r["client_cpu_s"]
    m["other_cpu"] = r["machine_busy_cpu_s"] - r["server_cpu_s"] - r["client_cpu_s"]
    m["wall"] = r["wall_s"]
    m["rss"] = r["rss_end_kb"] / 1024.0
    m["hwm"] = r["rss_peak_kb"] / 1024.0
    m["connected"] = conns.get("connected", 0)
    m["connect_s"] = rep.get("outcome", {}).get("phase_seconds", {}).get("connect", 0.0)
    m["cores"] = hold_cores(r, phases.get("connect", 0.0), hold)
    m["errors"] = (
        conns.get("failed", 0)
        + conns.get("dropped", 0)
        + msgs.get("missing", 0)
        + msgs.get("mismatches", 0)
        + msgs.get("send_errors", 0)
    )
    return m


def hold_rate(timeline, connect_s, hold_s):
    """Echoes per second while holding, from the coordinator's 250 ms timeline (cumulative
    `received` against the coordinator's clock `t`): the first sample at or after the end of
    the connect phase to the last one before the end of the hold. The report's own
    phase_seconds.hold can be up to one 250 ms tick off the window its steady histogram
    covers, so count / hold would be off by up to 1/(4 * duration)."""
    start = connect_s - 0.01
    end = connect_s + hold_s + 0.01
    pts = [p for p in timeline if start <= p.get("t", -1) <= end and "received" in p]
    if len(pts) < 2 or pts[-1]["t"] - pts[0]["t"] < 1.0:
        return None
    return (pts[-1]["received"] - pts[0]["received"]) / (pts[-1]["t"] - pts[0]["t"])


def hold_cores(r, connect_s, hold_s):
    """Cores used during the hold window, from cpu_sampler.py's samples: server, load tester,
    whole machine; and the server's largest RSS in that window (kB)."""
    try:
        with open(r["samples"]) as f:
            pts = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, KeyError):
        return None
    start = r["t_start"] + connect_s
    end = start + hold_s
    win = [p for p in pts if start <= p["t"] <= end and p.get("client") is not None]
    if len(win) < 3:
        return None
    a, b = win[0], win[-1]
    dt = b["t"] - a["t"]
    hz = float(r.get("hz", 100))
    return {
        "server": (b["server"] - a["server"]) / hz / dt,
        "client": (b["client"] - a["client"]) / hz / dt,
        "machine": (b["busy"] - a["busy"]) / hz / dt,
        "rss_kb": max(p.get("server_rss_kb", 0) for p in win),
    }


def ratio(a, b):
    if not a or not b or b != b or a != a:
        return "-"
    return f"{a / b:.2f}"


def noise(path):
    """`table.py --noise RUN.json`: cores that processes other than the server and the load
    tester used during the hold window of one run (run.sh re-runs when this is too high)."""
    r = load(path)[0]
    m = metrics(r)
    c = m.get("cores")
    print(f"{max(0.0, c['machine'] - c['server'] - c['client']):.2f}" if c else "0.00")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--noise":
        return noise(sys.argv[2])
    runs = load(sys.argv[1] if len(sys.argv) > 1 else "results.jsonl")
    settings = OrderedDict()
    for r in runs:
        settings.setdefault(r["setting"], []).append(r)
    out = []
    summary = OrderedDict()  # (setting, server) -> [(thr ratio, cpu ratio)]
    noisy_rows = 0
    partial_rows = 0
    noisy_runs = set()
    for sname, rs in settings.items():
        r0 = rs[0]
        offered = r0["connections"] * 1000.0 / r0["interval_ms"]
        out.append(
            f"### {sname}: {r0['connections']} connections, each sends 32 B every "
            f"{r0['interval_ms']} ms (offered {offered:,.0f} msg/s), "
            f"{r0['workers']} load-tester worker(s), {r0['duration']} s"
        )
        out.append("")
        out.append(
            "| rep | server | conns | msg/s | x rw | p50 ms | p99 ms | msg/CPU-s | x rw "
            "| cores srv / client / machine | srv CPU s | client CPU s | other CPU s "
            "| RSS MiB | connect s | errors |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        base = {}
        for r in rs:
            if r["server"] == "ringwire":
                base[r["rep"]] = metrics(r)
        for r in rs:
            m = metrics(r)
            name = r["server"]
            if name == "node-ws" and r.get("node_procs", 1) > 1:
                name += f" ({r['node_procs']} procs)"
            if not m["ok"]:
                out.append(f"| {r['rep']} | {name} | no report (load tester rc {r['loadtest_rc']}) |")
                continue
            b = base.get(r["rep"], {})
            tr = ratio(m["rate"], b.get("rate"))
            cr = ratio(m["per_cpu"], b.get("per_cpu"))
            if m["connected"] < r["connections"]:
                # fewer connections = a different (lighter) load: the ratios do not compare
                tr, cr = tr + "*", cr + "*"
                partial_rows += 1
            c = m["cores"]
            cores = f"{c['server']:.2f} / {c['client']:.2f} / {c['machine']:.2f}" if c else "-"
            if c and c["machine"] - c["server"] - c["client"] > NOISY:
                cores += " (noisy)"
                noisy_rows += 1
                noisy_runs.add((sname, r["rep"], name))
            summary.setdefault((sname, name), []).append((r["rep"], tr, cr))
            rss = c["rss_kb"] / 1024.0 if c and c.get("rss_kb") else m["rss"]
            out.append(
                f"| {r['rep']} | {name} | {m['connected']} | {m['rate']:,.0f} | {tr} | "
                f"{m['p50_ms']:.2f} | "
                f"{m['p99_ms']:.2f} | {m['per_cpu']:,.0f} | {cr} | {cores} | "
                f"{m['srv_cpu']:.2f} | {m['cli_cpu']:.2f} | {m['other_cpu']:.2f} | "
                f"{rss:.1f} | {m['connect_s']:.2f} | {m['errors']} |"
            )
        out.append("")
    out.append("### Ratios to ringwire (rep 1 / rep 2 ...): throughput, messages per server CPU-second")
    out.append("")
    out.append("| setting | server | throughput x rw | msg per CPU-s x rw |")
    out.append("|---|---|---:|---:|")
    for (sname, name), vals in summary.items():
        if name == "ringwire":
            continue
        # a ratio is noisy when either its run or ringwire's run of that repetition was
        def mark(rep):
            noisy = {(sname, rep, name), (sname, rep, "ringwire")} & noisy_runs
            return " (noisy)" if noisy else ""

        out.append(
            f"| {sname} | {name} | {' / '.join(v[1] + mark(v[0]) for v in vals)} | "
            f"{' / '.join(v[2] + mark(v[0]) for v in vals)} |"
        )
    out.append("")
    if partial_rows:
        out.append(
            "\\*: not all connections were established (the connect timeout is 10 s), so that "
            "server carried a lighter load than ringwire did: its ratios do not compare."
        )
        out.append("")
    if noisy_rows:
        out.append(
            f"(noisy): other processes used more than {NOISY} cores during that run's hold "
            "window (after run.sh's re-runs ran out), so its numbers are less trustworthy."
        )
        out.append("")
    out.append(
        "Load tester and server share the same 2 cores over loopback: throughput is what the "
        "pair reaches together, so a server that needs less CPU per message also leaves more "
        "to the load tester. msg/CPU-s is the server's own cost."
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
