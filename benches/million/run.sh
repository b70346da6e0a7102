#!/usr/bin/env bash
# One million concurrent authenticated connections on one node (issue 18), load tester on the
# same machine, then one push to every user. See README.md beside this file for the method
# and the results.
#
#   benches/million/run.sh                   # 200000, then 500000, then 1000000
#   SCALES="200000" benches/million/run.sh   # one scale
#
# For each scale it starts a fresh ringwire (CORES rings, unpinned, small receive-buffer
# pools), runs `ringwire-loadtest --auth session --scenario push --push-mode fanout` with one
# fan-out event (one push to each of the N users, in batches of 10,000), and prints: time to
# mint and to connect all, server user-space RSS per connection, kernel slab per connection
# (both ends, /proc/meminfo Slab delta), and the time until every push was received.
# Between scales it stops if the next one would not fit in memory (MEM_LIMIT_GB).
#
# Environment knobs (defaults in brackets):
#   SCALES        connection counts, run in order ["200000 500000 1000000"]
#   CORES         server.cores: rings, each with its own fixed-file table of RLIMIT_NOFILE
#                 (20,000) slots; 64 spreads users 1..1M evenly (15,625 per core) [64]
#   PIN           server.pin_threads [false]
#   RECV_BUFFERS  engine.recv_buffers per core (x 16 KiB, all touched once every buffer has
#                 been used: 1024 (the default) x 64 cores = 1 GiB) [64]
#   PING_SECS     limits.ping_interval_secs, at most 90 (idle_timeout_secs = 3x) ["" = server
#                 default, 25; at 1M on 2 CPUs the 40,000 ping round trips a second starve the
#                 run (README.md): use 90]
#   BASE_PORT     public listener; admin = BASE_PORT + 1 [18400]
#   MEM_LIMIT_GB  do not start a scale whose estimate (14 KB per connection) plus the memory
#                 in use exceeds this [20]
#   RINGWIRE, LOADTEST  the binaries [target-new/release/..., else target/release/...]
#   OUT           directory for config, logs and reports [mktemp -d]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
: "${SCALES:=200000 500000 1000000}" "${CORES:=64}" "${PIN:=false}" "${RECV_BUFFERS:=64}"
: "${PING_SECS=}" "${BASE_PORT:=18400}" "${MEM_LIMIT_GB:=20}"
pick() { if [ -x "$ROOT/target-new/release/$1" ]; then echo "$ROOT/target-new/release/$1"; else echo "$ROOT/target/release/$1"; fi; }
RINGWIRE="${RINGWIRE:-$(pick ringwire)}"
LOADTEST="${LOADTEST:-$(pick ringwire-loadtest)}"
OUT="${OUT:-$(mktemp -d /tmp/ringwire-million.XXXXXX)}"
mkdir -p "$OUT"
echo "output in $OUT; ringwire $RINGWIRE; loadtest $LOADTEST"

# Host settings a million sockets need (root). Nothing is restored: each only raises a limit.
sysctl_min() { # key value: raise to at least value (single-valued keys)
    local cur
    cur="$(sysctl -n "$1" 2>/dev/null || echo)"
    [ -z "$cur" ] && return 0
    if [ "$cur" -lt "$2" ]; then sysctl -qw "$1=$2" && echo "sysctl $1: $cur -> $2"; fi
}
sysctl_min fs.file-max 4000000            # client fds + the server's direct descriptors
sysctl_min fs.nr_open 1048576
sysctl_min net.core.somaxconn 4096
sysctl_min net.ipv4.tcp_max_syn_backlog 4096
sysctl_min net.netfilter.nf_conntrack_max 2100000 # only if the module is loaded
read -r _ _ tcp_mem_high < /proc/sys/net/ipv4/tcp_mem
if [ "$tcp_mem_high" -lt 2000000 ]; then # pages; 1M sockets with a push queued each
    sysctl -qw net.ipv4.tcp_mem="1000000 1500000 2000000" && echo "sysctl net.ipv4.tcp_mem -> 1000000 1500000 2000000"
fi
# Ephemeral ports: the default range (about 28k per source address and destination) is
# kept; the load tester spreads over 127.0.0.1..127.0.0.k, k = N / 20000 + 1.
echo "ip_local_port_range: $(cat /proc/sys/net/ipv4/ip_local_port_range); RLIMIT_NOFILE hard: $(ulimit -Hn)"

cat > "$OUT/ringwire.toml" <<EOF
[server]
listen = "127.0.0.1:$BASE_PORT"
cores = $CORES
pin_threads = $PIN
[admin]
listen = "127.0.0.1:$((BASE_PORT + 1))"
[engine]
recv_buffers = $RECV_BUFFERS
[[endpoints]]
path = "/ws"
kind = "raw"
EOF
if [ -n "$PING_SECS" ]; then
    printf '[limits]\nping_interval_secs = %s\nidle_timeout_secs = %s\n' \
        "$PING_SECS" "$((PING_SECS * 3))" >> "$OUT/ringwire.toml"
fi

SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"
        for _ in $(seq 1 120); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

for n in $SCALES; do
    used_kb=$(awk '/MemTotal/{t=$2} /MemAvailable/{a=$2} END{print t-a}' /proc/meminfo)
    need_kb=$((n * 14))
    if [ $(((used_kb + need_kb) / 1048576)) -ge "$MEM_LIMIT_GB" ]; then
        echo "STOP before $n: $((used_kb / 1024)) MiB in use + ~$((need_kb / 1024)) MiB estimated > ${MEM_LIMIT_GB} GiB"
        break
    fi
    echo "=== $n connections ==="
    "$RINGWIRE" serve --config "$OUT/ringwire.toml" > "$OUT/server-$n.log" 2>&1 &
    SERVER_PID=$!
    ready=0
    for _ in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$((BASE_PORT + 1))/readyz" > /dev/null 2>&1; then ready=1; break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ready" -ne 1 ]; then
        echo "STOP: ringwire is not ready:"; tail -5 "$OUT/server-$n.log"; break
    fi
    rc=0
    "$LOADTEST" --url "ws://127.0.0.1:$BASE_PORT/ws" --admin-url "http://127.0.0.1:$((BASE_PORT + 1))" \
        --auth session --scenario push --push-mode fanout --push-rate 1 --duration 1 \
        --batch-size 10000 --connections "$n" --server-pid "$SERVER_PID" \
        --connect-timeout-ms 30000 --drain-timeout-ms 120000 --max-missing 0 \
        --quiet --report "$OUT/report-$n.json" --plot "$OUT/plot-$n.svg" \
        > "$OUT/loadtest-$n.txt" 2>&1 || rc=$?
    cat "$OUT/loadtest-$n.txt"
    free -m
    python3 "$HERE/summary.py" "$OUT/report-$n.json" | tee "$OUT/summary-$n.txt"
    stop_server
    if [ "$rc" -ne 0 ]; then
        echo "STOP: the load tester exited $rc at $n connections"
        break
    fi
    sleep 5
done
