#!/usr/bin/env bash
# Runs the Python SDK's suite (vectors + a real kernel) with the real interpreter, resolved once.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(python3 -c 'import sys; print(sys.executable)')"
exec "$py" -m pytest sdk/python -q -p no:cacheprovider "$@"
