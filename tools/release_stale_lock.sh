#!/usr/bin/env bash
# A killed run (kill -9, lost session) leaves Snakemake's lock in .snakemake/locks; release it
# when no other Snakemake process runs, so rerunning `make demo` resumes instead of refusing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .snakemake/locks ] && [ -n "$(ls -A .snakemake/locks)" ] || exit 0
if pgrep -f "python -m snakemake" >/dev/null; then
  echo "another Snakemake runs here; not touching its lock" >&2
  exit 0
fi
"${VENV:-.venv}/bin/python" -m snakemake --unlock >/dev/null
echo "released the lock left by an interrupted run"
