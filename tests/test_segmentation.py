"""Segmentation stage: the mmcv.ops shim, weight conversion, protocol checks, and tiny mmseg runs on a fake
VOCdevkit (FCN fine-tuned, FCN on a frozen backbone, DeepLabV3 ASPP on frozen features)."""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from mmengine.logging import HistoryBuffer
from PIL import Image, ImageDraw
from stop_at_iteration import run_stopped

from core.errors import UserError
from finetune.segmentation import cli, compat, convert
from finetune.segmentation.config import build_config, build_model
from finetune.segmentation.datasets import check_cityscapes, check_voc2012
from finetune.segmentation.own_checkpoints import mmengine_checkpoint_globals
from finetune.segmentation.protocol import SegmentationProtocol
from finetune.segmentation.train import FrozenBackboneHook, run
from prepare.voc import voc_palette

# finetune.voc_segmentation at test scale: FCN fine-tuned on VOC (LC-loss Table 3).
PROTOCOL = {"dataset": "voc", "head": "fcn", "head_input": "layer4", "auxiliary_head": True,
            "frozen_backbone": False, "max_iters": 4, "batch_size": 2, "crop_size": 64, "resize_scale": [256, 64],
            "base_lr": 0.01, "lr_steps": [], "slide_stride": None, "align_corners": False,
            "checkpoint_interval": 2, "train_aug": False, "eval_images": None}
# finetune.voc_aspp_frozen at test scale: DeepLabV3's ASPP on frozen Res4 (hierarchical grouping Table 1).
ASPP = {**PROTOCOL, "head": "aspp", "head_input": "layer3", "auxiliary_head": False, "frozen_backbone": True,
        "base_lr": 0.03, "lr_steps": [2, 3]}
_COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


def segmentation_argv(data_root: Path, weights: str, out: Path, protocol: dict[str, object], seed: int = 0,
                      name: str = "voc_segmentation", keep_checkpoints: bool = False) -> list[str]:
    """The arguments of `python -m finetune segmentation` for a CPU run of `protocol`."""
    return ["segmentation", "--data-root", str(data_root), "--weights", weights, "--arch", "resnet18",
            "--out", str(out), "--name", name, "--protocol-json", json.dumps(protocol), "--seed", str(seed),
            "--threads", "1", "--device", "cpu"] + ["--keep-checkpoints"] * keep_checkpoints


def run_segmentation(data_root: Path, weights: str, out: Path, protocol: dict[str, object], seed: int = 0,
                     name: str = "voc_segmentation", keep_checkpoints: bool = False) -> dict[str, object]:
    """Run `python -m finetune segmentation` in this process; return its metrics.json."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args(segmentation_argv(data_root, weights, out, protocol, seed, name, keep_checkpoints))
    args.func(args)
    return json.loads((out / "metrics.json").read_text())


def _checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of one of the run's own mmengine checkpoints (they also hold numpy arrays)."""
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _sample(rng: np.random.Generator, labels: tuple[int, int, int], background: int) -> tuple[Image.Image, np.ndarray]:
    """A 96x80 image with 1-2 coloured shapes and its label map (`labels[k]` for shape colour k, 255 on outlines)."""
    image = Image.new("RGB", (96, 80), tuple(int(c) for c in rng.integers(0, 60, 3)))
    mask = Image.new("L", image.size, background)
    for _ in range(int(rng.integers(1, 3))):
        x0, y0 = (int(v) for v in rng.integers(0, 50, 2))
        box = (x0, y0, x0 + int(rng.integers(20, 45)), y0 + int(rng.integers(20, 30)))
        cls = int(rng.integers(len(_COLOURS)))
        draw = ImageDraw.Draw(image).ellipse if cls == 1 else ImageDraw.Draw(image).rectangle
        draw(box, fill=_COLOURS[cls])
        shape = ImageDraw.Draw(mask).ellipse if cls == 1 else ImageDraw.Draw(mask).rectangle
        shape(box, fill=labels[cls], outline=255)
    return image, np.asarray(mask)


def _write_sample(voc2012: Path, image_id: str, rng: np.random.Generator) -> None:
    """A JPEG and its VOC palette mask (classes 1-3, background 0)."""
    image, mask = _sample(rng, (1, 2, 3), background=0)
    image.save(voc2012 / "JPEGImages" / f"{image_id}.jpg")
    png = Image.fromarray(mask, mode="P")
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
def cityscapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official Cityscapes layout: train cities aachen and bochum (2 images each), val city frankfurt (2);
    trainIds person 11, car 13, bicycle 18 on road 0."""
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(1)
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            for image_dir in (root / "leftImg8bit" / split / city, root / "gtFine" / split / city):
                image_dir.mkdir(parents=True)
            for frame in (19, 20):
                stem = f"{city}_000000_{frame:06d}"
                image, mask = _sample(rng, (11, 13, 18), background=0)
                image.save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                Image.fromarray(mask).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")
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


@contextlib.contextmanager
def _torch_globals_restored() -> Iterator[None]:
    """The Runner turns on deterministic algorithms and sets threads; keep other tests unaffected."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


@pytest.fixture
def restore_torch_globals() -> Iterator[None]:
    with _torch_globals_restored():
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, voc_root: Path,
              backbone: tuple[Path, dict[str, torch.Tensor]]) -> tuple[Path, Path, dict[str, object]]:
    """An uninterrupted run of PROTOCOL from the converted backbone, checkpoints kept: (weights, out, metrics.json)."""
    folder = tmp_path_factory.mktemp("reference")
    weights = folder / "mmseg.pth"
    convert.convert(backbone[0], weights)
    with _torch_globals_restored():
        metrics = run_segmentation(voc_root, str(weights), folder / "a", PROTOCOL, keep_checkpoints=True)
    return weights, folder / "a", metrics


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
        data_dir=voc_root / "VOC2012",
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


def test_backbone_is_converted_in_the_job_and_removed_after(tmp_path: Path, voc_root: Path, backbone,
                                                            reference) -> None:
    """`--backbone backbone.pth` (the DAG's way) trains as `--weights` with convert-mmseg's file: same mIoU."""
    _, _, expected = reference
    argv = segmentation_argv(voc_root, "unused", tmp_path / "run", PROTOCOL)
    argv[argv.index("--weights"):argv.index("--weights") + 2] = ["--backbone", str(backbone[0])]
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    with _torch_globals_restored():
        args.func(args)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["metrics"] == expected["metrics"]
    assert written["weights"] == str(tmp_path / "run" / "mmseg.pth") and not (tmp_path / "run" / "mmseg.pth").exists()
    with pytest.raises(SystemExit):  # --weights and --backbone exclude each other
        parser.parse_args([*argv, "--weights", "converted.pth"])


def test_eval_images_keeps_the_first_images_of_the_val_split(tmp_path: Path, voc_root: Path) -> None:
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules()
    for eval_images, expected in ((None, ["2012_val_000", "2012_val_001"]), (1, ["2012_val_000"])):
        cfg = build_config(data_dir=voc_root / "VOC2012", weights=None, arch="resnet18",
                           protocol=SegmentationProtocol(**{**PROTOCOL, "eval_images": eval_images}), seed=0,
                           work_dir=tmp_path / "work")
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        assert [Path(dataset.get_data_info(i)["img_path"]).stem for i in range(len(dataset))] == expected
    with pytest.raises(UserError, match="eval_images must be null .the whole val split. or an integer >= 1, got 0"):
        SegmentationProtocol(**{**PROTOCOL, "eval_images": 0})


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
        ({**PROTOCOL, "freeze": True}, r"unknown protocol keys \['freeze'\]"),
        ({k: v for k, v in PROTOCOL.items() if k != "base_lr"}, r"lacks \['base_lr'\]"),
        ({**PROTOCOL, "crop_size": 16}, "crop_size must be an integer >= 32"),
        ({**PROTOCOL, "base_lr": 0}, "base_lr must be a positive number"),
        ({**PROTOCOL, "dataset": "ade20k"}, r"dataset must be one of \['voc', 'cityscapes'\]"),
        ({**PROTOCOL, "head": "psp"}, r"head must be one of \['fcn', 'aspp'\]"),
        ({**PROTOCOL, "head_input": "layer3"}, "head 'fcn' reads layer4"),
        ({**PROTOCOL, "frozen_backbone": "yes"}, "frozen_backbone must be true or false"),
        ({**PROTOCOL, "dataset": "cityscapes", "train_aug": True}, "set it to false for dataset 'cityscapes'"),
        ({**PROTOCOL, "lr_steps": [3, 2]}, "lr_steps must be"),
        ({**PROTOCOL, "lr_steps": [4]}, "below max_iters 4"),
        ({**PROTOCOL, "slide_stride": 65}, r"slide_stride must be null .* crop_size 64"),
        ({**PROTOCOL, "resize_scale": [256]}, "resize_scale must be"),
        ({**ASPP, "batch_size": 1}, "head 'aspp' needs batch_size >= 2"),
    ],
)
def test_bad_protocols_are_refused(protocol: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        SegmentationProtocol.from_json(json.dumps(protocol))


def test_missing_voc_root_lists_expected_paths(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit"
    with pytest.raises(UserError) as err:
        run_segmentation(root, "none", tmp_path / "out", PROTOCOL)
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
    protocol = SegmentationProtocol.from_json(json.dumps({**PROTOCOL, "train_aug": True}))
    cfg = build_config(data_dir=voc_root / "VOC2012", weights=None, arch="resnet18", protocol=protocol, seed=0,
                       work_dir=tmp_path / "work")
    train = cfg.train_dataloader.dataset
    assert train.type == "ConcatDataset"
    assert [(d.ann_file, d.data_prefix.seg_map_path) for d in train.datasets] == [
        ("ImageSets/Segmentation/train.txt", "SegmentationClass"),
        ("ImageSets/Segmentation/aug.txt", "SegmentationClassAug"),
    ]


@pytest.mark.usefixtures("restore_torch_globals")
def test_tiny_run_is_reproducible_and_resumes(
    tmp_path: Path, voc_root: Path, backbone: tuple[Path, dict[str, torch.Tensor]],
    reference: tuple[Path, Path, dict[str, object]],
) -> None:
    weights, out, first = reference
    assert first["protocol"] == "voc_segmentation"
    assert first["weights"] == str(weights)
    assert first["iterations"] == PROTOCOL["max_iters"]
    assert first["provenance"]["seed"] == 0
    assert set(first["metrics"]) == {"mIoU", "mAcc", "aAcc"}
    assert all(0 <= value <= 100 for value in first["metrics"].values())
    work = out / "work"
    assert (work / "iter_4.pth").is_file() and (work / "iter_2.pth").is_file()
    # Fine-tuning (the control of the frozen test below): weights and BN statistics of the backbone move.
    trained = _checkpoint(work / "iter_4.pth")
    for key in ("layer1.0.conv1.weight", "bn1.running_mean"):
        assert not torch.equal(trained["backbone." + key], backbone[1][key]), key

    # Same seed, same run.
    assert run_segmentation(voc_root, str(weights), tmp_path / "b", PROTOCOL)["metrics"] == first["metrics"]

    # A rerun in the same folder resumes from the last checkpoint: no training left, same evaluation (and the
    # reference's files unchanged).
    (out / "metrics.json").unlink()
    assert run_segmentation(voc_root, str(weights), out, PROTOCOL, keep_checkpoints=True)["metrics"] == first["metrics"]
    logs = "".join(path.read_text() for path in work.glob("*/*.log"))
    assert f"resuming from {work / 'iter_4.pth'}" in logs
    # ... but never from another run's checkpoints.
    with pytest.raises(UserError, match="checkpoints of a different run"):
        run_segmentation(voc_root, str(weights), out, PROTOCOL, seed=1)
    # By default the work dir keeps the final weights only, tensors only, equal to the last checkpoint's.
    pruned_work = tmp_path / "b" / "work"
    assert sorted(p.name for p in pruned_work.glob("*.pth")) == ["model_final.pth"]
    assert not (pruned_work / "last_checkpoint").exists()
    pruned = torch.load(pruned_work / "model_final.pth", weights_only=True)["state_dict"]
    assert pruned.keys() == trained.keys() and all(torch.equal(pruned[k], trained[k]) for k in trained)


@pytest.mark.usefixtures("restore_torch_globals")
def test_stop_signal_checkpoints_and_the_rerun_finishes_as_the_uninterrupted_run(
    tmp_path: Path, voc_root: Path, reference: tuple[Path, Path, dict[str, object]]
) -> None:
    """SIGTERM during iteration 3 of 4: iter_3.pth, exit 143; the rerun resumes and ends bit-identical to the
    uninterrupted run (CPU, workers=0: mmengine replays the data stream up to the checkpoint)."""
    weights, reference_out, reference_metrics = reference
    out = tmp_path / "run"
    code, output = run_stopped(segmentation_argv(voc_root, str(weights), out, PROTOCOL), iteration=2)
    assert code == 128 + signal.SIGTERM, output
    work = out / "work"
    assert (work / "last_checkpoint").read_text() == str(work / "iter_3.pth")
    assert torch.load(work / "iter_3.pth", map_location="cpu", weights_only=False)["meta"]["iter"] == 3
    assert not (out / "metrics.json").exists()

    assert run_segmentation(voc_root, str(weights), out, PROTOCOL)["metrics"] == reference_metrics["metrics"]
    assert f"resuming from {work / 'iter_3.pth'}" in "".join(path.read_text() for path in work.glob("*/*.log"))
    final = _checkpoint(work / "model_final.pth")
    expected = _checkpoint(reference_out / "work" / "iter_4.pth")
    assert final.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(final[key], expected[key])] == []


class _Attribute:
    """Pickles as `getattr(owner, name)`, as mmengine's HistoryBuffer pickles its statistics methods."""

    def __init__(self, owner: object, name: str) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self) -> tuple:
        return getattr, (self.owner, self.name)


def test_resume_loads_mmengine_checkpoints_weights_only_and_nothing_more(tmp_path: Path) -> None:
    """mmengine's message hub (HistoryBuffer, numpy arrays) loads under weights_only; a `getattr` to anything but
    HistoryBuffer's four statistics is refused, so the allow-list opens no path to calling other code."""
    buffer = HistoryBuffer()
    buffer.update(0.5)
    buffer.update(1.5)
    torch.save({"message_hub": {"loss": buffer}, "meta": {"seed": np.int64(3)}}, tmp_path / "own.pth")
    with mmengine_checkpoint_globals():
        loaded = torch.load(tmp_path / "own.pth", weights_only=True)
    assert loaded["message_hub"]["loss"].mean() == 1.0 and loaded["meta"]["seed"] == 3
    for owner, name in ((HistoryBuffer, "register_statistics"), (np.ndarray, "tofile")):  # both allowed classes
        torch.save({"method": _Attribute(owner, name)}, tmp_path / "foreign.pth")
        with mmengine_checkpoint_globals(), pytest.raises(pickle.UnpicklingError, match="HistoryBuffer's"):
            torch.load(tmp_path / "foreign.pth", weights_only=True)


@pytest.mark.usefixtures("restore_torch_globals")
def test_frozen_backbone_stays_bit_identical_while_the_heads_train(
    tmp_path: Path, voc_root: Path, backbone: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    """LC-loss Table 4: the pretrained ResNet frozen, weights and BN statistics; FCN and auxiliary heads trained."""
    weights = tmp_path / "mmseg.pth"
    convert.convert(backbone[0], weights)
    protocol = {**PROTOCOL, "frozen_backbone": True}
    result = run_segmentation(voc_root, str(weights), tmp_path / "run", protocol, name="voc_segmentation_frozen",
                              keep_checkpoints=True)
    assert result["protocol"] == "voc_segmentation_frozen"
    work = tmp_path / "run" / "work"
    middle, end = _checkpoint(work / "iter_2.pth"), _checkpoint(work / "iter_4.pth")
    for state in (middle, end):
        frozen = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
        assert frozen.keys() == backbone[1].keys()  # every parameter and BN buffer, num_batches_tracked included
        assert all(torch.equal(value, backbone[1][key]) for key, value in frozen.items())
    for head in ("decode_head", "auxiliary_head"):
        assert not torch.equal(middle[f"{head}.conv_seg.weight"], end[f"{head}.conv_seg.weight"]), head
        assert not torch.equal(middle[f"{head}.convs.0.bn.running_mean"], end[f"{head}.convs.0.bn.running_mean"])
    logs = "".join(path.read_text() for path in work.glob("*/*.log"))
    assert f"frozen backbone unchanged: {len(backbone[1])} tensors bit-identical" in logs


def test_frozen_backbone_hook_fails_on_any_change() -> None:
    runner = mock.Mock(model=torch.nn.Module())
    runner.model.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    hook = FrozenBackboneHook()
    hook.before_train(runner)
    hook.after_train(runner)  # unchanged: passes
    runner.model.backbone[1].running_var[0] += 1e-6
    with pytest.raises(RuntimeError, match=r"frozen backbone changed during training: 1\.running_var"):
        hook.after_train(runner)


def test_aspp_reads_frozen_res4_without_layer4(tmp_path: Path, voc_root: Path) -> None:
    """Hierarchical grouping Sec. 4.2: only the newly added DeepLabV3 ASPP head trains, on frozen Res4."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    model = MODELS.build(build_model("resnet18", None, SegmentationProtocol.from_json(json.dumps(ASPP))))
    model.train()
    assert not hasattr(model.backbone, "layer4") and model.backbone.out_indices == (0, 1, 2)
    assert type(model.decode_head).__name__ == "ASPPHead" and not model.with_auxiliary_head
    assert (model.decode_head.in_channels, model.decode_head.in_index) == (256, 2)  # ResNet-18 layer3
    assert model.decode_head.dilations == (1, 12, 24, 36)
    assert model.decode_head.num_classes == 21
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(p.requires_grad for p in model.decode_head.parameters())
    # d8: layer3 dilated by 2 instead of strided, so Res4 stays at 1/8 of a 64 px crop.
    with torch.no_grad():
        features = model.backbone(torch.zeros(2, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(64, 16, 16), (128, 8, 8), (256, 8, 8)]


@pytest.mark.usefixtures("restore_torch_globals")
def test_aspp_frozen_run_trains_only_the_head(
    tmp_path: Path, voc_root: Path, backbone: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    weights = tmp_path / "mmseg.pth"
    convert.convert(backbone[0], weights)
    result = run_segmentation(voc_root, str(weights), tmp_path / "run", ASPP, name="voc_aspp_frozen")
    assert result["protocol"] == "voc_aspp_frozen" and set(result["metrics"]) == {"mIoU", "mAcc", "aAcc"}
    state = _checkpoint(tmp_path / "run" / "work" / "model_final.pth")
    kept = {key: value for key, value in backbone[1].items() if not key.startswith("layer4.")}
    assert {key.removeprefix("backbone.") for key in state if key.startswith("backbone.")} == kept.keys()
    assert all(torch.equal(state["backbone." + key], value) for key, value in kept.items())
    assert not any(key.startswith("auxiliary_head.") for key in state)


def test_torchrun_config_splits_the_total_batch_and_syncs_bn(tmp_path: Path, voc_root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun (WORLD_SIZE 4): mmengine's pytorch launcher, SyncBN in every norm layer, and the protocol's
    batch_size (the total, mmseg's 4xb4 = 16) split into 4 per process; one process keeps BN and the whole batch."""
    protocol = SegmentationProtocol.from_json(json.dumps({**PROTOCOL, "batch_size": 16}))
    settings = dict(data_dir=voc_root / "VOC2012", weights=None, arch="resnet18", protocol=protocol, seed=0,
                    work_dir=tmp_path)

    def norms(model: dict) -> set[str]:  # the backbone's and both heads' norm_cfg
        return {part.norm_cfg.type for part in (model.backbone, model.decode_head, model.auxiliary_head)}

    distributed = build_config(**settings, world_size=4)
    assert distributed.launcher == "pytorch" and distributed.train_dataloader.batch_size == 4
    assert norms(distributed.model) == {"SyncBN"}
    single = build_config(**settings)
    assert single.launcher == "none" and single.train_dataloader.batch_size == 16 and norms(single.model) == {"BN"}
    with pytest.raises(UserError, match=r"batch_size 16 is the total .* over 3: launch one of \[1, 2, 4, 8, 16\]"):
        build_config(**settings, world_size=3)
    # Several processes train on GPUs only (mmengine binds each to a GPU; SyncBN needs CUDA).
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="torchrun started 2 processes but --device is cpu"):
        run(data_root=voc_root, weights=None, arch="resnet18", name="voc_segmentation", protocol=protocol, seed=0,
            threads=1, device="cpu", out=tmp_path / "out")


def test_step_schedule_divides_by_ten_at_the_steps() -> None:
    """Hierarchical grouping Sec. 4.2 at 1/1000 scale: lr 0.03, x0.1 at 10k and 15k of 20k iterations."""
    from mmengine.registry import PARAM_SCHEDULERS

    protocol = SegmentationProtocol.from_json(json.dumps({**ASPP, "max_iters": 20, "lr_steps": [10, 15]}))
    cfg = build_config(data_dir=Path("VOC2012"), weights=None, arch="resnet18", protocol=protocol, seed=0,
                       work_dir=Path("work"))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=protocol.base_lr)
    scheduler = PARAM_SCHEDULERS.build({**cfg.param_scheduler[0], "optimizer": optimizer})
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert rates == pytest.approx([0.03] * 10 + [0.003] * 5 + [0.0003] * 5)
    poly = build_config(data_dir=Path("VOC2012"), weights=None, arch="resnet18", seed=0, work_dir=Path("work"),
                        protocol=SegmentationProtocol.from_json(json.dumps(PROTOCOL))).param_scheduler
    assert [dict(s) for s in poly] == [dict(type="PolyLR", eta_min=0.0001, power=0.9, begin=0, end=4, by_epoch=False)]


@pytest.mark.usefixtures("restore_torch_globals")
def test_cityscapes_protocol_runs_with_slide_test(tmp_path: Path, cityscapes_root: Path) -> None:
    """fcn_r50-d8_4xb2-40k_cityscapes-769x769 in miniature: odd crop 65 (769 = 8 * 96 + 1), align_corners,
    sliding-window test with crop-sized windows at ~2/3 of the crop (513 / 769)."""
    protocol = {**PROTOCOL, "dataset": "cityscapes", "crop_size": 65, "resize_scale": [130, 87], "slide_stride": 43,
                "align_corners": True}
    cfg = build_config(data_dir=cityscapes_root, weights=None, arch="resnet18", seed=0, work_dir=tmp_path / "w",
                       protocol=SegmentationProtocol.from_json(json.dumps(protocol)))
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(65, 65), stride=(43, 43))
    assert cfg.model.decode_head.align_corners and cfg.model.auxiliary_head.align_corners
    assert cfg.train_dataloader.dataset.data_prefix == dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train")
    result = run_segmentation(cityscapes_root, "none", tmp_path / "run", protocol, name="cityscapes_segmentation")
    assert result["protocol"] == "cityscapes_segmentation"
    assert all(0 <= value <= 100 for value in result["metrics"].values())
    assert _checkpoint(tmp_path / "run" / "work" / "model_final.pth")["decode_head.conv_seg.weight"].shape[0] == 19


def test_cityscapes_root_without_labels_is_refused(tmp_path: Path, cityscapes_root: Path) -> None:
    with pytest.raises(UserError, match=r"missing .*gtFine/val.*python -m prepare cityscapes"):
        check_cityscapes(tmp_path)
    root = tmp_path / "partial"
    shutil.copytree(cityscapes_root, root)
    label = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000020_gtFine_labelTrainIds.png"
    label.unlink()
    with pytest.raises(UserError, match=rf"1 val images have no label file: {label}"):
        check_cityscapes(root)
