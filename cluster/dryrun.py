"""One paper-scale dry run, as users plan it: `snakemake -n -p --profile slurm --config scale=paper ...`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PROFILE = "slurm"  # the repo-root link to workflow/profiles/slurm


def dry_run(target: str | list[str], configfiles: list[Path], workdir: Path) -> tuple[str, float]:
    """The printout (stdout + stderr) of the dry run of `target` (a file or several) and its wall time in seconds.

    Runs from the repository root, where Snakemake looks up `--profile slurm`; `--directory workdir`
    keeps its .snakemake/ out of the repository. Later configfiles override earlier ones.
    """
    targets = [target] if isinstance(target, str) else target
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "-n", "-p", "--profile", PROFILE, "--config", "scale=paper",
               "--configfile", *[str(path) for path in configfiles], "--", *targets]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = result.stdout + result.stderr
    if result.returncode:
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise UserError(f"the dry run of {' '.join(targets)} failed (exit {result.returncode}):\n{tail}\n"
                        "Fix what it names (a --configfile value, or a dataset root: `python -m cluster placeholders` "
                        "makes empty ones).")
    return out, seconds
