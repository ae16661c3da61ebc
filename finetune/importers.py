"""Import published self-supervised checkpoints as densebench backbones (torchvision ResNet, no fc).

Each layout says where a repository's saved checkpoint keeps the online (query) backbone: the
container (a top-level key, or the file itself), the key prefix, and how names map to torchvision's.
Everything else (key/momentum encoders, projectors, predictors, queues, optimizer, scheduler, amp
state, the pickled `argparse.Namespace` of PixPro/SoCo) is ignored. Classification and projection
heads named `fc.*` inside the backbone prefix are dropped. Every other tensor under the prefix must
have a torchvision ResNet name, and every torchvision tensor must be there with its shape; the one
exception is `num_batches_tracked`, BatchNorm's step counter, which checkpoints saved before PyTorch
0.4.1 (torchvision's own ResNet weights among them) lack: it is filled with 0, as BatchNorm never
reads it when its momentum is set.

Files are read with `torch.load(weights_only=True)`, allowing `argparse.Namespace` besides tensors
and containers, so a checkpoint can never run code.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision

from core.errors import UserError
from finetune.common import abbreviate, infer_arch, load_weights_only

_FIX = "pass the checkpoint's --layout ({layouts}), or save its backbone as a torchvision ResNet state dict"
# nn.Sequential(*list(resnet.children())[:-1]) names torchvision's children by position
# (2 relu, 3 maxpool and 8 avgpool hold no tensors).
_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


@dataclass(frozen=True)
class Variant:
    """One place a checkpoint keeps the backbone: the keys of `checkpoint[container]` (the checkpoint
    itself when None) that start with `prefix`, named by child position when `children_index`."""

    container: str | None
    prefix: str
    children_index: bool = False

    @property
    def probe(self) -> str:
        """The stem convolution's key, present in every checkpoint of this variant."""
        return self.prefix + ("0.weight" if self.children_index else "conv1.weight")

    def source(self, checkpoint: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The mapping holding this variant's backbone, or None when `checkpoint` is not of this variant."""
        source = checkpoint if self.container is None else checkpoint.get(self.container)
        return source if isinstance(source, Mapping) and self.probe in source else None

    def torchvision_name(self, key: str) -> str:
        """`key` (which starts with `prefix`) as torchvision names it."""
        name = key[len(self.prefix):]
        if self.children_index:
            head, _, rest = name.partition(".")
            name = f"{_CHILDREN.get(head, head)}.{rest}"
        return name


@dataclass(frozen=True)
class Layout:
    """A repository's checkpoint layout; `evidence` tells it apart from layouts sharing a variant."""

    name: str
    variants: tuple[Variant, ...]
    evidence: Callable[[Mapping[str, Any]], bool] | None = None


def _opt_model(checkpoint: Mapping[str, Any]) -> str:
    """`opt.model` of the Namespace PixPro and SoCo pickle with their checkpoints ('' when absent)."""
    opt = checkpoint.get("opt", checkpoint.get("args"))
    model = getattr(opt, "model", "") if isinstance(opt, argparse.Namespace) else ""
    return model if isinstance(model, str) else ""


def _model_keys(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    model = checkpoint.get("model")
    return model if isinstance(model, Mapping) else {}


def _is_pixpro(checkpoint: Mapping[str, Any]) -> bool:
    # PixPro.py: value_transform (pixpro_transform_layer 1 or 2, as released) and the instance
    # branch's projector_instance exist only in PixPro; main_pretrain.py is run with --model PixPro.
    keys = _model_keys(checkpoint)
    own = ("module.value_transform.", "module.projector_instance.")
    return _opt_model(checkpoint).startswith("PixPro") or any(key.startswith(own) for key in keys)


def _is_soco(checkpoint: Mapping[str, Any]) -> bool:
    # SoCo_C4.py keeps a MoCo queue, SoCo_FPN*.py an FPN `neck` and a box `head`; the --ema converters
    # read a top-level `model_ema`; tools/SoCo_*.sh run with --model SoCo_C4 / SoCo_FPN / SoCo_FPN_Star.
    keys = _model_keys(checkpoint)
    own = ("module.neck.", "module.head.")
    return (
        _opt_model(checkpoint).startswith("SoCo")
        or "model_ema" in checkpoint
        or "module.queue" in keys
        or any(key.startswith(own) for key in keys)
    )


LAYOUTS = {
    layout.name: layout
    for layout in (
        # torchvision.models.resnet*().state_dict(), e.g. the supervised ImageNet weights; fc.* dropped.
        Layout("torchvision", (Variant(None, ""),)),
        # facebookresearch/moco main_moco.py saves {"epoch", "arch", "state_dict", "optimizer"} of the
        # DDP-wrapped MoCo model; main_lincls.py keeps "module.encoder_q." minus encoder_q.fc (fc.0/fc.2
        # with --mlp), dropping encoder_k and the queue.
        Layout("moco", (Variant("state_dict", "module.encoder_q."),)),
        # zdaxie/PixPro main_pretrain.py saves {"opt", "model", "optimizer", "scheduler", "epoch"[, "amp"]}
        # (publish_model.py keeps "model" only); transfer/detection/convert_pretrain_to_d2.py reads
        # model["module.encoder.*"], dropping encoder_k, projector(_k), value_transform, predictor.
        Layout("pixpro", (Variant("model", "module.encoder."),), _is_pixpro),
        # hologerry/SoCo main_pretrain.py saves the same dict as PixPro (+ "sampler"); the released
        # "raw model" ckpt_epoch_*.pth is read by converter_detectron2/convert_detectron2_C4.py and
        # converter_mmdetection/convert_mmdetection_Backbone.py from model["module.encoder.*"].
        Layout("soco", (Variant("model", "module.encoder."),), _is_soco),
        # OpenSelfSup / mmselfsup (WXinlong/DenseCL, open-mmlab/mmselfsup BYOL, ...): mmcv checkpoints
        # {"meta", "state_dict", "optimizer"} with the online backbone under "backbone." (DenseCL's
        # openselfsup/models/densecl.py aliases encoder_q[0] as self.backbone); the released DenseCL
        # weights are tools/extract_backbone_weights.py output {"state_dict": <plain keys>, "author"}.
        Layout("openselfsup", (Variant("state_dict", "backbone."), Variant("state_dict", ""))),
        # BYOL's PyTorch ports (DeepMind's release is JAX): lucidrains/byol-pytorch
        # byol_pytorch/byol_pytorch.py, a learner state dict with the wrapped network under "net."
        # (its README saves the bare resnet instead: the torchvision layout); yaox12/BYOL-PyTorch
        # trainer/byol_trainer.py {"config", "epoch", "steps", "model", "optimizer", "amp"} with
        # model/basic_modules.py's nn.Sequential(*children[:-1]) under "[module.]online_network.encoder.",
        # and its released resnet50_byol_imagenet2012.pth.tar, whose "online_backbone" its readme
        # describes as the same 318 tensors "conv1 to avgpool" (names assumed to be child positions).
        # OpenSelfSup/mmselfsup BYOL checkpoints use the openselfsup layout.
        Layout(
            "byol",
            (
                Variant(None, "net."),
                Variant("model", "module.online_network.encoder.", children_index=True),
                Variant("model", "online_network.encoder.", children_index=True),
                Variant("online_backbone", "", children_index=True),
            ),
        ),
    )
}
ALIASES = {"densecl": "openselfsup", "mmselfsup": "openselfsup"}
LAYOUT_CHOICES = ("auto", *LAYOUTS, *ALIASES)


def load_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """A checkpoint file as a mapping, unpickling nothing but tensors, containers and argparse.Namespace."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; fix the checkpoint path.")
    # PixPro and SoCo pickle their argparse options as "opt": allow exactly that class.
    checkpoint = load_weights_only(path, allowed=[argparse.Namespace])
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        what = "an empty dict" if isinstance(checkpoint, Mapping) else f"a {type(checkpoint).__name__}"
        raise UserError(f"{path} holds {what}, not a checkpoint dict; {_fix()}.")
    return checkpoint


def _fix() -> str:
    return _FIX.format(layouts=", ".join(LAYOUTS))


def first_keys(checkpoint: Mapping[str, Any]) -> str:
    """The first keys of `checkpoint` and of its nested mappings, for error messages."""
    parts = [f"top level: {abbreviate([str(key) for key in checkpoint])}"]
    nested = [(key, value) for key, value in checkpoint.items() if isinstance(value, Mapping) and value]
    parts += [f"{key}: {abbreviate([str(k) for k in value])}" for key, value in nested[:3]]
    return "; ".join(parts)


def detect_layout(checkpoint: Mapping[str, Any], path: str | os.PathLike[str] = "checkpoint") -> str:
    """The one layout `checkpoint` has; UserError when none or several fit."""
    matches = [
        name for name, spec in LAYOUTS.items()
        if any(variant.source(checkpoint) is not None for variant in spec.variants)
    ]
    if len(matches) > 1:  # layouts sharing a variant (PixPro, SoCo): keep those with their own evidence
        matches = [name for name in matches if LAYOUTS[name].evidence and LAYOUTS[name].evidence(checkpoint)] or matches
    if len(matches) == 1:
        return matches[0]
    what = f"fits several layouts ({', '.join(matches)})" if matches else "has no known layout"
    raise UserError(
        f"{path} {what}; its first keys are {first_keys(checkpoint)}; pass --layout with one of {', '.join(LAYOUTS)}."
    )


def extract_backbone(checkpoint: Mapping[str, Any], layout: str, path: str | os.PathLike[str] = "checkpoint"
                     ) -> dict[str, torch.Tensor]:
    """The torchvision ResNet state dict (without fc) that `checkpoint` holds in `layout`; UserError if it
    is not there, has tensors without torchvision names, or lacks some."""
    spec = LAYOUTS[ALIASES.get(layout, layout)]
    for variant in spec.variants:
        if (source := variant.source(checkpoint)) is not None:
            break
    else:
        probes = " or ".join(
            f"{v.container}[{v.probe!r}]" if v.container else repr(v.probe) for v in spec.variants
        )
        raise UserError(
            f"{path} is not a {spec.name} checkpoint: it has no {probes}; its first keys are "
            f"{first_keys(checkpoint)}; use --layout auto or another layout ({', '.join(LAYOUTS)})."
        )
    state = {}
    for key, value in source.items():
        if isinstance(key, str) and key.startswith(variant.prefix):
            name = variant.torchvision_name(key)
            if not name.startswith("fc."):  # classifier / projection head, not backbone
                state[name] = value
    where = f"{path} ({spec.name} layout, {variant.container or 'top level'} keys '{variant.prefix}*')"
    return _checked(state, where)


def _checked(state: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """`state` in torchvision's key order, after checking it against torchvision's ResNet of its depth."""
    if not_tensors := sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor)):
        raise UserError(f"{where}: entries that are not tensors: {abbreviate(not_tensors)}; {_fix()}.")
    arch = infer_arch(state, fix=_fix())
    with torch.device("meta"):  # names and shapes only: allocate nothing
        model = getattr(torchvision.models, arch)()
    expected = {key: value.shape for key, value in model.state_dict().items() if not key.startswith("fc.")}
    for key in expected.keys() - state.keys():
        if key.endswith(".num_batches_tracked"):  # see the module docstring
            state[key] = torch.tensor(0)
    problems = []
    if unmatched := sorted(state.keys() - expected.keys()):
        problems.append(f"tensors without a torchvision {arch} name: {abbreviate(unmatched)}")
    if missing := sorted(expected.keys() - state.keys()):
        problems.append(f"missing {arch} tensors: {abbreviate(missing)}")
    if reshaped := sorted(k for k in expected.keys() & state.keys() if state[k].shape != expected[k]):
        problems.append(f"tensors whose shape differs from {arch}'s: {abbreviate(reshaped)}")
    if problems:
        raise UserError(f"{where}: {'; '.join(problems)}; {_fix()}.")
    return {key: state[key] for key in expected}


def import_checkpoint(path: str | os.PathLike[str], layout: str = "auto") -> tuple[dict[str, torch.Tensor], str]:
    """The backbone of a published checkpoint as a torchvision ResNet state dict without fc, and the
    layout read (`layout`, resolved when "auto" or an alias)."""
    if layout not in LAYOUT_CHOICES:
        raise UserError(f"unknown checkpoint layout {layout!r}; choose one of {', '.join(LAYOUT_CHOICES)}.")
    checkpoint = load_checkpoint(path)
    name = detect_layout(checkpoint, path) if layout == "auto" else ALIASES.get(layout, layout)
    return extract_backbone(checkpoint, name, path), name
