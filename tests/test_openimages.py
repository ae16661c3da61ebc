"""OpenImages readers, the OpenImages-layout smoke build, the OpenImage-MINI selection, mini-COCO and Table 2.

Expected values marked "by hand" come from reading COCO-mini's JSON or from the crafted inputs, not from
the code under test.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO
from shared_data import SHARED_DATASETS, needs_real_data

from analysis import table2
from core.errors import UserError
from prepare import coco_subset, openimages, openimages_mini
from prepare.openimages import (
    BOX_COLUMNS,
    build_openimages,
    image_id,
    meta_files,
    read_boxes,
    read_class_descriptions,
)
from prepare.openimages_mini import build_openimages_mini

COCO_MINI = SHARED_DATASETS / "coco_mini"
META = SHARED_DATASETS / "openimages_meta"
CLASSES = META / "masumbhai" / "OID" / "csv_folder" / "class-descriptions-boxable.csv"
MAPPING = META / "coco80_to_openimages_joined.csv"
TRAIN_JSON = COCO_MINI / "annotations" / "instances_train2017.json"
VAL_JSON = COCO_MINI / "annotations" / "instances_val2017.json"
pytestmark = needs_real_data(COCO_MINI, META)
PERSON, DOG = "/m/01g317", "/m/0bt9lr"  # COCO person, dog (mapping rows 0 and 16)
TREE, BUILDING = "/m/07j7r", "/m/0cgh4"  # not COCO classes


def _cli(module: ModuleType, argv: list[str]) -> None:
    """Run a subcommand through its own register(), as `python -m prepare/analysis` will."""
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def _row(image: str, label: str, group_of: int = 0, box: tuple[float, ...] = (0.1, 0.5, 0.2, 0.6)) -> dict:
    return {"ImageID": image, "Source": "xclick", "LabelName": label, "Confidence": 1,
            **dict(zip(("XMin", "XMax", "YMin", "YMax"), box, strict=True)), "IsOccluded": 0, "IsTruncated": 0,
            "IsGroupOf": group_of, "IsDepiction": 0, "IsInside": 0}


def _coco_reference(path: Path, objects: list[tuple[int, int, int]], n_images: int) -> Path:
    """A COCO instances file with COCO-mini's 80 categories and the given (image, category, iscrowd) objects."""
    categories = json.loads(TRAIN_JSON.read_text())["categories"]
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(n_images)], "categories": categories,
        "annotations": [{"id": k, "image_id": i, "category_id": c, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}
                        for k, (i, c, crowd) in enumerate(objects)],
    }))
    return path


def _mid_caps(coco_json: Path) -> dict[str, int]:
    """Per-/m/-id caps computed here: mapping row i is the i-th category by id."""
    data = json.loads(coco_json.read_text())
    mapping = pd.read_csv(MAPPING, dtype=str, keep_default_na=False)
    ids = sorted(c["id"] for c in data["categories"])
    counts = collections.Counter(a["category_id"] for a in data["annotations"])
    return {mid: counts[cat] for cat, mid in zip(ids, mapping["oid_label_mid"], strict=True) if mid}


@pytest.fixture(scope="module")
def oi_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COCO-mini val2017 in the OpenImages layout, built through the command line."""
    out = tmp_path_factory.mktemp("oi") / "openimages"
    _cli(openimages, ["openimages", "--coco-root", str(COCO_MINI), "--split", "val2017", "--meta", str(META),
                      "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def mixed_boxes(oi_val: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real COCO-mini val boxes plus crafted Tree/Building boxes: on 10 real images, and 3 images without
    any COCO-class box."""
    boxes = pd.read_csv(oi_val / "train-annotations-bbox.csv", dtype={"ImageID": str})
    extra = [_row(image, TREE) for image in sorted(boxes["ImageID"].unique())[:10]]
    extra += [_row(f"ffffffffffff000{k}", label) for k in range(3) for label in (TREE, BUILDING)]
    path = tmp_path_factory.mktemp("mixed") / "train-annotations-bbox.csv"
    pd.concat([boxes, pd.DataFrame(extra)]).to_csv(path, index=False)
    return path


def test_smoke_builder_schema_links_and_boxes(oi_val: Path) -> None:
    boxes = pd.read_csv(oi_val / "train-annotations-bbox.csv", dtype={"ImageID": str})
    assert tuple(boxes.columns) == BOX_COLUMNS
    assert (boxes["Source"] == "xclick").all() and (boxes["Confidence"] == 1).all()
    # By hand: COCO val 624 instances, 13 of unmapped classes (remote 6, parking meter 3, toothbrush 2, ...).
    manifest = json.loads((oi_val / "manifest.json").read_text())
    assert manifest["dropped_boxes_of_unmapped_classes"] == {
        "frisbee": 1, "hair drier": 1, "parking meter": 3, "remote": 6, "toothbrush": 2}
    assert len(boxes) == 624 - 13 and boxes["IsGroupOf"].sum() == 5  # 5 crowd annotations
    classes = oi_val / "class-descriptions-boxable.csv"
    assert not classes.is_symlink() and classes.read_bytes() == CLASSES.read_bytes()
    photos = sorted((oi_val / "train").iterdir())
    assert len(photos) == 79 and all(len(p.stem) == 16 and int(p.stem, 16) >= 0 for p in photos)
    # By hand: 000000397133.jpg (640x427): bottle [217.62, 240.54, 38.99, 57.75], dining table [1.0, 240.24,
    # 346.63, 186.76] -> XMin 217.62/640 = 0.34003125, XMax 256.61/640 = 0.400953125, YMin 240.54/427,
    # YMax 298.29/427; the table reaches the bottom: YMax = 427.0/427 = 1.
    assert image_id("000000397133.jpg") == "8554a6b4283ce5b6"
    assert (oi_val / "train" / "8554a6b4283ce5b6.jpg").resolve() == (COCO_MINI / "val2017" / "000000397133.jpg"
                                                                     ).resolve()
    rows = boxes[boxes["ImageID"] == "8554a6b4283ce5b6"]
    bottle = rows[(rows["LabelName"] == "/m/04dr76w") & np.isclose(rows["XMin"], 0.34003125)]
    assert bottle[["XMax", "YMin", "YMax"]].to_numpy() == pytest.approx(np.array([[0.400953125, 240.54 / 427,
                                                                                 298.29 / 427]]))
    table = rows[rows["LabelName"] == "/m/0h8n5zk"]
    assert table[["XMin", "XMax", "YMin", "YMax"]].to_numpy() == pytest.approx(np.array([[1 / 640, 347.63 / 640,
                                                                                         240.24 / 427, 1.0]]))


def test_missing_columns_are_named_with_the_expected_header(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    pd.DataFrame([_row("a", PERSON)]).drop(columns=["LabelName", "IsGroupOf"]).to_csv(path, index=False)
    with pytest.raises(UserError, match="lacks column.s. LabelName, IsGroupOf; expected the header ImageID,Source,"
                                        "LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded"):
        read_boxes(path, ("ImageID", "LabelName", "XMin", "IsGroupOf"))
    (tmp_path / "classes.csv").write_text("/m/01g317\n/m/0bt9lr\n")
    with pytest.raises(UserError, match="lacks column.s. DisplayName; expected no header and the columns"):
        read_class_descriptions(tmp_path / "classes.csv")
    (tmp_path / "mapping.csv").write_text("coco80_index,coco_name\n0,person\n")
    with pytest.raises(UserError, match="oid_display_name, oid_label_mid"):
        build_openimages(COCO_MINI, "val2017", tmp_path / "mapping.csv", CLASSES, tmp_path / "out")
    with pytest.raises(UserError, match="must hold coco80_to_openimages_joined.csv and exactly one"):
        meta_files(tmp_path)
    pd.DataFrame([_row("a", PERSON, box=(0.1, 1.5, 0.2, 0.3))]).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"outside \[0, 1\]"):
        read_boxes(path, ("XMin", "XMax"))
    path.write_text("ImageID,LabelName,IsGroupOf\na,/m/01g317,\n")
    with pytest.raises(UserError, match="cannot parse .* near row 1"):
        read_boxes(path, ("ImageID", "LabelName", "IsGroupOf"))


def test_greedy_rejects_an_overflow_and_takes_a_later_fit(tmp_path: Path) -> None:
    # Caps by hand from the crafted COCO reference: person 3 (one crowd), dog 1, car 1; 4 images, one empty.
    coco = _coco_reference(tmp_path / "coco.json", [(0, 1, 0), (0, 1, 0), (1, 1, 1), (1, 18, 0), (2, 3, 0)], 4)
    seed = 7
    order = np.random.default_rng(seed).permutation(5)  # the documented visiting order of the sorted ImageIDs
    ids = [f"{i:016x}" for i in range(5)]
    a, b, c, d, e = (ids[i] for i in order)  # visited in this order
    rows = [_row(a, PERSON), _row(a, PERSON), _row(a, TREE),  # person 2/3: taken
            _row(b, PERSON), _row(b, PERSON),  # person would reach 4 > 3: rejected
            _row(c, TREE), _row(c, BUILDING),  # no COCO class: rejected
            _row(d, PERSON), _row(d, DOG, group_of=1), *[_row(d, TREE)] * 5,  # person 3/3, dog 1/1: taken
            _row(e, DOG)]  # dog would reach 2 > 1: rejected
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(boxes, index=False)  # row order must not matter
    out = tmp_path / "mini"
    _cli(openimages_mini, ["openimages-mini", "--boxes", str(boxes), "--classes", str(CLASSES), "--mapping",
                           str(MAPPING), "--coco-annotations", str(coco), "--seed", str(seed), "--out-dir", str(out)])
    assert (out / "image_ids.txt").read_text().split() == sorted([a, d])
    stats = json.loads((out / "stats.json").read_text())
    counts = {row["mid"]: (row["selected"], row["cap"]) for row in stats["shared_classes"]}
    assert counts[PERSON] == (3, 3) and counts[DOG] == (1, 1) and counts["/m/0k4j"] == (0, 1)  # car
    assert stats["selection"]["rejected_without_coco_class"] == 1 and stats["selection"]["rejected_over_cap"] == 2
    # By hand: a holds 3 objects of {person, tree}, d 7 of {person, dog, tree}.
    assert stats["openimage_mini"] == {"images": 2, "objects": 10, "objects_per_image": 5.0,
                                       "categories_per_image": 2.5, "categories": 3}
    # COCO: 5 objects on 4 images; categories per image 1, 2, 1, 0.
    assert {k: v for k, v in stats["coco"].items() if k != "annotations"} == {
        "images": 4, "objects": 5, "objects_per_image": 1.25, "categories_per_image": 1.0, "categories": 3}
    instances = json.loads((out / "instances_openimages_mini.json").read_text())
    assert [img["file_name"] for img in instances["images"]] == [f"{i}.jpg" for i in sorted([a, d])]
    assert {(cat["mid"], cat["name"], cat["coco_name"]) for cat in instances["categories"]} == {
        (PERSON, "Person", "person"), (DOG, "Dog", "dog"), (TREE, "Tree", None)}
    assert sum(ann["iscrowd"] for ann in instances["annotations"]) == 1 and "width" not in instances["images"][0]
    assert instances["annotations"][0]["bbox_normalized"] == pytest.approx([0.1, 0.2, 0.4, 0.4])


def test_real_boxes_meet_both_criteria_and_round_trip(oi_val: Path, mixed_boxes: Path, tmp_path: Path) -> None:
    stats = build_openimages_mini(mixed_boxes, CLASSES, MAPPING, TRAIN_JSON, 0, tmp_path, images_dir=oi_val / "train")
    caps = _mid_caps(TRAIN_JSON)
    boxes = pd.read_csv(mixed_boxes, dtype={"ImageID": str})
    selected = (tmp_path / "image_ids.txt").read_text().split()
    kept = boxes[boxes["ImageID"].isin(selected)]
    assert kept.groupby("ImageID")["LabelName"].apply(lambda labels: labels.isin(list(caps)).any()).all()  # criterion 1
    per_class = kept["LabelName"].value_counts()
    assert all(per_class.get(mid, 0) <= cap for mid, cap in caps.items())  # criterion 2
    assert not any(image.startswith("ffffffffffff") for image in selected)  # the Tree/Building-only images
    assert stats["openimage_mini"]["objects"] == len(kept) and stats["openimage_mini"]["images"] == len(selected)
    assert stats["coco"]["images"] == 80 and stats["coco"]["objects"] == 739  # COCO-mini's README
    assert 0 < len(selected) < 79 and stats["selection"]["rejected_over_cap"] > 0
    # Pixel boxes of the COCO JSON equal the original COCO val boxes (COCO-mini train caps, val photos).
    val = json.loads(VAL_JSON.read_text())
    original = {image_id(img["file_name"]): (img, sorted(tuple(a["bbox"]) for a in val["annotations"]
                                                         if a["image_id"] == img["id"])) for img in val["images"]}
    instances = json.loads((tmp_path / "instances_openimages_mini.json").read_text())
    assert len(COCO(str(tmp_path / "instances_openimages_mini.json")).getAnnIds()) == len(kept)  # loads as COCO
    for image in instances["images"]:
        coco_image, coco_boxes = original[image["file_name"][:-4]]
        assert (image["width"], image["height"]) == (coco_image["width"], coco_image["height"])
        ours = [ann["bbox"] for ann in instances["annotations"]
                if ann["image_id"] == image["id"] and instances["categories"][ann["category_id"] - 1]["coco_name"]]
        assert all(any(np.allclose(box, ref, atol=0.011) for ref in coco_boxes) for box in ours)


def test_same_seed_same_subset(mixed_boxes: Path, tmp_path: Path) -> None:
    def run(seed: int, out: Path) -> str:
        build_openimages_mini(mixed_boxes, CLASSES, MAPPING, TRAIN_JSON, seed, out)
        return (out / "image_ids.txt").read_text()

    first = run(0, tmp_path / "a")
    assert run(0, tmp_path / "b") == first
    for name in ("instances_openimages_mini.json", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any(run(seed, tmp_path / f"s{seed}") != first for seed in (1, 2, 3))


def test_coco_subset_sizes_and_annotations(tmp_path: Path) -> None:
    data = json.loads(TRAIN_JSON.read_text())
    per_image = collections.Counter(a["image_id"] for a in data["annotations"])
    for fraction, expected in ((0.05, 4), (0.1, 8)):  # by hand: 5 % and 10 % of 80 images
        out = tmp_path / f"mini_{fraction}.json"
        _cli(coco_subset, ["coco-subset", "--annotations", str(TRAIN_JSON), "--fraction", str(fraction),
                           "--seed", "3", "--out", str(out)])
        subset = json.loads(out.read_text())
        ids = {img["id"] for img in subset["images"]}
        assert len(ids) == expected and ids <= {img["id"] for img in data["images"]}
        assert {a["image_id"] for a in subset["annotations"]} <= ids
        assert len(subset["annotations"]) == sum(per_image[i] for i in ids)
        assert subset["categories"] == data["categories"] and subset["licenses"] == data["licenses"]
        assert subset["info"]["fraction"] == fraction and subset["info"]["seed"] == 3
    assert coco_subset.coco_subset(data, 0.1, 3)["images"] == json.loads((tmp_path / "mini_0.1.json").read_text()
                                                                         )["images"]
    assert len(coco_subset.coco_subset(data, 0.001, 0)["images"]) == 1
    with pytest.raises(UserError, match=r"in \(0, 1\]"):
        coco_subset.coco_subset(data, 0.0, 0)


def test_table2_has_the_paper_numbers(mixed_boxes: Path, tmp_path: Path) -> None:
    build_openimages_mini(mixed_boxes, CLASSES, MAPPING, TRAIN_JSON, 0, tmp_path)
    _cli(table2, ["table2", "--stats", str(tmp_path / "stats.json"), "--out-csv", str(tmp_path / "t2.csv"),
                  "--out-md", str(tmp_path / "t2.md")])
    frame = pd.read_csv(tmp_path / "t2.csv")
    paper = frame[frame["source"] == "paper"].set_index("dataset")
    assert paper.loc["OpenImage-MINI"].tolist() == ["paper", 146000, 9.1, 3.2, 569]
    assert paper.loc["COCO"].tolist() == ["paper", 118000, 7.4, 2.95, 80]
    assert frame[(frame["source"] == "ours") & (frame["dataset"] == "COCO")]["#Imgs"].item() == 80
    markdown = (tmp_path / "t2.md").read_text()
    rows = [line for line in markdown.splitlines() if "| paper" in line]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]
    assert cells == [["OpenImage-MINI", "paper", "146000", "9.10", "3.20", "569"],
                     ["COCO", "paper", "118000", "7.40", "2.95", "80"]]
    assert "Qiu et al.: De-coupling and De-positioning Dense Self-supervised Learning, Table 2" in markdown
    with pytest.raises(UserError, match="python -m prepare openimages-mini"):
        table2.write_table2(tmp_path / "none.json", tmp_path / "x.csv", tmp_path / "x.md")
