#!/usr/bin/env bash
# The quick benchmark suite (a few minutes): IPC, restart, kernel memory and CPU with idle agents, each
# with fewer iterations (`--quick`), then reports/latest.md. Every bench writes reports/<name>.{json,md}
# and its SVG charts; a failing bench does not stop the others, but the script exits non-zero.
#
#   bash ci/bench-quick.sh            # or: npm run bench:quick
#   bash ci/bench-quick.sh --full     # the full suite (npm run bench)
set -uo pipefail
cd "$(dirname "$0")/.."

mode=--quick
[[ "${1:-}" == "--full" ]] && mode=""

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
# The build must emit dist/bench; a type error elsewhere in the tree is reported but does not stop us.
npx tsc -p tsconfig.json || echo "warning: tsc reported errors (see above); running what was emitted" >&2

failed=()
for b in ipc restart memory cpu; do
  echo "=== bench/$b.ts ${mode}"
  if ! node "dist/bench/$b.js" $mode; then
    failed+=("$b")
  fi
done
node dist/bench/latest.js >/dev/null && echo "wrote reports/latest.md"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
