"""permessage-deflate cost per connection, two binaries side by side: server RSS per idle
browser-like connection (deflate negotiated, one compressed ~2 KB push received) and server
CPU per compressed push. Not run by CI.

    tests/.venv/bin/python benches/deflate/mem.py [N] --old /path/to/old/ringwire [--new BIN]

For each binary (old first, then new, twice) and each mode it opens N raw sockets of N users
on a 2-core server, pushes one ~2 KB JSON push to each (/v1/push/batch), waits, and reports
the RSS growth per socket since before the sockets were opened; then it pushes ROUNDS more
rounds to every socket and reports the server's CPU time (utime + stime of the process, which
includes the admin API parsing the batches) per push delivered. Modes:

  plain     the client offers no extension (reference: nothing is compressed)
  deflate   the client offers Chromium's `permessage-deflate; client_max_window_bits`
  deflate, context_takeover=true   (new binary only: the opt-in per-socket contexts)

Every compressed push is decoded and checked. One JSON line per pass.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from helpers import OP_TEXT, RawClient, free_port  # noqa: E402

CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
ROUNDS = 10


def push_payload(user: int, rnd: int) -> str:
    items = [{"id": user * 100 + i, "kind": ["message", "like", "follow", "mention"][i % 4],
              "from": f"user-{(user * 7 + i * 13) % 997}", "text": f"event {i} for user {user}: "
              + "the quick brown fox jumps over the lazy dog"[: 20 + (i * 3 + rnd) % 23],
              "ts": 1_790_000_000 + i * 37 + rnd} for i in range(16)]
    return json.dumps({"type": "feed", "user": user, "round": rnd, "items": items}, separators=(",", ":"))


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_secs(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api(admin: int, method: str, path: str, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def one_pass(binary: str, n: int, offer: str | None, extra: str, tmp: Path) -> dict:
    port, admin = free_port(), free_port()
    cfg = tmp / "ringwire.toml"
    cfg.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ncores = 2\ndrain_secs = 0\n'
                   f'[admin]\nlisten = "127.0.0.1:{admin}"\n[limits]\nupgrade_rate_per_sec = 0\n'
                   f'[compression]\nenabled = true\n{extra}\n'
                   f'[[endpoints]]\npath = "/ws"\nkind = "raw"\n')
    proc = subprocess.Popen([binary, "serve", "--config", str(cfg)], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "ringwire ready" in line:
                break
        sessions = [api(admin, "POST", "/v1/sessions", {"context": 1, "user": u, "ttl_secs": 600})
                    for u in range(n)]
        time.sleep(0.5)
        rss0 = rss(proc.pid)
        socks, answered = [], set()
        for u, s in enumerate(sessions):
            c = RawClient(port)
            hdr = f"Cookie: {s['cookie']}\r\n" + (f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else "")
            answered.add(c.handshake(f"/ws?session={s['session']}", extra_headers=hdr)
                         .headers.get("sec-websocket-extensions", ""))
            socks.append(c)
        time.sleep(0.5)
        rss1 = rss(proc.pid)
        inflaters = [zlib.decompressobj(wbits=-15) for _ in socks]
        wire = 0

        def push_round(rnd: int) -> None:
            nonlocal wire
            pushes = [{"context": 1, "user": u, "message": push_payload(u, rnd)} for u in range(n)]
            for i in range(0, n, 500):  # axum's 2 MB body limit
                api(admin, "POST", "/v1/push/batch", {"pushes": pushes[i:i + 500]})
            for u, c in enumerate(socks):
                fin, rsv, op, payload = c.read_frame()
                assert fin and op == OP_TEXT
                wire += len(payload)
                text = inflaters[u].decompress(payload + b"\x00\x00\xff\xff").decode() if rsv & 4 \
                    else payload.decode()
                assert text == push_payload(u, rnd), f"user {u} round {rnd}"

        push_round(0)
        time.sleep(1.0)
        rss2 = rss(proc.pid)
        first_wire = wire / n
        cpu0 = cpu_secs(proc.pid)
        for rnd in range(1, ROUNDS + 1):
            push_round(rnd)
        cpu1 = cpu_secs(proc.pid)
        time.sleep(0.5)
        rss3 = rss(proc.pid)
        for c in socks:
            c.close()
        return {"binary": binary, "mode": ("deflate" if offer else "plain") + (f", {extra}" if extra else ""),
                "conns": n, "answered": sorted(answered),
                "rss_per_conn_connected_B": round((rss1 - rss0) / n),
                "rss_per_conn_after_push_idle_B": round((rss2 - rss0) / n),
                "rss_per_conn_after_rounds_B": round((rss3 - rss0) / n),
                "cpu_us_per_push": round((cpu1 - cpu0) / (n * ROUNDS) * 1e6, 1),
                "wire_B_first_push": round(first_wire),
                "wire_B_later_push": round((wire - first_wire * n) / (n * ROUNDS))}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=2000)
    ap.add_argument("--old", required=True, help="the binary before the change")
    ap.add_argument("--new", default=str(ROOT / "target" / "release" / "ringwire"))
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringwire-deflatebench-") as d:
        for _ in range(a.reps):
            for label, binary, modes in (
                ("old", a.old, [(None, ""), (CHROMIUM_OFFER, "")]),
                ("new", a.new, [(None, ""), (CHROMIUM_OFFER, ""), (CHROMIUM_OFFER, "context_takeover = true")]),
            ):
                for offer, extra in modes:
                    r = one_pass(binary, a.n, offer, extra, Path(d))
                    r["binary"] = label
                    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
