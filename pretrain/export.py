"""Export: the online backbone as a torchvision ResNet state dict, the method's dense embedding head, meta.json.

Converters to Detectron2 and mmseg read only backbone.pth and meta.json (README "Architecture", its contracts);
the frozen dense evaluations also read embedding.pth, whose tensors are empty for a method without an embedding
head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from core.io import save_torch, write_json

BACKBONE_PREFIX = "backbone."


def backbone_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The online backbone's tensors of a method's state dict, under torchvision names."""
    state = {k[len(BACKBONE_PREFIX):]: v for k, v in model_state.items() if k.startswith(BACKBONE_PREFIX)}
    if not state:
        raise UserError(
            "the checkpoint holds no 'backbone.*' tensors: it is not a densebench training state. "
            "Pass the state.pth written by `python -m pretrain train`."
        )
    return state


def embedding_state(model_state: dict[str, torch.Tensor], head: str | None) -> dict[str, torch.Tensor]:
    """The tensors of the method's embedding head (`runs.METHOD_EMBEDDING`), without its prefix."""
    if head is None:
        return {}
    prefix = f"{head}."
    state = {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
    if not state:
        raise UserError(f"the training state holds no '{prefix}*' tensors, the method's embedding head: pass the "
                        "state.pth of a run of this method.")
    return state


def export(model_state: dict[str, torch.Tensor], meta: dict[str, Any], out_dir: str | Path,
           embedding_head: str | None) -> None:
    """Write backbone.pth, embedding.pth, then meta.json (last, so a present meta.json means a complete export)."""
    out = Path(out_dir)
    save_torch(backbone_state(model_state), out / "backbone.pth")
    save_torch(embedding_state(model_state, embedding_head), out / "embedding.pth")
    write_json(out / "meta.json", {**meta, "embedding": embedding_head,
                                   "input": {"format": "RGB", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}})


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A training state written by `train`, loaded without executing pickled code."""
    if not Path(path).is_file():
        raise UserError(f"training state not found: {path}. Run `python -m pretrain train` first.")
    return torch.load(path, map_location="cpu", weights_only=True)
