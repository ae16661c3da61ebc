"""`python -m analysis coupling`: D3SSL's coupling rate (CR, Sec. 3.1) and mean cosine similarity (MCS,
Sec. 3.2) of a frozen ResNet, per stage C2..C5 (= layer1..layer4 outputs).

Both measures are read off region features: RoIAlign (roi_size x roi_size, spatial scale 1 / the stage's
stride) of the stage's map inside the box of a pasted object, averaged over the RoI bins, as D3SSL's O-KNN
does (Sec. 5.3: "RoI Align with a size of 7 x 7 and average pooling"). The objects are real COCO instances:
the annotation's box cut out of its image with the instance mask (object pixels kept, the rest black),
rescaled so that its longer side is `object_size`, and centred in an `object_size` square cell.

- CR (Sec. 3.1; the paper gives it in words, not as a numbered equation): objects A and B of different
  categories. Image 1 = A's cell, `gap` black columns, B's cell on a black canvas; image 2 = the same canvas
  with B's cell black. "We then compute the cosine similarity between the features extracted from A1 (object
  A in the first image) and from B, and the one between the features extracted from A2 (object A in the
  second image) and from B. We denote the ratio of these two similarities as the coupling rate (CR)":
      CR = cos(f(A1), f(B)) / cos(f(A2), f(B)),  f(B) taken from image 1 (the only image that holds B),
  averaged over the pairs. 1 means that B does not change A's feature; coupling pulls A towards B (> 1).
- MCS (Sec. 3.2): one object tiled in a 3 x 3 grid of cells; the mean over the 8 outer cells of
  cos(f(centre), f(cell)), averaged over the objects. 1 means no positional information.

Our choices where the paper is silent: A is always on the left; objects keep their aspect ratio; the RoI is
the pasted object's box. `gap` black pixels separate A's and B's cells: 0 in the configs, the paper's "next
to each other". The bilinear samples of an aligned RoIAlign reach half a feature cell past the box, so with
gap 0 A's C5 RoI reads B's first feature column and even a network without spatial mixing shows CR != 1;
a gap of one C5 stride (32) gives CR = 1 exactly there (tests/test_coupling.py), at the cost of A and B no
longer touching (docs/protocol_notes.md); `object_size` is a multiple of 32 so that every grid cell sits at
the same phase of every stage's sampling grid (otherwise MCS < 1 even without any positional bias); RoIAlign is the
aligned (half-pixel) variant, as detectron2's ROIAlignV2, with adaptive sampling. Outer MCS cells whose
object touches the canvas edge also differ by RoIAlign's edge clamping (samples beyond the map read the
edge cell), which is below 3e-4 of MCS for a network without spatial mixing. Objects are
non-crowd instances with area >= `min_area`, sampled without replacement (the A objects, and the MCS
objects, in separate random streams) from the annotation's objects sorted by id; each B is drawn uniformly
from the other categories' objects. Per-chunk results are kept under <out>/work so a run resumes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.ops import roi_align
from tqdm import tqdm

from analysis.probe_cli import add_probe, write_probe_metrics
from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from core.io import atomic_path, read_json
from core.provenance import config_hash
from finetune.common import check_resumable, frozen_resnet, parse_protocol_json
from finetune.dense_eval.protocol import require_int, require_number
from prepare.voc import instance_mask

STAGES = ("C2", "C3", "C4", "C5")  # outputs of layer1..layer4
STRIDES = (4, 8, 16, 32)
CENTRE = 4  # row-major index of the centre cell of the 3 x 3 grid
_CHUNK = 32  # pairs (CR) or objects (MCS) per checkpoint file
_BATCH = 4  # canvases per forward pass

# images [N, 3, H, W] in [0, 1] -> the 4 stage maps [N, C_i, ceil(H / s_i), ceil(W / s_i)], s_i = STRIDES[i]
StageFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class CouplingProtocol:
    """The analysis.probes.coupling settings of workflow/config (threads come from --threads)."""

    split: str  # COCO split whose instances are cut out (annotations/instances_<split>.json, <split>/)
    pairs: int  # (A, B) object pairs of the coupling rate
    objects: int  # objects tiled 3 x 3 for the mean cosine similarity
    object_size: int  # longer side of a pasted object = side of its square cell, pixels (multiple of 32)
    min_area: float  # smallest annotation area (original pixels) of an eligible object
    gap: int  # black pixels between A's and B's cells
    roi_size: int  # RoIAlign output side before averaging

    @classmethod
    def from_json(cls, text: str) -> CouplingProtocol:
        keys = frozenset(field.name for field in fields(cls))
        return cls(**parse_protocol_json(text, keys, "coupling"))

    def __post_init__(self) -> None:
        if not isinstance(self.split, str) or not self.split or "/" in self.split:
            raise UserError(f"protocol split must be a COCO split name such as 'val2017', got {self.split!r}.")
        require_int("pairs", self.pairs, 1)
        require_int("objects", self.objects, 1)
        require_int("object_size", self.object_size, STRIDES[-1])
        if self.object_size % STRIDES[-1]:
            raise UserError(f"protocol object_size must be a multiple of {STRIDES[-1]} (the C5 stride), got "
                            f"{self.object_size}; e.g. {STRIDES[-1] * max(1, round(self.object_size / 32))}.")
        require_number("min_area", self.min_area, positive=False)
        require_int("gap", self.gap, 0)
        require_int("roi_size", self.roi_size, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CocoObject:
    """One eligible instance: its annotation and its image's file and size."""

    ann: dict[str, Any]
    image: Path
    height: int
    width: int

    @property
    def category(self) -> int:
        return self.ann["category_id"]


def eligible_objects(data_root: Path, split: str, min_area: float) -> list[CocoObject]:
    """Non-crowd instances of `split` with area >= min_area and a box of at least 1 x 1 pixel, by annotation id."""
    ann_file = data_root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file() or not (data_root / split).is_dir():
        raise UserError(f"{data_root} is not a COCO root with annotations/instances_{split}.json and {split}/; "
                        "fix --data-root (or the protocol split), or build it with the prepare stage.")
    try:
        coco = read_json(ann_file)
        images = {image["id"]: image for image in coco["images"]}
        annotations = coco["annotations"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{ann_file} is not a COCO instances file ({err}); rebuild the COCO root.") from err
    found = []
    for ann in sorted(annotations, key=lambda a: a["id"]):
        _, _, w, h = ann["bbox"]
        if ann.get("iscrowd", 0) or ann["area"] < min_area or w < 1 or h < 1:
            continue
        if (image := images.get(ann["image_id"])) is None:
            raise UserError(f"{ann_file}: annotation {ann['id']} refers to a missing image {ann['image_id']}; "
                            "rebuild the COCO root.")
        found.append(CocoObject(ann, data_root / split / image["file_name"], image["height"], image["width"]))
    return found


def sample_pairs(objects: list[CocoObject], count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`count` (A, B) index pairs: distinct A's, each B uniform among the objects of the other categories."""
    categories = np.array([obj.category for obj in objects])
    if len(set(categories.tolist())) < 2 or count > len(objects):
        raise UserError(f"the coupling rate needs {count} eligible objects from at least 2 categories, but the "
                        f"data has {len(objects)} from {len(set(categories.tolist()))}; lower protocol pairs or "
                        "min_area, or use a larger split.")
    pairs = []
    for a in rng.choice(len(objects), size=count, replace=False).tolist():
        others = np.flatnonzero(categories != categories[a])
        pairs.append((a, int(others[rng.integers(len(others))])))
    return pairs


def sample_objects(objects: list[CocoObject], count: int, rng: np.random.Generator) -> list[int]:
    """`count` distinct object indices."""
    if count > len(objects):
        raise UserError(f"the mean cosine similarity needs {count} eligible objects but the data has "
                        f"{len(objects)}; lower protocol objects or min_area, or use a larger split.")
    return rng.choice(len(objects), size=count, replace=False).tolist()


def cut_out(pixels: np.ndarray, mask: np.ndarray, bbox: Sequence[float], size: int) -> torch.Tensor:
    """The box `bbox` (COCO x, y, w, h) of an RGB uint8 image with the pixels outside `mask` black, resized
    (bilinear) so that its longer side is `size`: [3, h, w] in [0, 1]."""
    x, y, w, h = bbox
    height, width = mask.shape
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    crop = np.where(mask[y0:y1, x0:x1, None], pixels[y0:y1, x0:x1], 0).astype(np.uint8)
    scale = size / max(crop.shape[:2])
    shape = (max(1, min(size, round(crop.shape[1] * scale))), max(1, min(size, round(crop.shape[0] * scale))))
    resized = np.asarray(Image.fromarray(crop).resize(shape, Image.BILINEAR))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div_(255)


def load_cut_outs(objects: list[CocoObject], indices: Sequence[int], size: int) -> dict[int, torch.Tensor]:
    """The cut-out of each object in `indices` (each image read once)."""
    cut = {}
    by_image: dict[Path, list[int]] = {}
    for index in dict.fromkeys(indices):
        by_image.setdefault(objects[index].image, []).append(index)
    for path, members in by_image.items():
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as err:
            raise UserError(f"cannot read image {path} ({err}); replace the file or rebuild the COCO root.") from err
        for index in members:
            obj = objects[index]
            if pixels.shape[:2] != (obj.height, obj.width):
                raise UserError(f"{path} is {pixels.shape[1]} x {pixels.shape[0]} but its annotation says "
                                f"{obj.width} x {obj.height}; rebuild the COCO root.")
            cut[index] = cut_out(pixels, instance_mask(obj.ann, obj.height, obj.width), obj.ann["bbox"], size)
    return cut


# ------------------------------------------------------------------------------------------ canvases


def paste(canvas: torch.Tensor, obj: torch.Tensor, left: int, top: int, size: int) -> list[int]:
    """Paste `obj` [3, h, w] centred in the size x size cell at (left, top) of `canvas`; its box x0 y0 x1 y1."""
    h, w = obj.shape[1:]
    x0, y0 = left + (size - w) // 2, top + (size - h) // 2
    canvas[:, y0:y0 + h, x0:x0 + w] = obj
    return [x0, y0, x0 + w, y0 + h]


def side_by_side(a: torch.Tensor, b: torch.Tensor, size: int,
                 gap: int) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Image 1 (A left, B right, `gap` black columns between their cells), image 2 (A alone at the same
    place), A's box and B's box (pixels, x0 y0 x1 y1)."""
    with_b = torch.zeros(3, size, 2 * size + gap)
    alone = torch.zeros_like(with_b)
    box_a = paste(with_b, a, 0, 0, size)
    paste(alone, a, 0, 0, size)
    box_b = paste(with_b, b, size + gap, 0, size)
    return with_b, alone, box_a, box_b


def grid3x3(obj: torch.Tensor, size: int) -> tuple[torch.Tensor, list[list[int]]]:
    """`obj` tiled in a 3 x 3 grid of size x size cells; the 9 boxes, row-major (CENTRE is the middle)."""
    canvas = torch.zeros(3, 3 * size, 3 * size)
    boxes = [paste(canvas, obj, col * size, row * size, size) for row in range(3) for col in range(3)]
    return canvas, boxes


# ------------------------------------------------------------------------------------------ features


class ResNetStages(nn.Module):
    """A frozen torchvision ResNet as a StageFn: ImageNet-normalised input, outputs of layer1..layer4."""

    def __init__(self, net: torchvision.models.ResNet) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem((images - self.mean) / self.std)
        maps = []
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps


def region_features(stages: StageFn, images: torch.Tensor, boxes: torch.Tensor, roi_size: int) -> list[torch.Tensor]:
    """Per stage, the RoI features [N, K, C] of the K boxes [N, K, 4] (pixels, x0 y0 x1 y1) of each image."""
    maps = list(stages(images))
    if len(maps) != len(STRIDES):
        raise ValueError(f"the stage function returned {len(maps)} maps, expected {len(STRIDES)}")
    n, k = boxes.shape[:2]
    out = []
    for stride, fmap in zip(STRIDES, maps, strict=True):
        expected = (math.ceil(images.shape[2] / stride), math.ceil(images.shape[3] / stride))
        if tuple(fmap.shape[2:]) != expected:
            raise ValueError(f"a stride-{stride} map of a {tuple(images.shape[2:])} image is {expected}, "
                             f"got {tuple(fmap.shape[2:])}")
        rois = roi_align(fmap.float(), list(boxes.float()), output_size=roi_size, spatial_scale=1 / stride,
                         sampling_ratio=-1, aligned=True)
        out.append(rois.mean(dim=(2, 3)).view(n, k, -1))
    return out


def coupling_rate(a1: torch.Tensor, a2: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """cos(A1, B) / cos(A2, B) per row (D3SSL Sec. 3.1), features [P, C]."""
    denominator = F.cosine_similarity(a2, b1, dim=-1)
    if (denominator.abs() < 1e-8).any():
        raise UserError("the coupling rate is undefined for a pair whose A-alone and B features are orthogonal; "
                        "change --seed or raise protocol min_area.")
    return F.cosine_similarity(a1, b1, dim=-1) / denominator


def mean_cosine_similarity(cells: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of the centre cell with the 8 others (D3SSL Sec. 3.2), features [N, 9, C] -> [N]."""
    cos = F.cosine_similarity(cells[:, CENTRE:CENTRE + 1], cells, dim=-1)
    return torch.cat([cos[:, :CENTRE], cos[:, CENTRE + 1:]], dim=1).mean(dim=1)


def pair_coupling(stages: StageFn, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], size: int, gap: int,
                  roi_size: int) -> torch.Tensor:
    """CR [P, 4 stages] of (A, B) cut-outs."""
    rows = []
    for start in range(0, len(pairs), _BATCH):
        canvases = [side_by_side(a, b, size, gap) for a, b in pairs[start:start + _BATCH]]
        images = torch.stack([c[0] for c in canvases] + [c[1] for c in canvases])
        boxes = torch.tensor([[c[2], c[3]] for c in canvases] * 2, dtype=torch.float32)
        n = len(canvases)
        feats = region_features(stages, images, boxes, roi_size)
        # A1 = A in image 1, A2 = A in image 2, B from image 1 (D3SSL Sec. 3.1).
        rows.append(torch.stack([coupling_rate(f[:n, 0], f[n:, 0], f[:n, 1]) for f in feats], dim=1))
    return torch.cat(rows)


def grid_similarity(stages: StageFn, objects: Sequence[torch.Tensor], size: int, roi_size: int) -> torch.Tensor:
    """MCS [N, 4 stages] of cut-outs tiled 3 x 3."""
    rows = []
    for start in range(0, len(objects), _BATCH):
        grids = [grid3x3(obj, size) for obj in objects[start:start + _BATCH]]
        images = torch.stack([g[0] for g in grids])
        boxes = torch.tensor([g[1] for g in grids], dtype=torch.float32)
        feats = region_features(stages, images, boxes, roi_size)
        rows.append(torch.stack([mean_cosine_similarity(f) for f in feats], dim=1))
    return torch.cat(rows)


# ------------------------------------------------------------------------------------------- the probe


def _chunked(work: Path, name: str, total: int, compute: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """compute(start, stop) for every chunk of range(total), each saved under `work` (resumed if present)."""
    parts = []
    for start in tqdm(range(0, total, _CHUNK), desc=name):
        path = work / f"{name}_{start:07d}.pt"
        if not path.is_file():
            values = compute(start, min(total, start + _CHUNK))
            with atomic_path(path) as tmp:
                torch.save(values, tmp)
        parts.append(torch.load(path, map_location="cpu", weights_only=True))
    return torch.cat(parts)


def measure(stages: StageFn, objects: list[CocoObject], protocol: CouplingProtocol, seed: int,
            work: Path) -> dict[str, float]:
    """The CR_* and MCS_* metrics (means over pairs / objects) and the counts."""
    # Separate streams: the pairs do not change when only `objects` changes, and vice versa.
    pairs = sample_pairs(objects, protocol.pairs, np.random.default_rng([seed, 0]))
    tiled = sample_objects(objects, protocol.objects, np.random.default_rng([seed, 1]))
    size = protocol.object_size

    def cr_chunk(start: int, stop: int) -> torch.Tensor:
        chunk = pairs[start:stop]
        cut = load_cut_outs(objects, [i for pair in chunk for i in pair], size)
        return pair_coupling(stages, [(cut[a], cut[b]) for a, b in chunk], size, protocol.gap, protocol.roi_size)

    def mcs_chunk(start: int, stop: int) -> torch.Tensor:
        cut = load_cut_outs(objects, tiled[start:stop], size)
        return grid_similarity(stages, [cut[i] for i in tiled[start:stop]], size, protocol.roi_size)

    cr = _chunked(work, "cr", len(pairs), cr_chunk).mean(dim=0)
    mcs = _chunked(work, "mcs", len(tiled), mcs_chunk).mean(dim=0)
    metrics = {f"CR_{stage}": float(value) for stage, value in zip(STAGES, cr, strict=True)}
    metrics |= {f"MCS_{stage}": float(value) for stage, value in zip(STAGES, mcs, strict=True)}
    return metrics | {"pairs": len(pairs), "objects": len(tiled), "eligible_objects": len(objects)}


def run(*, data_root: Path, backbone: Path | None, arch: str, protocol: CouplingProtocol, seed: int, threads: int,
        out: Path) -> dict[str, Any]:
    """Measure CR and MCS of one frozen backbone; write `out`/metrics.json (last, atomically)."""
    objects = eligible_objects(data_root, protocol.split, protocol.min_area)
    torch.set_num_threads(threads)
    stages = ResNetStages(frozen_resnet(arch, backbone, seed))
    work = out / "work"
    weights = None if backbone is None else str(backbone)
    run_key = config_hash({"protocol": protocol.as_dict(), "seed": seed, "weights": weights, "arch": arch,
                           "data": str(data_root)})
    check_resumable(work, run_key, has_checkpoint=any(work.glob("*.pt")))
    metrics = measure(stages, objects, protocol, seed, work)
    return write_probe_metrics(out, "coupling", metrics, protocol=protocol.as_dict(), backbone=backbone, arch=arch,
                               seed=seed, data=str(data_root))


def _run(protocol_json: str, **kwargs: Any) -> dict[str, Any]:
    return run(protocol=CouplingProtocol.from_json(protocol_json), **kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `python -m analysis coupling`."""
    add_probe(subparsers, "coupling", "coupling rate and mean cosine similarity per stage (D3SSL Sec. 3.1-3.2)",
              "COCO root with annotations/instances_<split>.json and <split>/ images", _run)
