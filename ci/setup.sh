#!/usr/bin/env bash
# Installs everything a fresh machine lacks and builds the project: npm packages (native modules are
# compiled against the running Node's own headers: node-gyp cannot download them here), the native
# addon, the TypeScript build, and the Python test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
# The messaging bench's smoke test runs Clove beside real Redis pub/sub and NATS (bench/messaging.test.ts).
command -v redis-server >/dev/null || [ -x /usr/sbin/redis-server ] || need_apt+=(redis-server)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
# The cluster (kernel/cluster/) stands on etcd and NATS JetStream; its tests start both (harness/services.ts).
command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
# The native fast path scans SEND envelopes with simdjson (native/src/fast/ops.cc).
[ -f /usr/include/simdjson.h ] || need_apt+=(libsimdjson-dev)
# The dashboard's browser test drives Debian's Chromium with playwright-core (kernel/http/dashboard/).
command -v chromium >/dev/null || need_apt+=(chromium)
# deploy/systemd/clove.service is checked with systemd-analyze verify (deploy/deploy.test.ts).
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The deploy test builds the Docker image on a local Debian base made with debootstrap (deploy/docker/local-base.sh).
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# node-gyp must use the headers of the Node that runs it (<prefix>/include/node).
node_prefix="$(node -p 'require("path").resolve(process.execPath, "..", "..")')"
export npm_config_nodedir="$node_prefix"

python3 -m pip install --quiet --disable-pip-version-check -r ci/requirements-test.txt
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build:native
# The agent frameworks the Python SDK's adapters are tested on (issue 16), pinned, in their own venv.
bash ci/frameworks.sh
npm run --silent build
# The cluster harness runs nodes as Docker containers (harness/cluster/docker.ts): docker.io and a running dockerd.
bash ci/docker.sh
echo "clove: set-up done"
