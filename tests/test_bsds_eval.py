"""The BSDS500 boundary benchmark (`prepare/bsds_eval.py`).

Against the official MATLAB benchmark's own fixture (bench/data: inputs and its test_1..test_4
outputs), and on tiny synthetic maps whose counts are worked out by hand in the comments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from shared_data import SHARED_DATASETS, needs_real_data

from core.errors import UserError
from prepare.bsds_eval import (
    collect,
    evaluate_dir,
    load_ground_truth,
    match_counts,
    register,
    seg_boundaries,
    write_eval_files,
)

BENCH = SHARED_DATASETS / "bsds500" / "bench" / "data"
needs_bench = needs_real_data(BENCH)
EVAL_FILES = ("eval_bdry.txt", "eval_bdry_thr.txt", "eval_bdry_img.txt")
# bench/test_benchs.m: 1 = allBench on ucm2, 2 = boundaryBench on png, 3 = boundaryBench on segs with
# nthresh 99 (the benchmark then uses one "threshold" per segmentation), 4 = allBench on segs; all thin.
BENCH_CASES = {1: ("ucm2", 5), 2: ("png", 5), 3: ("segs", 99), 4: ("segs", 5)}

# Synthetic images: 30x40, diagonal 50 px, so max_dist 0.03 is a 1.5 px tolerance.
SHAPE = (30, 40)
MAX_DIST = 0.03


def _line(row: int, first: int, last: int) -> np.ndarray:
    """A horizontal one-pixel line on `row`, columns first..last inclusive."""
    bmap = np.zeros(SHAPE, dtype=bool)
    bmap[row, first : last + 1] = True
    return bmap


def _write_gt(path: Path, boundaries: list[np.ndarray]) -> None:
    """A BSDS500-style groundTruth .mat: a cell array of structs with Segmentation and Boundaries."""
    cell = np.empty((1, len(boundaries)), dtype=object)
    for i, bdry in enumerate(boundaries):
        cell[0, i] = {"Segmentation": np.ones(bdry.shape, dtype=np.uint16), "Boundaries": bdry.astype(np.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"groundTruth": cell})


def _write_png(path: Path, pb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(pb * 255).astype(np.uint8)).save(path)


def _counts(pred: np.ndarray, gts: list[np.ndarray], **kwargs: object) -> list[int]:
    return match_counts(pred.astype(float), gts, np.array([0.5]), max_dist=MAX_DIST, **kwargs)[0].tolist()


# --- the official benchmark's fixture ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Our eval_bdry*.txt for bench test_1..test_4, computed from the fixture inputs once."""
    outputs = {}
    for case, (inputs, nthresh) in BENCH_CASES.items():
        out = tmp_path_factory.mktemp(f"test_{case}")
        write_eval_files(out, evaluate_dir(BENCH / inputs, BENCH / "groundTruth", nthresh=nthresh))
        outputs[case] = out
    return outputs


@needs_bench
@pytest.mark.parametrize("case", sorted(BENCH_CASES))
@pytest.mark.parametrize("name", EVAL_FILES)
def test_bench_matches_matlab_reference(bench_outputs: dict[int, Path], case: int, name: str) -> None:
    ours = (bench_outputs[case] / name).read_text().splitlines()
    reference = (BENCH / f"test_{case}" / name).read_text().splitlines()
    # Same layout: line count and '%10g' field widths.
    assert [len(line) for line in ours] == [len(line) for line in reference]
    # Same numbers to 2 decimals. The MATLAB matcher (sparse CSA with random outlier edges) is itself
    # not exact: its test_3 and test_4 (same input, same settings) differ by up to 7e-4.
    diff = np.abs(np.loadtxt(bench_outputs[case] / name, ndmin=2) - np.loadtxt(BENCH / f"test_{case}" / name, ndmin=2))
    assert diff.max() <= 0.005, f"test_{case}/{name}: max abs difference {diff.max():.4f}"


@needs_bench
def test_bench_ground_truth_loads() -> None:
    gts = load_ground_truth(BENCH / "groundTruth" / "2018.mat")
    assert len(gts) == 5 and all(gt.shape == (481, 321) and gt.dtype == bool for gt in gts)


# --- hand-checkable synthetic cases --------------------------------------------------------------------------------


def test_identical_prediction_scores_one() -> None:
    gt = _line(10, 5, 34)  # 30 px
    assert _counts(gt, [gt]) == [30, 30, 30, 30]
    scores = collect([match_counts(gt.astype(float), [gt], np.array([0.25, 0.75]), max_dist=MAX_DIST)], [0.25, 0.75])
    assert (scores.ods_r, scores.ods_p, scores.ods_f) == (1.0, 1.0, 1.0)
    assert (scores.ois_r, scores.ois_p, scores.ois_f) == (1.0, 1.0, 1.0)


def test_shift_within_tolerance_matches_and_beyond_does_not() -> None:
    gt = _line(10, 5, 34)
    assert _counts(_line(11, 5, 34), [gt]) == [30, 30, 30, 30]  # 1 px <= 1.5 px
    assert _counts(_line(12, 5, 34), [gt]) == [0, 30, 0, 30]  # 2 px, and sqrt(5) diagonally, > 1.5 px
    assert _counts(_line(11, 5, 24), [gt]) == [20, 30, 20, 20]  # 20 of the 30 GT pixels found: R 2/3, P 1


def test_matching_is_one_to_one() -> None:
    # Two machine lines 1 px above and below a 30 px GT line: each GT pixel takes one machine pixel.
    pred = _line(9, 5, 34) | _line(11, 5, 34)
    assert _counts(pred, [_line(10, 5, 34)]) == [30, 30, 30, 60]


def test_thinning_applies_before_matching() -> None:
    band = _line(10, 5, 34) | _line(11, 5, 34)  # 2 px thick, 60 px
    gt = _line(10, 5, 34)
    assert _counts(band, [gt], thin=False) == [30, 30, 30, 60]
    # Guo-Hall thinning (the algorithm bwmorph 'thin' cites) leaves row 11, columns 5..33: 29 px, all
    # within 1.5 px of a distinct GT pixel (the last one diagonally, sqrt(2) px).
    assert _counts(band, [gt]) == [29, 30, 29, 29]


def test_two_ground_truths_accumulate() -> None:
    pred = _line(10, 5, 34) | _line(20, 5, 14)  # 30 + 10 machine pixels
    gt1 = _line(10, 5, 34)  # all 30 matched by the row-10 line
    gt2 = _line(11, 5, 24) | _line(20, 5, 9) | _line(25, 5, 14)  # 20 + 5 matched, the row-25 10 px too far
    # cntR = 30 + 25, sumR = 30 + 35; machine pixels matched in some GT: row 10 (30) + row 20 cols 5..9 (5).
    assert _counts(pred, [gt1, gt2]) == [55, 65, 35, 40]


def test_collect_by_hand() -> None:
    thresh = np.array([0.25, 0.75])
    image_a = np.array([[8, 10, 4, 10], [5, 10, 5, 5]])  # R .8 P .4 F .533; R .5 P 1 F .667
    image_b = np.array([[9, 12, 9, 10], [2, 12, 2, 2]])  # R .75 P .9 F .818; R 1/6 P 1 F .286
    scores = collect([image_a, image_b], thresh)
    # Dataset: t1 R 17/22 P 13/20; t2 R 7/22 P 7/7.
    r, p = np.array([17 / 22, 7 / 22]), np.array([13 / 20, 1.0])
    np.testing.assert_allclose(scores.per_threshold, np.column_stack([thresh, r, p, 2 * r * p / (r + p)]))
    # OIS: image A at t2 (5, 10, 5, 5), image B at t1 (9, 12, 9, 10): R 14/22, P 14/15.
    ois_r, ois_p = 14 / 22, 14 / 15
    assert scores.ois_r == pytest.approx(ois_r) and scores.ois_p == pytest.approx(ois_p)
    assert scores.ois_f == pytest.approx(2 * ois_r * ois_p / (ois_r + ois_p))
    # ODS: the best F on the straight segment between the two dataset points (here inside it).
    d = np.linspace(0, 1, 100_001)
    seg_r, seg_p = r[0] + (r[1] - r[0]) * d, p[0] + (p[1] - p[0]) * d
    assert scores.ods_f == pytest.approx((2 * seg_r * seg_p / (seg_r + seg_p)).max(), abs=1e-4)
    assert 0.25 < scores.ods_threshold < 0.75
    # AP: P linear in R between (7/22, 1) and (17/22, 13/20), sampled at R = 0.32 .. 0.77 (46 points).
    grid = np.arange(32, 78) / 100
    assert scores.ap == pytest.approx(0.01 * (1 - 0.35 * (grid - 7 / 22) / (10 / 22)).sum())
    # Per image: 1-based index, and the best F of each image's own segment.
    assert scores.per_image[:, 0].tolist() == [1, 2]
    assert scores.per_image[1, 1:].tolist() == pytest.approx([0.25, 0.75, 0.9, 9 / 11])  # B: best at t1


def test_seg_boundaries_as_seg2bdry() -> None:
    # seg2bdry(seg, 'imageSize'): a pixel is on a boundary when its 2x2 block (right, below) holds two
    # labels; the last row/column compare along the border only; the bottom-right corner is 0.
    seg = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    assert seg_boundaries(seg).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 0, 0]]


def test_evaluate_dir_files_cli_and_workers(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt = _line(10, 5, 34)
    for name in ("a", "b"):
        _write_gt(gt_dir / f"{name}.mat", [gt])
    _write_png(pred_dir / "a.png", gt.astype(float))  # perfect
    np.save(pred_dir / "b.npy", 0.6 * _line(12, 5, 34))  # 2 px off: no match
    serial = evaluate_dir(pred_dir, gt_dir, nthresh=3, max_dist=MAX_DIST)
    parallel = evaluate_dir(pred_dir, gt_dir, nthresh=3, max_dist=MAX_DIST, workers=2)
    np.testing.assert_array_equal(serial.per_threshold, parallel.per_threshold)
    # Thresholds .25 .5 .75: image a gives 30/30 matched throughout; b adds 30 GT px and 30 machine px
    # (0 matched) at .25 and .5, nothing at .75.
    np.testing.assert_allclose(serial.per_threshold[:, 1:3], [[0.5, 0.5], [0.5, 0.5], [0.5, 1.0]])

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["bsds-eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--out-dir", str(out),
                              "--nthresh", "3", "--max-dist", str(MAX_DIST), "--workers", "1"])
    args.func(args)
    assert (out / "eval_bdry_thr.txt").read_text().splitlines() == [
        "      0.25        0.5        0.5        0.5",
        "       0.5        0.5        0.5        0.5",
        "      0.75        0.5          1   0.666667",
    ]
    first_image = (out / "eval_bdry_img.txt").read_text().splitlines()[0]
    assert first_image == "         1       0.25          1          1          1"
    assert sorted(p.name for p in out.iterdir()) == sorted(EVAL_FILES)  # nothing partial left behind


def test_bad_inputs_raise_one_user_error(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _write_gt(gt_dir / "1.mat", [_line(10, 5, 34)])
    _write_png(pred_dir / "1.png", _line(10, 5, 34).astype(float))

    with pytest.raises(UserError, match=r"no ground-truth \.mat files in .*groundTruth/<split>/<id>\.mat"):
        evaluate_dir(pred_dir, tmp_path / "missing")
    _write_png(pred_dir / "2.png", np.zeros(SHAPE))
    with pytest.raises(UserError, match=r"have no ground truth .*2\.png.*name predictions <id>"):
        evaluate_dir(pred_dir, gt_dir)
    (pred_dir / "2.png").unlink()

    _write_png(pred_dir / "1.png", np.zeros((10, 10)))
    with pytest.raises(UserError, match=r"1\.png is 10x10 but its ground truth .* is 30x40"):
        evaluate_dir(pred_dir, gt_dir)
    (pred_dir / "1.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot decode prediction .*1\.png"):
        evaluate_dir(pred_dir, gt_dir)
    (pred_dir / "1.png").unlink()
    np.save(pred_dir / "1.npy", np.full(SHAPE, 255.0))
    with pytest.raises(UserError, match=r"outside \[0, 1\]; rescale"):
        evaluate_dir(pred_dir, gt_dir)
    (gt_dir / "1.mat").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"cannot read ground truth .*1\.mat"):
        evaluate_dir(pred_dir, gt_dir)


def test_empty_npy_and_out_of_range_ucm2_are_refused(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _write_gt(gt_dir / "1.mat", [_line(10, 5, 34)])
    pred_dir.mkdir()
    (pred_dir / "1.npy").write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot decode prediction .*1\.npy .*Save it with numpy\.save"):
        evaluate_dir(pred_dir, gt_dir)
    (pred_dir / "1.npy").unlink()
    ucm2 = np.zeros((2 * SHAPE[0] + 1, 2 * SHAPE[1] + 1))
    ucm2[2::2, 2::2] = _line(10, 5, 34) * 255.0  # scaled as an 8-bit image
    scipy.io.savemat(pred_dir / "1.mat", {"ucm2": ucm2})
    with pytest.raises(UserError, match=r"1\.mat has values outside \[0, 1\]; rescale"):
        evaluate_dir(pred_dir, gt_dir)
    ucm2[2, 2] = np.nan
    scipy.io.savemat(pred_dir / "1.mat", {"ucm2": ucm2 / 255.0})
    with pytest.raises(UserError, match=r"1\.mat has NaN values"):
        evaluate_dir(pred_dir, gt_dir)


def test_missing_predictions_are_listed_unless_max_images_leaves_them_out(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for image_id in ("1", "2", "3"):
        _write_gt(gt_dir / f"{image_id}.mat", [_line(10, 5, 34)])
    _write_png(pred_dir / "1.png", _line(10, 5, 34).astype(float))
    _write_png(pred_dir / "3.png", _line(10, 5, 34).astype(float))
    with pytest.raises(UserError, match=r"1 of 3 ground truths in .*gt have no prediction in .*pred \(ids 2\)"):
        evaluate_dir(pred_dir, gt_dir)
    with pytest.raises(UserError, match=r"1 of 2 ground truths .*\(ids 2\)"):
        evaluate_dir(pred_dir, gt_dir, max_images=2)
    scores = evaluate_dir(pred_dir, gt_dir, max_images=1)  # 3.png lies beyond the first image: not scored
    assert len(scores.per_image) == 1 and scores.ods_f == 1.0
