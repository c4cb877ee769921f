#!/usr/bin/env bash
# Installs everything the project needs from its lock files: the Python environment (.venv, from
# uv.lock) and the CDK CLI with its Node.js runtime (node_modules, from package-lock.json).
# Idempotent and quick when nothing changed. Usage: scripts/setup.sh [python|node|all]
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
UV_VERSION=0.13.9
tools=.local/tools

python_ok() {
  command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'
}

setup_python() {
  python_ok || { echo "setup: Python 3.11 or newer is required as python3" >&2; exit 1; }
  if [ ! -x "$tools/uv/bin/uv" ] || [ "$("$tools/uv/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "setup: installing uv $UV_VERSION into $tools/uv"
    rm -rf "$tools/uv"
    python3 -m venv "$tools/uv"
    "$tools/uv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  local stamp=.venv/.uv-lock.sha256
  local want
  want=$(cat uv.lock pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: syncing .venv from uv.lock"
    UV_PYTHON_DOWNLOADS=never UV_PYTHON="$(command -v python3)" "$tools/uv/bin/uv" sync --frozen --quiet
    echo "$want" > "$stamp"
  fi
}

setup_node() {
  command -v npm >/dev/null || { echo "setup: npm (Node.js 20+) is required" >&2; exit 1; }
  local stamp=node_modules/.package-lock.sha256
  local want
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -x node_modules/.bin/cdk ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing the CDK CLI and Node.js 22 from package-lock.json"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
  fi
}

case "$what" in
  python) setup_python ;;
  node) setup_node ;;
  all) setup_python; setup_node ;;
  *) echo "usage: scripts/setup.sh [python|node|all]" >&2; exit 2 ;;
esac
