#!/usr/bin/env python3
"""Tables of echo_cells.sh's results.jsonl: server CPU per echoed message, per cell.

    python3 benches/compare/echo_cells.py [--spread 0.10] [--other 0.10] OUT/results.jsonl

Per run (from the echo client's JSON, over its measure window only):
  us/msg      server run time (every thread, /proc/PID/task/*/schedstat, ns) / echoes
  user/sys    the server's utime / stime share (/proc/PID/stat, clock ticks)
  msg/s       echoes received per second by the client
  softirq     CPU seconds in softirq on the server's CPU (not charged to any process on this
              kernel: loopback TCP receive work) per echo, us
  other       cores used by everything else during the window: host busy - server - client
              - softirq (from /proc/stat; 10 ms ticks, so +-0.01 is rounding); "on server CPU":
              the server's CPU's busy - server - its softirq (the client may run there too
              when the CPU lists overlap)
Per cell and server: the median of the repetitions; "spread" = (max - min) / median of us/msg.
"per-rep ratios": ringwire / uWS of each repetition (runs next to each other in time), sorted.
A cell is flagged noisy when a server's spread is above --spread or a run's "other" is above
--other; a run with client errors or missing connections is flagged and left out of medians.
"""
import json
import statistics
import sys

PRETTY = {"uws": "uWS", "ringwire": "ringwire", "ringwire-base": "ringwire-base",
          "tungstenite": "tokio-tungstenite", "fastwebsockets": "fastwebsockets"}


def run_metrics(r):
    c = r.get("client")
    if not c or not c.get("echoes"):
        return None
    host = c.get("host", {})
    w = c["window_s"]
    busy = host.get("cpu", {}).get("busy_s", 0.0)
    softirq = host.get("cpu", {}).get("softirq_s", 0.0)
    server_s = c["server_utime_s"] + c["server_stime_s"]
    client_s = c["client_utime_s"] + c["client_stime_s"]
    # the /proc/stat line of the CPU the server was pinned to (echo_cells.sh records it)
    srv_cpu = host.get(r.get("server_cpu_line", "cpu0"), {})
    ok = r["client_rc"] == 0 and c["connected"] == c["conns"] and c["errors"] == 0
    return {
        "us": c["server_run_s"] * 1e6 / c["echoes"],
        "us_ticks": server_s * 1e6 / c["echoes"],
        "user": c["server_utime_s"] / server_s if server_s else 0.0,
        "msgs": c["msgs_per_s"],
        "srv_cores": c["server_run_s"] / w,
        "cli_cores": c["client_run_s"] / w,
        "softirq_us": srv_cpu.get("softirq_s", 0.0) * 1e6 / c["echoes"],
        "other": (busy - server_s - client_s - softirq) / w,
        "other_srv": (srv_cpu.get("busy_s", 0.0) - server_s - srv_cpu.get("softirq_s", 0.0)) / w,
        "ok": ok,
        "err": c.get("first_error", "") or ("client exit %d" % r["client_rc"] if r["client_rc"] else ""),
    }


def cell_key(cell):
    conns, depth, payload = (int(x) for x in cell.split("x"))
    return conns, depth, payload


def fmt_cell(cell):
    conns, depth, payload = cell_key(cell)
    return f"{conns} x {depth} x {payload} B"


def main(argv):
    spread_max, other_max, paths = 0.10, 0.10, []
    it = iter(argv)
    for a in it:
        if a == "--spread":
            spread_max = float(next(it))
        elif a == "--other":
            other_max = float(next(it))
        else:
            paths.append(a)
    runs = []
    for p in paths:
        with open(p) as f:
            runs += [json.loads(line) for line in f if line.strip()]
    servers, cells = [], []
    for r in runs:
        r["m"] = run_metrics(r)
        if r["server"] not in servers:
            servers.append(r["server"])
        if r["cell"] not in cells:
            cells.append(r["cell"])
    cells.sort(key=cell_key)
    peers = [s for s in servers if s not in ("uws", "ringwire")]

    med, notes = {}, {}
    for cell in cells:
        notes[cell] = []
        for s in servers:
            ms = [r["m"] for r in runs if r["cell"] == cell and r["server"] == s and r["m"]]
            good = [m for m in ms if m["ok"]]
            bad = len([r for r in runs if r["cell"] == cell and r["server"] == s]) - len(good)
            if bad:
                notes[cell].append(f"{PRETTY.get(s, s)}: {bad} run(s) failed or had errors")
            if not good:
                continue
            us = [m["us"] for m in good]
            mid = statistics.median(us)
            spread = (max(us) - min(us)) / mid if mid else 0.0
            other = max(m["other"] for m in good)
            med[cell, s] = {
                "us": mid, "spread": spread, "n": len(good),
                "msgs": statistics.median(m["msgs"] for m in good),
                "user": statistics.median(m["user"] for m in good),
                "softirq_us": statistics.median(m["softirq_us"] for m in good),
                "other": other,
            }

    for cell in cells:
        spreads = [f"{PRETTY.get(s, s)} {med[cell, s]['spread'] * 100:.0f}%" for s in servers
                   if (cell, s) in med and med[cell, s]["spread"] > spread_max]
        if spreads:
            notes[cell].append(f"spread > {spread_max * 100:.0f}%: " + ", ".join(spreads))
        others = max((med[cell, s]["other"] for s in servers if (cell, s) in med), default=0.0)
        if others > other_max:
            notes[cell].append(f"other processes used up to {others:.2f} cores")

    def paired(cell):
        """ringwire / uWS of each repetition (the two runs next to each other in time)."""
        by = {}
        for r in runs:
            if r["cell"] == cell and r["m"] and r["m"]["ok"] and r["server"] in ("uws", "ringwire"):
                by.setdefault(r["rep"], {})[r["server"]] = r["m"]["us"]
        return sorted(v["ringwire"] / v["uws"] for v in by.values() if len(v) == 2)

    hdr = "| conns x depth x payload | uWS us/msg | ringwire us/msg | ringwire / uWS | per-rep ratios |"
    sep = "|---|---:|---:|---:|---|"
    for p in peers:
        hdr += f" {PRETTY.get(p, p)} us/msg |"
        sep += "---:|"
    print(hdr + " noise |")
    print(sep + "---|")
    for cell in cells:
        u, w = med.get((cell, "uws")), med.get((cell, "ringwire"))
        row = f"| {fmt_cell(cell)} | {u['us']:.2f} |" if u else f"| {fmt_cell(cell)} | - |"
        row += f" {w['us']:.2f} |" if w else " - |"
        row += f" {w['us'] / u['us']:.2f} |" if u and w else " - |"
        row += " " + (" / ".join(f"{x:.2f}" for x in paired(cell)) or "-") + " |"
        for p in peers:
            m = med.get((cell, p))
            row += f" {m['us']:.2f} |" if m else " - |"
        print(row + f" {'; '.join(notes[cell]) or 'clean'} |")
    print()
    print("Medians per cell and server:")
    print()
    print("| cell | server | reps | us/msg | spread | msg/s | user share | softirq us/msg (server CPU) | others' cores (max) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for cell in cells:
        for s in servers:
            m = med.get((cell, s))
            if m:
                print(f"| {fmt_cell(cell)} | {PRETTY.get(s, s)} | {m['n']} | {m['us']:.3f} | "
                      f"{m['spread'] * 100:.0f}% | {m['msgs']:,.0f} | {m['user'] * 100:.0f}% | "
                      f"{m['softirq_us']:.3f} | {m['other']:.2f} |")
    print()
    print("Every run:")
    print()
    print("| cell | rep | server | us/msg | us/msg (ticks) | msg/s | user share | server cores | client cores | softirq us/msg | others' cores | others on server CPU | ok |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(runs, key=lambda r: (cell_key(r["cell"]), r["rep"])):
        m = r["m"]
        if not m:
            print(f"| {fmt_cell(r['cell'])} | {r['rep']} | {PRETTY.get(r['server'], r['server'])} "
                  f"| - | - | - | - | - | - | - | - | - | no result (client exit {r['client_rc']}) |")
            continue
        print(f"| {fmt_cell(r['cell'])} | {r['rep']} | {PRETTY.get(r['server'], r['server'])} | "
              f"{m['us']:.3f} | {m['us_ticks']:.3f} | {m['msgs']:,.0f} | {m['user'] * 100:.0f}% | "
              f"{m['srv_cores']:.2f} | {m['cli_cores']:.2f} | {m['softirq_us']:.3f} | "
              f"{m['other']:.2f} | {m['other_srv']:.2f} | {'yes' if m['ok'] else 'NO: ' + m['err'][:60]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
