#!/usr/bin/env bash
# Installs the rival frameworks for bench/rivals/run.py, isolated from the rest of the repo:
#   bench/rivals/.venv          Python venv: requirements.txt (pinned ==), constrained by constraints.txt
#   bench/rivals/node/node_modules   npm ci from bench/rivals/node/package-lock.json
# Idempotent: re-running only checks what is there. Prints the installed versions.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

# the real interpreter, not a pyenv shim (so the venv does not depend on shim state)
PY="$(python3 -c 'import sys; print(sys.executable)')"
if [ ! -x .venv/bin/python ]; then
  echo "creating venv with $PY"
  "$PY" -m venv .venv
fi
STAMP=.venv/.rivals-installed
if [ ! -f "$STAMP" ] || ! cmp -s <(cat requirements.txt constraints.txt) "$STAMP"; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
  cat requirements.txt constraints.txt > "$STAMP"
fi

cd node
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
cd ..

echo "== bench/rivals versions"
.venv/bin/python - <<'EOF'
import importlib.metadata as m, platform
print("python", platform.python_version())
for p in ["crewai", "langgraph", "langchain-core", "autogen-agentchat", "autogen-core", "autogen-ext"]:
    print(f"{p}=={m.version(p)}")
EOF
echo "node $(node --version)"
node -e 'for (const p of ["@langchain/langgraph","@langchain/core","zod"]) console.log(p+"@"+require("./node/node_modules/"+p+"/package.json").version)'
