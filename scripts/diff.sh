#!/usr/bin/env bash
# Shows what deploying this checkout would change in one environment: the migrations a deploy would
# run and the resource changes. Compares templates through the read-only CDK lookup role (what a
# pull request's role may do); --change-set asks CloudFormation instead (needs the deploy role).
# The GitHub Actions workflows run this same command.
#
# Usage: scripts/diff.sh ENVIRONMENT [--change-set] [-c KEY=VALUE ...]
# Exit status: 0 done; 1 AWS or cdk failure (one line says why); 2 bad arguments or refused.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all >&2
exec .venv/bin/python -m stacks.cli.cdk_commands diff "$@"
