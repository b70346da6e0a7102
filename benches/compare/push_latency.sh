#!/usr/bin/env bash
# Push latency and server CPU per push, an older ringwire build ("old", RINGWIRE_BASE) against
# a newer one ("new", RINGWIRE), side by side in one invocation: N users with one session
# socket each, pushes through the admin API (POST /v1/push/batch) at a fixed rate, runs
# alternating old new old new ..., and a table of the medians with the ratio new/old.
# See README.md beside this file ("Push latency, old build against new").
#
#   RINGWIRE_BASE=/path/to/old/ringwire benches/compare/push_latency.sh
#   BUILD=0 RINGWIRE=target-new/release/ringwire LOADTEST=target-new/release/ringwire-loadtest \
#       RINGWIRE_BASE=/work/base/ringwire USERS=2000 RATE=1000 REPS=1 benches/compare/push_latency.sh
#
# Environment knobs (defaults in brackets):
#   RINGWIRE_BASE  the old build (required)
#   RINGWIRE, LOADTEST  the new build and the load tester [$CARGO_TARGET_DIR or target/release/...]
#   USERS      users = connections, one session socket each [20000]
#   RATE       pushes per second, round robin over the users [5000]
#   DURATION   seconds of pushing [10]
#   REPS       repetitions, interleaved old new old new ... [3]
#   BATCH      pushes per /v1/push/batch request [the load tester's default, 100]
#   WORKERS    load-tester worker processes [its default: ceil(USERS / 15000)]
#   LOADTEST_ARGS  more load-tester arguments (e.g. "--push-concurrency 16") [none]
#   THREADS    ringwire `server.cores` [2]
#   RINGWIRE_PIN  ringwire `pin_threads` [true]
#   BUILD      1 = `cargo build --release` of this tree first (the new build) [1]
#   OUT        logs, reports, results.jsonl, tables.md [target/compare/push-<timestamp>]
#   IDLE_WAIT  seconds to wait, before each run, for the machine to go quiet [30]
#   NOISE_MAX  a run during whose push window other processes used more cores than this is
#              run again (the last try is kept and flagged) [0.25]
#   RETRIES    such re-runs (and restarts of a server that did not come up) in the whole
#              invocation at most [4]
#   GATE       the table's verdict: new / old at most this on CPU per push and p99 [1.05]
#   CONFIG_OLD, CONFIG_NEW  TOML appended to that build's config, e.g. to compare history
#              off against on with one binary (RINGWIRE_BASE=RINGWIRE):
#              CONFIG_NEW=$'[history]\nenabled = true' ARGS_NEW=--recover [none]
#   ARGS_OLD, ARGS_NEW  more load-tester arguments for that build only [none]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET" == /* ]] || TARGET="$ROOT/$TARGET"
RINGWIRE="${RINGWIRE:-$TARGET/release/ringwire}"
LOADTEST="${LOADTEST:-$TARGET/release/ringwire-loadtest}"
RINGWIRE_BASE="${RINGWIRE_BASE:-}"
USERS="${USERS:-20000}"
RATE="${RATE:-5000}"
DURATION="${DURATION:-10}"
REPS="${REPS:-3}"
BATCH="${BATCH:-}"
WORKERS="${WORKERS:-}"
LOADTEST_ARGS="${LOADTEST_ARGS:-}"
THREADS="${THREADS:-2}"
RINGWIRE_PIN="${RINGWIRE_PIN:-true}"
BUILD="${BUILD:-1}"
IDLE_WAIT="${IDLE_WAIT:-30}"
NOISE_MAX="${NOISE_MAX:-0.25}"
RETRIES="${RETRIES:-4}"
GATE="${GATE:-1.05}"
OUT="${OUT:-$ROOT/target/compare/push-$(date -u +%Y%m%dT%H%M%SZ)}"
# Server ports below the ephemeral range (32768+ here): no outgoing connection (the load
# tester's 20,000, or a neighbour's) can already hold one.
PORT_BASE="${PORT_BASE:-$((20000 + RANDOM % 10000))}"
# log, build_root, wait_quiet, free_port, wait_port, ringwire_config, stop_server,
# cleanup, ...
. "$HERE/lib.sh"

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

[[ "$BUILD" == 1 ]] && build_root
[[ -n "$RINGWIRE_BASE" ]] || { log "RINGWIRE_BASE=/path/to/the/old/ringwire is required"; exit 2; }
for f in "$RINGWIRE" "$RINGWIRE_BASE" "$LOADTEST"; do
    [[ -x "$f" ]] || { log "missing $f"; exit 2; }
done

# ------------------------------------------------------------------------------ limits
# Each ring holds up to RLIMIT_NOFILE (hard) direct descriptors, so THREADS cores hold
# THREADS x the limit; the load tester spreads its sockets over worker processes (each
# below the limit) and over source addresses 127.0.0.x (ephemeral ports).
nofile=$(ulimit -Hn)
per_core=$(((USERS + THREADS - 1) / THREADS + 128))
if [[ "$nofile" != unlimited ]] && ((per_core > nofile)); then
    log "$USERS users need about $per_core descriptors per core, the hard open-file limit is $nofile: raise THREADS or the limit (tuning/)"
    exit 2
fi

# ------------------------------------------------------------------------------ servers
write_config() { # port [build] -> config path (the same for both builds but the ports and CONFIG_<BUILD>)
    local extra=""
    [[ ${2:-} == old ]] && extra=${CONFIG_OLD:-}
    [[ ${2:-} == new ]] && extra=${CONFIG_NEW:-}
    { ringwire_config "$1" /ws raw session; printf '%s\n' "$extra"; } >"$OUT/ringwire-$1.toml"
    echo "$OUT/ringwire-$1.toml"
}
SERVER_PID=""
start_server() { # build port -> sets SERVER_PID
    local build=$1 port=$2 bin=$RINGWIRE cfg
    [[ $build == old ]] && bin=$RINGWIRE_BASE
    cfg=$(write_config "$port" "$build")
    "$bin" serve --config "$cfg" >"$OUT/server-$build-$port.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_port "$port" || ! wait_port $((port + 1)); then
        log "$build did not listen on $port:"; cat "$OUT/server-$build-$port.log" >&2
        stop_server "$SERVER_PID"
        SERVER_PID=""
        return 1
    fi
}
trap cleanup EXIT
build_args() { # build -> ARGS_OLD or ARGS_NEW (word-split on purpose)
    if [[ $1 == old ]]; then echo "${ARGS_OLD:-}"; else echo "${ARGS_NEW:-}"; fi
}

doctor_cfg=$(write_config "$PORT_BASE")
if ! "$RINGWIRE" doctor --connections "$USERS" --config "$doctor_cfg" >"$OUT/doctor.txt" 2>&1; then
    log "ringwire doctor: this host is not ready for $USERS connections (running anyway):"
    grep -E '^(FAIL|     change)' "$OUT/doctor.txt" >&2 || true
fi

# ------------------------------------------------------------------------------ the runs
extra=()
[[ -n "$BATCH" ]] && extra+=(--batch-size "$BATCH")
[[ -n "$WORKERS" ]] && extra+=(--workers "$WORKERS")
# shellcheck disable=SC2206 # word splitting of the extra arguments is intended
extra+=($LOADTEST_ARGS)
port=$PORT_BASE
log "results in $OUT"
log "old: $RINGWIRE_BASE; new: $RINGWIRE; $USERS users, $RATE pushes/s for $DURATION s, $REPS reps"
for rep in $(seq 1 "$REPS"); do
    for build in old new; do
        attempt=1
        while :; do
            port=$(free_port $((port + 2)))
            quiet_pct=$(wait_quiet)
            if ! start_server "$build" "$port"; then
                ((RETRIES > 0)) || { log "giving up"; exit 1; }
                RETRIES=$((RETRIES - 1))
                continue
            fi
            name="$build-r$rep-a$attempt"
            log "rep $rep: $build (pid $SERVER_PID, port $port; the machine was ${quiet_pct}% busy before)"
            meta=$(printf '{"build":"%s","rep":%s,"attempt":%s,"port":%s,"users":%s,"rate":%s,"duration":%s,"quiet_before_pct":%s,"report":"%s"}' \
                "$build" "$rep" "$attempt" "$port" "$USERS" "$RATE" "$DURATION" "$quiet_pct" "$OUT/$name.json")
            if ! python3 "$HERE/push_latency.py" measure --server-pid "$SERVER_PID" \
                --report "$OUT/$name.json" --log "$OUT/$name.txt" --meta "$meta" -- \
                "$LOADTEST" --url "ws://127.0.0.1:$port/ws" --admin-url "http://127.0.0.1:$((port + 1))" \
                --auth session --scenario push --connections "$USERS" --push-rate "$RATE" \
                --duration "$DURATION" --report "$OUT/$name.json" "${extra[@]}" $(build_args "$build") >"$OUT/.run" 2>"$OUT/.brief"; then
                log "  the measurement failed: $(cat "$OUT/.brief")"
                exit 1
            fi
            log "  $(cat "$OUT/.brief")"
            stop_server "$SERVER_PID"
            SERVER_PID=""
            noise=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("noise_cores") or 0)' "$OUT/.run")
            if awk -v n="$noise" -v m="$NOISE_MAX" 'BEGIN { exit !(n > m) }'; then
                if ((RETRIES > 0)); then
                    RETRIES=$((RETRIES - 1))
                    attempt=$((attempt + 1))
                    log "  other processes used $noise cores during the push window: running it again (re-runs left: $RETRIES)"
                    IDLE_WAIT=$((IDLE_WAIT * 2)) wait_quiet >/dev/null
                    continue
                fi
                sed -i 's/}$/, "noisy": true}/' "$OUT/.run"
            fi
            cat "$OUT/.run" >>"$RESULTS"
            rm -f "$OUT/.run" "$OUT/.brief"
            break
        done
    done
done

{
    echo "## ringwire push latency, old vs new, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`USERS=$USERS RATE=$RATE DURATION=$DURATION REPS=$REPS${BATCH:+ BATCH=$BATCH}${WORKERS:+ WORKERS=$WORKERS} benches/compare/push_latency.sh\`"
    echo "- old: \`$RINGWIRE_BASE\` ($("$RINGWIRE_BASE" --version 2>/dev/null || echo '?'), built $(date -u -r "$RINGWIRE_BASE" '+%Y-%m-%d %H:%M UTC'))"
    echo "- new: \`$RINGWIRE\` ($("$RINGWIRE" --version 2>/dev/null || echo '?'), built $(date -u -r "$RINGWIRE" '+%Y-%m-%d %H:%M UTC'); tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "- both: \`server.cores = $THREADS\`, \`pin_threads = $RINGWIRE_PIN\`, compression off, one raw \`/ws\` endpoint with session auth (\`$OUT/ringwire-<port>.toml\`)"
    echo "- load: $USERS users, one socket each, $RATE pushes/s round robin for $DURATION s through \`/v1/push/batch\`; latency = push request sent -> frame read by the client"
    echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r); load tester and server share them, over loopback"
    echo
    python3 "$HERE/push_latency.py" table "$RESULTS" --gate "$GATE"
} | tee "$OUT/tables.md"
log "load-tester logs and reports, server logs and results.jsonl in $OUT"
