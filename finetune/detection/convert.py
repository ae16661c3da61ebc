"""Convert a torchvision ResNet backbone (`backbone.pth`) into a Detectron2 weights pickle.

The renaming follows MoCo's `detection/convert-pretrain-to-detectron2.py`. The pickle is marked
`matching_heuristics`, so Detectron2 matches names by suffix: `res5.*` lands in
`roi_heads.res5.*` for the C4 model, every other stage in `backbone.*`.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

from core.errors import UserError
from core.io import atomic_path
from finetune.common import infer_arch, load_backbone

# The torchvision ResNets Detectron2 builds, with their depth.
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
_RENAMES = (
    (re.compile(r"^(conv1|bn1)\."), r"stem.\1."),
    (re.compile(r"^layer(\d)\."), lambda m: f"res{int(m.group(1)) + 1}."),
    (re.compile(r"(^|\.)bn(\d)\."), r"\1conv\2.norm."),
    (re.compile(r"\.downsample\.0\."), ".shortcut."),
    (re.compile(r"\.downsample\.1\."), ".shortcut.norm."),
)


def detectron2_name(key: str) -> str:
    """The Detectron2 ResNet name of a torchvision ResNet parameter, e.g. bn1.weight -> stem.conv1.norm.weight."""
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def convert(backbone: str | os.PathLike[str], out: str | os.PathLike[str]) -> str:
    """Write the Detectron2 pickle for `backbone` to `out` atomically; return the architecture."""
    state_dict = load_backbone(backbone)
    arch = infer_arch(state_dict)
    model = {detectron2_name(key): value.numpy() for key, value in state_dict.items()}
    with atomic_path(out) as tmp, tmp.open("wb") as f:
        # "arch" is ours: the detection stage checks it against --arch, as Detectron2 would only
        # warn about mismatched shapes and train from random weights.
        pickle.dump({"model": model, "__author__": "densebench", "matching_heuristics": True, "arch": arch}, f)
    return arch


def read_arch(weights: str | os.PathLike[str]) -> str | None:
    """The architecture recorded by `convert` in a Detectron2 pickle (None for pickles from elsewhere)."""
    path = Path(weights)
    if not path.is_file() or path.suffix != ".pkl":  # Detectron2 reads only *.pkl as a weights pickle
        raise UserError(
            f"detection weights {path} are not an existing .pkl; create them with `python -m finetune convert-d2`."
        )
    with path.open("rb") as f:
        data = pickle.load(f, encoding="latin1")  # Detectron2's own format is a pickle, loaded the same way
    return data.get("arch") if isinstance(data, dict) else None
