"""VOC segmentation stage: the mmcv.ops shim, weight conversion, and tiny FCN runs on a fake VOCdevkit."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw

from core.errors import UserError
from finetune.segmentation import cli, compat, convert
from finetune.segmentation.config import SegmentationProtocol, build_config, check_voc2012
from prepare.voc import voc_palette

PROTOCOL = {"max_iters": 4, "batch_size": 2, "crop_size": 64, "base_lr": 0.01, "checkpoint_interval": 2,
            "train_aug": False}
_COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


def _voc_segmentation(voc_root: Path, weights: str, out: Path, seed: int = 0) -> dict[str, object]:
    """Run `python -m finetune voc-segmentation` in this process; return its metrics.json."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args(
        ["voc-segmentation", "--voc-root", str(voc_root), "--weights", weights, "--arch", "resnet18", "--out", str(out),
         "--protocol-json", json.dumps(PROTOCOL), "--seed", str(seed), "--threads", "1", "--device", "cpu"]
    )  # fmt: skip
    args.func(args)
    return json.loads((out / "metrics.json").read_text())


def _write_sample(voc2012: Path, image_id: str, rng: np.random.Generator) -> None:
    """A 96x80 JPEG with 1-2 coloured shapes and its palette mask (class 1-3 per shape, 255 on outlines)."""
    image = Image.new("RGB", (96, 80), tuple(int(c) for c in rng.integers(0, 60, 3)))
    mask = Image.new("L", image.size, 0)
    for _ in range(int(rng.integers(1, 3))):
        x0, y0 = (int(v) for v in rng.integers(0, 50, 2))
        box = (x0, y0, x0 + int(rng.integers(20, 45)), y0 + int(rng.integers(20, 30)))
        cls = int(rng.integers(len(_COLOURS)))
        draw = ImageDraw.Draw(image).ellipse if cls == 1 else ImageDraw.Draw(image).rectangle
        draw(box, fill=_COLOURS[cls])
        shape = ImageDraw.Draw(mask).ellipse if cls == 1 else ImageDraw.Draw(mask).rectangle
        shape(box, fill=cls + 1, outline=255)
    image.save(voc2012 / "JPEGImages" / f"{image_id}.jpg")
    png = Image.fromarray(np.asarray(mask), mode="P")
    png.putpalette(voc_palette())
    png.save(voc2012 / "SegmentationClass" / f"{image_id}.png")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOCdevkit with the VOC2012 segmentation layout: 4 train and 2 val images."""
    root = tmp_path_factory.mktemp("VOCdevkit")
    voc2012 = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc2012 / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        ids = [f"2012_{split}_{i:03d}" for i in range(count)]
        for image_id in ids:
            _write_sample(voc2012, image_id, rng)
        (voc2012 / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An exported resnet18 backbone.pth (+ meta.json) with random weights and BN statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-default stats, so a skipped load is visible
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    out = tmp_path_factory.mktemp("export")
    torch.save(state, out / "backbone.pth")
    (out / "meta.json").write_text(json.dumps({"arch": "resnet18"}))
    return out / "backbone.pth", state


@pytest.fixture
def restore_torch_globals() -> Iterator[None]:
    """The Runner turns on deterministic algorithms and sets threads; keep other tests unaffected."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def test_point_sample_is_bilinear_in_unit_coordinates() -> None:
    feature = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # (x, y) in [0, 1]: the map's centre, then the four pixel centres (x selects the column).
    points = torch.tensor([[[0.5, 0.5], [0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])
    sampled = compat.point_sample(feature, points)
    assert sampled.shape == (1, 1, 5)
    assert sampled.flatten().tolist() == [2.5, 1.0, 2.0, 3.0, 4.0]
    grid = compat.point_sample(feature, points[:, :4].reshape(1, 2, 2, 2))  # (N, Hg, Wg, 2) -> (N, C, Hg, Wg)
    assert grid.shape == (1, 1, 2, 2)
    assert grid.flatten().tolist() == [2.5, 1.0, 2.0, 3.0]


def test_shim_only_stands_in_when_mmcv_ops_is_unusable() -> None:
    feature, points = torch.randn(2, 3, 5, 7), torch.rand(2, 11, 2)
    if not compat.ensure_mmcv_ops():  # full mmcv: the real op is left in place and agrees with ours
        from mmcv.ops import point_sample

        torch.testing.assert_close(compat.point_sample(feature, points), point_sample(feature, points))
        return
    import mmcv.ops
    import mmseg.models  # noqa: F401  (fails on mmcv-lite without the shim)

    assert mmcv.ops.point_sample is compat.point_sample
    with pytest.raises(ModuleNotFoundError, match="GPU cluster install"):  # guarded imports still fall back
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    with pytest.raises(UserError, match=r"mmcv\.ops\.sigmoid_focal_loss needs mmcv's compiled ops"):
        mmcv.ops.sigmoid_focal_loss(feature, points)


def test_converted_backbone_loads_into_the_segmentor(
    tmp_path: Path, backbone: tuple[Path, dict[str, torch.Tensor]], voc_root: Path
) -> None:
    path, state = backbone
    out = tmp_path / "mmseg.pth"
    assert convert.convert(path, out) == "resnet18"
    saved = torch.load(out, weights_only=True)
    assert saved["meta"]["arch"] == "resnet18"
    assert set(saved["state_dict"]) == {"backbone." + key for key in state}

    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = build_config(
        voc2012=voc_root / "VOC2012",
        weights=out,
        arch="resnet18",
        protocol=SegmentationProtocol(**PROTOCOL),
        seed=0,
        work_dir=tmp_path / "work",
    )
    segmentor = MODELS.build(cfg.model)
    segmentor.init_weights()  # what the Runner does: the backbone's Pretrained init_cfg loads the file
    loaded = segmentor.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(loaded[key], state[key]), key
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


@pytest.mark.parametrize("foreign", ["module.encoder_q.0.conv1.weight", "fc.weight"])
def test_foreign_keys_are_refused(tmp_path: Path, backbone: tuple[Path, dict[str, torch.Tensor]], foreign: str) -> None:
    state = {**backbone[1], foreign: torch.zeros(1)}
    torch.save(state, tmp_path / "backbone.pth")
    (tmp_path / "meta.json").write_text(json.dumps({"arch": "resnet18"}))
    with pytest.raises(UserError, match=rf"{foreign}.*python -m pretrain export"):
        convert.convert(tmp_path / "backbone.pth", tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_missing_keys_and_wrong_arch_are_refused(
    tmp_path: Path, backbone: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    state = {k: v for k, v in backbone[1].items() if not k.startswith("layer4.1.")}
    torch.save(state, tmp_path / "backbone.pth")
    (tmp_path / "meta.json").write_text(json.dumps({"arch": "resnet18"}))
    with pytest.raises(UserError, match=r"missing keys layer4\.1\.bn1\.bias"):
        convert.convert(tmp_path / "backbone.pth", tmp_path / "out.pth")
    torch.save(backbone[1], tmp_path / "backbone.pth")
    (tmp_path / "meta.json").write_text(json.dumps({"arch": "resnet50"}))
    with pytest.raises(UserError, match="shapes other than mmseg's resnet50"):
        convert.convert(tmp_path / "backbone.pth", tmp_path / "out.pth")


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ({**PROTOCOL, "threads": 1}, r"unknown protocol keys \['threads'\] \(pass threads with --threads\)"),
        ({k: v for k, v in PROTOCOL.items() if k != "base_lr"}, r"lacks \['base_lr'\]"),
        ({**PROTOCOL, "crop_size": 16}, "crop_size must be an integer >= 32"),
        ({**PROTOCOL, "base_lr": 0}, "base_lr must be a positive number"),
    ],
)
def test_bad_protocols_are_refused(protocol: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        SegmentationProtocol.from_json(json.dumps(protocol))


def test_missing_voc_root_lists_expected_paths(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit"
    with pytest.raises(UserError) as err:
        _voc_segmentation(root, "none", tmp_path / "out")
    voc2012, splits = root / "VOC2012", root / "VOC2012" / "ImageSets" / "Segmentation"
    expected = (voc2012 / "JPEGImages", voc2012 / "SegmentationClass", splits / "train.txt", splits / "val.txt")
    assert all(str(path) in str(err.value) for path in expected)
    assert "python -m prepare voc" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_train_aug_adds_sbd_masks(tmp_path: Path, voc_root: Path) -> None:
    """train_aug2012 = train.txt + SBD's aug.txt with SegmentationClassAug (mmseg's voc12aug)."""
    with pytest.raises(UserError) as err:
        check_voc2012(voc_root, train_aug=True)
    assert str(voc_root / "VOC2012" / "SegmentationClassAug") in str(err.value)
    assert str(voc_root / "VOC2012" / "ImageSets" / "Segmentation" / "aug.txt") in str(err.value)
    cfg = build_config(voc2012=voc_root / "VOC2012", weights=None, arch="resnet18",
                       protocol=SegmentationProtocol(**{**PROTOCOL, "train_aug": True}), seed=0,
                       work_dir=tmp_path / "work")
    train = cfg.train_dataloader.dataset
    assert train.type == "ConcatDataset"
    assert [(d.ann_file, d.data_prefix.seg_map_path) for d in train.datasets] == [
        ("ImageSets/Segmentation/train.txt", "SegmentationClass"),
        ("ImageSets/Segmentation/aug.txt", "SegmentationClassAug"),
    ]


@pytest.mark.usefixtures("restore_torch_globals")
def test_tiny_run_is_reproducible_and_resumes(
    tmp_path: Path, voc_root: Path, backbone: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    weights = tmp_path / "mmseg.pth"
    convert.convert(backbone[0], weights)
    first = _voc_segmentation(voc_root, str(weights), tmp_path / "a")
    assert first["protocol"] == "voc_segmentation"
    assert first["weights"] == str(weights)
    assert first["iterations"] == PROTOCOL["max_iters"]
    assert first["provenance"]["seed"] == 0
    assert set(first["metrics"]) == {"mIoU", "mAcc", "aAcc"}
    assert all(0 <= value <= 100 for value in first["metrics"].values())
    work = tmp_path / "a" / "work"
    assert (work / "iter_4.pth").is_file() and (work / "iter_2.pth").is_file()

    # Same seed, same run.
    assert _voc_segmentation(voc_root, str(weights), tmp_path / "b")["metrics"] == first["metrics"]

    # A rerun in the same folder resumes from the last checkpoint: no training left, same evaluation.
    (tmp_path / "a" / "metrics.json").unlink()
    assert _voc_segmentation(voc_root, str(weights), tmp_path / "a")["metrics"] == first["metrics"]
    logs = "".join(path.read_text() for path in work.glob("*/*.log"))
    assert f"resuming from {work / 'iter_4.pth'}" in logs
    # ... but never from another run's checkpoints.
    with pytest.raises(UserError, match="checkpoints of a different run"):
        _voc_segmentation(voc_root, str(weights), tmp_path / "a", seed=1)
