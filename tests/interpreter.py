"""The `python` tests start their `python -m` subprocesses with.

`make test` runs the suite under `python -m core.prefork run`, whose shim ($DENSEBENCH_PYTHON) starts them
as forks of a server that has imported torch, torchvision and Snakemake, as `make demo` starts its jobs;
pytest on its own starts fresh interpreters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.prefork import SHIM_ENV

PYTHON = os.environ.get(SHIM_ENV, sys.executable)
PYTHON_BIN = str(Path(PYTHON).parent)  # first on a Snakemake job's PATH, so that its `python` is this one
