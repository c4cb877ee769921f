#!/usr/bin/env bash
# Synthesizes every environment's CloudFormation stack, offline and without AWS credentials:
# installs what is missing (scripts/setup.sh, idempotent), runs `cdk synth` quietly (cdk-nag runs
# inside the app: any unacknowledged finding fails), then prints the stacks and the wall time.
#
# Usage: scripts/synth.sh [cdk synth options], for example
#   scripts/synth.sh                          # both environments, flavours from stacks/settings.py
#   scripts/synth.sh -c database=rds-free     # every environment on the RDS free-tier flavour
#   scripts/synth.sh -c database.testing=rds-free PgSchemaDeploy-testing
#   scripts/synth.sh -c vpc_id=vpc-0123456789abcdef0   # existing VPC: needs credentials (lookup)
# Set SYNTH_VERBOSE=1 to see the CDK CLI's own output; CDK_OUTDIR to change cdk.out.
set -euo pipefail
. "$(dirname "$0")/lib/help.sh"
cd "$(dirname "$0")/.."

scripts/setup.sh all >&2

export PATH="$PWD/node_modules/.bin:$PATH"   # Node 22 for the CLI and for jsii (not the system's Node 20)
export JSII_NODE="$PWD/node_modules/.bin/node"
export CDK_DISABLE_VERSION_CHECK=true CDK_DISABLE_CLI_TELEMETRY=true   # no network calls of the CLI's own

outdir="${CDK_OUTDIR:-cdk.out}"
lookups=(--no-lookups)   # a context lookup would need credentials: fail instead of trying
case " $* " in *vpc_id*) lookups=(--lookups) ;; esac

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
if ! cdk synth --quiet --no-notices "${lookups[@]}" --output "$outdir" "$@" >"$log" 2>&1; then
  cat "$log" >&2
  echo "synth: FAILED (cdk synth $*)" >&2
  exit 1
fi
end=$(date +%s%N)
[ "${SYNTH_VERBOSE:-0}" = 1 ] && cat "$log" >&2

# The stacks; and asset folders no asset manifest references any more are deleted: cdk synth never
# removes them, and every change of the migrations or handlers leaves the old Lambda asset behind.
stacks=$(.venv/bin/python - "$outdir" <<'PY'
import json, pathlib, shutil, sys
outdir = pathlib.Path(sys.argv[1])
manifest = json.loads((outdir / "manifest.json").read_text())
used = set()
for name, artifact in manifest["artifacts"].items():
    if artifact["type"] == "aws:cloudformation:stack":
        print(f"  {artifact.get('displayName', name)}  ({artifact['properties']['templateFile']})")
    if artifact["type"] == "cdk:asset-manifest":
        assets = json.loads((outdir / artifact["properties"]["file"]).read_text())
        used |= {asset["source"]["path"] for asset in assets.get("files", {}).values()}
        used |= {image["source"]["directory"] for image in assets.get("dockerImages", {}).values()}
for stale in outdir.glob("asset.*"):
    if stale.name not in used:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
PY
)
echo "synth: $(printf '%s\n' "$stacks" | grep -c .) stack(s) in $outdir/, cdk-nag clean:"
printf '%s\n' "$stacks"
awk -v ns=$((end - start)) 'BEGIN { printf "synth: wall time %.1f s\n", ns / 1e9 }'
