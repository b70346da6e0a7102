# Sourced by run.sh and modes.sh: the two nodes of a cluster on this machine, A on $IP_A and B
# on $IP_B, same ports, certificates from `ringwire cluster certs`, a shared sessions.key, a raw
# endpoint /ws. Needs RINGWIRE, PROBE, OUT, IP_A, IP_B, CORES and a `log` function; sets PORT,
# ADMIN_A, ADMIN_B, KEY. NODE_SERVER (more [server] keys) and NODE_SECTIONS (more sections)
# are put into each node's config by write_config.

# A port P such that TCP P (public) and P+1 (admin) and UDP P+2 (cluster) are free on both
# addresses; below the ephemeral range, so no outgoing connection can hold it.
PORT=$(python3 "$PROBE" free-port "$IP_A" "$IP_B")
ADMIN_A="http://$IP_A:$((PORT + 1))"
ADMIN_B="http://$IP_B:$((PORT + 1))"
"$RINGWIRE" cluster certs --out "$OUT/certs" a b >/dev/null
KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

write_config() { # node (a|b): (re)write and check $OUT/<node>.toml
    local ip=$IP_A peer=b peer_ip=$IP_B
    [[ $1 == b ]] && ip=$IP_B peer=a peer_ip=$IP_A
    cat >"$OUT/$1.toml" <<EOF
[server]
listen = "$ip:$PORT"
cores = $CORES
${NODE_SERVER:-}
[admin]
listen = "$ip:$((PORT + 1))"
[sessions]
key = "$KEY"
${NODE_SECTIONS:-}
[[endpoints]]
path = "/ws"
kind = "raw"
[cluster]
node_id = "$1"
listen = "$ip:$((PORT + 2))"
peers = [{ id = "$peer", addr = "$peer_ip:$((PORT + 2))" }]
ca = "$OUT/certs/ca.pem"
cert = "$OUT/certs/$1.pem"
key = "$OUT/certs/$1.key"
EOF
    "$RINGWIRE" serve --check --config "$OUT/$1.toml" >/dev/null
}

start_nodes() { # write both configs, start both nodes (NODE_A_PID, NODE_B_PID), wait for the link
    write_config a
    write_config b
    log "out: $OUT; node A $IP_A:$PORT (admin $((PORT + 1)), QUIC $((PORT + 2))), node B $IP_B:$PORT; $CORES cores each"
    RUST_LOG="${RUST_LOG:-info}" "$RINGWIRE" serve --config "$OUT/a.toml" >"$OUT/node-a.log" 2>&1 &
    NODE_A_PID=$!
    RUST_LOG="${RUST_LOG:-info}" "$RINGWIRE" serve --config "$OUT/b.toml" >"$OUT/node-b.log" 2>&1 &
    NODE_B_PID=$!
    python3 "$PROBE" wait-link "$ADMIN_A" 20 && python3 "$PROBE" wait-link "$ADMIN_B" 20 ||
        { log "the link did not come up"; tail -n 20 "$OUT"/node-*.log >&2; exit 1; }
    log "link up (A pid $NODE_A_PID, B pid $NODE_B_PID)"
}
