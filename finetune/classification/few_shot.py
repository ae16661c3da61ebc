"""Few-shot classification on frozen features (LC-loss, Islam et al., Table 7: "pre-trained models as
fixed feature extractors", 5-way 5-shot with a logistic regression classifier, top-1 accuracy averaged
over 600 episodes).

The paper gives no further detail; its authors' earlier study of the same protocol (Islam et al.,
ICCV 2021, LC-loss ref. [25], asrafulashiq/transfer_broad) fixes the rest:
- 15 query images per class, 600 episodes (configs.py: --n_query 15, --num_episodes 600); each
  episode draws `ways` classes, then shots + queries distinct images of each class;
- features: the ResNet's global-average-pooled output, L2-normalised as x / (||x|| + 1e-6)
  (--ft_normalize true, system/utils_finetune.py `normalize`);
- classifier: sklearn LogisticRegression(random_state=0, solver='lbfgs', max_iter=1000), multinomial
  (utils_finetune.py `LR`), fit on the support set of each episode;
- images: Resize([int(224 * 1.15)] * 2) + CenterCrop(224), ImageNet mean/std (data_loader/utils_data.py
  TransformLoader, 'few_shot_test').
The 95 % confidence interval is 1.96 * std / sqrt(episodes) of the episode accuracies, with numpy's
population std (as linusericsson/ssl-transfer's few_shot.py prints it).

Episodes depend on the seed alone (episode e draws from sample_generator(seed, 0, e)); only the images
they use are passed through the backbone, and those features are cached in <out>/work/.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from core.errors import UserError
from core.io import write_json
from core.provenance import provenance
from finetune.classification.data import read_split
from finetune.classification.features import (
    ImageViews,
    backbone_id,
    build_encoder,
    cached,
    check_device,
    eval_view,
    extract,
    image_list_key,
)
from finetune.classification.protocols import FewShotProtocol
from finetune.common import abbreviate
from pretrain.data import sample_generator

NORM_EPS = 1e-6  # transfer_broad's normalize()
Z_95 = 1.96


@dataclass(frozen=True)
class Episode:
    """Image indices of one episode; support and query are class-major (class 0's images first)."""

    classes: tuple[int, ...]
    support: tuple[int, ...]  # ways * shots
    query: tuple[int, ...]  # ways * queries


def sample_episodes(groups: list[list[int]], ways: int, shots: int, queries: int, episodes: int, seed: int,
                    names: Sequence[str] | None = None) -> list[Episode]:
    """`episodes` episodes over the classes of `groups` (image indices per class; empty ones are skipped);
    `names`: the class names for error messages."""
    eligible = [label for label, group in enumerate(groups) if group]
    names = names or [str(label) for label in range(len(groups))]
    if short := [f"{names[c]} ({len(groups[c])} images)" for c in eligible if len(groups[c]) < shots + queries]:
        raise UserError(f"classes {abbreviate(short)} have fewer images than shots + queries = {shots + queries}; "
                        "lower the protocol's shots or queries, or use a split with more images per class.")
    if len(eligible) < ways:
        raise UserError(f"the split has {len(eligible)} classes with images, fewer than ways = {ways}; lower the "
                        "protocol's ways or use a dataset with more classes.")
    out = []
    for episode in range(episodes):
        gen = sample_generator(seed, 0, episode)
        classes = [eligible[i] for i in torch.randperm(len(eligible), generator=gen)[:ways].tolist()]
        support: list[int] = []
        query: list[int] = []
        for label in classes:
            picked = [groups[label][i] for i in torch.randperm(len(groups[label]), generator=gen)[:shots + queries]]
            support += picked[:shots]
            query += picked[shots:]
        out.append(Episode(tuple(classes), tuple(support), tuple(query)))
    return out


def _l2_normalise(features: np.ndarray) -> np.ndarray:
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + NORM_EPS)


def episode_accuracy(support: np.ndarray, query: np.ndarray, ways: int, l2_normalize: bool) -> float:
    """Top-1 accuracy (percent) on class-major `query` features of logistic regression fit on class-major
    `support` features."""
    shots, queries = len(support) // ways, len(query) // ways
    if l2_normalize:
        support, query = _l2_normalise(support), _l2_normalise(query)
    classifier = LogisticRegression(random_state=0, solver="lbfgs", max_iter=1000)
    classifier.fit(support, np.repeat(np.arange(ways), shots))
    return 100.0 * float(np.mean(classifier.predict(query) == np.repeat(np.arange(ways), queries)))


def confidence_interval(accuracies: list[float]) -> tuple[float, float]:
    """Mean and 95 % half-width 1.96 * std / sqrt(n) (population std, as the reference code)."""
    values = np.asarray(accuracies, dtype=np.float64)
    return float(values.mean()), float(Z_95 * values.std() / math.sqrt(len(values)))


def run(*, data_root: Path, layout: str, backbone: Path | None, arch: str, protocol: FewShotProtocol, seed: int,
        threads: int, device: str, out: Path) -> dict[str, Any]:
    """Evaluate `protocol.episodes` episodes and write `out`/metrics.json (last, atomically)."""
    images = read_split(data_root, layout, protocol.split)
    groups = images.by_class()
    episodes = sample_episodes(groups, protocol.ways, protocol.shots, protocol.queries, protocol.episodes, seed,
                               images.classes)
    check_device(device)
    torch.set_num_threads(threads)
    encoder = build_encoder(arch, backbone, seed)
    used = sorted({index for episode in episodes for index in episode.support + episode.query})
    paths = [images.paths[index] for index in used]
    weights = backbone_id(backbone, seed)
    view = partial(eval_view, resize=protocol.resize, crop=protocol.crop)
    key = {"backbone": weights, "arch": arch, "images": image_list_key(paths), "resize": protocol.resize,
           "crop": protocol.crop}
    features = cached(out / "work" / "features.pt", key, lambda: extract(
        encoder, ImageViews(paths, view), protocol.batch_size, protocol.workers, device, "features")).numpy()
    row = {index: r for r, index in enumerate(used)}

    accuracies = []
    with threadpool_limits(limits=threads):  # lbfgs's BLAS would take every core
        for episode in tqdm(episodes, desc=f"{protocol.ways}-way {protocol.shots}-shot", unit="episode",
                            dynamic_ncols=True):
            support = features[[row[i] for i in episode.support]]
            query = features[[row[i] for i in episode.query]]
            accuracies.append(episode_accuracy(support, query, protocol.ways, protocol.l2_normalize))
    mean, ci95 = confidence_interval(accuracies)
    summary = {
        "protocol": "few_shot",
        "metrics": {"top1": mean, "ci95": ci95},
        "weights": None if backbone is None else str(backbone),
        "episodes": protocol.episodes,
        "classes": sum(1 for group in groups if group),
        "images": len(used),
        "provenance": provenance(protocol.as_dict(), seed),
    }
    write_json(out / "metrics.json", summary)
    print(f"few-shot {protocol.ways}-way {protocol.shots}-shot: top1 {mean:.2f} +- {ci95:.2f}")
    return summary
