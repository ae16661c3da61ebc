"""BSDS500 images and human segmentations, with errors that say which file and how to fix it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from core.errors import UserError

LAYOUT = "data/{images,groundTruth}/{train,val,test}"


@dataclasses.dataclass(frozen=True)
class BsdsImage:
    name: str
    image: Path
    ground_truth: Path


def list_images(root: str | Path, splits: list[str]) -> list[BsdsImage]:
    """The images of `splits` under the BSDS500 folder `root` (sorted by split, then name), each with its .mat."""
    root = Path(root)
    images = []
    for split in splits:
        image_dir, gt_dir = root / "data" / "images" / split, root / "data" / "groundTruth" / split
        missing = [str(folder) for folder in (image_dir, gt_dir) if not folder.is_dir()]
        if missing:
            raise UserError(f"BSDS500 layout not found: {', '.join(missing)} missing. Point --bsds-root at the "
                            f"BSDS500 folder holding {LAYOUT} (e.g. .../BSR/BSDS500).")
        found = sorted(image_dir.glob("*.jpg"))
        if not found:
            raise UserError(f"no *.jpg in {image_dir}; re-extract BSDS500 there ({LAYOUT}).")
        for path in found:
            gt = gt_dir / f"{path.stem}.mat"
            if not gt.is_file():
                raise UserError(f"ground truth {gt} missing for {path}; re-extract BSDS500 ({LAYOUT}).")
            images.append(BsdsImage(f"{split}/{path.stem}", path, gt))
    return images


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB, or a UserError naming the file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"cannot decode image {path}; replace it with the original BSDS500 file.")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_segmentations(path: Path, shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each annotator's (Segmentation int32, Boundaries bool) from a groundTruth .mat, checked against `shape`."""
    try:
        annotators = scipy.io.loadmat(str(path))["groundTruth"].reshape(-1)
        out = [(np.asarray(a["Segmentation"][0, 0], np.int32), np.asarray(a["Boundaries"][0, 0]).astype(bool))
               for a in annotators]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise UserError(f"cannot read ground truth {path} ({err}); "
                        "replace it with the original BSDS500 file.") from None
    if not out or any(seg.shape != shape or edges.shape != shape for seg, edges in out):
        raise UserError(f"ground truth {path} is empty or does not match its image size {shape}; "
                        "replace it with the original BSDS500 file.")
    return out
