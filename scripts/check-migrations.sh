#!/usr/bin/env bash
# Checks this branch's database/migrations against the branch it merges into (git): a migration
# the target already has may not be edited, renamed or deleted, and a new file may not reuse a
# number the target uses. With --schema-snapshot, database/schema.sql must equal the schema the
# migrations produce on a throwaway PostgreSQL 17.9 (scripts/local-db.sh); --write-schema-snapshot
# writes it. Run by the pull-request workflow; works the same locally.
#
# Usage: scripts/check-migrations.sh --base origin/main [--head REV] [--migrations-dir DIR] [--schema-snapshot]
#        scripts/check-migrations.sh --write-schema-snapshot [--migrations-dir DIR]
# Exit status: 0 clean; 1 a problem (each named with its file); 2 bad arguments, git failure or no server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python >&2
exec .venv/bin/python -m database.cli.check_migrations "$@"
