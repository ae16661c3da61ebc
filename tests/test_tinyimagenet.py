"""The single-object image set: Tiny-ImageNet layout (real 10-class subset or procedural), image lists
over class folders (globs) and the evenly spaced subset."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from shared_data import SHARED_DATASETS, needs_real_data

from core.errors import UserError
from core.io import read_json
from prepare.image_list import build_image_list, evenly_spaced, union_image_list
from prepare.imagenet import build_imagenet
from prepare.roots import check_image_set_root
from prepare.tinyimagenet import build_tinyimagenet

TINY = SHARED_DATASETS / "tiny_imagenet10" / "tiny-imagenet-200"


def test_evenly_spaced_by_hand() -> None:
    items = [str(i) for i in range(10)]
    assert evenly_spaced(items, 4) == ["0", "2", "5", "7"]  # indices 0, 10//4, 20//4, 30//4
    assert evenly_spaced(items, 20) == items


@needs_real_data(TINY)
def test_real_tiny_imagenet_keeps_the_classes_present(tmp_path: Path) -> None:
    out = tmp_path / "tiny-imagenet-200"
    manifest = build_tinyimagenet(SHARED_DATASETS, out, seed=0, train_count=4, val_count=2)
    wnids = (out / "wnids.txt").read_text().split()
    # By hand: the shared copy has 10 class folders of 500 images and 50 val images each.
    assert manifest["source"] == "tiny_imagenet10" and manifest["classes"] == 10 and len(wnids) == 10
    assert manifest["splits"]["train"]["images"] == 5000 and manifest["splits"]["val"]["images"] == 500
    rows = (out / "val" / "val_annotations.txt").read_text().splitlines()
    assert len(rows) == 500 and all(row.split("\t")[1] in wnids for row in rows)
    listed = build_image_list(out, ["train/*/images"], [], tmp_path / "images.txt", max_images=20)
    assert len(listed) == 20 and len({Path(p).name.split("_")[0] for p in listed}) == 10  # 2 per class


def test_procedural_tiny_imagenet_layout(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    manifest = build_tinyimagenet(tmp_path / "absent", out, seed=3, train_count=6, val_count=3)
    assert manifest["source"] == "procedural"
    train = sorted(out.glob("train/*/images/*.JPEG"))
    assert len(train) == 6 and all(Image.open(p).size == (64, 64) for p in train)
    wnids = set((out / "wnids.txt").read_text().split())
    for wnid_dir in {p.parents[1] for p in train}:
        rows = (wnid_dir / f"{wnid_dir.name}_boxes.txt").read_text().splitlines()
        names = {r.split("\t")[0] for r in rows}
        assert wnid_dir.name in wnids and names == {p.name for p in wnid_dir.glob("images/*.JPEG")}
        for row in rows:  # boxes inside the 64 x 64 image, x0 <= x1, y0 <= y1
            x0, y0, x1, y1 = map(int, row.split("\t")[1:])
            assert 0 <= x0 <= x1 <= 63 and 0 <= y0 <= y1 <= 63
    assert len((out / "val" / "val_annotations.txt").read_text().splitlines()) == 3
    again = build_tinyimagenet(tmp_path / "absent", tmp_path / "tiny2", seed=3, train_count=6, val_count=3)
    assert again["splits"] == read_json(out / "manifest.json")["splits"]
    assert all(p.read_bytes() == (tmp_path / "tiny2" / p.relative_to(out)).read_bytes() for p in train)


def test_image_list_names_a_glob_without_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"image folder\(s\) not found: .*train/\*/images"):
        build_image_list(tmp_path, ["train/*/images"], [], tmp_path / "x.txt")


def test_imagenet_layout_from_tiny_imagenet(tmp_path: Path) -> None:
    """ILSVRC2012's folders (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) holding the Tiny-ImageNet root's images."""
    tiny = tmp_path / "tiny"
    build_tinyimagenet(tmp_path / "absent", tiny, seed=3, train_count=6, val_count=3)
    manifest = build_imagenet(tiny, tmp_path / "imagenet")
    train = sorted((tmp_path / "imagenet").glob("train/*/*.JPEG"))
    assert [(p.parent.name, p.name) for p in train] == [
        (p.parents[1].name, p.name) for p in sorted(tiny.glob("train/*/images/*.JPEG"))]
    assert all(p.name.startswith(p.parent.name + "_") for p in train)  # ImageNet's <wnid>_<n>.JPEG
    rows = [row.split("\t") for row in (tiny / "val" / "val_annotations.txt").read_text().splitlines()]
    assert {(p.parent.name, p.name) for p in (tmp_path / "imagenet").glob("val/*/*.JPEG")} == {
        (row[1], row[0]) for row in rows}
    assert manifest["splits"]["train"]["images"] == 6 and manifest["splits"]["val"]["images"] == 3
    # The image set's folders, as both configs name them.
    listed = build_image_list(tmp_path / "imagenet", ["train/*"], [], tmp_path / "images.txt")
    assert len(listed) == 6
    with pytest.raises(UserError, match=r"is not a Tiny-ImageNet root .* `python -m prepare tinyimagenet`"):
        build_imagenet(tmp_path / "absent", tmp_path / "imagenet2")


def test_image_list_keeps_a_selection_by_image_id(tmp_path: Path) -> None:
    """An image set's `select`: only the images whose ids the prepare stage listed (OpenImage-MINI)."""
    train = tmp_path / "openimages" / "train"
    train.mkdir(parents=True)
    for image_id in ("0a1", "0b2", "0c3"):
        Image.new("RGB", (8, 8)).save(train / f"{image_id}.jpg")
    ids = tmp_path / "image_ids.txt"
    ids.write_text("0c3\n0a1\n")
    listed = build_image_list(tmp_path / "openimages", ["train"], [], tmp_path / "images.txt", only_ids=ids)
    assert [Path(p).name for p in listed] == ["0a1.jpg", "0c3.jpg"]
    ids.write_text("0a1\n0d4\n")
    with pytest.raises(UserError, match=r"1 of the 2 images of .*image_ids.txt are not in .*train \(e.g. 0d4\); "
                                        r"point --root at the dataset the selection was made from"):
        build_image_list(tmp_path / "openimages", ["train"], [], tmp_path / "images.txt", only_ids=ids)


def test_union_lists_each_image_once(tmp_path: Path) -> None:
    """An image set's `union` (hierarchical grouping's PASCAL train_aug + COCO train): the lists joined, sorted."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("/d/voc/2.jpg\n/d/voc/1.jpg\n")
    second.write_text("/d/coco/9.jpg\n/d/voc/1.jpg\n")
    assert union_image_list([first, second], tmp_path / "u.txt") == ["/d/coco/9.jpg", "/d/voc/1.jpg", "/d/voc/2.jpg"]
    assert (tmp_path / "u.txt").read_text() == "/d/coco/9.jpg\n/d/voc/1.jpg\n/d/voc/2.jpg\n"
    assert union_image_list([first, second], tmp_path / "u.txt", max_images=2) == ["/d/coco/9.jpg", "/d/voc/1.jpg"]


def test_an_id_list_missing_from_an_external_root_is_named(tmp_path: Path) -> None:
    spec = {"dataset": "voc", "train": ["VOC2012/JPEGImages"], "ids": "VOC2012/ImageSets/Segmentation/aug.txt"}
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(UserError, match=r"pretrain.image_sets.voc_trainaug.ids: VOC2012/ImageSets/Segmentation/aug.txt "
                                        r"is not a file under datasets.voc.root"):
        check_image_set_root("voc_trainaug", spec, str(tmp_path))
    (tmp_path / "VOC2012" / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "VOC2012" / "ImageSets" / "Segmentation" / "aug.txt").write_text("2007_000032\n")
    check_image_set_root("voc_trainaug", spec, str(tmp_path))
