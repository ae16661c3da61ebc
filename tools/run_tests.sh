#!/usr/bin/env bash
# `make test`: the test suite as two pytest runs side by side. The SLURM integration tests (marker `slurm`,
# ~3 min, mostly waiting on the local cluster's queue) run in one process; pytest-xdist spreads the rest
# over WORKERS processes (default: every core). Extra arguments go to both runs.
#
# Where this process may start the local cluster (root, ../shared/tools/local-slurm present), it starts it
# (~4 s, while pytest collects) and stops it (~10 s) once the cluster tests are done. Once SLURM's client is
# installed, a Snakemake import asks the controller for its config and waits ~10 s when none answers; the other
# run's Snakemake calls are forks of the prefork server below, which imported Snakemake (and asked) while the
# cluster was up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
WORKERS=${WORKERS:-$(nproc)}
LOCAL_SLURM=../shared/tools/local-slurm
logs=$(mktemp -d)

stop_cluster() {
  if [ -f "$logs/started" ]; then
    bash "$LOCAL_SLURM/stop-local-slurm.sh" >> "$logs/local-slurm.log" 2>&1 || true
    rm -f "$logs/started"
  fi
}
trap 'stop_cluster; rm -rf "$logs"' EXIT  # also when interrupted before the cluster tests ended

(
  if [ "$(id -u)" = 0 ] && [ -d "$LOCAL_SLURM" ] && ! sinfo -h >/dev/null 2>&1; then
    if bash "$LOCAL_SLURM/start-local-slurm.sh" > "$logs/local-slurm.log" 2>&1; then
      touch "$logs/started"
    else
      echo "the local SLURM did not start:"; tail -20 "$logs/local-slurm.log"
    fi
  fi
  code=0
  # Only the files that hold cluster tests: collecting the others would import torch, Detectron2 and mmseg.
  "$PY" -m pytest -q -m slurm -p no:cacheprovider $(grep -l "pytest.mark.slurm" tests/test_*.py) "$@" || code=$?
  stop_cluster
  exit "$code"
) > "$logs/slurm-tests.log" 2>&1 &
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
