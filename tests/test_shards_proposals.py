"""Sharded outputs (split, resume, index, image-list hash) and selective-search proposals.

Filter expectations are hand-computed from SoCo's definitions; box geometry from crafted images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import SHARED_DATASETS, needs_real_data

from core.errors import UserError
from prepare.__main__ import main
from prepare.proposals import FILTERS, filter_boxes, selective_search
from prepare.shards import Shard, ShardedStore, image_list_hash, run_shard, shard_slice, write_index

COCO_VAL = SHARED_DATASETS / "coco_mini" / "val2017"


def _images(folder: Path, sizes: list[int]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, size in enumerate(sizes):
        path = folder / f"{number:012d}.png"
        Image.new("RGB", (size, size), (number * 20, 50, 90)).save(path)
        paths.append(str(path))
    return paths


def test_shard_slice_splits_contiguously_and_covers_every_image() -> None:
    paths = [f"img{i}.jpg" for i in range(10)]
    parts = [shard_slice(paths, i, 3) for i in range(3)]
    # linspace(0, 10, 4) = 0, 3.33, 6.67, 10 -> rounded bounds 0, 3, 7, 10
    assert [len(p) for p in parts] == [3, 4, 3]
    assert sum(parts, []) == paths
    with pytest.raises(UserError, match="--shard"):
        shard_slice(paths, 3, 3)


def test_image_list_hash_follows_names_sizes_and_order(tmp_path: Path) -> None:
    paths = _images(tmp_path / "a", [16, 24])
    moved = _images(tmp_path / "b", [16, 24])
    assert image_list_hash(paths) == image_list_hash(moved)  # same names and sizes, other root
    assert image_list_hash(paths) != image_list_hash(paths[::-1])
    Image.new("RGB", (40, 40)).save(paths[1])  # replaced image
    assert image_list_hash(paths) != image_list_hash(moved)


def test_run_shard_round_trips_ragged_records_and_resumes_after_a_kill(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", [8] * 7)
    out = tmp_path / "shard-00000-of-00001.npz"
    meta = {"image_list_hash": image_list_hash(paths), "tool": "test"}
    calls: list[str] = []

    def process(path: str) -> dict[str, np.ndarray]:
        calls.append(path)
        n = int(Path(path).stem)
        return {"boxes": np.full((n, 4), n, np.float32), "code": np.array(n % 3, np.uint8)}

    def killed_after_five(path: str) -> dict[str, np.ndarray]:
        if len(calls) == 5:
            raise KeyboardInterrupt  # the job is killed while processing the sixth image
        return process(path)

    with pytest.raises(KeyboardInterrupt):
        run_shard(paths, killed_after_five, out, meta, checkpoint_every=2)
    assert not out.exists()
    assert len(Shard(tmp_path / "shard-00000-of-00001.partial.npz")) == 4  # last checkpoint: 4 images
    calls.clear()
    run_shard(paths, process, out, meta, checkpoint_every=2)
    assert calls == paths[4:]  # only the images after the checkpoint are redone
    shard = Shard(out)
    assert shard.image_ids == [f"{i:012d}" for i in range(7)]
    record = shard.record("000000000003")
    assert record["boxes"].shape == (3, 4) and (record["boxes"] == 3).all() and record["code"] == 0
    assert shard.record("000000000000")["boxes"].shape == (0, 4)
    assert not (tmp_path / "shard-00000-of-00001.partial.npz").exists()


def test_partial_file_from_other_settings_is_discarded(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", [8] * 3)
    out = tmp_path / "s.npz"
    calls: list[str] = []

    def process(path: str) -> dict[str, np.ndarray]:
        calls.append(path)
        return {"x": np.zeros(2)}

    def killed_after_two(path: str) -> dict[str, np.ndarray]:
        if len(calls) == 2:
            raise KeyboardInterrupt
        return process(path)

    with pytest.raises(KeyboardInterrupt):
        run_shard(paths, killed_after_two, out, {"mode": "fast"}, checkpoint_every=1)
    calls.clear()
    run_shard(paths, process, out, {"mode": "quality"}, checkpoint_every=1)
    assert calls == paths  # nothing reused from the fast-mode partial file


def test_index_and_store_refuse_a_changed_image_list(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", [8, 8, 8])
    list_hash = image_list_hash(paths)
    files = []
    for index in range(2):
        out = tmp_path / "store" / f"shard-{index:05d}-of-00002.npz"
        meta = {"image_list_hash": list_hash, "shard": index, "shards": 2}
        run_shard(shard_slice(paths, index, 2), lambda p: {"v": np.array([len(p)])}, out, meta)
        files.append(str(out))
    index = write_index(tmp_path / "store" / "index.json", files, list_hash)
    assert index["images"] == 3 and [s["images"] for s in index["shards"]] == [2, 1]
    store = ShardedStore(tmp_path / "store" / "index.json", paths)
    assert store.image_ids() == ["000000000000", "000000000001", "000000000002"]
    assert store["000000000002"]["v"][0] == len(paths[2])
    Image.new("RGB", (9, 9)).save(paths[0])
    with pytest.raises(UserError, match="different image list"):
        ShardedStore(tmp_path / "store" / "index.json", paths)
    with pytest.raises(UserError, match="another image list"):
        write_index(tmp_path / "other.json", files, "0" * 64)


def _box(width: float, height: float) -> np.ndarray:
    """A box whose SoCo width and height (max - min of its pixel indices) are these: one pixel less than
    the pixel count x2 - x1."""
    return np.array([[0, 0, width + 1, height + 1]], np.float32)


def test_soco_filter_and_its_post_fallbacks_on_crafted_boxes() -> None:
    image_hw = (400, 400)
    kept = _box(160, 160)  # sqrt(160 * 160) / 400 = 0.4 in [0.3, 0.8]
    too_big = _box(360, 360)  # ratio 1 but relative size 0.9 > 0.8
    ratio_edge = _box(96, 32)  # w/h = 3 exactly, relative size 0.14 < 0.3
    too_long = _box(100, 32)  # w/h = 3.125 > 3
    too_small = _box(31, 50)  # w < 32
    count_32 = np.array([[0, 0, 32, 40]], np.float32)  # 32 pixels wide: SoCo's w = 31 < 32
    boxes, used = filter_boxes(np.concatenate([kept, too_big, too_long, too_small]), image_hw)
    assert FILTERS[used] == "ratio3size0308" and boxes.tolist() == kept.tolist()
    boxes, used = filter_boxes(np.concatenate([too_big, ratio_edge, too_long, too_small]), image_hw)
    assert FILTERS[used] == "ratio3" and boxes.tolist() == [too_big[0].tolist(), ratio_edge[0].tolist()]
    # The last fallback still requires w, h >= 32 (SoCo's filter_none): the small boxes go.
    boxes, used = filter_boxes(np.concatenate([too_long, too_small, count_32]), image_hw)
    assert FILTERS[used] == "none" and boxes.tolist() == too_long.tolist()
    # Nothing left: no box (pretraining takes the whole image).
    boxes, used = filter_boxes(np.concatenate([too_small, count_32]), image_hw)
    assert FILTERS[used] == "none" and boxes.shape == (0, 4)
    # Searched at half size, one searched pixel is 2 image pixels: a 66-pixel box has SoCo width 64.
    assert filter_boxes(np.array([[0, 0, 33, 66]], np.float32), image_hw, pixel=2.0)[0].shape == (0, 4)
    assert filter_boxes(np.array([[0, 0, 34, 66]], np.float32), image_hw, pixel=2.0)[0].shape == (1, 4)


def test_selective_search_boxes_come_back_in_original_coordinates() -> None:
    rgb = np.full((300, 400, 3), 30, np.uint8)
    rgb[100:220, 150:330] = (220, 40, 40)  # one object: x 150..330, y 100..220
    for max_side in (None, 160):
        boxes = selective_search(rgb, "fast", max_side)
        assert (boxes[:, 2] <= 400).all() and (boxes[:, 3] <= 300).all() and (boxes >= 0).all()
        target = np.array([150, 100, 330, 220], np.float32)
        inter_w = np.clip(np.minimum(boxes[:, 2], target[2]) - np.maximum(boxes[:, 0], target[0]), 0, None)
        inter_h = np.clip(np.minimum(boxes[:, 3], target[3]) - np.maximum(boxes[:, 1], target[1]), 0, None)
        inter = inter_w * inter_h
        union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 180 * 120 - inter
        assert (inter / union).max() > 0.9, max_side


@needs_real_data(COCO_VAL)
def test_proposals_cli_on_real_coco_images(tmp_path: Path) -> None:
    paths = sorted(str(p) for p in COCO_VAL.glob("*.jpg"))[:3]
    image_list = tmp_path / "images.txt"
    image_list.write_text("".join(f"{p}\n" for p in paths))
    shards = [tmp_path / f"shard-{i:05d}-of-00002.npz" for i in range(2)]
    for index, out in enumerate(shards):
        main(["proposals", "--images", str(image_list), "--shard", str(index), "--shards", "2",
              "--max-side", "160", "--out", str(out)])
    main(["shard-index", "--images", str(image_list), "--out", str(tmp_path / "index.json"), *map(str, shards)])
    store = ShardedStore(tmp_path / "index.json", paths)
    for path in paths:
        record = store[Path(path).stem]
        width, height = Image.open(path).size
        boxes = record["boxes"]
        assert len(boxes) > 0 and record["filter"] < len(FILTERS)
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        if FILTERS[int(record["filter"])] == "ratio3size0308":
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            assert (w >= 32).all() and (h >= 32).all() and (w / h <= 3 + 1e-6).all()
