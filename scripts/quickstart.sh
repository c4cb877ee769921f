#!/usr/bin/env bash
# The main job on a fresh machine, no AWS account needed: install the pinned toolchain, start
# the project-local PostgreSQL, apply database/migrations, show the status, and synthesize the
# CloudFormation stacks of every environment. Safe to run again at any time.
set -euo pipefail
. "$(dirname "$0")/lib/help.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/local-db.sh start
./scripts/run-migrations.sh --environment local
./scripts/run-migrations.sh --status --environment local
./scripts/synth.sh
cat <<'TXT'

Next:
  ./scripts/run-migrations.sh --new "add phone to users"   write the next migration
  ./scripts/run-migrations.sh --environment local          apply it locally
  ./scripts/local-db.sh stop                               stop the local PostgreSQL
  ./scripts/deploy.sh testing                              deploy; the migrations run inside it (AWS credentials)
  ./scripts/run-migrations.sh --status --environment testing   the deployed schema, from this machine
TXT
