"""The BSDS500-layout builder: real files linked, or procedural images with human-like annotators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from shared_data import SHARED_DATASETS, needs_real_data

from core.errors import UserError
from prepare.bsds import build_bsds
from prepare.bsds_eval import load_ground_truth, seg_boundaries


def test_procedural_build_has_the_official_layout_and_three_annotators(tmp_path: Path) -> None:
    manifest = build_bsds(tmp_path / "absent", tmp_path / "BSDS500", seed=0, procedural_count=2, procedural_size=96)
    assert manifest["source"] == "procedural"
    assert {split: info["images"] for split, info in manifest["splits"].items()} == {"train": 2, "val": 2, "test": 2}
    for mat in (tmp_path / "BSDS500" / "data" / "groundTruth" / "test").glob("*.mat"):
        image = tmp_path / "BSDS500" / "data" / "images" / "test" / f"{mat.stem}.jpg"
        assert image.is_file()
        cell = scipy.io.loadmat(mat)["groundTruth"]
        assert cell.shape == (1, 3)
        segmentations = [cell[0, i]["Segmentation"][0, 0] for i in range(3)]
        assert all(s.dtype == np.uint16 and s.min() == 1 for s in segmentations)
        boundaries = load_ground_truth(mat)  # the benchmark's own reader
        pairs = zip(boundaries, segmentations, strict=True)
        assert all(np.array_equal(b, seg_boundaries(s)) for b, s in pairs)
        # The third annotator draws objects one pixel larger: a different, non-empty boundary set.
        assert boundaries[0].any() and not np.array_equal(boundaries[0], boundaries[2])
    again = tmp_path / "again"
    build_bsds(tmp_path / "absent", again, seed=0, procedural_count=2, procedural_size=96)
    assert manifest["splits"] == build_bsds(tmp_path / "absent", again, 0, 2, 96)["splits"]


def test_bad_procedural_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="datasets.procedural"):
        build_bsds(tmp_path / "absent", tmp_path / "out", seed=0, procedural_count=0, procedural_size=96)


@needs_real_data(SHARED_DATASETS / "bsds500")
def test_real_bsds_is_linked_in_place(tmp_path: Path) -> None:
    # Through a symbolic link, as a user may place the data folder: the build links the real files.
    source = tmp_path / "datasets-link"
    source.symlink_to(SHARED_DATASETS)
    manifest = build_bsds(source, tmp_path / "BSDS500", seed=0, procedural_count=1, procedural_size=96)
    assert manifest["source"] == "bsds500"
    assert {split: info["images"] for split, info in manifest["splits"].items()} == {
        "train": 200, "val": 100, "test": 200}
    linked = tmp_path / "BSDS500" / "data" / "groundTruth" / "test" / "100007.mat"
    real = SHARED_DATASETS / "bsds500/BSDS500/data/groundTruth/test/100007.mat"
    assert linked.is_symlink() and linked.resolve() == real.resolve()
