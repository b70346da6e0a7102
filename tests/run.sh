#!/usr/bin/env bash
# The one test command: `bash tests/run.sh`.
#
# Installs what is missing (a Python venv at tests/.venv, npm packages in
# tests/node, Debian packages only if really needed), builds, then runs every
# suite: cargo tests, pytest (tests/python), node:test (tests/node), the
# Autobahn conformance run (tests/conformance) and a bounded fuzz run.
# Every step is bounded by `timeout`; a failed step does not stop the
# others. The last line is "N passed, N failed" (counting steps); the exit
# status is non-zero if any step failed.
#
# Environment:
#   RINGWIRE_TEST_BUDGET  total seconds for all steps (default 4800 = 80 min)
#   RINGWIRE_FUZZ_SECS    seconds given to fuzz/run.sh (default 30)
#   RINGWIRE_SKIP         space-separated step names to skip (e.g. "fuzz conformance")

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONUNBUFFERED=1

BUDGET="${RINGWIRE_TEST_BUDGET:-4800}"
FUZZ_SECS="${RINGWIRE_FUZZ_SECS:-30}"
SKIP=" ${RINGWIRE_SKIP:-} "
VENV="$ROOT/tests/.venv"
START=$SECONDS

passed=0
failed=0
declare -a SUMMARY=()
declare -A STATUS=()

log() { printf '\n[run.sh %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - START))" "$*"; }

# step NAME LIMIT_SECONDS [--needs STEP...] -- COMMAND...
step() {
    local name=$1 limit=$2
    shift 2
    local needs=()
    if [[ ${1:-} == --needs ]]; then
        shift
        while [[ $# -gt 0 && $1 != -- ]]; do needs+=("$1"); shift; done
    fi
    [[ ${1:-} == -- ]] && shift

    if [[ $SKIP == *" $name "* ]]; then
        log "=== $name: SKIPPED (RINGWIRE_SKIP)"
        SUMMARY+=("$(printf '%-12s SKIPPED' "$name")")
        return 0
    fi
    local dep
    for dep in "${needs[@]}"; do
        if [[ $dep == binary ]]; then
            # The suites need target/release/ringwire up to date. If the full build
            # failed elsewhere (a bench, loadtest), still try to build just the server.
            if [[ -z ${STATUS[binary]:-} ]]; then
                if [[ ${STATUS[build]:-} == PASS ]]; then
                    STATUS[binary]=PASS
                else
                    log "full build did not pass: building only the ringwire binary for the suites"
                    if timeout 1200 cargo build --release -p ringwire --bin ringwire; then
                        STATUS[binary]=PASS
                    else
                        STATUS[binary]=FAIL
                    fi
                fi
            fi
        fi
        if [[ ${STATUS[$dep]:-} != PASS ]]; then
            log "=== $name: FAILED (not run: step '$dep' did not pass)"
            STATUS[$name]=FAIL
            failed=$((failed + 1))
            SUMMARY+=("$(printf '%-12s FAIL   (not run: %s did not pass)' "$name" "$dep")")
            return 0
        fi
    done
    local left=$((BUDGET - (SECONDS - START) - 30))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 30)); then
        log "=== $name: FAILED (no time left in the ${BUDGET}s budget)"
        STATUS[$name]=FAIL
        failed=$((failed + 1))
        SUMMARY+=("$(printf '%-12s FAIL   (no time left)' "$name")")
        return 0
    fi

    log "=== $name: start (timeout ${limit}s): $*"
    local t0=$SECONDS rc
    # bash -c so that shell functions (exported below) can be steps too; timeout
    # signals the whole process group (servers started by the suites included).
    timeout --kill-after=20 "$limit" bash -c '"$@"' _ "$@" </dev/null
    rc=$?
    local dt=$((SECONDS - t0))
    if ((rc == 0)); then
        STATUS[$name]=PASS
        passed=$((passed + 1))
        SUMMARY+=("$(printf '%-12s PASS   %5ss' "$name" "$dt")")
        log "=== $name: PASS (${dt}s)"
    else
        local why="exit $rc"
        ((rc == 124 || rc == 137)) && why="timed out after ${limit}s"
        STATUS[$name]=FAIL
        failed=$((failed + 1))
        SUMMARY+=("$(printf '%-12s FAIL   %5ss  (%s)' "$name" "$dt" "$why")")
        log "=== $name: FAIL (${dt}s, $why)"
    fi
}

# ---------------------------------------------------------------- setup

apt_install() {
    # apt-get install PKGS without starting any service they ship (policy-rc.d): the tests run
    # their own proxy instances on free ports.
    local policy=/usr/sbin/policy-rc.d made=0 rc
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
    fi
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    rc=$?
    ((made)) && rm -f "$policy"
    return $rc
}

setup_apt() {
    # Debian packages only when something is really missing.
    local pkgs=()
    command -v timeout >/dev/null || pkgs+=(coreutils)
    command -v pkg-config >/dev/null || pkgs+=(pkg-config)
    # Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
    python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
    # `ip` for the cluster partition test (network namespaces and veths).
    [[ -x /usr/sbin/ip || -x /sbin/ip ]] || pkgs+=(iproute2)
    # `openssl` signs the RS256 tokens of tests/python/test_jwt.py.
    command -v openssl >/dev/null || pkgs+=(openssl)
    # tests/python/test_deb.py: `systemd-analyze verify` on the packaged unit, and the package's
    # dependency `adduser` (its postinst creates the ringwire user).
    command -v systemd-analyze >/dev/null || pkgs+=(systemd)
    command -v adduser >/dev/null || pkgs+=(adduser)
    if ((${#pkgs[@]})); then
        if [[ $(id -u) != 0 ]]; then
            echo "missing Debian packages (${pkgs[*]}) and not root" >&2
            return 1
        fi
        echo "installing Debian packages: ${pkgs[*]}"
        apt_install "${pkgs[@]}"
    else
        echo "Debian packages: nothing missing"
    fi
}

setup_chromium() {
    # Debian's chromium for tests/node/browser.test.mjs (playwright-core drives it); only when
    # /usr/bin/chromium is absent. Not root: the browser test skips itself.
    if [[ -x /usr/bin/chromium ]]; then
        echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "/usr/bin/chromium missing and not root: the browser test will be skipped" >&2
        return 0
    fi
    echo "installing Debian package: chromium"
    apt_install chromium
}

setup_proxies() {
    # Debian's apache2, nginx and haproxy for tests/python/test_proxies.py (the shipped configs in
    # tuning/proxies/ run against the real servers); only when a binary is missing. Not root:
    # the proxy tests skip themselves. Services are not started by the install (policy-rc.d).
    local pkgs=() b
    for b in apache2 nginx haproxy; do
        [[ -x /usr/sbin/$b ]] || pkgs+=("$b")
    done
    if ((${#pkgs[@]} == 0)); then
        echo "proxies: $(/usr/sbin/nginx -v 2>&1 | head -1); $(/usr/sbin/haproxy -v 2>&1 | head -1); $(/usr/sbin/apache2 -v 2>&1 | head -1)"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "missing ${pkgs[*]} and not root: the proxy tests will be skipped" >&2
        return 0
    fi
    echo "installing Debian packages: ${pkgs[*]}"
    apt_install "${pkgs[@]}"
}

setup_tinyproxy() {
    # Debian's tinyproxy (an HTTP CONNECT proxy) for the wss-through-a-proxy tests in
    # tests/python/test_tls.py and tests/node/tls.test.mjs; only when /usr/bin/tinyproxy is
    # missing. Not root: those tests skip themselves. The tests start their own tinyproxy on a
    # free port; the packaged service is not started by the install (policy-rc.d).
    if [[ -x /usr/bin/tinyproxy ]]; then
        echo "tinyproxy: $(/usr/bin/tinyproxy -v 2>&1 | head -1)"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "/usr/bin/tinyproxy missing and not root: the proxy TLS tests will be skipped" >&2
        return 0
    fi
    echo "installing Debian package: tinyproxy"
    local rc
    apt_install tinyproxy
    rc=$?
    # Were the service started anyway (an existing policy-rc.d allowing it), stop it: the tests
    # run their own instances and nothing else should listen on tinyproxy's port 8888.
    local pidfile=/run/tinyproxy/tinyproxy.pid
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "stopping the tinyproxy service the install started"
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
    return $rc
}

setup_nats() {
    # Debian's nats-server (2.9, JetStream) for tests/nats_history.rs, the `nats` history store
    # against a real server; only when it is missing. The tests start their own server on a free
    # port; the packaged service is not started by the install (policy-rc.d). Not root: those
    # tests skip themselves, loudly.
    if command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]]; then
        echo "nats-server: $(nats-server --version 2>/dev/null || /usr/sbin/nats-server --version)"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "nats-server missing and not root: the nats history tests will fail" >&2
        return 0
    fi
    echo "installing Debian package: nats-server"
    apt_install nats-server
}

setup_prometheus() {
    # Debian's prometheus (prometheus and promtool) for tests/python/test_prometheus.py: the
    # Grafana dashboard's queries and the alert rules of tuning/ against a live cluster. The test
    # runs its own instance on a free port; the packaged service is not started (policy-rc.d).
    if ! [[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]]; then
        [[ $(id -u) == 0 ]] || { echo "prometheus missing, not root: test_prometheus.py will fail" >&2; return 0; }
        echo "installing Debian package: prometheus"
        apt_install prometheus || return 1
    fi
    /usr/bin/prometheus --version 2>&1 | head -1
}

setup_venv() {
    local req="$ROOT/tests/requirements.txt" stamp="$VENV/.requirements.sha256"
    if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        echo "creating $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV" || return 1
    fi
    local want
    want=$(sha256sum "$req" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && "$VENV/bin/python" -c 'import kosoku, websockets, pytest, schemathesis, openapi_spec_validator' 2>/dev/null; then
        echo "venv up to date ($VENV)"
    else
        "$VENV/bin/python" -m pip install -q -r "$req" || return 1
        echo "$want" >"$stamp"
    fi
    "$VENV/bin/python" -m pip list 2>/dev/null | grep -Ei '^(kosoku|websockets|pytest|schemathesis|openapi-spec-validator) '
}

setup_node() {
    local dir="$ROOT/tests/node" stamp="$ROOT/tests/node/node_modules/.lock.sha256" want
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" && -f $dir/node_modules/ws/package.json ]]; then
        echo "node_modules up to date"
    else
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
        echo "$want" >"$stamp"
    fi
    node -e 'console.log("node", process.version, "ws", require("./tests/node/node_modules/ws/package.json").version)'
}

setup() {
    setup_apt && setup_chromium && setup_proxies && setup_tinyproxy && setup_nats && setup_prometheus && setup_venv && setup_node
}

export ROOT VENV FUZZ_SECS
export -f apt_install setup setup_apt setup_chromium setup_proxies setup_tinyproxy setup_nats setup_prometheus setup_venv setup_node

# ---------------------------------------------------------------- suites

log "ringwire tests in $ROOT (budget ${BUDGET}s, ulimit -n $(ulimit -n), $(nproc) cores)"

step setup 600 -- setup
step build 1500 -- cargo build --release --workspace --all-targets
step cargo-test 1200 -- cargo test --workspace --release
step pytest 900 --needs setup binary -- "$VENV/bin/python" -m pytest tests/python
step node 450 --needs setup binary -- node --test tests/node/
step conformance 1800 --needs setup binary -- "$VENV/bin/python" tests/conformance/run.py
if [[ -f fuzz/run.sh ]]; then
    step fuzz 900 -- bash fuzz/run.sh "$FUZZ_SECS"
else
    log "=== fuzz: SKIPPED (fuzz/run.sh not present)"
    SUMMARY+=("$(printf '%-12s SKIPPED (no fuzz/run.sh)' fuzz)")
fi

log "=== summary ($((SECONDS - START))s in all)"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
echo "$passed passed, $failed failed"
((failed == 0))
