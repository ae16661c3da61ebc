"""The dataset builders of `prepare`: real COCO-mini and procedural data, COCO and VOC layouts, errors.

Expected values marked "by hand" come from reading COCO-mini's JSON, not from the code under test.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from shared_data import SHARED_DATASETS, needs_real_data

from core.errors import UserError
from prepare.__main__ import main
from prepare.coco import build_coco
from prepare.image_list import build_image_list, read_image_list
from prepare.layouts import start_build
from prepare.taxonomy import VOC_CLASSES
from prepare.voc import build_voc, voc_box, voc_palette

COCO_MINI = SHARED_DATASETS / "coco_mini"
PROCEDURAL_COUNTS = {"train2017": 8, "val2017": 2}  # the fewest that give every VOC list >= 2 images
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COCO and VOCdevkit built from the real COCO-mini, once per session."""
    root = tmp_path_factory.mktemp("real")
    build_coco(SHARED_DATASETS, root / "coco", seed=0, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    build_voc(root / "coco", root / "VOCdevkit")
    return root


@pytest.fixture(scope="session")
def procedural(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny procedural COCO + VOCdevkit, built through the command line."""
    root = tmp_path_factory.mktemp("procedural")
    main(["coco", "--source-root", str(root / "no-shared-data"), "--out", str(root / "coco"), "--seed", "3",
          "--procedural-train", "8", "--procedural-val", "2", "--procedural-size", "96"])
    main(["voc", "--coco-root", str(root / "coco"), "--out", str(root / "VOCdevkit")])
    return root


def _ids(path: Path) -> list[str]:
    return path.read_text().split()


def _xml_objects(path: Path) -> list[dict[str, Any]]:
    objects = []
    for obj in ET.parse(path).getroot().iter("object"):
        box = obj.find("bndbox")
        assert box is not None
        objects.append({
            "name": obj.findtext("name"), "pose": obj.findtext("pose"), "truncated": obj.findtext("truncated"),
            "difficult": int(obj.findtext("difficult") or -1),
            "box": tuple(int(box.findtext(tag) or -1) for tag in ("xmin", "ymin", "xmax", "ymax")),
        })
    return objects


def _polygon_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], height, width))).astype(bool)


def _detectron2_voc_loader() -> Callable[[Path, str], list[dict[str, Any]]] | None:
    """Detectron2's own VOC loader, when the project's compatibility shims (numpy/Pillow aliases) exist."""
    if importlib.util.find_spec("finetune.detection.compat") is None:
        return None
    importlib.import_module("finetune.detection.compat").install()
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES, load_voc_instances

    return lambda year_dir, split: load_voc_instances(str(year_dir), split, CLASS_NAMES)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[: 3 * 256] == voc_palette()
        return np.array(image)


# --- real COCO-mini ----------------------------------------------------------------------------------------------


@needs_real_data(COCO_MINI)
def test_real_coco_layout_links_and_manifest(real: Path) -> None:
    coco = real / "coco"
    manifest = json.loads((coco / "manifest.json").read_text())
    assert manifest["source"] == "coco_mini"
    for split, count in (("train2017", 80), ("val2017", 79)):  # by hand: COCO-mini's README
        names = sorted(p.name for p in (coco / split).iterdir())
        assert len(names) == count == manifest["splits"][split]["images"]
        assert manifest["splits"][split]["sha256"] == hashlib.sha256("\n".join(names).encode()).hexdigest()
        link = coco / split / names[0]
        assert link.is_symlink() and Path(link.readlink()) == (COCO_MINI / split / names[0]).resolve()
        for kind in ("instances", "person_keypoints"):
            rel = f"annotations/{kind}_{split}.json"
            assert (coco / rel).read_bytes() == (COCO_MINI / rel).read_bytes()
    assert not (coco / "annotations" / "captions_train2017.json").exists()


@needs_real_data(COCO_MINI)
def test_real_voc_xml_boxes_converted_by_hand(real: Path) -> None:
    # COCO image 535506 (480x640, train2017, VOC2007 trainval): person [120.46, 133.32, 212.31, 498.58]
    # -> (round(120.46)+1, round(133.32)+1, round(332.77), round(631.90)); bottle [106.07, 231.15, 22.33, 60.73];
    # its 14 books, cups, knives, ... are not VOC classes and are dropped.
    xml = real / "VOCdevkit" / "VOC2007" / "Annotations" / "000000535506.xml"
    root = ET.parse(xml).getroot()
    assert root.findtext("folder") == "VOC2007" and root.findtext("filename") == "000000535506.jpg"
    assert [root.findtext(f"size/{tag}") for tag in ("width", "height", "depth")] == ["480", "640", "3"]
    assert root.findtext("segmented") == "0"
    assert _xml_objects(xml) == [
        {"name": "person", "pose": "Unspecified", "truncated": "0", "difficult": 0, "box": (121, 134, 333, 632)},
        {"name": "bottle", "pose": "Unspecified", "truncated": "0", "difficult": 0, "box": (107, 232, 128, 292)},
    ]
    # Clamping and the xmax >= xmin guard, by hand.
    assert voc_box([0.0, 0.2, 640.0, 10.6], 640, 480) == (1, 1, 640, 11)
    assert voc_box([10.4, 5.0, 0.1, 0.0], 640, 480) == (11, 6, 11, 6)


@needs_real_data(COCO_MINI)
def test_real_voc_class_names_crowd_and_per_class_lists(real: Path) -> None:
    # COCO image 159269 (VOC2007 trainval), by hand: 11 chairs, 6 "dining table", 12 boats + 1 crowd boat,
    # 5 umbrellas (not a VOC class).
    year = real / "VOCdevkit" / "VOC2007"
    objects = _xml_objects(year / "Annotations" / "000000159269.xml")
    assert collections.Counter(obj["name"] for obj in objects) == {"chair": 11, "diningtable": 6, "boat": 13}
    assert [obj["name"] for obj in objects if obj["difficult"]] == ["boat"]
    main_sets = year / "ImageSets" / "Main"
    lines = {name: (main_sets / f"{name}_trainval.txt").read_text().splitlines() for name in ("boat", "person")}
    assert "000000159269  1" in lines["boat"] and "000000159269 -1" in lines["person"]
    assert len(lines["boat"]) == len(_ids(main_sets / "trainval.txt"))


@needs_real_data(COCO_MINI)
def test_real_segmentation_png(real: Path) -> None:
    # COCO image 433998 (train2017): people (VOC 15), a tv (VOC 20), a crowd of people (void), a glove and a ball
    # (not VOC classes, so background).
    coco = COCO(str(COCO_MINI / "annotations" / "instances_train2017.json"))
    label = _png(real / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "000000433998.png")
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[433998]))
    voc_anns = [a for a in anns if a["category_id"] in (1, 72)]
    masks = {a["id"]: coco.annToMask(a).astype(bool) for a in voc_anns}
    solid = [a for a in voc_anns if not a["iscrowd"]]
    smallest = min(solid, key=lambda a: a["area"])  # painted last: every pixel of it keeps its class
    assert smallest["category_id"] == 1 and np.all(label[masks[smallest["id"]]] == 15)
    tv = next(a for a in voc_anns if a["category_id"] == 72)  # the largest instance: visible where nothing covers it
    others = np.any([masks[a["id"]] for a in voc_anns if a is not tv], axis=0)
    assert np.all(label[masks[tv["id"]] & ~others] == 20)
    crowd = next(a for a in voc_anns if a["iscrowd"])
    solid_union = np.any([masks[a["id"]] for a in solid], axis=0)
    assert np.all(label[masks[crowd["id"]] & ~solid_union] == 255)
    assert np.all(label[~np.any(list(masks.values()), axis=0)] == 0)
    assert set(np.unique(label)) == {0, 15, 20, 255}


@needs_real_data(COCO_MINI)
def test_real_voc_splits_are_disjoint_and_follow_the_design(real: Path) -> None:
    voc = real / "VOCdevkit"
    lists = {path.relative_to(voc).as_posix(): _ids(path) for path in voc.glob("VOC20*/ImageSets/*/*.txt")}
    trainval07, trainval12 = (set(lists[f"{year}/ImageSets/Main/trainval.txt"]) for year in ("VOC2007", "VOC2012"))
    test07 = set(lists["VOC2007/ImageSets/Main/test.txt"])
    seg_train = lists["VOC2012/ImageSets/Segmentation/train.txt"]
    assert not trainval07 & trainval12 and not test07 & (trainval07 | trainval12)
    assert trainval07 | trainval12 == set(seg_train) and test07 == set(lists["VOC2012/ImageSets/Segmentation/val.txt"])
    assert sorted(trainval07) == sorted(seg_train)[0::2]  # even positions of COCO train sorted by id
    for year in ("VOC2007", "VOC2012"):
        train, val = (lists[f"{year}/ImageSets/Main/{split}.txt"] for split in ("train", "val"))
        assert not set(train) & set(val) and sorted(train + val) == lists[f"{year}/ImageSets/Main/trainval.txt"]
    assert {p.stem for p in (voc / "VOC2007" / "JPEGImages").iterdir()} == trainval07 | test07
    assert {p.stem for p in (voc / "VOC2012" / "JPEGImages").iterdir()} == set(seg_train) | test07
    assert (voc / "VOC2007" / "JPEGImages" / f"{min(test07)}.jpg").resolve().parent == (COCO_MINI / "val2017").resolve()
    # COCO images with a non-crowd VOC-class instance: 63 of 80 train, 64 of 79 val.
    counts = {key: value["images"] for key, value in json.loads((voc / "manifest.json").read_text())["splits"].items()}
    assert counts["VOC2007/Main/trainval"] == 32 and counts["VOC2012/Main/trainval"] == 31
    assert counts["VOC2007/Main/test"] == counts["VOC2012/Segmentation/val"] == 64
    load_voc = _detectron2_voc_loader()
    if load_voc is not None:
        dicts = load_voc(voc / "VOC2007", "test")
        assert len(dicts) == 64 and all(Path(d["file_name"]).is_file() for d in dicts)
        assert all(0 <= a["bbox"][0] < a["bbox"][2] <= d["width"] for d in dicts for a in d["annotations"])


@needs_real_data(COCO_MINI)
def test_image_list(real: Path, tmp_path: Path) -> None:
    out = tmp_path / "images.txt"
    extra = [COCO_MINI / "val2017_unannotated", tmp_path / "absent"]
    paths = build_image_list(real / "coco", ["train2017"], extra, out)
    assert len(paths) == 80 + 80 and paths == sorted(paths) and all(Path(p).is_absolute() for p in paths)
    assert read_image_list(out) == paths
    with pytest.raises(UserError, match="not found"):
        read_image_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        read_image_list(tmp_path / "empty.txt")
    (tmp_path / "no-images").mkdir()
    with pytest.raises(UserError, match="no-images"):
        build_image_list(tmp_path, ["no-images"], [], tmp_path / "none.txt")


# --- procedural --------------------------------------------------------------------------------------------------


def test_procedural_coco_is_consistent(procedural: Path) -> None:
    coco = procedural / "coco"
    manifest = json.loads((coco / "manifest.json").read_text())
    assert manifest["source"] == "procedural"
    assert {split: value["images"] for split, value in manifest["splits"].items()} == PROCEDURAL_COUNTS
    for split in PROCEDURAL_COUNTS:
        instances = json.loads((coco / "annotations" / f"instances_{split}.json").read_text())
        keypoints = json.loads((coco / "annotations" / f"person_keypoints_{split}.json").read_text())
        assert len(instances["categories"]) == 80 and instances["categories"][-1] == {
            "supercategory": "indoor", "id": 90, "name": "toothbrush"}
        person = keypoints["categories"][0]
        assert person["id"] == 1 and len(person["keypoints"]) == 17 and len(person["skeleton"]) == 19
        sizes = {img["id"]: (img["width"], img["height"]) for img in instances["images"]}
        for img in instances["images"]:
            with Image.open(coco / split / img["file_name"]) as image:
                assert image.format == "JPEG" and image.size == sizes[img["id"]]
        for ann in instances["annotations"]:
            width, height = sizes[ann["image_id"]]
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], height, width))
            assert ann["iscrowd"] == 0 and "keypoints" not in ann
            assert ann["area"] == mask_utils.area(rle) > 0 and ann["bbox"] == mask_utils.toBbox(rle).tolist()
        people = [a for a in instances["annotations"] if a["category_id"] == 1]
        assert [a["id"] for a in keypoints["annotations"]] == [a["id"] for a in people]
        for ann in keypoints["annotations"]:
            triples = np.array(ann["keypoints"]).reshape(17, 3)
            assert set(triples[:, 2]) <= {0, 1, 2} and ann["num_keypoints"] == int((triples[:, 2] > 0).sum())
            assert np.all(triples[triples[:, 2] == 0, :2] == 0)


def test_procedural_is_deterministic_and_rebuild_is_clean(procedural: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    build_coco(tmp_path / "none", out, seed=3, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    (out / "train2017" / "stale.jpg").write_bytes(b"left over")
    build_coco(tmp_path / "none", out, seed=3, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    assert not (out / "train2017" / "stale.jpg").exists()
    for rel in ("annotations/instances_train2017.json", "annotations/person_keypoints_val2017.json",
                "train2017/000000000001.jpg", "val2017/000000000009.jpg"):
        assert (out / rel).read_bytes() == (procedural / "coco" / rel).read_bytes()
    build_coco(tmp_path / "none", out, seed=4, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    first = "train2017/000000000001.jpg"
    assert (out / first).read_bytes() != (procedural / "coco" / first).read_bytes()


def test_procedural_voc_keeps_every_image(procedural: Path) -> None:
    voc = procedural / "VOCdevkit"
    instances = json.loads((procedural / "coco" / "annotations" / "instances_train2017.json").read_text())
    first = instances["images"][0]
    stem = Path(first["file_name"]).stem
    names = {1: "person", 3: "car", 72: "tvmonitor", 16: "bird", 44: "bottle", 18: "dog"}  # by hand
    anns = [a for a in instances["annotations"] if a["image_id"] == first["id"]]
    objects = _xml_objects(voc / "VOC2012" / "Annotations" / f"{stem}.xml")
    assert [obj["name"] for obj in objects] == [names[a["category_id"]] for a in anns]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["box"]
        assert 1 <= xmin <= xmax <= first["width"] and 1 <= ymin <= ymax <= first["height"]
    label = _png(voc / "VOC2012" / "SegmentationClass" / f"{stem}.png")
    assert set(np.unique(label)) <= {0} | {VOC_CLASSES.index(obj["name"]) + 1 for obj in objects}
    masks = [_polygon_mask(a, first["height"], first["width"]) for a in anns]
    smallest = min(range(len(anns)), key=lambda i: anns[i]["area"])  # painted last: all its pixels keep its class
    assert np.all(label[masks[smallest]] == VOC_CLASSES.index(names[anns[smallest]["category_id"]]) + 1)
    assert np.all(label[~np.any(masks, axis=0)] == 0)
    assert len(_ids(voc / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt")) == PROCEDURAL_COUNTS["train2017"]
    assert len(_ids(voc / "VOC2007" / "ImageSets" / "Main" / "test.txt")) == PROCEDURAL_COUNTS["val2017"]
    load_voc = _detectron2_voc_loader()
    if load_voc is not None:  # every list has >= 2 lines: np.loadtxt in Detectron2 cannot iterate a single one
        for year, split in (("VOC2007", "train"), ("VOC2007", "val"), ("VOC2012", "train"), ("VOC2012", "val")):
            assert len(load_voc(voc / year, split)) >= 2


def test_voc_crowd_region_is_difficult_and_void(procedural: Path, tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    shutil.copytree(procedural / "coco", coco)
    path = coco / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    image = data["images"][0]
    crowd = np.zeros((image["height"], image["width"]), np.uint8)
    crowd[10:30, 5:45] = 1  # a crowd of cows, in COCO's uncompressed (column-major run-length) RLE
    flat = crowd.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    data["annotations"].append({
        "segmentation": {"size": [image["height"], image["width"]], "counts": np.diff(bounds).tolist()},
        "area": 800.0, "iscrowd": 1, "image_id": image["id"], "bbox": [5.0, 10.0, 40.0, 20.0], "category_id": 21,
        "id": 10**9,
    })
    path.write_text(json.dumps(data))
    build_voc(coco, tmp_path / "VOCdevkit")
    stem = Path(image["file_name"]).stem
    year = tmp_path / "VOCdevkit" / "VOC2007"
    cows = [obj for obj in _xml_objects(year / "Annotations" / f"{stem}.xml") if obj["name"] == "cow"]
    assert cows == [{"name": "cow", "pose": "Unspecified", "truncated": "0", "difficult": 1, "box": (6, 11, 45, 30)}]
    assert f"{stem}  0" in (year / "ImageSets" / "Main" / "cow_test.txt").read_text().splitlines()
    label = _png(tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{stem}.png")
    objects = [_polygon_mask(a, *crowd.shape) for a in data["annotations"]
               if a["image_id"] == image["id"] and not a["iscrowd"]]
    void = crowd.astype(bool) & ~np.any(objects, axis=0)
    assert void.any() and np.all(label[void] == 255)


# --- errors ------------------------------------------------------------------------------------------------------


def _copy_as_source(procedural: Path, tmp_path: Path) -> Path:
    """A writable COCO-mini-like source folder holding a copy of the procedural COCO root."""
    source = tmp_path / "source"
    shutil.copytree(procedural / "coco", source / "coco_mini")
    return source


def test_missing_source_layout_names_the_expected_paths(procedural: Path, tmp_path: Path) -> None:
    source = _copy_as_source(procedural, tmp_path)
    (source / "coco_mini" / "annotations" / "person_keypoints_val2017.json").unlink()
    with pytest.raises(UserError, match="person_keypoints_val2017.json") as err:
        build_coco(source, tmp_path / "out", seed=0, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    assert str(source / "coco_mini" / "train2017/") in str(err.value)  # the whole expected layout is listed
    with pytest.raises(UserError, match="instances_train2017.json"):
        build_voc(tmp_path / "source", tmp_path / "VOCdevkit")


def test_corrupt_jpeg_is_named(procedural: Path, tmp_path: Path) -> None:
    source = _copy_as_source(procedural, tmp_path)
    bad = source / "coco_mini" / "val2017" / "000000000009.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg at all")
    with pytest.raises(UserError, match=f"corrupt image: {bad}"):
        build_coco(source, tmp_path / "out", seed=0, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    assert not (tmp_path / "out").exists()  # validation happens before anything is written


def test_size_mismatch_and_other_bad_inputs(procedural: Path, tmp_path: Path) -> None:
    source = _copy_as_source(procedural, tmp_path)
    path = source / "coco_mini" / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["images"][0]["width"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="000000000001.jpg is .* but .* says"):
        build_coco(source, tmp_path / "out", seed=0, procedural_counts=PROCEDURAL_COUNTS, procedural_size=96)
    previous = source / "coco_mini"  # a copy of a finished build, manifest included
    with pytest.raises(UserError, match="image size >= 64"):
        build_coco(tmp_path / "none", previous, seed=0, procedural_counts=PROCEDURAL_COUNTS, procedural_size=8)
    assert (previous / "manifest.json").is_file()  # bad settings are refused before the old build is touched
    build_coco(tmp_path / "none", tmp_path / "small", seed=0, procedural_counts={"train2017": 7, "val2017": 2},
               procedural_size=64)
    with pytest.raises(UserError, match="VOC2012/Main/val would hold fewer than 2 images"):
        build_voc(tmp_path / "small", tmp_path / "VOCdevkit")
    foreign = tmp_path / "foreign"
    (foreign / "keep.txt").parent.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="not made by"):
        start_build(foreign)
    assert (foreign / "keep.txt").exists()
