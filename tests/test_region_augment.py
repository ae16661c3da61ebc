"""Region-level augmentations (D3SSL PRC / PRM / RBJ / de-positioning, SoCo jitter / cutout) on crafted boxes,
against hand-computed masks, shift ranges and geometric invariants over many seeds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from core.errors import UserError
from pretrain.region_augment import (
    _proposal_cutouts,
    blank,
    box_cutout,
    box_jitter,
    box_mask,
    depositioning_composite,
    proposal_random_cutout,
    proposal_random_mask,
    restricted_box_jitter,
    sample_shift,
)

SEEDS = range(200)
EPS = 1e-4


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mask_from_rows(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[ch == "1" for ch in row] for row in rows])


def reference_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The pixel-centre rule written out pixel by pixel."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.tolist():
        for r in range(height):
            for c in range(width):
                if x1 <= c + 0.5 < x2 and y1 <= r + 0.5 < y2:
                    mask[r, c] = True
    return mask


# ----------------------------------------------------------------------------------------------- box_mask


def test_box_mask_fractional_boxes_by_hand() -> None:
    # Box 1: centres 1.5, 2.5, 3.5 in [1.4, 4.5) -> cols 1-3; 0.5 .. 3.5 in [0.5, 3.6) -> rows 0-3.
    # Box 2 sticks out of the view: col 5 (5.5 in [5, 7)), row 4 (4.5 in [4.2, 5)).
    # Box 3 contains no pixel centre (2.5 < 2.6 and 3.5 >= 2.9): adds nothing.
    boxes = torch.tensor([[1.4, 0.5, 4.5, 3.6], [5.0, 4.2, 7.0, 5.0], [2.6, 2.6, 2.9, 2.9]])
    expected = mask_from_rows(["011100",
                               "011100",
                               "011100",
                               "011100",
                               "000001"])
    got = box_mask(boxes, 5, 6)
    assert got.dtype == torch.bool and got.shape == (5, 6)
    assert torch.equal(got, expected)
    assert torch.equal(got, reference_mask(boxes, 5, 6))


# ----------------------------------------------------------------------------------------------- RBJ


def test_restricted_box_jitter_stays_inside_original() -> None:
    boxes = torch.tensor([[3.2, 4.7, 40.1, 20.9], [0.0, 0.0, 64.0, 64.0], [10.0, 30.0, 11.5, 60.0]])
    ratio = 0.3
    size = boxes[:, 2:] - boxes[:, :2]
    factors = []
    for seed in SEEDS:
        out = restricted_box_jitter(boxes, ratio, gen(seed))
        assert out.shape == boxes.shape
        assert (out[:, :2] >= boxes[:, :2]).all() and (out[:, 2:] <= boxes[:, 2:]).all()
        factor = (out[:, 2:] - out[:, :2]) / size
        assert (factor >= 1 - ratio - EPS).all() and (factor <= 1 + EPS).all()
        factors.append(factor)
    spread = torch.stack(factors)
    assert spread.min() < 1 - 0.9 * ratio and spread.max() > 1 - 0.1 * ratio  # the whole range is used
    assert torch.equal(restricted_box_jitter(boxes, 0.0, gen(0)), boxes)


# ----------------------------------------------------------------------------------------------- SoCo jitter


def test_box_jitter_within_ratio_and_view() -> None:
    ratio, height, width = 0.1, 200, 240
    inner = torch.tensor([[80.0, 90.0, 110.0, 120.0], [60.3, 40.7, 85.1, 52.9], [150.0, 100.0, 190.0, 160.0]])
    size, centre = inner[:, 2:] - inner[:, :2], (inner[:, :2] + inner[:, 2:]) / 2
    factors = []
    for seed in SEEDS:
        out = box_jitter(inner, ratio, height, width, gen(seed))
        factor = (out[:, 2:] - out[:, :2]) / size
        assert (factor >= 1 - ratio - EPS).all() and (factor <= 1 + ratio + EPS).all()
        shift = ((out[:, :2] + out[:, 2:]) / 2 - centre).abs()
        assert (shift <= ratio * size + EPS).all()
        factors.append(factor)
    spread = torch.stack(factors)
    assert spread.min() < 1 - ratio / 2 and spread.max() > 1 + ratio / 2  # both shrinks and growths happen

    # At the borders: clipped to the view, and never below 1 px.
    border = torch.tensor([[0.0, 0.0, 10.0, 10.0], [230.0, 5.0, 240.0, 50.0], [239.6, 0.0, 240.0, 0.4]])
    for seed in SEEDS:
        out = box_jitter(border, ratio, height, width, gen(seed))
        assert (out >= 0).all() and (out[:, [0, 2]] <= width).all() and (out[:, [1, 3]] <= height).all()
        assert ((out[:, 2:] - out[:, :2]) >= 1 - EPS).all()


# ----------------------------------------------------------------------------------------------- SoCo cutout


def test_box_cutout_one_rectangle_inside_box() -> None:
    box = torch.tensor([[10.0, 20.0, 50.0, 40.0]])  # 40 x 20 px
    inside = box_mask(box, 64, 64)
    for seed in SEEDS:
        cut = box_cutout(box, 64, 64, 1.0, (0.1, 0.3), gen(seed))
        assert not (cut & ~inside).any()
        rows, cols = cut.any(1), cut.any(0)
        assert torch.equal(cut, rows[:, None] & cols[None, :])  # a solid rectangle
        # An interval of length L covers floor(L) or ceil(L) pixel centres.
        assert 4 <= int(cols.sum()) <= 12 and 2 <= int(rows.sum()) <= 6
    assert not any(box_cutout(box, 64, 64, 0.0, (0.1, 0.3), gen(s)).any() for s in SEEDS)
    hits = sum(bool(box_cutout(box, 64, 64, 0.5, (0.1, 0.3), gen(s)).any()) for s in range(400))
    assert 140 < hits < 260


# ----------------------------------------------------------------------------------------------- PRC

NESTED = torch.tensor([[4.0, 4.0, 60.0, 60.0], [10.0, 10.0, 24.0, 20.0], [30.5, 35.2, 50.3, 55.7]])
OVERLAPPING = torch.tensor([[5.0, 5.0, 40.0, 35.0], [25.3, 20.6, 60.0, 58.0]])


def foreign_counts(pixels: torch.Tensor, kept: torch.Tensor) -> list[int]:
    """Pixels of each box o removed by the cutouts of the other boxes."""
    k = pixels.shape[0]
    return [int((pixels[o] & kept[[j for j in range(k) if j != o]].any(0)).sum()) for o in range(k)]


@pytest.mark.parametrize("boxes", [NESTED, OVERLAPPING], ids=["nested", "overlapping"])
@pytest.mark.parametrize("max_cover", [0.0, 0.1, 0.3, 1.0])
def test_prc_invariants(boxes: torch.Tensor, max_cover: float) -> None:
    size_range, k = (0.2, 0.5), boxes.shape[0]
    pixels = torch.stack([box_mask(b[None], 64, 64) for b in boxes])
    area = pixels.sum((1, 2))
    union = pixels.any(0)
    restored_any = False
    for seed in range(30):
        rects, kept = _proposal_cutouts(boxes, 64, 64, size_range, max_cover, gen(seed))
        assert torch.equal(proposal_random_cutout(boxes, 64, 64, size_range, max_cover, gen(seed)), kept.any(0))
        assert not (kept.any(0) & ~union).any()
        for i in range(k):
            box, rect = boxes[i], rects[i]
            assert (rect[:2] >= box[:2] - EPS).all() and (rect[2:] <= box[2:] + EPS).all()
            fraction = (rect[2:] - rect[:2]) / (box[2:] - box[:2])
            assert abs(float(fraction[0] - fraction[1])) < EPS  # the box's aspect ratio
            assert size_range[0] - EPS <= float(fraction[0]) <= size_range[1] + EPS
            full = box_mask(rect[None], 64, 64)
            assert not (kept[i] & ~full).any()
            lost = full & ~kept[i]
            others = pixels[[j for j in range(k) if j != i]].any(0)
            assert not (lost & ~others).any()  # only the parts inside other boxes are ever restored
            restored_any |= bool(lost.any())
        foreign = foreign_counts(pixels, kept)
        assert all(f <= max_cover * int(a) for f, a in zip(foreign, area, strict=True))
        if max_cover == 0.0:
            assert foreign == [0] * k
    if max_cover == 1.0:
        assert not restored_any
    elif max_cover <= 0.1:
        assert restored_any  # the crafted boxes do make cutouts collide (at 0.3 the overlapping pair may not)


def test_prc_nested_small_box_loses_its_cutout_at_zero_cover() -> None:
    # A cutout inside the small box is inside the large one too: with max_cover 0 it is fully restored.
    for seed in range(50):
        _, kept = _proposal_cutouts(NESTED, 64, 64, (0.2, 0.5), 0.0, gen(seed))
        assert not kept[1].any() and not kept[2].any() and kept[0].any()


def test_prc_restore_by_hand() -> None:
    # Size fraction 1: each cutout is its whole box. A = cols 0-9, B = cols 5-14 (rows 0-9): 50 px overlap.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]])
    cut = proposal_random_cutout(boxes, 10, 16, (1.0, 1.0), 0.3, gen(0))
    # 50 > 0.3 * 100: A's cut is restored inside B (cols 5-9), then B's inside A: only cols 0-4 and 10-14 go.
    assert torch.equal(cut, mask_from_rows(["1111100000111110"] * 10))
    cut = proposal_random_cutout(boxes, 10, 16, (1.0, 1.0), 0.5, gen(0))
    assert torch.equal(cut, mask_from_rows(["1111111111111110"] * 10))  # 50 <= 0.5 * 100: nothing restored


def test_prc_restores_for_the_smallest_box_first() -> None:
    # Whole-box cutouts, max_cover 0.5, processed P (200 px), M (140 px), S (40 px); S lies inside P and M.
    # P's cut breaks M (80 > 70) and S (40 > 20): restoring S (cols 12-15) already fixes M (40 <= 70).
    # M's cut breaks S: restored there too. S's cut then breaks M (40 + 40 > 70): fully restored.
    boxes = torch.tensor([[0.0, 0.0, 20.0, 10.0], [12.0, 0.0, 26.0, 10.0], [12.0, 0.0, 16.0, 10.0]])
    cut = proposal_random_cutout(boxes, 10, 30, (1.0, 1.0), 0.5, gen(0))
    assert torch.equal(cut, mask_from_rows(["111111111111000011111111110000"] * 10))


def test_prc_counts_each_lost_pixel_once() -> None:
    # P ⊃ Q ⊃ O, whole-box cutouts, max_cover 1: O loses its 40 px to P and again to Q, which is still 40 px
    # (<= 1.0 * 40), so nothing is restored; counting the twice-cut pixels twice would restore O inside Q.
    boxes = torch.tensor([[0.0, 0.0, 24.0, 10.0], [4.0, 0.0, 16.0, 10.0], [8.0, 0.0, 12.0, 10.0]])
    _, kept = _proposal_cutouts(boxes, 10, 24, (1.0, 1.0), 1.0, gen(0))
    assert torch.equal(kept, torch.stack([box_mask(b[None], 10, 24) for b in boxes]))


# ----------------------------------------------------------------------------------------------- PRM


def test_prm_geometry() -> None:
    boxes = torch.tensor([[80.0, 90.0, 110.0, 120.0], [60.3, 40.7, 85.1, 52.9], [120.0, 130.0, 160.0, 150.0]])
    scale, ratio = (0.2, 0.6), (3 / 4, 4 / 3)
    sides_seen = set()
    for seed in SEEDS:
        keep, rects = proposal_random_mask(boxes, 200, 200, scale, ratio, gen(seed))
        assert rects.shape == boxes.shape
        union = torch.cat([boxes, rects])
        assert torch.equal(keep, reference_mask(union, 200, 200) if seed < 3 else box_mask(union, 200, 200))
        for (bx1, by1, bx2, by2), (rx1, ry1, rx2, ry2) in zip(boxes.tolist(), rects.tolist(), strict=True):
            overlap_x, overlap_y = min(bx2, rx2) - max(bx1, rx1), min(by2, ry2) - max(by1, ry1)
            touching = {"left": rx2 == bx1 and overlap_y > 0, "right": rx1 == bx2 and overlap_y > 0,
                        "top": ry2 == by1 and overlap_x > 0, "bottom": ry1 == by2 and overlap_x > 0}
            assert sum(touching.values()) == 1, touching
            sides_seen |= {side for side, hit in touching.items() if hit}
            assert overlap_x <= 0 or overlap_y <= 0  # outside the box
            w, h = rx2 - rx1, ry2 - ry1
            assert scale[0] - EPS <= w * h / ((bx2 - bx1) * (by2 - by1)) <= scale[1] + EPS
            assert ratio[0] - EPS <= w / h <= ratio[1] + EPS
    assert sides_seen == {"left", "right", "top", "bottom"}


def test_prm_clips_to_view() -> None:
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [44.0, 40.0, 64.0, 64.0]])
    for seed in SEEDS:
        keep, rects = proposal_random_mask(boxes, 64, 64, (0.2, 0.6), (3 / 4, 4 / 3), gen(seed))
        assert (rects >= 0).all() and (rects <= 64).all()
        assert torch.equal(keep, box_mask(torch.cat([boxes, rects]), 64, 64))


def test_blank_zeroes_removed_pixels_only() -> None:
    view = torch.randn(3, 6, 5)
    removed = torch.zeros(6, 5, dtype=torch.bool)
    removed[2:4, 1:3] = True
    out = blank(view, removed)
    assert (out[:, removed] == 0).all() and torch.equal(out[:, ~removed], view[:, ~removed])
    assert not (view[:, removed] == 0).all()  # a copy: the input is untouched


# ----------------------------------------------------------------------------------------------- de-positioning

# Covered cols 3-9, 8-14, 20-24 and rows 5-11, 2-8, 15-19 of a 24 x 32 view: tx in [-3, 7], ty in [-2, 4].
DP_BOXES = torch.tensor([[3.2, 4.6, 10.5, 12.0], [8.0, 2.0, 14.7, 9.3], [20.5, 15.5, 25.0, 20.1]])
DP_H, DP_W = 24, 32


def coordinate_view(height: int, width: int) -> torch.Tensor:
    """Channels (x, y, 1) of every pixel."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)])


def test_sample_shift_range_by_hand() -> None:
    shifts = [sample_shift(DP_BOXES, DP_H, DP_W, gen(seed)) for seed in range(400)]
    assert {tx for tx, _ in shifts} == set(range(-3, 8))
    assert {ty for _, ty in shifts} == set(range(-2, 5))
    for tx, ty in shifts:
        moved = reference_mask(DP_BOXES + torch.tensor([tx, ty, tx, ty]), DP_H, DP_W)
        assert int(moved.sum()) == int(box_mask(DP_BOXES, DP_H, DP_W).sum())  # no pixel leaves the view


def test_depositioning_composite_pixels() -> None:
    view, background = coordinate_view(DP_H, DP_W), torch.full((3, DP_H, DP_W), -5.0)
    nontrivial = False
    for seed in range(40):
        g = gen(seed)
        tx, ty = sample_shift(DP_BOXES, DP_H, DP_W, g)
        moved = DP_BOXES + torch.tensor([tx, ty, tx, ty], dtype=torch.float32)
        cut = proposal_random_cutout(moved, DP_H, DP_W, (0.2, 0.5), 0.5, g)
        x3, shifted = depositioning_composite(view, background, DP_BOXES, (tx, ty), cut)
        assert (shifted >= 0).all() and (shifted[:, [0, 2]] <= DP_W).all() and (shifted[:, [1, 3]] <= DP_H).all()
        assert torch.equal(box_mask(shifted, DP_H, DP_W), box_mask(moved, DP_H, DP_W))
        for r in range(DP_H):
            for c in range(DP_W):
                inside = any(x1 + tx <= c + 0.5 < x2 + tx and y1 + ty <= r + 0.5 < y2 + ty
                             for x1, y1, x2, y2 in DP_BOXES.tolist())
                expected = [c - tx, r - ty, 1.0] if inside and not cut[r, c] else [-5.0] * 3
                assert x3[:, r, c].tolist() == expected, (seed, r, c)
        nontrivial |= (tx, ty) != (0, 0) and bool(cut.any())
    assert nontrivial


def test_depositioning_zero_shift_reproduces_view() -> None:
    view, background = torch.randn(3, DP_H, DP_W), torch.zeros(3, DP_H, DP_W)
    empty = torch.zeros(DP_H, DP_W, dtype=torch.bool)
    x3, shifted = depositioning_composite(view, background, DP_BOXES, (0, 0), empty)
    inside = box_mask(DP_BOXES, DP_H, DP_W)
    assert torch.equal(x3[:, inside], view[:, inside]) and (x3[:, ~inside] == 0).all()
    assert torch.equal(shifted, DP_BOXES)


def test_depositioning_shift_out_of_view_drops_pixels() -> None:
    view, background = coordinate_view(DP_H, DP_W), torch.full((3, DP_H, DP_W), -5.0)
    empty = torch.zeros(DP_H, DP_W, dtype=torch.bool)
    x3, _ = depositioning_composite(view, background, DP_BOXES, (10, 0), empty)
    # Box 3 (cols 20-24) moves to cols 30-34: only cols 30, 31 remain, carrying source cols 20, 21.
    assert torch.equal(x3[0, 15:20, 30:], torch.tensor([[20.0, 21.0]] * 5))
    assert int((x3[2] == 1).sum()) == int(reference_mask(DP_BOXES + torch.tensor([10.0, 0, 10, 0]), DP_H, DP_W).sum())


# ----------------------------------------------------------------------------------------------- inputs, RNG

CALLS: dict[str, Callable[[torch.Tensor, torch.Generator], object]] = {
    "box_mask": lambda b, g: box_mask(b, 32, 32),
    "rbj": lambda b, g: restricted_box_jitter(b, 0.2, g),
    "box_jitter": lambda b, g: box_jitter(b, 0.1, 32, 32, g),
    "box_cutout": lambda b, g: box_cutout(b, 32, 32, 0.5, (0.1, 0.3), g),
    "prc": lambda b, g: proposal_random_cutout(b, 32, 32, (0.2, 0.5), 0.3, g),
    "prm": lambda b, g: proposal_random_mask(b, 32, 32, (0.2, 0.6), (3 / 4, 4 / 3), g),
    "shift": lambda b, g: sample_shift(b, 32, 32, g),
    "composite": lambda b, g: depositioning_composite(torch.zeros(3, 32, 32), torch.ones(3, 32, 32), b, (1, 2),
                                                      torch.zeros(32, 32, dtype=torch.bool)),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("bad", [torch.zeros(2, 3), torch.zeros(0, 4), torch.zeros(4),
                                 torch.zeros(2, 4, dtype=torch.long), torch.tensor([[5.0, 0.0, 1.0, 4.0]])],
                         ids=["K3", "empty", "1d", "int", "x2<x1"])
def test_bad_boxes_raise_user_error(name: str, bad: torch.Tensor) -> None:
    with pytest.raises(UserError, match=r"\[K, 4\]"):
        CALLS[name](bad, gen(0))


@pytest.mark.parametrize("name", CALLS)
def test_randomness_only_from_generator(name: str) -> None:
    boxes = torch.tensor([[2.5, 3.0, 20.0, 14.2], [10.0, 8.0, 30.0, 30.0], [12.0, 12.0, 18.0, 18.0]])

    def run(global_seed: int, seed: int) -> list[torch.Tensor]:
        torch.manual_seed(global_seed)
        out = CALLS[name](boxes, gen(seed))
        parts = out if isinstance(out, tuple) else (out,)
        return [torch.as_tensor(p) for p in parts]

    first, second = run(0, 7), run(1, 7)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    if name not in ("box_mask", "composite"):  # the random ones vary with the generator's seed
        assert any(not all(torch.equal(a, b) for a, b in zip(first, run(0, s), strict=True)) for s in range(8, 20))


def test_prm_rejects_bad_ranges() -> None:
    with pytest.raises(UserError, match="ratio"):
        proposal_random_mask(DP_BOXES, 24, 32, (0.2, 0.6), (0.0, 1.0), gen(0))
    with pytest.raises(UserError, match="size_range"):
        proposal_random_cutout(DP_BOXES, 24, 32, (0.5, 0.2), 0.3, gen(0))
