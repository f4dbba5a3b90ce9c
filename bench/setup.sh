#!/usr/bin/env bash
# Installs what bench/spawn-latency.ts compares against: bubblewrap (bwrap). Debian/Ubuntu, as root.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "bench/setup.sh: bwrap is missing; run as root (apt-get install bubblewrap)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1 || {
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends bubblewrap >/dev/null
}
command -v bwrap >/dev/null
