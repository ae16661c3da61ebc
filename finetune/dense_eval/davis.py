"""DAVIS semi-supervised mask tracking by label propagation on frozen features (Zhang & Maire 2020,
Sec. 5.3, Table 3), scored with J and F as the official davis2017-evaluation does:

- masks: palette PNGs hold object ids (255 = void, read as background as `davis2017/davis.py` does);
  DAVIS-2016 grayscale 0/255 masks hold one object (value > 127). Objects are 1..max id of frame 0.
- the first and the last frame are not scored (`evaluation.py`: `all_gt_masks[:, 1:-1]`).
- per object: the mean of J (and F) over the scored frames (`utils.db_statistics`, nanmean); per
  sequence: the mean over its objects; overall: the mean over all objects of all sequences, and
  J&F = (J + F) / 2 (`evaluation_method.py`: `final_mean`). Reported in percent, as the paper does.

Propagation runs on the feature grid of frames resized to `max_side`; each frame's label distribution
is upsampled (bilinear) to the annotation's size and its argmax is the predicted mask. Finished
sequences are kept in <out>/work, so an interrupted run resumes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from core.errors import UserError
from core.io import read_json, write_json
from core.provenance import config_hash, provenance
from finetune.common import abbreviate, check_resumable, parse_protocol_json
from finetune.dense_eval import davis_metrics
from finetune.dense_eval.features import FrozenFeatures, embedding_of, feature_extractor, load_rgb
from finetune.dense_eval.label_propagation import PropagationSettings, one_hot, propagate, upsample_labels
from finetune.dense_eval.protocol import check_image_settings, require_bool, require_int, require_number

RESOLUTION = "480p"
LAYOUT = f"JPEGImages/{RESOLUTION}/<sequence>/%05d.jpg and Annotations/{RESOLUTION}/<sequence>/%05d.png"


@dataclass(frozen=True)
class DavisProtocol:
    """The finetune.davis settings of workflow/config (threads come from --threads)."""

    sequences: str | list[str]  # "all" (every folder of JPEGImages/480p), an ImageSets/*.txt file of the root, or names
    max_side: int | None  # frames resized so their longer side is this (null: as stored)
    layer: str  # ResNet stage whose output is the feature (rows without an embedding)
    embedding: bool  # a run's exported dense embedding, where it has one, instead of `layer` (hierarchical grouping)
    stride: int  # its output stride
    context_frames: int  # k previous frames
    topk: int  # nearest neighbours per context frame
    coord_weight: float  # weight of the spatial coordinates appended to the features
    temperature: float | None  # null: similarity weights (paper); a number: CRW's softmax
    soft_labels: bool  # propagate distributions (CRW) instead of one-hot labels (paper)
    keep_first_frame: bool  # add the annotated frame to every context (CRW) or not (paper)

    @classmethod
    def from_json(cls, text: str) -> DavisProtocol:
        keys = frozenset(field.name for field in fields(cls))
        return cls(**parse_protocol_json(text, keys, "davis"))

    def __post_init__(self) -> None:
        seqs = self.sequences
        named = isinstance(seqs, list) and seqs and all(isinstance(s, str) and s for s in seqs)
        if seqs != "all" and not named and not (isinstance(seqs, str) and seqs.endswith(".txt")):
            raise UserError(f"protocol sequences must be \"all\", an ImageSets .txt file (e.g. ImageSets/2017/val.txt) "
                            f"or a non-empty list of names, got {seqs!r}.")
        check_image_settings(self.max_side, self.layer, self.stride)
        require_bool("embedding", self.embedding)
        require_int("context_frames", self.context_frames, 1)
        require_int("topk", self.topk, 1)
        require_number("coord_weight", self.coord_weight, positive=False)
        if self.temperature is not None:
            require_number("temperature", self.temperature, positive=True)
        require_bool("soft_labels", self.soft_labels)
        require_bool("keep_first_frame", self.keep_first_frame)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def propagation(self) -> PropagationSettings:
        return PropagationSettings(self.context_frames, self.topk, float(self.coord_weight), self.temperature,
                                   self.soft_labels, self.keep_first_frame)


def check_davis_root(root: Path) -> tuple[Path, Path]:
    """(JPEGImages/480p, Annotations/480p) of a DAVIS folder; UserError naming the expected layout."""
    images, masks = root / "JPEGImages" / RESOLUTION, root / "Annotations" / RESOLUTION
    if missing := [str(path) for path in (images, masks) if not path.is_dir()]:
        raise UserError(f"{root} is not a DAVIS folder: missing {', '.join(missing)} (expected {LAYOUT}); "
                        "fix --data-root.")
    return images, masks


def list_sequences(images: Path, requested: str | list[str]) -> list[str]:
    """The sequences to score: every folder, those an ImageSets file of the DAVIS root lists (the
    official split files, e.g. ImageSets/2017/val.txt), or the named ones."""
    found = sorted(path.name for path in images.iterdir() if path.is_dir())
    if isinstance(requested, str) and requested.endswith(".txt"):
        split_file = images.parents[1] / requested
        if not split_file.is_file():
            raise UserError(f"{split_file} is missing; fix the protocol's sequences or --data-root.")
        requested = split_file.read_text().split()
    if requested == "all":
        if not found:
            raise UserError(f"{images} holds no sequence folders; fix --data-root.")
        return found
    if unknown := [name for name in requested if name not in found]:
        raise UserError(f"sequences {unknown} are not in {images} (found {abbreviate(found)}); "
                        "fix the protocol's sequences.")
    return list(requested)


def sequence_files(images: Path, masks: Path, sequence: str) -> tuple[list[Path], list[Path]]:
    """The frames of a sequence and their masks; UserError when a scored frame lacks its mask."""
    frames = sorted((images / sequence).glob("*.jpg"))
    if len(frames) < 3:
        raise UserError(f"sequence {sequence} has {len(frames)} frames in {images / sequence}; DAVIS scoring "
                        "skips the first and last frame, so at least 3 are needed.")
    mask_paths = [masks / sequence / f"{frame.stem}.png" for frame in frames]
    if not mask_paths[0].is_file():
        raise UserError(f"sequence {sequence} has no first-frame mask {mask_paths[0]}: label propagation starts "
                        "from it; add it or drop the sequence from the protocol.")
    if missing := [str(path) for path in mask_paths[1:-1] if not path.is_file()]:
        raise UserError(f"sequence {sequence} lacks the ground truth of scored frames: {abbreviate(missing)}; "
                        "add the masks or drop the sequence.")
    return frames, mask_paths


def read_mask(path: Path) -> np.ndarray:
    """Object ids [H, W] (0 = background) of a DAVIS mask PNG."""
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                ids = np.array(image, dtype=np.int64)
                ids[ids == 255] = 0  # void, as davis2017/davis.py reads it
            else:
                ids = (np.array(image.convert("L")) > 127).astype(np.int64)
    except OSError as err:
        raise UserError(f"cannot read mask {path} ({err}); replace the file.") from err
    return ids


def _first_labels(mask: np.ndarray, num_labels: int, grid: tuple[int, int], soft: bool) -> torch.Tensor:
    """The first frame's labels on the feature grid: the area fraction of each label per cell, or its argmax."""
    fractions = F.interpolate(one_hot(torch.from_numpy(mask), num_labels)[None], size=grid, mode="area")[0]
    return fractions if soft else one_hot(fractions.argmax(dim=0), num_labels)


def track_sequence(model: FrozenFeatures, frames: list[Path], mask_paths: list[Path],
                   protocol: DavisProtocol) -> dict[str, list[list[float]]]:
    """Per object, per scored frame J and F: {"J": [[...] per object], "F": [...]}."""
    first = read_mask(mask_paths[0])
    num_objects = int(first.max())
    if num_objects == 0:
        raise UserError(f"{mask_paths[0]} marks no object; a first-frame mask needs at least one.")

    def features() -> Iterator[torch.Tensor]:
        for frame in frames:
            yield model(load_rgb(frame, protocol.max_side)[None])[0]

    stream = features()
    first_feats = next(stream)
    labels0 = _first_labels(first, num_objects + 1, tuple(first_feats.shape[1:]), protocol.soft_labels)
    scores: dict[str, list[list[float]]] = {m: [[] for _ in range(num_objects)] for m in ("J", "F")}
    # Features are computed lazily, frame by frame: only the context frames are held in memory.
    predictions = propagate(itertools.chain([first_feats], stream), labels0, protocol.propagation())
    for t, distribution in enumerate(tqdm(predictions, total=len(frames) - 1, desc=frames[0].parent.name,
                                          leave=False), start=1):
        if t == len(frames) - 1:
            break  # the last frame is not scored
        truth = read_mask(mask_paths[t])
        if truth.shape != first.shape:
            raise UserError(f"{mask_paths[t]} is {truth.shape[::-1]} but the first mask is {first.shape[::-1]}; "
                            "all masks of a sequence must share one size.")
        pred = upsample_labels(distribution, truth.shape).numpy()
        for obj in range(1, num_objects + 1):
            scores["J"][obj - 1].append(davis_metrics.region_similarity(truth == obj, pred == obj))
            scores["F"][obj - 1].append(davis_metrics.boundary_f(truth == obj, pred == obj))
    return scores


def summarize(per_sequence: dict[str, dict[str, list[list[float]]]]) -> tuple[dict[str, float], dict[str, Any]]:
    """(overall J_mean, F_mean, JF_mean over all objects; per-sequence means over objects), in percent."""
    object_means = {seq: {m: [float(np.nanmean(frames)) for frames in s[m]] for m in ("J", "F")}
                    for seq, s in per_sequence.items()}

    def row(j: list[float], f: list[float]) -> dict[str, float]:
        jm, fm = 100 * float(np.mean(j)), 100 * float(np.mean(f))
        return {"J_mean": round(jm, 2), "F_mean": round(fm, 2), "JF_mean": round((jm + fm) / 2, 2)}

    table = {seq: {**row(m["J"], m["F"]), "objects": len(m["J"]), "frames_scored": len(per_sequence[seq]["J"][0])}
             for seq, m in object_means.items()}
    every = {m: [value for means in object_means.values() for value in means[m]] for m in ("J", "F")}
    overall = row(every["J"], every["F"])
    return overall, table


def run(*, data_root: Path, backbone: Path | None, embedding: Path | None, arch: str, protocol: DavisProtocol,
        seed: int, threads: int, out: Path) -> dict[str, Any]:
    """Track every sequence, score it and write `out`/metrics.json (last, atomically); return its content."""
    images, masks = check_davis_root(data_root)
    sequences = list_sequences(images, protocol.sequences)
    files = {seq: sequence_files(images, masks, seq) for seq in sequences}  # all checks before any work
    torch.set_num_threads(threads)
    model = feature_extractor(arch, backbone, seed, protocol.layer, protocol.stride, embedding_of(protocol, embedding))

    weights = None if backbone is None else str(backbone)
    work = out / "work"
    run_key = config_hash({"protocol": protocol.as_dict(), "seed": seed, "weights": weights, "features": model.name,
                           "arch": arch,
                           "data": str(data_root)})
    check_resumable(work, run_key, has_checkpoint=any(work.glob("sequence_*.json")))
    per_sequence = {}
    for seq in tqdm(sequences, desc="davis"):
        done = work / f"sequence_{seq}.json"
        if not done.is_file():
            write_json(done, track_sequence(model, *files[seq], protocol))
        per_sequence[seq] = read_json(done)
    overall, table = summarize(per_sequence)
    if not all(math.isfinite(value) for value in overall.values()):
        raise UserError(f"DAVIS scoring gave non-finite metrics {overall}; check the masks under {masks}.")
    summary = {
        "protocol": "davis",
        "metrics": overall,
        "per_sequence": table,
        "weights": weights,
        "features": model.name,
        "arch": arch,
        "provenance": provenance(protocol.as_dict(), seed),
    }
    write_json(out / "metrics.json", summary)
    print("DAVIS: " + ", ".join(f"{key} {value:.2f}" for key, value in overall.items()))
    return summary
