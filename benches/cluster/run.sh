#!/usr/bin/env bash
# Cross-node push benchmark (issue 5): two ringwire nodes on this machine, A on 127.0.0.1 and
# B on 127.0.0.2, linked over QUIC; every push goes through A's admin API. It measures
#   1. end-to-end push latency with coalescing off, clients on B (cross-node) vs clients on A
#      (same node), USERS connected users per node;
#   2. the highest push rate delivered with nothing missing, cross vs same (rate stepped up);
#   3. A->B link bytes per push and pushes per QUIC write: unbatched, batched, coalescing on.
# See README.md beside this file for the method, the results and their caveats.
#
#   benches/cluster/run.sh                      # build if needed, run everything (~8 min)
#   UPDATE_README=1 benches/cluster/run.sh      # ...and put the tables into README.md
#
# Environment knobs (defaults in brackets):
#   USERS         connected users per node, one socket each [20000]
#   CORES         server.cores of each node [2]
#   PING_SECS     limits.ping_interval_secs of the nodes (idle_timeout_secs = 2x + 10); the
#                 default keeps the idle users' keepalive burst out of the latency runs (see
#                 README.md); "" = the server default (25 s) [90]
#   LAT_SETTINGS  latency runs, space-separated pushes_per_s:batch_size ["5000:100 200:1"]
#   LAT_SECS      seconds of pushing per latency run [10]
#   REPS          latency repetitions, alternating cross and same blocks [3]
#   RATES         offered pushes/s of the throughput steps (stops at the first one not kept)
#                 ["10000 20000 40000 60000 80000 100000 120000 160000"]
#   STEP_BATCH    batch size of the throughput steps [100]
#   STEP_SECS     seconds of pushing per throughput step [8]
#   COALESCE_SETTINGS  runs with "coalesce": true (cross only) ["200:1 20000:100"]
#   IDLE_WAIT     before each run, wait up to this long for the machine to be < 15 % busy [20]
#   NOISE_MAX     a run during which other processes used more CPUs than this is run again
#                 (and flagged in the tables if it still is) [0.3]
#   RETRIES       how many such re-runs in the whole invocation at most [6]
#   BUDGET        seconds after which the remaining optional runs are skipped [780]
#   MAX_WALL      hard limit: everything is stopped after this many seconds [900]
#   BUILD         auto = build the release binaries if missing, 1 = always, 0 = never [auto]
#   RINGWIRE, LOADTEST  the binaries [target/release/ringwire, target/release/ringwire-loadtest]
#   BIN_NOTE      what the binaries were built from, for the report (default: this tree's HEAD)
#   OUT           directory for configs, certificates, logs and reports [mktemp -d]
#   UPDATE_README 1 = replace the results section of README.md beside this file [0]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
USERS="${USERS:-20000}"
CORES="${CORES:-2}"
PING_SECS="${PING_SECS-90}"
LAT_SETTINGS="${LAT_SETTINGS-5000:100 200:1}"
LAT_SECS="${LAT_SECS:-10}"
REPS="${REPS:-3}"
RATES="${RATES-10000 20000 40000 60000 80000 100000 120000 160000}"
STEP_BATCH="${STEP_BATCH:-100}"
STEP_SECS="${STEP_SECS:-8}"
COALESCE_SETTINGS="${COALESCE_SETTINGS-200:1 20000:100}"
BUDGET="${BUDGET:-780}"
IDLE_WAIT="${IDLE_WAIT:-20}"
NOISE_MAX="${NOISE_MAX:-0.3}"
RETRIES="${RETRIES:-6}"
MAX_WALL="${MAX_WALL:-900}"
BUILD="${BUILD:-auto}"
UPDATE_README="${UPDATE_README:-0}"
RINGWIRE="${RINGWIRE:-$ROOT/target/release/ringwire}"
LOADTEST="${LOADTEST:-$ROOT/target/release/ringwire-loadtest}"
OUT="${OUT:-$(mktemp -d /tmp/ringwire-cluster.XXXXXX)}"
IP_A=127.0.0.1
IP_B=127.0.0.2
HOLD_CONTEXT=2 # idle users; the pushed users are context 1
PUSH_CONTEXT=1
PROBE="$HERE/probe.py"
TABLE="$HERE/table.py"

mkdir -p "$OUT/runs"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
log() { printf '[cluster %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$SECONDS" "$*" >&2; }

# ---------------------------------------------------------------------------------- build
if [[ "$BUILD" == 1 || ("$BUILD" == auto && (! -x "$RINGWIRE" || ! -x "$LOADTEST")) ]]; then
    log "building ringwire + ringwire-loadtest (release)"
    (cd "$ROOT" && cargo build --release --quiet -p ringwire -p ringwire-loadtest)
fi
for f in "$RINGWIRE" "$LOADTEST"; do
    [[ -x "$f" ]] || { log "missing $f (BUILD=0?)"; exit 2; }
done
"$LOADTEST" --help | grep -q -- --expect-per-push ||
    { log "$LOADTEST has no --expect-per-push (rebuild the load tester)"; exit 2; }
SECONDS=0 # the time limits count from here (a build may take minutes)

# ---------------------------------------------------------------------- process tracking
NODE_A_PID="" NODE_B_PID="" HOLD_PID="" HOLD_NODE="" WATCH_PID="" LT_PID="" WATCHDOG_PID=""
stop_pid() { # pid signal seconds: signal, wait up to seconds, then KILL
    local pid=$1 sig=$2 secs=$3 i
    [[ -n "$pid" ]] || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    set +e
    stop_pid "$LT_PID" INT 10
    stop_pid "$WATCH_PID" TERM 3
    stop_pid "$HOLD_PID" INT 10
    stop_pid "$NODE_A_PID" TERM 10
    stop_pid "$NODE_B_PID" TERM 10
    [[ -n "$WATCHDOG_PID" ]] && pkill -P "$WATCHDOG_PID" sleep 2>/dev/null
    wait "$WATCHDOG_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'log "interrupted"; cleanup; exit 130' INT
trap 'log "stopped (MAX_WALL=${MAX_WALL}s or SIGTERM)"; cleanup; exit 143' TERM
(sleep "$MAX_WALL" && kill -TERM $$) 2>/dev/null &
WATCHDOG_PID=$!
over_budget() { ((SECONDS > BUDGET)); }
# Whole-machine busy %, over one second.
busy_pct() {
    local b0 t0 b1 t1
    read -r b0 t0 < <(awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat)
    sleep 1
    read -r b1 t1 < <(awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat)
    echo $((100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1)))
}
# Wait (up to IDLE_WAIT s) until the machine is less than 15 % busy over a second (our idle
# nodes and holder use about nothing), so a neighbour's build does not land in a run. Prints
# the last busy %.
wait_quiet() {
    local deadline=$((SECONDS + IDLE_WAIT)) pct
    while :; do
        pct=$(busy_pct)
        if ((pct < 15 || SECONDS >= deadline)); then echo "$pct"; return; fi
    done
}

# ------------------------------------------------------------------------------- the nodes
NODE_SERVER=$'drain_secs = 1\ndrain_deadline_secs = 3'
NODE_SECTIONS=""
[[ -n "$PING_SECS" ]] &&
    NODE_SECTIONS=$(printf '[limits]\nping_interval_secs = %s\nidle_timeout_secs = %s' "$PING_SECS" $((2 * PING_SECS + 10)))
# shellcheck source=nodes.sh
source "$HERE/nodes.sh"
start_nodes

snap() { python3 "$PROBE" snap "$1" $$ "${HOLD_PID:--}" "a=$ADMIN_A@$NODE_A_PID" "b=$ADMIN_B@$NODE_B_PID"; }

# ------------------------------------------------------------------------ the idle holders
# USERS idle users (context 2) on one node, for as long as the pushed clients are on the other.
HOLD_N=0
start_hold() { # node (a|b)
    local node=$1 ip admin other
    if [[ $node == a ]]; then ip=$IP_A admin=$ADMIN_A other=$ADMIN_B; else ip=$IP_B admin=$ADMIN_B other=$ADMIN_A; fi
    HOLD_N=$((HOLD_N + 1))
    "$LOADTEST" --url "ws://$ip:$PORT/ws" --admin-url "$admin" --auth session --context $HOLD_CONTEXT \
        --scenario hold --connections "$USERS" --duration $((MAX_WALL + 60)) --quiet \
        --report "$OUT/runs/hold-$HOLD_N-$node.json" >"$OUT/runs/hold-$HOLD_N-$node.txt" 2>&1 &
    HOLD_PID=$! HOLD_NODE=$node
    local n
    n=$(python3 "$PROBE" wait-sockets "$admin" "$USERS" 90) &&
        python3 "$PROBE" wait-presence "$other" "$USERS" 30 >/dev/null ||
        { log "the idle holder on $node did not connect $USERS users"; tail -n 30 "$OUT/runs/hold-$HOLD_N-$node.txt" >&2; exit 1; }
    log "holding $n idle users on node $node (the other node's directory knows them)"
}
stop_hold() {
    local admin
    [[ -n "$HOLD_PID" ]] || return 0
    if [[ $HOLD_NODE == a ]]; then admin=$ADMIN_A; else admin=$ADMIN_B; fi
    stop_pid "$HOLD_PID" INT 15
    HOLD_PID=""
    python3 "$PROBE" wait-sockets "$admin" 0 30 le >/dev/null || log "WARNING: node $HOLD_NODE still holds sockets"
}

# ---------------------------------------------------------------------------- a push run
# run_push label group mode rate batch secs rep [extra loadtest args]
run_push() {
    local label=$1 group=$2 mode=$3 rate=$4 batch=$5 secs=$6 rep=$7
    shift 7
    local url expect=() coalesce=false base="$OUT/runs/$label" rc attempt=0 quiet noise
    if [[ $mode == cross ]]; then
        url="ws://$IP_B:$PORT/ws" expect=(--expect-per-push 1)
    else
        url="ws://$IP_A:$PORT/ws"
    fi
    [[ " $* " == *" --push-coalesce "* ]] && coalesce=true
    while :; do
        attempt=$((attempt + 1)) rc=0
        quiet=$(wait_quiet)
        snap "$base.pre.json"
        python3 "$PROBE" watch "$base.watch.json" "a=$ADMIN_A" "b=$ADMIN_B" &
        WATCH_PID=$!
        "$LOADTEST" --url "$url" --admin-url "$ADMIN_A" --auth session --context $PUSH_CONTEXT \
            --scenario push --connections "$USERS" --push-rate "$rate" --batch-size "$batch" \
            --duration "$secs" "${expect[@]}" --quiet --report "$base.json" "$@" >"$base.txt" 2>&1 &
        LT_PID=$!
        wait "$LT_PID" || rc=$?
        LT_PID=""
        stop_pid "$WATCH_PID" TERM 3
        WATCH_PID=""
        snap "$base.post.json"
        noise=$(python3 "$TABLE" --noise "$base.pre.json" "$base.post.json")
        # Other processes busy during the run (a neighbour's build): run it again, a few times
        # per invocation at most; the last try is kept (and flagged in the tables).
        if python3 -c "import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))" "$noise" "$NOISE_MAX" &&
            ((RETRIES > 0)) && ! over_budget; then
            RETRIES=$((RETRIES - 1))
            log "  $label: other processes used $noise CPUs during the run: running it again (re-runs left: $RETRIES)"
            for f in json pre.json post.json txt watch.json; do
                [[ -e "$base.$f" ]] && mv "$base.$f" "$base.try$attempt.$f"
            done
            IDLE_WAIT=$((IDLE_WAIT * 2)) wait_quiet >/dev/null
            continue
        fi
        break
    done
    printf '{"label":"%s","group":"%s","mode":"%s","rate":%s,"batch":%s,"secs":%s,"rep":%s,"coalesce":%s,"users":%s,"hold":"%s","rc":%s,"attempt":%s,"busy_before_pct":%s,"report":"%s","pre":"%s","post":"%s","watch":"%s"}\n' \
        "$label" "$group" "$mode" "$rate" "$batch" "$secs" "$rep" "$coalesce" "$USERS" "$HOLD_NODE" "$rc" "$attempt" "$quiet" \
        "$base.json" "$base.pre.json" "$base.post.json" "$base.watch.json" >>"$RESULTS"
    log "  $label: $(python3 "$TABLE" --line "$base.json"); other CPUs $noise"
}

latency_block() { # mode rep
    local s rate batch
    for s in $LAT_SETTINGS; do
        IFS=: read -r rate batch <<<"$s"
        run_push "lat-$1-$rate-b$batch-r$2" latency "$1" "$rate" "$batch" "$LAT_SECS" "$2"
    done
}
rate_steps() { # mode
    local rate v
    for rate in $RATES; do
        if over_budget; then log "  budget used up: no more rate steps"; return; fi
        run_push "rate-$1-$rate" rate "$1" "$rate" "$STEP_BATCH" "$STEP_SECS" 1
        v=$(python3 "$TABLE" --verdict "$OUT/runs/rate-$1-$rate.json" "$rate" "$USERS")
        log "  $1 at $rate/s: $v"
        [[ "$v" == keep ]] || return 0
    done
}

# ------------------------------------------------------------------------------- the runs
log "block 1: idle users on A, clients on B, pushes through A (cross-node)"
start_hold a
latency_block cross 1
for s in $COALESCE_SETTINGS; do
    IFS=: read -r rate batch <<<"$s"
    run_push "coalesce-cross-$rate-b$batch" coalesce cross "$rate" "$batch" "$STEP_SECS" 1 --push-coalesce
done
rate_steps cross
stop_hold

log "block 2: idle users on B, clients on A, pushes through A (same node)"
start_hold b
latency_block same 1
rate_steps same
# (d) coalescing with identical texts: 10 of B's idle users x 100 equal pushes, through A.
snap "$OUT/runs/identical.pre.json"
python3 "$PROBE" push-identical "$ADMIN_A" $HOLD_CONTEXT 10 100 >"$OUT/runs/identical.answer.json"
sleep 4 # remote.max_delay_ms (3 s) + one remote.timer_ms tick
snap "$OUT/runs/identical.post.json"
printf '{"label":"identical","group":"identical","mode":"cross","rate":0,"batch":1000,"rep":1,"coalesce":true,"users":%s,"hold":"b","pushes":1000,"users_pushed":10,"copies":100,"text_bytes":%s,"answer":%s,"pre":"%s","post":"%s"}\n' \
    "$USERS" "$(python3 -c 'print(sum(len(f"identical text for user {u}") * 100 for u in range(1, 11)))')" \
    "$(cat "$OUT/runs/identical.answer.json")" "$OUT/runs/identical.pre.json" "$OUT/runs/identical.post.json" >>"$RESULTS"
log "  identical: $(cat "$OUT/runs/identical.answer.json")"
stop_hold

for ((rep = 2; rep <= REPS; rep++)); do
    if over_budget; then log "budget used up: skipping latency rep $rep"; break; fi
    log "latency rep $rep: cross, then same"
    start_hold a
    latency_block cross "$rep"
    stop_hold
    start_hold b
    latency_block same "$rep"
    stop_hold
done

# ----------------------------------------------------------------------------- the report
WARN=$(grep -hE ' (WARN|ERROR) ' "$OUT"/node-*.log | head -n 20 || true)
{
    echo "## Results, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`${RUN_CMD:-benches/cluster/run.sh}\` (USERS=$USERS CORES=$CORES PING_SECS=\"$PING_SECS\" LAT_SETTINGS=\"$LAT_SETTINGS\" LAT_SECS=$LAT_SECS REPS=$REPS RATES=\"$RATES\" STEP_BATCH=$STEP_BATCH STEP_SECS=$STEP_SECS COALESCE_SETTINGS=\"$COALESCE_SETTINGS\"), ${SECONDS} s"
    echo "- ringwire ${BIN_NOTE:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src loadtest 2>/dev/null || echo ' (the tree has uncommitted src/ or loadtest/ changes)')}: \`$RINGWIRE\` (built $(date -u -r "$RINGWIRE" '+%Y-%m-%d %H:%M UTC')), \`$LOADTEST\`"
    echo "- two nodes on one machine: A = $IP_A, B = $IP_B, \`server.cores = $CORES\` each, raw endpoint \`/ws\`, shared \`sessions.key\`, certificates from \`ringwire cluster certs\`, \`limits.ping_interval_secs = ${PING_SECS:-25 (default)}\`, \`[remote]\` defaults (mode edges, delay 1000 ms, max 3000 ms, timer 500 ms)"
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), RLIMIT_NOFILE $(ulimit -Sn)/$(ulimit -Hn); both nodes, the idle holder and the load tester (coordinator + 2 workers each) share these CPUs, over loopback"
    echo "- server logs: $(if [[ -n "$WARN" ]]; then echo "warnings/errors:"; else echo "no warning or error"; fi)"
    [[ -n "$WARN" ]] && printf '  ```\n%s\n  ```\n' "$WARN"
    echo
    python3 "$TABLE" "$RESULTS"
} >"$OUT/tables.md"
cat "$OUT/tables.md"
if [[ "$UPDATE_README" == 1 ]]; then
    python3 - "$HERE/README.md" "$OUT/tables.md" <<'PY'
import sys
readme, tables = sys.argv[1], open(sys.argv[2]).read()
s = open(readme).read()
b, e = "<!-- results:begin -->", "<!-- results:end -->"
i, j = s.index(b) + len(b), s.index(e)
open(readme, "w").write(s[:i] + "\n" + tables.rstrip() + "\n" + s[j:])
PY
    log "README.md updated"
fi
log "raw reports, node logs and results.jsonl in $OUT"
