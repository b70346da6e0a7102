#!/usr/bin/env python3
"""Small helpers for benches/cluster/run.sh and modes.sh (standard library only).

  probe.py free-port IP ...                        a port P with TCP P, P+1 and UDP P+2 free on
                                                   every IP

  probe.py snap OUT.json SELF HOLD NAME=ADMIN_URL@PID ...   both nodes' /v1/stats and CPU
                                                   ticks, the machine's busy ticks, and the ticks
                                                   of SELF (the script, with its reaped children:
                                                   the load tester) and of the HOLD process tree
  probe.py wait-link ADMIN_URL SECS                until the node's link to its peer is up
  probe.py wait-sockets ADMIN_URL N SECS [ge|le]   until the node holds >= N (or <= N) sockets
  probe.py wait-presence ADMIN_URL N SECS          until the node's directory has >= N entries
  probe.py watch OUT.json NAME=ADMIN_URL ...        every 0.5 s until SIGTERM: peak sockets per
                                                   node, link states seen, connects
  probe.py push-identical ADMIN_URL CONTEXT USERS COPIES   one /v1/push/batch with COPIES
                                                   identical pushes (coalesce on) for each of
                                                   users 1..USERS; prints the answer
"""
import json
import os
import random
import signal
import socket
import sys
import time
import urllib.request


def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post(url, body, timeout=10.0):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def free(ip, port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def stats(admin):
    return get(admin.rstrip("/") + "/v1/stats")


def cpu_ticks(pid):
    """utime + stime of every thread of PID, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def proc_ticks(pid, children=False):
    """utime + stime (+ cutime + cstime: reaped children) of PID, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        t = int(fields[11]) + int(fields[12])
        return t + int(fields[13]) + int(fields[14]) if children else t
    except (OSError, ValueError, IndexError):
        return 0


def tree_ticks(root):
    """CPU ticks of ROOT and every live descendant (each with its reaped children)."""
    if not root:
        return 0
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [int(root)]
    while todo:
        p = todo.pop()
        total += proc_ticks(p, children=True)
        todo.extend(kids.get(p, []))
    return total


def machine_busy_ticks():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return sum(v) - v[3] - v[4]  # minus idle and iowait


def parse_nodes(args):
    nodes = {}
    for a in args:
        name, rest = a.split("=", 1)
        url, _, pid = rest.partition("@")
        nodes[name] = (url, pid or None)
    return nodes


def until(pred, secs):
    deadline = time.time() + secs
    last = None
    while time.time() < deadline:
        try:
            ok, last = pred()
            if ok:
                return 0, last
        except Exception as e:  # not listening yet
            last = str(e)
        time.sleep(0.25)
    return 1, last


def main():
    cmd = sys.argv[1]
    if cmd == "snap":
        out, me, hold = sys.argv[2], sys.argv[3], sys.argv[4]
        snap = {
            "t": time.time(),
            "hz": os.sysconf("SC_CLK_TCK"),
            "machine_busy_ticks": machine_busy_ticks(),
            "self_ticks": proc_ticks(me, children=True),
            "hold_ticks": tree_ticks(hold if hold != "-" else None),
            "nodes": {},
        }
        for name, (url, pid) in parse_nodes(sys.argv[5:]).items():
            snap["nodes"][name] = {
                "stats": stats(url),
                "cpu_ticks": cpu_ticks(pid) if pid else None,
            }
        with open(out, "w") as f:
            json.dump(snap, f)
    elif cmd == "free-port":
        # A port P such that TCP P and P+1 and UDP P+2 are free on every address given; below
        # the ephemeral range, so no outgoing connection can hold it.
        ips = sys.argv[2:]
        for _ in range(1000):
            p = random.randrange(20000, 29990, 3)
            if all(free(ip, p, socket.SOCK_STREAM) and free(ip, p + 1, socket.SOCK_STREAM)
                   and free(ip, p + 2, socket.SOCK_DGRAM) for ip in ips):
                print(p)
                return
        sys.exit("no free port")
    elif cmd == "wait-link":
        url, secs = sys.argv[2], float(sys.argv[3])
        rc, last = until(
            lambda: (
                (lambda s: (all(l["state"] == "up" for l in s["cluster"]["links"]), s["cluster"]["links"]))(stats(url))
            ),
            secs,
        )
        if rc:
            print(f"link not up at {url}: {last}", file=sys.stderr)
        sys.exit(rc)
    elif cmd == "wait-sockets":
        url, n, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        op = sys.argv[5] if len(sys.argv) > 5 else "ge"
        cmp = (lambda x: x >= n) if op == "ge" else (lambda x: x <= n)
        rc, last = until(lambda: (lambda s: (cmp(s), s))(stats(url)["sockets"]), secs)
        if rc:
            print(f"{url}: {last} sockets, wanted {op} {n}", file=sys.stderr)
        print(last)
        sys.exit(rc)
    elif cmd == "wait-presence":
        url, n, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        rc, last = until(
            lambda: (lambda p: (p >= n, p))(stats(url)["cluster"]["presence_entries"]), secs
        )
        if rc:
            print(f"{url}: {last} presence entries, wanted >= {n}", file=sys.stderr)
        print(last)
        sys.exit(rc)
    elif cmd == "watch":
        out = sys.argv[2]
        nodes = parse_nodes(sys.argv[3:])
        seen = {n: {"max_sockets": 0, "min_sockets": None, "link_states": [], "errors": 0} for n in nodes}
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        while not stop:
            for name, (url, _) in nodes.items():
                w = seen[name]
                try:
                    s = stats(url)
                except Exception:
                    w["errors"] += 1
                    continue
                w["max_sockets"] = max(w["max_sockets"], s["sockets"])
                w["min_sockets"] = s["sockets"] if w["min_sockets"] is None else min(w["min_sockets"], s["sockets"])
                for l in s["cluster"]["links"]:
                    st = f'{l["node"]}:{l["state"]}:{l["connects"]}'
                    if st not in w["link_states"]:
                        w["link_states"].append(st)
            time.sleep(0.5)
        with open(out, "w") as f:
            json.dump(seen, f)
    elif cmd == "push-identical":
        url, context, users, copies = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        pushes = [
            {"context": context, "user": u, "path": "/ws", "message": f"identical text for user {u}", "coalesce": True}
            for u in range(1, users + 1)
            for _ in range(copies)
        ]
        status, body = post(url.rstrip("/") + "/v1/push/batch", {"pushes": pushes})
        print(json.dumps({"status": status, **body}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
