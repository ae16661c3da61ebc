"""Atomic writes: nothing partial is ever taken as finished.

Every output is written to a temporary sibling and renamed into place, so an interrupted job
leaves either the old file or none, never a truncated one that Snakemake would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.

    `suffix`: the temporary's suffix, for writers that pick a format from it (e.g. OpenCV's `.yml.gz`).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions an ordinary open() would (shared clusters).
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save(obj)` to `path`, atomically. Written through a file object, so the archive's records are
    named "archive/..." rather than after the temporary file: the same object gives the same bytes."""
    import torch  # here: the light CLIs that use this module do not need torch

    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        torch.save(obj, file)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write `data` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())
