#!/usr/bin/env bash
# Apply, inspect or plan database migrations: the same runner locally, in CI and on deploy.
#   scripts/run-migrations.sh --environment local          apply pending migrations locally
#   scripts/run-migrations.sh --status --db-uri "$URI"     applied / pending / drifted / missing
#   scripts/run-migrations.sh --dry-run --environment local
#   scripts/run-migrations.sh --new "add savings goals"    create the next numbered file
# All flags: scripts/run-migrations.sh --help
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$root/.venv/bin/python" ] || "$root/scripts/setup.sh" python >&2
# Cache bytecode for the runner's own modules even where PYTHONDONTWRITEBYTECODE is set: every
# deploy's no-op run pays the difference. (.venv is compiled at install by scripts/setup.sh.)
unset PYTHONDONTWRITEBYTECODE
# -P: import the runner from the project, never from a same-named folder in the caller's cwd.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$root/.venv/bin/python" -P -m database.cli "$@"
