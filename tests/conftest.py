"""Fixtures shared by several test files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import BSDS

from prepare.__main__ import main as prepare_main
from prepare.edges import train as edges_train
from prepare.image_list import read_image_list
from prepare.shards import image_list_hash, run_shard, write_index

# The files whose tests take longest (~30-90 s each on 2 cores), longest first. pytest-xdist's `--dist loadfile`
# hands files to the workers in collection order: started first, they do not leave one worker running alone
# at the end of `make test` while the other idles.
LONG_FILES = ("test_pretrain.py", "test_ddp.py", "test_workflow.py", "test_detection.py", "test_segmentation.py",
              "test_pretrain_preemption.py",
              # Then the file that imports Snakemake's CLI in process, whose SLURM plugin asks the local cluster for
              # its config: tools/run_tests.sh stops the cluster once its own tests are done (~3 min in).
              "test_readme_commands.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files first, the `slurm` tests last (see test_slurm.test_slurm_tests_run_last)."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    # Stable: keeps the order of the tests within each file.
    items.sort(key=lambda item: (item.get_closest_marker("slurm") is not None,
                                 rank.get(item.path.name, len(LONG_FILES))))


def edge_model_cli(argv: list[str]) -> None:
    """`python -m prepare edge-model ...` in process."""
    parser = argparse.ArgumentParser()
    edges_train.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def train_edge_model(out: Path, trees: int, images: int, samples: int, seed: int = 1) -> None:
    edge_model_cli(["edge-model", "--bsds-root", str(BSDS), "--splits", "train", "--trees", str(trees),
                    "--samples-per-tree", str(samples), "--seed", str(seed), "--max-images", str(images),
                    "--out", str(out)])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A structured-edge model: 2 trees, 6000 samples each from 3 BSDS train images (~4 s)."""
    if not (BSDS / "data").is_dir() and not os.environ.get("CI"):  # CI runs it, and fails without the data
        pytest.skip(f"BSDS500 not found at {BSDS}")
    out = tmp_path_factory.mktemp("edges") / "model.yml.gz"
    train_edge_model(out, trees=2, images=3, samples=6000)
    return out


@pytest.fixture(scope="session")
def image_list(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image list of 5 random 64 x 48 JPEGs, for pretraining-loop tests."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    listing = folder / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    return str(listing)


def hand_made_region_tree(height: int = 24, width: int = 32) -> dict[str, np.ndarray]:
    """A region-tree record (prepare/region_trees.py layout): 2 x 2 blocks of leaf regions 0 1 / 2 3;
    0 and 1 merge at 0.2 (node 4), 2 and 3 at 0.5 (node 5), both at 0.9 (root 6)."""
    labels = np.zeros((height, width), np.uint8)
    labels[:, width // 2:] += 1
    labels[height // 2:] += 2
    return {"labels": labels, "parents": np.array([4, 4, 5, 5, 6, 6, 6], np.int32),
            "altitudes": np.array([0, 0, 0, 0, 0.2, 0.5, 0.9], np.float32),
            "image_hw": np.array([2 * height, 2 * width], np.int32)}


@pytest.fixture(scope="session")
def prepared_stores(image_list: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """index.json of each prepare-stage store of `image_list`: real selective-search proposals (the
    prepare CLI), and region trees from `hand_made_region_tree` (the edge model needs BSDS500)."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_main(["proposals", "--images", image_list, "--shard", "0", "--shards", "1",
                  "--out", str(out / "proposals.npz")])
    prepare_main(["shard-index", "--images", image_list, "--out", str(out / "proposals.json"),
                  str(out / "proposals.npz")])
    paths = read_image_list(image_list)
    run_shard(paths, lambda path: hand_made_region_tree(), out / "trees.npz",
              {"kind": "hand-made region trees", "image_list_hash": image_list_hash(paths)})
    write_index(out / "trees.json", [str(out / "trees.npz")], image_list_hash(paths))
    return {"proposals": str(out / "proposals.json"), "region_trees": str(out / "trees.json")}
