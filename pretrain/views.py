"""Two-view augmentation that records each view's geometry.

MoCo v2's augmentation (random resized crop, colour jitter, grayscale, blur, flip), written
against an explicit `torch.Generator` so that a sample's views depend only on
(seed, epoch, index): the same seed gives the same views with any number of data-loader workers
and after a resume. Each view also returns where it came from (crop box in the source image, in
[0, 1] coordinates, and the flip), so methods that need exact correspondences between the two
views (LC-loss, PixPro, SoCo) can compute them instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from core.architectures import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ViewConfig:
    """MoCo v2 defaults (moco/main_moco.py, `--aug-plus`)."""

    size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_prob: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0  # MoCo v2 has none; BYOL's second view uses 0.2
    flip_prob: float = 0.5
    crop: bool = True  # False: the whole image resized to size x size (LC-loss's view I_c)


def byol_views(size: int) -> tuple[ViewConfig, ViewConfig]:
    """BYOL's asymmetric pair (Grill et al. 2020, Table 6): scale (0.08, 1), jitter (0.4, 0.4, 0.2, 0.1),
    blur 1.0 / 0.1, solarize 0.0 / 0.2; PixPro and LC-loss use the same augmentation."""
    common = {"size": size, "scale": (0.08, 1.0), "jitter": (0.4, 0.4, 0.2, 0.1)}
    return (ViewConfig(**common, blur_prob=1.0, solarize_prob=0.0),
            ViewConfig(**common, blur_prob=0.1, solarize_prob=0.2))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def _coin(gen: torch.Generator, prob: float) -> bool:
    return torch.rand((), generator=gen).item() < prob


def sample_crop(width: int, height: int, cfg: ViewConfig, gen: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box sampling (torchvision semantics): returns (top, left, h, w) in pixels."""
    area = width * height
    log_ratio = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(gen, *cfg.scale)
        aspect = math.exp(_uniform(gen, *log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    # Fallback as in torchvision: a central crop with the aspect ratio clamped into range.
    in_ratio = width / height
    if in_ratio < cfg.ratio[0]:
        w, h = width, round(width / cfg.ratio[0])
    elif in_ratio > cfg.ratio[1]:
        h, w = height, round(height * cfg.ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _colour_jitter(img: torch.Tensor, cfg: ViewConfig, gen: torch.Generator) -> torch.Tensor:
    b, c, s, h = cfg.jitter
    factors = [_uniform(gen, max(0.0, 1 - b), 1 + b), _uniform(gen, max(0.0, 1 - c), 1 + c),
               _uniform(gen, max(0.0, 1 - s), 1 + s), _uniform(gen, -h, h)]
    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    for i in torch.randperm(4, generator=gen).tolist():  # torchvision applies them in random order
        img = ops[i](img, factors[i])
    return img


def make_view(image: Image.Image, cfg: ViewConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented, normalised view and its geometry [x1, y1, x2, y2, flipped] in [0, 1] image coords."""
    width, height = image.size
    top, left, h, w = sample_crop(width, height, cfg, gen) if cfg.crop else (0, 0, height, width)
    img = F.pil_to_tensor(image)
    img = F.resized_crop(img, top, left, h, w, [cfg.size, cfg.size], antialias=True)
    img = F.to_dtype(img, torch.float32, scale=True)
    if _coin(gen, cfg.jitter_prob):
        img = _colour_jitter(img, cfg, gen)
    if _coin(gen, cfg.grayscale_prob):
        img = F.rgb_to_grayscale(img, num_output_channels=3)
    if _coin(gen, cfg.blur_prob):
        sigma = _uniform(gen, *cfg.blur_sigma)
        kernel = 2 * math.ceil(3 * sigma * cfg.size / 224) + 1  # MoCo's 23 px at 224, scaled to the view size
        img = F.gaussian_blur(img, [kernel, kernel], [sigma * cfg.size / 224] * 2)
    if _coin(gen, cfg.solarize_prob):
        img = F.solarize(img, 0.5)
    flipped = _coin(gen, cfg.flip_prob)
    if flipped:
        img = F.horizontal_flip(img)
    img = F.normalize(img, IMAGENET_MEAN, IMAGENET_STD)
    geometry = torch.tensor([left / width, top / height, (left + w) / width, (top + h) / height, float(flipped)])
    return img, geometry


def view_grid_coords(geometry: torch.Tensor, grid: int) -> torch.Tensor:
    """Source-image [0, 1] (x, y) coordinates of the centres of a view's grid x grid feature cells.

    geometry: [B, 5] as returned by `make_view`; result: [B, grid * grid, 2], row-major cells.
    """
    centres = (torch.arange(grid, dtype=geometry.dtype, device=geometry.device) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    cx, cy = cx.reshape(1, -1), cy.reshape(1, -1)
    flipped = geometry[:, 4:5] > 0.5
    cx = torch.where(flipped, 1 - cx, cx)
    x1, y1, x2, y2 = (geometry[:, i : i + 1] for i in range(4))
    return torch.stack([x1 + cx * (x2 - x1), y1 + cy * (y2 - y1)], dim=-1)


def source_to_view(points: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Map source-image [0, 1] (x, y) points [B, N, 2] into a view's [0, 1] coordinates (the inverse of
    `view_grid_coords`' mapping). Points outside the view's crop land outside [0, 1]."""
    x1, y1, x2, y2 = (geometry[:, i : i + 1] for i in range(4))
    vx = (points[..., 0] - x1) / (x2 - x1)
    vy = (points[..., 1] - y1) / (y2 - y1)
    vx = torch.where(geometry[:, 4:5] > 0.5, 1 - vx, vx)
    return torch.stack([vx, vy], dim=-1)
