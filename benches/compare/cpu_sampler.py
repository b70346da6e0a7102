#!/usr/bin/env python3
"""Samples CPU time every 500 ms while a load runs, so table.py can tell how many cores the
server, the load tester and the whole machine used during the load tester's hold window
(connect and close phases left out).

    cpu_sampler.py SERVER_PID CLIENT_PID OUT.jsonl

One JSON line per sample: {"t": unix seconds, "server": ticks, "server_rss_kb": kB,
"client": ticks, "busy": ticks, "total": ticks}. server/client = utime+stime of that PID and all its
descendants (node:cluster workers, load-tester workers) that are alive at the sample; busy and
total are the whole machine's /proc/stat jiffies (busy = all but idle and iowait). Ticks are
clock ticks (os.sysconf("SC_CLK_TCK") per second). Exits when CLIENT_PID is gone.
"""
import json
import os
import sys
import time


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def tree_ticks(pid, kids):
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        # fields 14 and 15 of stat (utime, stime) are rest[11], rest[12]
        total += int(rest[11]) + int(rest[12])
        todo.extend(kids.get(p, []))
    return total


def tree_rss_kb(pid, kids):
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        todo.extend(kids.get(p, []))
    return total


def machine():
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - vals[3] - vals[4], total


def main():
    server, client, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    n = 0
    with open(out, "w") as f:
        while True:
            # Scanning /proc for descendants is the costly part: redo it every 2 s only
            # (the load tester starts its workers at once, node:cluster forks at start).
            if n % 4 == 0:
                kids = children_map()
            n += 1
            busy, total = machine()
            alive = os.path.exists(f"/proc/{client}")
            rec = {
                "t": time.time(),
                "server": tree_ticks(server, kids),
                "server_rss_kb": tree_rss_kb(server, kids),
                "client": tree_ticks(client, kids) if alive else None,
                "busy": busy,
                "total": total,
            }
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if not alive:
                return
            time.sleep(0.5)


if __name__ == "__main__":
    main()
