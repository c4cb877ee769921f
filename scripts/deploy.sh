#!/usr/bin/env bash
# Deploys one environment's stack (PgSchemaDeploy-ENVIRONMENT) with the pinned CDK CLI: checks
# credentials, region and CDK bootstrap first, then prints the stack outputs and the migration
# summary (file, line and SQLSTATE when a migration fails). --check stops after the checks.
# The GitHub Actions workflows run this same command.
#
# Usage: scripts/deploy.sh ENVIRONMENT [--check] [-c KEY=VALUE ...]
# Exit status: 0 done; 1 AWS or cdk failure (one line says why); 2 bad arguments or refused.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all >&2
exec .venv/bin/python -m stacks.cli.cdk_commands deploy "$@"
