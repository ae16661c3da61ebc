"""HoughCL: probabilistic Hough matching against hand-computed values and a crafted distractor."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import UserError
from pretrain.matching import argmax_match, gaussian_kernel, offset_bin_ids, phm_confidence, phm_match
from pretrain.methods import build_method

# The paper-scale values (HoughCL Sec. 3 for d; hpf for the Hough space and kernel).
PAPER = {"appearance_power": 3, "offset_bins": 91, "kernel_size": 7, "kernel_sigma": 7 / (2 * 2.354)}


def _config(**overrides: object) -> dict:
    cfg = {"arch": "resnet18", "epochs": 1, "batch_size": 2, "image_size": 64, "optimizer": "sgd", "base_lr": 0.03,
           "lr_scaling": "none", "lr_schedule": "cosine", "warmup_epochs": 0, "momentum": 0.9,
           "weight_decay": 1e-4, "amp": False,
           "workers": 0, "checkpoint_every": 10,
           "moco": {"dim": 16, "queue_size": 16, "momentum": 0.99, "temperature": 0.2},
           "densecl": {"loss_lambda": 0.5, "warmup_iters": 1}, "houghcl": dict(PAPER)}
    return {**cfg, **overrides}


def test_offset_bins_of_a_small_grid() -> None:
    # grid 2, 3 bins: offsets -1, 0, +1 (cells) fall in bins 0, 1, 2 per axis; bin id = 3 * y_bin + x_bin.
    # Cells are row-major: 0 = (r0, c0), 1 = (r0, c1), 2 = (r1, c0), 3 = (r1, c1); entry [query, key].
    expected = torch.tensor([[4, 5, 7, 8],
                             [3, 4, 6, 7],
                             [1, 2, 4, 5],
                             [0, 1, 3, 4]])
    assert torch.equal(offset_bin_ids(2, 3), expected)


@pytest.mark.parametrize("grid", [1, 2, 3, 7])
def test_zero_offset_is_the_centre_bin(grid: int) -> None:
    # With an odd bin count the zero offset sits in the middle bin, so the symmetric kernel is unbiased.
    bins = offset_bin_ids(grid, 91)
    assert torch.all(bins.diagonal() == 45 * 91 + 45)
    # hpf's floor((offset + extent) / bin width) per axis for the largest offset, (grid - 1) / grid of a view side.
    corner = math.floor((2 - 1 / grid) / (2 / 91))
    assert bins[0, -1].item() == corner * 91 + corner


def test_gaussian_kernel_values() -> None:
    kernel = gaussian_kernel(3, 1.0)
    z = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
    assert kernel[1, 1].item() == pytest.approx(1 / z)
    assert kernel[0, 1].item() == pytest.approx(math.exp(-0.5) / z)
    assert kernel[2, 2].item() == pytest.approx(math.exp(-1) / z)


def test_voting_and_smoothing_by_hand() -> None:
    appearance = torch.zeros(1, 4, 4)
    appearance[0, 0, 0] = 1.0  # offset (0, 0): bin 4, the centre
    appearance[0, 1, 1] = 0.5  # offset (0, 0): bin 4
    appearance[0, 0, 3] = 0.8  # offset (+1, +1): bin 8, corner
    appearance[0, 3, 0] = 0.3  # offset (-1, -1): bin 0, opposite corner, 2 bins from bin 8: outside a 3x3 kernel
    g0, g2 = 1.0, math.exp(-1)  # kernel weights at distance (0, 0) and (1, 1), before normalising by z
    z = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
    centre = (1.5 * g0 + (0.8 + 0.3) * g2) / z
    expected = torch.zeros(1, 4, 4)
    expected[0, 0, 0] = 1.0 * centre
    expected[0, 1, 1] = 0.5 * centre
    expected[0, 0, 3] = 0.8 * (0.8 * g0 + 1.5 * g2) / z
    expected[0, 3, 0] = 0.3 * (0.3 * g0 + 1.5 * g2) / z
    confidence = phm_confidence(appearance, grid=2, offset_bins=3, kernel=gaussian_kernel(3, 1.0))
    assert torch.allclose(confidence, expected, atol=1e-7)


def shifted_pair_with_distractor() -> tuple[torch.Tensor, torch.Tensor]:
    """Key = query shifted one cell right (key (r, c + 1) shows query (r, c)) on a 4 x 4 grid; query cell
    (1, 1)'s true key (1, 2) is a noisy copy (cos ~0.8), and an exact copy sits at key (3, 0) (offset (+2, -1))."""
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(1, 64, 4, 4, generator=gen)
    key = torch.randn(1, 64, 4, 4, generator=gen)  # column 0 shows content outside the query view
    key[..., 1:] = query[..., :-1]
    key[0, :, 1, 2] = query[0, :, 1, 1] + 0.75 * torch.randn(64, generator=gen)
    key[0, :, 3, 0] = query[0, :, 1, 1]
    return query, key


def test_phm_resists_a_distractor_that_fools_argmax() -> None:
    query, key = shifted_pair_with_distractor()
    target, true_key, distractor = 1 * 4 + 1, 1 * 4 + 2, 3 * 4 + 0
    assert argmax_match(query, key, 4)[0, target].item() == distractor
    phm = phm_match(query, key, 4, **PAPER)
    assert phm[0, target].item() == true_key
    # every query cell whose content is in the key view (columns 0-2) is matched one cell to the right
    inside = torch.tensor([4 * r + c for r in range(4) for c in range(3)])
    assert torch.equal(phm[0, inside], inside + 1)
    # HoughCL's override of DenseCL's matching step is this PHM with its config
    model = build_method("houghcl", "resnet18", _config())
    assert torch.equal(model.match(query, key), phm)


def test_batched_phm_equals_per_image_phm() -> None:
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(3, 16, 5, 5, generator=gen).relu()  # backbone maps are non-negative (after ReLU)
    key = torch.randn(3, 16, 5, 5, generator=gen).relu()
    for offset_bins, kernel_size, sigma in [(91, 7, 7 / (2 * 2.354)), (9, 3, 1.0)]:
        params = {"appearance_power": 3, "offset_bins": offset_bins, "kernel_size": kernel_size, "kernel_sigma": sigma}
        batched = phm_match(query, key, 5, **params)
        single = torch.cat([phm_match(query[i : i + 1], key[i : i + 1], 5, **params) for i in range(3)])
        assert torch.equal(batched, single)
    # the images do not all give the same matches (the check above is not vacuous)
    assert not torch.equal(batched[0], batched[1])


def test_houghcl_adds_no_parameters() -> None:
    dense, hough = build_method("densecl", "resnet18", _config()), build_method("houghcl", "resnet18", _config())
    shapes = {name: p.shape for name, p in dense.state_dict().items()}
    assert {name: p.shape for name, p in hough.state_dict().items()} == shapes
    assert [n for n, _ in hough.named_parameters()] == [n for n, _ in dense.named_parameters()]


def test_even_kernel_is_a_clear_error() -> None:
    cfg = _config(houghcl={**PAPER, "kernel_size": 6})
    with pytest.raises(UserError, match="houghcl.kernel_size must be odd, got 6"):
        build_method("houghcl", "resnet18", cfg)
