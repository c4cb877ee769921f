#!/usr/bin/env bash
# Benchmark the migration runner against psql on a throwaway PostgreSQL server (not a test).
#   scripts/benchmark.sh                                 1,000 migrations, 3 repetitions
#   scripts/benchmark.sh --n 200 --reps 5 --json /tmp/bench.json
# All flags: scripts/benchmark.sh --help. Results and how to read them: docs/performance.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" python >&2
exec "$root/.venv/bin/python" -P "$root/benchmarks/runner.py" "$@"
