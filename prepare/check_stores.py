"""Prepare-stage stores of an image list for the pretraining checks (the tests, `benchmarks/gpu_check.py`).

Real selective-search proposals (`python -m prepare proposals`), and as every image's region tree one fixed
hierarchy of 2 x 2 blocks: real region trees need the structured-edge model, trained on BSDS500, which such a
check may not have. A method's step costs the same on either tree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prepare.__main__ import main as prepare_main
from prepare.image_list import read_image_list
from prepare.shards import Record, image_list_hash, run_shard, write_index


def block_region_tree(height: int = 24, width: int = 32) -> Record:
    """A region-tree record (prepare/region_trees.py layout): 2 x 2 blocks of leaf regions 0 1 / 2 3;
    0 and 1 merge at 0.2 (node 4), 2 and 3 at 0.5 (node 5), both at 0.9 (root 6)."""
    labels = np.zeros((height, width), np.uint8)
    labels[:, width // 2:] += 1
    labels[height // 2:] += 2
    return {"labels": labels, "parents": np.array([4, 4, 5, 5, 6, 6, 6], np.int32),
            "altitudes": np.array([0, 0, 0, 0, 0.2, 0.5, 0.9], np.float32),
            "image_hw": np.array([2 * height, 2 * width], np.int32)}


def check_stores(image_list: str, out: Path) -> dict[str, str]:
    """index.json of each store (by `runs.METHOD_PREPARED` kind) of `image_list`, built in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    prepare_main(["proposals", "--images", image_list, "--shard", "0", "--shards", "1",
                  "--out", str(out / "proposals.npz")])
    prepare_main(["shard-index", "--images", image_list, "--out", str(out / "proposals.json"),
                  str(out / "proposals.npz")])
    paths = read_image_list(image_list)
    run_shard(paths, lambda path: block_region_tree(), out / "trees.npz",
              {"kind": "2 x 2 block region trees", "image_list_hash": image_list_hash(paths)})
    write_index(out / "trees.json", [str(out / "trees.npz")], image_list_hash(paths))
    return {"proposals": str(out / "proposals.json"), "region_trees": str(out / "trees.json")}
