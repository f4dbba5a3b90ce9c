#!/usr/bin/env bash
# Builds, on a machine with no image registry, a local stand-in for the Dockerfile's default base
# (node:20-bookworm-slim): a Debian root file system made by debootstrap from the mirror apt already uses,
# with this machine's Node (binary, headers, npm) laid out where the official image has them
# (/usr/local/bin/node, /usr/local/include/node, /usr/local/lib/node_modules/npm), imported with
# `docker import`. The host's certificate authorities come along (its bundle, and its local CAs for when
# the image's ca-certificates package rebuilds the bundle), with NODE_EXTRA_CA_CERTS set: npm and apt in
# the build then trust what the host trusts (a proxy that inspects TLS, a private registry). Prints the tag to use as `docker build --build-arg BASE=<tag>`.
#
# The tag is clove-deploy-base:<hash of this script, the suite, the mirror, the node binary and npm's
# version>: a second run with nothing changed finds it and builds nothing. Needs root (debootstrap).
# Environment: CLOVE_BASE_SUITE (default: this host's Debian codename), CLOVE_BASE_MIRROR (default: the
# first Debian URI in apt's sources, else http://deb.debian.org/debian).
set -euo pipefail

fail() {
  echo "local-base: $*" >&2
  exit 1
}

command -v docker >/dev/null || fail "docker not found"
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || fail "debootstrap not found (apt-get install debootstrap)"
[ "$(id -u)" = 0 ] || fail "debootstrap needs root"

suite="${CLOVE_BASE_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
mirror="${CLOVE_BASE_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
    | grep -oE 'https?://[^ ]+/debian/?$' | head -1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

node_bin="$(readlink -f "$(command -v node)")"
prefix="$(dirname "$(dirname "$node_bin")")"
headers="$prefix/include/node"
npm_dir="$prefix/lib/node_modules/npm"
[ -f "$headers/common.gypi" ] || fail "node headers not found at $headers (node-gyp needs them)"
[ -f "$npm_dir/package.json" ] || fail "npm not found at $npm_dir"

ca_bundle=/etc/ssl/certs/ca-certificates.crt

hash="$({
  cat "$0"
  echo "$suite $mirror"
  sha256sum <"$node_bin"
  grep -m1 '"version"' "$npm_dir/package.json"
  cat "$ca_bundle" 2>/dev/null || true
} | sha256sum | cut -c1-16)"
tag="clove-deploy-base:$hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

work="$(mktemp -d /tmp/clove-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
fs="$work/rootfs"
echo "local-base: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase "$suite" "$fs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  fail "debootstrap $suite from $mirror failed"
}
install -D -m 0755 "$node_bin" "$fs/usr/local/bin/node"
mkdir -p "$fs/usr/local/include" "$fs/usr/local/lib/node_modules"
cp -a "$headers" "$fs/usr/local/include/node"
cp -a "$npm_dir" "$fs/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$fs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$fs/usr/local/bin/npx"
if [ -f "$ca_bundle" ]; then
  install -D -m 0644 "$ca_bundle" "$fs$ca_bundle"
  mkdir -p "$fs/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$fs/usr/local/share/ca-certificates/" 2>/dev/null || true
fi
rm -rf "$fs"/var/cache/apt/archives/*.deb "$fs"/var/lib/apt/lists/*

echo "local-base: importing $tag" >&2
tar -C "$fs" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_EXTRA_CA_CERTS=$ca_bundle" \
  --change 'CMD ["node"]' \
  --change "LABEL clove.deploy.base=$suite" \
  - "$tag" >/dev/null
echo "$tag"
