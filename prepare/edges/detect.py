"""Structured-edge inference through OpenCV (C++): edges, orientation, non-maximum suppression."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from prepare.edges.features import to_float_rgb
from prepare.edges.opencv_model import load_detector


@functools.lru_cache(maxsize=4)
def _detector(path: str, version: tuple[int, int, int]) -> cv2.ximgproc.StructuredEdgeDetection:
    return load_detector(path)


def detector(model_path: str | os.PathLike[str]) -> cv2.ximgproc.StructuredEdgeDetection:
    """OpenCV's detector for `model_path`, loaded once per file version (UserError if missing/unusable).

    The version is (inode, size, mtime): models are replaced by rename, so a rewrite is a new inode.
    """
    path = Path(model_path)
    try:
        stat = path.stat()
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = (-1, -1, -1)  # load_detector raises the UserError
    return _detector(str(path), version)


def detect_edges(model_path: str | os.PathLike[str], rgb: np.ndarray) -> np.ndarray:
    """Edge strength (H x W float32, about [0, 1]) of an H x W x 3 uint8 RGB image."""
    return detector(model_path).detectEdges(to_float_rgb(np.ascontiguousarray(rgb)))


def edge_orientation(model_path: str | os.PathLike[str], edges: np.ndarray) -> np.ndarray:
    """Edge orientation in [0, pi) (H x W float32) from an edge map, OpenCV's computeOrientation."""
    return detector(model_path).computeOrientation(np.ascontiguousarray(edges, np.float32))


def edge_nms(model_path: str | os.PathLike[str], edges: np.ndarray, orientation: np.ndarray, radius: int = 1,
             border: int = 5, multiplier: float = 1.01) -> np.ndarray:
    """Thin edges by non-maximum suppression along the orientation (OpenCV's edgesNms).

    Defaults are edgesDetect.m's (r 1, s 5, m 1.01); OpenCV's own are (2, 0, 1).
    """
    return detector(model_path).edgesNms(np.ascontiguousarray(edges, np.float32),
                                         np.ascontiguousarray(orientation, np.float32),
                                         r=radius, s=border, m=multiplier)


def edges_and_orientation(model_path: str | os.PathLike[str], rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and the orientation of the edge normal in [0, pi), per pixel of an RGB uint8 image."""
    edges = detect_edges(model_path, rgb)
    return edges, edge_orientation(model_path, edges)


def model_fingerprint(model_path: str | os.PathLike[str]) -> str:
    """`<file name>:sha256:<16 hex>`: names the model in the outputs it made (loads it: UserError if unusable)."""
    detector(model_path)
    return f"{Path(model_path).name}:sha256:{hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:16]}"
