#!/usr/bin/env bash
# Build the ringwire .deb from an already built release binary (no compile here):
#
#   cargo build --release --bin ringwire
#   bash packaging/deb/build.sh [BINARY] [OUTDIR]      # -> OUTDIR/ringwire_<version>-1_<arch>.deb
#
# BINARY defaults to $CARGO_TARGET_DIR/release/ringwire (target/release/ringwire), OUTDIR to
# target/debian; DEB_COMPRESS: xz (default) or gzip (faster, larger). Needs dpkg-deb (and
# dpkg-shlibdeps, from dpkg-dev, for the library dependencies; without it they are read from
# the binary's GLIBC symbol versions).
#
# The package installs:
#   /usr/bin/ringwire                        the binary
#   /lib/systemd/system/ringwire.service     tuning/ringwire.service (Type=notify), for /usr/bin
#   /etc/ringwire/ringwire.toml              tuning/ringwire.example.toml   (conffile, root:ringwire 0640)
#   /etc/sysctl.d/60-ringwire.conf           tuning/sysctl.d/60-ringwire.conf (conffile)
#   /etc/security/limits.d/ringwire.conf     tuning/limits.d/ringwire.conf    (conffile)
#   /usr/share/doc/ringwire/                 copyright, the tuning guide, the admin API's OpenAPI document
# and its maintainer scripts create the `ringwire` system user and group (postinst). It does
# not enable or start the service, and does not apply the sysctl file to the running kernel:
# set `sessions.key` and the endpoints first, then `systemctl enable --now ringwire`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${1:-$TARGET/release/ringwire}"
OUT="${2:-$TARGET/debian}"
REVISION="${DEB_REVISION:-1}"
MAINTAINER="${DEB_MAINTAINER:-ringwire maintainers <maintainers@ringwire.invalid>}"

[[ -x $BIN ]] || { echo "build.sh: no binary at $BIN (cargo build --release first)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found" >&2; exit 1; }

# The package's version is the binary's own (`ringwire --version` prints "ringwire X.Y.Z").
UPSTREAM="$("$BIN" --version | awk '{print $2}')"
[[ $UPSTREAM =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "build.sh: bad version '$UPSTREAM'" >&2; exit 1; }
VERSION="$UPSTREAM-$REVISION"
ARCH="$(dpkg --print-architecture)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PKG="$WORK/pkg"

install -d -m 0755 "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/ringwire" \
    "$PKG/etc/sysctl.d" "$PKG/etc/security/limits.d" "$PKG/usr/share/doc/ringwire"
install -m 0755 "$BIN" "$PKG/usr/bin/ringwire"
# A release binary is stripped by its profile; strip anyway should BIN be another build.
if command -v strip >/dev/null; then
    strip --strip-unneeded "$PKG/usr/bin/ringwire"
fi

# The unit: its install comment is for a hand install; the package's binary is in /usr/bin.
{
    echo "# Installed by the ringwire package: change it with \`systemctl edit ringwire\`."
    echo "# The configuration is /etc/ringwire/ringwire.toml; check the host first:"
    echo "#   ringwire doctor --connections N --config /etc/ringwire/ringwire.toml"
    sed -n '/^\[Unit\]/,$p' "$ROOT/tuning/ringwire.service" | sed 's#/usr/local/bin/ringwire#/usr/bin/ringwire#g'
} >"$WORK/ringwire.service"
if grep -q /usr/local/bin "$WORK/ringwire.service"; then
    echo "build.sh: the unit still names /usr/local/bin" >&2
    exit 1
fi
install -m 0644 "$WORK/ringwire.service" "$PKG/lib/systemd/system/ringwire.service"
# Written root:root 0644 here; postinst makes it root:ringwire 0640 (dpkg-statoverride): it
# holds sessions.key and admin.token once set.
install -m 0644 "$ROOT/tuning/ringwire.example.toml" "$PKG/etc/ringwire/ringwire.toml"
install -m 0644 "$ROOT/tuning/sysctl.d/60-ringwire.conf" "$PKG/etc/sysctl.d/60-ringwire.conf"
install -m 0644 "$ROOT/tuning/limits.d/ringwire.conf" "$PKG/etc/security/limits.d/ringwire.conf"

install -m 0644 "$HERE/copyright" "$PKG/usr/share/doc/ringwire/copyright"
install -m 0644 "$ROOT/tuning/README.md" "$PKG/usr/share/doc/ringwire/README.tuning.md"
install -m 0644 "$ROOT/docs/openapi.json" "$PKG/usr/share/doc/ringwire/openapi.json"
for s in postinst prerm postrm; do
    install -m 0755 "$HERE/$s" "$PKG/DEBIAN/$s"
done
printf '%s\n' /etc/ringwire/ringwire.toml /etc/sysctl.d/60-ringwire.conf \
    /etc/security/limits.d/ringwire.conf >"$PKG/DEBIAN/conffiles"
chmod 0644 "$PKG/DEBIAN/conffiles"

# Library dependencies: dpkg-shlibdeps when there (it wants a debian/control), else the
# highest GLIBC symbol version the binary needs (a Rust binary links libc and libgcc_s).
DEPENDS=""
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$WORK/src/debian"
    printf 'Source: ringwire\n\nPackage: ringwire\nArchitecture: any\n' >"$WORK/src/debian/control"
    DEPENDS="$(cd "$WORK/src" && dpkg-shlibdeps -O "$PKG/usr/bin/ringwire" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')"
fi
if [[ -z $DEPENDS ]]; then
    GLIBC="$(grep -aoE 'GLIBC_[0-9]+\.[0-9]+' "$PKG/usr/bin/ringwire" | sed 's/GLIBC_//' | sort -V | tail -1)"
    DEPENDS="libc6 (>= ${GLIBC:-2.31}), libgcc-s1"
fi

cat >"$PKG/DEBIAN/control" <<CONTROL
Package: ringwire
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
Depends: $DEPENDS, adduser
Section: net
Priority: optional
Description: WebSocket push server for Linux (io_uring, thread per core)
 ringwire holds browsers' WebSocket and Socket.IO connections, authenticates them
 with sessions minted through its admin API or JSON Web Tokens, and pushes
 messages to all of a user's sockets, across a cluster of nodes linked over QUIC.
 .
 This package installs the server, its systemd unit (Type=notify), a default
 configuration, and sysctl and limits files sized for many connections. The
 service is not started: set sessions.key in /etc/ringwire/ringwire.toml, then
 systemctl enable --now ringwire. Linux 6.1 or later.
CONTROL

mkdir -p "$OUT"
DEB="$OUT/ringwire_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group "-Z${DEB_COMPRESS:-xz}" --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
