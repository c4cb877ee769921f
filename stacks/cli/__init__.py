"""The command line of the infrastructure: scripts/deploy.sh, diff.sh and destroy.sh (cdk_commands),
with their AWS checks (aws_preflight) and reports (cdk_report)."""
