"""Export: the online backbone as a torchvision ResNet state dict, plus meta.json.

Converters to Detectron2 and mmseg read only these two files (ARCHITECTURE.md contracts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.errors import UserError
from core.io import save_torch, write_json
from pretrain.views import IMAGENET_MEAN, IMAGENET_STD

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


def export(model_state: dict[str, torch.Tensor], meta: dict[str, Any], out_dir: str | Path) -> None:
    """Write backbone.pth then meta.json (last, so a present meta.json means a complete export)."""
    out = Path(out_dir)
    save_torch(backbone_state(model_state), out / "backbone.pth")
    write_json(out / "meta.json", {**meta, "input": {"format": "RGB", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}})


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A training state written by `train`, loaded without executing pickled code."""
    if not Path(path).is_file():
        raise UserError(f"training state not found: {path}. Run `python -m pretrain train` first.")
    return torch.load(path, map_location="cpu", weights_only=True)
