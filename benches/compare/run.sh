#!/usr/bin/env bash
# Side-by-side echo throughput: ringwire vs tokio-tungstenite, fastwebsockets and node `ws`
# echo servers, under the SAME ringwire-loadtest echo load, in one invocation, as ratios to
# ringwire. See README.md beside this file for what it measures and its caveats.
#
#   benches/compare/run.sh                  # build everything, run all settings, print tables
#   OUT=/tmp/cmp benches/compare/run.sh     # keep the raw reports somewhere else
#
# Environment knobs (defaults in brackets):
#   SETTINGS   space-separated name:connections:interval_ms:workers:duration_s
#              ["saturate:200:1:2:8 chatty1k:1000:1:2:8 latency:100:10:1:8"]
#   SERVERS    which servers, in run order ["ringwire tungstenite fastwebsockets node-ws"];
#              `ringwire-base` is the binary RINGWIRE_BASE names (an older build: before/after
#              ratios of a change, side by side in one run)
#   RINGWIRE, LOADTEST, RINGWIRE_BASE  binaries [target/release/...; RINGWIRE_BASE unset]
#   REPS       repetitions, interleaved A B C D A B C D [2]
#   OUT        directory for logs, per-run reports and results.jsonl [target/compare/<timestamp>]
#   BUILD      0 = skip the builds [1]
#   THREADS    ringwire `cores`, tokio worker threads of the Rust servers [2]
#   RINGWIRE_PIN  ringwire `pin_threads` (its default: true) [true]
#   NODE_PROCS processes for the node server (1 = the usual single event loop) [1]
#   IDLE_WAIT  seconds to wait, before each run, for the machine to go quiet [30]
#   NOISE_MAX  a run during whose hold other processes used more cores than this is
#              run again (the last try is kept and flagged) [0.25]
#   RETRIES    how many such re-runs (and restarts of a server that did not come up) in
#              the whole invocation at most [4]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SETTINGS="${SETTINGS:-saturate:200:1:2:8 chatty1k:1000:1:2:8 latency:100:10:1:8}"
SERVERS="${SERVERS:-ringwire tungstenite fastwebsockets node-ws}"
REPS="${REPS:-2}"
BUILD="${BUILD:-1}"
NODE_PROCS="${NODE_PROCS:-1}"
THREADS="${THREADS:-2}"
RINGWIRE_PIN="${RINGWIRE_PIN:-true}"
NOISE_MAX="${NOISE_MAX:-0.25}"
RETRIES="${RETRIES:-4}"
IDLE_WAIT="${IDLE_WAIT:-30}"
OUT="${OUT:-$ROOT/target/compare/$(date -u +%Y%m%dT%H%M%SZ)}"
# Server ports are taken below the ephemeral range (32768+ here), so that no outgoing
# connection (ours or a neighbour's) can already hold one.
PORT_BASE="${PORT_BASE:-$((20000 + RANDOM % 10000))}"

RINGWIRE="${RINGWIRE:-$ROOT/target/release/ringwire}"
LOADTEST="${LOADTEST:-$ROOT/target/release/ringwire-loadtest}"
SERVERS_DIR="$HERE/servers"
CMP_BIN="$SERVERS_DIR/target/release"
HZ="$(getconf CLK_TCK)"
# log, build_root, pid_tree, cpu_ticks, mem_kb, machine_ticks, wait_quiet, free_port, calc,
# wait_port, ringwire_config, stop_server, cleanup
. "$HERE/lib.sh"

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# ---------------------------------------------------------------------------------- build
if [[ "$BUILD" == 1 ]]; then
    build_root
    log "building the comparison servers ($SERVERS_DIR)"
    cargo build --release --quiet --locked --manifest-path "$SERVERS_DIR/Cargo.toml"
    if [[ ! -d "$HERE/node/node_modules/ws" ]]; then
        log "installing node ws (npm ci in $HERE/node)"
        (cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi
needed=("$RINGWIRE" "$LOADTEST")
[[ " $SERVERS " == *" tungstenite "* ]] && needed+=("$CMP_BIN/echo-tungstenite")
[[ " $SERVERS " == *" fastwebsockets "* ]] && needed+=("$CMP_BIN/echo-fastwebsockets")
[[ " $SERVERS " == *" ringwire-base "* ]] && needed+=("${RINGWIRE_BASE:-ringwire-base needs RINGWIRE_BASE}")
for f in "${needed[@]}"; do
    [[ -x "$f" ]] || { log "missing $f (run without BUILD=0)"; exit 2; }
done

# ------------------------------------------------------------------------------- servers
SERVER_PID=""
start_server() { # name port -> sets SERVER_PID
    local name=$1 port=$2
    case "$name" in
    ringwire | ringwire-base)
        local bin=$RINGWIRE
        if [[ $name == ringwire-base ]]; then
            bin=${RINGWIRE_BASE:?ringwire-base needs RINGWIRE_BASE=/path/to/an/older/ringwire}
        fi
        ringwire_config "$port" / echo none >"$OUT/ringwire-$port.toml"
        "$bin" serve --config "$OUT/ringwire-$port.toml" >"$OUT/server-$name-$port.log" 2>&1 &
        ;;
    tungstenite)
        "$CMP_BIN/echo-tungstenite" "127.0.0.1:$port" "$THREADS" >"$OUT/server-$name-$port.log" 2>&1 &
        ;;
    fastwebsockets)
        "$CMP_BIN/echo-fastwebsockets" "127.0.0.1:$port" "$THREADS" >"$OUT/server-$name-$port.log" 2>&1 &
        ;;
    node-ws)
        node "$HERE/ws-echo.mjs" "127.0.0.1:$port" "$NODE_PROCS" >"$OUT/server-$name-$port.log" 2>&1 &
        ;;
    *) log "unknown server $name"; exit 2 ;;
    esac
    SERVER_PID=$!
    if ! wait_port "$port"; then
        log "$name did not listen on $port:"; cat "$OUT/server-$name-$port.log" >&2
        stop_server "$SERVER_PID"
        SERVER_PID=""
        return 1
    fi
    # node:cluster workers listen a moment after the first one
    [[ "$name" == node-ws && "$NODE_PROCS" -gt 1 ]] && sleep 1
    return 0
}
trap cleanup EXIT

# ------------------------------------------------------------------------------- the runs
port=$PORT_BASE
log "results in $OUT"
log "NOTE: load tester and server share this machine's $(nproc) cores (loopback)"
for setting in $SETTINGS; do
    IFS=: read -r sname conns interval workers duration <<<"$setting"
    for rep in $(seq 1 "$REPS"); do
        for name in $SERVERS; do
          attempt=1
          while :; do
            port=$(free_port $((port + 2)))
            quiet_pct=$(wait_quiet)
            if ! start_server "$name" "$port"; then
                ((RETRIES > 0)) || { log "giving up"; exit 1; }
                RETRIES=$((RETRIES - 1))
                continue
            fi
            pid=$SERVER_PID
            report="$OUT/$sname-$name-r$rep-a$attempt.json"
            log "$sname rep $rep: $name (pid $pid, port $port): $conns conns x every ${interval} ms, $workers workers, ${duration} s (machine was ${quiet_pct}% busy before)"
            read -r mb0 mt0 < <(machine_ticks)
            c0=$(cpu_ticks "$pid")
            t0=$(date +%s.%N)
            # The subshell's cutime/cstime = the load tester (it waits for its workers).
            (
                set +e
                "$LOADTEST" --url "ws://127.0.0.1:$port/" --scenario echo \
                    --connections "$conns" --interval-ms "$interval" --workers "$workers" \
                    --duration "$duration" --quiet --report "$report" \
                    >"$OUT/$sname-$name-r$rep-a$attempt.txt" 2>&1
                rc=$?
                awk -v rc=$rc '{print $16 + $17, rc}' /proc/$BASHPID/stat
            ) >"$OUT/.client-$port" &
            client=$!
            samples="$OUT/$sname-$name-r$rep-a$attempt.cpu.jsonl"
            python3 "$HERE/cpu_sampler.py" "$pid" "$client" "$samples" &
            sampler=$!
            wait "$client" || true
            wait "$sampler" || true
            t1=$(date +%s.%N)
            c1=$(cpu_ticks "$pid")
            read -r mb1 mt1 < <(machine_ticks)
            rss_kb=$(mem_kb "$pid" VmRSS)
            hwm_kb=$(mem_kb "$pid" VmHWM)
            stop_server "$pid"
            SERVER_PID=""
            read -r client_ticks lt_rc <"$OUT/.client-$port"
            rm -f "$OUT/.client-$port"
            printf '{"setting":"%s","rep":%s,"server":"%s","connections":%s,"interval_ms":%s,"workers":%s,"duration":%s,"report":"%s","loadtest_rc":%s,"wall_s":%s,"server_cpu_s":%s,"client_cpu_s":%s,"machine_busy_cpu_s":%s,"rss_end_kb":%s,"rss_peak_kb":%s,"quiet_before_pct":%s,"node_procs":%s,"t_start":%s,"samples":"%s","hz":%s}\n' \
                "$sname" "$rep" "$name" "$conns" "$interval" "$workers" "$duration" "$report" "$lt_rc" \
                "$(calc "$t1 - $t0")" \
                "$(calc "($c1 - $c0) / $HZ")" \
                "$(calc "$client_ticks / $HZ")" \
                "$(calc "($mb1 - $mb0) / $HZ")" \
                "$rss_kb" "$hwm_kb" "$quiet_pct" "$NODE_PROCS" "$t0" "$samples" "$HZ" >"$OUT/.run"
            # Other processes (a neighbour's build) busy during the hold window: run it again.
            noise=$(python3 "$HERE/table.py" --noise "$OUT/.run")
            if awk -v n="$noise" -v m="$NOISE_MAX" 'BEGIN { exit !(n > m) }' && ((RETRIES > 0)); then
                RETRIES=$((RETRIES - 1))
                attempt=$((attempt + 1))
                log "  other processes used $noise cores during the hold: running it again (re-runs left: $RETRIES)"
                IDLE_WAIT=$((IDLE_WAIT * 2)) wait_quiet >/dev/null
                continue
            fi
            sed "s/}\$/,\"attempt\":$attempt,\"noise_cores\":$noise}/" "$OUT/.run" >>"$RESULTS"
            rm -f "$OUT/.run"
            log "  done: other processes used $noise cores during the hold"
            break
          done
        done
    done
done

lockver() { awk -v n="$1" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' "$SERVERS_DIR/Cargo.lock"; }
{
    echo "## ringwire echo comparison, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`${RUN_CMD:-benches/compare/run.sh}\` (SETTINGS=\"$SETTINGS\" REPS=$REPS NODE_PROCS=$NODE_PROCS)"
    echo "- ringwire $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src/ changes'): cores = $THREADS, pin_threads = $RINGWIRE_PIN, compression off, echo endpoint; ringwire-loadtest from the same tree"
    if [[ " $SERVERS " == *" ringwire-base "* ]]; then
        echo "- ringwire-base: $RINGWIRE_BASE (same config)"
    fi
    if [[ " $SERVERS " == *" tungstenite "* || " $SERVERS " == *" fastwebsockets "* ]]; then
        echo "- tokio-tungstenite $(lockver tokio-tungstenite), fastwebsockets $(lockver fastwebsockets) + hyper $(lockver hyper), tokio $(lockver tokio) ($THREADS worker threads each)"
    fi
    if [[ " $SERVERS " == *" node-ws "* ]]; then
        echo "- node $(node --version) + ws $(node -p "require('$HERE/node/node_modules/ws/package.json').version") ($NODE_PROCS process(es))"
    fi
    echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r); $(rustc --version | cut -d' ' -f1-2)"
    echo "- the load tester and the server share these $(nproc) cores, over loopback"
    echo
    python3 "$HERE/table.py" "$RESULTS"
} | tee "$OUT/tables.md"
log "raw reports, server logs and results.jsonl in $OUT"
