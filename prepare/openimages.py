"""OpenImages boxes: readers of the official CSV schema and of the COCO<->OpenImages class mapping, and
`python -m prepare openimages`, a small OpenImages-layout folder built from a COCO root.

Official schema (OpenImages V4-V7), read by the selection of OpenImage-MINI (prepare.openimages_mini):

    train-annotations-bbox.csv        header ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,
                                      IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside (V6 adds XClick*);
                                      coordinates are fractions of the image size, one row per box
    class-descriptions-boxable.csv    no header; LabelName,DisplayName (e.g. /m/01g317,Person)
    coco80_to_openimages_joined.csv   coco80_index,coco_name,oid_display_name,oid_label_mid; row i is the
                                      i-th COCO category in category-id order (its names are the YOLO/VOC
                                      spellings, e.g. "tvmonitor", so rows are matched by position, not name);
                                      an empty oid_label_mid marks a COCO class with no OpenImages counterpart

The smoke build (the real 14.6M-box file is not available offline):

    OUT/train/<ImageID>.jpg              symlinks to the COCO photos of --split (default val2017)
    OUT/train-annotations-bbox.csv       the official 13 columns in order, sorted by ImageID
    OUT/class-descriptions-boxable.csv   a copy of the one under --meta
    OUT/manifest.json                    written last: source, counts, dropped boxes, commit

ImageID = the first 16 hex digits of sha256(COCO file name), the form of a real OpenImages id. Each COCO
box becomes one row: Source=xclick, Confidence=1, LabelName = the class's /m/ id, XMin = x / width,
XMax = (x + w) / width, YMin, YMax likewise (clipped to [0, 1]), IsGroupOf = iscrowd, and IsOccluded,
IsTruncated, IsDepiction, IsInside = -1 (unknown: COCO does not annotate them). Boxes of the COCO classes
with no /m/ id are dropped and counted. Only COCO's own boxes are written, no invented box of another
OpenImages class: every class of this folder is therefore shared with COCO, and the "non-shared classes are
uncapped" branch of the selection is exercised by tests/test_openimages.py's crafted CSVs, not by this build.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from tqdm import tqdm

from core.errors import UserError
from core.io import atomic_path, write_json
from core.provenance import git_commit
from prepare.layouts import MANIFEST, coco_annotation_file, copy_file, link, list_summary, load_coco_json, start_build

BOX_COLUMNS: tuple[str, ...] = (
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
)
CLASS_COLUMNS: tuple[str, ...] = ("LabelName", "DisplayName")
MAPPING_COLUMNS: tuple[str, ...] = ("coco80_index", "coco_name", "oid_display_name", "oid_label_mid")
COORDINATES: tuple[str, ...] = ("XMin", "XMax", "YMin", "YMax")
# Strings as categories (1.7M image ids, 601 labels, repeated over 14.6M rows), flags as int8.
_BOX_DTYPES: dict[str, str] = {
    "ImageID": "category", "Source": "category", "LabelName": "category", "Confidence": "float32",
    **dict.fromkeys(COORDINATES, "float64"),
    **dict.fromkeys(("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"), "int8"),
}
MAPPING_FILE = "coco80_to_openimages_joined.csv"
CLASSES_FILE = "class-descriptions-boxable.csv"
CHUNK_ROWS = 1_000_000
UNKNOWN_FLAG = -1


def _check_columns(path: Path, found: Sequence[str], needed: Sequence[str], expected: str) -> None:
    missing = [column for column in needed if column not in found]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; expected {expected}. "
                        "Pass a file in the official OpenImages schema.")


def _header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except FileNotFoundError:
        raise UserError(f"{path} not found: check the path (the file is read in place, never copied).") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the CSV header of {path} ({err}); pass a CSV file.") from None


def check_box_header(path: Path, columns: Sequence[str]) -> None:
    """Raise a UserError before any slow read when the box CSV lacks one of `columns`."""
    _check_columns(path, _header(path), columns, f"the header {','.join(BOX_COLUMNS)}")


def _chunk_categorical(path: Path, values: pd.Series) -> pd.Categorical:
    """One chunk's strings as a categorical, categories in order of appearance (sorted once, at the end)."""
    codes, uniques = pd.factorize(values)
    if (codes < 0).any():
        raise UserError(f"{path} has empty {values.name} values; every box row needs one.")
    return pd.Categorical.from_codes(codes, uniques)


def _sorted_union(parts: list[pd.Categorical]) -> pd.Categorical:
    """The chunks' categoricals as one with sorted categories (numpy's string sort: several times faster than
    sorting pandas strings, which matters for 1.7M ImageIDs)."""
    union = union_categoricals(parts)
    categories = np.asarray(union.categories, dtype=str)
    order = np.argsort(categories, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return pd.Categorical.from_codes(rank[union.codes], categories[order])


def read_boxes(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """The `columns` of an OpenImages box CSV, read in chunks of CHUNK_ROWS rows with compact dtypes.

    String columns come back as categoricals whose categories are sorted (so codes do not depend on the
    row order of the file); coordinates must lie in [0, 1].
    """
    check_box_header(path, columns)
    dtypes = {column: _BOX_DTYPES[column] for column in columns}
    # Strings are parsed as str: dtype="category" in read_csv would turn an all-digit ImageID such as
    # 0000000000000001 into a number.
    parse = {column: "str" if dtype == "category" else dtype for column, dtype in dtypes.items()}
    parts: dict[str, list[Any]] = {column: [] for column in columns}
    with tqdm(desc=f"read {path.name}", unit=" rows", unit_scale=True, dynamic_ncols=True) as progress:
        try:
            for chunk in pd.read_csv(path, usecols=list(columns), dtype=parse, chunksize=CHUNK_ROWS):
                for column in columns:
                    parts[column].append(_chunk_categorical(path, chunk[column]) if dtypes[column] == "category"
                                         else chunk[column].to_numpy())
                progress.update(len(chunk))
        except (ValueError, pd.errors.ParserError) as err:  # e.g. an empty or non-numeric flag or coordinate
            raise UserError(f"cannot parse {path} near row {progress.n + 1} ({err}); pass a well-formed OpenImages "
                            "box CSV.") from None
    if progress.n == 0:
        return pd.DataFrame({column: pd.Series(dtype=dtypes[column]) for column in columns})
    frame = pd.DataFrame({column: _sorted_union(parts[column]) if dtypes[column] == "category"
                          else np.concatenate(parts[column]) for column in columns})
    coordinates = [column for column in COORDINATES if column in columns]
    values = frame[coordinates].to_numpy()
    if not np.all((values >= 0) & (values <= 1)):
        raise UserError(f"{path} has box coordinates outside [0, 1] (or missing); OpenImages boxes are fractions "
                        "of the image size: normalise them.")
    return frame


def read_class_descriptions(path: Path) -> pd.DataFrame:
    """class-descriptions-boxable.csv (no header) as a frame with columns LabelName, DisplayName."""
    try:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UserError(f"{path} not found: pass OpenImages' class-descriptions-boxable.csv.") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path} ({err}); pass OpenImages' class-descriptions-boxable.csv.") from None
    _check_columns(path, CLASS_COLUMNS[: frame.shape[1]], CLASS_COLUMNS,
                   f"no header and the columns {','.join(CLASS_COLUMNS)}")
    return frame.iloc[:, :2].set_axis(list(CLASS_COLUMNS), axis=1)


def read_coco_mapping(path: Path) -> pd.DataFrame:
    """The COCO<->OpenImages mapping, one row per COCO category in id order; oid_label_mid '' when unmapped."""
    _check_columns(path, _header(path), MAPPING_COLUMNS, f"the header {','.join(MAPPING_COLUMNS)}")
    frame = pd.read_csv(path, usecols=list(MAPPING_COLUMNS), dtype=str, keep_default_na=False)
    if frame["coco80_index"].tolist() != [str(i) for i in range(len(frame))]:
        raise UserError(f"{path}: coco80_index must run 0, 1, 2, ... (the COCO categories in id order).")
    mids = frame.loc[frame["oid_label_mid"] != "", "oid_label_mid"]
    if mids.duplicated().any():
        raise UserError(f"{path} maps several COCO classes to {', '.join(sorted(set(mids[mids.duplicated()])))}; "
                        "each /m/ id may stand for one COCO class only.")
    return frame


def coco_category_mids(mapping: pd.DataFrame, categories: list[dict[str, Any]]) -> dict[int, str]:
    """COCO category id -> OpenImages /m/ id, for the mapped classes (row i = i-th category in id order)."""
    ids = sorted(category["id"] for category in categories)
    if len(ids) != len(mapping):
        raise UserError(f"the COCO<->OpenImages mapping has {len(mapping)} rows but the annotation file has "
                        f"{len(ids)} categories; pass the instances file of the 80-class COCO 2017.")
    return {cat_id: mid for cat_id, mid in zip(ids, mapping["oid_label_mid"], strict=True) if mid}


def image_id(file_name: str) -> str:
    """The 16-hex-digit OpenImages-style id of a COCO photo: a stable function of its file name."""
    return hashlib.sha256(file_name.encode()).hexdigest()[:16]


def _box_row(image: dict[str, Any], ann: dict[str, Any], mid: str) -> dict[str, Any]:
    x, y, w, h = ann["bbox"]
    x_min, x_max = np.clip([x / image["width"], (x + w) / image["width"]], 0.0, 1.0)
    y_min, y_max = np.clip([y / image["height"], (y + h) / image["height"]], 0.0, 1.0)
    return {
        "ImageID": image_id(image["file_name"]), "Source": "xclick", "LabelName": mid, "Confidence": 1,
        "XMin": float(x_min), "XMax": float(x_max), "YMin": float(y_min), "YMax": float(y_max),
        "IsOccluded": UNKNOWN_FLAG, "IsTruncated": UNKNOWN_FLAG, "IsGroupOf": int(ann["iscrowd"]),
        "IsDepiction": UNKNOWN_FLAG, "IsInside": UNKNOWN_FLAG,
    }


def build_openimages(coco_root: Path, split: str, mapping_csv: Path, classes_csv: Path, out: Path
                     ) -> dict[str, Any]:
    """Build OUT (see the module docstring) from COCO_ROOT/<split> and return its manifest."""
    annotations = coco_root / coco_annotation_file("instances", split)
    data = load_coco_json(annotations)
    mids = coco_category_mids(read_coco_mapping(mapping_csv), data["categories"])
    known = set(read_class_descriptions(classes_csv)["LabelName"])
    if not set(mids.values()) <= known:
        raise UserError(f"{mapping_csv} maps to {', '.join(sorted(set(mids.values()) - known))}, absent from "
                        f"{classes_csv}; pass matching metadata files.")
    images = {image["id"]: image for image in data["images"]}
    image_dir = coco_root / split
    missing = [image["file_name"] for image in images.values() if not (image_dir / image["file_name"]).is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) of {annotations} missing from {image_dir}, e.g. "
                        f"{missing[0]}; rebuild the COCO root.")
    names = {category["id"]: category["name"] for category in data["categories"]}
    dropped = collections.Counter(names[ann["category_id"]] for ann in data["annotations"]
                                  if ann["category_id"] not in mids)
    rows = [_box_row(images[ann["image_id"]], ann, mids[ann["category_id"]])
            for ann in data["annotations"] if ann["category_id"] in mids]
    boxes = pd.DataFrame(rows, columns=list(BOX_COLUMNS)).sort_values("ImageID", kind="stable")
    start_build(out)
    for image in images.values():
        link(image_dir / image["file_name"], out / "train" / f"{image_id(image['file_name'])}.jpg")
    with atomic_path(out / "train-annotations-bbox.csv") as tmp:
        boxes.to_csv(tmp, index=False)
    copy_file(classes_csv, out / CLASSES_FILE)
    manifest = {
        "dataset": "openimages",
        "source": f"{coco_root.resolve()}/{split}",
        "images": list_summary(image_id(image["file_name"]) for image in images.values()),
        "boxes": len(boxes),
        "dropped_boxes_of_unmapped_classes": dict(sorted(dropped.items())),
        "commit": git_commit(),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def meta_files(meta: Path) -> tuple[Path, Path]:
    """The mapping and the class list of a metadata folder laid out as the shared openimages_meta/:
    META/coco80_to_openimages_joined.csv and one class-descriptions-boxable.csv anywhere below META."""
    mapping = meta / MAPPING_FILE
    classes = sorted(meta.rglob(CLASSES_FILE)) if meta.is_dir() else []
    if not mapping.is_file() or len(classes) != 1:
        raise UserError(f"{meta} must hold {MAPPING_FILE} and exactly one {CLASSES_FILE} (found {len(classes)}); "
                        "point --meta at the openimages_meta folder of the shared datasets.")
    return mapping, classes[0]


def _run(args: argparse.Namespace) -> None:
    mapping, classes = meta_files(args.meta)
    manifest = build_openimages(args.coco_root, args.split, mapping, classes, args.out)
    dropped = manifest["dropped_boxes_of_unmapped_classes"]
    detail = ", ".join(f"{name} {count}" for name, count in dropped.items()) or "none"
    print(f"{manifest['images']['images']} images, {manifest['boxes']} boxes written to {args.out}; "
          f"{sum(dropped.values())} boxes of COCO classes without an OpenImages id dropped ({detail})")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("openimages", help="build an OpenImages-layout folder from a COCO root",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", type=Path, required=True, help="COCO-2017-layout root, e.g. COCO-mini")
    parser.add_argument("--split", default="val2017",
                        help="COCO split to convert; val2017 keeps it apart from the train2017 reference counts")
    parser.add_argument("--meta", type=Path, required=True,
                        help=f"folder with {MAPPING_FILE} and (anywhere below) {CLASSES_FILE}")
    parser.add_argument("--out", type=Path, required=True, help="OpenImages-layout folder to (re)build")
    parser.set_defaults(func=_run)

