"""Semantic segment retrieval on PASCAL VOC 2012 with frozen features (Zhang & Maire 2020, Sec. 5.2,
Table 2).

The paper: K-means (K = 15) on each image's per-pixel embedding partitions train_aug and val images into
segments; a segment's descriptor is the mean feature of its pixels; val segments retrieve their nearest
neighbours among the train_aug segments; Table 2 reports mean and per-class IoU on val. The text does
not say how a retrieved segment scores, so we read it as retrieval-based semantic segmentation, the
SegSort (Hwang et al. 2019) protocol that Table 2 compares with:

- a memory (train / train_aug) segment carries the majority ground-truth class of its non-void pixels
  (SegSort's `find_majority_label_index`); segments with only void pixels are left out of the memory.
- every pixel of a val segment takes the class of the retrieved memory segment (`topk` > 1: the class
  with the largest summed cosine similarity among the k nearest).
- IoU per class = TP / (TP + FP + FN) accumulated over all val pixels, void (255) excluded, the VOC
  definition; mIoU is the mean over the 21 classes (background included) that occur in the ground truth
  or the prediction. Numbers are in percent.

K-means runs on the L2-normalised cells of the feature map (the feature grid of the protocol's layer
and stride); the cluster map is upsampled (nearest) to the annotation's size. Descriptors are the
normalised means, compared by cosine similarity. The memory is saved in chunks under <out>/work, so an
interrupted run resumes. Also reported: each foreground class's share of the val foreground pixels
(our reading of Table 2's "Class Frequency" row).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from core.errors import UserError
from core.io import save_torch, write_json
from core.provenance import config_hash, provenance
from finetune.common import abbreviate, check_resumable, parse_protocol_json
from finetune.dense_eval.features import FrozenFeatures, embedding_of, feature_extractor, load_rgb
from finetune.dense_eval.kmeans import kmeans
from finetune.dense_eval.protocol import check_image_settings, require_bool, require_int
from prepare.taxonomy import VOC_CLASSES

CLASSES = ("background", *VOC_CLASSES)
VOID = 255
IMG_DIR, SEG_DIR, AUG_SEG_DIR = "JPEGImages", "SegmentationClass", "SegmentationClassAug"
TRAIN_SPLIT, VAL_SPLIT = "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"
AUG_SPLIT = "ImageSets/Segmentation/aug.txt"  # SBD ids, mmseg's voc_aug.py layout (as the segmentation stage)
_CHUNK = 256  # memory images per checkpoint file
_QUERY_BLOCK = 4096  # val segments per similarity block


@dataclass(frozen=True)
class SegmentSearchProtocol:
    """The finetune.segment_search settings of workflow/config (threads come from --threads)."""

    train_aug: bool  # memory = train + SBD aug (train_aug, the paper) instead of train.txt alone
    max_side: int | None  # images resized so their longer side is this (null: as stored)
    layer: str  # ResNet stage whose output is the feature (rows without an embedding)
    embedding: bool  # a run's exported dense embedding, where it has one, instead of `layer` (hierarchical grouping)
    stride: int  # its output stride
    clusters: int  # K of the per-image K-means
    kmeans_iters: int  # Lloyd iterations at most
    topk: int  # retrieved memory segments per val segment

    @classmethod
    def from_json(cls, text: str) -> SegmentSearchProtocol:
        keys = frozenset(field.name for field in fields(cls))
        return cls(**parse_protocol_json(text, keys, "segment_search"))

    def __post_init__(self) -> None:
        require_bool("train_aug", self.train_aug)
        check_image_settings(self.max_side, self.layer, self.stride)
        require_bool("embedding", self.embedding)
        require_int("clusters", self.clusters, 1)
        require_int("kmeans_iters", self.kmeans_iters, 0)
        require_int("topk", self.topk, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def voc2012_folder(root: Path) -> Path:
    """`root` itself or its VOC2012 sub-folder, whichever has the segmentation layout; UserError otherwise."""
    folder = root / "VOC2012" if (root / "VOC2012").is_dir() else root
    expected = [folder / IMG_DIR, folder / SEG_DIR, folder / TRAIN_SPLIT, folder / VAL_SPLIT]
    if missing := [str(path) for path in expected if not path.exists()]:
        raise UserError(f"{root} is not a VOCdevkit (or VOC2012) folder with the segmentation layout: missing "
                        f"{', '.join(missing)}; build it with `python -m prepare voc` or fix --data-root.")
    return folder


def split_files(voc2012: Path, train_aug: bool) -> dict[str, list[tuple[str, Path, Path]]]:
    """{"memory": [...], "val": [...]} of (id, image, mask); memory = train (+ aug, SegmentationClassAug masks)."""
    def listed(split: str, seg_dir: str) -> list[tuple[str, Path, Path]]:
        if not (voc2012 / split).is_file():
            raise UserError(f"{voc2012 / split} is missing; add SBD's aug.txt and SegmentationClassAug "
                            "(mmseg's voc_aug.py) or set train_aug to false.")
        ids = (voc2012 / split).read_text().split()
        if not ids:
            raise UserError(f"{voc2012 / split} lists no images; rebuild the VOC root with `python -m prepare voc`.")
        return [(i, voc2012 / IMG_DIR / f"{i}.jpg", voc2012 / seg_dir / f"{i}.png") for i in ids]

    memory = listed(TRAIN_SPLIT, SEG_DIR)
    if train_aug:
        seen = {image_id for image_id, _, _ in memory}
        memory += [entry for entry in listed(AUG_SPLIT, AUG_SEG_DIR) if entry[0] not in seen]
    files = {"memory": memory, "val": listed(VAL_SPLIT, SEG_DIR)}
    if absent := [str(p) for entries in files.values() for _, *paths in entries for p in paths if not p.is_file()]:
        raise UserError(f"the VOC split lists images whose files are missing: {abbreviate(absent)}; rebuild the "
                        "VOC root with `python -m prepare voc`.")
    return files


def read_labels(path: Path) -> np.ndarray:
    """Class ids [H, W] of a VOC SegmentationClass(Aug) PNG (palette indices; 255 = void)."""
    try:
        with Image.open(path) as image:
            labels = np.array(image)
    except OSError as err:
        raise UserError(f"cannot read mask {path} ({err}); replace the file.") from err
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise UserError(f"{path} is not a single-channel 8-bit class-index PNG; rebuild the VOC root.")
    if bad := sorted(set(np.unique(labels).tolist()) - set(range(len(CLASSES))) - {VOID}):
        raise UserError(f"{path} holds class ids {bad}; VOC masks use 0-{len(CLASSES) - 1} and {VOID} (void).")
    return labels.astype(np.int64)


def _generator(seed: int, image_id: str) -> torch.Generator:
    # Per-image seeds make an image's segments independent of the order and of resuming.
    digest = hashlib.sha256(f"{seed}/{image_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def segment_image(features: torch.Tensor, clusters: int, iters: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means segments of one feature map [C, h, w]: (segment ids [h, w] numbered 0..S-1, unit mean
    features [S, C]); S <= clusters (clusters that end empty are dropped)."""
    channels, height, width = features.shape
    cells = features.reshape(channels, -1).T
    assign, _ = kmeans(cells, clusters, iters, generator)
    _, ids = torch.unique(assign, return_inverse=True)
    sums = torch.zeros(int(ids.max()) + 1, channels).index_add_(0, ids, cells)
    return ids.reshape(height, width), F.normalize(sums, dim=1)


def upsample_ids(ids: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A segment-id map [h, w] at `size` (nearest)."""
    return F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long().numpy()


def majority_labels(segments: np.ndarray, labels: np.ndarray, num_segments: int) -> np.ndarray:
    """Per segment, the most frequent class among its non-void pixels (ties: lower id), or -1 if all void."""
    valid = labels != VOID
    counts = np.bincount(segments[valid] * len(CLASSES) + labels[valid], minlength=num_segments * len(CLASSES))
    counts = counts.reshape(num_segments, len(CLASSES))
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)


def retrieve(queries: torch.Tensor, memory: torch.Tensor, memory_labels: torch.Tensor, topk: int) -> torch.Tensor:
    """Class of each unit query [n, C] from its `topk` most cosine-similar memory rows [M, C]: the class
    with the largest summed similarity (topk = 1: the nearest neighbour's class)."""
    out = []
    for start in range(0, queries.shape[0], _QUERY_BLOCK):
        sim, index = (queries[start:start + _QUERY_BLOCK] @ memory.T).topk(min(topk, memory.shape[0]), dim=1)
        classes = memory_labels[index]
        votes = torch.zeros(sim.shape[0], len(CLASSES)).scatter_add_(1, classes, sim)
        # Only retrieved classes compete (a negative similarity sum must not lose to an absent class's 0).
        retrieved = torch.zeros_like(votes, dtype=torch.bool).scatter_(1, classes, True)
        out.append(votes.masked_fill(~retrieved, -math.inf).argmax(dim=1))
    return torch.cat(out)


def confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[truth class, predicted class] pixel counts over non-void pixels."""
    valid = truth != VOID
    n = len(CLASSES)
    return np.bincount(truth[valid] * n + pred[valid], minlength=n * n).reshape(n, n)


def class_iou(matrix: np.ndarray) -> np.ndarray:
    """Per class TP / (TP + FP + FN); NaN for a class absent from both truth and prediction."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def scores(matrix: np.ndarray) -> tuple[dict[str, float], list[str], dict[str, float]]:
    """(mIoU and IoU_<class> of the classes present, in percent; absent classes; each foreground class's
    share of the foreground truth pixels, in percent) of a confusion matrix."""
    iou = class_iou(matrix)
    present = ~np.isnan(iou)
    if not present.any():
        raise UserError("the val set has no labelled (non-void) pixel; check its masks.")
    metrics = {"mIoU": round(100 * float(iou[present].mean()), 2)}
    metrics.update({f"IoU_{name}": round(100 * float(value), 2)
                    for name, value, ok in zip(CLASSES, iou, present, strict=True) if ok})
    absent = [name for name, ok in zip(CLASSES, present, strict=True) if not ok]
    foreground = matrix[1:].sum(axis=1)
    frequency = {name: round(100 * float(count) / max(1, int(foreground.sum())), 2)
                 for name, count in zip(CLASSES[1:], foreground, strict=True)}
    return metrics, absent, frequency


def _segments(model: FrozenFeatures, image: Path, mask: Path, image_id: str, protocol: SegmentSearchProtocol,
              seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """(segment ids at the mask's size, unit descriptors [S, C], ground-truth labels) of one image."""
    labels = read_labels(mask)
    features = model(load_rgb(image, protocol.max_side)[None])[0]
    ids, descriptors = segment_image(features, protocol.clusters, protocol.kmeans_iters, _generator(seed, image_id))
    return upsample_ids(ids, labels.shape), descriptors, labels


def build_memory(model: FrozenFeatures, entries: list[tuple[str, Path, Path]], protocol: SegmentSearchProtocol,
                 seed: int, work: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors [M, C] and majority classes [M] of the memory images' labelled segments (chunked, resumable)."""
    chunks = []
    for start in tqdm(range(0, len(entries), _CHUNK), desc="memory chunks"):
        path = work / f"memory_{start:07d}.pt"
        if not path.is_file():
            descriptors, classes = [], []
            for image_id, image, mask in tqdm(entries[start:start + _CHUNK], desc="memory", leave=False):
                segments, desc, labels = _segments(model, image, mask, image_id, protocol, seed)
                majority = majority_labels(segments, labels, desc.shape[0])
                keep = torch.from_numpy(majority >= 0)
                descriptors.append(desc[keep])
                classes.append(torch.from_numpy(majority)[keep])
            save_torch({"descriptors": torch.cat(descriptors), "classes": torch.cat(classes)}, path)
        chunks.append(torch.load(path, map_location="cpu", weights_only=True))
    memory = torch.cat([chunk["descriptors"] for chunk in chunks])
    if memory.shape[0] == 0:
        raise UserError("no memory segment has a labelled (non-void) pixel; check the train masks.")
    return memory, torch.cat([chunk["classes"] for chunk in chunks])


def run(*, data_root: Path, backbone: Path | None, embedding: Path | None, arch: str,
        protocol: SegmentSearchProtocol, seed: int, threads: int, out: Path) -> dict[str, Any]:
    """Build the memory, segment and label every val image, write `out`/metrics.json (last, atomically)."""
    voc2012 = voc2012_folder(data_root)
    files = split_files(voc2012, protocol.train_aug)
    torch.set_num_threads(threads)
    model = feature_extractor(arch, backbone, seed, protocol.layer, protocol.stride, embedding_of(protocol, embedding))

    weights = None if backbone is None else str(backbone)
    work = out / "work"
    run_key = config_hash({"protocol": protocol.as_dict(), "seed": seed, "weights": weights, "features": model.name,
                           "arch": arch,
                           "data": str(voc2012)})
    check_resumable(work, run_key, has_checkpoint=any(work.glob("memory_*.pt")))
    memory, memory_classes = build_memory(model, files["memory"], protocol, seed, work)

    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    for image_id, image, mask in tqdm(files["val"], desc="val"):
        segments, descriptors, labels = _segments(model, image, mask, image_id, protocol, seed)
        segment_classes = retrieve(descriptors, memory, memory_classes, protocol.topk).numpy()
        matrix += confusion(labels, segment_classes[segments])

    metrics, absent, frequency = scores(matrix)
    summary = {
        "protocol": "segment_search",
        "metrics": metrics,
        "absent_classes": absent,
        "class_frequency": frequency,
        "memory_segments": int(memory.shape[0]),
        "images": {split: len(entries) for split, entries in files.items()},
        "weights": weights,
        "features": model.name,
        "arch": arch,
        "provenance": provenance(protocol.as_dict(), seed),
    }
    write_json(out / "metrics.json", summary)
    print(f"segment search: mIoU {metrics['mIoU']:.2f} over {len(CLASSES) - len(absent)} classes")
    return summary
