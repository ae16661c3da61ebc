"""Benchmark: pretraining step cost. (a) HoughCL / DenseCL step time on the same batch; (b) images/s of
every registered method at the config's (smoke) scale.

    .venv/bin/python benchmarks/pretrain_steps.py [--steps 10] [--size 224] [--houghcl '{"offset_bins": 91}']

A step is forward + backward + optimizer step through the method's `forward`, on views precomputed
by `TwoViewImages` from COCO-mini train2017 photos (data loading is not timed), 2 threads.
(a) builds DenseCL, HoughCL and a second DenseCL (its ratio to the first shows the timing noise) from
the same seed, alternates their steps (so machine load hits them alike) and compares medians after
warm-up, of wall time and of the process's CPU time; argmax and PHM matching are also timed alone.
--size overrides the view size of (a) only (224: the paper's 7 x 7 grid; default: the config's).
(b) runs every registered method with `run_config(config["pretrain"], method)`, steps interleaved; a
method whose config section or key is missing is listed as skipped with the KeyError.
--houghcl (JSON) updates the config's pretrain.houghcl section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torch.utils.data import default_collate  # noqa: E402

from pretrain.matching import argmax_match, phm_match  # noqa: E402
from pretrain.methods import METHODS, PretrainMethod, build_method  # noqa: E402
from pretrain.optim import build_optimizer  # noqa: E402
from pretrain.runs import run_config  # noqa: E402
from pretrain.train import training_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO_TRAIN = ROOT.parent / "shared" / "datasets" / "coco_mini" / "train2017"

Batch = dict[str, torch.Tensor]


def views_batch(image_list: Path, method: str, cfg: dict[str, Any], seed: int) -> Batch:
    dataset = training_images(method, str(image_list), cfg, seed)
    return default_collate([dataset[i] for i in range(cfg["batch_size"])])


class Stepper:
    """One method and its optimizer, stepping on a fixed batch; `step` returns its (wall, CPU) seconds."""

    def __init__(self, method: str, cfg: dict[str, Any], batch: Batch, seed: int) -> None:
        torch.manual_seed(seed)
        self.model: PretrainMethod = build_method(method, cfg["arch"], cfg)
        self.model.train()
        self.optimizer = build_optimizer(self.model, cfg)
        self.batch = batch
        # Past DenseCL's warm-up, so the dense loss (and with it the matching) counts.
        self.iteration = cfg.get("densecl", {}).get("warmup_iters", 0)

    def step(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        losses = self.model(**self.batch, iteration=self.iteration, total=10 * self.iteration + 100)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.iteration += 1
        return time.perf_counter() - wall, time.process_time() - cpu


def median_step(steppers: list[Stepper], warmup: int, steps: int) -> list[tuple[float, float]]:
    """Median (wall, CPU) step time of each stepper, their steps interleaved. On a shared machine the
    process's CPU time is the steadier measure: waiting for a core does not count."""
    times: list[list[tuple[float, float]]] = [[] for _ in steppers]
    for i in range(warmup + steps):
        for stepper, record in zip(steppers, times, strict=True):
            elapsed = stepper.step()
            if i >= warmup:
                record.append(elapsed)
    return [(statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for t in times]


def houghcl_vs_densecl(pretrain: dict[str, Any], image_list: Path, args: argparse.Namespace) -> None:
    cfg = run_config(pretrain, "houghcl", {"image_size": args.size} if args.size else None)
    batch = views_batch(image_list, "densecl", cfg, args.seed)
    try:
        dense, hough = Stepper("densecl", cfg, batch, args.seed), Stepper("houghcl", cfg, batch, args.seed)
        control = Stepper("densecl", cfg, batch, args.seed)  # DenseCL against itself: the timing noise
    except KeyError as err:
        print(f"(a) skipped: missing config key {err}; add pretrain.houghcl to {args.config} or pass --houghcl")
        return
    timings = median_step([dense, hough, control], args.warmup, args.steps)
    (dense_wall, dense_cpu), (hough_wall, hough_cpu), (control_wall, control_cpu) = timings
    with torch.no_grad():
        maps = dense.model.backbone(batch[0]), dense.model.key_backbone(batch[1])
    grid = maps[0].shape[-1]
    argmax_cpu, phm_cpu = (cpu_seconds(lambda: argmax_match(*maps, grid), 20),
                           cpu_seconds(lambda: phm_match(*maps, grid, **cfg["houghcl"]), 20))
    print(f"(a) {cfg['arch']}, batch {cfg['batch_size']}, {cfg['image_size']} px ({grid} x {grid} grid), median of "
          f"{args.steps} steps after {args.warmup} warm-up, load average {os.getloadavg()[0]:.1f}; "
          f"PHM {json.dumps(cfg['houghcl'])}")
    print("| ms | DenseCL | HoughCL | HoughCL / DenseCL |")
    print("|---|---|---|---|")
    for name, dense_s, hough_s in (("step, wall", dense_wall, hough_wall), ("step, CPU", dense_cpu, hough_cpu),
                                   ("matching alone, CPU", argmax_cpu, phm_cpu)):
        print(f"| {name} | {dense_s * 1000:.1f} | {hough_s * 1000:.1f} | {hough_s / dense_s:.3f} |")
    # The matching is the only difference between the two steps: its extra CPU time over DenseCL's step is
    # the ratio the step timings estimate, without their noise on a busy machine.
    print(f"| step, CPU, DenseCL + PHM's extra matching time | {dense_cpu * 1000:.1f} | "
          f"{(dense_cpu + phm_cpu - argmax_cpu) * 1000:.1f} | {1 + (phm_cpu - argmax_cpu) / dense_cpu:.3f} |")
    print(f"noise: a second DenseCL (same seed and batch) / DenseCL: wall {control_wall / dense_wall:.3f}, "
          f"CPU {control_cpu / dense_cpu:.3f}")
    print("target: step ratio <= 1.03 (the paper reports < 1.06)")


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Mean process CPU time of fn() after one warm-up call."""
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def throughput(pretrain: dict[str, Any], image_list: Path, args: argparse.Namespace) -> None:
    steppers: dict[str, tuple[dict[str, Any], Stepper]] = {}
    skipped: dict[str, KeyError] = {}
    for method in sorted(METHODS):
        try:
            cfg = run_config(pretrain, method)
            steppers[method] = cfg, Stepper(method, cfg, views_batch(image_list, method, cfg, args.seed), args.seed)
        except KeyError as err:
            skipped[method] = err
    # Interleaved, as in (a): a change of machine load during the run hits every method alike.
    medians = dict(zip(steppers, median_step([s for _, s in steppers.values()], args.warmup, args.steps), strict=True))
    print(f"\n(b) images/s per method at the config's scale, median of {args.steps} interleaved steps after "
          f"{args.warmup} warm-up, load average {os.getloadavg()[0]:.1f}")
    print("| method | arch | batch | size | step wall (ms) | step CPU (ms) | images/s (wall) |")
    print("|---|---|---|---|---|---|---|")
    for method in sorted(METHODS):
        if method in skipped:
            print(f"| {method} | skipped: missing config key {skipped[method]} | | | | | |")
            continue
        cfg, (wall, cpu) = steppers[method][0], medians[method]
        print(f"| {method} | {cfg['arch']} | {cfg['batch_size']} | {cfg['image_size']} | {wall * 1000:.0f} "
              f"| {cpu * 1000:.0f} | {cfg['batch_size'] / wall:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "workflow" / "config" / "smoke.yaml")
    parser.add_argument("--houghcl", help="JSON updates of the config's pretrain.houghcl section")
    parser.add_argument("--size", type=int, help="view size of (a); default: the config's image_size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=["a", "b"], help="skip part (a) or (b)")
    args = parser.parse_args()
    pretrain = yaml.safe_load(args.config.read_text())["pretrain"]
    if args.houghcl:
        pretrain["houghcl"] = {**pretrain.get("houghcl", {}), **json.loads(args.houghcl)}
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        image_list = Path(tmp) / "images.txt"
        # As many photos as the largest batch; each method's views of photo i depend only on (seed, i).
        batch = max(run_config(pretrain, m).get("batch_size", 0) for m in METHODS)
        image_list.write_text("".join(f"{p}\n" for p in sorted(COCO_TRAIN.glob("*.jpg"))[:batch]))
        if args.skip != "a":
            houghcl_vs_densecl(pretrain, image_list, args)
        if args.skip != "b":
            throughput(pretrain, image_list, args)


if __name__ == "__main__":
    main()
