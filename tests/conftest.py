"""Fixtures shared by several test files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import BSDS

from prepare.check_stores import check_stores
from prepare.edges import train as edges_train

# First the files that start Snakemake outside the prefork server (in process, or through cluster/dryrun.py's own
# interpreter): Snakemake's SLURM plugin asks the local cluster for its config when imported, and waits ~10 s once
# tools/run_tests.sh has stopped the cluster (when its own tests end, ~3 min in). Then the files whose tests take
# longest (~30-90 s each on 2 cores), longest first: pytest-xdist's `--dist loadfile` hands files to the workers
# in collection order, and started early they do not leave one worker running alone at the end.
FIRST_FILES = ("test_readme_commands.py", "test_gpu_plan.py",
               "test_pretrain.py", "test_ddp.py", "test_gpu_check.py", "test_workflow.py", "test_detection.py",
               "test_segmentation.py", "test_pretrain_preemption.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """FIRST_FILES first, the `slurm` tests last (see test_slurm.test_slurm_tests_run_last)."""
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    # Stable: keeps the order of the tests within each file.
    items.sort(key=lambda item: (item.get_closest_marker("slurm") is not None,
                                 rank.get(item.path.name, len(FIRST_FILES))))


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


@pytest.fixture(scope="session")
def prepared_stores(image_list: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """index.json of each prepare-stage store of `image_list`: real selective-search proposals, and 2 x 2 block
    region trees (the edge model needs BSDS500)."""
    return check_stores(image_list, tmp_path_factory.mktemp("prepared"))
