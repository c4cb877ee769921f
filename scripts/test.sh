#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy) and pytest, which starts its own throwaway
# PostgreSQL and synthesizes the stacks offline. Installs what it needs first.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/runner -k drift
set -euo pipefail
. "$(dirname "$0")/lib/help.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"
.venv/bin/ruff check .
.venv/bin/mypy database stacks benchmarks app.py tests
MYPYPATH=lambda .venv/bin/mypy -p schema_migrations   # the deploy-time handlers (lambda/ is no package name)
.venv/bin/pytest "$@"
