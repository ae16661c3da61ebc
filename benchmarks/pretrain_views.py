"""Benchmark: two-view sample cost with full vs reduced-scale JPEG decoding (the pretraining input path).

    .venv/bin/python benchmarks/pretrain_views.py [--images N] [--size 96]

Prints seconds per sample for both and their ratio, measured in the same run on the COCO-mini
photos (or any folder given with --folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.images import load_rgb  # noqa: E402
from pretrain.data import sample_generator  # noqa: E402
from pretrain.views import ViewConfig, make_view  # noqa: E402

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco_mini" / "train2017"


def time_samples(paths: list[Path], views: ViewConfig, min_side: int | None) -> float:
    start = time.perf_counter()
    for index, path in enumerate(paths):
        image = load_rgb(path, min_side=min_side)
        gen = sample_generator(0, 0, index)
        make_view(image, views, gen)
        make_view(image, views, gen)
    return (time.perf_counter() - start) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=96, help="view size (smoke: 96, paper: 224)")
    args = parser.parse_args()
    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    if not paths:
        raise SystemExit(f"no JPEG in {args.folder}; pass --folder")
    torch.set_num_threads(1)
    views = ViewConfig(size=args.size)
    time_samples(paths[:2], views, None)  # warm-up
    full = time_samples(paths, views, None)
    reduced = time_samples(paths, views, 2 * args.size)
    print(f"{len(paths)} images, views {args.size} px, 1 thread")
    print(f"full decode     {full * 1000:7.1f} ms/sample")
    print(f"reduced decode  {reduced * 1000:7.1f} ms/sample (min side {2 * args.size})")
    print(f"speed-up        {full / reduced:7.2f}x")


if __name__ == "__main__":
    main()
