"""pairs.png of `python -m analysis correspondence`: the positive pairs of DenseCL's argmax and of HoughCL's
PHM in the style of HoughCL Fig. 1 (the two views side by side, the most and least confident matches drawn
as lines; one row per image and rule)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend needed
from matplotlib.lines import Line2D

from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.io import atomic_path

if TYPE_CHECKING:
    from analysis.correspondence import PairMatches

# HoughCL Fig. 1 draws "the five pairs with the highest confidence" and "the 20 pairs with the lowest".
BEST_PAIRS, WORST_PAIRS = 5, 20
GAP = 8  # pixels between the two views


def displayable(view: torch.Tensor) -> torch.Tensor:
    """A normalised view [3, S, S] as an RGB array [S, S, 3] in [0, 1]."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (view * std + mean).clamp(0, 1).permute(1, 2, 0)


def drawn_pairs(pairs: PairMatches) -> tuple[list[int], list[int]]:
    """View-1 cells of the BEST_PAIRS most and WORST_PAIRS least confident eligible pairs (disjoint)."""
    cells = pairs.eligible.nonzero().flatten()
    order = cells[torch.argsort(pairs.score[cells], descending=True, stable=True)].tolist()
    best = order[:BEST_PAIRS]
    worst = order[BEST_PAIRS:][::-1][:WORST_PAIRS]
    return best, worst


def cell_centre(cell: int, grid: int, size: int, x_offset: float = 0.0) -> tuple[float, float]:
    """Pixel (x, y) of a row-major cell's centre in a size x size view shown from column x_offset
    (imshow puts pixel centres at integers, hence the -0.5)."""
    step = size / grid
    return x_offset + (cell % grid + 0.5) * step - 0.5, (cell // grid + 0.5) * step - 0.5


def draw_pairs(examples: Sequence[tuple[str, torch.Tensor, torch.Tensor, dict[str, PairMatches]]],
               path: str | Path) -> None:
    """One row per example (image name, view 1, view 2, its pairs by rule) and rule; green = correct pair,
    red = wrong; solid = the most confident pairs, dashed = the least. An empty `examples` gives a note."""
    rows = [(f"{name} ({rule})", view1, view2, pairs) for name, view1, view2, by_rule in examples
            for rule, pairs in by_rule.items()]
    fig = Figure(figsize=(7, 3.6 * max(1, len(rows))))
    if not rows:
        fig.text(0.5, 0.5, "figure_images = 0: no pairs drawn", ha="center", va="center")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0] if rows else []
    for ax, (name, view1, view2, pairs) in zip(axes, rows, strict=True):
        size, grid = view1.shape[-1], int(round(pairs.match.numel() ** 0.5))
        canvas = torch.ones(size, 2 * size + GAP, 3)
        canvas[:, :size], canvas[:, size + GAP:] = displayable(view1), displayable(view2)
        ax.imshow(canvas.numpy())
        best, worst = drawn_pairs(pairs)
        for cells, style, width in ((worst, "--", 1.0), (best, "-", 2.2)):
            for cell in cells:
                x1, y1 = cell_centre(cell, grid, size)
                x2, y2 = cell_centre(int(pairs.match[cell]), grid, size, size + GAP)
                colour = "limegreen" if pairs.correct[cell] else "red"
                ax.plot([x1, x2], [y1, y2], style, color=colour, linewidth=width, marker="o", markersize=3)
        hits, cells = int(pairs.correct.sum()), int(pairs.eligible.sum())
        ax.set_title(f"{name}: {hits}/{cells} pairs correct ({grid}x{grid} cells)", fontsize=9)
        ax.set_axis_off()
    if rows:
        handles = [Line2D([], [], color="limegreen", label="correct"), Line2D([], [], color="red", label="wrong"),
                   Line2D([], [], color="gray", linestyle="-", linewidth=2.2, label=f"{BEST_PAIRS} most confident"),
                   Line2D([], [], color="gray", linestyle="--", label=f"{WORST_PAIRS} least confident")]
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
        fig.suptitle("Positive pairs of DenseCL's argmax and HoughCL's PHM: view 1 (left) -> view 2 (right)",
                     fontsize=10)
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
