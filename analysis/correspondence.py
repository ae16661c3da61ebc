"""`python -m analysis correspondence`: how well a frozen backbone's cells find their own location.

Two measures on COCO images, both by the winner-takes-all rule: a cell's match is the cell of the
other map with the highest cosine similarity (ties: the lowest row-major index, `torch.max`'s rule).

- correspondence_acc (LC-loss Sec. 4.6, "More Analysis on Correspondence"): an image against its
  horizontally flipped, colour-transformed copy ("Gaussian blur, color jitter, and random
  grayscale"); a cell (i, j) of the image's map is correct when its match in the copy's map is the
  mirrored cell (i, w - 1 - j), i.e. the paper's (w - x, y) "measured in the feature locations". The
  paper states no strengths: we use BYOL's first view (Grill et al. 2020, Table 6; jitter
  (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2, blur p 1.0), drawn from the seed. The paper
  reads ResNet-50's final stage (Sec. 5: "32x down-sampled"), hence the protocol's `layer`.
- pair_acc (HoughCL Sec. 2.2 / Fig. 1): DenseCL's positive pairs. Two views from DenseCL's own
  augmentation (MoCo v2's, `pretrain.views`, with the protocol's crop scale), whose crop boxes and
  flips are known; a cell of view 1 whose centre lies inside view 2 is correct when the true
  location of that centre in view 2 falls in its matched cell, or within `pair_tolerance` cells of
  it (Chebyshev distance in cells; 0 = exactly that cell).
- pair_acc_phm: the same views and cells matched by HoughCL's probabilistic Hough matching (Sec. 3,
  `pretrain.matching`, with the protocol's `phm` settings: pretrain.houghcl's), HoughCL Fig. 1's other panel.

Views are drawn from (seed, measure, image index) only, so a measurement is deterministic.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from analysis.probe_cli import add_probe, write_probe_metrics
from core.errors import UserError
from core.images import load_rgb
from finetune.common import frozen_resnet, parse_protocol_json
from finetune.dense_eval.features import LAYERS, NATURAL_STRIDE, DenseFeatures
from finetune.dense_eval.protocol import require_int, require_number
from pretrain.data import sample_generator, two_views
from pretrain.matching import cell_similarity, gaussian_kernel, phm_confidence
from pretrain.views import ViewConfig, byol_views, make_view, source_to_view, view_grid_coords

PROBE = "correspondence"
SPLITS = ("val2017", "train2017")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Independent generator streams per image (the "epoch" argument of `sample_generator`).
FLIP_STREAM, PAIR_STREAM = 0, 1
PHM_KEYS = ("appearance_power", "offset_bins", "kernel_size", "kernel_sigma")


@dataclass(frozen=True)
class CorrespondenceProtocol:
    """The analysis.probes.correspondence settings of workflow/config (threads come from --threads)."""

    split: str  # COCO image folder under --data-root
    images: int  # the first `images` files of the folder in sorted name order
    image_size: int  # every image (and view) resized to image_size x image_size
    layer: str  # ResNet stage whose map is matched, at its natural stride
    crop_scale: tuple[float, float]  # area range of the random resized crops of the pair views
    pair_tolerance: int  # a pair is correct within this many cells (Chebyshev) of the true cell
    figure_images: int  # images drawn in pairs.png
    phm: dict[str, float]  # PHM's appearance_power, offset_bins, kernel_size, kernel_sigma (pretrain.houghcl)

    @classmethod
    def from_json(cls, text: str) -> CorrespondenceProtocol:
        keys = frozenset(field.name for field in fields(cls))
        return cls(**parse_protocol_json(text, keys, f"analysis.probes.{PROBE}"))

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UserError(f"protocol split must be one of {list(SPLITS)}, got {self.split!r}.")
        require_int("images", self.images, 1)
        if self.layer not in LAYERS:
            raise UserError(f"protocol layer must be one of {list(LAYERS)}, got {self.layer!r}.")
        stride = NATURAL_STRIDE[self.layer]
        require_int("image_size", self.image_size, 2 * stride)
        if self.image_size % stride:
            raise UserError(f"protocol image_size {self.image_size} is not a multiple of {self.layer}'s stride "
                            f"{stride}, so its cells would not tile the image; use e.g. "
                            f"{self.image_size // stride * stride}.")
        scale = self.crop_scale
        numbers = isinstance(scale, (list, tuple)) and len(scale) == 2 and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale)
        if not numbers or not 0 < scale[0] <= scale[1] <= 1:
            raise UserError(f"protocol crop_scale must be [min, max] with 0 < min <= max <= 1, got {scale!r}.")
        object.__setattr__(self, "crop_scale", (float(scale[0]), float(scale[1])))
        require_int("pair_tolerance", self.pair_tolerance, 0)
        require_int("figure_images", self.figure_images, 0)
        if self.figure_images > self.images:
            raise UserError(f"protocol figure_images ({self.figure_images}) exceeds images ({self.images}); "
                            "lower it.")
        if not isinstance(self.phm, dict) or set(self.phm) != set(PHM_KEYS):
            raise UserError(f"protocol phm must hold exactly {list(PHM_KEYS)} (pretrain.houghcl), got {self.phm!r}.")
        require_number("appearance_power", self.phm["appearance_power"], positive=True)
        require_int("offset_bins", self.phm["offset_bins"], 1)
        require_int("kernel_size", self.phm["kernel_size"], 1)
        require_number("kernel_sigma", self.phm["kernel_sigma"], positive=True)

    def grid(self) -> int:
        """Cells per side of the matched maps."""
        return self.image_size // NATURAL_STRIDE[self.layer]


def mirrored_cells(height: int, width: int) -> torch.Tensor:
    """For each cell of a height x width map (row-major), the row-major index of its mirror (i, w - 1 - j)."""
    index = torch.arange(height * width).view(height, width)
    return index.flip(1).flatten()


def best_matches(map1: torch.Tensor, map2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Winner-takes-all matching of two maps [C, h, w]: for each cell of map1 (row-major) the index of
    its most cosine-similar cell of map2 and that cosine, [h * w] each. Ties go to the lowest index.
    On square maps this is `pretrain.matching.argmax_match`, DenseCL's rule."""
    a = F.normalize(map1.flatten(1), dim=0)
    b = F.normalize(map2.flatten(1), dim=0)
    cosine, match = (a.t() @ b).max(dim=1)
    return match, cosine


def phm_matches(map1: torch.Tensor, map2: torch.Tensor, phm: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """HoughCL's matching of two square maps [C, g, g]: for each cell of map1 the cell of map2 with the highest
    PHM confidence p(m|D) (HoughCL Eq. 1) and that confidence, [g * g] each (`pretrain.matching.phm_match`)."""
    grid = map1.shape[-1]
    appearance = cell_similarity(map1[None], map2[None], grid).clamp(min=0).pow(phm["appearance_power"])
    kernel = gaussian_kernel(phm["kernel_size"], phm["kernel_sigma"])
    confidence, match = phm_confidence(appearance, grid, phm["offset_bins"], kernel)[0].max(dim=1)
    return match, confidence


def flip_correct(map1: torch.Tensor, map2: torch.Tensor) -> torch.Tensor:
    """Per cell of map1 [C, h, w], whether its match in map2 (the flipped copy's map) is its mirror cell."""
    match, _ = best_matches(map1, map2)
    return match == mirrored_cells(*map1.shape[1:])


def flip_pair(image: Image.Image, colour: ViewConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The image resized to colour.size (normalised, no other change) and its flipped, colour-transformed copy.

    `colour` must not crop and must always flip (`flip_colour_view`)."""
    plain = ViewConfig(size=colour.size, crop=False, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                       flip_prob=0.0)
    original, _ = make_view(image, plain, gen)
    copy, geometry = make_view(image, colour, gen)
    if colour.crop or float(geometry[4]) != 1.0:
        raise ValueError("the copy's view must be uncropped and flipped")
    return original, copy


def flip_colour_view(size: int) -> ViewConfig:
    """LC-loss Sec. 4.6's copy: flip + blur, colour jitter, random grayscale at BYOL view 1's strengths."""
    return replace(byol_views(size)[0], crop=False, flip_prob=1.0, solarize_prob=0.0)


@dataclass(frozen=True)
class PairMatches:
    """The positive pairs of view 1's cells [grid * grid] by one matching rule, judged against the views'
    known geometry."""

    match: torch.Tensor  # view-2 cell of each view-1 cell
    score: torch.Tensor  # the rule's confidence in it: cosine similarity (argmax), p(m|D) (PHM)
    eligible: torch.Tensor  # view-1 cell's centre lies inside view 2
    correct: torch.Tensor  # eligible and matched within the tolerance of the true cell


def judge_pairs(map1: torch.Tensor, map2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                tolerance: int, phm: dict[str, float] | None = None) -> PairMatches:
    """Match view 1's cells into view 2, by DenseCL's argmax or (given `phm` settings) HoughCL's PHM, and
    check them; maps [C, g, g] tile their square views, geom [5] as `pretrain.views.make_view` returns."""
    grid = map1.shape[-1]
    if map1.shape[-2:] != (grid, grid) or map2.shape[-2:] != (grid, grid):
        raise ValueError(f"maps must be square and of one size, got {tuple(map1.shape)} and {tuple(map2.shape)}")
    match, score = best_matches(map1, map2) if phm is None else phm_matches(map1, map2, phm)
    in_view2 = source_to_view(view_grid_coords(geom1[None], grid), geom2[None])[0]  # [g * g, 2] (x, y)
    eligible = ((in_view2 >= 0) & (in_view2 < 1)).all(dim=1)
    true_col, true_row = (in_view2.clamp(0, 1 - 1e-6) * grid).floor().long().unbind(dim=1)
    off = torch.maximum((match // grid - true_row).abs(), (match % grid - true_col).abs())
    return PairMatches(match, score, eligible, eligible & (off <= tolerance))


def coco_images(data_root: Path, split: str, count: int) -> list[Path]:
    """The first `count` images of <data_root>/<split> in sorted name order."""
    folder = Path(data_root) / split
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist; pass the COCO root (with {split}/) as --data-root.")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < count:
        raise UserError(f"{folder} holds {len(paths)} images but the protocol asks for {count}; lower images.")
    return paths[:count]


@torch.no_grad()
def measure(paths: list[Path], features: Callable[[torch.Tensor], torch.Tensor], protocol: CorrespondenceProtocol,
            seed: int, colour: ViewConfig | None = None, pair_view: ViewConfig | None = None
            ) -> tuple[dict[str, float], list[tuple[str, torch.Tensor, torch.Tensor, dict[str, PairMatches]]]]:
    """The measures over `paths`; returns the metrics and the figure's examples (name, view1, view2, pairs by
    rule): the first `figure_images` images with at least one view-1 cell inside view 2.

    features: normalised images [B, 3, S, S] -> maps [B, C, g, g]. colour / pair_view replace the
    protocol's augmentations (tests switch colour off)."""
    size = protocol.image_size
    colour = colour or flip_colour_view(size)
    pair_view = pair_view or ViewConfig(size=size, scale=protocol.crop_scale)  # DenseCL = MoCo v2 views
    flip_hits = flip_cells = pair_hits = pair_cells = phm_hits = 0
    examples = []
    for index, path in enumerate(tqdm(paths, desc=PROBE)):
        image = load_rgb(path, min_side=size)
        original, copy = flip_pair(image, colour, sample_generator(seed, FLIP_STREAM, index))
        views = two_views(image, (pair_view, pair_view), sample_generator(seed, PAIR_STREAM, index))
        maps = features(torch.stack([original, copy, views["view1"], views["view2"]]))
        flip_ok = flip_correct(maps[0], maps[1])
        flip_hits, flip_cells = flip_hits + int(flip_ok.sum()), flip_cells + flip_ok.numel()
        pairs = {rule: judge_pairs(maps[2], maps[3], views["geom1"], views["geom2"], protocol.pair_tolerance, phm)
                 for rule, phm in (("argmax", None), ("PHM", protocol.phm))}
        pair_hits, pair_cells = pair_hits + int(pairs["argmax"].correct.sum()), pair_cells + int(
            pairs["argmax"].eligible.sum())
        phm_hits += int(pairs["PHM"].correct.sum())
        if len(examples) < protocol.figure_images and pairs["argmax"].eligible.any():  # a figure row needs pairs
            examples.append((path.name, views["view1"], views["view2"], pairs))
    if not pair_cells:
        raise UserError("no cell centre of a first view fell inside its second view; raise images or the lower "
                        "bound of crop_scale.")
    metrics = {"correspondence_acc": 100.0 * flip_hits / flip_cells, "correspondence_cells": flip_cells,
               "correspondence_correct": flip_hits,
               "pair_acc": 100.0 * pair_hits / pair_cells, "pair_acc_phm": 100.0 * phm_hits / pair_cells,
               "pair_cells": pair_cells, "pair_correct": pair_hits, "pair_correct_phm": phm_hits,
               "images": len(paths)}
    return metrics, examples


def stage_features(arch: str, backbone: Path | None, seed: int, layer: str) -> nn.Module:
    """The frozen trunk up to `layer` at its natural stride, on normalised images."""
    return DenseFeatures(frozen_resnet(arch, backbone, seed), layer, NATURAL_STRIDE[layer]).trunk


def run(data_root: Path, backbone: Path | None, arch: str, protocol_json: str, seed: int, threads: int,
        out: Path) -> dict[str, Any]:
    """The probe: pairs.png, then metrics.json."""
    from analysis.pair_figure import draw_pairs  # matplotlib only when the probe runs

    protocol = CorrespondenceProtocol.from_json(protocol_json)
    torch.set_num_threads(threads)
    paths = coco_images(data_root, protocol.split, protocol.images)
    features = stage_features(arch, backbone, seed, protocol.layer)
    metrics, examples = measure(paths, features, protocol, seed)
    figure = Path(out) / "pairs.png"
    draw_pairs(examples, figure)
    return write_probe_metrics(out, PROBE, metrics, protocol=asdict(protocol), backbone=backbone, arch=arch,
                               seed=seed, figure=figure.name)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `correspondence` to `python -m analysis`."""
    add_probe(subparsers, PROBE, "flip correspondence (LC-loss Sec. 4.6) and DenseCL / HoughCL positive-pair "
              "accuracy (HoughCL Fig. 1) of frozen features", "COCO root with val2017/ (or train2017/)", run)
