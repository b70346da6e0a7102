# Helpers shared by run.sh and push_latency.sh (sourced; ROOT and IDLE_WAIT are the caller's).

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Cargo's target directory: CARGO_TARGET_DIR (relative to ROOT) or ROOT/target.
cargo_target() {
    local t="${CARGO_TARGET_DIR:-target}"
    [[ "$t" == /* ]] || t="$ROOT/$t"
    echo "$t"
}
# `cargo build --release --workspace`: ringwire and ringwire-loadtest. Other people
# edit src/ while this runs: a broken build is retried for 3 minutes.
build_root() {
    local try
    log "building ringwire + ringwire-loadtest (root workspace, release)"
    for try in 1 2 3 4 5 6; do
        if (cd "$ROOT" && cargo build --release --workspace --quiet); then return 0; fi
        log "root build failed (try $try/6); retrying in 30 s"
        sleep 30
    done
    return 1
}
# The PID and all its descendants (node:cluster workers).
pid_tree() {
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p" || true); do pid_tree "$c"; done
}
# utime+stime of the process tree, in clock ticks.
cpu_ticks() {
    local t=0 p v
    for p in $(pid_tree "$1"); do
        v=$(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
# Sum of a /proc/PID/status field (kB) over the tree: VmRSS now, VmHWM peak.
mem_kb() {
    local t=0 p v
    for p in $(pid_tree "$1"); do
        v=$(awk -v k="$2:" '$1 == k {print $2}' /proc/"$p"/status 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
# Whole-machine "total busy" jiffies, as "busy total".
machine_ticks() {
    awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}
# Wait (up to IDLE_WAIT s) until the machine was less than 15 % busy over one second, so a
# neighbour's compile does not land in the middle of a run. Prints the last busy %.
wait_quiet() {
    local deadline=$((SECONDS + IDLE_WAIT)) b0 t0 b1 t1 pct
    while :; do
        read -r b0 t0 < <(machine_ticks)
        sleep 1
        read -r b1 t1 < <(machine_ticks)
        pct=$((100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1)))
        if ((pct < 15 || SECONDS >= deadline)); then echo "$pct"; return; fi
    done
}
# The first port >= $1 such that it and the next one (ringwire's admin) can be bound.
free_port() {
    python3 - "$1" <<'PY'
import socket, sys
p = int(sys.argv[1])
def ok(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
while not (ok(p) and ok(p + 1)):
    p += 2
print(p)
PY
}
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
wait_port() {
    local i
    for i in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}
# A ringwire config on stdout: public listener on 127.0.0.1:$1, admin on the next port,
# THREADS cores, RINGWIRE_PIN pinning, compression off, and one endpoint: path $2, kind $3,
# auth $4.
ringwire_config() {
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
cores = $THREADS
pin_threads = $RINGWIRE_PIN
[admin]
listen = "127.0.0.1:$(($1 + 1))"
[compression]
enabled = false
[[endpoints]]
path = "$2"
kind = "$3"
auth = "$4"
EOF
}
# SIGTERM, then SIGKILL if the process is still there after 20 s.
stop_server() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# The EXIT trap: stops the server of the run under way (SERVER_PID), if any. An `if`, not
# `&&`: under `set -e` a false test as the trap's last command would make the exit status 1.
cleanup() {
    if [[ -n "${SERVER_PID:-}" ]]; then stop_server "$SERVER_PID"; fi
}
