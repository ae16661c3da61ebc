"""Structured-forest edges: training on BSDS500, OpenCV's model format, and OpenCV's inference.

The central check: a forest we train and export gives, through `cv2.ximgproc`, exactly the edge map
of our numpy re-implementation of OpenCV's inference (`prepare.edges.reference`) -- so the file
layout, the node numbering and the feature indexing used in training are OpenCV's.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import edge_model_cli, train_edge_model
from shared_data import BSDS, needs_real_data

from core.errors import UserError, run_cli
from prepare.edges import train as edges_train
from prepare.edges.bsds import list_images, read_rgb, read_segmentations
from prepare.edges.detect import detect_edges, edge_nms, edge_orientation
from prepare.edges.features import (
    channel_shape,
    compute_channels,
    compute_feature_maps,
    grid_positions,
    imsmooth,
    lookup,
    patch_grid,
    to_float_rgb,
    triangle_kernel,
)
from prepare.edges.forest import best_split, discretize, edge_bins, merge_small_segments
from prepare.edges.opencv_model import OpenCVForest, check_model, load_detector, read_model, write_model
from prepare.edges.options import SEOptions
from prepare.edges.reference import predict_edges

needs_bsds = needs_real_data(BSDS / "data")
TEST_IMAGE = "100007"  # a BSDS test image, never used for training here


def _test_image() -> tuple[np.ndarray, np.ndarray]:
    rgb = read_rgb(BSDS / "data" / "images" / "test" / f"{TEST_IMAGE}.jpg")
    annotators = read_segmentations(BSDS / "data" / "groundTruth" / "test" / f"{TEST_IMAGE}.mat", rgb.shape[:2])
    return rgb, np.any([boundaries for _, boundaries in annotators], axis=0)


# ---------------------------------------------------------------- (a) format + feature indexing


@needs_bsds
def test_trained_forest_in_opencv_equals_numpy_reference(tiny_model: Path) -> None:
    forest = read_model(tiny_model)
    assert forest.options.numberOfTrees == 2 and forest.options.numberOfTreesToEvaluate == 2
    internal = forest.feature_ids[forest.childs != 0]
    options = forest.options
    assert (internal < options.n_regular).any() and (internal >= options.n_regular).any(), "both feature kinds"
    assert internal.max() < options.n_features and len(forest.edge_bins) > 0 and forest.edge_bins.max() < 256
    rgb, _ = _test_image()
    for image in (rgb, np.ascontiguousarray(rgb[:301, :455]), np.ascontiguousarray(rgb.transpose(1, 0, 2))):
        opencv = detect_edges(tiny_model, image)
        reference = predict_edges(forest, to_float_rgb(image))
        assert opencv.shape == image.shape[:2] and opencv.dtype == np.float32
        assert opencv.max() > 0.1
        np.testing.assert_array_equal(opencv, reference)  # bit-exact: see prepare/edges/reference.py


def test_random_forest_round_trip_and_opencv_equals_reference(tmp_path: Path) -> None:
    """Random full trees over all feature ids: file round trip, then OpenCV == reference on odd sizes."""
    rng = np.random.default_rng(0)
    options = SEOptions(numberOfTrees=3, numberOfTreesToEvaluate=2)
    image = (rng.random((24, 36, 3)) * 255).astype(np.uint8)
    image = cv2.resize(image, (150, 101), interpolation=cv2.INTER_CUBIC)  # smooth random structures
    maps = compute_feature_maps(to_float_rgb(image), options)
    depth, trees = 5, 3
    n_nodes = 2 ** (depth + 1) - 1
    childs = np.zeros((trees, n_nodes), np.int32)
    fids = np.zeros_like(childs)
    thresholds = np.zeros((trees, n_nodes), np.float32)
    internal = np.arange(2**depth - 1)
    childs[:, internal] = 2 * internal + 2  # breadth-first: node k's left child is 2k + 1 (1-based: 2k + 2)
    fids[:, internal] = rng.integers(0, options.n_features, (trees, internal.size))
    for tree in range(trees):
        values = lookup(maps, fids[tree, internal][None, :], rng.integers(0, 30, (64, 1)),
                        rng.integers(0, 50, (64, 1)), options)
        thresholds[tree, internal] = np.median(values, axis=0)
    counts = rng.integers(0, 20, trees * n_nodes) * (childs.reshape(-1) == 0)
    forest = OpenCVForest(options, childs, fids, thresholds,
                          np.concatenate([[0], np.cumsum(counts)]).astype(np.int32),
                          rng.integers(0, 256, counts.sum()).astype(np.int32))
    path = tmp_path / "random.yml.gz"
    write_model(path, forest)
    with gzip.open(path, "rt") as text:
        assert "childs:" in text.read()
    back = read_model(path)
    for field in ("childs", "feature_ids", "thresholds", "edge_boundaries", "edge_bins"):
        np.testing.assert_array_equal(getattr(back, field), getattr(forest, field))
    # The official model.yml.gz (converted by opencv_contrib's former modelConvert.m) is plain YAML
    # with the edge arrays cut into rows of 1000 values, not one per tree: it must load the same.
    official = tmp_path / "official_layout.yml.gz"
    official.write_bytes(gzip.compress(_converter_layout(forest, row=7).encode()))
    assert check_model(official) == options
    for field in ("childs", "feature_ids", "thresholds", "edge_boundaries", "edge_bins"):
        np.testing.assert_array_equal(getattr(read_model(official), field), getattr(forest, field))
    for model in (path, official):
        detector = load_detector(model)
        for height, width in ((101, 150), (64, 64), (33, 50)):
            resized = np.ascontiguousarray(cv2.resize(image, (width, height)))
            np.testing.assert_array_equal(detector.detectEdges(to_float_rgb(resized)),
                                          predict_edges(forest, to_float_rgb(resized)))


def _converter_layout(forest: OpenCVForest, row: int) -> str:
    """YAML text as modelConvert.m writes it: one row per tree for the node arrays, flat rows after."""
    lines = ["%YAML:1.0", "", "options:"] + [f"    {k}: {v}" for k, v in forest.options.as_dict().items()]

    def rows(name: str, values: list[np.ndarray], fmt: str) -> None:
        lines.append(f"{name}:")
        lines.extend("    - [" + ",".join(fmt % v for v in part) + "]" for part in values)

    rows("childs", list(forest.childs), "%d")
    rows("featureIds", list(forest.feature_ids), "%d")
    rows("thresholds", list(forest.thresholds.astype(np.float64)), "%.9e")
    for name, flat in (("edgeBoundaries", forest.edge_boundaries), ("edgeBins", forest.edge_bins)):
        rows(name, [flat[i:i + row] for i in range(0, len(flat), row)], "%d")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- (b) a forest predictable by hand


def test_one_split_forest_output_by_hand(tmp_path: Path) -> None:
    """Root: L channel at patch pixel (row 8, col 8) < 0.1 -> leaf with one edge pixel at (0, 0) of the patch.

    Image 64 x 200: black for columns < 100, white after. Patch (i, j) reads the L channel around
    image column 2j + 8 (channel pixel j + 8 of the padded, 2x-shrunk map) and, if dark, adds
    step = 2 * 2^2 / 16^2 / 1 = 1/32 at pixel (2i, 2j). Dark for j <= 44, bright for j >= 47. The final
    [1/4, 1/2, 1/4] smoothing spreads the stride-2 dots to a flat 1/32 / 4 = 1/128 (REFLECT_101 border).
    """
    options = SEOptions(numberOfTrees=1, numberOfTreesToEvaluate=1)
    feature = 0 * 16 * 16 + 8 * 16 + 8  # channel 0 (L), column 8, row 8: column-major within the patch
    forest = OpenCVForest(
        options,
        childs=np.array([[2, 0, 0]], np.int32),  # root's left child is node 1 (1-based 2), right node 2
        feature_ids=np.array([[feature, 0, 0]], np.int32),
        thresholds=np.array([[0.1, 0, 0]], np.float32),
        edge_boundaries=np.array([0, 0, 1, 1], np.int32),  # node 1 owns bins[0:1]
        edge_bins=np.array([0], np.int32),  # column 0 * 16 + row 0
    )
    path = tmp_path / "one_split.yml.gz"
    write_model(path, forest)
    image = np.zeros((64, 200, 3), np.uint8)
    image[:, 100:] = 255
    edges = detect_edges(path, image)
    # Channel map 40 x 108 -> 24 x 92 patch positions: dots on rows 0, 2, ..., 46.
    assert channel_shape(image.shape, options) == (40, 108) and patch_grid(image.shape, options) == (24, 92)
    rows = 47
    np.testing.assert_array_equal(edges[:rows, :88], 1 / 128)
    np.testing.assert_array_equal(edges[rows, :88], 1 / 256)  # half the row-46 dots spread down
    np.testing.assert_array_equal(edges[rows + 1:], 0)
    np.testing.assert_array_equal(edges[:, 96:], 0)
    np.testing.assert_array_equal(edges, predict_edges(forest, to_float_rgb(image)))
    # Threshold below every value: all patches go right (no bins), the map is empty.
    forest.thresholds[0, 0] = -1.0
    write_model(path, forest)
    assert not detect_edges(path, image).any()  # the detector cache follows the file's mtime


# ---------------------------------------------------------------- (c) the trained model finds BSDS boundaries


@needs_bsds
def test_trained_model_responds_on_human_boundaries(tiny_model: Path) -> None:
    rgb, boundaries = _test_image()
    edges = detect_edges(tiny_model, rgb)
    near = cv2.dilate(boundaries.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    on, off = edges[near].mean(), edges[~near].mean()
    assert on > 2.5 * off, (on, off)  # measured ~5x for this tiny model; chance is 1x
    orientation = edge_orientation(tiny_model, edges)
    thin = edge_nms(tiny_model, edges, orientation)
    assert orientation.shape == thin.shape == edges.shape
    assert orientation.min() >= 0 and orientation.max() < np.pi + 1e-6
    assert (thin <= edges + 1e-6).all() and 0 < np.count_nonzero(thin) < np.count_nonzero(edges)


# ---------------------------------------------------------------- (d) errors


def test_missing_or_broken_model_names_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "none.yml.gz"
    for call in (lambda: load_detector(missing), lambda: detect_edges(missing, np.zeros((8, 8, 3), np.uint8))):
        with pytest.raises(UserError, match=r"not found.*python -m prepare edge-model.*model\.yml\.gz"):
            call()
    garbage = tmp_path / "garbage.yml.gz"
    garbage.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(UserError, match=r"(unreadable|not a usable).*edge-model"):
        load_detector(garbage)
    foreign = tmp_path / "foreign.yml"
    storage = cv2.FileStorage(str(foreign), cv2.FILE_STORAGE_WRITE)
    storage.write("something", 1)
    storage.release()
    with pytest.raises(UserError, match=r"not a usable structured-edge model \(no `options` map\)"):
        check_model(foreign)
    with pytest.raises(UserError, match=r"must end in \.yml\.gz"):
        write_model(tmp_path / "model.bin", OpenCVForest(SEOptions(numberOfTrees=1), *[np.zeros((1, 1))] * 3,
                                                         np.zeros(2, np.int32), np.zeros(0, np.int32)))


def test_missing_bsds_layout_and_bad_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(edge_model_cli, ["edge-model", "--bsds-root", str(tmp_path), "--out", str(tmp_path / "m.yml.gz")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "BSDS500 layout not found" in message and "data/{images,groundTruth}/{train,val,test}" in message
    for split in ("train", "val"):
        (tmp_path / "data" / "images" / split).mkdir(parents=True)
        (tmp_path / "data" / "groundTruth" / split).mkdir(parents=True)
        (tmp_path / "data" / "images" / split / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"ground truth .*1\.mat missing"):
        list_images(tmp_path, ["train"])
    for split in ("train", "val"):
        (tmp_path / "data" / "groundTruth" / split / "1.mat").write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot decode image .*1\.jpg"):
        edges_train.train_forest(tmp_path, tmp_path / "m.yml.gz", trees=1, samples_per_tree=10, progress=False)
    with pytest.raises(UserError, match=r"must end in \.yml\.gz"):
        edges_train.train_forest(tmp_path, tmp_path / "model.bin", trees=1, samples_per_tree=10)
    with pytest.raises(UserError, match=r"--samples-per-tree >= 2"):
        edges_train.train_forest(tmp_path, tmp_path / "m.yml.gz", samples_per_tree=1)


# ---------------------------------------------------------------- (e) determinism and resuming


@needs_bsds
def test_same_seed_same_bytes_and_resume_trains_only_missing_trees(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    whole, resumed = tmp_path / "a" / "model.yml.gz", tmp_path / "b" / "model.yml.gz"
    train_edge_model(whole, trees=2, images=1, samples=2000)
    train_edge_model(resumed, trees=1, images=1, samples=2000)  # an interrupted run: tree 0 only
    capsys.readouterr()
    train_edge_model(resumed, trees=2, images=1, samples=2000)
    assert "tree 1/2: reusing" in capsys.readouterr().out
    assert whole.read_bytes() == resumed.read_bytes()
    shutil.copy(edges_train.sidecar_dir(whole) / "tree_001.npz", edges_train.sidecar_dir(resumed) / "tree_000.npz")
    train_edge_model(resumed, trees=2, images=1, samples=2000)  # a foreign tree file is retrained, not trusted
    assert "retraining" in capsys.readouterr().out
    assert whole.read_bytes() == resumed.read_bytes()
    train_edge_model(resumed, trees=2, images=1, samples=2000, seed=2)
    assert whole.read_bytes() != resumed.read_bytes()
    capsys.readouterr()
    edge_model_cli(["edge-model", "--bsds-root", str(BSDS), "--splits", "train", "--trees", "2", "--trees-eval", "1",
          "--samples-per-tree", "2000", "--seed", "2", "--max-images", "1", "--out", str(resumed)])
    assert capsys.readouterr().out.count("reusing") == 2  # trees-eval is an inference setting
    assert check_model(resumed).numberOfTreesToEvaluate == 1


# ---------------------------------------------------------------- building blocks


def test_features_follow_opencv_layout() -> None:
    options = SEOptions()
    assert options.n_channels == 13 and options.n_regular == 3328 and options.n_features == 3328 + 13 * 300
    assert grid_positions(options).tolist() == [1, 4, 8, 11, 14]
    np.testing.assert_array_equal(triangle_kernel(1), np.float32([0.25, 0.5, 0.25]))
    np.testing.assert_array_equal(triangle_kernel(4) * 25, np.float32([1, 2, 3, 4, 5, 4, 3, 2, 1]))
    # imsmooth = separable triangle filter with a REFLECT_101 border (numpy's "reflect"); we run it
    # through cv2.sepFilter2D, as OpenCV does, for bit-identical training features.
    image = np.random.default_rng(1).random((20, 30, 13), dtype=np.float32)
    kernel = triangle_kernel(4).astype(np.float64)
    padded = np.pad(image.astype(np.float64), ((4, 4), (4, 4), (0, 0)), mode="reflect")
    by_rows = sum(kernel[k] * padded[k:k + 20] for k in range(9))
    numpy_smooth = sum(kernel[k] * by_rows[:, k:k + 30] for k in range(9))
    np.testing.assert_allclose(imsmooth(image, 4), numpy_smooth, atol=1e-6)
    rng = np.random.default_rng(0)
    for height in (50, 51, 321, 323):  # padded sides 66, 67, 337, 339: rounded half to even
        rgb = rng.random((height, 40, 3), dtype=np.float32)
        assert compute_channels(rgb, options).shape == (*channel_shape(rgb.shape, options), 13)
        assert compute_channels(rgb, options).any()
    maps = compute_feature_maps(rng.random((60, 70, 3), dtype=np.float32), options)
    # Regular id = channel * 256 + column * 16 + row, read at (i + row, j + col) for stride = shrink = 2.
    fid = 5 * 256 + 3 * 16 + 7
    assert lookup(maps, np.array([fid]), np.array([4]), np.array([9]), options)[0] == maps.regular[4 + 7, 9 + 3, 5]
    # Self-similarity id: pair (cell 0, cell 6) of channel 2; cell c = grid[c % 5] (row), grid[c // 5] (column).
    fid = 3328 + 2 * 300 + 5  # cell 0's pairs come first: (0,1), ..., (0,24); (0, 6) is the 6th
    a = maps.self_similarity[4 + 1, 9 + 1, 2]
    b = maps.self_similarity[4 + 4, 9 + 4, 2]
    assert lookup(maps, np.array([fid]), np.array([4]), np.array([9]), options)[0] == a - b


def _brute_force_split(data: np.ndarray, classes: np.ndarray) -> tuple[int | None, float, float]:
    n = data.shape[1]
    ones = int(classes.sum())
    initial = best = 1 - ((n - ones) ** 2 + ones**2) / n**2
    found: tuple[int | None, float] = (None, 0.0)
    for feature, row in enumerate(data):
        order = np.argsort(row, kind="stable")
        values, labels = row[order], classes[order]
        for j in range(n - 1):
            left_n, left1 = j + 1, int(labels[: j + 1].sum())
            right_n, right1 = n - left_n, ones - left1
            gini = (left_n - ((left_n - left1) ** 2 + left1**2) / left_n
                    + right_n - ((right_n - right1) ** 2 + right1**2) / right_n) / n
            if gini < best and values[j + 1] - values[j] >= np.float32(1e-6):
                best, found = gini, (feature, np.float32(0.5) * (values[j] + values[j + 1]))
    return found[0], found[1], initial - best


def _gini_gain(left: np.ndarray, classes: np.ndarray) -> float:
    def impurity(labels: np.ndarray) -> float:
        share = labels.mean()
        return 1 - share**2 - (1 - share) ** 2

    n = len(classes)
    return impurity(classes) - (left.sum() * impurity(classes[left]) + (~left).sum() * impurity(classes[~left])) / n


def test_vectorised_split_equals_brute_force_gini_scan() -> None:
    rng = np.random.default_rng(3)
    for trial in range(60):
        data = rng.standard_normal((rng.integers(1, 5), rng.integers(2, 30))).astype(np.float32)
        if trial % 3 == 0:
            data = np.round(data).astype(np.float32)  # ties: no threshold between equal values
        classes = rng.random(data.shape[1]) < 0.5
        feature, threshold, gain = best_split(data, classes, chunk=int(rng.integers(1, 64)))
        expected = _brute_force_split(data, classes)
        if expected[0] is None:
            assert gain <= 1e-12
            continue
        assert gain == pytest.approx(expected[2], abs=1e-12)
        if (feature, threshold) != expected[:2]:  # an exact tie, broken differently by rounding
            assert _gini_gain(data[feature] < threshold, classes) == pytest.approx(gain, abs=1e-12)


def test_discretize_separates_two_kinds_of_patches_and_leaves_edges() -> None:
    vertical = np.zeros((16, 16), np.uint8)
    vertical[:, 8:] = 1
    horizontal = vertical.T.copy()
    labels = np.stack([vertical] * 30 + [horizontal] * 20)
    classes, medoid = discretize(labels, np.random.default_rng(0))
    assert classes is not None and len(set(classes[:30])) == 1 and len(set(classes[30:])) == 1
    assert classes[0] != classes[-1] and medoid < 30  # the majority kind is closest to the mean
    assert discretize(np.zeros((5, 16, 16), np.uint8), np.random.default_rng(0)) == (None, 0)
    # Central differences mark both sides of the boundary: columns 7 and 8; bins are column * 16 + row.
    assert edge_bins(vertical).tolist() == list(range(7 * 16, 9 * 16))
    speck = vertical.copy()
    speck[2:4, 2:4] = 2  # a 4-pixel segment inside segment 0 is merged into it
    np.testing.assert_array_equal(merge_small_segments(speck), vertical)
