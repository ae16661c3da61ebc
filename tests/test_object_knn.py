"""O-KNN and disturbed O-KNN (analysis/object_knn.py, D3SSL Sec. 5.3) on hand-made COCO-layout fixtures."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from analysis import object_knn
from analysis.object_knn import (
    ObjectKnnProtocol,
    disturb,
    keep_mask,
    knn_scores,
    measure_object_knn,
    partner_rows,
    resized_size,
    rows_per_group,
    topk_accuracy,
)
from core.errors import UserError

# Categories 2, 5, 9 are drawn in pure red, green, blue; 11 (val only) in white: colour encodes the class.
COLOURS = {2: (255, 0, 0), 5: (0, 255, 0), 9: (0, 0, 255), 11: (255, 255, 255)}
# Images are 384 x 128 and resized (image_size 64) to 192 x 64, i.e. 6 x 2 C5 cells of 32 px. Objects sit in
# two slots, whole cells apart from each other and from the top-left cell, so a stride-32 average pool
# keeps each object's colour, also after the background is swapped.
SLOTS = {"A": (64, 64, 64, 64), "B": (384 - 64, 0, 64, 64)}  # x, y, w, h in original pixels (cells (1, 1), (5, 0))
TINY = (80, 80, 12, 12)  # 6 x 6 px after resizing: below min_box_size (8)
# (slot or box, category, iscrowd) per image.
TRAIN = [
    [("A", 2, 0), ("B", 5, 0)],
    [("A", 2, 0), ("B", 2, 0)],
    [("A", 5, 0), ("B", 9, 0)],
    [("A", 2, 1), ("B", 5, 0)],
    [(TINY, 9, 0), ("B", 2, 0)],
]
VAL = [
    [("A", 9, 0), ("B", 2, 0)],
    [("A", 5, 0), ("B", 11, 0)],
    [("A", 2, 0), ("B", 5, 0)],
]
PROTOCOL = {"image_size": 64, "objects_per_image": 2, "max_val_objects": None, "k": 3, "temperature": 0.07,
            "min_box_size": 8, "batch_size": 2}


def grey(split: str, index: int) -> int:
    """Each image's own background grey level, unique across both splits."""
    return 10 + 6 * index + (30 if split == "val" else 0)


def write_coco(root: Path) -> Path:
    """A COCO-2017 root with TRAIN and VAL drawn as PNGs (lossless) and their instances files."""
    categories = [{"id": cat, "name": f"c{cat}", "supercategory": "x"} for cat in COLOURS]
    ann_id = 100
    for split, images in (("train", TRAIN), ("val", VAL)):
        (root / f"{split}2017").mkdir(parents=True)
        records, annotations = [], []
        for index, objects in enumerate(images):
            pixels = np.full((128, 384, 3), grey(split, index), np.uint8)
            image_id = 1000 + index
            for box, cat, crowd in objects:
                x, y, w, h = SLOTS[box] if isinstance(box, str) else box
                pixels[y:y + h, x:x + w] = COLOURS[cat]
                # Descending ids: the annotation order differs from the image order.
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat,
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
                ann_id -= 1
            name = f"{image_id:012d}.png"
            Image.fromarray(pixels).save(root / f"{split}2017" / name)
            records.append({"id": image_id, "file_name": name, "width": 384, "height": 128})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(
            json.dumps({"images": records[::-1], "annotations": annotations, "categories": categories}))
    return root


def pool32(images: torch.Tensor) -> torch.Tensor:
    """An identity-like 'C5': the RGB image averaged over 32 x 32 cells (stride 32)."""
    return F.avg_pool2d(images, 32)


def protocol(**changes: object) -> ObjectKnnProtocol:
    return ObjectKnnProtocol(**{**PROTOCOL, **changes})


def test_colour_coded_objects_are_all_classified_and_the_bank_is_balanced(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    calls: list[torch.Tensor] = []

    def spy(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.clone())
        return pool32(images)

    metrics = measure_object_knn(root, spy, protocol(), seed=0)
    # Eligible train objects: 2 + 2 + 2 + 1 (the crowd one skipped) + 1 (the tiny one skipped), all kept at
    # 2 per image; classes 2, 5, 9. Val: the class-11 object has no bank object and is left out.
    assert metrics["train_objects"] == 8 and metrics["classes"] == 3 and metrics["train_images"] == 5
    one_per_image = measure_object_knn(root, pool32, protocol(objects_per_image=1), seed=0)
    assert one_per_image["train_objects"] == 5 and one_per_image["train_images"] == 5
    assert metrics["val_objects"] == 5 and metrics["val_images"] == 3
    assert metrics["OKNN_top1"] == 100.0 and metrics["OKNN_top5"] == 100.0
    # The kept boxes carry the colour through the swapped backgrounds.
    assert metrics["DOKNN_top1"] == 100.0 and metrics["DOKNN_top5"] == 100.0

    # Four passes (train clean, val clean, train disturbed, val disturbed), images in the same order.
    images = torch.cat(calls)
    train_images = metrics["train_images"]
    clean, disturbed = images[: len(images) // 2], images[len(images) // 2:]
    assert len(clean) == train_images + metrics["val_images"]
    assert clean.shape[-2:] == (64, 192)  # resized so the short side is image_size
    corner = lambda batch: torch.round(batch[:, 0, 0, 0] * 255).int().tolist()  # noqa: E731
    for rows, split in ((slice(0, train_images), "train"), (slice(train_images, None), "val")):
        greys = {grey(split, index) for index in range(len(TRAIN if split == "train" else VAL))}
        own, swapped = corner(clean[rows]), corner(disturbed[rows])
        # Backgrounds come from another image of the same split (memory and query side alike).
        assert set(own) <= greys and set(swapped) <= greys
        assert all(a != b for a, b in zip(own, swapped, strict=True))


def test_different_seeds_draw_other_banks(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    banks = {tuple(object_knn.select_objects(root, protocol(objects_per_image=1), seed)[0].boxes[:, 0].tolist())
             for seed in range(6)}
    assert len(banks) > 1
    again = object_knn.select_objects(root, protocol(), 3)[0]
    first = object_knn.select_objects(root, protocol(), 3)[0]
    np.testing.assert_array_equal(again.boxes, first.boxes)
    np.testing.assert_array_equal(again.labels, first.labels)


def test_features_saved_in_chunks_equal_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_coco(tmp_path / "coco")
    bank, _, _ = object_knn.select_objects(root, protocol(), 0)
    whole = object_knn.object_features(bank, pool32, 64, 2)
    monkeypatch.setattr(object_knn, "_CHUNK", 2)
    chunked = object_knn.resumable_features(bank, pool32, protocol(), None, tmp_path / "work", "train_clean")
    torch.testing.assert_close(chunked, whole)
    assert len(list((tmp_path / "work").glob("train_clean_*.pt"))) == math.ceil(len(np.unique(bank.image)) / 2)


def test_max_val_objects_samples_the_val_objects(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    _, val, classes = object_knn.select_objects(root, protocol(max_val_objects=3), 0)
    assert len(val.labels) == 3 and classes == 4


def test_weighted_knn_vote_by_hand() -> None:
    angles = torch.tensor([0.0, math.acos(0.8), math.acos(0.6), math.pi / 2, math.pi, math.acos(0.28)],
                          dtype=torch.float64)
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    bank_labels = torch.tensor([0, 1, 1, 2, 0, 2])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).double()
    # k = 3 nearest of (1, 0): cosines 1 (class 0), 0.8 and 0.6 (class 1).
    sharp = knn_scores(bank, bank_labels, queries, k=3, temperature=0.1, num_classes=3)
    expected = torch.tensor([math.exp(10), math.exp(8) + math.exp(6), 0.0]).double()
    torch.testing.assert_close(sharp[0], expected)
    # The closest neighbour outweighs two farther ones (a majority vote would say class 1) ...
    assert topk_accuracy(sharp, torch.tensor([0, 2])) == {1: 50.0, 5: 50.0}  # class 2 got no vote: never a hit
    # ... unless the temperature flattens the weights.
    flat = knn_scores(bank, bank_labels, queries, k=3, temperature=10.0, num_classes=3)
    torch.testing.assert_close(flat[0], torch.tensor([math.exp(0.1), math.exp(0.08) + math.exp(0.06), 0.0]).double())
    assert topk_accuracy(flat, torch.tensor([1, 0])) == {1: 50.0, 5: 100.0}
    with pytest.raises(UserError, match="exceeds the 6 objects"):
        knn_scores(bank, bank_labels, queries, k=7, temperature=0.1, num_classes=3)


def test_rows_per_group_take_at_most_n_from_each_image() -> None:
    images = np.array([0] * 5 + [1] * 3 + [3] * 1)  # the image row of each object
    rows = rows_per_group(images, 2, np.random.default_rng(0))
    assert np.bincount(images[rows], minlength=4).tolist() == [2, 2, 0, 1]
    assert len(set(rows.tolist())) == len(rows) and (np.diff(rows) > 0).all()
    draws = {tuple(rows_per_group(images, 2, np.random.default_rng(seed)).tolist()) for seed in range(10)}
    assert len(draws) > 1  # a random sample, not the first rows
    assert rows_per_group(images, 10, np.random.default_rng(0)).tolist() == list(range(9))


def test_disturb_keeps_box_pixels_and_takes_the_rest_from_the_other_image() -> None:
    generator = torch.Generator().manual_seed(0)
    image, other = torch.rand(3, 8, 10, generator=generator), torch.rand(3, 8, 10, generator=generator)
    boxes = torch.tensor([[1.5, 2.0, 4.0, 5.2], [8.0, 0.0, 8.5, 1.0]], dtype=torch.float64)
    inside = torch.zeros(8, 10, dtype=torch.bool)
    inside[2:6, 1:4] = True  # x 1.5..4 touches columns 1-3, y 2..5.2 rows 2-5
    inside[0, 8] = True
    assert torch.equal(keep_mask(boxes, 8, 10), inside)
    mixed = disturb(image, other, boxes)
    assert torch.equal(mixed[:, inside], image[:, inside])
    assert torch.equal(mixed[:, ~inside], other[:, ~inside])


def test_partner_rows_are_other_images_drawn_reproducibly() -> None:
    images = np.array([4, 0, 4, 2, 7])
    partners = partner_rows(images, 8, np.random.default_rng(0))
    assert sorted(partners) == [0, 2, 4, 7]
    assert all(0 <= other < 8 and other != row for row, other in partners.items())
    assert partners == partner_rows(images, 8, np.random.default_rng(0))
    with pytest.raises(UserError, match="at least 2 images"):
        partner_rows(np.array([0]), 1, np.random.default_rng(0))


def test_resized_size_sets_the_short_side() -> None:
    assert resized_size(640, 427, 160) == (240, 160)
    assert resized_size(333, 500, 224) == (224, 336)


def test_missing_annotations_name_the_layout(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    (root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(UserError, match=r"instances_val2017\.json.*layout"):
        measure_object_knn(root, pool32, protocol(), seed=0)


def test_no_eligible_object_and_k_above_the_bank_are_refused(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    with pytest.raises(UserError, match="no eligible train2017 object"):
        measure_object_knn(root, pool32, protocol(min_box_size=65), seed=0)
    with pytest.raises(UserError, match="k = 6 exceeds the 5 objects"):  # one object of each of 5 images
        measure_object_knn(root, pool32, protocol(k=6, objects_per_image=1), seed=0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"temperature": 0}, "temperature must be a positive number"),
    ({"max_val_objects": 0}, "max_val_objects must be an integer >= 1"),
    ({"image_size": 16}, "image_size must be an integer >= 32"),
])
def test_bad_protocol_values_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ObjectKnnProtocol.from_json(json.dumps({**PROTOCOL, **changes}))


def test_protocol_keys_must_match_exactly() -> None:
    with pytest.raises(UserError, match="unknown protocol keys"):
        ObjectKnnProtocol.from_json(json.dumps({**PROTOCOL, "layer": "layer4"}))
    with pytest.raises(UserError, match="lacks"):
        ObjectKnnProtocol.from_json(json.dumps({key: v for key, v in PROTOCOL.items() if key != "k"}))


def test_cli_writes_metrics_and_resumes(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    parser = argparse.ArgumentParser()
    object_knn.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    argv = ["object-knn", "--data-root", str(root), "--backbone", "none", "--arch", "resnet18",
            "--protocol-json", json.dumps(PROTOCOL), "--seed", "0", "--out", str(out)]
    args = parser.parse_args(argv)
    args.func(args)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["probe"] == "object_knn" and summary["weights"] is None
    assert {"OKNN_top1", "OKNN_top5", "DOKNN_top1", "DOKNN_top5", "train_objects", "val_objects",
            "classes"} <= summary["metrics"].keys()
    assert sorted(path.name for path in (out / "work").glob("*.pt")) == [
        "train_clean_00000.pt", "train_disturbed_00000.pt", "val_clean_00000.pt", "val_disturbed_00000.pt"]
    args = parser.parse_args(argv)  # a rerun reads the saved features
    args.func(args)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == summary["metrics"]
    args = parser.parse_args([*argv[:-4], "--seed", "1", "--out", str(out)])
    with pytest.raises(UserError, match="different run"):
        args.func(args)
