"""`python -m prepare edge-model`: train a structured-edge forest on BSDS500 and write OpenCV's model.yml.gz.

Dollár & Zitnick's settings by default (8 trees, 4 evaluated per location, 5e5 positive + 5e5
negative samples per tree; see `prepare.edges.options`). Their edgesTrain.m reads images/train only;
the default here is train + val, the 300 labelled non-test images (`--splits train` for the former).

Each finished tree is saved to `<out>.trees/tree_NNN.npz`; a rerun reuses the trees trained with
the same data and settings and trains only the missing ones (tree i depends on (seed, i) only, so
a resumed forest equals an uninterrupted one, and `--trees 8` after `--trees 2` adds 6 trees).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.errors import UserError
from core.io import atomic_path
from prepare.edges.bsds import BsdsImage, list_images
from prepare.edges.forest import DEFAULT_PARAMS, Tree, TreeParams, merge_trees, train_tree
from prepare.edges.opencv_model import OpenCVForest, model_suffix, write_model
from prepare.edges.options import SEOptions
from prepare.edges.samples import collect

FRACTION_FEATURES = 0.25  # edgesTrain's fracFtrs: each tree sees a random quarter of the feature ids
DEFAULT_SAMPLES = 1_000_000  # edgesTrain's nPos + nNeg (5e5 each)
SIDECAR_FORMAT = 1


def sidecar_dir(out: Path) -> Path:
    return out.with_name(out.name + ".trees")


def _fingerprint(options: SEOptions, params: TreeParams, images: Sequence[BsdsImage], samples: int, seed: int,
                 index: int) -> str:
    features = {k: v for k, v in options.as_dict().items() if k not in ("numberOfTrees", "numberOfTreesToEvaluate")}
    names = hashlib.sha256("\n".join(item.name for item in images).encode()).hexdigest()
    return json.dumps({"format": SIDECAR_FORMAT, "features": features, "params": dataclasses.asdict(params),
                       "fraction": FRACTION_FEATURES, "images": names, "samples": samples, "seed": seed,
                       "tree": index}, sort_keys=True)


def _load_finished(path: Path, fingerprint: str) -> Tree | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != fingerprint:
                print(f"{path}: trained with other data or settings; retraining it")
                return None
            return Tree.from_npz(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        print(f"{path}: unreadable; retraining it")
        return None


def train_one_tree(images: Sequence[BsdsImage], options: SEOptions, samples: int, seed: int, index: int,
                   params: TreeParams = DEFAULT_PARAMS, progress: bool = True) -> tuple[Tree, dict[str, float]]:
    """Tree `index` of the forest: its data, feature subset and splits depend on (seed, index) only."""
    rng = np.random.default_rng([seed, index])
    feature_ids = np.sort(rng.choice(options.n_features, round(options.n_features * FRACTION_FEATURES),
                                     replace=False)).astype(np.int64)
    n_pos = samples // 2
    start = time.perf_counter()
    with tqdm(total=len(images), desc=f"tree {index}: sampling", unit="img", disable=not progress,
              leave=False, mininterval=2.0) as bar:
        features, labels = collect(images, feature_ids, options, n_pos, samples - n_pos, rng, bar.update)
    collected = time.perf_counter()
    with tqdm(total=labels.shape[0], desc=f"tree {index}: growing", unit="sample", disable=not progress,
              leave=False, mininterval=2.0) as bar:
        tree = train_tree(features, labels, feature_ids, rng, params, bar.update)
    timing = {"samples": float(labels.shape[0]), "sampling_s": collected - start,
              "growing_s": time.perf_counter() - collected}
    return tree, timing


def train_forest(bsds_root: str | Path, out: str | Path, splits: Sequence[str] = ("train", "val"), trees: int = 8,
                 samples_per_tree: int = DEFAULT_SAMPLES, seed: int = 1, max_images: int | None = None,
                 trees_eval: int = 4, params: TreeParams = DEFAULT_PARAMS, progress: bool = True) -> OpenCVForest:
    """Train (or resume) the forest and write it to `out` in OpenCV's format; return it.

    `trees_eval` (trees evaluated per location, capped at `trees` as edgesTrain does) only enters
    the model's options: changing it reuses the trained trees.
    """
    if min(trees, trees_eval) < 1 or samples_per_tree < 2 or (max_images is not None and max_images < 1):
        raise UserError("--trees, --trees-eval and --max-images must be >= 1 and --samples-per-tree >= 2.")
    out = Path(out)
    model_suffix(out)  # fail now, not after hours of training
    images = list_images(bsds_root, list(splits))[:max_images]
    options = SEOptions(numberOfTrees=trees, numberOfTreesToEvaluate=min(trees_eval, trees))
    finished = []
    for index in range(trees):
        path = sidecar_dir(out) / f"tree_{index:03d}.npz"
        fingerprint = _fingerprint(options, params, images, samples_per_tree, seed, index)
        tree = _load_finished(path, fingerprint)
        if tree is None:
            tree, timing = train_one_tree(images, options, samples_per_tree, seed, index, params, progress)
            with atomic_path(path) as tmp, tmp.open("wb") as handle:
                tree.save(handle, fingerprint=np.array(fingerprint), **{k: np.array(v) for k, v in timing.items()})
            print(f"tree {index + 1}/{trees}: {int(timing['samples'])} samples from {len(images)} images, "
                  f"sampled in {timing['sampling_s']:.1f} s, grown in {timing['growing_s']:.1f} s "
                  f"({len(tree.childs)} nodes, depth {int(tree.depths.max())})")
        else:
            print(f"tree {index + 1}/{trees}: reusing {path}")
        finished.append(tree)
    forest = merge_trees(finished, options)
    write_model(out, forest)
    return forest


def _run(args: argparse.Namespace) -> None:
    train_forest(args.bsds_root, args.out, args.splits, args.trees, args.samples_per_tree, args.seed,
                 args.max_images, args.trees_eval)
    print(f"structured-edge model written to {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("edge-model", help="train the structured-edge forest on BSDS500",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bsds-root", type=Path, required=True,
                        help="the BSDS500 folder holding data/{images,groundTruth}/{train,val,test}")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="BSDS splits to train on")
    parser.add_argument("--trees", type=int, default=8, help="trees in the forest")
    parser.add_argument("--trees-eval", type=int, default=4,
                        help="trees evaluated per location (capped at --trees; inference only, trees are reused)")
    parser.add_argument("--samples-per-tree", type=int, default=DEFAULT_SAMPLES,
                        help="training patches per tree, half positive, half negative")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="model file to write, e.g. model.yml.gz")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images (smoke runs)")
    parser.set_defaults(func=_run)
