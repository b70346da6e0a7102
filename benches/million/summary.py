#!/usr/bin/env python3
"""One line per figure of a million-run report (ringwire-loadtest --report JSON).

    python3 benches/million/summary.py report-1000000.json
"""
import json
import sys


def main(path: str) -> None:
    rep = json.load(open(path))
    c = rep["connections"]
    mem = rep.get("memory") or {}
    auth = rep.get("auth") or {}
    push = rep.get("push") or {}
    lat = push.get("latency_us") or {}
    workers = rep.get("workers") or []
    n = c.get("open_at_all_up") or c["connected"]
    client_rss = sum(w.get("self_peak_rss_bytes") or 0 for w in workers)

    def f(x, fmt="{:.0f}"):
        return "n/a" if x is None else fmt.format(x)

    print(f"connections          {c['connected']} of {c['requested']} connected, "
          f"{c['failed']} failed {c.get('failed_by_kind') or ''}, {c.get('dropped', 0)} dropped")
    print(f"sessions minted      {auth.get('sessions_minted')} in {f(auth.get('mint_seconds'), '{:.1f}')} s")
    print(f"time to connect all  {f(rep.get('time_to_connect_all_s'), '{:.1f}')} s "
          f"({f(rep.get('connect_rate_per_s'))}/s)")
    print(f"server RSS           before {f((mem.get('rss_before_bytes') or 0) / 2**20, '{:.0f}')} MiB, "
          f"all up {f((mem.get('rss_all_up_bytes') or 0) / 2**20, '{:.0f}')} MiB: "
          f"{f(mem.get('rss_bytes_per_connection'))} B per connection")
    print(f"kernel slab          {f(mem.get('approx_kernel_bytes_per_connection_both_ends'))} B per "
          f"connection, both ends ({f(((mem.get('slab_all_up_bytes') or 0) - (mem.get('slab_before_bytes') or 0)) / 2**30, '{:.2f}')} GiB)")
    print(f"load tester          {len(workers)} workers, peak RSS {client_rss / 2**20:.0f} MiB in all: "
          f"{client_rss / max(n, 1):.0f} B per connection (fixed costs included)")
    print(f"pushes               {push.get('messages_received')} of {push.get('messages_expected')} "
          f"received, {push.get('missing')} missing; accepted {push.get('pushes_accepted')} in "
          f"{push.get('requests_ok')}/{push.get('requests')} requests")
    print(f"all received after   {f(push.get('all_delivered_s'), '{:.2f}')} s; end-to-end "
          f"p50 {f((lat.get('p50_us') or 0) / 1000, '{:.0f}')} ms, p99 {f((lat.get('p99_us') or 0) / 1000, '{:.0f}')} ms, "
          f"max {f((lat.get('max_us') or 0) / 1000, '{:.0f}')} ms")
    cpu = rep.get("host_cpu") or {}
    print(f"host cpu             busy {f(cpu.get('busy_pct_mean'))} % mean; outcome "
          f"completed={rep['outcome'].get('completed')} deadline_hit={rep['outcome'].get('deadline_hit')}")


if __name__ == "__main__":
    main(sys.argv[1])
