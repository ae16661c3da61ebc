#!/usr/bin/env bash
# One-command, idempotent local install into .venv (CPU). Called by `make demo` / `make test`.
# Measured choices are explained in DEVELOPERS.md; the GPU-cluster install is envs/*.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
D2_VERSION=0.5

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

pip install --no-deps -r requirements/lock.txt

# Detectron2 is not on PyPI by its name. detectron2-cdo 0.5 is its Python code without the C++
# sources (layers/csrc), so build it as pure Python: same sdist, with no extension modules.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('detectron2_cdo')" >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  pip download --no-deps --no-binary :all: --no-build-isolation -d "$work" "detectron2-cdo==$D2_VERSION"
  tar xzf "$work"/detectron2_cdo-"$D2_VERSION".tar.gz -C "$work"
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$work/detectron2_cdo-$D2_VERSION/setup.py"
  pip install --no-build-isolation --no-deps "$work/detectron2_cdo-$D2_VERSION"
fi
# The report check (`make demo`) renders results/report.html in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "densebench: no chromium on PATH; install Debian's chromium for the report check (make demo)" >&2
  fi
fi
echo "densebench: environment ready in $VENV"
