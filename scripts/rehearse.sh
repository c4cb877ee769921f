#!/usr/bin/env bash
# Rehearses the checkout's pending migrations on a copy-on-write clone of a deployed environment's
# Aurora cluster: one db.serverless instance, the environment's migration function applies them
# there and measures durations, locks, rewrites and indexes against the budgets; the clone is
# deleted afterwards, always (also on failure and Ctrl-C). Needs AWS credentials.
#
# Usage: scripts/rehearse.sh ENVIRONMENT [--max-lock SECONDS] [--max-duration SECONDS] [--json]
#        scripts/rehearse.sh ENVIRONMENT --cleanup     delete clones an interrupted run left behind
# Budgets default to the environment's (stacks/settings.py, RehearsalSettings).
# Exit status: 0 within budgets or nothing to rehearse; 1 over budget or a migration failed;
# 2 bad arguments or refused (rds-free has no clone); 3 AWS failure; 130 interrupted.
set -euo pipefail
. "$(dirname "$0")/lib/help.sh"
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" python >&2
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$root/.venv/bin/python" -P -m stacks.cli.rehearse "$@"
