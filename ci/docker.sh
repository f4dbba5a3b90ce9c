#!/usr/bin/env bash
# Makes a Docker daemon answer on /var/run/docker.sock for the cluster harness (harness/cluster/docker.ts):
# installs Debian's docker.io when dockerd is missing, and starts dockerd in the background when nothing
# answers. Idempotent, and it never touches a daemon that already runs (whoever started it).
#
# Flags, and why (the harness runs every node container with --network host and builds its image locally):
#   --bridge none, --iptables=false, --ip6tables=false, --ip-masq=false: host networking only, so dockerd
#       creates no docker0 bridge and writes no iptables rules (the harness's partition rules live in the
#       INPUT chain and must be the only ones it has to reason about);
#   --storage-driver: overlay2 when the daemon starts with it, else vfs (slow, but works on any file system);
#   no registry is contacted: images are imported from a local tar (harness/cluster/image.ts).
# The daemon's log is /var/log/clove-dockerd.log; CLOVE_DOCKERD_LOG overrides it.
set -euo pipefail

log="${CLOVE_DOCKERD_LOG:-/var/log/clove-dockerd.log}"

answers() { docker info >/dev/null 2>&1; }

if answers; then
  echo "clove: docker already answers"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "clove: docker does not answer and starting dockerd needs root: skipped" >&2
  exit 0
fi

if ! command -v dockerd >/dev/null && [ ! -x /usr/sbin/dockerd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
fi
dockerd_bin="$(command -v dockerd || echo /usr/sbin/dockerd)"

# A daemon may be starting already (its pid file exists and the process lives): wait for it instead.
if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  for _ in $(seq 1 60); do answers && exit 0; sleep 1; done
  echo "clove: dockerd (pid $(cat /var/run/docker.pid)) runs but does not answer; see its log" >&2
  exit 1
fi

start() {
  local driver="$1"
  mkdir -p "$(dirname "$log")"
  echo "clove: starting dockerd (storage driver $driver), log $log"
  setsid "$dockerd_bin" --storage-driver "$driver" --bridge none --iptables=false --ip6tables=false \
    --ip-masq=false >>"$log" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 1 60); do
    if answers; then
      echo "clove: dockerd answers (pid $pid, storage driver $driver)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 1
  done
  kill "$pid" 2>/dev/null || true
  return 1
}

start overlay2 || start vfs || {
  echo "clove: dockerd did not start; last lines of $log:" >&2
  tail -20 "$log" >&2
  exit 1
}
