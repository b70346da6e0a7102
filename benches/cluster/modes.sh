#!/usr/bin/env bash
# Cross-node push latency by remote coalescing setting, side by side in one invocation: two
# ringwire nodes on this machine (A on 127.0.0.1, B on 127.0.0.2, linked over QUIC), USERS
# clients on B, every push through A's admin API, so every delivery crosses the link. Each
# push is a different text ({"seq","ts"}), so none is merged: this measures what a push that
# has no equal one waiting pays in each setting.
#   off    "coalesce": false                      (sent at once)
#   edges  "coalesce": true, remote.mode = "edges" (the default: first of its kind at once)
#   wait   "coalesce": true, remote.mode = "wait"  (waits delay_ms for an equal push)
# The mode is switched on A by a config reload between runs; [remote] is otherwise at its
# defaults (delay 1000 ms, max 3000 ms, timer 500 ms).
#
#   benches/cluster/modes.sh                 # ~2 min; needs target/release/{ringwire,ringwire-loadtest}
#   RINGWIRE=... LOADTEST=... SETTINGS="1000:1" REPS=2 benches/cluster/modes.sh
#
# Knobs: USERS [2000], CORES [2], SETTINGS pushes_per_s:batch ["1000:1 5000:100"], SECS [10],
# REPS [1] (the three cases alternate within each rep), RINGWIRE, LOADTEST, OUT [mktemp -d].
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
: "${USERS:=2000}" "${CORES:=2}" "${SETTINGS:=1000:1 5000:100}" "${SECS:=10}" "${REPS:=1}"
: "${RINGWIRE:=$ROOT/target/release/ringwire}" "${LOADTEST:=$ROOT/target/release/ringwire-loadtest}"
: "${OUT:=$(mktemp -d /tmp/ringwire-modes.XXXXXX)}"
PROBE="$HERE/probe.py"
IP_A=127.0.0.1
IP_B=127.0.0.2
log() { printf '[modes %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
for f in "$RINGWIRE" "$LOADTEST"; do
    [[ -x "$f" ]] || { log "missing $f (cargo build --release -p ringwire -p ringwire-loadtest)"; exit 2; }
done
mkdir -p "$OUT/runs"

NODE_A_PID="" NODE_B_PID="" LT_PID=""
cleanup() {
    set +e
    for pid in $LT_PID $NODE_A_PID $NODE_B_PID; do kill -TERM "$pid" 2>/dev/null; done
    for pid in $LT_PID $NODE_A_PID $NODE_B_PID; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT

NODE_SERVER="drain_secs = 0"
NODE_SECTIONS=$'[remote]\nmode = "edges"'
# shellcheck source=nodes.sh
source "$HERE/nodes.sh"
start_nodes
log "$USERS clients on B"

set_mode() { # mode: rewrite A's config and reload it
    NODE_SECTIONS=$'[remote]\nmode = "'"$1"'"'
    write_config a
    python3 - "$ADMIN_A" <<'PY'
import json, sys, urllib.request
r = urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v1/config/reload", data=b"", method="POST"), timeout=10)
body = json.loads(r.read())
assert r.status == 200 and body.get("reloaded") is True, body
PY
    sleep 0.3 # the cores apply it asynchronously
}

for ((rep = 1; rep <= REPS; rep++)); do
    for s in $SETTINGS; do
        IFS=: read -r rate batch <<<"$s"
        for case in off edges wait; do
            label="$case-$rate-b$batch-r$rep" coalesce=()
            [[ $case == wait ]] && set_mode wait || set_mode edges
            [[ $case != off ]] && coalesce=(--push-coalesce)
            python3 "$PROBE" snap "$OUT/runs/$label.pre.json" $$ - "a=$ADMIN_A@$NODE_A_PID" "b=$ADMIN_B@$NODE_B_PID"
            "$LOADTEST" --url "ws://$IP_B:$PORT/ws" --admin-url "$ADMIN_A" --auth session --context 1 \
                --scenario push --connections "$USERS" --push-rate "$rate" --batch-size "$batch" \
                --duration "$SECS" --expect-per-push 1 "${coalesce[@]}" --quiet \
                --report "$OUT/runs/$label.json" >"$OUT/runs/$label.txt" 2>&1 &
            LT_PID=$!
            wait "$LT_PID" || log "  $label: load tester exit $?"
            LT_PID=""
            python3 "$PROBE" snap "$OUT/runs/$label.post.json" $$ - "a=$ADMIN_A@$NODE_A_PID" "b=$ADMIN_B@$NODE_B_PID"
            printf '{"label":"%s","case":"%s","rate":%s,"batch":%s,"rep":%s}\n' "$label" "$case" "$rate" "$batch" "$rep" >>"$OUT/results.jsonl"
            log "  $label done"
            # Let the clients' sockets close and A's directory forget them before the next run.
            python3 "$PROBE" wait-sockets "$ADMIN_B" 0 30 le >/dev/null
        done
    done
done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ms = lambda us: "-" if us is None else f"{us / 1000:.2f}"
print("| pushes/s x batch | rep | case | delivered / expected | missing | p50 ms | p99 ms | p99.9 ms | max ms | A->B link msgs | merged |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for line in open(f"{out}/results.jsonl"):
    r = json.loads(line)
    rep = json.load(open(f"{out}/runs/{r['label']}.json"))
    p = rep.get("push") or {}
    l = p.get("latency_us") or {}
    pre, post = (json.load(open(f"{out}/runs/{r['label']}.{k}.json"))["nodes"]["a"]["stats"] for k in ("pre", "post"))
    link = lambda s: next(x for x in s["cluster"]["links"] if x["node"] == "b")["messages_sent"]
    merged = post["cluster"]["remote"]["merged"] - pre["cluster"]["remote"]["merged"]
    print(f"| {r['rate']} x {r['batch']} | {r['rep']} | {r['case']} | {p.get('messages_received', '-')} / {p.get('messages_expected', '-')} | "
          f"{p.get('missing', '-')} | {ms(l.get('p50_us'))} | {ms(l.get('p99_us'))} | {ms(l.get('p999_us'))} | "
          f"{ms(l.get('max_us'))} | {link(post) - link(pre)} | {merged} |")
PY
log "reports and node logs in $OUT"
