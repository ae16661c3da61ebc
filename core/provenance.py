"""Provenance recorded next to every result: which code, config and seed made it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The commit of this checkout, with '-dirty' when tracked files changed; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def config_hash(config: Any) -> str:
    """A short, order-independent hash of a JSON-serialisable config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def provenance(config: Any, seed: int) -> dict[str, Any]:
    """The provenance block stored in every stage output."""
    return {"commit": git_commit(), "config_hash": config_hash(config), "seed": seed}
