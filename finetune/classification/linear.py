"""Linear evaluation on frozen features (Moon et al., BMVC 2022, Sec. 4.1 "Instance-level Evaluation":
one linear layer on the global-average-pooled features of the frozen backbone, 100 epochs, "strictly
following the settings of Wang and Isola").

Wang & Isola's ssnl/align_uniform examples/stl10/linear_eval.py: Adam (betas 0.5, 0.999), lr 1e-3, batch
128, 100 epochs, lr x0.2 after epochs 60 and 80, cross-entropy, no weight decay; train images
RandomResizedCrop(64, scale (0.08, 1)) + horizontal flip, test images Resize(70) + CenterCrop(64);
encoder in eval mode; top-1 on STL-10 test after the last epoch. Deviation: images are normalised with
the ImageNet statistics our pretraining uses, not their STL-10 statistics.

The classifier, optimizer and scheduler are checkpointed after every epoch in <out>/work/linear.pt.
The batch order and augmentation of an epoch are drawn from (seed, epoch) alone, so a run killed and
resumed ends bit-for-bit where an uninterrupted run does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from core.errors import UserError
from core.io import save_torch, write_json
from core.provenance import config_hash, provenance
from finetune.classification.data import LabelledImages, read_train_test
from finetune.classification.features import (
    ImageViews,
    backbone_id,
    build_encoder,
    cached,
    check_device,
    eval_view,
    extract,
    feature_dim,
    image_list_key,
    loader,
    pooled,
    train_view,
)
from finetune.classification.protocols import LinearProtocol
from finetune.common import check_resumable
from pretrain.data import sample_generator

CHECKPOINT = "linear.pt"
ADAM_BETAS = (0.5, 0.999)  # Wang & Isola's linear_eval.py
# (epoch, order of the training set) -> batches of (features [B, C], labels [B])
Batches = Callable[[int, torch.Tensor], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled training order of one epoch (index -1: a stream apart from the per-image views)."""
    return torch.randperm(size, generator=sample_generator(seed, epoch, -1))


def init_classifier(dim: int, num_classes: int, seed: int) -> nn.Linear:
    """nn.Linear with its default init, U(-1/sqrt(dim), 1/sqrt(dim)), drawn from `seed`."""
    gen = sample_generator(seed, -1, -1)
    layer = nn.Linear(dim, num_classes)
    bound = 1 / math.sqrt(dim)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(num_classes, dim, generator=gen) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(num_classes, generator=gen) * 2 - 1) * bound)
    return layer


def train_classifier(batches: Batches, size: int, dim: int, num_classes: int, protocol: LinearProtocol, seed: int,
                     checkpoint: Path, device: str = "cpu") -> nn.Linear:
    """Train the linear layer for protocol.epochs, resuming from `checkpoint` and saving it every epoch."""
    classifier = init_classifier(dim, num_classes, seed).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=protocol.lr, betas=ADAM_BETAS)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=protocol.lr_decay_epochs,
                                                     gamma=protocol.lr_decay_rate)
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["epoch"]
    progress = tqdm(range(start, protocol.epochs), initial=start, total=protocol.epochs, desc="linear eval",
                    unit="epoch", dynamic_ncols=True)
    for epoch in progress:
        total, count = 0.0, 0
        for features, labels in batches(epoch, epoch_order(size, seed, epoch)):
            loss = F.cross_entropy(classifier(features.to(device)), labels.to(device))
            if not math.isfinite(loss.item()):
                raise UserError(f"the linear classifier's loss became {loss.item()} in epoch {epoch + 1}; lower "
                                f"the protocol's lr (now {protocol.lr}), delete {checkpoint.parent} and rerun.")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
        scheduler.step()
        save_torch({"epoch": epoch + 1, "classifier": classifier.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, checkpoint)
        progress.set_postfix(loss=f"{total / max(count, 1):.4f}")
    return classifier


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy in percent, and top-5 when there are at least 5 classes."""
    ks = (1, 5) if logits.shape[1] >= 5 else (1,)
    ranked = logits.topk(max(ks), dim=1).indices
    hits = ranked == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).sum().item() / len(labels) for k in ks}  # exact, not float32


def cached_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Batches:
    """Batches of precomputed features (no augmentation)."""

    def batches(epoch: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in order.split(batch_size):
            yield features[chunk], labels[chunk]

    return batches


def augmented_batches(encoder: nn.Module, views: ImageViews, labels: torch.Tensor, batch_size: int, workers: int,
                      device: str) -> Batches:
    """Batches of features of freshly augmented views through the frozen encoder (Wang & Isola)."""

    def batches(epoch: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        views.epoch = epoch  # before the loader starts: workers copy the dataset then
        chunks = [chunk.tolist() for chunk in order.split(batch_size)]
        for images, chunk in zip(loader(views, chunks, workers), chunks, strict=True):
            with torch.no_grad():  # left before the yield: the classifier's step needs autograd
                features = pooled(encoder, images.to(device))
            yield features, labels[chunk]

    return batches


def run(*, data_root: Path, layout: str, backbone: Path | None, arch: str, protocol: LinearProtocol, seed: int,
        threads: int, device: str, out: Path) -> dict[str, Any]:
    """Train the linear classifier, evaluate it and write `out`/metrics.json (last, atomically)."""
    train, test = read_train_test(data_root, layout)
    train, test = train.limit(protocol.max_per_class), test.limit(protocol.max_per_class)
    check_device(device)
    torch.set_num_threads(threads)
    encoder = build_encoder(arch, backbone, seed).to(device)
    weights = backbone_id(backbone, seed)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in protocol.as_dict().items() if k != "workers"}  # workers do not change results
    run_key = config_hash({"protocol": settings, "seed": seed, "backbone": weights, "arch": arch,
                           "data": str(data_root.resolve()), "layout": layout})
    checkpoint = work / CHECKPOINT
    check_resumable(work, run_key, has_checkpoint=checkpoint.is_file())

    def features(images: LabelledImages, name: str) -> torch.Tensor:
        view = partial(eval_view, resize=protocol.resize, crop=protocol.crop)
        key = {"backbone": weights, "arch": arch, "images": image_list_key(images.paths), "resize": protocol.resize,
               "crop": protocol.crop}
        return cached(work / f"features-{name}.pt", key, lambda: extract(
            encoder, ImageViews(images.paths, view), protocol.batch_size, protocol.workers, device, f"features {name}"))

    test_features = features(test, "test")
    labels = torch.tensor(train.labels)
    if protocol.augment:
        views = ImageViews(train.paths, partial(train_view, crop=protocol.crop), seed)
        batches = augmented_batches(encoder, views, labels, protocol.batch_size, protocol.workers, device)
    else:
        batches = cached_batches(features(train, "train"), labels, protocol.batch_size)
    classifier = train_classifier(batches, len(train.paths), feature_dim(encoder), len(train.classes), protocol,
                                  seed, checkpoint, device)
    with torch.no_grad():
        metrics = top_k_accuracy(classifier(test_features.to(device)).cpu(), torch.tensor(test.labels))
    summary = {
        "protocol": "linear_eval",
        "metrics": metrics,
        "weights": None if backbone is None else str(backbone),
        "epochs": protocol.epochs,
        "classes": len(train.classes),
        "train_images": len(train.paths),
        "test_images": len(test.paths),
        "provenance": provenance(protocol.as_dict(), seed),
    }
    write_json(out / "metrics.json", summary)
    print("linear eval: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return summary
