#!/usr/bin/env bash
# The deploy-time migration asset, measured (not a test): zipped size, rebuild time and the cold
# init of both functions with the Lambda runtime's CPython, beside baselines from the same run.
#   scripts/lambda-benchmark.sh                    7 repetitions
#   scripts/lambda-benchmark.sh --reps 3 --json /tmp/lambda.json
# Results and how to read them: docs/performance.md, "Deploy-time asset".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" all >&2
exec "$root/.venv/bin/python" -P "$root/benchmarks/lambda_asset.py" "$@"
