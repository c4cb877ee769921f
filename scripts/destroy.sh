#!/usr/bin/env bash
# Deletes one environment's stack and says first what stays (final snapshot, secret, log groups).
# Production is refused without --force; --force also skips cdk's own y/n question.
# The GitHub Actions workflows run this same command.
#
# Usage: scripts/destroy.sh ENVIRONMENT [--force]
# Exit status: 0 done; 1 AWS or cdk failure (one line says why); 2 bad arguments or refused.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all >&2
exec .venv/bin/python -m stacks.cli.cdk_commands destroy "$@"
