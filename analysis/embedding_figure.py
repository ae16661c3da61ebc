"""PCA-RGB view of a frozen backbone's dense features (hierarchical_grouping.md Fig. 2).

"We apply PCA to the embeddings ... we display the first three PCA components as an RGB image." The
paper shows its 32-d hypercolumn embedding: a hierarchical-grouping run's exported one (`--embedding`);
for other backbones, one stage (`--layer`, at its natural stride) of L2-normalised features
(`finetune.dense_eval.features`).
One PCA basis is fitted on the cells of all given images together, so a colour means the same direction
in every panel; each image's projection is then min-max scaled per channel to [0, 1] (the paper does not
say how components map to intensities).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend needed
from torch.nn import functional as F

from core.architectures import RESNETS
from core.errors import UserError
from core.io import atomic_path
from finetune.common import positive_int, weights_path
from finetune.dense_eval.features import LAYERS, NATURAL_STRIDE, feature_extractor, load_rgb


def pca_basis(cells: torch.Tensor, components: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], the top `components` principal directions [k, C]) of the rows of `cells` [M, C].

    From the SVD of the centred cells in float64. Signs are fixed so that each direction's largest-magnitude
    coordinate is positive (as scikit-learn's svd_flip), so the colours do not flip between runs.
    """
    if cells.shape[0] < 2 or cells.shape[1] < components:
        raise UserError(f"PCA to {components} components needs >= 2 cells of >= {components} channels, got "
                        f"{tuple(cells.shape)}; use larger images or an earlier --layer.")
    cells = cells.double()
    mean = cells.mean(dim=0)
    _, _, vh = torch.linalg.svd(cells - mean, full_matrices=False)
    basis = vh[:components]
    signs = torch.sign(basis.gather(1, basis.abs().argmax(dim=1, keepdim=True)))
    return mean, basis * signs


def min_max_channels(projection: torch.Tensor) -> torch.Tensor:
    """[h, w, k] scaled to [0, 1] per channel over the image; a constant channel becomes 0."""
    flat = projection.flatten(0, 1)
    low, high = flat.min(dim=0).values, flat.max(dim=0).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return (projection - low) / span


def pca_rgb(feature_maps: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Maps [C, h, w] -> (RGB maps [h, w, 3] in [0, 1], the basis [3, C]); one basis for all maps."""
    cells = [fmap.flatten(1).t() for fmap in feature_maps]
    mean, basis = pca_basis(torch.cat(cells))
    rgb = [min_max_channels(((c.double() - mean) @ basis.t()).reshape(*fmap.shape[1:], 3))
           for c, fmap in zip(cells, feature_maps, strict=True)]
    return rgb, basis


@torch.no_grad()
def embedding_figure(backbone: Path | None, arch: str, images: list[Path], layer: str, image_size: int, seed: int,
                     out_png: str | Path, embedding: Path | None = None) -> None:
    """One row per image: the image (longer side `image_size`) and its PCA-RGB feature map beside it; the run's
    dense embedding (its embedding.pth) instead of `layer` where given."""
    if layer not in LAYERS:
        raise UserError(f"--layer must be one of {list(LAYERS)}, got {layer!r}.")
    if missing := [str(p) for p in images if not Path(p).is_file()]:
        raise UserError(f"images not found: {', '.join(missing)}; pass existing image files to --images.")
    model = feature_extractor(arch, backbone, seed, layer, NATURAL_STRIDE[layer], embedding)
    pictures = [load_rgb(Path(path), image_size) for path in images]
    maps = [model(picture[None])[0] for picture in pictures]  # one at a time: sizes may differ
    rgb, _ = pca_rgb(maps)
    fig = Figure(figsize=(6, 3 * len(images)))
    axes = fig.subplots(len(images), 2, squeeze=False)
    for (ax_image, ax_pca), path, picture, colours in zip(axes, images, pictures, rgb, strict=True):
        ax_image.imshow(picture.permute(1, 2, 0).numpy())
        ax_image.set_title(Path(path).name, fontsize=8)
        # Upsampled to the image's size (nearest: every cell stays a visible block of its colour).
        upsampled = F.interpolate(colours.permute(2, 0, 1)[None], size=picture.shape[1:], mode="nearest")[0]
        ax_pca.imshow(np.clip(upsampled.permute(1, 2, 0).numpy(), 0, 1))
        ax_pca.set_title("PCA (RGB = components 1-3)", fontsize=8)
        for ax in (ax_image, ax_pca):
            ax.set_axis_off()
    weights = "random init" if backbone is None else Path(backbone).parent.name or str(backbone)
    fig.suptitle(f"{arch} {model.name}: {weights}", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("pca-rgb", help="first 3 PCA components of a backbone's dense features as RGB",
                            description=__doc__)
    p.add_argument("--backbone", type=weights_path, required=True,
                   help="backbone.pth (torchvision ResNet, no fc) or 'none' (random init from --seed)")
    p.add_argument("--arch", choices=RESNETS, required=True)
    p.add_argument("--images", type=Path, nargs="+", required=True, help="image files, one figure row each")
    p.add_argument("--layer", choices=LAYERS, default="layer3")
    p.add_argument("--embedding", type=Path, help="embedding.pth of the backbone's pretraining run: its dense "
                   "embedding instead of --layer (hierarchical grouping Fig. 2)")
    p.add_argument("--image-size", type=positive_int, default=224, help="longer side of the resized images")
    p.add_argument("--seed", type=int, default=0, help="random init with --backbone none")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.set_defaults(func=lambda a: (torch.set_num_threads(a.threads),
                                   embedding_figure(a.backbone, a.arch, a.images, a.layer, a.image_size, a.seed,
                                                    a.out, a.embedding)))
