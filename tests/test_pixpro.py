"""PixPro: positive pairs from geometry, propagation and loss against hand-computed values, momentum,
training through the shared loop (export, exact resume)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import UserError
from pretrain.data import SampleSource, two_views
from pretrain.methods import build_method, method_class
from pretrain.methods.pixpro import consistency_loss, pixel_index_coords, positive_mask, propagate, value_transform

PIXPRO = {"pos_ratio": 0.7, "power": 2, "transform_layers": 1, "hidden": 32, "dim": 16, "momentum": 0.99}
R2 = math.sqrt(2)

# View 1 is the top-left quarter of the image; with a 2 x 2 grid its cells are 0.25 apart and their
# diagonal is 0.25 * sqrt(2) = 0.354, so the threshold 0.7 * 0.354 = 0.247 excludes a 0.25 offset.
QUARTER = [0.0, 0.0, 0.5, 0.5, 0.0]
SHIFTED = [0.25, 0.0, 0.75, 0.5, 0.0]  # half a crop to the right: view-1 column 1 is view-2 column 0
SHIFTED_FLIPPED = [0.25, 0.0, 0.75, 0.5, 1.0]  # the same crop mirrored: view-2 column 1 shows x = 0.375
WHOLE = [0.0, 0.0, 1.0, 1.0, 0.0]  # diagonal 0.707 (the larger), threshold 0.495


def test_crop_coordinates_follow_pixpros_pixel_index_convention() -> None:
    """PixPro's RandomResizedCropCoord: [j / (W-1), i / (H-1), (j+w-1) / (W-1), (i+h-1) / (H-1)]. A 5 x 4 crop at
    column 2, row 1 of a 10 x 8 image: make_view records its edges [2/10, 1/8, 7/10, 5/8]."""
    coords = pixel_index_coords(torch.tensor([0.2, 0.125, 0.7, 0.625, 1.0]), width=10, height=8)
    assert coords.tolist() == pytest.approx([2 / 9, 1 / 7, 6 / 9, 4 / 7, 1.0], abs=1e-7)
    # The whole image is [0, 1] in both conventions.
    assert pixel_index_coords(torch.tensor(WHOLE), width=10, height=8).tolist() == WHOLE


def test_pixpro_samples_carry_pixel_index_coords() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    source = SampleSource(image=image, original_size=image.size, record=None, draw_image=lambda: image)
    cfg = {"image_size": 32}
    pixpro_class = method_class("pixpro")
    sample = pixpro_class.make_sample(source, torch.Generator().manual_seed(3), cfg)
    plain = two_views(image, pixpro_class.view_configs(cfg), torch.Generator().manual_seed(3))
    assert torch.equal(sample["view1"], plain["view1"]) and torch.equal(sample["view2"], plain["view2"])
    for key in ("geom1", "geom2"):
        assert torch.equal(sample[key], pixel_index_coords(plain[key], 60, 40))
        assert not torch.equal(sample[key][:4], plain[key][:4])


def test_positive_mask_on_hand_made_crops() -> None:
    geom1 = torch.tensor([QUARTER, QUARTER, QUARTER])
    geom2 = torch.tensor([SHIFTED, SHIFTED_FLIPPED, WHOLE])
    mask = positive_mask(geom1, geom2, grid=2, pos_ratio=0.7)
    # Rows: view-1 cells (x, y) = (.125, .125), (.375, .125), (.125, .375), (.375, .375).
    shifted = [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]  # only coincident centres
    flipped = [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    # Columns: view-2 centres (.25, .25), (.75, .25), (.25, .75), (.75, .75); distances .177 and .395 pass,
    # .530 and .637 do not. Normalising by view 1's own diagonal would keep only the first column.
    whole = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]]
    assert mask.int().tolist() == [shifted, flipped, whole]
    # 0.25 / 0.354 = 0.7071: a threshold just above it admits the horizontal neighbours.
    assert positive_mask(geom1[:1], geom2[:1], grid=2, pos_ratio=0.71)[0, 0].int().tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize(("power", "expected"), [
    # x0 = (1, 0), x1 = (1, 1), x2 = (-1, 0): cos(x0, x1) = 1/sqrt(2), the other pairs are <= 0 (clamped).
    (2, [[1 + 0.5 / R2, 0.5 / R2], [0.5 + 1 / R2, 1 / R2], [-1, 0]]),  # s(x0, x1) = 1/2
    (1, [[1.5, 0.5], [R2, 1 / R2], [-1, 0]]),  # s(x0, x1) = 1/sqrt(2)
])
def test_propagation_matches_equation(power: float, expected: list[list[float]]) -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]).t().reshape(1, 2, 1, 3)
    # g(x) = 3 x: the values are L2-normalised, so y_i = sum_j s(x_i, x_j) x_j / |x_j|.
    y = propagate(x, 3 * x, power)
    assert y.shape == x.shape
    assert torch.allclose(y.reshape(2, 3).t(), torch.tensor(expected), atol=1e-6)


def test_consistency_loss_matches_equation() -> None:
    # Image 0: predictions (1, 0), (0, 5); targets (2, 0), (1, 1); positives (0, 0), (0, 1), (1, 1)
    # with cosines 1, 1/sqrt(2), 1/sqrt(2). Image 1 has no positive pair and contributes 0.
    prediction = torch.tensor([[[1.0, 0.0], [0.0, 5.0]], [[1.0, 2.0], [3.0, 4.0]]]).transpose(1, 2).unsqueeze(2)
    target = torch.tensor([[[2.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]).transpose(1, 2).unsqueeze(2)
    mask = torch.tensor([[[True, True], [False, True]], [[False, False], [False, False]]])
    per_image = [(0 + 2 * (2 - R2)) / 3, 0.0]
    assert consistency_loss(prediction, target, mask).item() == pytest.approx(sum(per_image) / 2, rel=1e-6)


def test_value_transform_layers() -> None:
    counts = [len(list(value_transform(layers, 8).parameters())) for layers in (0, 1, 2)]
    assert counts == [0, 2, 6]  # identity; conv w, b; conv w, b + BN w, b + conv w, b
    with pytest.raises(UserError, match="transform_layers is 3; PixPro defines 0, 1 or 2"):
        value_transform(3, 8)


@pytest.fixture(scope="module")
def built() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method("pixpro", "resnet18", {"pixpro": PIXPRO})


@pytest.fixture
def model(built: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(built)  # a fresh model per test, without re-initialising ResNets


def test_loss_is_symmetrised_and_target_gets_no_gradient(model: torch.nn.Module) -> None:
    view1, view2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)  # 2 x 2 feature maps
    geom1, geom2 = torch.tensor([QUARTER, QUARTER]), torch.tensor([SHIFTED, WHOLE])  # asymmetric masks
    out = model(view1, view2, geom1, geom2, iteration=0, total=10)
    out["loss"].backward()
    target_params = [*model.target_backbone.parameters(), *model.target_projector.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in target_params)
    assert model.backbone.conv1.weight.grad is not None and model.value_transform.weight.grad is not None
    # Online(view 1) against target(view 2) at mask M, plus online(view 2) against target(view 1) at M^T.
    mask = positive_mask(geom1, geom2, 2, 0.7)
    with torch.no_grad():
        expected = (consistency_loss(model.online(view1), model.target(view2), mask)
                    + consistency_loss(model.online(view2), model.target(view1), mask.transpose(1, 2)))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(("iteration", "one_minus_m"), [
    (0, 0.01),  # base momentum at the start
    (999, 0.01 * (1 + math.cos(math.pi * 999 / 1000)) / 2),  # 2.5e-8: momentum ~1 at the end
])
def test_target_momentum_follows_the_cosine_schedule(model: torch.nn.Module, iteration: int,
                                                     one_minus_m: float) -> None:
    targets = [*model.target_backbone.parameters(), *model.target_projector.parameters()]
    online = [*model.backbone.parameters(), *model.projector.parameters()]
    for p in targets:
        p.data.zero_()
    views = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    model(*views, torch.tensor([QUARTER, QUARTER]), torch.tensor([SHIFTED, WHOLE]), iteration=iteration, total=1000)
    assert all(torch.allclose(t, one_minus_m * o, rtol=1e-5, atol=0) for t, o in zip(targets, online, strict=True))
