"""Benchmark: cost of the region-level augmentations (pretrain/region_augment.py) per view, against the
cost of making the view itself.

    .venv/bin/python benchmarks/region_augment.py [--repeats 100] [--boxes 4] [--threads 1]

For a 224 x 224 and a 96 x 96 view with K random boxes (sides U(0.15, 0.6) of the view, uniform positions;
a new box set each repeat, drawn outside the timing), the mean wall and CPU ms per call of PRC, PRM (+ blank),
RBJ, SoCo's box_cutout and box_jitter, and sample_shift + depositioning_composite (with a PRC cut computed
beforehand). The reference, measured in the same run with its calls interleaved with the others (so a change
of machine load hits all alike), is `pretrain.views.make_view(640 x 480 random PIL image, ViewConfig(size=224))`;
the ratio columns are augment / make_view (CPU time, the steadier measure on a shared machine). --threads
defaults to 1, as in a data-loader worker. Then whole SoCo and D3SSL samples on COCO-mini photos with the
augmentations on and off (their share of a sample's cost) and the smoke-size training step they feed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.images import load_rgb  # noqa: E402
from prepare.proposals import proposals_for  # noqa: E402
from pretrain.data import SampleSource, original_size  # noqa: E402
from pretrain.methods import build_method, method_class  # noqa: E402
from pretrain.optim import build_optimizer  # noqa: E402
from pretrain.region_augment import (  # noqa: E402
    blank,
    box_cutout,
    box_jitter,
    depositioning_composite,
    proposal_random_cutout,
    proposal_random_mask,
    restricted_box_jitter,
    sample_shift,
)
from pretrain.runs import run_config  # noqa: E402
from pretrain.views import ViewConfig, make_view  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "workflow" / "config" / "smoke.yaml").read_text())["pretrain"]
PARAMS = SMOKE["region_augment"]  # the paper's values (paper.yaml cites them)
PRC_SIZE, PRM_SCALE, PRM_RATIO = (tuple(PARAMS[key]) for key in ("prc_size", "prm_scale", "prm_ratio"))
CUTOUT_SIDE = tuple(PARAMS["cutout_side"])
COCO_TRAIN = ROOT.parent / "shared" / "datasets" / "coco_mini" / "train2017"

Op = Callable[[int], object]  # called with the repeat index


def random_boxes(size: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """K boxes with sides U(0.15, 0.6) of the view and uniform positions, in pixels."""
    sides = size * (0.15 + 0.45 * torch.rand(k, 2, generator=gen))
    corner = (size - sides) * torch.rand(k, 2, generator=gen)
    return torch.cat([corner, corner + sides], dim=1)


def size_ops(size: int, args: argparse.Namespace) -> dict[str, Op]:
    """The timed augmentations on a size x size view, each cycling through its own prepared box sets."""
    data_gen = torch.Generator().manual_seed(args.seed + size)
    box_sets = [random_boxes(size, args.boxes, data_gen) for _ in range(args.repeats + args.warmup)]
    view, background = torch.randn(3, size, size, generator=data_gen), torch.randn(3, size, size, generator=data_gen)
    gen = torch.Generator().manual_seed(args.seed)
    shifts = [sample_shift(b, size, size, gen) for b in box_sets]
    cuts = [proposal_random_cutout(b + torch.tensor([tx, ty, tx, ty]), size, size, PRC_SIZE, args.max_cover, gen)
            for b, (tx, ty) in zip(box_sets, shifts, strict=True)]

    def prm_blank(i: int) -> object:
        keep, _ = proposal_random_mask(box_sets[i], size, size, PRM_SCALE, PRM_RATIO, gen)
        return blank(view, ~keep)

    def shift_composite(i: int) -> object:
        return depositioning_composite(view, background, box_sets[i], sample_shift(box_sets[i], size, size, gen),
                                       cuts[i])

    return {
        "PRC (proposal_random_cutout)":
            lambda i: proposal_random_cutout(box_sets[i], size, size, PRC_SIZE, args.max_cover, gen),
        "PRM (proposal_random_mask)":
            lambda i: proposal_random_mask(box_sets[i], size, size, PRM_SCALE, PRM_RATIO, gen),
        "PRM + blank": prm_blank,
        "RBJ (restricted_box_jitter)": lambda i: restricted_box_jitter(box_sets[i], PARAMS["jitter_ratio"], gen),
        "SoCo box_jitter": lambda i: box_jitter(box_sets[i], PARAMS["jitter_ratio"], size, size, gen),
        "SoCo box_cutout": lambda i: box_cutout(box_sets[i], size, size, PARAMS["cutout_prob"], CUTOUT_SIDE, gen),
        "sample_shift + depositioning_composite": shift_composite,
    }


def time_interleaved(ops: dict[str, Op], warmup: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Mean (wall, CPU) seconds per call of every op; in each repeat every op runs once, in turn."""
    totals = {name: [0.0, 0.0] for name in ops}
    for i in range(warmup + repeats):
        for name, op in ops.items():
            wall, cpu = time.perf_counter(), time.process_time()
            op(i)
            if i >= warmup:
                totals[name][0] += time.perf_counter() - wall
                totals[name][1] += time.process_time() - cpu
    return {name: (w / repeats, c / repeats) for name, (w, c) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--boxes", type=int, default=4, help="K, boxes per view")
    parser.add_argument("--max-cover", type=float, default=0.3, help="PRC's threshold (the paper gives none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=16, help="COCO-mini photos for the whole-sample timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sizes = (224, 96)
    ops: dict[str, Op] = {}
    for size in sizes:
        ops |= {f"{size}|{name}": op for name, op in size_ops(size, args).items()}
    pixels = np.random.default_rng(args.seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    photo, view_gen = Image.fromarray(pixels), torch.Generator().manual_seed(args.seed)
    ops["make_view"] = lambda i: make_view(photo, ViewConfig(size=224), view_gen)
    means = time_interleaved(ops, args.warmup, args.repeats)

    ref_wall, ref_cpu = means["make_view"]
    print(f"K = {args.boxes} random boxes, mean of {args.repeats} interleaved calls after {args.warmup} warm-up, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    print(f"reference make_view(640 x 480 PIL image, ViewConfig(size=224)): wall {ref_wall * 1000:.2f} ms, "
          f"CPU {ref_cpu * 1000:.2f} ms")
    print("| augmentation | 224 wall ms | 224 CPU ms | 224 / make_view | 96 wall ms | 96 CPU ms | 96 / make_view |")
    print("|---|---|---|---|---|---|---|")
    for name in [n.split("|", 1)[1] for n in ops if n.startswith(f"{sizes[0]}|")]:
        cells = []
        for size in sizes:
            wall, cpu = means[f"{size}|{name}"]
            cells += [f"{wall * 1000:.3f}", f"{cpu * 1000:.3f}", f"{cpu / ref_cpu:.3f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    sample_costs(args)


def sample_costs(args: argparse.Namespace) -> None:
    """Whole samples of SoCo and D3SSL (`make_sample`: decode, views, proposals, augmentations) on real photos
    with their selective-search proposals (computed outside the timing), with the method's region augmentations
    (and D3SSL's de-positioning composite) on and off: their share of a sample's cost, which the data-loader
    workers pay, and the training step at smoke size (batch 16, ResNet-18, 2 threads) that they feed."""
    paths = sorted(COCO_TRAIN.glob("*.jpg"))[: args.images]
    if not paths:
        print(f"COCO-mini not found at {COCO_TRAIN}: whole-sample timing skipped")
        return
    sources = [SampleSource(image=load_rgb(path), original_size=original_size(str(path)),
                            record=proposals_for(str(path), "fast", 256), draw_image=lambda p=path: load_rgb(p))
               for path in paths]
    print(f"{len(sources)} COCO-mini train2017 photos, {args.threads} thread(s) for samples, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| method | view px | sample ms (augmentations on) | sample ms (off) | augmentation share | step images/s |")
    print("|---|---|---|---|---|---|")
    for method in ("soco", "d3ssl"):
        for size in (96, 224):
            cfg = run_config(SMOKE, method, {"image_size": size, "batch_size": len(sources)})
            bare = run_config(SMOKE, method, {"image_size": size, method: {"augmentations": [], **(
                {"depositioning": False} if method == "d3ssl" else {})}})
            cls = method_class(method)
            times, batches = [], []
            for config in (cfg, bare):
                start = time.process_time()
                batches.append(samples_with(cls, sources, config))
                times.append((time.process_time() - start) / len(sources))
            step = step_images_per_second(method, cfg, default_collate(batches[0])) if size == 96 else float("nan")
            print(f"| {method} | {size} | {times[0] * 1000:.1f} | {times[1] * 1000:.1f} | "
                  f"{1 - times[1] / times[0]:.2f} | {step:.1f} |")


def samples_with(cls: type, sources: list[SampleSource], cfg: dict) -> list[dict[str, torch.Tensor]]:
    return [cls.make_sample(source, torch.Generator().manual_seed(i), cfg) for i, source in enumerate(sources)]


def step_images_per_second(method: str, cfg: dict, batch: dict[str, torch.Tensor], steps: int = 3) -> float:
    """Images per second of forward + backward + update on `batch` (after one warm-up step), 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_method(method, cfg["arch"], cfg)
    optimizer = build_optimizer(model, cfg)
    elapsed = 0.0
    for iteration in range(steps + 1):
        start = time.perf_counter()
        loss = model(**batch, iteration=iteration, total=100)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        elapsed += (time.perf_counter() - start) if iteration else 0.0
    torch.set_num_threads(threads)
    return steps * len(batch["view1"]) / elapsed


if __name__ == "__main__":
    main()
