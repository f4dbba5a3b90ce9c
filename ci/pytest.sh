#!/usr/bin/env bash
# Runs the Python SDK's suite (vectors + a real kernel) with the real interpreter, resolved once; then the
# adapters' tests (tests/integrations) under the frameworks' venv made by ci/frameworks.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(python3 -c 'import sys; print(sys.executable)')"
"$py" -m pytest sdk/python -q -p no:cacheprovider --ignore=sdk/python/tests/integrations "$@"
venv=bench/rivals/.venv/bin/python
if [ -x "$venv" ]; then
  exec "$venv" -m pytest sdk/python/tests/integrations -q -p no:cacheprovider "$@"
elif [ "${CI:-}" = true ]; then
  echo "ci/pytest.sh: $venv missing (bash ci/frameworks.sh)" >&2
  exit 1
else
  echo "ci/pytest.sh: skipping the adapters' tests: $venv missing (bash ci/frameworks.sh)" >&2
fi
