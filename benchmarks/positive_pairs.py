"""Benchmark: how often DenseCL's argmax and HoughCL's PHM pick the true positive cell, on real photos.

    .venv/bin/python benchmarks/positive_pairs.py \
        [--backbone results/pretrain/densecl-coco-resnet18-smoke-s0/backbone.pth] \
        [--images 48] [--size 224] [--houghcl '{"offset_bins": 13}']

Each COCO-mini val2017 photo gives two MoCo v2 views with recorded geometry (the generator scheme of
pretrain/data.py). A query cell's true key cell follows from the geometry: its centre in source
coordinates (`view_grid_coords`) mapped into view 2 (`source_to_view`); only cells whose point lies
inside view 2 count. A match is correct within one cell of the truth (Chebyshev distance <= 1).
Matching uses the backbone's last feature map (size / 32 cells a side), as in training, for a randomly
initialised ResNet and a briefly pretrained one: --backbone (a state dict written by
`python -m pretrain train`), else DenseCL pretrained here at smoke scale on train2017 (~1 min).
PHM's hyper-parameters come from the config's pretrain.houghcl section, updated by --houghcl (JSON).
Pairs where exactly one view is flipped are counted apart: a translation-only Hough space cannot
model a mirror, so they are where PHM is expected not to help.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.images import load_rgb  # noqa: E402
from pretrain.data import sample_generator  # noqa: E402
from pretrain.matching import argmax_match, phm_match  # noqa: E402
from pretrain.models import ResNetTrunk  # noqa: E402
from pretrain.runs import run_config  # noqa: E402
from pretrain.train import train  # noqa: E402
from pretrain.views import ViewConfig, make_view, source_to_view, view_grid_coords  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT.parent / "shared" / "datasets" / "coco_mini"


def houghcl_params(config: Path, override: str | None) -> dict[str, Any]:
    section = yaml.safe_load(config.read_text())["pretrain"].get("houghcl", {})
    params = {**section, **json.loads(override or "{}")}
    needed = {"appearance_power", "offset_bins", "kernel_size", "kernel_sigma"}
    if needed - params.keys():
        raise SystemExit(f"{config} has no complete pretrain.houghcl section; pass the missing "
                         f"{sorted(needed - params.keys())} with --houghcl '{{...}}'")
    return params


def two_views(paths: list[Path], size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    views, view = ([], [], [], []), ViewConfig(size=size)
    for index, path in enumerate(paths):
        image = load_rgb(path, min_side=2 * size)
        gen = sample_generator(seed, 0, index)  # view 1 then view 2 from one stream, as TwoViewImages
        view1, geom1 = make_view(image, view, gen)
        view2, geom2 = make_view(image, view, gen)
        for out, item in zip(views, (view1, view2, geom1, geom2), strict=True):
            out.append(item)
    return tuple(torch.stack(v) for v in views)  # type: ignore[return-value]


def true_cells(geom1: torch.Tensor, geom2: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) [B, N, 2] of the view-2 cell showing each view-1 cell centre, and whether it is inside view 2."""
    in_view2 = source_to_view(view_grid_coords(geom1, grid), geom2)
    inside = ((in_view2 >= 0) & (in_view2 < 1)).all(dim=-1)
    cells = (in_view2.clamp(0, 1 - 1e-6) * grid).floor().long()
    return cells.flip(-1), inside  # (x, y) -> (row, col)


@torch.no_grad()
def feature_maps(backbone: ResNetTrunk, views: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    backbone.eval()
    return torch.cat([backbone(views[i : i + chunk]) for i in range(0, len(views), chunk)])


def pretrained_densecl(config: Path, seed: int, out: Path) -> Path:
    """DenseCL at the config's (smoke) scale on COCO-mini train2017: the `--backbone` stand-in."""
    paths = sorted((COCO_MINI / "train2017").glob("*.jpg"))
    listing = out / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    cfg = run_config(yaml.safe_load(config.read_text())["pretrain"], "densecl")
    train("densecl", str(listing), cfg, seed=seed, out_dir=out, data_name="coco_mini", threads=cfg["threads"])
    return out / "backbone.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=COCO_MINI / "val2017")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=224, help="view size; the grid is size / 32 (224: the paper's 7)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--backbone", type=Path, help="pretrained backbone.pth; default: pretrain DenseCL here")
    parser.add_argument("--config", type=Path, default=ROOT / "workflow" / "config" / "smoke.yaml")
    parser.add_argument("--houghcl", help="JSON overrides of the config's pretrain.houghcl section")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = houghcl_params(args.config, args.houghcl)
    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    if not paths:
        raise SystemExit(f"no JPEG in {args.folder}; pass --folder")
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    view1, view2, geom1, geom2 = two_views(paths, args.size, args.seed)
    random_init = ResNetTrunk(args.arch)
    pretrained = ResNetTrunk(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        state_path = args.backbone or pretrained_densecl(args.config, args.seed, Path(tmp))
        pretrained.load_state_dict(torch.load(state_path, weights_only=True))
    mirrored = (geom1[:, 4] != geom2[:, 4])[:, None]  # [B, 1]: exactly one view flipped

    print(f"{len(paths)} images of {args.folder}, {args.size} px views, {args.arch}; PHM {json.dumps(params)}")
    print(f"pretrained backbone: {args.backbone or 'DenseCL, pretrained here at the config scale'}\n")
    print("| backbone | matching | exact | within 1 cell | within 1, same orientation | within 1, mirrored |")
    print("|---|---|---|---|---|---|")
    for name, backbone in (("random init", random_init), ("pretrained", pretrained)):
        query, key = feature_maps(backbone, view1), feature_maps(backbone, view2)
        grid = query.shape[-1]
        truth, inside = true_cells(geom1, geom2, grid)
        for matcher, match in (("DenseCL argmax", argmax_match(query, key, grid)),
                               ("HoughCL PHM", phm_match(query, key, grid, **params))):
            picked = torch.stack([match // grid, match % grid], dim=-1)
            distance = (picked - truth).abs().amax(dim=-1)
            columns = [(distance == 0, inside), (distance <= 1, inside), (distance <= 1, inside & ~mirrored),
                       (distance <= 1, inside & mirrored)]
            counts = [f"{int((hit & mask).sum())}/{int(mask.sum())} ({(hit & mask).sum() / mask.sum():.1%})"
                      for hit, mask in columns]
            print(f"| {name} | {matcher} | " + " | ".join(counts) + " |")


if __name__ == "__main__":
    main()
