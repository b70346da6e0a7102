"""Idle connections over ws:// and wss:// side by side: server RSS per connection, connect
rate, and push round trip (admin push -> frame received) for N users each, two alternating
repetitions. Not run by CI.

    cargo build --release && tests/.venv/bin/python benches/tls/mem.py 5000

Prints one JSON line per pass. The connect rate is bounded by the Python client's own TLS
handshakes; RSS per connection and the push round trip are the numbers to compare.
"""
import asyncio, json, ssl, subprocess, sys, tempfile, time, urllib.request, os
from pathlib import Path
import websockets
ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("RINGWIRE_BIN", str(ROOT / "target" / "release" / "ringwire"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
D = tempfile.mkdtemp(prefix="ringwire-tlsbench-")
subprocess.run([BIN, "cluster", "certs", "--out", f"{D}/c", "127.0.0.1"], check=True, capture_output=True)
def cfg(port, tls):
    t = f'[tls]\ncert = "{D}/c/127.0.0.1.pem"\nkey = "{D}/c/127.0.0.1.key"\n' if tls else ""
    p = f"{D}/{'tls' if tls else 'plain'}.toml"
    open(p, "w").write(f'[server]\nlisten = "127.0.0.1:{port}"\ncores = 2\ndrain_secs = 0\n[admin]\nlisten = "127.0.0.1:{port+1}"\n[limits]\nmax_sockets_per_user = 100\nupgrade_rate_per_sec = 100000\n[[endpoints]]\npath = "/ws"\nkind = "raw"\n{t}')
    return p
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) * 1024
def api(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port+1}{path}", method=method, data=json.dumps(body).encode() if body else None)
    with urllib.request.urlopen(req, timeout=10) as r: return json.loads(r.read() or b"null")
async def run(tls, port):
    proc = subprocess.Popen([BIN, "serve", "--config", cfg(port, tls)], stderr=subprocess.DEVNULL)
    time.sleep(0.8)
    ctx = ssl.create_default_context(cafile=f"{D}/c/ca.pem") if tls else None
    scheme = "wss" if tls else "ws"
    sessions = [api(port, "POST", "/v1/sessions", {"context": 1, "user": u, "ttl_secs": 600}) for u in range(N)]
    base = rss(proc.pid)
    t0 = time.monotonic()
    sem = asyncio.Semaphore(200)
    async def one(s):
        async with sem:
            return await websockets.connect(f"{scheme}://127.0.0.1:{port}/ws?session={s['session']}", ssl=ctx,
                                            additional_headers={"Cookie": s["cookie"]}, open_timeout=30, compression=None)
    conns = await asyncio.gather(*[one(s) for s in sessions])
    dt = time.monotonic() - t0
    await asyncio.sleep(1.0)
    per = (rss(proc.pid) - base) / N
    lat = []
    for u in range(0, N, max(1, N // 500)):
        t = time.monotonic()
        await asyncio.to_thread(api, port, "POST", "/v1/push", {"context": 1, "user": u, "message": "x" * 100})
        await conns[u].recv()
        lat.append((time.monotonic() - t) * 1000)
    for c in conns: await c.close()
    proc.terminate(); proc.wait()
    lat.sort()
    return {"scheme": scheme, "conns": N, "connect_per_s": round(N / dt), "rss_per_conn_B": round(per),
            "push_rtt_p50_ms": round(lat[len(lat)//2], 2), "push_rtt_p99_ms": round(lat[int(len(lat)*0.99)], 2)}
async def main():
    for r in range(2):
        for tls in (False, True):
            print(json.dumps(await run(tls, 19600 + 10 * tls)), flush=True)
try:
    asyncio.run(main())
finally:
    import shutil
    shutil.rmtree(D, ignore_errors=True)
