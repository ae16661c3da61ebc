"""The unlabeled pretraining images; each sample is a dict of tensors made by a sampling function
(a method's `make_sample`), so region-level methods can carry boxes, masks or pixel samples."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from core.errors import UserError
from core.images import load_rgb
from prepare.image_list import read_image_list
from prepare.shards import ShardedStore, image_id
from pretrain.views import ViewConfig, make_view

Sample = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SampleSource:
    """What one sample is made from."""

    image: Image.Image  # decoded RGB, possibly at a reduced JPEG scale (the dataset's `min_side`)
    original_size: tuple[int, int]  # (width, height) of the file: the frame of pixel boxes in `record`
    record: dict[str, np.ndarray] | None  # the image's prepare-stage record, if the method reads a store
    draw_image: Callable[[], Image.Image]  # another image of the dataset, drawn from the sample's generator


SampleFn = Callable[[SampleSource, torch.Generator], Sample]


def two_views(image: Image.Image, views: tuple[ViewConfig, ViewConfig], gen: torch.Generator) -> Sample:
    """Two augmented views and their geometry: view 1 then view 2 from one generator stream."""
    view1, geom1 = make_view(image, views[0], gen)
    view2, geom2 = make_view(image, views[1], gen)
    return {"view1": view1, "view2": view2, "geom1": geom1, "geom2": geom2}


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch, index): views do not depend on
    worker count, batch order or where a resumed run restarted."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def original_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding."""
    with Image.open(path) as img:
        return img.size


class PretrainImages(Dataset):
    """Images from an image-list file (`python -m prepare image-list`), each turned into a sample by
    `make_sample`; images are decoded with at least `min_side` pixels per side.

    `store`: the prepare-stage records (proposals or region trees) the samples read; it must have
    been made from this very image list (ShardedStore checks the list's hash).
    """

    def __init__(self, image_list: str, make_sample: SampleFn, min_side: int, seed: int,
                 store: ShardedStore | None = None) -> None:
        self.paths = read_image_list(image_list)
        self.make_sample = make_sample
        self.min_side = min_side
        self.seed = seed
        self.store = store
        self.epoch = 0
        if store is not None:
            missing = sorted(set(map(image_id, self.paths)) - set(store.image_ids()))
            if missing:
                raise UserError(f"{store.index_path} has no record for {len(missing)} image(s) of {image_list} "
                                f"(e.g. {missing[0]}); rerun its prepare stage for this image set.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        gen = sample_generator(self.seed, self.epoch, index)

        def draw_image() -> Image.Image:
            other = (index + 1 + int(torch.randint(max(1, len(self.paths) - 1), (), generator=gen))) % len(self.paths)
            return load_rgb(self.paths[other], min_side=self.min_side)

        source = SampleSource(
            image=load_rgb(path, min_side=self.min_side),
            original_size=original_size(path),
            record=self.store[image_id(path)] if self.store is not None else None,
            draw_image=draw_image,
        )
        return self.make_sample(source, gen)


def view_pair_images(image_list: str, views: tuple[ViewConfig, ViewConfig], seed: int) -> PretrainImages:
    """The images as two-view samples of fixed view configs (analyses that measure a backbone)."""
    return PretrainImages(image_list, lambda source, gen: two_views(source.image, views, gen),
                          2 * max(view.size for view in views), seed)
