#!/usr/bin/env bash
# Install the checkers `make check` runs that pip cannot: buf (the pinned npm package, `npm ci`)
# and promtool (from Debian's `prometheus` package). Idempotent: what is present is kept.
# `make install` runs it after the venv exists.
#
#   VENV   where promtool goes, beside ruff and mypy (default .venv; promtool lands in $VENV/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

die() { echo "install-tools.sh: $*" >&2; exit 1; }

# buf: package.json pins it, package-lock.json pins its checksum; npm ci installs exactly that.
want=$(sed -nE 's/.*"@bufbuild\/buf": "([0-9.]+)".*/\1/p' package.json)
have=$(node_modules/.bin/buf --version 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  command -v npm >/dev/null || die "npm is missing: install Node.js 18+ (Debian: apt-get install nodejs npm)"
  npm ci --no-audit --no-fund --loglevel=error
fi
[ "$(node_modules/.bin/buf --version)" = "$want" ] || die "buf is not $want after npm ci"

# promtool: only the binary, taken out of Debian's package (apt-get download + dpkg-deb), so no
# Prometheus server is installed or started and no dependencies come with it. A promtool already
# on PATH is used as it is.
if [ ! -x "$BIN/promtool" ]; then
  [ -d "$BIN" ] || die "$BIN does not exist: run make install"
  if found=$(command -v promtool); then
    ln -sf "$found" "$BIN/promtool"
  else
    command -v apt-get >/dev/null || die "promtool is missing: install Prometheus 2.x's promtool on PATH"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    chmod 755 "$tmp"  # apt's _apt user writes the download there
    if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
      # A fresh machine has no package lists yet.
      [ "$(id -u)" = 0 ] || die "apt-get download prometheus failed: run 'apt-get update' as root, then make install"
      apt-get update -q >/dev/null
      (cd "$tmp" && apt-get download -q prometheus >/dev/null) || die "apt-get download prometheus failed"
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    install -m 755 "$tmp/root/usr/bin/promtool" "$BIN/promtool"
  fi
fi
"$BIN/promtool" --version >/dev/null || die "$BIN/promtool does not run"
echo "install-tools.sh: buf $want, $("$BIN/promtool" --version 2>&1 | head -n 1)"
