"""Object-level k-NN (O-KNN) and disturbed O-KNN of a frozen backbone on COCO (D3SSL, Sec. 5.3, Table 4).

The paper: object features are read from the C5 block (layer4) for ground-truth boxes by RoIAlign (7 x 7)
and average pooling; a memory bank holds features and labels of COCO train2017 objects, sampled so the
categories are balanced; every val2017 object is classified by its k nearest bank features ("similarly to
image-level KNN"); Table 4 reports Top-1 and Top-5 accuracy in percent. Disturbed O-KNN keeps "the feature
extraction pipeline the same", while all regions outside the selected ground-truth boxes are replaced by
a randomly sampled image.

Where the text is silent, our choices (each says why):
- The bank: "we extract N object features per image", N not given: `objects_per_image` objects of each
  train image (a seeded uniform sample; all of an image's objects when it has fewer), so images crowded
  with one category do not swamp the bank ("choosing all the objects ... imbalanced"). Val objects of a
  category with no bank object are left out: k-NN cannot predict a label the bank lacks.
  `max_val_objects` (null: all) caps the val objects by a seeded sample.
- Voting: the weighted k-NN of image-level k-NN evaluation (Wu et al. 2018, InstDisc; DINO's eval_knn.py):
  cosine similarity s of L2-normalised features, each of the k nearest votes exp(s / temperature) for its
  class, classes ranked by summed votes (ties: lower class index first); a class without a vote never counts
  as predicted, so Top-5 with k < 5 cannot be won by chance (DINO caps Top-5 at Top-k for the same reason).
- Disturbance on both sides, memory and query images, as the extraction pipeline is "kept the same". The
  random image is another image of the same split (seeded, one per image), resized to the image's size; the
  kept boxes are the objects selected from that image; every pixel a kept box touches stays.
- RoIAlign as detectron2's ROIAlignV2 (aligned=True, adaptive sampling), spatial scale 1/32; images resized
  (bilinear) so their shorter side is `image_size` (boxes scaled alike), ImageNet mean/std normalised, and
  batched only with images of the same resized size, so no padding changes a feature. Crowd annotations and
  boxes of zero size are skipped, and boxes whose shorter side after resizing is below `min_box_size`.

Features of each pass are saved under <out>/work, 500 images a file, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import functools
import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import roi_align
from tqdm import tqdm

from analysis.probe_cli import add_probe, write_probe_metrics
from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from core.images import load_rgb
from core.io import save_torch
from core.provenance import config_hash
from finetune.common import check_resumable, frozen_resnet, parse_protocol_json
from finetune.dense_eval.protocol import require_int, require_number
from prepare.layouts import check_layout, coco_annotation_file, coco_layout, load_coco_json

PROBE = "object_knn"
ROI_SIZE = 7  # D3SSL Sec. 5.3: "RoI Align with a size of 7 x 7"
C5_SCALE = 1 / 32  # output stride of layer4 (C5)
_QUERY_BLOCK = 1024  # queries per similarity matrix block (bounds memory at paper scale)
_CHUNK = 500  # images per saved feature file (what an interrupted run recomputes at most)

FeatureMap = Callable[[torch.Tensor], torch.Tensor]  # RGB [B, 3, H, W] in [0, 1] -> C5 map [B, C, H/32, W/32]


@dataclass(frozen=True)
class ObjectKnnProtocol:
    """The analysis.probes.object_knn settings of workflow/config (threads come from --threads)."""

    image_size: int  # shorter image side after resizing, pixels
    objects_per_image: int  # memory-bank objects per train2017 image (the paper's N)
    max_val_objects: int | None  # val2017 objects classified (seeded sample); null: all
    k: int  # nearest bank objects that vote
    temperature: float  # vote weight exp(cosine / temperature)
    min_box_size: float  # objects whose shorter box side after resizing is below this are skipped, pixels
    batch_size: int  # images per forward pass

    @classmethod
    def from_json(cls, text: str) -> ObjectKnnProtocol:
        keys = frozenset(field.name for field in fields(cls))
        return cls(**parse_protocol_json(text, keys, "object_knn"))

    def __post_init__(self) -> None:
        require_int("image_size", self.image_size, 32)
        require_int("objects_per_image", self.objects_per_image, 1)
        if self.max_val_objects is not None:
            require_int("max_val_objects", self.max_val_objects, 1)
        require_int("k", self.k, 1)
        require_number("temperature", self.temperature, positive=True)
        require_number("min_box_size", self.min_box_size, positive=False)
        require_int("batch_size", self.batch_size, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Objects:
    """Selected objects of one COCO split, with every image of the split (the disturbance pool)."""

    files: list[Path]  # image files, sorted by image id
    sizes: np.ndarray  # [M, 2] (width, height) as annotated
    image: np.ndarray  # [N] row of each object's image in `files`
    boxes: np.ndarray  # [N, 4] x0, y0, x1, y1 in annotated pixels
    labels: np.ndarray  # [N] class index (position of the category id in the train file's sorted ids)

    def take(self, rows: np.ndarray) -> Objects:
        """The objects at `rows` (same image list)."""
        return Objects(self.files, self.sizes, self.image[rows], self.boxes[rows], self.labels[rows])


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is `short`."""
    scale = short / min(width, height)
    return max(1, round(float(width) * scale)), max(1, round(float(height) * scale))


def read_objects(data_root: Path, split: str, categories: list[int] | None, image_size: int,
                 min_box_size: float) -> tuple[Objects, list[int]]:
    """Eligible objects of `split` ("train"/"val") and the category ids (sorted; from this file if None).

    Eligible: not crowd, positive size, of a listed category, shorter side >= min_box_size after resizing.
    """
    check_layout(data_root, coco_layout(("instances",)), "the COCO-2017 root (--data-root)")
    coco = load_coco_json(data_root / coco_annotation_file("instances", f"{split}2017"))
    if categories is None:
        categories = sorted(int(category["id"]) for category in coco["categories"])
    class_of = {category: index for index, category in enumerate(categories)}
    records = sorted(coco["images"], key=lambda record: record["id"])
    row_of = {record["id"]: row for row, record in enumerate(records)}
    sizes = np.array([(record["width"], record["height"]) for record in records], dtype=np.int64).reshape(-1, 2)
    image, boxes, labels = [], [], []
    for ann in sorted(coco["annotations"], key=lambda ann: ann["id"]):
        if ann.get("iscrowd", 0) or ann["category_id"] not in class_of or ann["image_id"] not in row_of:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        row = row_of[ann["image_id"]]
        width, height = sizes[row]
        new_w, new_h = resized_size(width, height, image_size)
        if w <= 0 or h <= 0 or min(w * new_w / width, h * new_h / height) < min_box_size:
            continue
        image.append(row)
        boxes.append((x, y, x + w, y + h))
        labels.append(class_of[ann["category_id"]])
    files = [data_root / f"{split}2017" / record["file_name"] for record in records]
    objects = Objects(files, sizes, np.array(image, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4),
                      np.array(labels, dtype=np.int64))
    return objects, categories


def rows_per_group(groups: np.ndarray, per_group: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows holding min(per_group, available) rows of each group (e.g. the objects' images), drawn
    uniformly without replacement."""
    chosen = []
    for group in np.unique(groups):  # ascending: a fixed order of draws from rng
        rows = np.flatnonzero(groups == group)
        chosen.append(rows[rng.permutation(len(rows))[:per_group]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def partner_rows(images: np.ndarray, pool: int, rng: np.random.Generator) -> dict[int, int]:
    """For each image row (ascending), a uniformly drawn other row of the `pool` images."""
    if pool < 2:
        raise UserError("disturbed O-KNN needs at least 2 images per split to take backgrounds from; "
                        "use a larger COCO split.")
    rows = np.unique(images)
    offsets = rng.integers(1, pool, size=len(rows))  # 1..pool-1: never the image itself
    return {int(row): int((row + offset) % pool) for row, offset in zip(rows, offsets, strict=True)}


def keep_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W] bool: the pixels that any of `boxes` ([n, 4] x0 y0 x1 y1, pixels) touches."""
    ys = torch.arange(height, dtype=boxes.dtype).view(1, -1, 1)
    xs = torch.arange(width, dtype=boxes.dtype).view(1, 1, -1)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    # Pixel i covers [i, i + 1): it is touched when that interval overlaps the box.
    inside = (xs + 1 > x0) & (xs < x1) & (ys + 1 > y0) & (ys < y1)
    return inside.any(dim=0)


def disturb(image: torch.Tensor, background: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """`image` [3, H, W] with every pixel outside `boxes` taken from `background` (same size)."""
    return torch.where(keep_mask(boxes, *image.shape[1:]), image, background)


def load_resized(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """An image as RGB [3, H, W] in [0, 1], resized (bilinear) to `size` = (width, height)."""
    image = load_rgb(path, min_side=min(size)).resize(size, Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255)


def object_features(objects: Objects, feature_map: FeatureMap, image_size: int, batch_size: int,
                    partners: dict[int, int] | None = None, desc: str = "objects") -> torch.Tensor:
    """L2-normalised RoIAlign 7x7 + average-pooled C5 features [N, C] of `objects`; with `partners`
    (image row -> background row) on disturbed images."""
    size_of = {int(row): resized_size(*objects.sizes[row], image_size) for row in np.unique(objects.image)}
    # Group equal sizes so a batch needs no padding; the order fixes the result whatever the batch size.
    batches = []
    for _, same in itertools.groupby(sorted(size_of, key=lambda row: (size_of[row], row)), key=size_of.get):
        same = list(same)
        batches += [same[i:i + batch_size] for i in range(0, len(same), batch_size)]
    features: torch.Tensor | None = None
    for batch in tqdm(batches, desc=desc, leave=False):
        width, height = size_of[batch[0]]
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        images, rois, members = [], [], []
        for slot, row in enumerate(batch):
            member = np.flatnonzero(objects.image == row)
            boxes = torch.from_numpy(objects.boxes[member]) * scale / torch.from_numpy(objects.sizes[row]).repeat(2)
            image = load_resized(objects.files[row], (width, height))
            if partners is not None:
                image = disturb(image, load_resized(objects.files[partners[row]], (width, height)), boxes)
            images.append(image)
            rois.append(torch.cat([torch.full((len(member), 1), float(slot), dtype=torch.float64), boxes], dim=1))
            members.append(member)
        with torch.no_grad():
            maps = feature_map(torch.stack(images))
            pooled = roi_align(maps, torch.cat(rois).to(maps.dtype), ROI_SIZE, spatial_scale=C5_SCALE,
                               sampling_ratio=0, aligned=True).mean(dim=(2, 3))
        if features is None:
            features = torch.zeros(len(objects.labels), pooled.shape[1])
        features[torch.from_numpy(np.concatenate(members))] = F.normalize(pooled, dim=1)
    if features is None:
        raise UserError("no object to extract features of; lower min_box_size or check the annotations.")
    return features


def check_k(k: int, bank_size: int) -> None:
    """UserError unless the memory bank has at least k objects."""
    if k > bank_size:
        raise UserError(f"k = {k} exceeds the {bank_size} objects of the memory bank; lower k or raise "
                        "objects_per_image (or lower min_box_size).")


def knn_scores(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int, temperature: float,
               num_classes: int) -> torch.Tensor:
    """Class scores [Q, num_classes]: the sum of exp(cosine / temperature) over each query's k nearest bank
    rows of that class (features already L2-normalised)."""
    check_k(k, len(bank))
    scores = torch.zeros(len(queries), num_classes, dtype=bank.dtype)
    for start in range(0, len(queries), _QUERY_BLOCK):
        similarity = queries[start:start + _QUERY_BLOCK] @ bank.T
        nearest, index = similarity.topk(k, dim=1)
        scores[start:start + _QUERY_BLOCK].scatter_add_(1, bank_labels[index], (nearest / temperature).exp())
    return scores


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the k best-scored classes (only classes with a vote count)."""
    ranked = scores.argsort(dim=1, descending=True, stable=True)
    hit = (ranked == labels.view(-1, 1)) & (scores.gather(1, ranked) > 0)
    return {k: 100.0 * hit[:, :k].any(dim=1).double().mean().item() for k in ks}


def select_objects(data_root: Path, protocol: ObjectKnnProtocol, seed: int) -> tuple[Objects, Objects, int]:
    """(memory-bank objects, val objects, number of categories), sampled reproducibly from `seed`."""
    train, categories = read_objects(data_root, "train", None, protocol.image_size, protocol.min_box_size)
    val, _ = read_objects(data_root, "val", categories, protocol.image_size, protocol.min_box_size)
    bank_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if len(train.labels) == 0:
        raise UserError(f"{data_root} has no eligible train2017 object (non-crowd, shorter side >= min_box_size "
                        f"{protocol.min_box_size} px at image_size {protocol.image_size}); lower min_box_size.")
    bank = train.take(rows_per_group(train.image, protocol.objects_per_image, bank_rng))
    val = val.take(np.flatnonzero(np.isin(val.labels, bank.labels)))
    if len(val.labels) == 0:
        raise UserError(f"{data_root} has no eligible val2017 object of a category in the memory bank "
                        f"(min_box_size {protocol.min_box_size} px at image_size {protocol.image_size}); "
                        "lower min_box_size.")
    if protocol.max_val_objects is not None and len(val.labels) > protocol.max_val_objects:
        val = val.take(np.sort(val_rng.choice(len(val.labels), protocol.max_val_objects, replace=False)))
    return bank, val, len(categories)


def _cached(work: Path | None, name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`, saved as <work>/<name>.pt and read back on a rerun (None: not saved)."""
    if work is None:
        return compute()
    path = work / f"{name}.pt"
    if not path.is_file():
        features = compute()
        save_torch(features, path)
    return torch.load(path, map_location="cpu", weights_only=True)


def resumable_features(objects: Objects, feature_map: FeatureMap, protocol: ObjectKnnProtocol,
                       partners: dict[int, int] | None, work: Path | None, name: str) -> torch.Tensor:
    """`object_features` of `objects`, computed and saved (<work>/<name>_<chunk>.pt) _CHUNK images at a time."""
    rows = np.unique(objects.image)
    features: torch.Tensor | None = None
    for index, start in enumerate(tqdm(range(0, len(rows), _CHUNK), desc=name)):
        members = np.flatnonzero(np.isin(objects.image, rows[start:start + _CHUNK]))
        extract = functools.partial(object_features, objects.take(members), feature_map, protocol.image_size,
                                    protocol.batch_size, partners, desc=f"{name} images")
        part = _cached(work, f"{name}_{index:05d}", extract)
        if features is None:
            features = torch.zeros(len(objects.labels), part.shape[1])
        features[torch.from_numpy(members)] = part
    assert features is not None, "select_objects returns at least one object per split"
    return features


def measure_object_knn(data_root: Path, feature_map: FeatureMap, protocol: ObjectKnnProtocol, seed: int,
                       work: Path | None = None) -> dict[str, float]:
    """O-KNN and disturbed O-KNN Top-1/Top-5 (percent) and the object counts."""
    bank, val, num_classes = select_objects(data_root, protocol, seed)
    check_k(protocol.k, len(bank.labels))  # before the costly extraction
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 1]).spawn(2))
    partners = {"train": partner_rows(bank.image, len(bank.files), train_rng),
                "val": partner_rows(val.image, len(val.files), val_rng)}
    bank_labels, val_labels = torch.from_numpy(bank.labels), torch.from_numpy(val.labels)
    metrics: dict[str, float] = {}
    for prefix, disturbed in (("OKNN", False), ("DOKNN", True)):
        tag = "disturbed" if disturbed else "clean"
        features = {split: resumable_features(objects, feature_map, protocol, partners[split] if disturbed else None,
                                              work, f"{split}_{tag}")
                    for split, objects in (("train", bank), ("val", val))}
        scores = knn_scores(features["train"], bank_labels, features["val"], protocol.k, protocol.temperature,
                            num_classes)
        accuracy = topk_accuracy(scores, val_labels)
        metrics |= {f"{prefix}_top1": accuracy[1], f"{prefix}_top5": accuracy[5]}
    counts = np.bincount(bank.labels, minlength=num_classes)
    metrics |= {"train_objects": len(bank.labels), "val_objects": len(val.labels),
                "classes": int((counts > 0).sum()),
                "train_images": len(np.unique(bank.image)), "val_images": len(np.unique(val.image))}
    return metrics


class C5(nn.Module):
    """A frozen torchvision ResNet up to layer4 (C5), taking RGB in [0, 1]."""

    def __init__(self, arch: str, backbone: Path | None, seed: int) -> None:
        super().__init__()
        net = frozen_resnet(arch, backbone, seed)
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                   net.layer4)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk((images - self.mean) / self.std)


def run(*, data_root: Path, backbone: Path | None, arch: str, protocol_json: str, seed: int, threads: int,
        out: Path) -> dict[str, Any]:
    """Measure O-KNN and disturbed O-KNN of one backbone; write `out`/metrics.json (last, atomically)."""
    protocol = ObjectKnnProtocol.from_json(protocol_json)
    torch.set_num_threads(threads)
    weights = None if backbone is None else str(backbone)
    work = Path(out) / "work"
    run_key = config_hash({"protocol": protocol.as_dict(), "seed": seed, "weights": weights, "arch": arch,
                           "data": str(data_root)})
    check_resumable(work, run_key, has_checkpoint=any(work.glob("*.pt")))
    metrics = measure_object_knn(Path(data_root), C5(arch, backbone, seed), protocol, seed, work)
    summary = write_probe_metrics(out, PROBE, metrics, protocol=protocol.as_dict(), backbone=backbone, arch=arch,
                                  seed=seed)
    print(f"O-KNN top-1 {metrics['OKNN_top1']:.2f} top-5 {metrics['OKNN_top5']:.2f}; disturbed top-1 "
          f"{metrics['DOKNN_top1']:.2f} top-5 {metrics['DOKNN_top5']:.2f} ({metrics['train_objects']} bank / "
          f"{metrics['val_objects']} val objects, {metrics['classes']} classes)")
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:
    add_probe(subparsers, "object-knn", "O-KNN and disturbed O-KNN on COCO (D3SSL Sec. 5.3, Table 4)",
              "COCO-2017 root: annotations/instances_{train,val}2017.json, train2017/, val2017/", run)
