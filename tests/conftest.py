"""Fixtures shared by several test files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prepare.edges import train as edges_train

BSDS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bsds500" / "BSDS500"


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
    if not (BSDS / "data").is_dir():
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
