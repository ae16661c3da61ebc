"""`python -m prepare cityscapes`: official Cityscapes names and label images from COCO masks, read unchanged
by mmseg's CityscapesDataset. (The Cityscapes protocol run itself is in test_segmentation.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from core.errors import UserError
from finetune.segmentation.compat import ensure_mmcv_ops
from finetune.segmentation.datasets import check_cityscapes
from prepare.__main__ import main as prepare_main
from prepare.roots import check_dataset_root

H, W = 6, 8
# COCO category ids of the official file (prepare.taxonomy): person 1, bicycle 2, car 3, traffic light 10,
# stop sign 13, dog 18 (not mapped).
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"},
              {"id": 10, "name": "traffic light"}, {"id": 13, "name": "stop sign"}, {"id": 18, "name": "dog"}]


def _box(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[rows, cols] = 1
    return mask


def _ann(ann_id: int, image_id: int, category: int, mask: np.ndarray, crowd: int = 0) -> dict[str, object]:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": crowd, "area": int(mask.sum()),
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}, "bbox": [0, 0, 1, 1]}


# Image 42 (train): a car, a person on top of it, a lone person, a crowd of people, a traffic light, a dog.
ANNOTATIONS_42 = [
    _ann(1, 42, 3, _box(slice(2, 6), slice(3, 8))),  # car: 20 px, painted first (largest)
    _ann(2, 42, 1, _box(slice(0, 2), slice(0, 2))),  # person: 4 px
    _ann(3, 42, 1, _box(slice(3, 4), slice(4, 6))),  # person in front of the car: 2 px
    _ann(4, 42, 1, _box(slice(5, 6), slice(0, 3)), crowd=1),  # crowd of people: 3 px, no instance id
    _ann(5, 42, 10, _box(slice(0, 1), slice(7, 8))),  # traffic light: 1 px
    _ann(6, 42, 18, _box(slice(0, 1), slice(3, 5))),  # dog: not a Cityscapes class -> ignore
]
_ = 255
TRAIN_IDS_42 = [
    [11, 11, _, _, _, _, _, 6],
    [11, 11, _, _, _, _, _, _],
    [_, _, _, 13, 13, 13, 13, 13],
    [_, _, _, 13, 11, 11, 13, 13],
    [_, _, _, 13, 13, 13, 13, 13],
    [11, 11, 11, 13, 13, 13, 13, 13],
]
LABEL_IDS_42 = [[{11: 24, 13: 26, 6: 19, _: 0}[value] for value in row] for row in TRAIN_IDS_42]
# Instances in painting order (largest first): car 26000; the 4 px person 24000, then the 2 px one 24001.
INSTANCE_IDS_42 = [
    [24000, 24000, 0, 0, 0, 0, 0, 19],
    [24000, 24000, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 26000, 26000, 26000, 26000, 26000],
    [0, 0, 0, 26000, 24001, 24001, 26000, 26000],
    [0, 0, 0, 26000, 26000, 26000, 26000, 26000],
    [24, 24, 24, 26000, 26000, 26000, 26000, 26000],
]


def _write_coco(root: Path, val_annotations: list[dict[str, object]] | None = None,
                categories: list[dict[str, object]] = CATEGORIES) -> None:
    """train2017: 42 (above), 73 (a dog only: dropped), 139 (a bicycle); val2017: 7 (a stop sign)."""
    rng = np.random.default_rng(0)
    images = {"train2017": [42, 73, 139], "val2017": [7]}
    annotations = {
        "train2017": [*ANNOTATIONS_42, _ann(7, 73, 18, _box(slice(0, 3), slice(0, 3))),
                      _ann(8, 139, 2, _box(slice(1, 5), slice(2, 6)))],
        "val2017": [_ann(9, 7, 13, _box(slice(2, 4), slice(2, 4)))] if val_annotations is None else val_annotations,
    }
    (root / "annotations").mkdir(parents=True)
    for split, ids in images.items():
        (root / split).mkdir()
        for image_id in ids:
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / split / f"{image_id:012d}.jpg")
        data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": W, "height": H} for i in ids],
                "annotations": annotations[split], "categories": categories}
        for kind in ("instances", "person_keypoints"):
            (root / "annotations" / f"{kind}_{split}.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    _write_coco(root)
    return root


@pytest.fixture(scope="module")
def cityscapes(coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "cityscapes"
    prepare_main(["cityscapes", "--coco-root", str(coco_root), "--out", str(out)])
    return out


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_official_names_and_nothing_else(cityscapes: Path) -> None:
    files = sorted(str(path.relative_to(cityscapes)) for path in cityscapes.rglob("*") if path.is_file())
    train_a, train_b, val = "cocotraina_000000_000042", "cocotrainb_000000_000139", "cocoval_000000_000007"
    expected = [".built-by-prepare"]
    for split, city, stem in (("train", "cocotraina", train_a), ("train", "cocotrainb", train_b),
                              ("val", "cocoval", val)):
        expected += [f"gtFine/{split}/{city}/{stem}_gtFine_{kind}.png"
                     for kind in ("instanceIds", "labelIds", "labelTrainIds")]
        expected.append(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
    assert files == sorted([*expected, "manifest.json"])
    manifest = json.loads((cityscapes / "manifest.json").read_text())
    assert (manifest["splits"]["train"]["images"], manifest["splits"]["val"]["images"]) == (2, 1)


def test_label_images_by_hand(cityscapes: Path, coco_root: Path) -> None:
    gt = cityscapes / "gtFine" / "train" / "cocotraina"
    stem = "cocotraina_000000_000042"
    train_ids = Image.open(gt / f"{stem}_gtFine_labelTrainIds.png")
    instance_ids = Image.open(gt / f"{stem}_gtFine_instanceIds.png")
    assert (train_ids.mode, instance_ids.mode) == ("L", "I;16")
    assert _read(gt / f"{stem}_gtFine_labelTrainIds.png").tolist() == TRAIN_IDS_42
    assert _read(gt / f"{stem}_gtFine_labelIds.png").tolist() == LABEL_IDS_42
    assert _read(gt / f"{stem}_gtFine_instanceIds.png").tolist() == INSTANCE_IDS_42
    bicycle = _read(cityscapes / "gtFine/train/cocotrainb/cocotrainb_000000_000139_gtFine_labelTrainIds.png")
    assert (bicycle == 18).sum() == 16 and set(np.unique(bicycle)) == {18, 255}
    sign = _read(cityscapes / "gtFine/val/cocoval/cocoval_000000_000007_gtFine_labelTrainIds.png")
    assert (sign == 7).sum() == 4 and set(np.unique(sign)) == {7, 255}
    photo = cityscapes / "leftImg8bit" / "train" / "cocotraina" / f"{stem}_leftImg8bit.png"
    assert Image.open(photo).format == "PNG"
    assert np.array_equal(_read(photo), np.asarray(Image.open(coco_root / "train2017" / "000000000042.jpg")))


def test_mmseg_cityscapes_dataset_reads_it(cityscapes: Path) -> None:
    ensure_mmcv_ops()
    from mmseg.datasets import CityscapesDataset
    from mmseg.utils import register_all_modules

    register_all_modules()  # mmseg's LoadAnnotations, not mmcv's detection one
    assert check_cityscapes(cityscapes) == cityscapes
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    train = CityscapesDataset(data_root=str(cityscapes), pipeline=pipeline,
                              data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"))
    assert [Path(train.get_data_info(i)["seg_map_path"]).name for i in range(len(train))] == [
        "cocotraina_000000_000042_gtFine_labelTrainIds.png", "cocotrainb_000000_000139_gtFine_labelTrainIds.png"]
    sample = train[0]
    assert sample["img"].shape == (H, W, 3)
    assert sample["gt_seg_map"].tolist() == TRAIN_IDS_42
    assert train.metainfo["classes"][11] == "person" and train.metainfo["classes"][7] == "traffic sign"


def test_too_few_images_and_foreign_category_ids_are_refused(tmp_path: Path) -> None:
    _write_coco(tmp_path / "no_val", val_annotations=[])
    with pytest.raises(UserError, match=r"the Cityscapes val split needs at least 1 \(one per city\)"):
        prepare_main(["cityscapes", "--coco-root", str(tmp_path / "no_val"), "--out", str(tmp_path / "out")])
    _write_coco(tmp_path / "renumbered", categories=[{**cat, "name": "car"} if cat["id"] == 1 else cat
                                                     for cat in CATEGORIES])
    with pytest.raises(UserError, match=r"official COCO category ids for \['person'\]"):
        prepare_main(["cityscapes", "--coco-root", str(tmp_path / "renumbered"), "--out", str(tmp_path / "out")])


def test_missing_root_names_layout_and_builder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"leftImg8bit/\{train,val\}/<city>/<city>_<seq>_<frame>_leftImg8bit\.png.*"
                                        r"datasets\.cityscapes\.build: true"):
        check_dataset_root("cityscapes", str(tmp_path / "nowhere"))
