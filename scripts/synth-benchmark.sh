#!/usr/bin/env bash
# Synth time of both stacks with and without the deploy-time migration resource, same run (not a test).
#   scripts/synth-benchmark.sh                    5 fresh-process synths of each variant, alternating
#   scripts/synth-benchmark.sh --reps 3 --json /tmp/synth.json
# Results and how to read them: docs/performance.md, "Synth benchmark".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" all >&2
exec "$root/.venv/bin/python" -P "$root/benchmarks/synth.py" "$@"
