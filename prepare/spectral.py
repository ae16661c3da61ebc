"""The spectral (globalisation) edge signal of gPb (Arbelaez et al., TPAMI 2011, Sec. 3.3).

Hierarchical grouping (Sec. 4.1) adds "a spectral edge signal (following [2])" to the structured
edges before OWT-UCM. As in gPb: an affinity between pixels within radius r from the intervening
contour cue, W_ij = exp(-max_{p on segment ij} E(p) / rho); the generalised eigenproblem
(D - W) v = lambda D v; the signal is sum_k |grad_theta v_k| / sqrt(lambda_k) over the k smallest
non-trivial eigenvectors, maximised over orientations. Computed on a downscaled map (the
eigenproblem is the cost) and resized back; normalised to [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse.linalg import eigsh

# gPb's values (Arbelaez et al. 2011, Sec. 3.3): radius 5 px, rho 0.1, 16 eigenvectors, 8 orientations.
RADIUS = 5
RHO = 0.1
ORIENTATIONS = 8


def _intervening_contour(edges: np.ndarray, radius: int, rho: float) -> sparse.csr_matrix:
    """Affinities between every pixel and its neighbours within `radius` (both directions)."""
    height, width = edges.shape
    index = np.arange(height * width).reshape(height, width)
    rows, cols, values = [], [], []
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            # Half of the offsets; the other half comes from symmetry.
            if (dy == 0 and dx <= 0) or dy * dy + dx * dx > radius * radius:
                continue
            y0, y1 = 0, height - dy
            x0, x1 = max(0, -dx), min(width, width - dx)
            steps = max(abs(dy), abs(dx))
            strongest = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
            for step in range(steps + 1):
                # Nearest pixel on the segment at this step.
                oy, ox = round(dy * step / steps), round(dx * step / steps)
                strongest = np.maximum(strongest, edges[y0 + oy : y1 + oy, x0 + ox : x1 + ox])
            rows.append(index[y0:y1, x0:x1].ravel())
            cols.append(index[y0 + dy : y1 + dy, x0 + dx : x1 + dx].ravel())
            values.append(np.exp(-strongest.ravel() / rho))
    row, col, value = np.concatenate(rows), np.concatenate(cols), np.concatenate(values)
    size = height * width
    return sparse.coo_matrix((np.concatenate([value, value]), (np.concatenate([row, col]), np.concatenate([col, row]))),
                             shape=(size, size)).tocsr()


def spectral_edges(edges: np.ndarray, max_side: int = 160, eigenvectors: int = 16) -> np.ndarray:
    """The spectral edge signal of an edge map in [0, 1], same shape, scaled to [0, 1]."""
    height, width = edges.shape
    scale = min(1.0, max_side / max(height, width))
    small = cv2.resize(edges.astype(np.float32), (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    affinity = _intervening_contour(small, RADIUS, RHO)
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    inv_sqrt = sparse.diags(1.0 / np.sqrt(degree))
    normalised = inv_sqrt @ affinity @ inv_sqrt
    # (D - W) v = lambda D v  <=>  D^-1/2 W D^-1/2 u = (1 - lambda) u with v = D^-1/2 u: the largest
    # eigenvalues of the normalised affinity. A fixed start vector keeps ARPACK deterministic.
    count = min(eigenvectors + 1, small.size - 2)
    mu, vectors = eigsh(normalised, k=count, which="LA", v0=np.ones(small.size), tol=1e-6)
    order = np.argsort(-mu)[1:]  # drop the trivial constant eigenvector
    lambdas = np.clip(1.0 - mu[order], 1e-9, None)
    vectors = (inv_sqrt @ vectors[:, order]).reshape(small.shape[0], small.shape[1], -1)
    angles = np.arange(ORIENTATIONS) * np.pi / ORIENTATIONS
    signal = np.zeros((ORIENTATIONS, *small.shape), dtype=np.float64)
    for k in range(vectors.shape[2]):
        vector = vectors[:, :, k]
        grad_x = cv2.Sobel(vector, cv2.CV_64F, 1, 0, ksize=3)
        grad_y = cv2.Sobel(vector, cv2.CV_64F, 0, 1, ksize=3)
        for o, angle in enumerate(angles):
            signal[o] += np.abs(np.cos(angle) * grad_x + np.sin(angle) * grad_y) / np.sqrt(lambdas[k])
    strongest = signal.max(axis=0).astype(np.float32)
    strongest = cv2.resize(strongest, (width, height), interpolation=cv2.INTER_LINEAR)
    return strongest / max(float(strongest.max()), 1e-12)
