#!/usr/bin/env bash
# `make test`: the test suite as two pytest runs side by side. The SLURM integration tests (marker `slurm`,
# ~3 min, mostly waiting on the local cluster's queue) run in one process; pytest-xdist spreads the rest
# over WORKERS processes (default: every core). Extra arguments go to both runs.
#
# Where this process may start the local cluster (root, ../shared/tools/local-slurm present), it starts it
# first (~4 s) and stops it after both runs: once SLURM's client is installed, every Snakemake import asks the
# controller for its config and waits ~10 s when none answers, so the cluster stays up while any test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
WORKERS=${WORKERS:-$(nproc)}
LOCAL_SLURM=../shared/tools/local-slurm
logs=$(mktemp -d)

stop_cluster() {
  if [ -f "$logs/started" ]; then bash "$LOCAL_SLURM/stop-local-slurm.sh" >> "$logs/local-slurm.log" 2>&1 || true; fi
  rm -rf "$logs"
}
trap stop_cluster EXIT

if [ "$(id -u)" = 0 ] && [ -d "$LOCAL_SLURM" ] && ! sinfo -h >/dev/null 2>&1; then
  if bash "$LOCAL_SLURM/start-local-slurm.sh" > "$logs/local-slurm.log" 2>&1; then
    touch "$logs/started"
  else
    echo "the local SLURM did not start:" > "$logs/slurm-tests.log"; tail -20 "$logs/local-slurm.log" >> "$logs/slurm-tests.log"
  fi
fi

# Only the files that hold cluster tests: collecting the others would import torch, Detectron2 and mmseg.
"$PY" -m pytest -q -m slurm -p no:cacheprovider $(grep -l "pytest.mark.slurm" tests/test_*.py) "$@" \
  >> "$logs/slurm-tests.log" 2>&1 &
slurm_pid=$!

status=0
# --dist loadfile: a file's tests share one worker, so its module fixtures (trained references) are built once.
# Under core.prefork, the tests' `python -m` subprocesses (tests/interpreter.py) start as forks of a server that
# has imported torch, torchvision and Snakemake once, as `make demo`'s jobs do; the cluster tests start fresh ones.
"$PY" -m core.prefork run --dir "$logs/prefork" --preload torch torchvision pandas matplotlib.figure snakemake.cli -- \
  "$PY" -m pytest -q -m "not slurm" -n "$WORKERS" --dist loadfile "$@" || status=$?
slurm_status=0
wait "$slurm_pid" || slurm_status=$?
echo "--- SLURM integration tests (pytest -m slurm, run beside the others) ---"
cat "$logs/slurm-tests.log"
# pytest exits 5 when it collects no test: arguments that select none of the cluster tests.
[ "$slurm_status" = 5 ] && slurm_status=0
[ "$status" = 0 ] && [ "$slurm_status" = 0 ]
