#!/usr/bin/env bash
# Server CPU per echoed message, ringwire side by side with uWebSockets' own EchoServer (and,
# optionally, tokio-tungstenite / fastwebsockets / an older ringwire), in one invocation, in
# the cells conns x depth x payload. The same neutral load client (servers/src/bin/echo-client.rs,
# one epoll thread) on CLIENT_CPU, each server alone on SERVER_CPU (taskset). See README.md
# beside this file ("Echo cells against uWebSockets").
#
#   UWS_ECHO=/work/uws-build/EchoServer benches/compare/echo_cells.sh
#   UWS_ECHO=... WARMUP=1 DURATION=3 CELLS="100x16x512" REPS=3 benches/compare/echo_cells.sh
#
# Environment knobs (defaults in brackets):
#   UWS_ECHO     uWebSockets' EchoServer binary (benches/compare/build_uws.sh builds it); unset:
#                uws is left out [unset]
#   SERVERS      run order within a repetition ["ringwire uws"]; also `tungstenite`,
#                `fastwebsockets` (THREADS worker threads) and `ringwire-base` (RINGWIRE_BASE)
#   CELLS        conns x depth x payload bytes (set but empty: none)
#                ["100x1x16 100x1x512 100x16x16 100x16x512 1000x1x16 1000x1x512 1000x16x16 1000x16x512"]
#   REPS         repetitions per cell, interleaved A B A B ... [3]
#   WARMUP, DURATION  seconds of warm-up, then of measurement, per run [2, 10]
#   SERVER_CPU, CLIENT_CPU  taskset CPU lists [0, 1]
#   THREADS      ringwire `cores` and the tokio servers' worker threads [1]
#   RINGWIRE_PIN ringwire `pin_threads` (pins its core thread to SERVER_CPU) [true]
#   RINGWIRE, RINGWIRE_BASE  binaries [$CARGO_TARGET_DIR or target/release/ringwire; unset]
#   BINARY       1 = binary frames instead of text [0]
#   BUILD        1 = build ringwire and the client (+ the tokio servers if asked for) first [1]
#   OUT          results.jsonl, tables.md, server logs [target/compare/cells-<timestamp>]
#   IDLE_WAIT    seconds to wait before each run for the machine to go quiet [10]
#   NOISE_SPREAD a server's repetitions in a cell differing by more than this fraction of
#                their median are flagged [0.10]
#   NOISE_OTHER  a run during which other processes used more than this many cores is
#                flagged [0.10]
#   PERF_CELL    a cell (e.g. 100x16x512): after the measured runs, one more run per server
#                in it under `perf record -e cpu-clock -g` (report in OUT/perf-*.txt) [unset];
#                CELLS="" PERF_CELL=... runs only the profiles
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# log, cargo_target, wait_quiet, free_port, wait_port, ringwire_config, stop_server, cleanup
. "$HERE/lib.sh"
RINGWIRE="${RINGWIRE:-$(cargo_target)/release/ringwire}"
RINGWIRE_BASE="${RINGWIRE_BASE:-}"
UWS_ECHO="${UWS_ECHO:-}"
SERVERS="${SERVERS:-ringwire uws}"
CELLS="${CELLS-100x1x16 100x1x512 100x16x16 100x16x512 1000x1x16 1000x1x512 1000x16x16 1000x16x512}"
REPS="${REPS:-3}"
WARMUP="${WARMUP:-2}"
DURATION="${DURATION:-10}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
THREADS="${THREADS:-1}"
RINGWIRE_PIN="${RINGWIRE_PIN:-true}"
BINARY="${BINARY:-0}"
BUILD="${BUILD:-1}"
IDLE_WAIT="${IDLE_WAIT:-10}"
NOISE_SPREAD="${NOISE_SPREAD:-0.10}"
NOISE_OTHER="${NOISE_OTHER:-0.10}"
PERF_CELL="${PERF_CELL:-}"
OUT="${OUT:-$ROOT/target/compare/cells-$(date -u +%Y%m%dT%H%M%SZ)}"
# Server ports below the ephemeral range (32768+ here): no outgoing connection (ours or a
# neighbour's load test) can already hold one.
PORT_BASE="${PORT_BASE:-$((20000 + RANDOM % 6000))}"
UWS_PORT=9001 # fixed in uWebSockets' examples/EchoServer.cpp
SERVERS_DIR="$HERE/servers"
CMP_BIN="$SERVERS_DIR/target/release"
CLIENT="$CMP_BIN/echo-client"
HZ="$(getconf CLK_TCK)"

if [[ " $SERVERS " == *" uws "* && -z "$UWS_ECHO" ]]; then
    log "UWS_ECHO is not set: leaving uWebSockets out (build it with benches/compare/build_uws.sh)"
    SERVERS=$(echo " $SERVERS " | sed 's/ uws / /g')
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

if [[ "$BUILD" == 1 ]]; then
    log "building ringwire (release)"
    (cd "$ROOT" && cargo build --release -j2 --quiet --bin ringwire)
    log "building the echo client (and the comparison servers)"
    (cd "$SERVERS_DIR" && CARGO_TARGET_DIR="$SERVERS_DIR/target" cargo build --release -j2 --quiet --locked)
fi
needed=("$CLIENT")
for s in $SERVERS; do
    case "$s" in
    ringwire) needed+=("$RINGWIRE") ;;
    ringwire-base) needed+=("${RINGWIRE_BASE:-ringwire-base needs RINGWIRE_BASE}") ;;
    uws) needed+=("$UWS_ECHO") ;;
    tungstenite | fastwebsockets) needed+=("$CMP_BIN/echo-$s") ;;
    *) log "unknown server $s"; exit 2 ;;
    esac
done
for f in "${needed[@]}"; do
    [[ -x "$f" ]] || { log "missing $f (run without BUILD=0)"; exit 2; }
done

port_free() { # any address, as EchoServer binds
    python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', $1))" 2>/dev/null
}

SERVER_PID=""
PORT=""
start_server() { # name -> SERVER_PID, PORT
    local name=$1 bin log_file
    if [[ $name == uws ]]; then
        PORT=$UWS_PORT
        local i
        for i in $(seq 1 50); do port_free "$PORT" && break; sleep 0.2; done
        port_free "$PORT" || { log "port $PORT (EchoServer's) is taken"; return 1; }
    else
        PORT=$(free_port $((PORT_BASE + RANDOM % 1000 * 2)))
    fi
    log_file="$OUT/server-$name-$PORT.log"
    case "$name" in
    ringwire | ringwire-base)
        bin=$RINGWIRE
        [[ $name == ringwire-base ]] && bin=$RINGWIRE_BASE
        ringwire_config "$PORT" / echo none >"$OUT/ringwire-$PORT.toml"
        taskset -c "$SERVER_CPU" "$bin" serve --config "$OUT/ringwire-$PORT.toml" >"$log_file" 2>&1 &
        ;;
    uws)
        # EchoServer reads misc/*.pem only when built with TLS; run it from its build dir anyway.
        (cd "$(dirname "$UWS_ECHO")" && exec taskset -c "$SERVER_CPU" "$UWS_ECHO") >"$log_file" 2>&1 &
        ;;
    tungstenite | fastwebsockets)
        taskset -c "$SERVER_CPU" "$CMP_BIN/echo-$name" "127.0.0.1:$PORT" "$THREADS" >"$log_file" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    if ! wait_port "$PORT" || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "$name did not listen on $PORT:"; cat "$log_file" >&2
        stop_server "$SERVER_PID"; SERVER_PID=""
        return 1
    fi
}
trap cleanup EXIT

# One run: fresh server, the client for WARMUP + DURATION s, one JSON line in results.jsonl.
run_one() { # cell rep name [perf]
    local cell=$1 rep=$2 name=$3 perf=${4:-} conns depth payload out rc=0 perf_pid=""
    IFS=x read -r conns depth payload <<<"$cell"
    local quiet_pct
    quiet_pct=$(wait_quiet)
    start_server "$name" || return 1
    log "$cell rep $rep: $name (pid $SERVER_PID, port $PORT; machine ${quiet_pct}% busy before)${perf:+ under perf}"
    out="$OUT/$cell-$name-r$rep.client.json"
    if [[ -n $perf ]]; then
        perf record -e cpu-clock -g -p "$SERVER_PID" -o "$OUT/perf-$cell-$name.data" \
            >"$OUT/perf-$cell-$name.log" 2>&1 &
        perf_pid=$!
    fi
    local bin_flag=()
    [[ "$BINARY" == 1 ]] && bin_flag=(--binary)
    taskset -c "$CLIENT_CPU" "$CLIENT" --addr "127.0.0.1:$PORT" --path / --conns "$conns" \
        --depth "$depth" --payload "$payload" --warmup "$WARMUP" --duration "$DURATION" \
        --server-pid "$SERVER_PID" --hz "$HZ" "${bin_flag[@]}" >"$out" 2>"$out.err" || rc=$?
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    local rss_kb
    rss_kb=$(awk '$1 == "VmHWM:" {print $2}' /proc/"$SERVER_PID"/status 2>/dev/null || echo 0)
    stop_server "$SERVER_PID"
    SERVER_PID=""
    [[ $rc == 0 ]] || log "  client exit $rc: $(head -c 300 "$out.err")"
    [[ -n $perf ]] && return 0
    python3 - "$cell" "$rep" "$name" "$rc" "$quiet_pct" "${rss_kb:-0}" "$out" "$SERVER_CPU" >>"$RESULTS" <<'PY'
import json, sys
cell, rep, name, rc, quiet, rss, path, server_cpu = sys.argv[1:]
try:
    client = json.load(open(path))
except (OSError, ValueError):
    client = None
print(json.dumps({"cell": cell, "rep": int(rep), "server": name, "client_rc": int(rc),
                  "quiet_before_pct": int(quiet), "server_hwm_kb": int(rss),
                  "server_cpu_line": "cpu" + server_cpu, "client": client}))
PY
}

log "results in $OUT; servers on CPU $SERVER_CPU, the client on CPU $CLIENT_CPU"
for cell in $CELLS; do
    for rep in $(seq 1 "$REPS"); do
        for name in $SERVERS; do
            run_one "$cell" "$rep" "$name" || log "  $cell rep $rep: $name failed to start"
        done
    done
done

if [[ -n "$PERF_CELL" ]]; then
    for name in $SERVERS; do
        run_one "$PERF_CELL" perf "$name" perf || continue
        perf report -i "$OUT/perf-$PERF_CELL-$name.data" --no-children --sort dso,symbol \
            --percent-limit 0.3 --stdio >"$OUT/perf-$PERF_CELL-$name.txt" 2>/dev/null || true
        log "perf profile of $name: $OUT/perf-$PERF_CELL-$name.txt"
    done
fi

{
    echo "## Echo cells, server CPU per message, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`${RUN_CMD:-benches/compare/echo_cells.sh}\` (REPS=$REPS WARMUP=$WARMUP DURATION=$DURATION SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU BINARY=$BINARY)"
    echo "- ringwire $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src/ changes'): cores = $THREADS, pin_threads = $RINGWIRE_PIN, compression off, echo endpoint"
    [[ " $SERVERS " == *" ringwire-base "* ]] && echo "- ringwire-base: $RINGWIRE_BASE (same config)"
    if [[ " $SERVERS " == *" uws "* ]]; then
        echo "- uWebSockets: $UWS_ECHO ($(tr '\n' ';' <"$(dirname "$UWS_ECHO")/VERSION" 2>/dev/null || echo 'no VERSION file'))"
    fi
    echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r)"
    echo
    python3 "$HERE/echo_cells.py" --spread "$NOISE_SPREAD" --other "$NOISE_OTHER" "$RESULTS"
} | tee "$OUT/tables.md"
log "raw results in $RESULTS"
