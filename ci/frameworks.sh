#!/usr/bin/env bash
# The agent frameworks, pinned, in one venv (bench/rivals/.venv): the rivals bench runs them bare, the
# Python SDK's adapters (sdk/python/clove_sdk/integrations/) are tested on them with pytest, which this adds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/rivals/setup.sh >/dev/null
venv=bench/rivals/.venv
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$(grep '^pytest==' ci/requirements-test.txt)"
echo "clove: frameworks venv ready ($venv)"
