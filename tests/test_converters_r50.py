"""The converters on a real torchvision ResNet-50: every weight lands in the framework's backbone,
and the loaded backbone computes torchvision's layer1..layer4 features.

tests/test_detection.py and tests/test_segmentation.py check the ResNet-18 weights landing in the
full detector / segmentor; here the bottleneck ResNet-50 (conv3/bn3, downsample in layer1) is
checked numerically against torchvision, stage by stage.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from finetune.detection import compat as detectron2_compat
from finetune.detection import convert as d2_convert
from finetune.segmentation import compat as mmseg_compat
from finetune.segmentation import convert as mmseg_convert

# The detection stage's C4 detector config (its backbone settings come from its _BASE_ base_bn.yaml).
C4_CONFIG = Path(d2_convert.__file__).with_name("configs") / "faster_rcnn_c4.yaml"
STAGES = ("layer1", "layer2", "layer3", "layer4")


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torchvision.models.ResNet]:
    """backbone.pth + meta.json of a seeded torchvision ResNet-50 with non-default BN statistics, and the model."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # eval-mode outputs then depend on every statistic
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    model.eval()
    out = tmp_path_factory.mktemp("export")
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, out / "backbone.pth")
    (out / "meta.json").write_text(json.dumps({"arch": "resnet50"}))
    return out / "backbone.pth", model


def _image() -> torch.Tensor:
    return torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _torchvision_features(model: torchvision.models.ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    features = []
    for stage in STAGES:
        x = getattr(model, stage)(x)
        features.append(x)
    return features


def _assert_features_equal(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected) == 4
    for stage, a, e in zip(STAGES, actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=lambda m, s=stage: f"{s}: {m}")


def test_detectron2_resnet50_backbone_loads_every_weight_and_matches_torchvision(
    tmp_path: Path, resnet50: tuple[Path, torchvision.models.ResNet]
) -> None:
    detectron2_compat.install()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_resnet_backbone

    backbone_path, model = resnet50
    pkl = tmp_path / "backbone.pkl"
    assert d2_convert.convert(backbone_path, pkl) == "resnet50"

    cfg = get_cfg()
    cfg.merge_from_file(str(C4_CONFIG))
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # res5 in the backbone for this check
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    DetectionCheckpointer(backbone).load(str(pkl))

    with pkl.open("rb") as f:
        converted = pickle.load(f)["model"]
    loaded = backbone.state_dict()
    assert set(converted) == set(loaded)  # no missing and no unexpected backbone key
    for tv_key, tensor in model.state_dict().items():
        if not tv_key.startswith("fc."):
            assert torch.equal(loaded[d2_convert.detectron2_name(tv_key)], tensor), tv_key

    with torch.no_grad():
        outputs = backbone(_image())
    _assert_features_equal([outputs[f"res{i}"] for i in range(2, 6)], _torchvision_features(model, _image()))


def test_mmseg_resnet50_loads_every_weight_and_matches_torchvision(
    tmp_path: Path, resnet50: tuple[Path, torchvision.models.ResNet]
) -> None:
    mmseg_compat.ensure_mmcv_ops()
    from mmseg.models.backbones import ResNet

    backbone_path, model = resnet50
    weights = tmp_path / "mmseg.pth"
    assert mmseg_convert.convert(backbone_path, weights) == "resnet50"

    # finetune/segmentation/config.py's backbone, undilated (torchvision's strides) for the comparison.
    backbone = ResNet(
        depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2),
        norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False, style="pytorch", contract_dilation=True,
        init_cfg=dict(type="Pretrained", checkpoint=str(weights), prefix=mmseg_convert.PREFIX),
    )
    backbone.init_weights()  # what the Runner does: the Pretrained init_cfg loads the file
    backbone.eval()

    saved = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    loaded = backbone.state_dict()
    assert set(saved) == {mmseg_convert.PREFIX + key for key in loaded}  # no missing and no unexpected key
    for tv_key, tensor in model.state_dict().items():
        if not tv_key.startswith("fc."):
            assert torch.equal(loaded[tv_key], tensor), tv_key

    with torch.no_grad():
        outputs = backbone(_image())
    _assert_features_equal(list(outputs), _torchvision_features(model, _image()))
