"""The forest in OpenCV's structured-edge model format (`model.yml.gz`): write, read, load.

What `cv::ximgproc::createStructuredEdgeDetection(path)` reads (opencv_contrib,
ximgproc/src/structured_edge_detection.cpp), through `cv::FileStorage`:
- `options`: a map of ints (the fields of `SEOptions`);
- `childs`, `featureIds` (int), `thresholds` (float): one sequence per tree, each of `nNodes`
  entries (every tree padded to the same node count: OpenCV takes nNodes = len(childs) / nTrees).
  `childs[k]` is the 1-based index of node k's left child relative to its tree's root, 0 for a
  leaf; the walk goes to child - 1 when feature < threshold, else to child.
- `edgeBoundaries`, `edgeBins` (int): the leaves' edge pixels. OpenCV concatenates all their
  sequences and reads the bins of global node n = tree * nNodes + k as
  edgeBins[edgeBoundaries[n] : edgeBoundaries[n + 1]]; so edgeBoundaries is one global running sum of
  nTrees * nNodes + 1 entries, however it is cut into sequences (the official model, converted by
  opencv_contrib's former tutorials/scripts/modelConvert.m, cuts both into rows of 1000; we write one
  sequence per tree, the last one with the final total). A bin is column * patchInnerSize + row
  inside the 16 x 16 edge patch.
The loader checks the structure before OpenCV sees the file: OpenCV asserts only that the file
opens, and indexes a malformed model out of bounds.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserError
from core.io import atomic_path
from prepare.edges.options import SEOptions

OFFICIAL_MODEL_URL = "https://github.com/opencv/opencv_extra/raw/master/testdata/cv/ximgproc/model.yml.gz"
_FIX = (
    "train it with `python -m prepare edge-model --bsds-root <BSDS500> --out {path}` "
    f"or download the official model.yml.gz ({OFFICIAL_MODEL_URL})"
)
_TREE_NODES = ("childs", "featureIds", "thresholds", "edgeBoundaries", "edgeBins")
_SUFFIXES = (".yml", ".yaml", ".xml", ".json")


@dataclasses.dataclass
class OpenCVForest:
    """A forest laid out as OpenCV holds it in memory (all trees padded to `n_nodes`)."""

    options: SEOptions
    childs: np.ndarray  # (trees, n_nodes) int32
    feature_ids: np.ndarray  # (trees, n_nodes) int32
    thresholds: np.ndarray  # (trees, n_nodes) float32
    edge_boundaries: np.ndarray  # (trees * n_nodes + 1,) int32, global running sum
    edge_bins: np.ndarray  # (edge_boundaries[-1],) int32

    @property
    def n_nodes(self) -> int:
        return self.childs.shape[1]


def model_suffix(path: Path) -> str:
    """The suffix FileStorage needs (e.g. `.yml.gz`), or a UserError for a path OpenCV would misread."""
    suffixes = path.suffixes
    storage = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) >= 2 else (suffixes[-1:] or [""])[0]
    if storage not in _SUFFIXES:
        raise UserError(f"model path {path} must end in .yml.gz (or .yml/.xml[.gz]) so OpenCV picks the format.")
    return "".join(suffixes[-2:]) if suffixes[-1] == ".gz" else storage


def _write_seq(storage: cv2.FileStorage, values: np.ndarray, as_float: bool) -> None:
    storage.startWriteStruct("", cv2.FileNode_SEQ | cv2.FileNode_FLOW)
    for value in values.tolist():
        # Floats go through double ("%.16e"); a float32 reads back exactly.
        storage.write("", float(value) if as_float else int(value))
    storage.endWriteStruct()


def write_model(path: str | os.PathLike[str], forest: OpenCVForest) -> None:
    """Write `forest` to `path` (e.g. model.yml.gz) atomically, in the layout OpenCV loads."""
    path = Path(path)
    trees, n_nodes = forest.childs.shape
    if forest.options.numberOfTrees != trees or len(forest.edge_boundaries) != trees * n_nodes + 1:
        raise ValueError("inconsistent forest: numberOfTrees / node count / edge boundaries disagree")
    with atomic_path(path, suffix=model_suffix(path)) as tmp:
        storage = cv2.FileStorage(str(tmp), cv2.FILE_STORAGE_WRITE)
        storage.startWriteStruct("options", cv2.FileNode_MAP)
        for name, value in forest.options.as_dict().items():
            storage.write(name, int(value))
        storage.endWriteStruct()
        for name, array, as_float in (("childs", forest.childs, False), ("featureIds", forest.feature_ids, False),
                                      ("thresholds", forest.thresholds, True)):
            storage.startWriteStruct(name, cv2.FileNode_SEQ)
            for tree in range(trees):
                _write_seq(storage, array[tree], as_float)
            storage.endWriteStruct()
        storage.startWriteStruct("edgeBoundaries", cv2.FileNode_SEQ)
        for tree in range(trees):
            end = (tree + 1) * n_nodes + (tree == trees - 1)
            _write_seq(storage, forest.edge_boundaries[tree * n_nodes:end], False)
        storage.endWriteStruct()
        storage.startWriteStruct("edgeBins", cv2.FileNode_SEQ)
        bounds = forest.edge_boundaries
        for tree in range(trees):
            _write_seq(storage, forest.edge_bins[bounds[tree * n_nodes]:bounds[(tree + 1) * n_nodes]], False)
        storage.endWriteStruct()
        storage.release()


def _open(path: Path) -> cv2.FileStorage:
    if not path.is_file():
        raise UserError(f"structured-edge model not found: {path}. Fix: {_FIX.format(path=path)}.")
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
        opened = storage.isOpened()
    except (cv2.error, SystemError):  # a non-YAML .gz fails an assertion inside open()
        opened = False
    if not opened:
        raise UserError(f"structured-edge model {path} is unreadable (not an OpenCV YAML/XML file). "
                        f"Fix: {_FIX.format(path=path)}.")
    return storage


def _check_structure(storage: cv2.FileStorage, path: Path) -> SEOptions:
    """Options and per-tree sizes, or one UserError; reads no node values (fast on the official model)."""
    def bad(why: str) -> UserError:
        return UserError(f"{path} is not a usable structured-edge model ({why}). Fix: {_FIX.format(path=path)}.")

    node = storage.getNode("options")
    if not node.isMap():
        raise bad("no `options` map")
    values = {}
    for field in dataclasses.fields(SEOptions):
        entry = node.getNode(field.name)
        if not entry.isInt():
            raise bad(f"options.{field.name} missing or not an int")
        values[field.name] = int(entry.real())
    options = SEOptions(**values)
    if min(values.values()) < 0 or min(options.numberOfTrees, options.shrinkNumber, options.stride) <= 0:
        raise bad("negative or zero options")
    sizes = {}
    for name in _TREE_NODES:
        seq = storage.getNode(name)
        if not seq.isSeq() or seq.size() == 0 or not all(seq.at(i).isSeq() for i in range(seq.size())):
            raise bad(f"`{name}` is not a sequence of sequences")
        sizes[name] = [seq.at(i).size() for i in range(seq.size())]
    for name in ("childs", "featureIds", "thresholds"):
        if len(sizes[name]) != options.numberOfTrees or len(set(sizes[name])) != 1:
            raise bad(f"`{name}` is not {options.numberOfTrees} trees of equal node count")
    n_nodes = sizes["childs"][0]
    if sum(sizes["edgeBoundaries"]) < options.numberOfTrees * n_nodes + 1:
        raise bad("`edgeBoundaries` is shorter than the node count")
    last = storage.getNode("edgeBoundaries").at(len(sizes["edgeBoundaries"]) - 1)
    if last.size() == 0 or sum(sizes["edgeBins"]) < last.at(last.size() - 1).real():
        raise bad("`edgeBins` is shorter than `edgeBoundaries` says")
    return options


def check_model(path: str | os.PathLike[str]) -> SEOptions:
    """The model's options if `path` is a structurally valid structured-edge model, else one UserError."""
    path = Path(path)
    return _check_structure(_open(path), path)


def load_detector(path: str | os.PathLike[str]) -> cv2.ximgproc.StructuredEdgeDetection:
    """OpenCV's detector for the model at `path`; one UserError naming the fix if missing or unusable."""
    path = Path(path)
    check_model(path)
    try:
        return cv2.ximgproc.createStructuredEdgeDetection(str(path))
    except cv2.error as err:
        raise UserError(f"OpenCV could not load the structured-edge model {path} ({err.err}). "
                        f"Fix: {_FIX.format(path=path)}.") from None


def _read_seqs(storage: cv2.FileStorage, name: str, dtype: type) -> list[np.ndarray]:
    seq = storage.getNode(name)
    out = []
    for tree in range(seq.size()):
        node = seq.at(tree)
        out.append(np.array([node.at(i).real() for i in range(node.size())], dtype=dtype))
    return out


def read_model(path: str | os.PathLike[str]) -> OpenCVForest:
    """Read a model file back into arrays (element by element, ~1 us each: for tests and inspection)."""
    path = Path(path)
    storage = _open(path)
    options = _check_structure(storage, path)
    childs, fids = (np.stack(_read_seqs(storage, name, np.int32)) for name in ("childs", "featureIds"))
    return OpenCVForest(
        options=options, childs=childs, feature_ids=fids,
        thresholds=np.stack(_read_seqs(storage, "thresholds", np.float32)),
        edge_boundaries=np.concatenate(_read_seqs(storage, "edgeBoundaries", np.int32)),
        edge_bins=np.concatenate(_read_seqs(storage, "edgeBins", np.int32)),
    )
