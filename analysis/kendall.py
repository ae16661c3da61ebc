"""Kendall's tau between alignment-uniformity and task performance (dense_alignment_uniformity.md Sec. 4.1).

The paper: "Given N pre-trained models, the two losses (L_a, L_u), and the downstream task performance
P_task are reordered with min-max normalization across N models as r(L_a), r(L_u), and r(P_task)",
then counts ordered / disordered pairs "in {r(L_a_i) + r(L_u_i), r(P_i)}". Our reading: r(.) IS the
min-max normalisation (x -> (x - min) / (max - min)), not a rank; x_i = r(L_a_i) + r(L_u_i) is the sum of
the two normalised losses (so a model's x weighs its relative L_a and L_u equally, by value), and
y_i = r(P_i). Ranking x or y afterwards would change nothing: tau depends only on the pairwise order.
Summing ranks instead of normalised values would (the gaps between models would be lost); that is not
what the paper's notation says, since r(P_task) is a normalised value too. T and U count pairs tied only
in x, respectively only in y; pairs tied in both count nowhere: Kendall's tau-b, as `scipy.stats.kendalltau`.

Ties are exact comparisons of float64 values: two models with equal (L_a, L_u) get bit-identical x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import UserError


@dataclass(frozen=True)
class KendallTau:
    """tau-b with its pair counts; `tau` is NaN when undefined, with `reason` saying why (else None)."""

    tau: float
    concordant: int  # P
    discordant: int  # Q
    ties_x: int  # T: pairs tied in x only
    ties_y: int  # U: pairs tied in y only
    n: int
    reason: str | None = None


def _finite_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise UserError(f"{name} must be one value per model (a 1-d sequence), got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise UserError(f"{name} holds non-finite values {array[~np.isfinite(array)].tolist()}; "
                        "re-measure the models that produced them.")
    return array


def min_max(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """(v - min) / (max - min) across the models, in [0, 1]. All-equal values carry no order: all zeros."""
    array = _finite_vector(values, "values")
    if array.size == 0:
        return array
    span = array.max() - array.min()
    return np.zeros_like(array) if span == 0 else (array - array.min()) / span


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, x_name: str = "x",
                  y_name: str = "y") -> KendallTau:
    """tau = (P - Q) / sqrt((P + Q + T) (P + Q + U)) over all N (N - 1) / 2 pairs of models.

    Undefined (tau NaN, with a reason naming `x_name` / `y_name`) for fewer than 2 models, or when all x
    or all y are tied (zero denominator); scipy returns NaN in the same cases.
    """
    x, y = _finite_vector(x, "x"), _finite_vector(y, "y")
    if x.shape != y.shape:
        raise UserError(f"x and y must have one value per model each, got {x.size} and {y.size}.")
    n = x.size
    if n < 2:
        return KendallTau(math.nan, 0, 0, 0, 0, n, reason=f"{n} model" + ("" if n == 1 else "s"))
    # Sign of every pairwise difference; the strict upper triangle holds each unordered pair once.
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    sign_x = np.sign(x[:, None] - x[None, :])[upper]
    sign_y = np.sign(y[:, None] - y[None, :])[upper]
    product = sign_x * sign_y
    concordant, discordant = int((product > 0).sum()), int((product < 0).sum())
    ties_x = int(((sign_x == 0) & (sign_y != 0)).sum())
    ties_y = int(((sign_x != 0) & (sign_y == 0)).sum())
    counts = (concordant, discordant, ties_x, ties_y, n)
    if (sign_x == 0).all():
        return KendallTau(math.nan, *counts, reason=f"{x_name} tied across all {n} models")
    if (sign_y == 0).all():
        return KendallTau(math.nan, *counts, reason=f"{y_name} tied across all {n} models")
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return KendallTau((concordant - discordant) / denominator, *counts)


def alignment_uniformity_tau(align: Sequence[float] | np.ndarray, uniform: Sequence[float] | np.ndarray,
                             performance: Sequence[float] | np.ndarray) -> KendallTau:
    """The paper's tau between x = r(L_a) + r(L_u) and y = r(P) (r: min-max normalisation across the models).

    Negative tau: lower (better) alignment-uniformity goes with higher performance.
    """
    align, uniform = _finite_vector(align, "L_a"), _finite_vector(uniform, "L_u")
    performance = _finite_vector(performance, "performance")
    if not align.size == uniform.size == performance.size:
        raise UserError(f"L_a, L_u and performance must have one value per model each, got {align.size}, "
                        f"{uniform.size} and {performance.size}.")
    return kendall_tau_b(min_max(align) + min_max(uniform), min_max(performance), x_name="r(L_a) + r(L_u)",
                         y_name="performance")
