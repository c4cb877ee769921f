#!/usr/bin/env bash
# Checks this branch's database/migrations against the branch it merges into (git only): a
# migration the target already has may not be edited, renamed or deleted, and a new file may not
# reuse a number the target uses. Run by the pull-request workflow; works the same locally.
#
# Usage: scripts/check-migrations.sh --base origin/main [--head REV] [--migrations-dir DIR]
# Exit status: 0 clean; 1 a problem (each named with its file); 2 bad arguments or git failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python >&2
exec .venv/bin/python -m database.cli.check_migrations "$@"
