#!/usr/bin/env python3
"""Resident memory of the `memory` history store at scale, measured on a running server.

Starts ringwire (history on, `server.cores` = CORES, `history.max_bytes_per_core` = BOUND),
pushes USERS x ROUNDS pushes of SIZE bytes through POST /v1/push/batch, and prints the
growth of the process' resident memory against the bound and what /metrics reports.

    python3 benches/compare/history_rss.py --bin target-new/release/ringwire \
        --users 100000 --rounds 100 --size 200 --cores 2 --bound 268435456
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def metric(admin: http.client.HTTPConnection, name: str) -> float:
    admin.request("GET", "/metrics")
    text = admin.getresponse().read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=100, help="pushes per user (= history.size)")
    ap.add_argument("--size", type=int, default=200, help="bytes per push")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--bound", type=int, default=256 << 20, help="history.max_bytes_per_core")
    ap.add_argument("--batch", type=int, default=2000)
    a = ap.parse_args()
    port, admin_port = free_port(), free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f"""[server]\nlisten = "127.0.0.1:{port}"\ncores = {a.cores}\ndrain_secs = 0\n
[admin]\nlisten = "127.0.0.1:{admin_port}"\n
[history]\nenabled = true\nsize = {a.rounds}\nttl_secs = 86400\nmax_bytes_per_core = {a.bound}\n""")
    proc = subprocess.Popen([a.bin, "serve", "--config", f.name], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                admin = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
                metric(admin, "ringwire_history_bytes")
                break
            except OSError:
                time.sleep(0.1)
        before = rss(proc.pid)
        text = "x" * a.size
        t0 = time.monotonic()
        for _ in range(a.rounds):
            for start in range(0, a.users, a.batch):
                pushes = [{"context": 1, "user": u, "message": text}
                          for u in range(start, min(start + a.batch, a.users))]
                admin.request("POST", "/v1/push/batch", json.dumps({"pushes": pushes}),
                              {"Content-Type": "application/json"})
                r = admin.getresponse()
                r.read()
                assert r.status == 202, r.status
        secs = time.monotonic() - t0
        grown = rss(proc.pid) - before
        held = metric(admin, "ringwire_history_bytes")
        evicted = metric(admin, "ringwire_history_evicted_total")
        appended = metric(admin, "ringwire_history_appended_total")
        total_bound = a.bound * a.cores
        print(f"{a.users} users x {a.rounds} pushes of {a.size} B in {secs:.0f} s "
              f"({appended / secs:,.0f} pushes/s); bound {a.cores} x {a.bound / 2**20:.0f} MiB")
        print(f"resident growth {grown / 2**20:.1f} MiB ({grown / total_bound:.2f} of the bound); "
              f"the stores count {held / 2**20:.1f} MiB; evicted {evicted:,.0f} of {appended:,.0f}; "
              f"held {(appended - evicted) / 1e6:.2f} M pushes, {grown / max(appended - evicted, 1):.0f} B each resident")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
