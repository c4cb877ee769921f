# shellcheck shell=bash
# Sourced first by the shell entry points: -h or --help prints the script's header comment (its
# usage) and exits before the script does anything; `usage` prints it for a wrong invocation.
usage() { awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$0"; }
for argument in "$@"; do
  case "$argument" in -h | --help) usage; exit 0 ;; esac
done
