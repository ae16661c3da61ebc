"""Label propagation by feature similarity (Zhang & Maire 2020, Sec. 5.3):

    y_t(i) = sum_k sum_j sim(F_t(i), F_{t-k}(j)) y_{t-k}(j)

over the k previous frames, j the 10 nearest neighbours of pixel i in frame t-k, features
"augmented with spatial coordinates", y one-hot. Choices where the text is silent (all protocol
values, so the CRW-style alternatives stay one setting away):

- neighbours are the `topk` most similar cells *of each context frame* (the double sum over k and j);
  CRW (Jabri et al. 2020, `code/utils/test_utils.py`) takes the top-k over all context frames jointly.
- spatial augmentation: a cell's vector is [F(i), w c(i)] with F unit-norm and c its grid position in
  units of the grid's longer side, and similarity is 1 - |a - b|^2 / 2 of the augmented vectors,
  i.e. cos(F_a, F_b) - w^2 |c_a - c_b|^2 / 2: exactly the cosine for w = 0, and the nearest neighbours
  are the nearest augmented vectors (a plain cosine of [F, c] would depend on where the origin is).
- weights: the similarities themselves (`temperature` None), clipped at 0 so that an anti-similar cell
  cannot vote against its label; a cell with no positive weight takes its nearest neighbour's label.
  With a temperature, CRW's softmax over all selected neighbours of sim / temperature.
- labels: one-hot (the paper's y); `soft_labels` keeps the normalised distributions, as CRW does.
- context: the k previous frames only (the paper's text); `keep_first_frame` adds the annotated first
  frame to every context, as CRW's `long_mem=[0]` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Query cells per similarity block: bounds memory at queries x context cells floats.
_QUERY_BLOCK = 1024


@dataclass(frozen=True)
class PropagationSettings:
    """The propagation choices of the module docstring (defaults: the paper's text, without coordinates)."""

    context_frames: int = 2  # k
    topk: int = 10
    coord_weight: float = 0.0  # w
    temperature: float | None = None
    soft_labels: bool = False
    keep_first_frame: bool = False


def grid_coordinates(height: int, width: int) -> torch.Tensor:
    """Cell centres [h * w, 2] (row, column) in units of the grid's longer side, row-major."""
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) / max(height, width)
    cols = (torch.arange(width, dtype=torch.float32) + 0.5) / max(height, width)
    return torch.cartesian_prod(rows, cols)


def similarity(query: torch.Tensor, keys: torch.Tensor, query_xy: torch.Tensor, keys_xy: torch.Tensor,
               coord_weight: float) -> torch.Tensor:
    """[n, m]: cosine of unit features [n, C] x [m, C] minus coord_weight^2 / 2 x squared cell distance."""
    sim = query @ keys.T
    if coord_weight:
        sim = sim - 0.5 * coord_weight**2 * torch.cdist(query_xy, keys_xy).square()
    return sim


def one_hot(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """[h, w] integer labels -> [L, h, w] float one-hot."""
    return F.one_hot(labels.long(), num_labels).permute(2, 0, 1).float()


def predict(query: torch.Tensor, context: list[tuple[torch.Tensor, torch.Tensor]],
            settings: PropagationSettings) -> torch.Tensor:
    """Label distribution [L, h, w] of a frame with unit features `query` [C, h, w], from context frames'
    (unit features [C, h, w], labels [L, h, w]); every context frame must share the query's grid."""
    channels, height, width = query.shape
    if bad := [tuple(feats.shape) for feats, _ in context if feats.shape != query.shape]:
        raise ValueError(f"context feature maps {bad} differ from the query's {tuple(query.shape)}")
    xy = grid_coordinates(height, width)
    queries = query.reshape(channels, -1).T
    keys = [(feats.reshape(channels, -1).T, labels.reshape(labels.shape[0], -1).T) for feats, labels in context]
    blocks = []
    for start in range(0, queries.shape[0], _QUERY_BLOCK):
        q, q_xy = queries[start:start + _QUERY_BLOCK], xy[start:start + _QUERY_BLOCK]
        weights, votes = [], []
        for key_feats, key_labels in keys:
            sim = similarity(q, key_feats, q_xy, xy, settings.coord_weight)
            top, index = sim.topk(min(settings.topk, sim.shape[1]), dim=1)
            weights.append(top)
            votes.append(key_labels[index])  # [n, topk, L]
        weight, vote = torch.cat(weights, dim=1), torch.cat(votes, dim=1)
        if settings.temperature is None:
            best = weight.argmax(dim=1, keepdim=True)
            weight = weight.clamp(min=0)
            # Rows without a positive similarity fall back to their single nearest neighbour.
            weight.scatter_add_(1, best, (weight.sum(dim=1, keepdim=True) == 0).float())
        else:
            weight = torch.softmax(weight / settings.temperature, dim=1)
        blocks.append(torch.einsum("nk,nkl->nl", weight, vote))
    scores = torch.cat(blocks).T.reshape(-1, height, width)
    return scores / scores.sum(dim=0, keepdim=True).clamp(min=1e-12)


def propagate(frames: Iterable[torch.Tensor], first_labels: torch.Tensor,
              settings: PropagationSettings) -> Iterator[torch.Tensor]:
    """Yield the label distribution [L, h, w] of every frame after the first.

    frames: unit features [C, h, w] per frame, the first being the annotated one (consumed lazily, so
    only the context frames are held in memory); first_labels: its labels [L, h, w] on the same grid.
    """
    iterator = iter(frames)
    first = (next(iterator), first_labels)
    recent = [first]  # the last k frames
    for feats in iterator:
        context = recent
        if settings.keep_first_frame and context[0] is not first:
            context = [first, *context]
        scores = predict(feats, context, settings)
        yield scores
        labels = scores if settings.soft_labels else one_hot(scores.argmax(dim=0), scores.shape[0])
        recent = [*recent, (feats, labels)][-settings.context_frames:]


def upsample_labels(distribution: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels [H, W] of a distribution [L, h, w]: bilinear upsampling to `size`, then the argmax
    (ties to the lower label, as argmax) taken one label at a time: much faster than a dim-0 argmax."""
    up = F.interpolate(distribution[None], size=size, mode="bilinear", align_corners=False)[0]
    best, labels = up[0].clone(), torch.zeros(size, dtype=torch.long)
    for label in range(1, up.shape[0]):
        labels[up[label] > best] = label
        best = torch.maximum(best, up[label])
    return labels
