"""Dense evaluations (finetune/dense_eval): DAVIS J and F, label propagation, K-means, segment search,
and both commands end to end on tiny hand-made datasets."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
import yaml
from PIL import Image
from skimage.morphology import disk

from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from finetune.common import frozen_resnet
from finetune.dense_eval import cli, davis_metrics
from finetune.dense_eval.davis import DavisProtocol, list_sequences, read_mask, summarize
from finetune.dense_eval.features import feature_extractor
from finetune.dense_eval.kmeans import kmeans
from finetune.dense_eval.label_propagation import (
    PropagationSettings,
    one_hot,
    predict,
    propagate,
    upsample_labels,
)
from finetune.dense_eval.segment_search import class_iou, confusion, majority_labels, retrieve, scores
from prepare.voc import voc_palette
from pretrain.export import export
from pretrain.methods.hiergroup import HierGroup
from pretrain.runs import METHOD_EMBEDDING, run_config

SMOKE_PRETRAIN = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "config" / "smoke.yaml")
                                .read_text())["pretrain"]
DAVIS_PROTOCOL = {"sequences": "all", "max_side": None, "layer": "layer3", "embedding": True, "stride": 8,
                  "context_frames": 2,
                  "topk": 1, "coord_weight": 5.0, "temperature": None, "soft_labels": False,
                  "keep_first_frame": False}
SEARCH_PROTOCOL = {"train_aug": False, "max_side": None, "layer": "layer3", "embedding": True, "stride": 8,
                   "clusters": 4,
                   "kmeans_iters": 10, "topk": 1}


def _run(command: str, data_root: Path, protocol: dict, out: Path, backbone: str = "none",
         embedding: Path | None = None) -> dict:
    """`python -m finetune <command>` in this process; return its metrics.json."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args([command, "--data-root", str(data_root), "--backbone", backbone, "--arch", "resnet18",
                              "--protocol-json", json.dumps(protocol), "--seed", "0", "--threads", "1",
                              "--out", str(out), *(["--embedding", str(embedding)] if embedding else [])])
    args.func(args)
    return json.loads((out / "metrics.json").read_text())


# --- J and F ----------------------------------------------------------------------------------------


def test_region_similarity_by_hand() -> None:
    truth = np.zeros((4, 4), bool)
    truth[1:3, 1:3] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[1:3, 2:4] = True  # 4 pixels, 2 shared
    assert davis_metrics.region_similarity(truth, pred) == pytest.approx(2 / 6)
    void = np.zeros((4, 4), bool)
    void[1, 3] = True  # drops one predicted-only pixel from the union
    assert davis_metrics.region_similarity(truth, pred, void) == pytest.approx(2 / 5)
    empty = np.zeros((4, 4), bool)
    assert davis_metrics.region_similarity(empty, empty) == 1.0  # official: empty union -> 1
    assert davis_metrics.region_similarity(empty, pred) == 0.0
    assert davis_metrics.region_similarity(truth, empty) == 0.0


def test_boundary_map_of_a_square() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    edge = davis_metrics.boundary_map(mask)
    expected = np.zeros((8, 8), bool)
    expected[1, 1:6] = expected[2:6, 1] = True  # outside pixels whose east / south / south-east is inside
    expected[2:6, 5] = expected[5, 2:6] = True  # inside pixels whose east / south / south-east is outside
    assert np.array_equal(edge, expected)
    assert edge.sum() == 16
    assert not davis_metrics.boundary_map(np.ones((5, 5), bool)).any()  # a full mask has no boundary


def test_boundary_f_by_hand() -> None:
    # 10 x 10 image: radius = ceil(0.008 * hypot(10, 10)) = ceil(0.113) = 1 pixel.
    assert davis_metrics.boundary_radius((10, 10)) == 1.0
    assert davis_metrics.boundary_radius((480, 854)) == 8.0  # ceil(7.84) at DAVIS 480p
    truth = np.zeros((10, 10), bool)
    truth[:5] = True  # boundary: row 4, 10 pixels
    pred = np.zeros((10, 10), bool)
    pred[:6, :5] = True
    pred[:7, 5:] = True  # boundary: row 5 cols 0-4, (6, 4), row 6 cols 5-9: 11 pixels
    assert davis_metrics.boundary_map(pred).sum() == 11
    # Matched: the 5 pixels of row 5 (1 from row 4) both ways; precision 5/11, recall 5/10.
    precision, recall = 5 / 11, 5 / 10
    expected = 2 * precision * recall / (precision + recall)
    assert davis_metrics.boundary_f(truth, pred) == pytest.approx(expected)
    assert expected == pytest.approx(10 / 21)
    shifted = np.zeros((10, 10), bool)
    shifted[:7] = True  # boundary 2 rows away: nothing matches
    assert davis_metrics.boundary_f(truth, shifted) == 0.0
    near = np.zeros((10, 10), bool)
    near[:6] = True  # boundary 1 row away: everything matches
    assert davis_metrics.boundary_f(truth, near) == 1.0


def test_boundary_f_empty_masks_follow_the_official_cases() -> None:
    empty = np.zeros((6, 6), bool)
    square = np.zeros((6, 6), bool)
    square[2:4, 2:4] = True
    assert davis_metrics.boundary_f(empty, empty) == 1.0  # P = R = 1
    assert davis_metrics.boundary_f(square, empty) == 0.0  # P = 1, R = 0
    assert davis_metrics.boundary_f(empty, square) == 0.0  # P = 0, R = 1
    full = np.ones((6, 6), bool)
    assert davis_metrics.boundary_f(full, full) == 1.0  # no boundary in either


def _official_f(pred: np.ndarray, truth: np.ndarray, bound_th: float = 0.008) -> float:
    """The davis2017-evaluation definition written out directly: XOR with the east, south and south-east
    shifted masks (last row: east only, last column: south only, corner 0), cv2 dilation by skimage's disk."""
    def bmap(seg: np.ndarray) -> np.ndarray:
        e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
        e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
        b = (seg ^ e) | (seg ^ s) | (seg ^ se)
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = False
        return b

    radius = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    fb, gb = bmap(pred), bmap(truth)
    fd = cv2.dilate(fb.astype(np.uint8), disk(radius).astype(np.uint8))
    gd = cv2.dilate(gb.astype(np.uint8), disk(radius).astype(np.uint8))
    nf, ng = fb.sum(), gb.sum()
    if nf == 0 or ng == 0:
        p, r = (1.0 if nf == 0 else 0.0), (1.0 if ng == 0 else 0.0)
    else:
        p, r = (fb & (gd > 0)).sum() / nf, (gb & (fd > 0)).sum() / ng
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@pytest.mark.parametrize("shape, bound_th", [((60, 90), 0.008), ((240, 427), 0.008), ((50, 70), 3)])
def test_boundary_f_matches_the_official_definition(shape: tuple[int, int], bound_th: float) -> None:
    rng = np.random.default_rng(shape[0])
    for _ in range(4):
        blobs = [cv2.GaussianBlur(rng.random(shape), (0, 0), shape[0] / 12) for _ in range(2)]
        truth, pred = blobs[0] > np.median(blobs[0]), blobs[1] > np.median(blobs[1])
        pred |= np.roll(truth, 2, axis=1)  # partial overlap with the truth
        expected = _official_f(pred, truth, bound_th)
        assert davis_metrics.boundary_f(truth, pred, bound_th=bound_th) == pytest.approx(expected, abs=1e-12)
        assert 0 < expected < 1


def test_summary_averages_objects_as_the_official_code() -> None:
    # Overall means run over all objects (3 here), not over sequences; NaN frames are skipped (nanmean).
    per_sequence = {"one": {"J": [[1.0, 0.5]], "F": [[0.5, 0.5]]},
                    "two": {"J": [[0.0, 0.0], [1.0, float("nan")]], "F": [[1.0, 1.0], [0.0, 0.0]]}}
    overall, table = summarize(per_sequence)
    assert overall == {"J_mean": pytest.approx(100 * (0.75 + 0.0 + 1.0) / 3, abs=0.005),
                       "F_mean": pytest.approx(100 * (0.5 + 1.0 + 0.0) / 3, abs=0.005),
                       "JF_mean": pytest.approx(100 * (1.75 / 3 + 1.5 / 3) / 2, abs=0.005)}
    assert table["two"] == {"J_mean": 50.0, "F_mean": 50.0, "JF_mean": 50.0, "objects": 2, "frames_scored": 2}
    assert table["one"]["JF_mean"] == 62.5


def test_read_mask_palette_ids_and_binary_masks(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [255, 2, 0]], np.uint8)
    png = Image.fromarray(ids, mode="P")
    png.putpalette(voc_palette())
    png.save(tmp_path / "multi.png")
    assert read_mask(tmp_path / "multi.png").tolist() == [[0, 1, 2], [0, 2, 0]]  # 255 (void) read as 0
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(tmp_path / "binary.png")
    assert read_mask(tmp_path / "binary.png").tolist() == [[0, 1], [1, 0]]  # DAVIS-2016: 255 is the object


# --- label propagation ------------------------------------------------------------------------------


def _one_hot_positions(height: int, width: int) -> torch.Tensor:
    """Features [h * w, h, w]: cell i has the unit vector e_i, so only a cell itself is similar to it."""
    return torch.eye(height * width).reshape(height * width, height, width)


@pytest.mark.parametrize("settings", [
    PropagationSettings(context_frames=2, topk=10, coord_weight=0.0),
    PropagationSettings(context_frames=2, topk=10, coord_weight=5.0),
    PropagationSettings(context_frames=3, topk=4, coord_weight=1.0, keep_first_frame=True),
    PropagationSettings(context_frames=1, topk=10, temperature=0.05, soft_labels=True),
])
def test_propagation_of_a_static_mask_is_exact(settings: PropagationSettings) -> None:
    height, width = 6, 7
    mask = torch.zeros(height, width, dtype=torch.long)
    mask[1:4, 2:5] = 1
    mask[4:, :3] = 2
    feats = _one_hot_positions(height, width)
    outputs = list(propagate([feats] * 6, one_hot(mask, 3), settings))
    assert len(outputs) == 5
    for distribution in outputs:
        assert torch.equal(upsample_labels(distribution, (height, width)), mask)
        if settings.temperature is None:
            assert torch.equal(distribution, one_hot(mask, 3))  # weight 1 on itself, 0 elsewhere


def test_predict_weights_neighbours_by_similarity() -> None:
    # A 1 x 2 grid; both query cells are e_0; the context cells have cosine 0.6 (label 0) and 0.9 (label 1).
    query = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(2, 1, 2)
    context_feats = torch.tensor([[0.6, 0.9], [0.8, math.sqrt(1 - 0.81)]]).reshape(2, 1, 2)
    context_labels = one_hot(torch.tensor([[0, 1]]), 2)
    scores = predict(query, [(context_feats, context_labels)], PropagationSettings(topk=2))
    assert scores[:, 0, 0].tolist() == pytest.approx([0.6 / 1.5, 0.9 / 1.5])  # y = sum_j sim_j y_j, normalised
    nearest = predict(query, [(context_feats, context_labels)], PropagationSettings(topk=1))
    assert nearest[:, 0, 0].tolist() == [0.0, 1.0]
    soft = predict(query, [(context_feats, context_labels)], PropagationSettings(topk=2, temperature=0.1))
    assert soft[1, 0, 0].item() == pytest.approx(1 / (1 + math.exp(-3)))  # softmax of (0.6, 0.9) / 0.1


def test_spatial_coordinates_prefer_the_nearer_of_equal_features() -> None:
    # 1 x 5 grid; context cells 0 and 4 share the query's feature, with labels 1 and 2; the others differ.
    feats = torch.zeros(2, 1, 5)
    feats[0, 0, [0, 4]] = 1.0
    feats[1, 0, 1:4] = 1.0
    labels = one_hot(torch.tensor([[1, 0, 0, 0, 2]]), 3)
    query = feats.clone()
    query[:, 0, 1] = torch.tensor([1.0, 0.0])  # query cell 1 looks like cells 0 and 4, and is next to cell 0
    near = predict(query, [(feats, labels)], PropagationSettings(topk=1, coord_weight=2.0))
    assert near[:, 0, 1].argmax() == 1
    query[:, 0, 3] = torch.tensor([1.0, 0.0])  # cell 3 is next to cell 4
    near = predict(query, [(feats, labels)], PropagationSettings(topk=1, coord_weight=2.0))
    assert near[:, 0, 3].argmax() == 2


def test_keep_first_frame_recovers_a_label_lost_in_between() -> None:
    # Frame 1 looks unlike everything, so frame 2 can only find its labels in the first frame.
    height, width = 2, 3
    feats = _one_hot_positions(height, width)
    other = torch.zeros(height * width + 1, height, width)
    other[-1] = 1.0  # every cell of frame 1 has a feature orthogonal to the others
    padded = torch.cat([feats, torch.zeros(1, height, width)])
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    settings = PropagationSettings(context_frames=1, topk=1, keep_first_frame=True)
    outputs = list(propagate([padded, other, padded], one_hot(mask, 2), settings))
    assert torch.equal(outputs[1].argmax(dim=0), mask)


# --- features ---------------------------------------------------------------------------------------


def test_feature_strides_and_weights(tmp_path: Path) -> None:
    net = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "backbone.pth")
    loaded = frozen_resnet("resnet18", tmp_path / "backbone.pth", seed=0)
    assert torch.equal(loaded.layer3[0].conv1.weight, net.layer3[0].conv1.weight)
    image = torch.rand(1, 3, 64, 96)
    for layer, stride, channels in (("layer3", 8, 256), ("layer3", 16, 256), ("layer4", 8, 512), ("layer2", 4, 128)):
        out = feature_extractor("resnet18", None, 0, layer, stride)(image)
        assert out.shape == (1, channels, 64 // stride, 96 // stride)
        assert torch.allclose(out.norm(dim=1), torch.ones(1, 64 // stride, 96 // stride), atol=1e-5)
    with pytest.raises(UserError, match="holds a resnet18 backbone but --arch is resnet50"):
        frozen_resnet("resnet50", tmp_path / "backbone.pth", seed=0)
    with pytest.raises(UserError, match="stride 32 is not reachable at layer3"):
        feature_extractor("resnet18", None, 0, "layer3", 32)


def test_random_init_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = (frozen_resnet("resnet18", None, seed) for seed in (7, 7, 8))
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


# --- K-means and segment search -------------------------------------------------------------------


def test_kmeans_is_seeded_and_finds_separated_clusters() -> None:
    rng = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(20)
    points = centres[truth] + 0.1 * torch.randn(60, 2, generator=rng)
    first, _ = kmeans(points, 3, 10, torch.Generator().manual_seed(5))
    again, _ = kmeans(points, 3, 10, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    # The same partition as the truth, up to renaming the clusters.
    pairs = set(zip(truth.tolist(), first.tolist(), strict=True))
    assert len(pairs) == 3 and len({p[1] for p in pairs}) == 3
    noise = torch.randn(200, 8, generator=rng)
    runs = [kmeans(noise, 15, 20, torch.Generator().manual_seed(s))[0] for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    few, centres_few = kmeans(points[:4], 15, 5, torch.Generator().manual_seed(0))
    assert centres_few.shape[0] == 4 and few.max() < 4  # k is capped at the number of points


def test_segment_labels_retrieval_and_iou_by_hand() -> None:
    segments = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    labels = np.array([[3, 3, 5, 255], [3, 7, 255, 255], [255, 255, 255, 255]])
    assert majority_labels(segments, labels, 3).tolist() == [3, 5, -1]

    memory = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    memory_classes = torch.tensor([4, 9, 9, 2])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.96, 0.28]])
    assert retrieve(queries, memory, memory_classes, 1).tolist() == [4, 2, 4]
    # top 3 of query 0: class 4 (1.0), class 9 (0.8 + 0.6 = 1.4) -> 9
    assert retrieve(queries, memory, memory_classes, 3)[0].item() == 9

    truth = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0]])
    matrix = confusion(truth, pred)
    assert matrix.sum() == 7  # the void pixel is left out
    iou = class_iou(matrix)
    # class 0: TP 2, truth 3, pred 3 -> 2/4; class 1: TP 3, truth 4, pred 4 -> 3/5
    assert iou[:2].tolist() == pytest.approx([0.5, 0.6])
    assert np.isnan(iou[2:]).all()
    metrics, absent, frequency = scores(matrix)
    assert metrics == {"mIoU": 55.0, "IoU_background": 50.0, "IoU_aeroplane": 60.0}
    assert "bus" in absent and len(absent) == 19
    assert frequency["aeroplane"] == 100.0 and frequency["bus"] == 0.0


# --- end to end -------------------------------------------------------------------------------------


def _noise_image(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=95)


def _davis_root(root: Path, frames: int = 4) -> Path:
    """One sequence of identical 64 x 64 noise frames; the object is the left half (cell-aligned)."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    for folder in ("JPEGImages", "Annotations"):
        (root / folder / "480p" / "still").mkdir(parents=True)
    for t in range(frames):
        _noise_image(root / "JPEGImages" / "480p" / "still" / f"{t:05d}.jpg", seed=0)
        Image.fromarray(mask, mode="L").save(root / "Annotations" / "480p" / "still" / f"{t:05d}.png")
    return root


def test_davis_command_tracks_a_static_video_exactly(tmp_path: Path) -> None:
    root = _davis_root(tmp_path / "DAVIS")
    result = _run("davis", root, DAVIS_PROTOCOL, tmp_path / "out")
    assert result["protocol"] == "davis"
    assert result["metrics"] == {"J_mean": 100.0, "F_mean": 100.0, "JF_mean": 100.0}
    assert result["per_sequence"]["still"]["frames_scored"] == 2  # 4 frames minus the first and the last
    assert result["weights"] is None and result["provenance"]["seed"] == 0
    assert result["features"] == "layer3 (stride 8)"  # random init has no embedding
    with pytest.raises(UserError, match="different run"):  # the work dir belongs to this protocol
        _run("davis", root, {**DAVIS_PROTOCOL, "topk": 3}, tmp_path / "out")


def _hiergroup_export(out: Path) -> HierGroup:
    """A hierarchical-grouping network exported as a pretraining run would be, BN statistics made non-trivial."""
    torch.manual_seed(0)
    net = HierGroup("resnet18", run_config(SMOKE_PRETRAIN, "hiergroup", {}))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    export(net.state_dict(), {"method": "hiergroup"}, out, METHOD_EMBEDDING["hiergroup"])
    return net.eval()


def test_embedding_features_are_the_runs_own_embedding(tmp_path: Path) -> None:
    """What DAVIS, segment search and the PCA figure read for a hierarchical-grouping row: its network's F
    (Sec. 4.2), from backbone.pth + embedding.pth, L2-normalised per cell."""
    net = _hiergroup_export(tmp_path)
    assert json.loads((tmp_path / "meta.json").read_text())["embedding"] == "hypercolumn"
    model = feature_extractor("resnet18", tmp_path / "backbone.pth", 0, "layer3", 8, tmp_path / "embedding.pth")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    features = model(images)
    expected = torch.nn.functional.normalize(net.embed(TF.normalize(images, IMAGENET_MEAN, IMAGENET_STD)), dim=1)
    assert features.shape == (2, 32, 16, 24) and model.name == "embedding (32-d hypercolumn, stride 4)"
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=1e-5)


def test_davis_reads_a_hierarchical_grouping_rows_embedding(tmp_path: Path) -> None:
    root = _davis_root(tmp_path / "DAVIS")
    _hiergroup_export(tmp_path / "run")
    backbone, embedding = str(tmp_path / "run" / "backbone.pth"), tmp_path / "run" / "embedding.pth"
    result = _run("davis", root, DAVIS_PROTOCOL, tmp_path / "out", backbone, embedding)
    assert result["features"] == "embedding (32-d hypercolumn, stride 4)"
    assert result["metrics"] == {"J_mean": 100.0, "F_mean": 100.0, "JF_mean": 100.0}  # identical frames
    with pytest.raises(UserError, match="protocol's embedding is false"):
        _run("davis", root, {**DAVIS_PROTOCOL, "embedding": False}, tmp_path / "o2", backbone, embedding)
    with pytest.raises(UserError, match="needs the --backbone"):
        _run("davis", root, DAVIS_PROTOCOL, tmp_path / "o3", "none", embedding)
    export(HierGroup("resnet18", run_config(SMOKE_PRETRAIN, "hiergroup", {})).state_dict(), {}, tmp_path / "densecl",
           None)  # a method without an embedding head: an empty embedding.pth
    with pytest.raises(UserError, match="holds no embedding head"):
        _run("davis", root, DAVIS_PROTOCOL, tmp_path / "o4", backbone, tmp_path / "densecl" / "embedding.pth")


def test_davis_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="JPEGImages/480p"):
        _run("davis", tmp_path / "nowhere", DAVIS_PROTOCOL, tmp_path / "out")
    root = _davis_root(tmp_path / "DAVIS")
    (root / "Annotations" / "480p" / "still" / "00000.png").unlink()
    with pytest.raises(UserError, match="no first-frame mask"):
        _run("davis", root, DAVIS_PROTOCOL, tmp_path / "out")
    with pytest.raises(UserError, match=r"sequences \['cows'\] are not in"):
        _run("davis", root, {**DAVIS_PROTOCOL, "sequences": ["cows"]}, tmp_path / "out")
    with pytest.raises(UserError, match="unknown protocol keys"):
        DavisProtocol.from_json(json.dumps({**DAVIS_PROTOCOL, "radius": 12}))
    with pytest.raises(UserError, match="temperature must be a positive number"):
        DavisProtocol.from_json(json.dumps({**DAVIS_PROTOCOL, "temperature": 0}))


def _voc_root(root: Path) -> Path:
    """VOC2012 layout: 3 noise images with one class each (1, 2, 15) and a void border; train = val."""
    voc = root / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    ids = ["a", "b", "c"]
    for seed, (image_id, cls) in enumerate(zip(ids, (1, 2, 15), strict=True)):
        _noise_image(voc / "JPEGImages" / f"{image_id}.jpg", seed, size=(48, 64))
        labels = np.full((48, 64), cls, np.uint8)
        labels[:2] = 255
        png = Image.fromarray(labels, mode="P")
        png.putpalette(voc_palette())  # without a palette, PIL renumbers the indices on saving
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_segment_search_command_retrieves_its_own_segments(tmp_path: Path) -> None:
    # With val = train, every val segment finds itself in the memory (cosine 1): all labels are right.
    root = _voc_root(tmp_path / "VOCdevkit")
    result = _run("segment-search", root, SEARCH_PROTOCOL, tmp_path / "out")
    assert result["metrics"] == {"mIoU": 100.0, "IoU_aeroplane": 100.0, "IoU_bicycle": 100.0, "IoU_person": 100.0}
    assert "background" in result["absent_classes"]
    assert result["images"] == {"memory": 3, "val": 3}
    assert result["memory_segments"] == 12  # 4 clusters per image, all labelled
    again = _run("segment-search", root / "VOC2012", SEARCH_PROTOCOL, tmp_path / "out2")  # the VOC2012 folder
    assert again["metrics"] == result["metrics"]


def test_segment_search_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="segmentation layout"):
        _run("segment-search", tmp_path, SEARCH_PROTOCOL, tmp_path / "out")
    root = _voc_root(tmp_path / "VOCdevkit")
    with pytest.raises(UserError, match="aug.txt"):
        _run("segment-search", root, {**SEARCH_PROTOCOL, "train_aug": True}, tmp_path / "out")
    (root / "VOC2012" / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(UserError, match="files are missing"):
        _run("segment-search", root, SEARCH_PROTOCOL, tmp_path / "out")


def test_davis_sequences_from_an_official_split_file(tmp_path: Path) -> None:
    images = _davis_root(tmp_path / "DAVIS") / "JPEGImages" / "480p"
    (images / "other").mkdir()
    (tmp_path / "DAVIS" / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_text("still\n")
    assert list_sequences(images, "ImageSets/2017/val.txt") == ["still"]
    assert list_sequences(images, "all") == ["other", "still"]
    with pytest.raises(UserError, match="ImageSets/2016/val.txt is missing"):
        list_sequences(images, "ImageSets/2016/val.txt")
