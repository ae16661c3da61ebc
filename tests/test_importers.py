"""Importing published checkpoint layouts: each case wraps a real torchvision ResNet the way its
repository saves it (see the layout comments in finetune/importers.py), and the import must give
back exactly the online backbone's tensors under torchvision names."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

from core.errors import UserError, run_cli
from finetune.__main__ import main as finetune_main
from finetune.common import infer_arch, load_backbone
from finetune.importers import import_checkpoint
from finetune.segmentation.convert import backbone_arch

State = dict[str, torch.Tensor]


def _resnet(arch: str, seed: int) -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet with non-default BN statistics (so a skipped or
    misrouted tensor cannot equal its source by accident)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(seed + 7)
    return model


@pytest.fixture(scope="module")
def resnet18() -> torchvision.models.ResNet:
    return _resnet("resnet18", seed=0)


def _backbone(model: torch.nn.Module) -> State:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _prefixed(prefix: str, state: State) -> State:
    return {prefix + key: value for key, value in state.items()}


def _momentum_copy(state: State) -> State:
    """A key/target encoder: same names, other values."""
    return {k: v + 1 if v.is_floating_point() else v.clone() for k, v in state.items()}


def _mlp(prefix: str, dims: tuple[int, ...]) -> State:
    """Linear/conv1x1 + BN layers' tensors under `prefix` (projectors and predictors)."""
    state = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        state[f"{prefix}linear{i + 1}.weight"] = torch.randn(fan_out, fan_in, 1, 1)
        state[f"{prefix}linear{i + 1}.bias"] = torch.randn(fan_out)
        state[f"{prefix}bn{i + 1}.running_mean"] = torch.randn(fan_out)
    return state


def _optimizer_and_scheduler() -> tuple[dict[str, Any], dict[str, Any]]:
    """Real SGD (with momentum buffers) and cosine-scheduler states, as the training scripts save them."""
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.03, momentum=0.9, weight_decay=1e-4)
    param.grad = torch.full((3,), 0.5)
    optimizer.step()
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    # contrast/lr_scheduler.py GradualWarmupScheduler.state_dict(): its own fields + the wrapped scheduler's.
    warmup = {"multiplier": 100, "warmup_epoch": 5, "finished": False, "last_epoch": 3, "base_lrs": [0.03],
              "after_scheduler": cosine.state_dict()}
    return optimizer.state_dict(), warmup


def _torchvision(model: torch.nn.Module) -> dict[str, Any]:
    return model.state_dict()  # supervised weights: fc.* included


def _moco(model: torch.nn.Module) -> dict[str, Any]:
    """main_moco.py save_checkpoint of a DDP-wrapped MoCo v2 (--mlp: encoder_q.fc = Linear, ReLU, Linear)."""
    width = model.fc.in_features
    encoder = {**_backbone(model), "fc.0.weight": torch.randn(width, width), "fc.0.bias": torch.randn(width),
               "fc.2.weight": torch.randn(128, width), "fc.2.bias": torch.randn(128)}
    optimizer, _ = _optimizer_and_scheduler()
    state = {**_prefixed("module.encoder_q.", encoder), **_prefixed("module.encoder_k.", _momentum_copy(encoder)),
             "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": optimizer}


def _pixpro_model(model: torch.nn.Module) -> State:
    """PixPro.py's module tree (DDP-wrapped), with pixpro_transform_layer 1 (the released setting)."""
    width = model.fc.in_features
    return {**_prefixed("module.encoder.", _backbone(model)), **_mlp("module.projector.", (width, 64, 32)),
            **_prefixed("module.encoder_k.", _momentum_copy(_backbone(model))),
            **_mlp("module.projector_k.", (width, 64, 32)),
            "module.value_transform.weight": torch.randn(32, 32, 1, 1), "module.value_transform.bias": torch.randn(32)}


def _pixpro_raw(model: torch.nn.Module) -> dict[str, Any]:
    """main_pretrain.py save_checkpoint: opt (argparse.Namespace), model, optimizer, scheduler, epoch, amp."""
    optimizer, scheduler = _optimizer_and_scheduler()
    opt = argparse.Namespace(model="PixPro", arch="resnet50", head_type="early_return", pixpro_transform_layer=1,
                             lr_decay_epochs=[120, 160, 200], amp_opt_level="O1", output_dir="./output")
    return {"opt": opt, "model": _pixpro_model(model), "optimizer": optimizer, "scheduler": scheduler,
            "epoch": 400, "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 17}}}


def _pixpro_published(model: torch.nn.Module) -> dict[str, Any]:
    """publish_model.py: the raw checkpoint without opt, optimizer, scheduler, epoch, amp."""
    return {"model": _pixpro_model(model)}


def _soco_c4(model: torch.nn.Module) -> dict[str, Any]:
    """SoCo main_pretrain.py save_checkpoint of SoCo_C4 (the released raw ckpt_epoch_*.pth)."""
    width = model.fc.in_features
    optimizer, scheduler = _optimizer_and_scheduler()
    opt = argparse.Namespace(model="SoCo_C4", arch="resnet50", in_channels=[256, 512, 1024, 2048],
                             bbox_size_range=(32, 112, 224), aligned=True)
    state = {**_prefixed("module.encoder.", _backbone(model)), **_mlp("module.projector.", (width, 64, 32)),
             **_mlp("module.predictor.", (32, 64, 32)),
             **_prefixed("module.encoder_k.", _momentum_copy(_backbone(model))),
             **_mlp("module.projector_k.", (width, 64, 32)),
             "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"opt": opt, "model": state, "optimizer": optimizer, "scheduler": scheduler, "epoch": 100}


def _soco_fpn_without_opt(model: torch.nn.Module) -> dict[str, Any]:
    """SoCo_FPN's module tree (neck = FPN, head = box head) with no pickled options: found by its keys."""
    state = {**_prefixed("module.encoder.", _backbone(model)),
             "module.neck.lateral_convs.0.conv.weight": torch.randn(8, 4, 1, 1),
             "module.head.fc1.weight": torch.randn(8, 8),
             **_prefixed("module.encoder_k.", _momentum_copy(_backbone(model)))}
    return {"model": state, "epoch": 100}


def _densecl_raw(model: torch.nn.Module) -> dict[str, Any]:
    """An OpenSelfSup/mmcv checkpoint of densecl.py: encoder_q[0] is also registered as `backbone`."""
    optimizer, _ = _optimizer_and_scheduler()
    neck = {"1.mlp.0.weight": torch.randn(16, 8), "1.mlp2.0.weight": torch.randn(16, 8, 1, 1)}
    state = {**_prefixed("encoder_q.0.", _backbone(model)), **_prefixed("encoder_q.", neck),
             **_prefixed("encoder_k.0.", _momentum_copy(_backbone(model))), **_prefixed("encoder_k.", neck),
             **_prefixed("backbone.", _backbone(model)), "queue": torch.randn(128, 64),
             "queue_ptr": torch.zeros(1, dtype=torch.long), "queue2": torch.randn(128, 64),
             "queue2_ptr": torch.zeros(1, dtype=torch.long)}
    meta = {"mmcv_version": "0.5.9", "time": "Tue Feb  2 10:00:00 2021", "epoch": 200, "iter": 1000}
    return {"meta": meta, "state_dict": state, "optimizer": optimizer}


def _densecl_extracted(model: torch.nn.Module) -> dict[str, Any]:
    """tools/extract_backbone_weights.py output, as the DenseCL weights are released."""
    return {"state_dict": _backbone(model), "author": "DenseCL"}


def _byol_lucidrains(model: torch.nn.Module) -> dict[str, Any]:
    """byol_pytorch BYOL(net).state_dict(): net (with fc), its NetWrapper copy, target and predictor."""
    full = model.state_dict()
    projector = {"0.weight": torch.randn(16, model.fc.in_features), "1.running_mean": torch.randn(16)}
    return {**_prefixed("net.", full), **_prefixed("online_encoder.net.", full),
            **_prefixed("online_encoder.projector.", projector),
            **_prefixed("target_encoder.net.", _momentum_copy(full)),
            **_prefixed("target_encoder.projector.", projector),
            "online_predictor.0.weight": torch.randn(16, 16)}


def _children(model: torch.nn.Module) -> State:
    """basic_modules.py EncoderwithProjection.encoder: nn.Sequential(*list(resnet.children())[:-1])."""
    return torch.nn.Sequential(*list(model.children())[:-1]).state_dict()


def _byol_yaox12(model: torch.nn.Module) -> dict[str, Any]:
    """byol_trainer.py save_checkpoint of the apex-DDP-wrapped BYOLModel."""
    optimizer, _ = _optimizer_and_scheduler()
    encoder = _children(model)
    state = {**_prefixed("module.online_network.encoder.", encoder),
             "module.online_network.projetion.l1.weight": torch.randn(16, model.fc.in_features),
             **_prefixed("module.target_network.encoder.", _momentum_copy(encoder)),
             "module.predictor.predictor.l1.weight": torch.randn(16, 16)}
    return {"config": {"model": {"backbone": {"type": "resnet18"}}}, "epoch": 300, "steps": 9, "model": state,
            "optimizer": optimizer, "amp": {"loss_scaler0": {"loss_scale": 1.0, "unskipped": 0}}}


def _byol_yaox12_release(model: torch.nn.Module) -> dict[str, Any]:
    """The released resnet50_byol_imagenet2012.pth.tar: modules saved separately ("legacy codebase")."""
    return {"online_backbone": _children(model), "target_backbone": _momentum_copy(_children(model)),
            "online_projection": {"l1.weight": torch.randn(16, 8)}, "predictor": {"l1.weight": torch.randn(16, 16)}}


CASES: dict[str, tuple[Callable[[torch.nn.Module], dict[str, Any]], str]] = {
    "torchvision": (_torchvision, "torchvision"),
    "moco": (_moco, "moco"),
    "pixpro_raw": (_pixpro_raw, "pixpro"),
    "pixpro_published": (_pixpro_published, "pixpro"),
    "soco_c4": (_soco_c4, "soco"),
    "soco_fpn_without_opt": (_soco_fpn_without_opt, "soco"),
    "densecl_raw": (_densecl_raw, "openselfsup"),
    "densecl_extracted": (_densecl_extracted, "openselfsup"),
    "byol_lucidrains": (_byol_lucidrains, "byol"),
    "byol_yaox12": (_byol_yaox12, "byol"),
    "byol_yaox12_release": (_byol_yaox12_release, "byol"),
}


def _save(tmp_path: Path, checkpoint: Any, name: str = "ckpt.pth", legacy: bool = False) -> Path:
    path = tmp_path / name
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


def _assert_same_backbone(state: State, model: torch.nn.Module) -> None:
    source = _backbone(model)
    assert list(state) == list(source)  # torchvision's names, in its order, fc dropped
    for key, value in source.items():
        assert value.dtype == state[key].dtype and torch.equal(state[key], value), key


@pytest.mark.parametrize("case", CASES)
def test_each_layout_imports_exactly_the_online_backbone(tmp_path: Path, resnet18, case: str) -> None:
    build, layout = CASES[case]
    # MoCo's 2020 checkpoints predate PyTorch's zip format: read the legacy serialization too.
    path = _save(tmp_path, build(resnet18), legacy=case == "moco")
    state, detected = import_checkpoint(path)
    assert detected == layout
    _assert_same_backbone(state, resnet18)
    assert infer_arch(state) == "resnet18"
    torch.save(state, tmp_path / "backbone.pth")
    assert list(load_backbone(tmp_path / "backbone.pth")) == list(state)
    explicit, named = import_checkpoint(path, layout)
    assert named == layout and all(torch.equal(explicit[k], v) for k, v in state.items())


def test_resnet50_pixpro_checkpoint(tmp_path: Path) -> None:
    model = _resnet("resnet50", seed=1)
    state, layout = import_checkpoint(_save(tmp_path, _pixpro_raw(model)))
    assert layout == "pixpro" and infer_arch(state) == "resnet50" and len(state) == 318  # as yaox12's readme counts
    _assert_same_backbone(state, model)


def test_densecl_alias_reads_the_openselfsup_layout(tmp_path: Path, resnet18) -> None:
    state, layout = import_checkpoint(_save(tmp_path, _densecl_raw(resnet18)), "densecl")
    assert layout == "openselfsup"
    _assert_same_backbone(state, resnet18)


def test_missing_num_batches_tracked_is_filled_with_zero(tmp_path: Path, resnet18) -> None:
    # torchvision's own ResNet weights predate BatchNorm's step counter.
    old = {k: v for k, v in resnet18.state_dict().items() if not k.endswith("num_batches_tracked")}
    state, _ = import_checkpoint(_save(tmp_path, old))
    counters = [key for key in state if key.endswith("num_batches_tracked")]
    assert len(counters) == 20  # bn1, 2 x 2 per layer for 4 layers, downsample.1 of layers 2-4
    assert all(state[key].dtype == torch.long and state[key].item() == 0 for key in counters)
    assert all(torch.equal(state[key], value) for key, value in old.items() if not key.startswith("fc."))


def test_pixpro_and_soco_keys_without_evidence_are_ambiguous(tmp_path: Path, resnet18) -> None:
    path = _save(tmp_path, {"model": _prefixed("module.encoder.", _backbone(resnet18)), "epoch": 1})
    with pytest.raises(UserError, match=r"fits several layouts \(pixpro, soco\).*module\.encoder\.conv1\.weight"):
        import_checkpoint(path)
    state, layout = import_checkpoint(path, "soco")  # naming it resolves the ambiguity
    assert layout == "soco"
    _assert_same_backbone(state, resnet18)


def test_unknown_layout_lists_layouts_and_first_keys(tmp_path: Path) -> None:
    path = _save(tmp_path, {"teacher": {"backbone.0.weight": torch.zeros(1)}, "epoch": 3})
    with pytest.raises(UserError) as err:
        import_checkpoint(path)
    message = str(err.value)
    assert "has no known layout" in message and "top level: teacher, epoch" in message
    assert "teacher: backbone.0.weight" in message
    assert "torchvision, moco, pixpro, soco, openselfsup, byol" in message


def test_wrong_explicit_layout_is_refused(tmp_path: Path, resnet18) -> None:
    path = _save(tmp_path, _moco(resnet18))
    with pytest.raises(UserError, match=r"not a pixpro checkpoint: it has no model\['module\.encoder\.conv1\."):
        import_checkpoint(path, "pixpro")
    with pytest.raises(UserError, match="unknown checkpoint layout 'simclr'"):
        import_checkpoint(path, "simclr")


def test_unmatched_backbone_keys_are_listed(tmp_path: Path, resnet18) -> None:
    checkpoint = _moco(resnet18)
    checkpoint["state_dict"]["module.encoder_q.attnpool.weight"] = torch.zeros(2)
    checkpoint["state_dict"]["module.encoder_q.layer1.0.se.fc1.weight"] = torch.zeros(2)
    with pytest.raises(UserError, match=r"moco layout.*without a torchvision resnet18 name: attnpool\.weight, "
                                        r"layer1\.0\.se\.fc1\.weight; pass the checkpoint's --layout"):
        import_checkpoint(_save(tmp_path, checkpoint))


def test_missing_and_reshaped_keys_are_refused(tmp_path: Path, resnet18) -> None:
    checkpoint = _moco(resnet18)
    del checkpoint["state_dict"]["module.encoder_q.layer3.1.bn2.running_var"]
    with pytest.raises(UserError, match=r"missing resnet18 tensors: layer3\.1\.bn2\.running_var;"):
        import_checkpoint(_save(tmp_path, checkpoint))
    checkpoint = _moco(resnet18)
    checkpoint["state_dict"]["module.encoder_q.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(UserError, match=r"shape differs from resnet18's: conv1\.weight"):
        import_checkpoint(_save(tmp_path, checkpoint))


def test_non_resnet_block_layout_is_refused(tmp_path: Path, resnet18) -> None:
    state = {k: v for k, v in _backbone(resnet18).items() if not k.startswith("layer4.1.")}
    with pytest.raises(UserError, match=r"\(2, 2, 2, 1\) blocks per stage.*pass the checkpoint's --layout"):
        import_checkpoint(_save(tmp_path, state))


class _Opaque:
    """A class torch.load(weights_only=True) must not instantiate."""


def test_pickles_needing_other_globals_are_refused(tmp_path: Path, resnet18) -> None:
    checkpoint = {**_pixpro_raw(resnet18), "sampler": _Opaque()}
    with pytest.raises(UserError, match=r"pickles a \S*_Opaque object.*weights_only=True.*argparse\.Namespace"):
        import_checkpoint(_save(tmp_path, checkpoint))


def test_a_backbone_that_pickles_a_class_is_refused_without_suggesting_the_unsafe_load(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": _Opaque()}, path)
    with pytest.raises(UserError, match=r"pickles a \S*_Opaque object.*re-save just its weights") as err:
        load_backbone(path)
    assert "weights_only=False" not in str(err.value)


@pytest.mark.parametrize(("content", "message"), [
    (b"not a checkpoint", "cannot read .* as a torch checkpoint"),
    ([torch.zeros(1)], "holds a list, not a checkpoint dict"),
])
def test_unreadable_files_are_refused(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "ckpt.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=message):
        import_checkpoint(path)
    with pytest.raises(UserError, match="does not exist"):
        import_checkpoint(tmp_path / "absent.pth")


def test_cli_writes_backbone_and_meta(tmp_path: Path, resnet18, capsys: pytest.CaptureFixture[str]) -> None:
    source = _save(tmp_path, _soco_c4(resnet18), "soco.pth")
    out = tmp_path / "imported" / "backbone.pth"
    finetune_main(["import-checkpoint", "--checkpoint", str(source), "--out", str(out)])
    assert "arch resnet18, layout soco" in capsys.readouterr().out
    _assert_same_backbone(load_backbone(out), resnet18)
    meta = json.loads(out.with_name("meta.json").read_text())
    assert meta == {"arch": "resnet18", "layout": "soco", "source": str(source),
                    "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert backbone_arch(out) == "resnet18"  # what convert-mmseg reads
    assert sorted(p.name for p in out.parent.iterdir()) == ["backbone.pth", "meta.json"]  # no temporaries left


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _save(tmp_path, {"weights": torch.zeros(1)})
    out = tmp_path / "imported" / "backbone.pth"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(finetune_main, ["import-checkpoint", "--checkpoint", str(source), "--layout", "auto",
                                "--out", str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {source} has no known layout")
    assert not out.parent.exists() or not any(out.parent.iterdir())
