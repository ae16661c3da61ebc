"""Hierarchical grouping (Zhang & Maire, NeurIPS 2020): pixel embeddings that respect a region tree.

A from-scratch ResNet with a hypercolumn head (Sec. 4.2) embeds every pixel at 1/4 resolution. Per image,
anchors, positives (Eq. 2) and negatives (Eq. 3) are drawn from the prepare stage's region tree
(`pretrain.grouping`); the loss is Eq. 1 over Pos+ = Pos u Pos_aug and Neg+ = Neg u Neg_aug u Neg_cns
("Augmented Reference Sampling").

Interpretation choices:
- view 1 plays the image I of the paper and view 2 its augmentation tau(I). Points are drawn among the label
  pixels inside view 1's crop (the region map cropped with the image; Eq. 2 / 3 run over the regions present
  there), so anchors, Pos and Neg are visible in view 1; their copies tau(Pos), tau(Neg) in view 2 are masked
  where view 2's crop does not contain them.
- the paper names random resized crop, flip and colour jitter without parameters: we use this repository's
  MoCo v2 parameters (`ViewConfig` defaults) for them, and no grayscale or blur.
- Eq. 1 is maximised as written (a sum of ratios, no log and no temperature): loss = -mean of the ratio over
  the valid (anchor, positive) pairs of the batch.
- Neg_cns: `cross_image_negatives` embedding cells per anchor, drawn uniformly from view 1's maps of the
  other images of the batch with a generator seeded by the iteration (a resumed run draws them again). The
  paper samples them "from the dataset" yet uses "neither a momentum encoder nor a memory bank": the batch, a
  uniform sample of the dataset, is the only source of current features (docs/protocol_notes.md).
- Res3 / Res4 are torchvision's layer2 / layer3; layer4 feeds nothing and keeps its initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import UserError
from pretrain.data import SampleSource, two_views
from pretrain.grouping import region_distances, sample_pixels
from pretrain.methods import PretrainMethod, register
from pretrain.models import ResNetTrunk
from pretrain.views import ViewConfig, source_to_view

RECORD_KEYS = ("labels", "parents", "altitudes")


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class Hypercolumn(nn.Module):
    """Sec. 4.2: Res3 and Res4 each through a 3x3 Conv-BN-ReLU to `width` channels, both bilinearly resized to
    1/4 of the input, concatenated, and a 3x3 convolution to the `dim`-channel embedding F."""

    def __init__(self, res3_channels: int, res4_channels: int, width: int, dim: int) -> None:
        super().__init__()
        self.res3 = conv_bn_relu(res3_channels, width)
        self.res4 = conv_bn_relu(res4_channels, width)
        self.out = nn.Conv2d(2 * width, dim, 3, padding=1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Hypercolumn:
        """The head of an exported embedding.pth, its sizes read from the tensors."""
        width, res3_channels = state["res3.0.weight"].shape[:2]
        head = cls(res3_channels, state["res4.0.weight"].shape[1], width, state["out.weight"].shape[0])
        head.load_state_dict(state)
        return head

    def forward(self, res3: torch.Tensor, res4: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        maps = [F.interpolate(project(x), size=size, mode="bilinear", align_corners=False)
                for project, x in ((self.res3, res3), (self.res4, res4))]
        return self.out(torch.cat(maps, dim=1))


def hypercolumn_embedding(trunk: nn.Module, head: Hypercolumn, images: torch.Tensor) -> torch.Tensor:
    """The embedding F [B, dim, H / 4, W / 4] of normalised images [B, 3, H, W] through a torchvision ResNet trunk
    (Res3 = layer2, Res4 = layer3; layer4, Res5, is not part of the hypercolumn)."""
    res3 = trunk.layer2(trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(images))))))
    return head(res3, trunk.layer3(res3), (images.shape[-2] // 4, images.shape[-1] // 4))


def sample_features(embedding: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings [B, D, h, w] at view [0, 1] points [B, ...,  2], bilinear: [B, ..., D].

    align_corners=False puts cell k's centre at (k + 0.5) / size; border padding holds the outer cells between
    their centres and the view's edge (points outside the view are masked by the caller).
    """
    batch, dim = embedding.shape[:2]
    grid = (2 * points - 1).reshape(batch, -1, 1, 2).to(embedding.dtype)
    sampled = F.grid_sample(embedding, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.normalize(sampled.squeeze(-1).transpose(1, 2), dim=-1).reshape(*points.shape[:-1], dim)


def cross_image_features(embedding: torch.Tensor, anchors: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """Neg_cns: for each of the `anchors` anchors of every image, `count` L2-normalised embedding cells of other
    images of the batch, uniform over images != own and cells. embedding: [B, D, h, w] with B >= 2.
    Returns [B, anchors, count, D]."""
    batch, dim = embedding.shape[:2]
    cells = embedding.flatten(2).transpose(1, 2)  # [B, hw, D]
    shape = (batch, anchors, count)
    own = torch.arange(batch)[:, None, None]
    other = (own + 1 + torch.randint(batch - 1, shape, generator=gen)) % batch
    cell = torch.randint(cells.shape[1], shape, generator=gen)
    return F.normalize(cells[other.to(cells.device), cell.to(cells.device)], dim=-1)


def grouping_loss(anchors: torch.Tensor, positives: torch.Tensor, positive_valid: torch.Tensor,
                  negatives: torch.Tensor, negative_valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 1 over unit vectors: for every anchor i and positive m,
    exp(sim(i, m)) / (exp(sim(i, m)) + sum_n exp(sim(i, n))) over its valid negatives n.

    anchors [..., D]; positives [..., P, D] and negatives [..., N, D] with bool masks [..., P] / [..., N].
    Returns "loss" = -(mean ratio over valid pairs), and the detached mean cosines "pos_sim", "neg_sim".
    """
    pos_sim = (anchors[..., None, :] * positives).sum(dim=-1)
    neg_sim = (anchors[..., None, :] * negatives).sum(dim=-1)
    negative_mass = (neg_sim.exp() * negative_valid).sum(dim=-1, keepdim=True)
    ratio = pos_sim.exp() / (pos_sim.exp() + negative_mass)
    pairs = positive_valid.sum().clamp(min=1)
    return {"loss": -(ratio * positive_valid).sum() / pairs,
            "pos_sim": ((pos_sim * positive_valid).sum() / pairs).detach(),
            "neg_sim": ((neg_sim * negative_valid).sum() / negative_valid.sum().clamp(min=1)).detach()}


def inside(points: torch.Tensor) -> torch.Tensor:
    return ((points >= 0) & (points <= 1)).all(dim=-1)


@register("hiergroup")
class HierGroup(PretrainMethod):
    unused_parameters = True  # the trunk's layer4 (Res5) is not part of the hypercolumn

    @classmethod
    def view_configs(cls, cfg: dict[str, Any]) -> tuple[ViewConfig, ViewConfig]:
        """Sec. 4.2: random resized crop, horizontal flip, colour jitter (MoCo v2's parameters); no grayscale
        or blur."""
        view = ViewConfig(size=cfg["image_size"], grayscale_prob=0.0, blur_prob=0.0)
        return view, view

    @classmethod
    def make_sample(cls, source: SampleSource, gen: torch.Generator, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Two views, and per view the points of `regions_per_image` rows [anchor, P positives, N negatives] in
        the view's [0, 1] coordinates ("points1", "points2" [R, 1 + P + N, 2]) with their masks ("valid1",
        "valid2" [R, 1 + P + N]): False outside the view, and for the negatives of a single-region window."""
        record = source.record
        if record is None or any(key not in record for key in RECORD_KEYS):
            raise UserError("hiergroup needs region-tree records with labels, parents and altitudes: pass the "
                            "store of `python -m prepare region-trees` for this image list as --prepared.")
        hier = cfg["hiergroup"]
        sample = two_views(source.image, cls.view_configs(cfg), gen)
        geom1, geom2 = sample["geom1"], sample["geom2"]
        labels = record["labels"]
        distances = torch.from_numpy(region_distances(record["parents"], record["altitudes"], int(labels.max()) + 1))
        samples = sample_pixels(labels, distances, hier["regions_per_image"], hier["positives"], hier["negatives"],
                                hier["sigma_p"], gen, window=tuple(geom1[:4].tolist()))
        points = torch.cat([samples.anchors[:, None], samples.positives, samples.negatives], dim=1)
        negative_slots = torch.arange(points.shape[1]) > hier["positives"]
        keep = ~negative_slots | samples.negatives_valid[:, None]
        points1, points2 = (source_to_view(points.reshape(1, -1, 2), geom[None]).view_as(points)
                            for geom in (geom1, geom2))
        return {**sample, "points1": points1, "points2": points2, "valid1": inside(points1) & keep,
                "valid2": inside(points2) & keep}

    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__()
        hier = cfg["hiergroup"]
        self.positives: int = hier["positives"]
        self.cross_image_negatives: int = hier["cross_image_negatives"]
        self.backbone = ResNetTrunk(arch)
        # torchvision ResNets double the width per stage: layer2 / layer3 have 1/4 and 1/2 of layer4's channels.
        width = self.backbone.out_channels
        self.hypercolumn = Hypercolumn(width // 4, width // 2, hier["hypercolumn_channels"], hier["dim"])

    def embed(self, view: torch.Tensor) -> torch.Tensor:
        """The embedding F [B, dim, H / 4, W / 4] of a view [B, 3, H, W]."""
        return hypercolumn_embedding(self.backbone, self.hypercolumn, view)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                points1: torch.Tensor, points2: torch.Tensor, valid1: torch.Tensor, valid2: torch.Tensor,
                iteration: int, total: int) -> dict[str, torch.Tensor]:
        # Siamese: one network, each view through it alone (BN statistics per view).
        embedding1 = self.embed(view1)
        features1, features2 = sample_features(embedding1, points1), sample_features(self.embed(view2), points2)
        pos, anchor_valid = slice(1, 1 + self.positives), valid1[..., :1]
        neg = slice(1 + self.positives, None)
        positives = torch.cat([features1[..., pos, :], features2[..., pos, :]], dim=2)
        positive_valid = torch.cat([valid1[..., pos], valid2[..., pos]], dim=2) & anchor_valid
        negatives = [features1[..., neg, :], features2[..., neg, :]]
        negative_valid = [valid1[..., neg], valid2[..., neg]]
        if self.cross_image_negatives and len(view1) > 1:  # a batch of one has no other image
            gen = torch.Generator().manual_seed(iteration)
            negatives.append(cross_image_features(embedding1, points1.shape[1], self.cross_image_negatives, gen))
            negative_valid.append(torch.ones(negatives[-1].shape[:-1], dtype=torch.bool, device=view1.device))
        return grouping_loss(features1[..., 0, :], positives, positive_valid, torch.cat(negatives, dim=2),
                             torch.cat(negative_valid, dim=2))
