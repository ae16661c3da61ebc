"""The DAVIS-layout builder: real sequences linked in place, or procedural videos without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import SHARED_DATASETS

from core.errors import UserError
from prepare.davis import build_davis


def _frames(root: Path, sequence: str) -> tuple[list[Path], list[Path]]:
    return (sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg")),
            sorted((root / "Annotations" / "480p" / sequence).glob("*.png")))


def test_procedural_videos_move_one_object(tmp_path: Path) -> None:
    manifest = build_davis(tmp_path / "absent", tmp_path / "DAVIS", seed=0, procedural_sequences=2)
    assert manifest["source"] == "procedural" and manifest["sequences"] == {"procedural0": 8, "procedural1": 8}
    frames, masks = _frames(tmp_path / "DAVIS", "procedural0")
    assert [p.stem for p in frames] == [p.stem for p in masks] == [f"{i:05d}" for i in range(8)]
    first, last = (np.array(Image.open(p)) for p in (masks[0], masks[-1]))
    assert set(np.unique(first)) == {0, 255}  # DAVIS-2016 binary masks
    assert (first > 0).sum() == (last > 0).sum() > 0  # the object glides (np.roll keeps its area)
    again = build_davis(tmp_path / "absent", tmp_path / "again", seed=0, procedural_sequences=2)
    assert again["sequences"] == manifest["sequences"]
    assert np.array_equal(np.array(Image.open(_frames(tmp_path / "again", "procedural0")[1][3])),
                          np.array(Image.open(masks[3])))


def test_real_sequences_are_linked_in_place(tmp_path: Path) -> None:
    manifest = build_davis(SHARED_DATASETS, tmp_path / "DAVIS", seed=0, procedural_sequences=2)
    assert manifest["source"] == "davis2016_mini"
    assert manifest["sequences"] == {"blackswan": 50, "car-shadow": 40, "dog": 60}
    frames, masks = _frames(tmp_path / "DAVIS", "dog")
    assert len(frames) == len(masks) == 60 and frames[0].is_symlink()


def test_source_without_sequences_names_the_layout(tmp_path: Path) -> None:
    (tmp_path / "davis2016_mini" / "DAVIS").mkdir(parents=True)
    with pytest.raises(UserError, match="JPEGImages/480p/<sequence>"):
        build_davis(tmp_path, tmp_path / "out", seed=0, procedural_sequences=1)
