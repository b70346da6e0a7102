#!/usr/bin/env bash
# Builds uWebSockets' own examples/EchoServer.cpp with its Makefile, outside this repository,
# for echo_cells.sh (UWS_ECHO=<dir>/EchoServer). See README.md beside this file.
#
#   benches/compare/build_uws.sh [DEST]            # DEST defaults to /work/uws-build
#
# Sources, in this order:
#   UWS_GIT_DIR / USOCKETS_GIT_DIR   bare git dirs (a mirror) [/work/.mirror/uNetworking+uWebSockets/repo,
#                                    /work/.mirror/uNetworking+uSockets/repo]
#   UWS_URL / USOCKETS_URL           otherwise: `git clone` of these URLs
#                                    [https://github.com/uNetworking/uWebSockets.git, .../uSockets.git]
#   UWS_REF                          the uWebSockets commit / tag / branch [HEAD]
# uSockets is taken at the commit uWebSockets' `uSockets` submodule pins (a warning if the
# uSockets source does not have it: then its HEAD is used).
#
# Build: no TLS (uSockets' default without WITH_OPENSSL=1: -DLIBUS_NO_SSL), epoll event loop
# (the default), zlib linked (permessage-deflate is offered by EchoServer but only used when a
# client asks for it; echo_cells' client does not), LTO and -O3 -march=native as the
# Makefile / build.c set them. JOBS (default 1) = OpenMP threads of uWS' `build` tool, which
# compiles all 14 examples in parallel.
set -euo pipefail

DEST="${1:-/work/uws-build}"
UWS_GIT_DIR="${UWS_GIT_DIR:-/work/.mirror/uNetworking+uWebSockets/repo}"
USOCKETS_GIT_DIR="${USOCKETS_GIT_DIR:-/work/.mirror/uNetworking+uSockets/repo}"
UWS_URL="${UWS_URL:-https://github.com/uNetworking/uWebSockets.git}"
USOCKETS_URL="${USOCKETS_URL:-https://github.com/uNetworking/uSockets.git}"
UWS_REF="${UWS_REF:-HEAD}"
JOBS="${JOBS:-1}"

log() { printf '[build_uws %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
for tool in git make g++ cc; do
    command -v "$tool" >/dev/null || { log "needs $tool"; exit 2; }
done
[[ -e /usr/include/zlib.h ]] || log "warning: /usr/include/zlib.h missing (zlib1g-dev); the link may fail"

mkdir -p "$DEST"
SRC="$DEST/src"
rm -rf "$SRC"
mkdir -p "$SRC"

# A bare git dir for each repository: the mirror, or a fresh clone next to the sources.
if [[ ! -d "$UWS_GIT_DIR" ]]; then
    log "no $UWS_GIT_DIR: cloning $UWS_URL"
    rm -rf "$DEST/uWebSockets.git"
    git clone --bare --quiet "$UWS_URL" "$DEST/uWebSockets.git"
    UWS_GIT_DIR="$DEST/uWebSockets.git"
fi
if [[ ! -d "$USOCKETS_GIT_DIR" ]]; then
    log "no $USOCKETS_GIT_DIR: cloning $USOCKETS_URL"
    rm -rf "$DEST/uSockets.git"
    git clone --bare --quiet "$USOCKETS_URL" "$DEST/uSockets.git"
    USOCKETS_GIT_DIR="$DEST/uSockets.git"
fi

uws_commit=$(git --git-dir="$UWS_GIT_DIR" rev-parse "$UWS_REF^{commit}")
git --git-dir="$UWS_GIT_DIR" archive "$uws_commit" | tar -x -C "$SRC"
# The submodule's pinned commit: `git ls-tree` shows it as a `commit` entry.
us_pin=$(git --git-dir="$UWS_GIT_DIR" ls-tree "$uws_commit" uSockets | awk '$2 == "commit" {print $3}')
us_commit=""
if [[ -n "$us_pin" ]] && git --git-dir="$USOCKETS_GIT_DIR" cat-file -e "$us_pin^{commit}" 2>/dev/null; then
    us_commit=$us_pin
else
    us_commit=$(git --git-dir="$USOCKETS_GIT_DIR" rev-parse 'HEAD^{commit}')
    log "warning: uSockets ${us_pin:-?} (the submodule pin) not in $USOCKETS_GIT_DIR; using its HEAD $us_commit"
fi
rm -rf "$SRC/uSockets"
mkdir -p "$SRC/uSockets"
git --git-dir="$USOCKETS_GIT_DIR" archive "$us_commit" | tar -x -C "$SRC/uSockets"

log "uWebSockets $uws_commit, uSockets $us_commit -> $SRC"
log "make (uSockets, then uWS' build tool: all examples, OMP_NUM_THREADS=$JOBS); takes minutes"
# WITH_OPENSSL / WITH_BORINGSSL / WITH_WOLFSSL unset: uSockets builds with -DLIBUS_NO_SSL.
(cd "$SRC" && env -u WITH_OPENSSL -u WITH_BORINGSSL -u WITH_WOLFSSL -u WITH_IO_URING \
    -u WITH_LIBUV -u WITH_ASIO OMP_NUM_THREADS="$JOBS" nice make >"$DEST/build.log" 2>&1) || {
    log "make failed; the end of $DEST/build.log:"
    tail -30 "$DEST/build.log" >&2
    # Without EchoServer there is nothing to compare against; with it, another example that
    # failed to build does not matter here.
    [[ -x "$SRC/EchoServer" ]] || exit 1
}
[[ -x "$SRC/EchoServer" ]] || { log "no EchoServer after make; see $DEST/build.log"; exit 1; }
cp "$SRC/EchoServer" "$DEST/EchoServer"
{
    echo "uWebSockets $uws_commit ($(git --git-dir="$UWS_GIT_DIR" log -1 --format=%cs "$uws_commit"))"
    echo "uSockets $us_commit ($(git --git-dir="$USOCKETS_GIT_DIR" log -1 --format=%cs "$us_commit"))"
    echo "$(g++ --version | head -1); no TLS (LIBUS_NO_SSL), epoll, zlib, LTO, -O3 -march=native"
} >"$DEST/VERSION"
cat "$DEST/VERSION" >&2
log "built $DEST/EchoServer (listens on port 9001 of every interface, fixed in the example)"
echo "$DEST/EchoServer"
