"""`python -m prepare bsds-eval`: the BSDS500 boundary benchmark (precision/recall, ODS, OIS, AP).

The protocol of Arbelaez, Maire, Fowlkes and Malik, "Contour Detection and Hierarchical Image
Segmentation", IEEE TPAMI 33(5), 2011, as its MATLAB benchmark (BSDS500 `bench/benchmarks`) runs it:

- A soft boundary map is binarised at `nthresh` thresholds linspace(1/(n+1), 1-1/(n+1), n) (pb >= t),
  and each binary map is thinned to one-pixel-wide boundaries (MATLAB `bwmorph(.., 'thin', inf)`).
- At each threshold the machine boundary pixels are matched one-to-one to the boundary pixels of each
  human ground truth, pairs being at most `max_dist` x the image diagonal apart, by the assignment of
  least total distance among those matching the most pixels (the benchmark's correspondPixels solves
  this with an approximate sparse CSA; here it is solved exactly, so counts can differ by a few
  pixels). Recall counts the matched ground-truth pixels over all ground truths (cntR / sumR);
  precision counts the machine pixels matched in at least one ground truth (cntP / sumP).
- ODS: the best F of the dataset-level curve, interpolated linearly between thresholds; OIS: each
  image at its own best threshold, counts then summed; AP: area under the dataset-level PR curve
  sampled at recall 0, 0.01, .., 1.

Inputs, as the benchmark accepts them: `<id>.png` grayscale soft maps (scaled by bit depth to
[0, 1]), `<id>.npy` float maps in [0, 1], or `<id>.mat` holding either `ucm2` (a double-resolution
ultrametric contour map, sub-sampled to image size) or `segs` (a cell of segmentations whose
boundaries replace the thresholds, which are then 1..n_segs whatever nthresh says).
Ground truth: BSDS500's `data/groundTruth/<split>/<id>.mat`. Outputs: the benchmark's own
`eval_bdry.txt`, `eval_bdry_thr.txt` and `eval_bdry_img.txt`, in its numeric layout.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, UnidentifiedImageError
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching
from skimage.morphology import thin as thin_binary
from tqdm import tqdm

from core.errors import UserError
from core.io import write_text

DEFAULT_NTHRESH = 99
DEFAULT_MAX_DIST = 0.0075
PREDICTION_SUFFIXES = (".png", ".npy", ".mat")
POOLED_COMPONENT_SIZE = 200  # matching components up to this many pixels are solved together (speed only)
GT_LAYOUT = "BSDS500/data/groundTruth/<split>/<id>.mat, each a cell array 'groundTruth' of structs with 'Boundaries'"


@dataclass(frozen=True)
class BoundaryScores:
    """The benchmark's summary (eval_bdry.txt) and tables (eval_bdry_thr.txt, eval_bdry_img.txt)."""

    ods_threshold: float
    ods_r: float
    ods_p: float
    ods_f: float
    ois_r: float
    ois_p: float
    ois_f: float
    ap: float
    per_threshold: np.ndarray  # (n_thresh, 4): threshold, R, P, F of the whole dataset
    per_image: np.ndarray  # (n_images, 5): 1-based image index, best threshold, R, P, F (interpolated)


def benchmark_thresholds(nthresh: int = DEFAULT_NTHRESH) -> np.ndarray:
    """The benchmark's thresholds: `nthresh` evenly spaced values strictly inside (0, 1)."""
    return np.linspace(1 / (nthresh + 1), 1 - 1 / (nthresh + 1), nthresh)


def _load_mat(path: Path, what: str) -> dict:
    try:
        return scipy.io.loadmat(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}.") from None
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as err:
        raise UserError(f"cannot read {what} {path} ({err}). Replace the file with a valid MATLAB .mat.") from None


def load_ground_truth(mat_path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The human boundary maps (bool, image size) of one BSDS500 groundTruth/<id>.mat file."""
    cell = _load_mat(Path(mat_path), "ground truth").get("groundTruth")
    try:
        boundaries = [np.asarray(entry["Boundaries"][0, 0], dtype=bool) for entry in cell.ravel()]
    except (AttributeError, IndexError, KeyError, ValueError):
        boundaries = []
    if not boundaries or any(b.ndim != 2 or b.shape != boundaries[0].shape for b in boundaries):
        raise UserError(f"{mat_path} is not a BSDS500 ground-truth file; expected layout: {GT_LAYOUT}.")
    return boundaries


def seg_boundaries(seg: np.ndarray) -> np.ndarray:
    """Boundary pixels of a label image, as the benchmark's seg2bdry(seg, 'imageSize') draws them.

    seg2bdry marks the corners of its double-resolution grid where labels change; at image size that
    is every pixel whose 2x2 block (itself, right, below, below-right) is not one label, with the last
    row and column compared along the border only (the double grid copies its outer edge inwards).
    """
    padded = np.pad(np.asarray(seg), ((0, 1), (0, 1)), mode="edge")
    corner = padded[:-1, :-1]
    return (corner != padded[:-1, 1:]) | (corner != padded[1:, :-1]) | (corner != padded[1:, 1:])


def _offsets(radius: float) -> np.ndarray:
    """(k, 2) integer offsets (dy, dx) within `radius` pixels, as the benchmark's match window."""
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[keep], dx[keep]], axis=1)


def _assign(machine: np.ndarray, gt: np.ndarray, dist: np.ndarray, outlier_cost: float) -> np.ndarray:
    """Machine pixels matched by the benchmark's assignment over candidate pairs (machine, gt, dist).

    correspondPixels minimises the summed pair distances plus `outlier_cost` per unmatched pixel of
    either map. Up to a constant that is: every pixel of one side takes a pixel of the other at their
    distance or, at 2 x `outlier_cost`, a private dummy, so a full matching of that side always exists.
    Weights are in hundredths of a pixel, as the benchmark's CSA solver takes them.
    """
    machine_ids, machine = np.unique(machine, return_inverse=True)
    gt = np.unique(gt, return_inverse=True)[1]
    n_machine, n_gt = len(machine_ids), int(gt.max()) + 1
    # The smaller side is the one to match in full: a pixel that ends on its dummy costs the solver a
    # search of the whole component, and the smaller side has the fewest of those.
    rows, cols, n_rows, n_cols = (gt, machine, n_gt, n_machine) if n_gt < n_machine else (machine, gt, n_machine, n_gt)
    weights = np.concatenate([np.rint(100 * dist), np.full(n_rows, 2 * np.ceil(100 * outlier_cost))])
    # +1 on every edge: each full matching has n_rows edges, so the optimum is unchanged, and no weight
    # is a zero that the sparse matrix would drop.
    graph = csr_matrix(
        (weights + 1, (np.concatenate([rows, np.arange(n_rows)]), np.concatenate([cols, n_cols + np.arange(n_rows)]))),
        shape=(n_rows, n_cols + n_rows),
    )
    row_of, col_of = min_weight_full_bipartite_matching(graph)
    real = col_of < n_cols
    return machine_ids[col_of[real] if n_gt < n_machine else row_of[real]]


def _min_cost_matching(machine: np.ndarray, gt: np.ndarray, dist: np.ndarray, outlier_cost: float) -> np.ndarray:
    """`_assign`, split along the connected components of the candidate pairs (independent problems).

    Large components are solved alone, each with its own choice of the side to match in full; small
    ones are pooled into one call, which saves the per-call overhead. On smoothed bench maps at
    nthresh=99 this was 1.0-1.3x faster than one call per image, or one call per component.
    """
    n1, n2 = int(machine.max()) + 1, int(gt.max()) + 1
    adjacency = csr_matrix((np.ones(len(machine), dtype=bool), (machine, n1 + gt)), shape=(n1 + n2, n1 + n2))
    n_components, labels = connected_components(adjacency, directed=False)
    component = labels[machine]
    group = np.where(np.bincount(labels, minlength=n_components)[component] > POOLED_COMPONENT_SIZE, component, -1)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.diff(group[order], prepend=-2))
    return np.concatenate([_assign(machine[e], gt[e], dist[e], outlier_cost) for e in np.split(order, starts[1:])])


class _GroundTruthIndex:
    """Per image, once: each ground truth's boundary pixels numbered, padded so offsets never leave it."""

    def __init__(self, gt_boundaries: Sequence[np.ndarray], max_dist: float) -> None:
        height, width = gt_boundaries[0].shape
        radius = max_dist * np.hypot(height, width)
        self.outlier_cost = 100 * radius  # correspondPixels' default: 100 x the match radius
        self.pad = int(np.ceil(radius))
        self.padded_width = width + 2 * self.pad
        offsets = _offsets(radius)
        self.flat_offsets = offsets[:, 0] * self.padded_width + offsets[:, 1]
        self.offset_dist = np.hypot(offsets[:, 0], offsets[:, 1])
        self.sizes = []
        self.numbered = []  # flat padded maps: pixel number in that ground truth, -1 off its boundary
        for gt in gt_boundaries:
            numbered = np.full((height + 2 * self.pad, self.padded_width), -1, dtype=np.int64)
            inner = numbered[self.pad : self.pad + height, self.pad : self.pad + width]
            inner[gt] = np.arange(int(gt.sum()))
            self.numbered.append(numbered.ravel())
            self.sizes.append(int(gt.sum()))

    def counts(self, bmap: np.ndarray) -> tuple[int, int, int, int]:
        """cntR, sumR, cntP, sumP of one binary machine map against all ground truths."""
        ys, xs = np.nonzero(bmap)
        centres = (ys + self.pad) * self.padded_width + (xs + self.pad)
        neighbours = centres[:, None] + self.flat_offsets[None, :]  # (n_machine, k)
        matched_any = np.zeros(len(ys), dtype=bool)
        cnt_r = 0
        for numbered in self.numbered:
            gt_ids = numbered[neighbours]
            machine, slot = np.nonzero(gt_ids >= 0)
            if len(machine) == 0:
                continue
            matched = _min_cost_matching(machine, gt_ids[machine, slot], self.offset_dist[slot], self.outlier_cost)
            cnt_r += len(matched)
            matched_any[matched] = True
        return cnt_r, sum(self.sizes), int(matched_any.sum()), len(ys)


def match_binary_maps(
    bmaps: Iterable[np.ndarray],
    gt_boundaries: Sequence[np.ndarray],
    max_dist: float = DEFAULT_MAX_DIST,
    thin: bool = True,
) -> np.ndarray:
    """(n_maps, 4) int counts cntR, sumR, cntP, sumP of binary machine maps against the ground truths."""
    index = _GroundTruthIndex(gt_boundaries, max_dist)
    rows: list[tuple[int, int, int, int]] = []
    previous = None
    for bmap in bmaps:
        bmap = np.asarray(bmap, dtype=bool)
        # Neighbouring thresholds often give the same map (UCMs have few levels): reuse its counts.
        if previous is not None and np.array_equal(bmap, previous):
            rows.append(rows[-1])
            continue
        previous = bmap
        rows.append(index.counts(thin_binary(bmap) if thin else bmap))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def match_counts(
    pb: np.ndarray,
    gt_boundaries: Sequence[np.ndarray],
    thresholds: np.ndarray,
    max_dist: float = DEFAULT_MAX_DIST,
    thin: bool = True,
) -> np.ndarray:
    """(n_thresh, 4) int counts cntR, sumR, cntP, sumP of a soft map in [0, 1] binarised at each threshold."""
    return match_binary_maps((pb >= t for t in thresholds), gt_boundaries, max_dist, thin)


def _fmeasure(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 2 * p * r / (p + r + ((p + r) == 0))


def _ratio(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    return count / (total + (total == 0))


def _best_interpolated(thresh: np.ndarray, r: np.ndarray, p: np.ndarray) -> tuple[float, float, float, float]:
    """Best (t, R, P, F) on the curve, linearly interpolated at 100 points between successive thresholds.

    The benchmark keeps the first strict improvement in threshold order; argmax returns the first
    maximum of the same candidate sequence.
    """
    d = np.linspace(0, 1, 100)[None, :]
    cand_t = np.concatenate([thresh[:1], (thresh[1:, None] * d + thresh[:-1, None] * (1 - d)).ravel()])
    cand_r = np.concatenate([r[:1], (r[1:, None] * d + r[:-1, None] * (1 - d)).ravel()])
    cand_p = np.concatenate([p[:1], (p[1:, None] * d + p[:-1, None] * (1 - d)).ravel()])
    cand_f = _fmeasure(cand_r, cand_p)
    best = int(np.argmax(cand_f))
    return float(cand_t[best]), float(cand_r[best]), float(cand_p[best]), float(cand_f[best])


def _average_precision(r: np.ndarray, p: np.ndarray) -> float:
    """Area under P(R) sampled at R = 0, 0.01, .., 1, zero outside the measured recall range.

    For repeated recall values the first threshold's precision is used (MATLAB's `unique` since
    R2013a; older releases took the last one, which can differ only when recall repeats).
    """
    r_unique, first = np.unique(r, return_index=True)
    if len(r_unique) < 2:
        return 0.0
    return float(np.interp(np.linspace(0, 1, 101), r_unique, p[first], left=0, right=0).sum() * 0.01)


def collect(counts_per_image: Sequence[np.ndarray], thresholds: np.ndarray) -> BoundaryScores:
    """Dataset scores from per-image (n_thresh, 4) counts (cntR, sumR, cntP, sumP), as collect_eval_bdry.

    Rows of `per_image` follow the order of `counts_per_image`.
    """
    if not counts_per_image:
        raise UserError("no image to score; give at least one prediction.")
    thresh = np.asarray(thresholds, dtype=float)
    counts = np.stack([np.asarray(c, dtype=np.int64) for c in counts_per_image])  # (n_images, n_thresh, 4)
    if counts.shape[1:] != (len(thresh), 4):
        raise UserError(f"counts of shape {counts.shape[1:]} do not fit {len(thresh)} thresholds x 4 columns.")
    per_image = []
    ois_counts = np.zeros(4, dtype=np.int64)
    for index, image in enumerate(counts, start=1):
        r = _ratio(image[:, 0], image[:, 1])
        p = _ratio(image[:, 2], image[:, 3])
        per_image.append((index, *_best_interpolated(thresh, r, p)))
        # OIS takes the image's best measured threshold (no interpolation), then pools the counts.
        ois_counts += image[int(np.argmax(_fmeasure(r, p)))]
    total = counts.sum(axis=0)
    r = _ratio(total[:, 0], total[:, 1])
    p = _ratio(total[:, 2], total[:, 3])
    f = _fmeasure(r, p)
    ods_t, ods_r, ods_p, ods_f = _best_interpolated(thresh, r, p)
    ois_r = float(_ratio(ois_counts[0], ois_counts[1]))
    ois_p = float(_ratio(ois_counts[2], ois_counts[3]))
    return BoundaryScores(
        ods_threshold=ods_t, ods_r=ods_r, ods_p=ods_p, ods_f=ods_f,
        ois_r=ois_r, ois_p=ois_p, ois_f=float(_fmeasure(np.float64(ois_r), np.float64(ois_p))),
        ap=_average_precision(r, p),
        per_threshold=np.column_stack([thresh, r, p, f]),
        per_image=np.array(per_image, dtype=float),
    )


def _g(value: float) -> str:
    return f"{value:10g}"  # MATLAB's fprintf '%10g'


def write_eval_files(out_dir: str | os.PathLike[str], scores: BoundaryScores) -> None:
    """Write eval_bdry.txt, eval_bdry_thr.txt and eval_bdry_img.txt as the MATLAB benchmark lays them out."""
    out = Path(out_dir)
    summary = (scores.ods_threshold, scores.ods_r, scores.ods_p, scores.ods_f,
               scores.ois_r, scores.ois_p, scores.ois_f, scores.ap)
    write_text(out / "eval_bdry.txt", " ".join(map(_g, summary)) + "\n")
    write_text(out / "eval_bdry_thr.txt", "".join(" ".join(map(_g, row)) + "\n" for row in scores.per_threshold))
    write_text(
        out / "eval_bdry_img.txt",
        "".join(f"{int(row[0]):10d} " + " ".join(map(_g, row[1:])) + "\n" for row in scores.per_image),
    )


def _load_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"cannot decode prediction {path} ({err}). Rewrite it as a grayscale PNG.") from None
    # Scaled by the bit depth (MATLAB's benchmark divides every PNG by 255, wrong for 16-bit files).
    if mode == "1":
        return pixels.astype(float)
    if mode == "L":
        return pixels / 255.0
    if mode.startswith("I;16"):
        return pixels / 65535.0
    raise UserError(f"prediction {path} is a {mode} PNG; save boundary maps as 1-, 8- or 16-bit grayscale PNGs.")


def _load_npy(path: Path) -> np.ndarray:
    try:
        pb = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
        raise UserError(f"cannot decode prediction {path} ({err}). Save it with numpy.save.") from None
    if pb.ndim != 2 or not (np.issubdtype(pb.dtype, np.floating) or pb.dtype == bool):
        raise UserError(f"prediction {path} is a {pb.dtype} array of shape {pb.shape}; save a 2-D float map.")
    return _in_unit_range(pb.astype(float), path)


def _in_unit_range(pb: np.ndarray, path: Path) -> np.ndarray:
    """`pb` if every value is in [0, 1] (NaN is not); else a UserError naming the file."""
    if not np.all((pb >= 0) & (pb <= 1)):
        problem = "NaN values" if np.isnan(pb).any() else "values outside [0, 1]"
        raise UserError(f"prediction {path} has {problem}; rescale the boundary map to [0, 1] (a ucm2 too).")
    return pb


def load_prediction(path: str | os.PathLike[str]) -> np.ndarray | list[np.ndarray]:
    """A soft boundary map in [0, 1] (.png, .npy, .mat with 'ucm2'), or the boundary maps of .mat 'segs'."""
    path = Path(path)
    if path.suffix == ".png":
        return _load_png(path)
    if path.suffix == ".npy":
        return _load_npy(path)
    mat = _load_mat(path, "prediction")
    if "ucm2" in mat:
        # The benchmark's double-size format: pixels sit at odd (1-based) rows and columns from 3 on.
        return _in_unit_range(np.asarray(mat["ucm2"], dtype=float)[2::2, 2::2], path)
    if "segs" in mat:
        return [seg_boundaries(seg) for seg in mat["segs"].ravel()]
    raise UserError(f"prediction {path} holds neither 'ucm2' nor 'segs'; save one of the benchmark's formats.")


def evaluate_image(
    pred_path: str | os.PathLike[str],
    gt_path: str | os.PathLike[str],
    nthresh: int = DEFAULT_NTHRESH,
    max_dist: float = DEFAULT_MAX_DIST,
    thin: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, (n, 4) counts) of one prediction file; 'segs' files use 1..n_segs as thresholds."""
    gts = load_ground_truth(gt_path)
    pred = load_prediction(pred_path)
    maps = pred if isinstance(pred, list) else [pred]
    for shape in {m.shape for m in maps}:
        if shape != gts[0].shape:
            raise UserError(
                f"prediction {pred_path} is {shape[0]}x{shape[1]} but its ground truth {gt_path} is "
                f"{gts[0].shape[0]}x{gts[0].shape[1]}; predict at the image's own size."
            )
    if isinstance(pred, list):
        return np.arange(1.0, len(pred) + 1), match_binary_maps(pred, gts, max_dist, thin)
    thresh = benchmark_thresholds(nthresh)
    return thresh, match_counts(pred, gts, thresh, max_dist, thin)


def _pairs(pred_dir: Path, gt_dir: Path, max_images: int | None) -> list[tuple[Path, Path]]:
    gts = sorted(gt_dir.glob("*.mat")) if gt_dir.is_dir() else []
    if not gts:
        raise UserError(f"no ground-truth .mat files in {gt_dir}. Point --gt-dir at {GT_LAYOUT}.")
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder not found: {pred_dir}. Fix --pred-dir.")
    preds = sorted(p for p in pred_dir.iterdir() if p.is_file() and p.suffix in PREDICTION_SUFFIXES)
    if not preds:
        raise UserError(f"no *.png, *.npy or *.mat prediction in {pred_dir}. Fix --pred-dir.")
    stems = [p.stem for p in preds]
    duplicated = sorted({s for s in stems if stems.count(s) > 1})
    if duplicated:
        raise UserError(f"several predictions for image(s) {', '.join(duplicated)} in {pred_dir}; keep one format.")
    orphans = [p.name for p in preds if not (gt_dir / f"{p.stem}.mat").is_file()]
    if orphans:
        raise UserError(
            f"{len(orphans)} prediction(s) have no ground truth in {gt_dir} (e.g. {orphans[0]}): name predictions "
            f"<id>.png/.npy/.mat after the ground-truth <id>.mat, or point --gt-dir at the right split."
        )
    # As the official benchmark, every ground truth needs its prediction (the first max_images by name).
    predicted = set(stems)
    if missing := [gt.stem for gt in gts[:max_images] if gt.stem not in predicted]:
        raise UserError(
            f"{len(missing)} of {len(gts[:max_images])} ground truths in {gt_dir} have no prediction in {pred_dir} "
            f"(ids {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}). Predict every image, or pass "
            "--max-images N to score only the first N ground truths by name."
        )
    keep = {gt.stem for gt in gts[:max_images]}
    return [(p, gt_dir / f"{p.stem}.mat") for p in preds if p.stem in keep]


def evaluate_dir(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    nthresh: int = DEFAULT_NTHRESH,
    max_dist: float = DEFAULT_MAX_DIST,
    thin: bool = True,
    workers: int = 1,
    max_images: int | None = None,
) -> BoundaryScores:
    """Score the predictions in `pred_dir` against `gt_dir`/<id>.mat; `workers` > 1 uses processes.

    Every ground truth (or the first `max_images` by name) needs a prediction, as in the official benchmark.
    Images are taken in file-name order (per-image rows are numbered in that order).
    """
    if nthresh < 1 or workers < 1 or max_dist <= 0 or (max_images is not None and max_images < 1):
        raise UserError(f"need nthresh >= 1, workers >= 1, max_dist > 0 and max_images >= 1 (got {nthresh}, "
                        f"{workers}, {max_dist}, {max_images}).")
    pairs = _pairs(Path(pred_dir), Path(gt_dir), max_images)
    preds, gts = zip(*pairs, strict=True)
    args = (preds, gts, [nthresh] * len(pairs), [max_dist] * len(pairs), [thin] * len(pairs))
    progress = {"total": len(pairs), "desc": "bsds-eval", "unit": "img", "dynamic_ncols": True}
    if workers == 1:
        results = list(tqdm(map(evaluate_image, *args), **progress))
    else:
        with ProcessPoolExecutor(min(workers, len(pairs))) as pool:
            try:
                results = list(tqdm(pool.map(evaluate_image, *args), **progress))
            except BaseException:
                pool.shutdown(cancel_futures=True)  # stop at the first bad file, not after the whole folder
                raise
    thresh = results[0][0]
    for (path, _), (other, _) in zip(pairs, results, strict=True):
        if not np.array_equal(other, thresh):
            raise UserError(
                f"{path} gives {len(other)} thresholds but {pairs[0][0]} gives {len(thresh)}: every 'segs' file "
                "must hold the same number of segmentations, and formats cannot be mixed."
            )
    return collect([counts for _, counts in results], thresh)


def _run(args: argparse.Namespace) -> None:
    scores = evaluate_dir(args.pred_dir, args.gt_dir, args.nthresh, args.max_dist, workers=args.workers,
                          max_images=args.max_images)
    write_eval_files(args.out_dir, scores)
    print(
        f"{len(scores.per_image)} images: ODS F {scores.ods_f:.4f} (t={scores.ods_threshold:.3f}), "
        f"OIS F {scores.ois_f:.4f}, AP {scores.ap:.4f}; eval_bdry*.txt in {args.out_dir}"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bsds-eval", help="BSDS500 boundary benchmark (ODS/OIS/AP)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred-dir", type=Path, required=True, help="predicted boundary maps <id>.png/.npy/.mat")
    parser.add_argument("--gt-dir", type=Path, required=True, help="BSDS500 data/groundTruth/<split>")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for eval_bdry*.txt")
    parser.add_argument("--nthresh", type=int, default=DEFAULT_NTHRESH, help="thresholds on the PR curve")
    parser.add_argument("--max-dist", type=float, default=DEFAULT_MAX_DIST,
                        help="match tolerance, fraction of the image diagonal")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--max-images", type=int, default=None,
                        help="score the first N ground truths by name (as bsds-predict --max-images); default all")
    parser.set_defaults(func=_run)
