"""Where the shared folder (../shared beside the repository) is, as the tests see it, and the marker of
tests that read its real data.

It may be a symbolic link: compare resolved paths with resolved paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATASETS = SHARED / "datasets"
BSDS = SHARED_DATASETS / "bsds500" / "BSDS500"


def needs_real_data(*paths: Path) -> pytest.MarkDecorator:
    """Skip where a clone has no ../shared; in CI (`CI` set) never: the test runs and fails on the missing data."""
    missing = [str(path) for path in paths if not path.exists()]
    return pytest.mark.skipif(bool(missing) and not os.environ.get("CI"), reason=f"real data not found: {missing}")
