"""Where the shared folder (../shared beside the repository) is, as the tests see it.

It may be a symbolic link: compare resolved paths with resolved paths.
"""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATASETS = SHARED / "datasets"
