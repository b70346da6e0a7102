#!/usr/bin/env python3
"""Tables for benches/cluster/run.sh, from its results.jsonl (standard library only).

  table.py RESULTS.jsonl            the markdown tables
  table.py --verdict REPORT RATE USERS   one rate step: "keep" (0 missing, no HTTP error, every
                                    client connected, >= 95 % of the offered rate accepted, <= 1 %
                                    of the requests late by more than 100 ms) or why not
  table.py --line REPORT            a one-line summary of a loadtest report (for the log)
  table.py --noise PRE POST         CPUs used by other processes between two probe snapshots
"""
import json
import statistics
import sys

KEEP = 0.95  # share of the offered rate that must be accepted
LATE = 0.01  # share of the requests that may leave more than 100 ms after their schedule
NOISE = 0.3  # other processes' CPUs during a run above which it is flagged


def load(path):
    with open(path) as f:
        return json.load(f)


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f}"


def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}"


def push(rep):
    return rep.get("push") or {}


def lat(rep):
    return push(rep).get("latency_us") or {}


def connected(rep):
    return (rep.get("connections") or {}).get("connected", 0)


def verdict(rep, rate, users=None):
    p = push(rep)
    if not p:
        return "no push report"
    why = []
    if p.get("missing", 0) > 0:
        why.append(f"{p['missing']} missing")
    if p.get("http_errors", 0) > 0:
        why.append(f"{p['http_errors']} HTTP errors")
    if users is not None and connected(rep) < users:
        why.append(f"{connected(rep)} of {users} connected")
    if p.get("pushes_accepted_per_s", 0) < KEEP * rate:
        why.append(f"rate not kept ({p.get('pushes_accepted_per_s', 0):,.0f}/s accepted)")
    elif p.get("late_requests", 0) > LATE * max(1, p.get("requests", 0)):
        why.append(f"driver fell behind ({p['late_requests']:,} of {p.get('requests', 0):,} requests late)")
    return "keep" if not why else "; ".join(why)


def text_bytes(n):
    """Total bytes of the texts of pushes 0..n-1: {"seq":S,"ts":<19 digits>} = 33 + digits(S)."""
    total, lo, d = 0, 0, 1
    while lo < n:
        hi = min(n, 10**d)
        total += (hi - lo) * (33 + d)
        lo, d = hi, d + 1
    return total


def link_delta(r, node="a"):
    pre, post = load(r["pre"]), load(r["post"])
    la = pre["nodes"][node]["stats"]["cluster"]
    lb = post["nodes"][node]["stats"]["cluster"]
    d = {k: lb["links"][0][k] - la["links"][0][k] for k in ("bytes_sent", "messages_sent", "writes", "dropped", "connects")}
    d.update({"remote_" + k: lb["remote"][k] - la["remote"][k] for k in la["remote"]})
    d["link_up"] = all(l["state"] == "up" for l in lb["links"])
    return d


def other_cpu(r):
    """CPUs (average) used during the run by everything that is not ours: the machine's busy
    time minus both nodes, the idle holder, this script and the load tester (kernel threads
    such as ksoftirqd count as other)."""
    try:
        pre, post = load(r["pre"]), load(r["post"])
        dt = post["t"] - pre["t"]
        ours = sum((post["nodes"][n]["cpu_ticks"] or 0) - (pre["nodes"][n]["cpu_ticks"] or 0) for n in post["nodes"])
        ours += post["self_ticks"] - pre["self_ticks"] + max(0, post["hold_ticks"] - pre["hold_ticks"])
        busy = post["machine_busy_ticks"] - pre["machine_busy_ticks"]
        return max(0.0, (busy - ours) / post["hz"] / dt)
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return None


def fmt_other(r):
    x = other_cpu(r)
    return "-" if x is None else f"{x:.2f}" + (" **noisy**" if x > NOISE else "")


def watch(r):
    try:
        return load(r["watch"])
    except (OSError, ValueError, KeyError):
        return {}


def peak_sockets(r):
    w = watch(r)
    if not w:
        return "-"
    return " / ".join(f"{w.get(n, {}).get('max_sockets', 0):,}" for n in ("a", "b"))


def tables(results_path):
    runs = [json.loads(l) for l in open(results_path) if l.strip()]
    for r in runs:
        r["rep_data"] = load(r["report"]) if r.get("report") else None
    out = []
    w = out.append
    users = runs[0].get("users") if runs else None

    # ---------------------------------------------------------------- latency
    latr = [r for r in runs if r["group"] == "latency"]
    if latr:
        w("### 1. End-to-end push latency, coalescing off (`\"coalesce\": false`)\n")
        w("Pushes always go through node A's admin API. *cross*: the clients are on node B (A holds "
          f"{users:,} idle users of another context); *same*: the clients are on A (B holds the idle users). "
          "Latency: coordinator's clock right before the HTTP request -> frame read by the client. "
          f"*other CPU*: CPUs used during the run by processes that are not part of the benchmark "
          f"(kernel threads included; flagged above {NOISE}).\n")
        w("| pushes/s x batch | path | rep | sockets A / B (peak) | connected | delivered / expected | missing | A->B link msgs | pushes/s achieved | p50 ms | p99 ms | p99.9 ms | max ms | other CPU |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in sorted(latr, key=lambda r: (-r["rate"], r["batch"], r["mode"], r["rep"])):
            rep, p, l = r["rep_data"], push(r["rep_data"]), lat(r["rep_data"])
            d = link_delta(r)
            w(f"| {r['rate']:,} x {r['batch']} | {r['mode']} | {r['rep']} | {peak_sockets(r)} | "
              f"{connected(rep):,} | {p.get('messages_received', 0):,} / {p.get('messages_expected', 0):,} | "
              f"{p.get('missing', '-')} | {d['messages_sent']:,} | {fmt_rate(p.get('pushes_accepted_per_s'))} | "
              f"{ms(l.get('p50_us'))} | {ms(l.get('p99_us'))} | {ms(l.get('p999_us'))} | {ms(l.get('max_us'))} | {fmt_other(r)} |")
        w("")
        w("| pushes/s x batch | p50 cross / same | p99 cross / same | p99.9 cross / same | (medians over reps) |")
        w("| --- | --- | --- | --- | --- |")
        settings = sorted({(r["rate"], r["batch"]) for r in latr}, key=lambda s: (-s[0], s[1]))
        for rate, batch in settings:
            cells = []
            for key in ("p50_us", "p99_us", "p999_us"):
                med = {}
                for mode in ("cross", "same"):
                    vals = [lat(r["rep_data"]).get(key) for r in latr
                            if (r["rate"], r["batch"], r["mode"]) == (rate, batch, mode)]
                    vals = [v for v in vals if v is not None]
                    med[mode] = statistics.median(vals) if vals else None
                if med["cross"] and med["same"]:
                    cells.append(f"{ms(med['cross'])} / {ms(med['same'])} ms = **{med['cross'] / med['same']:.2f}x**")
                else:
                    cells.append("-")
            n = len({r["rep"] for r in latr})
            w(f"| {rate:,} x {batch} | {cells[0]} | {cells[1]} | {cells[2]} | {n} rep(s) |")
        w("")

    # ---------------------------------------------------------------- throughput
    stepr = [r for r in runs if r["group"] == "rate"]
    if stepr:
        w("### 2. Push throughput, coalescing off, batches of "
          f"{stepr[0]['batch']} (offered rate stepped up until it is not kept)\n")
        w("| path | offered pushes/s | accepted /s | delivered /s (avg) | late requests | delivered / expected | missing | A->B msgs / write | p50 ms | p99 ms | other CPU | verdict |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in sorted(stepr, key=lambda r: (r["mode"], r["rate"])):
            rep, p, l = r["rep_data"], push(r["rep_data"]), lat(r["rep_data"])
            d = link_delta(r)
            mpw = f"{d['messages_sent'] / d['writes']:.0f}" if d["writes"] and r["mode"] == "cross" else "-"
            w(f"| {r['mode']} | {r['rate']:,} | {fmt_rate(p.get('pushes_accepted_per_s'))} | "
              f"{fmt_rate(p.get('delivery_rate_per_s'))} | {p.get('late_requests', '-'):,} | "
              f"{p.get('messages_received', 0):,} / {p.get('messages_expected', 0):,} | {p.get('missing', '-')} | {mpw} | "
              f"{ms(l.get('p50_us'))} | {ms(l.get('p99_us'))} | {fmt_other(r)} | {verdict(rep, r['rate'], users)} |")
        w("")
        best = {}
        for mode in ("cross", "same"):
            rs = [r for r in stepr if r["mode"] == mode]
            kept = [r["rate"] for r in rs if verdict(r["rep_data"], r["rate"], users) == "keep"]
            deliv = [push(r["rep_data"]).get("delivery_rate_per_s") or 0 for r in rs
                     if push(r["rep_data"]).get("missing", 1) == 0 and push(r["rep_data"]).get("http_errors", 1) == 0]
            best[mode] = (max(kept) if kept else None, max(deliv) if deliv else None)
        w("| path | highest offered rate kept (0 missing) | highest delivered rate with 0 missing |")
        w("| --- | --- | --- |")
        for mode in ("cross", "same"):
            k, dmax = best[mode]
            w(f"| {mode} | {fmt_rate(k)} /s | {fmt_rate(dmax)} msg/s |")
        def ratio(i):
            c, s_ = best["cross"][i], best["same"][i]
            return f"**{c / s_:.2f}x**" if c and s_ else "-"

        w(f"| cross / same | {ratio(0)} | {ratio(1)} |")
        w("")

    # ---------------------------------------------------------------- link bytes
    cross = [r for r in runs if r["mode"] == "cross" and r["group"] in ("latency", "rate", "coalesce", "identical")
             and r.get("rep", 1) == 1]
    if cross:
        w("### 3. The A->B link: bytes and writes per push (from A's `/v1/stats` before and after each run)\n")
        w("`bytes_sent` counts the link frames handed to QUIC (no QUIC/UDP/IP headers, no AEAD tags); "
          "`text` is the pushed message itself, so *framing* is the link protocol's cost per push "
          "(17 B of fields per push + 9 B per frame).\n")
        w("| case | pushes/s x batch | coalesce | link msgs | writes | bytes_sent | B / msg | text B / msg | framing B / msg | msgs / write | merged | p50 ms |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

        def case(r):
            if r["group"] == "identical":
                return "(d) coalescing on, identical texts"
            if r.get("coalesce"):
                return "(c) coalescing on (texts differ)"
            return "(a) unbatched" if r["batch"] == 1 else "(b) batched"

        for r in sorted(cross, key=lambda r: (case(r), r["rate"])):
            d = link_delta(r)
            n = d["messages_sent"]
            if r["group"] == "identical":
                pushes = r["pushes"]
                tb = r.get("text_bytes", 0)
                p50 = "-"
                rate = f"1 request: {r['users_pushed']} users x {r['copies']} copies"
            else:
                p = push(r["rep_data"])
                pushes = p.get("pushes_accepted", 0)
                tb = text_bytes(pushes)
                p50 = ms(lat(r["rep_data"]).get("p50_us"))
                rate = f"{r['rate']:,} x {r['batch']}"
            bpm = d["bytes_sent"] / n if n else 0
            tpm = tb / pushes if pushes else 0
            w(f"| {case(r)} | {rate} | {'on' if r.get('coalesce') else 'off'} | {n:,} | {d['writes']:,} | "
              f"{d['bytes_sent']:,} | {bpm:.1f} | {tpm:.1f} | {bpm - tpm:.1f} | "
              f"{(n / d['writes']) if d['writes'] else 0:,.1f} | {d['remote_merged']:,} | {p50} |")
        w("")

    # ---------------------------------------------------------------- health
    bad = []
    for r in runs:
        if r["group"] == "identical":
            continue
        d = link_delta(r)
        p = push(r["rep_data"]) if r["rep_data"] else {}
        probs = []
        if d["connects"]:
            probs.append(f"link re-connected {d['connects']}x")
        if not d["link_up"]:
            probs.append("link down at the end")
        if d["dropped"] or d["remote_dropped"]:
            probs.append(f"dropped: link {d['dropped']}, queues {d['remote_dropped']}")
        if p.get("missing"):
            probs.append(f"{p['missing']} missing")
        if p.get("http_errors"):
            probs.append(f"{p['http_errors']} HTTP errors {p.get('http_errors_by_kind')}")
        if r["mode"] == "cross" and p and p.get("remote_nodes", 0) < p.get("pushes_accepted", 0):
            probs.append(f"only {p.get('remote_nodes')} of {p.get('pushes_accepted')} pushes routed to B")
        if r["rep_data"] and connected(r["rep_data"]) < (users or 0):
            probs.append(f"{connected(r['rep_data'])} connected")
        if r.get("rc", 0) not in (0,):
            probs.append(f"loadtest exit {r['rc']}")
        if probs:
            bad.append(f"- {r['label']}: " + "; ".join(probs))
    retried = [f"{r['label']} ({r['attempt']} tries)" for r in runs if r.get("attempt", 1) > 1]
    noisy = [r["label"] for r in runs if r["group"] != "identical" and (other_cpu(r) or 0) > NOISE]
    w("### Noise\n")
    w(("Run again because other processes were busy during them: " + ", ".join(retried) + ". ") if retried
      else "No run had to be repeated for noise. ")
    w(("Still noisy (other processes above " + str(NOISE) + " CPUs): " + ", ".join(noisy) + ".") if noisy
      else "No kept run is flagged noisy.")
    w("")
    w("### Anomalies\n")
    w("\n".join(bad) if bad else "none: every run had its clients connected, 0 missing, no HTTP error, "
      "no link drop or re-connect, nothing dropped.")
    w("")
    return "\n".join(out)


def line(rep):
    p, l = push(rep), lat(rep)
    return (f"connected {connected(rep):,}, accepted {fmt_rate(p.get('pushes_accepted_per_s'))}/s "
            f"(late {p.get('late_requests')}), delivered {p.get('messages_received', 0):,}/"
            f"{p.get('messages_expected', 0):,} (missing {p.get('missing')}), remote_nodes {p.get('remote_nodes', 0):,}, "
            f"p50/p99/p99.9 {ms(l.get('p50_us'))}/{ms(l.get('p99_us'))}/{ms(l.get('p999_us'))} ms")


def main():
    if sys.argv[1] == "--verdict":
        rep = load(sys.argv[2])
        users = int(sys.argv[4]) if len(sys.argv) > 4 else None
        print(verdict(rep, float(sys.argv[3]), users))
    elif sys.argv[1] == "--noise":
        x = other_cpu({"pre": sys.argv[2], "post": sys.argv[3]})
        print(f"{x:.2f}" if x is not None else "0")
    elif sys.argv[1] == "--line":
        try:
            print(line(load(sys.argv[2])))
        except (OSError, ValueError) as e:
            print(f"no report ({e})")
    else:
        print(tables(sys.argv[1]))


if __name__ == "__main__":
    main()
