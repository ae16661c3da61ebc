"""Frozen ResNet features: the exported backbone (or a seeded random init) in eval mode, its layer4 map
globally average-pooled, extracted in batches and cached in the work dir.

Images are normalised with the ImageNet statistics the pretrain stage trains with (pretrain/views.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.architectures import IMAGENET_MEAN, IMAGENET_STD, RESNETS
from core.errors import UserError
from core.images import load_rgb
from core.io import save_torch
from core.provenance import config_hash
from finetune.common import frozen_resnet
from pretrain.data import sample_generator
from pretrain.views import ViewConfig, sample_crop

# Wang & Isola's linear_eval.py train transform: RandomResizedCrop(64, scale=(0.08, 1)) (torchvision's
# default ratio 3/4-4/3) and RandomHorizontalFlip.
TRAIN_CROP_SCALE = (0.08, 1.0)

View = Callable[[Image.Image, torch.Generator], torch.Tensor]


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no GPU is visible; pass --device cpu.")


def build_encoder(arch: str, backbone: Path | None, seed: int) -> torchvision.models.ResNet:
    """The frozen trunk (its forward gives the pooled layer4 features): weights from `backbone`
    (backbone.pth), or torchvision's init drawn from `seed`."""
    if arch not in RESNETS:
        raise UserError(f"unknown --arch {arch!r}; choose one of {', '.join(RESNETS)}.")
    return frozen_resnet(arch, backbone, seed)


def pooled(encoder: torchvision.models.ResNet, images: torch.Tensor) -> torch.Tensor:
    """Global average pooled layer4 features [B, C] (torchvision's avgpool output; fc is removed)."""
    return encoder(images)


def feature_dim(encoder: torchvision.models.ResNet) -> int:
    """C of the pooled features: the channels of the last block's last norm (bn3 of a bottleneck, else bn2)."""
    last = encoder.layer4[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def backbone_id(backbone: Path | None, seed: int) -> str:
    """What the features depend on besides arch and images: the weights' content, or the init seed."""
    if backbone is None:
        return f"random init, seed {seed}"
    digest = hashlib.sha256()
    with backbone.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise(img: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.to_dtype(img, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)


def eval_view(image: Image.Image, gen: torch.Generator | None, *, resize: int | list[int], crop: int) -> torch.Tensor:
    """Resize (an int: the shorter side; [h, w]: exactly), centre crop, normalise; `gen` is unused."""
    img = F.resize(F.pil_to_tensor(image), resize if isinstance(resize, list) else [resize], antialias=True)
    return _normalise(F.center_crop(img, [crop, crop]))


def train_view(image: Image.Image, gen: torch.Generator, *, crop: int) -> torch.Tensor:
    """Wang & Isola's training augmentation, drawn from `gen`: random resized crop, then a coin flip."""
    width, height = image.size
    top, left, h, w = sample_crop(width, height, ViewConfig(size=crop, scale=TRAIN_CROP_SCALE), gen)
    img = F.resized_crop(F.pil_to_tensor(image), top, left, h, w, [crop, crop], antialias=True)
    if torch.rand((), generator=gen).item() < 0.5:
        img = F.horizontal_flip(img)
    return _normalise(img)


class ImageViews(Dataset):
    """One view per image; image `index` of epoch `epoch` draws from sample_generator(seed, epoch, index),
    so views do not depend on the number of workers or on a resume."""

    def __init__(self, paths: Sequence[Path], view: View, seed: int = 0) -> None:
        self.paths = list(paths)
        self.view = view
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.view(load_rgb(self.paths[index]), sample_generator(self.seed, self.epoch, index))


def loader(views: ImageViews, batches: list[list[int]], workers: int) -> DataLoader:
    """Batches of `views` in the given order."""
    return DataLoader(views, batch_sampler=batches, num_workers=workers)


def extract(encoder: torchvision.models.ResNet, views: ImageViews, batch_size: int, workers: int, device: str,
            desc: str) -> torch.Tensor:
    """Pooled features [N, C] (float32, on the CPU) of every view, in order."""
    batches = [list(range(i, min(i + batch_size, len(views)))) for i in range(0, len(views), batch_size)]
    encoder.to(device)
    out = []
    with torch.no_grad():  # not inference_mode: cached features may feed a classifier's autograd
        for images in tqdm(loader(views, batches, workers), total=len(batches), desc=desc, unit="batch",
                           dynamic_ncols=True):
            out.append(pooled(encoder, images.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, feature_dim(encoder))


def cached(path: Path, key: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`, stored at `path` under a hash of `key`; a stored tensor with the same key is reused."""
    key_hash = config_hash(key)
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(stored, dict) and stored.get("key") == key_hash:
            return stored["features"]
    features = compute()
    if not torch.isfinite(features).all():
        raise UserError(f"the backbone gives non-finite features for {path.stem}; the checkpoint is broken "
                        "(re-export it with `python -m pretrain export`).")
    save_torch({"key": key_hash, "features": features}, path)
    return features


def image_list_key(paths: Sequence[Path]) -> str:
    """A short hash of an ordered image list, for cache keys."""
    return hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:16]

