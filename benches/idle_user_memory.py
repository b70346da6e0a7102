"""Server memory per idle authenticated connection, by kind of user id: N users, one session and
one idle raw WebSocket each; the server's RSS before the connections (sessions minted) and
after they are all open and idle. Not run by CI.

    cargo build --release
    tests/.venv/bin/python benches/idle_user_memory.py --connections 19000 \
        --bin main=/path/to/old/ringwire --bin branch=target/release/ringwire \
        --ids num,short,uuid --rounds 2

Each (binary, ids) pass starts its own server (`server.cores` sized so that no ring's table
holds more than ~10,000 descriptors, each holds at most 20,000), mints N sessions through the
admin API, opens the N sockets from worker processes (raw sockets, each process < 20,000
descriptors), waits until they are idle, and prints one JSON line: bytes of server RSS per
connection (after - before) / N. The passes alternate binaries and kinds round after round,
so that they are measured side by side in one run. Ids: `num` = 0..N-1, `short` = 8-character
strings (`u0000042`), `uuid` = 36-character UUIDs. A binary that does not take string ids
(before issue 15) is measured with `num` only.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_WORKER = 9_500
PER_CORE = 10_000


def user_ids(kind: str, n: int) -> list:
    if kind == "num":
        return list(range(n))
    if kind == "short":
        return [f"u{i:07d}" for i in range(n)]
    if kind == "uuid":
        return [str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15 + 1) % (1 << 128))) for i in range(n)]
    raise SystemExit(f"unknown --ids kind {kind!r}: num, short or uuid")


def rss(pid: int) -> int:
    """Resident bytes of process `pid` (/proc/PID/statm: pages)."""
    resident = Path(f"/proc/{pid}/statm").read_text().split()[1]
    return int(resident) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mint_all(admin_port: int, users: list) -> list[tuple[str, str]]:
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    for u in users:
        body = json.dumps({"context": 1, "user": u, "ttl_secs": 3600})
        for attempt in range(3):
            try:
                conn.request("POST", "/v1/sessions", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
                if attempt == 2:
                    raise
        if r.status != 201:
            raise SystemExit(f"POST /v1/sessions user={u!r}: {r.status} {data[:200]!r}")
        s = json.loads(data)
        out.append((s["session"], s["cookie"]))
    conn.close()
    return out


def worker(port: int, sessions: list, ready, done) -> None:
    """Open one raw WebSocket per session, report how many opened, hold them until `done`."""
    key = base64.b64encode(os.urandom(16)).decode()
    socks = []
    for sid, cookie in sessions:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall((f"GET /ws?session={sid} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Cookie: {cookie}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            ready.put(("error", head[:200].decode("latin-1")))
            return
        socks.append(s)
    ready.put(("ok", len(socks)))
    done.wait(600)
    for s in socks:
        s.close()


def one_pass(binary: str, kind: str, n: int, tmp: Path) -> dict:
    port, admin = free_port(), free_port()
    cores = max(1, math.ceil(n / PER_CORE))
    cfg = tmp / f"{kind}-{port}.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\ncores = {cores}\ndrain_secs = 0\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[sessions]\nkey = "{"ab" * 32}"\n'
        f'[limits]\nupgrade_rate_per_sec = 0\n'
        f'[[endpoints]]\npath = "/ws"\nkind = "raw"\n')
    proc = subprocess.Popen([binary, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", admin), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{binary} did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
                time.sleep(0.05)
        sessions = mint_all(admin, user_ids(kind, n))
        time.sleep(0.5)
        before = rss(proc.pid)
        ready, done = mp.Queue(), mp.Event()
        chunks = [sessions[i:i + PER_WORKER] for i in range(0, n, PER_WORKER)]
        t0 = time.monotonic()
        workers = [mp.Process(target=worker, args=(port, c, ready, done), daemon=True) for c in chunks]
        for w in workers:
            w.start()
        opened = 0
        for _ in workers:
            status, what = ready.get(timeout=300)
            if status != "ok":
                raise SystemExit(f"upgrade refused: {what}")
            opened += what
        connect_s = time.monotonic() - t0
        time.sleep(2.0)  # idle: no buffer held by any socket
        after = rss(proc.pid)
        done.set()
        for w in workers:
            w.join(30)
        return {"binary": binary, "ids": kind, "connections": opened,
                "cores": cores, "rss_before_MiB": round(before / 2**20, 1), "rss_after_MiB": round(after / 2**20, 1),
                "bytes_per_connection": round((after - before) / opened), "connect_s": round(connect_s, 1)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def takes_string_ids(binary: str, tmp: Path) -> bool:
    """Does `binary` mint a session for a string user (issue 15)?"""
    port, admin = free_port(), free_port()
    cfg = tmp / f"probe-{port}.toml"
    cfg.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ncores = 1\ndrain_secs = 0\n'
                   f'[admin]\nlisten = "127.0.0.1:{admin}"\n[[endpoints]]\npath = "/ws"\nkind = "raw"\n')
    proc = subprocess.Popen([binary, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
                c.request("POST", "/v1/sessions", body=json.dumps({"context": 1, "user": "probe", "ttl_secs": 60}))
                return c.getresponse().status == 201
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{binary} did not start")
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", default=[],
                    help="NAME=PATH of a ringwire binary (repeatable; default: target/release/ringwire)")
    ap.add_argument("--connections", type=int, default=19_000)
    ap.add_argument("--ids", default="num,short,uuid", help="comma-separated: num, short, uuid")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    bins = [b.split("=", 1) if "=" in b else (Path(b).name, b) for b in args.bin] or \
        [("branch", str(ROOT / "target" / "release" / "ringwire"))]
    kinds = args.ids.split(",")
    with tempfile.TemporaryDirectory(prefix="ringwire-idle-") as d:
        tmp = Path(d)
        strings = {name: takes_string_ids(path, tmp) for name, path in bins}
        results: dict = {}
        for r in range(args.rounds):
            for kind in kinds:
                for name, path in bins:
                    if kind != "num" and not strings[name]:
                        continue
                    res = one_pass(path, kind, args.connections, tmp)
                    res["binary"] = name
                    res["round"] = r + 1
                    print(json.dumps(res), flush=True)
                    results.setdefault((name, kind), []).append(res["bytes_per_connection"])
        print("\n| binary | ids | bytes per idle connection (each round) |")
        print("| --- | --- | --- |")
        for (name, kind), v in results.items():
            print(f"| {name} | {kind} | {', '.join(f'{x:,}' for x in v)} |")


if __name__ == "__main__":
    if sys.platform != "linux":
        raise SystemExit("Linux only (reads /proc)")
    main()
