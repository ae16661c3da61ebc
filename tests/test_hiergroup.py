"""Hierarchical grouping: tree distances and Eq. 2 / 3 on a hand-made hierarchy, the pixel sampler's
statistics and geometry, the two-view sample, Eq. 1 on crafted features, the hypercolumn network."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import UserError
from pretrain.data import SampleSource
from pretrain.grouping import negative_probabilities, positive_probabilities, region_distances, sample_pixels
from pretrain.methods import build_method, method_class
from pretrain.methods.hiergroup import cross_image_features, grouping_loss, sample_features
from pretrain.views import source_to_view

# Leaves 0 1 / 2 3 as the quadrants of an 8 x 8 map; node 4 = {0, 1} at 0.2, node 5 = {2, 3} at 0.5, root 6 at 1.
PARENTS = np.array([4, 4, 5, 5, 6, 6, 6], dtype=np.int32)
ALTITUDES = np.array([0, 0, 0, 0, 0.2, 0.5, 1.0], dtype=np.float32)
LABELS = np.kron(np.array([[0, 1], [2, 3]], dtype=np.uint8), np.ones((4, 4), dtype=np.uint8))
SIGMA = 0.8
D_HAND = [[0, 0.2, 1, 1], [0.2, 0, 1, 1], [1, 1, 0, 0.5], [1, 1, 0.5, 0]]


def _rows(weights: list[list[float]]) -> torch.Tensor:
    return torch.tensor([[w / sum(row) for w in row] for row in weights])


e = math.exp
# Eq. 2: exp(-d / 0.8) off the diagonal, 1 on it; Eq. 3: exp(d / 0.8) off the diagonal, 0 on it.
POS_HAND = _rows([[1, e(-0.25), e(-1.25), e(-1.25)], [e(-0.25), 1, e(-1.25), e(-1.25)],
                  [e(-1.25), e(-1.25), 1, e(-0.625)], [e(-1.25), e(-1.25), e(-0.625), 1]])
NEG_HAND = _rows([[0, e(0.25), e(1.25), e(1.25)], [e(0.25), 0, e(1.25), e(1.25)],
                  [e(1.25), e(1.25), 0, e(0.625)], [e(1.25), e(1.25), e(0.625), 0]])
HIER = {"dim": 8, "hypercolumn_channels": 16, "sigma_p": SIGMA, "regions_per_image": 3, "positives": 4,
        "negatives": 2, "cross_image_negatives": 3}


def _distances() -> torch.Tensor:
    return torch.from_numpy(region_distances(PARENTS, ALTITUDES, 4))


def test_tree_distances_and_sampling_probabilities_by_hand() -> None:
    distances = _distances()
    assert torch.allclose(distances, torch.tensor(D_HAND))
    assert torch.allclose(positive_probabilities(distances, SIGMA), POS_HAND, atol=1e-6)
    assert torch.allclose(negative_probabilities(distances, SIGMA), NEG_HAND, atol=1e-6)
    # Eq. 2 casts the self term to 1 even where the diagonal is not 0.
    assert torch.allclose(positive_probabilities(distances + 3 * torch.eye(4), SIGMA), POS_HAND, atol=1e-6)


def test_single_region_has_no_negatives_and_no_nan() -> None:
    distances = torch.from_numpy(region_distances(np.array([0]), np.array([0.0]), 1))
    assert positive_probabilities(distances, SIGMA).tolist() == [[1.0]]
    assert negative_probabilities(distances, SIGMA).tolist() == [[0.0]]
    samples = sample_pixels(np.zeros((4, 4), np.uint8), distances, 3, 2, 2, SIGMA,
                            torch.Generator().manual_seed(0))
    assert not samples.negatives_valid.any() and torch.isfinite(samples.negatives).all()


def _region_at(labels: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    height, width = labels.shape
    rows, cols = (points[..., 1] * height).floor().long(), (points[..., 0] * width).floor().long()
    return torch.from_numpy(labels.astype(np.int64))[rows, cols]


def test_sampled_regions_follow_equations_and_points_lie_in_them() -> None:
    draws = 20000
    samples = sample_pixels(LABELS, _distances(), 4, draws, draws, SIGMA,
                            torch.Generator().manual_seed(3))
    assert sorted(samples.anchor_regions.tolist()) == [0, 1, 2, 3]  # distinct anchors when there are enough
    for hand, regions in ((POS_HAND, samples.positive_regions), (NEG_HAND, samples.negative_regions)):
        expected = hand[samples.anchor_regions]  # [4, 4]
        frequency = torch.nn.functional.one_hot(regions, 4).float().mean(dim=1)
        # 4 binomial standard deviations: a wrong row (e.g. Eq. 2 without the cast) is off by > 30 of them.
        assert ((frequency - expected).abs() <= 4 * (expected * (1 - expected) / draws).sqrt() + 1e-9).all()
    for points, regions in ((samples.anchors, samples.anchor_regions), (samples.positives, samples.positive_regions),
                            (samples.negatives, samples.negative_regions)):
        assert torch.equal(_region_at(LABELS, points), regions)
        # Pixel centres of the 8 x 8 map: (k + 0.5) / 8.
        assert torch.allclose(points * 8 - 0.5, (points * 8 - 0.5).round(), atol=1e-5)


def test_window_restricts_pixels_and_regions() -> None:
    # The top half holds regions 0 and 1 only: Eq. 2 / 3 over {0, 1}; anchors repeat (3 anchors, 2 regions).
    samples = sample_pixels(LABELS, _distances(), 3, 4000, 50, SIGMA,
                            torch.Generator().manual_seed(1), window=(0.0, 0.0, 1.0, 0.5))
    assert set(samples.anchor_regions.tolist()) == {0, 1}
    assert (samples.negative_regions == 1 - samples.anchor_regions[:, None]).all()
    same = (samples.positive_regions == samples.anchor_regions[:, None]).float().mean()
    p_same = 1 / (1 + e(-0.25))
    assert abs(same.item() - p_same) < 4 * math.sqrt(p_same * (1 - p_same) / 12000)
    for points in (samples.anchors, samples.positives, samples.negatives):
        assert (points[..., 1] < 0.5).all()


def _source(record: dict[str, np.ndarray] | None, seed: int = 0) -> SampleSource:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return SampleSource(image=Image.fromarray(pixels), original_size=(64, 48), record=record,
                        draw_image=lambda: Image.fromarray(pixels))


RECORD = {"labels": LABELS, "parents": PARENTS, "altitudes": ALTITUDES, "image_hw": np.array([48, 64])}
CFG = {"image_size": 64, "arch": "resnet18", "hiergroup": HIER}


def _to_source(points: torch.Tensor, geom: torch.Tensor) -> torch.Tensor:
    """Inverse of source_to_view for one view: undo the flip, then the crop."""
    x1, y1, x2, y2, flipped = geom.tolist()
    vx = 1 - points[..., 0] if flipped > 0.5 else points[..., 0]
    return torch.stack([x1 + vx * (x2 - x1), y1 + points[..., 1] * (y2 - y1)], dim=-1)


def test_sample_maps_points_into_both_views_and_masks_the_outside() -> None:
    cls = method_class("hiergroup")
    outside_seen = 0
    for seed in range(12):
        sample = cls.make_sample(_source(RECORD), torch.Generator().manual_seed(seed), CFG)
        assert sample["points1"].shape == sample["points2"].shape == (3, 1 + 4 + 2, 2)
        assert sample["valid1"].shape == (3, 7) and sample["view1"].shape == (3, 64, 64)
        source = _to_source(sample["points1"], sample["geom1"])
        # Drawn in view 1's crop: every point is visible there and sits in its leaf region's pixel centres.
        assert sample["valid1"].all() and torch.allclose(source * 8 - 0.5, (source * 8 - 0.5).round(), atol=1e-4)
        mapped = source_to_view(source.reshape(1, -1, 2), sample["geom2"][None]).view_as(source)
        assert torch.allclose(sample["points2"], mapped, atol=1e-5)
        inside2 = ((mapped >= 0) & (mapped <= 1)).all(dim=-1)
        assert torch.equal(sample["valid2"], inside2)
        outside_seen += int((~inside2).sum())
    assert outside_seen > 0  # the masks were exercised


def test_single_region_record_masks_negatives_and_missing_record_is_an_error() -> None:
    record = {"labels": np.zeros((8, 8), np.uint8), "parents": np.array([0], np.int32),
              "altitudes": np.array([0.0], np.float32)}
    sample = method_class("hiergroup").make_sample(_source(record), torch.Generator().manual_seed(0), CFG)
    assert sample["valid1"][:, :5].all() and not sample["valid1"][:, 5:].any() and not sample["valid2"][:, 5:].any()
    with pytest.raises(UserError, match="region-trees"):
        method_class("hiergroup").make_sample(_source(None), torch.Generator(), CFG)


def test_loss_matches_equation_1_by_hand() -> None:
    x, y = [1.0, 0.0], [0.0, 1.0]
    anchors = torch.tensor([x, y])
    # Anchor 0: positives with cos 1, 0 and a masked one; negatives with cos 0, -1 and a masked cos 1.
    # Anchor 1: its only positive is masked, so it contributes nothing.
    positives = torch.tensor([[x, y, [-1.0, 0.0]], [y, y, y]])
    positive_valid = torch.tensor([[True, True, False], [False, False, False]])
    negatives = torch.tensor([[y, [-1.0, 0.0], x], [x, x, x]])
    negative_valid = torch.tensor([[True, True, False], [True, True, True]])
    out = grouping_loss(anchors, positives, positive_valid, negatives, negative_valid)
    ratios = [e(1) / (e(1) + 1 + e(-1)), 1 / (1 + 1 + e(-1))]
    assert out["loss"].item() == pytest.approx(-sum(ratios) / 2, rel=1e-6)
    assert out["pos_sim"].item() == pytest.approx(0.5) and out["neg_sim"].item() == pytest.approx(-0.2)


def test_features_at_points_and_cross_image_negatives() -> None:
    embedding = torch.zeros(2, 2, 2, 4)
    embedding[0, 0] = 3.0  # image 0: every cell (3, 0); image 1: (0, 2) except cell (row 1, col 2)
    embedding[1, 1] = 2.0
    embedding[1, :, 1, 2] = torch.tensor([1.0, 1.0])
    # Cell (row 1, col 2) of a 2 x 4 map has its centre at x = 2.5 / 4, y = 1.5 / 2.
    features = sample_features(embedding, torch.tensor([[[0.1, 0.1]], [[0.625, 0.75]]]))
    assert torch.allclose(features, torch.tensor([[[1.0, 0.0]], [[2**-0.5, 2**-0.5]]]), atol=1e-6)
    cns = cross_image_features(embedding, 3, 5, torch.Generator().manual_seed(0))
    assert cns.shape == (2, 3, 5, 2)
    assert (cns[0, ..., 1] > 0).all() and (cns[1] == torch.tensor([1.0, 0.0])).all()  # only other images


@pytest.fixture(scope="module")
def built() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method("hiergroup", "resnet18", CFG)


@pytest.fixture
def model(built: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(built)


def test_hypercolumn_is_a_quarter_resolution_embedding_trained_through_res3_res4(model: torch.nn.Module) -> None:
    embedding = model.embed(torch.randn(2, 3, 64, 48))
    assert embedding.shape == (2, 8, 16, 12)
    embedding.square().sum().backward()
    for layer in (model.backbone.layer2, model.backbone.layer3, model.hypercolumn):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    assert all(p.grad is None for p in model.backbone.layer4.parameters())  # Res5 feeds nothing


def test_training_step_on_a_tiny_batch(model: torch.nn.Module) -> None:
    cls = method_class("hiergroup")
    samples = [cls.make_sample(_source(RECORD, seed), torch.Generator().manual_seed(seed), CFG) for seed in range(3)]
    batch = torch.utils.data.default_collate(samples)
    out = model(**batch, iteration=5, total=10)
    assert set(out) == {"loss", "pos_sim", "neg_sim"} and torch.isfinite(out["loss"])
    assert -1 <= out["loss"].item() <= 0
    out["loss"].backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    with torch.no_grad():  # the cross-image draw depends on the iteration only: the same batch repeats it
        assert model(**batch, iteration=5, total=10)["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-5)
