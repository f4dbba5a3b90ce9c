#!/usr/bin/env bash
# Checks systemd unit files with `systemd-analyze verify`, strictly: any message (an unknown key, a value
# that does not parse, a missing binary) fails, not only what verify itself exits non-zero for (it only
# warns about most mistakes and exits 0).
#
# verify also insists that ExecStart's binary exists. So that the check needs nothing installed on this
# machine, it runs against a scratch root (--root): the host's own unit files (sysinit.target & co.), the
# units under test in /etc/systemd/system, and /usr/local/bin/clove as a wrapper that runs this checkout's
# bin/clove.js.
#
# A unit that says "# exposure: at most N" (N from 0.0 to 10.0) is also scored with `systemd-analyze security
# --offline` and fails above N: the relay's hardening cannot silently wear off.
#
# Usage: deploy/systemd/verify.sh UNIT.service…   (default: the units of this folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
[ "$#" -gt 0 ] || set -- "$here/clove.service" "$here/clove-relay.service"
command -v systemd-analyze >/dev/null || {
  echo "verify: systemd-analyze not found (apt-get install systemd)" >&2
  exit 2
}
sysunits=""
for d in /usr/lib/systemd/system /lib/systemd/system; do
  [ -f "$d/sysinit.target" ] && sysunits="$d" && break
done
[ -n "$sysunits" ] || {
  echo "verify: no systemd unit directory with sysinit.target on this machine" >&2
  exit 2
}

root="$(mktemp -d /tmp/clove-verify.XXXXXX)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin"
cp -a "$sysunits" "$root/usr/lib/systemd/system"
printf '#!/bin/sh\nexec node %q "$@"\n' "$repo/bin/clove.js" >"$root/usr/local/bin/clove"
chmod 0755 "$root/usr/local/bin/clove"

units=()
for u in "$@"; do
  [ -f "$u" ] || {
    echo "verify: $u: no such file" >&2
    exit 2
  }
  cp "$u" "$root/etc/systemd/system/"
  units+=("/etc/systemd/system/$(basename "$u")")
done

status=0
out="$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify --root="$root" "${units[@]}" 2>&1)" || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  printf '%s\n' "${out//$root/}" >&2
  echo "verify: FAILED (exit $status)" >&2
  exit 1
fi
for u in "$@"; do
  max="$(sed -n 's/^# exposure: at most \([0-9]*\.[0-9]\)$/\1/p' "$u" | head -1)"
  [ -n "$max" ] || continue
  name="$(basename "$u")"
  threshold="$(printf '%s' "$max" | tr -d .)"
  status=0
  out="$(SYSTEMD_LOG_COLOR=0 systemd-analyze security --offline=yes --root="$root" --no-pager \
    --threshold="$threshold" "$name" 2>&1)" || status=$?
  level="$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  if [ "$status" -ne 0 ] || [ -z "$level" ]; then
    printf '%s\n' "$out" | grep -E '^✗' | head -20 >&2 || true
    echo "verify: $name: exposure ${level:-?} is above its limit $max (systemd-analyze security)" >&2
    exit 1
  fi
  echo "verify: $name: exposure $level (at most $max)"
done
echo "verify: ok: $*"
