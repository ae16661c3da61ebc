"""BYOL and LC-loss: losses against their equations and hand-computed values, views, train/resume/export."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.methods import build_method, method_class
from pretrain.methods.byol import symmetric_regression
from pretrain.methods.lcloss import correspondence_nll, correspondences, local_contrastive_loss, sample_nll
from pretrain.views import byol_views, make_view

BYOL_CFG = {"projector_hidden": 32, "dim": 16, "predictor_hidden": 32, "momentum": 0.996}
LCLOSS_CFG = {"alpha": 0.1, "temperature": 0.3, "local_dim": 16}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread, as `train` sets by default: on a shared 2-core machine two threads that wait on
    each other make these tiny passes an order of magnitude slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(method, "resnet18", {"byol": BYOL_CFG, "lcloss": LCLOSS_CFG})


def _views(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, size, size, generator=gen), torch.randn(batch, 3, size, size, generator=gen)


def _cos_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. 2 of BYOL written out: 2 - 2 <p, z> / (|p| |z|), per row."""
    return 2 - 2 * (p * z).sum(dim=1) / (p.norm(dim=1) * z.norm(dim=1))


# --- BYOL -------------------------------------------------------------------------------------

def test_symmetric_regression_pairs_each_prediction_with_the_other_views_target() -> None:
    p1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    z1 = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    z2 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    # row 0: (2 - 2 cos 45deg) + (2 - 2 cos 90deg); row 1: (2 - 2 cos 180deg) + (2 - 2 cos 0deg)
    expected = ((2 - math.sqrt(2) + 2) + (4 + 0)) / 2
    assert symmetric_regression((p1, p2), (z1, z2)).item() == pytest.approx(expected, rel=1e-6)


def test_byol_forward_is_eq2_and_only_the_online_network_learns() -> None:
    model = _model("byol")
    v1, v2 = _views(2, 32)
    out = model(v1, v2, None, None, iteration=0, total=10)
    with torch.no_grad():  # train-mode BN: the same batches give the same outputs
        p1, p2 = (model.predictor(model.projector(model.backbone(v))) for v in (v1, v2))
        z1, z2 = (model.target_projector(model.target_backbone(v)) for v in (v1, v2))
    expected = (_cos_loss(p1, z2) + _cos_loss(p2, z1)).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    target = [*model.target_backbone.parameters(), *model.target_projector.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in target)
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_target_momentum_goes_from_base_to_one() -> None:
    model = _model("byol")
    online, target = model.backbone.conv1.weight, model.target_backbone.conv1.weight
    for iteration, momentum in [(0, 0.996), (5, 0.998), (10, 1.0)]:
        with torch.no_grad():
            online.fill_(1.0)
            target.fill_(0.0)
        model(*_views(2, 32), None, None, iteration=iteration, total=10)
        # target <- m * 0 + (1 - m) * 1; m = 1 - 0.004 * (cos(pi k / K) + 1) / 2 (BYOL Sec. 3.2)
        assert torch.allclose(target, torch.full_like(target, 1 - momentum), atol=1e-7)


def test_byol_views_are_byols_asymmetric_pair() -> None:
    assert method_class("byol").view_configs({"image_size": 64}) == byol_views(64)


# --- LC-loss ----------------------------------------------------------------------------------

def test_correspondence_nll_is_eq3_over_cosine_similarities() -> None:
    target_c = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1)  # one I_c point; scale must not matter (Eq. 2)
    online_sc = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).t().reshape(1, 2, 1, 2)  # two I_sc locations
    nll = correspondence_nll(target_c, online_sc, temperature=0.5)
    # cosines 1 and 0, divided by tau = 0.5: -log softmax([2, 0])
    expected = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(1 / (math.exp(2) + 1))]
    assert nll.shape == (1, 1, 1, 2)
    assert nll.flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_sample_nll_interpolates_bilinearly_at_subpixel_points() -> None:
    base = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    nll = torch.stack([base, base + 10, base + 20]).unsqueeze(0)  # one map per I_c point
    # I_sc [0, 1] coords; on the 2 x 2 grid, cell centres are at 0.25 and 0.75
    points = torch.tensor([[[0.5, 0.5], [0.375, 0.25], [0.05, 0.9]]])
    # centre of all four; a quarter of the way from cell (0, 0) to (0, 1); beyond the outer centres: cell (1, 0)
    expected = [2.5, 10 + 0.75 * 1 + 0.25 * 2, 20 + 3]
    assert sample_nll(nll, points).flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_only_points_inside_the_cropped_view_count() -> None:
    whole = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0])
    geom_c = whole.expand(4, 5)
    geom_sc = torch.tensor([[0.0, 0.0, 0.5, 1.0, 0.0],  # left half
                            [0.0, 0.0, 0.5, 1.0, 1.0],  # left half, flipped
                            [0.26, 0.26, 0.36, 0.36, 0.0],  # between cell centres: no grid point of I_c
                            [0.5, 0.0, 1.0, 0.5, 0.0]])  # top-right quarter
    points = correspondences(geom_c, geom_sc, grid=4)
    # I_c's cell centres 0.125, 0.375, ...: x = 0.125 is at 0.25 of the left half, and at 0.75 once flipped
    assert points[0, 0].tolist() == pytest.approx([0.25, 0.125])
    assert points[1, 0].tolist() == pytest.approx([0.75, 0.125])
    assert points[1, 1].tolist() == pytest.approx([0.25, 0.125])
    nll = torch.arange(16.0).expand(4, 16)  # value = row-major index of the I_c point
    left = [0, 1, 4, 5, 8, 9, 12, 13]
    top_right = [2, 3, 6, 7]
    for image, expected in [(0, left), (1, left), (3, top_right)]:
        assert local_contrastive_loss(nll[image:image + 1], points[image:image + 1]).item() == np.mean(expected)
    assert local_contrastive_loss(nll[2:3], points[2:3]).item() == 0.0
    # Eq. 4 per image, then the mean over images that have pairs (not pooled over all pairs)
    assert local_contrastive_loss(nll, points).item() == pytest.approx((np.mean(left) * 2 + np.mean(top_right)) / 3)


def test_lcloss_total_is_the_weighted_sum_and_targets_get_no_gradient() -> None:
    model = _model("lcloss")
    v_c, v_sc = _views(2, 64)  # 2 x 2 feature grid
    geom_c = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]).expand(2, 5)
    geom_sc = torch.tensor([[0.1, 0.2, 0.7, 0.9, 1.0], [0.3, 0.0, 1.0, 0.6, 0.0]])
    out = model(v_c, v_sc, geom_c, geom_sc, iteration=0, total=10)
    assert out["loss_local"].item() > 0
    assert out["loss"].item() == pytest.approx(0.9 * out["loss_global"].item() + 0.1 * out["loss_local"].item())
    # L_G is Eq. 1 for one input: the mean of the two directions, not BYOL's sum (which would double its weight).
    with torch.no_grad():
        p_c, p_sc = (model.predictor(model.projector(model.backbone(v))) for v in (v_c, v_sc))
        z_c, z_sc = (model.target_projector(model.target_backbone(v)) for v in (v_c, v_sc))
    expected_global = ((_cos_loss(p_c, z_sc) + _cos_loss(p_sc, z_c)) / 2).mean()
    assert out["loss_global"].item() == pytest.approx(expected_global.item(), rel=1e-5)
    # the local term is computed from I_sc online against I_c target (Sec. 3)
    with torch.no_grad():
        online_sc = model.local_head(model.backbone(v_sc))
        target_c = model.target_local_head(model.target_backbone(v_c))
        points = correspondences(geom_c, geom_sc, grid=2)
        expected = local_contrastive_loss(sample_nll(correspondence_nll(target_c, online_sc, 0.3), points), points)
    assert out["loss_local"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_local_head.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.local_head.parameters())


def test_local_projection_is_conv_bn_conv_as_listed_in_sec_4_1() -> None:
    head = _model("lcloss").local_head
    assert [type(layer) for layer in head] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Conv2d]
    assert (head[0].in_channels, head[0].out_channels, head[0].kernel_size) == (512, 512, (1, 1))
    assert (head[2].out_channels, head[2].kernel_size) == (LCLOSS_CFG["local_dim"], (1, 1))


def test_lcloss_view_c_is_the_whole_image_without_flip() -> None:
    view_c, view_sc = method_class("lcloss").view_configs({"image_size": 64})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        _, geometry = make_view(image, view_c, gen)
        assert geometry.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert (view_c.crop, view_c.flip_prob, view_c.size) == (False, 0.0, 64)
    assert view_c.jitter_prob > 0 and view_c.blur_prob > 0  # colour transforms kept
    assert (view_sc.crop, view_sc.flip_prob) == (True, 0.5)
