#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 30) on stable rustc
# (RUSTC_BOOTSTRAP=1, since cargo-fuzz needs -Z flags). Installs cargo-fuzz
# if missing. Exits non-zero if any target finds a crash.
set -euo pipefail
SECONDS_PER_TARGET="${1:-30}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
status=0
for target in $(cargo fuzz list); do
    echo "=== fuzzing $target for ${SECONDS_PER_TARGET}s ===" >&2
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    if ! cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "!!! $target FAILED (see fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit $status
