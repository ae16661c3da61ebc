"""Region-level augmentations of D3SSL (Sec. 4.1-4.2) and SoCo, on one view and its K proposal boxes.

Conventions shared by every function here:

- boxes are float tensors [K, 4], (x1, y1, x2, y2) in pixels of the view (an image tensor [3, H, W]);
- pixel (row r, col c) belongs to a box when its centre does: x1 <= c + 0.5 < x2 and y1 <= r + 0.5 < y2;
- masks are bool tensors [H, W]; "cut" masks are True where pixels are removed;
- all randomness comes from the `torch.Generator` argument, and each call draws a fixed amount of it, so a
  sample depends only on its generator's state.

D3SSL's augmentations:

- PRC (`proposal_random_cutout`): boxes are processed from large to small area; each gets one cutout with its
  own aspect ratio and side fraction s ~ U(size_range). The paper's rule "the cutout regions of one proposal
  cannot cover another proposal by more than a threshold; otherwise the overlapped cutout region is recovered
  to image for smaller proposals" is implemented as an invariant: for every box o, the pixels of o removed by
  the cutouts of OTHER boxes never exceed max_cover * (pixel count of o). When a new cutout would break it for
  some boxes, the part of the cutout inside one of them is restored, smallest violating box first, until no
  box is violated (restoring for a small box may already fix a larger one that contains it).
- PRM (`proposal_random_mask`), our reading of the paper's two sentences: each box gets one background
  rectangle of area U(scale) * box area and aspect ratio (w / h) log-uniform in `ratio`, attached from outside
  to one random side of the box (left, right, top or bottom), its centre along that side uniform over the
  side's extent (so it always touches the side), then clipped to the view. Everything outside the union of
  the boxes and their rectangles is blanked: a region feature, whose receptive field exceeds its box, sees
  its box plus background from one random direction, not its neighbours.
- RBJ (`restricted_box_jitter`): box jitter whose output always lies inside the original box.
- De-positioning (`sample_shift`, `depositioning_composite`): one integer shift for all boxes, and the boxes'
  pixels pasted at the shifted place on another image (Eq. 6-8).

SoCo's augmentations (hologerry/SoCo, released C4 script): `box_jitter` (ratio 0.1) and `box_cutout`
(probability 0.5, side fractions in [0.1, 0.3]). Their values live in the config (`pretrain.region_augment`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.errors import UserError

_BOX_FORMAT = "boxes must be a float tensor [K, 4] of (x1, y1, x2, y2) in view pixels with K >= 1"


# ----------------------------------------------------------------------------------------------- checks


def _check_boxes(boxes: Tensor) -> None:
    if not isinstance(boxes, Tensor):
        raise UserError(f"{_BOX_FORMAT}; got {type(boxes).__name__}: wrap them with torch.tensor(..., dtype=float)")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError(f"{_BOX_FORMAT}; got shape {list(boxes.shape)}: pass one row of 4 coordinates per box")
    if boxes.shape[0] == 0:
        raise UserError(f"{_BOX_FORMAT}; got K = 0: skip images without proposals before augmenting")
    if not boxes.is_floating_point():
        raise UserError(f"{_BOX_FORMAT}; got dtype {boxes.dtype}: convert with boxes.float()")
    if not torch.isfinite(boxes).all():
        raise UserError(f"{_BOX_FORMAT}; got NaN or infinite coordinates: drop those boxes")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise UserError(f"{_BOX_FORMAT}; got a box with x2 < x1 or y2 < y1: pass corners, not (x, y, w, h)")


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise UserError(f"the view size must be positive, got height {height}, width {width}")


def _check_range(name: str, values: tuple[float, float], low: float, high: float) -> None:
    if not (low <= values[0] <= values[1] <= high):
        raise UserError(f"{name} must be (low, high) with {low} <= low <= high <= {high}, got {values}")


def _check_mask(name: str, mask: Tensor, height: int, width: int) -> None:
    if mask.dtype != torch.bool or tuple(mask.shape) != (height, width):
        raise UserError(f"{name} must be a bool tensor [{height}, {width}] (the view's H, W), "
                        f"got {mask.dtype} {list(mask.shape)}")


def _rand(gen: torch.Generator, *shape: int, like: Tensor) -> Tensor:
    """U(0, 1) samples from `gen` (on the generator's device), moved to `like`'s device and dtype."""
    return torch.rand(shape, generator=gen).to(like)


# ----------------------------------------------------------------------------------------------- masks


def _pixel_extents(boxes: Tensor, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Per box (c0, r0, c1, r1): it covers columns c0 <= c < c1 and rows r0 <= r < r1 of the view (none when
    c1 <= c0 or r1 <= r0). x1 <= c + 0.5 < x2 is c >= ceil(x1 - 0.5) and c < ceil(x2 - 0.5); float64 makes
    the subtraction exact for float32 boxes."""
    extents = torch.ceil(boxes.detach().cpu().double() - 0.5)
    limit = torch.tensor([width, height, width, height], dtype=torch.float64)
    return [(c0, r0, c1, r1) for c0, r0, c1, r1 in torch.minimum(extents.clamp(min=0), limit).long().tolist()]


def _box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """[K, H, W] bool: the pixels of each box. Slicing per box is ~10x faster than a [K, H, W] outer product."""
    masks = torch.zeros(boxes.shape[0], height, width, dtype=torch.bool, device=boxes.device)
    for mask, (c0, r0, c1, r1) in zip(masks, _pixel_extents(boxes, height, width), strict=True):
        mask[r0:r1, c0:c1] = True
    return masks


def _union_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool, device=boxes.device)
    for c0, r0, c1, r1 in _pixel_extents(boxes, height, width):
        mask[r0:r1, c0:c1] = True
    return mask


def box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """Union of the boxes' pixels as a bool mask [H, W] (D3SSL Eq. 6)."""
    _check_boxes(boxes)
    _check_size(height, width)
    return _union_mask(boxes, height, width)


# ----------------------------------------------------------------------------------------------- jitter


def restricted_box_jitter(boxes: Tensor, ratio: float, gen: torch.Generator) -> Tensor:
    """D3SSL's RBJ: width and height scaled by U(1 - ratio, 1), centre shifted by U(-ratio, ratio) * w (h),
    then moved back inside the original box, so the result never exceeds it."""
    _check_boxes(boxes)
    if not 0 <= ratio < 1:
        raise UserError(f"the RBJ ratio must be in [0, 1), got {ratio}")
    u = _rand(gen, boxes.shape[0], 4, like=boxes)
    size = boxes[:, 2:] - boxes[:, :2]  # [K, 2]: w, h
    new_size = size * (1 - ratio * u[:, :2])
    # Offset of the new corner from the old one: centred, plus the shift, clamped to the room left inside.
    slack = size - new_size
    offset = (slack / 2 + (2 * u[:, 2:] - 1) * ratio * size).clamp(min=torch.zeros_like(slack), max=slack)
    lo = torch.maximum(boxes[:, :2] + offset, boxes[:, :2])
    hi = torch.minimum(lo + new_size, boxes[:, 2:])  # min/max only absorb float rounding
    return torch.cat([lo, hi], dim=1)


def box_jitter(boxes: Tensor, ratio: float, height: int, width: int, gen: torch.Generator) -> Tensor:
    """SoCo's box jitter: w, h scaled by 1 + U(-ratio, ratio), centre shifted by U(-ratio, ratio) * w (h),
    clipped to the view; a box clipped below 1 px is widened back to 1 px inside the view."""
    _check_boxes(boxes)
    _check_size(height, width)
    if not 0 <= ratio < 1:
        raise UserError(f"the box jitter ratio must be in [0, 1), got {ratio}")
    u = 2 * _rand(gen, boxes.shape[0], 4, like=boxes) - 1  # U(-1, 1)
    size = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + u[:, 2:] * ratio * size
    half = size * (1 + u[:, :2] * ratio) / 2
    limit = boxes.new_tensor([width, height])
    lo = torch.minimum((centre - half).clamp(min=0), limit)
    hi = torch.minimum((centre + half).clamp(min=0), limit)
    # At least 1 px, so every box still covers a pixel (RoIAlign of an empty box is meaningless).
    short = hi - lo < 1
    lo = torch.where(short, torch.minimum(lo, limit - 1), lo)
    hi = torch.where(short, lo + 1, hi)
    return torch.cat([lo, hi], dim=1)


# ----------------------------------------------------------------------------------------------- cutouts


def _rects_inside(boxes: Tensor, fractions: Tensor, position: Tensor) -> Tensor:
    """Rectangles [K, 4] whose sides are `fractions` [K, 2] of the boxes' sides, at relative `position`
    [K, 2] in [0, 1] of the room left inside each box."""
    size = boxes[:, 2:] - boxes[:, :2]
    rect_size = fractions * size
    lo = boxes[:, :2] + position * (size - rect_size)
    return torch.cat([lo, torch.minimum(lo + rect_size, boxes[:, 2:])], dim=1)


def box_cutout(boxes: Tensor, height: int, width: int, prob: float, side_range: tuple[float, float],
               gen: torch.Generator) -> Tensor:
    """SoCo's cutout inside boxes: with probability `prob` per box, a rectangle whose sides are U(side_range)
    fractions of the box's sides, at a uniform position inside the box. Returns the cut mask [H, W]."""
    _check_boxes(boxes)
    _check_size(height, width)
    _check_range("side_range", side_range, 0.0, 1.0)
    if not 0 <= prob <= 1:
        raise UserError(f"the cutout probability must be in [0, 1], got {prob}")
    u = _rand(gen, boxes.shape[0], 5, like=boxes)
    fractions = side_range[0] + (side_range[1] - side_range[0]) * u[:, 1:3]
    rects = _rects_inside(boxes, fractions, u[:, 3:5])
    return _union_mask(rects[u[:, 0] < prob], height, width)


def _proposal_cutouts(boxes: Tensor, height: int, width: int, size_range: tuple[float, float], max_cover: float,
                      gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """PRC with its details: (the sampled cutout rectangles [K, 4], each box's cutout pixels [K, H, W] after
    restoring), both in the boxes' input order."""
    _check_boxes(boxes)
    _check_size(height, width)
    _check_range("size_range", size_range, 0.0, 1.0)
    if not max_cover >= 0:
        raise UserError(f"max_cover must be >= 0 (a fraction of a box's area), got {max_cover}")
    k = boxes.shape[0]
    u = _rand(gen, k, 3, like=boxes)
    side = size_range[0] + (size_range[1] - size_range[0]) * u[:, :1]
    rects = _rects_inside(boxes, side.expand(k, 2), u[:, 1:])  # one fraction for both sides: same aspect ratio
    pixels = _box_masks(boxes, height, width)
    limit = max_cover * pixels.sum((1, 2))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    by_area = torch.argsort(areas, descending=True, stable=True).tolist()
    small_first = by_area[::-1]
    cutouts = torch.zeros_like(pixels)  # each box's kept cutout
    foreign = torch.zeros_like(pixels)  # foreign[o]: pixels of box o removed by other boxes' kept cutouts
    foreign_count = torch.zeros(k, dtype=torch.long, device=boxes.device)
    rect_extents = _pixel_extents(rects, height, width)
    for i in by_area:
        c0, r0, c1, r1 = rect_extents[i]
        if c1 <= c0 or r1 <= r0:
            continue  # the cutout covers no pixel centre
        # Work in the cutout's window only: it covers the whole window, and nothing outside changes.
        window = (slice(None), slice(r0, r1), slice(c0, c1))
        inside = pixels[window]
        fresh = inside & ~foreign[window]  # window pixels each box has not lost to others yet
        cut = torch.ones(r1 - r0, c1 - c0, dtype=torch.bool, device=boxes.device)
        others = torch.arange(k, device=boxes.device) != i
        while True:
            over = (foreign_count + (fresh & cut).sum((1, 2)) > limit) & others
            if not over.any():
                break
            # Restore for the smallest box first ("recovered to image for smaller proposals"); restoring
            # only shrinks the cutout, so boxes already within their limit stay within it.
            o = next(j for j in small_first if over[j])
            cut = cut & ~inside[o]
        cutouts[i][r0:r1, c0:c1] = cut
        newly = fresh & cut & others[:, None, None]
        foreign_count += newly.sum((1, 2))
        foreign[window] |= newly
    return rects, cutouts


def proposal_random_cutout(boxes: Tensor, height: int, width: int, size_range: tuple[float, float],
                           max_cover: float, gen: torch.Generator) -> Tensor:
    """D3SSL's PRC: one cutout per box with the box's aspect ratio, side fraction U(size_range), at a uniform
    position inside it, boxes taken from large to small; a box never loses more than max_cover of its pixels
    to other boxes' cutouts (see the module docstring). Returns the cut mask [H, W]."""
    return _proposal_cutouts(boxes, height, width, size_range, max_cover, gen)[1].any(0)


def proposal_random_mask(boxes: Tensor, height: int, width: int, scale: tuple[float, float],
                         ratio: tuple[float, float], gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """D3SSL's PRM (our interpretation, see the module docstring): one background rectangle per box, attached
    from outside to a random side. Returns (keep mask [H, W] = union of boxes and rectangles, the rectangles
    [K, 4] clipped to the view); everything outside the keep mask is to be blanked."""
    _check_boxes(boxes)
    _check_size(height, width)
    if not (0 < scale[0] <= scale[1]):
        raise UserError(f"scale must be (low, high) with 0 < low <= high (fractions of a box's area), got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise UserError(f"ratio must be (low, high) with 0 < low <= high (width / height), got {ratio}")
    k = boxes.shape[0]
    u = _rand(gen, k, 4, like=boxes)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1) * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    rw, rh = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    side = (4 * u[:, 2]).long().clamp(max=3)  # 0 left, 1 right, 2 top, 3 bottom
    along = u[:, 3]
    # Centre along the side uniform over the side's extent, so the rectangle always touches the side.
    cy = y1 + along * (y2 - y1)
    cx = x1 + along * (x2 - x1)
    # Left / right: outside the box along x, centred on cy; top / bottom: outside along y, centred on cx.
    # The touching edge is the box's own coordinate (not lo + size), so rectangle and box share it exactly.
    rx1 = torch.where(side == 0, x1 - rw, torch.where(side == 1, x2, cx - rw / 2))
    rx2 = torch.where(side == 0, x1, torch.where(side == 1, x2 + rw, cx + rw / 2))
    ry1 = torch.where(side == 2, y1 - rh, torch.where(side == 3, y2, cy - rh / 2))
    ry2 = torch.where(side == 2, y1, torch.where(side == 3, y2 + rh, cy + rh / 2))
    rects = torch.stack([rx1, ry1, rx2, ry2], dim=1)
    rects = torch.minimum(rects.clamp(min=0), boxes.new_tensor([width, height, width, height]))
    keep = _union_mask(torch.cat([boxes, rects]), height, width)
    return keep, rects


def blank(view: Tensor, removed: Tensor) -> Tensor:
    """A copy of the normalised view [3, H, W] with the removed pixels set to 0, the dataset mean colour."""
    if view.ndim != 3:
        raise UserError(f"view must be an image tensor [3, H, W], got shape {list(view.shape)}")
    _check_mask("removed", removed, view.shape[1], view.shape[2])
    return view.masked_fill(removed, 0.0)


# ----------------------------------------------------------------------------------------------- de-positioning


def sample_shift(boxes: Tensor, height: int, width: int, gen: torch.Generator) -> tuple[int, int]:
    """D3SSL's de-positioning shift: one integer (tx, ty) for all boxes, uniform over the shifts that keep
    every box's pixels inside the view (shifted float corners then lie in (-0.5, W + 0.5])."""
    _check_boxes(boxes)
    _check_size(height, width)
    # Boxes thinner than a pixel centre cover nothing and may go anywhere.
    covering = [(c0, r0, c1, r1) for c0, r0, c1, r1 in _pixel_extents(boxes, height, width) if c1 > c0 and r1 > r0]
    if not covering:
        raise UserError(f"no box covers a pixel centre of the {height} x {width} view: pass boxes in view pixels")
    shifts = []
    for axis, size in ((0, width), (1, height)):
        first, end = min(e[axis] for e in covering), max(e[axis + 2] for e in covering)
        # Shifts in [-first, size - end] keep the covered pixels inside [0, size).
        shifts.append(int(torch.randint(-first, size - end + 1, (), generator=gen)))
    return shifts[0], shifts[1]


def _shift_slices(shift: int, size: int) -> tuple[slice, slice]:
    """(source, target) slices of one axis for an integer translation; empty when |shift| >= size."""
    shift = max(-size, min(size, shift))
    return slice(max(0, -shift), size - max(0, shift)), slice(max(0, shift), size - max(0, -shift))


def depositioning_composite(view: Tensor, background: Tensor, boxes: Tensor, shift: tuple[int, int],
                            cut: Tensor) -> tuple[Tensor, Tensor]:
    """D3SSL Eq. 6-8: the boxes' pixels of `view` pasted onto `background` shifted by (tx, ty), except where
    `cut` (PRC on the shifted boxes, Eq. 7) removes them. Returns (x3 [3, H, W], shifted boxes [K, 4], clipped
    to the view, which changes none of their pixels when `shift` comes from `sample_shift`)."""
    _check_boxes(boxes)
    if view.ndim != 3 or view.shape != background.shape:
        raise UserError(f"view and background must be image tensors of one shape [3, H, W], got "
                        f"{list(view.shape)} and {list(background.shape)}: resize the background to the view")
    height, width = view.shape[1:]
    _check_mask("cut", cut, height, width)
    tx, ty = int(shift[0]), int(shift[1])
    (src_x, dst_x), (src_y, dst_y) = _shift_slices(tx, width), _shift_slices(ty, height)
    # Shifting the source mask by slicing equals box_mask(boxes + t) for boxes inside the view (an integer
    # shift moves pixel centres and box edges alike), and never reads pixels from outside the view.
    moved = torch.zeros_like(cut)
    moved[dst_y, dst_x] = box_mask(boxes, height, width)[src_y, src_x]
    pasted = torch.zeros_like(view)
    pasted[:, dst_y, dst_x] = view[:, src_y, src_x]
    x3 = torch.where(moved & ~cut, pasted, background)
    shifted = boxes + boxes.new_tensor([tx, ty, tx, ty])
    shifted = torch.minimum(shifted.clamp(min=0), boxes.new_tensor([width, height, width, height]))
    return x3, shifted
