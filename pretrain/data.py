"""The unlabeled pretraining images, each sample giving two views with their geometry."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset

from core.images import load_rgb
from prepare.image_list import read_image_list
from pretrain.views import ViewConfig, make_view


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch, index): views do not depend on
    worker count, batch order or where a resumed run restarted."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class TwoViewImages(Dataset):
    """Images from an image-list file (`python -m prepare image-list`), as (view1, view2, geom1, geom2)."""

    def __init__(self, image_list: str, views: tuple[ViewConfig, ViewConfig], seed: int) -> None:
        self.paths = read_image_list(image_list)
        self.views = views
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # Crops cover >= ~45 % of a side (scale >= 0.2), so 2x the view size keeps them at full detail.
        image = load_rgb(self.paths[index], min_side=2 * max(v.size for v in self.views))
        gen = sample_generator(self.seed, self.epoch, index)
        view1, geom1 = make_view(image, self.views[0], gen)
        view2, geom2 = make_view(image, self.views[1], gen)
        return view1, view2, geom1, geom2
