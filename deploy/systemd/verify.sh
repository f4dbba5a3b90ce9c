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
echo "verify: ok: $*"
