#!/usr/bin/env bash
# Installs what the benches compare against, when missing (idempotent; Debian/Ubuntu, as root):
#   bubblewrap (bwrap)         bench/spawn-latency.ts
#   redis-server, nats-server  bench/messaging.ts (Redis pub/sub and core NATS beside Clove)
#   perf (linux-perf)          bench/messaging.ts --perf (where the kernel's time goes, native and JS)
# ci/setup.sh does not need any of these: only the benches do.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]; }
have bwrap || missing+=(bubblewrap)
have redis-server || missing+=(redis-server)
have nats-server || missing+=(nats-server)
have perf || missing+=(linux-perf)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "bench/setup.sh: missing ${missing[*]}; run as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
}
# The Debian packages start their own services; the bench starts its own servers on private sockets.
for svc in redis-server nats-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
have bwrap && have redis-server && have nats-server
