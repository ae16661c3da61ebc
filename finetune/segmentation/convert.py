"""Convert a torchvision ResNet backbone (`backbone.pth`) into an mmseg checkpoint.

Output: `{"state_dict": {"backbone." + key: tensor}, "meta": {"arch", "source"}}`, i.e. a partial
segmentor checkpoint as mmengine's `load_checkpoint` reads it. The segmentation stage loads it
through the backbone's `init_cfg=dict(type="Pretrained", checkpoint=..., prefix="backbone.")`
rather than the Runner's `load_from`: with `resume=True`, the Runner would treat `load_from` as a
training state to resume (optimizer, iteration), whereas `init_cfg` only initialises the
backbone and lets a resumed checkpoint override it.

mmseg's `ResNet` (not `ResNetV1c`) uses torchvision's parameter names, so keys map one to one;
the converter checks that the key set and shapes equal those of mmseg's ResNet of that depth,
because `Pretrained` loads non-strictly and would silently keep random weights otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.errors import UserError
from core.io import read_json, save_torch
from finetune.common import EXPORT_FIX, abbreviate, load_backbone
from finetune.segmentation.compat import ensure_mmcv_ops

DEPTHS = {"resnet18": 18, "resnet50": 50}
PREFIX = "backbone."


def backbone_arch(backbone: Path) -> str:
    """The architecture recorded in the meta.json written beside `backbone` by the export."""
    meta_path = backbone.with_name("meta.json")
    if not meta_path.is_file():
        raise UserError(f"{meta_path} is missing; {EXPORT_FIX} (it writes backbone.pth and meta.json together).")
    arch = read_json(meta_path).get("arch")
    if arch not in DEPTHS:
        raise UserError(f"{meta_path} has arch {arch!r}; the segmentation stage supports {sorted(DEPTHS)}.")
    return arch


def check_mmseg_keys(state_dict: dict[str, torch.Tensor], arch: str, source: Path) -> None:
    """UserError unless `state_dict` has exactly the keys and shapes of mmseg's ResNet for `arch`."""
    ensure_mmcv_ops()
    from mmseg.models.backbones import ResNet

    with torch.device("meta"):  # only names and shapes are needed: allocate nothing
        expected = {key: value.shape for key, value in ResNet(depth=DEPTHS[arch]).state_dict().items()}
    problems = []
    if unexpected := sorted(state_dict.keys() - expected.keys()):
        problems.append(f"unexpected keys {abbreviate(unexpected)}")
    if missing := sorted(expected.keys() - state_dict.keys()):
        problems.append(f"missing keys {abbreviate(missing)}")
    if reshaped := sorted(k for k in expected.keys() & state_dict.keys() if state_dict[k].shape != expected[k]):
        problems.append(f"keys with shapes other than mmseg's {arch} {abbreviate(reshaped)}")
    if problems:
        raise UserError(f"{source} does not match mmseg's {arch} backbone: {'; '.join(problems)}; {EXPORT_FIX}.")


def convert(backbone: str | os.PathLike[str], out: str | os.PathLike[str]) -> str:
    """Write the mmseg checkpoint for `backbone` to `out` atomically; return the architecture."""
    backbone = Path(backbone)
    state_dict = load_backbone(backbone)
    arch = backbone_arch(backbone)
    check_mmseg_keys(state_dict, arch, backbone)
    checkpoint = {
        "state_dict": {PREFIX + key: value for key, value in state_dict.items()},
        "meta": {"arch": arch, "source": str(backbone)},
    }
    save_torch(checkpoint, out)
    return arch


def read_arch(weights: Path) -> str:
    """The architecture of a `convert` output; UserError for a missing or foreign file."""
    fix = "create it with `python -m finetune convert-mmseg`"
    if not weights.is_file():
        raise UserError(f"segmentation weights {weights} do not exist; {fix}.")
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or non-tensor pickles
        raise UserError(f"cannot read {weights} as a torch checkpoint ({err}); {fix}.") from err
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    arch = meta.get("arch") if isinstance(meta, dict) else None
    if arch not in DEPTHS:
        raise UserError(f"{weights} is not a convert-mmseg checkpoint (no supported meta.arch); {fix}.")
    return arch
