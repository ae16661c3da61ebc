"""Detection stage: weight conversion, MoCo's C4 head, the protocol checks, and tiny end-to-end runs of
each model on a fake VOCdevkit and a fake COCO folder in the official layouts."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw
from stop_at_iteration import run_stopped

from core.errors import UserError
from finetune.detection import convert, datasets, launcher, train  # first: applies the Detectron2 compat patches

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

PROTOCOL = {
    "model": "faster_rcnn_c4",
    "dataset": "voc",
    "frozen_backbone": False,
    "max_iter": 4,
    "steps": [3],
    "warmup_iters": 1,
    "base_lr": 0.01,
    "ims_per_batch": 2,
    "min_size_train": [64],
    "max_size_train": 96,
    "min_size_test": 64,
    "max_size_test": 96,
    "detections_per_image": 20,
    "rpn_pre_nms_topk_test": 50,
    "rpn_post_nms_topk_test": 10,
    "roi_batch_size_per_image": 4,  # res5 runs on every sampled RoI: the bulk of a C4 step
    "checkpoint_period": 2,
    "precise_bn_iters": 2,
    "eval_images": None,
}
_CLASSES = ("car", "dog", "person")


def _write_voc_image(root: Path, image_id: str, rng: np.random.Generator) -> None:
    """One 128x96 JPEG with 1-2 filled rectangles, and its VOC XML annotation."""
    image = Image.new("RGB", (128, 96), tuple(int(c) for c in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(int(rng.integers(1, 3))):
        x0, y0 = (int(v) for v in rng.integers(1, 60, 2))
        x1, y1 = x0 + int(rng.integers(20, 60)), y0 + int(rng.integers(20, 30))
        cls = int(rng.integers(len(_CLASSES)))
        draw.rectangle((x0, y0, x1, y1), fill=((255, 0, 0), (0, 255, 0), (0, 0, 255))[cls])
        objects.append(
            f"<object><name>{_CLASSES[cls]}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object>"
        )
    image.save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "Annotations" / f"{image_id}.xml").write_text(
        f"<annotation><filename>{image_id}.jpg</filename><size><width>128</width><height>96</height>"
        f"<depth>3</depth></size>{''.join(objects)}</annotation>"
    )


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOCdevkit in the official layout: VOC2007 trainval (4) + test (3), VOC2012 trainval (2)."""
    root = tmp_path_factory.mktemp("VOCdevkit")
    rng = np.random.default_rng(0)
    for year, splits in ((2007, {"trainval": 4, "test": 3}), (2012, {"trainval": 2})):
        year_dir = root / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (year_dir / sub).mkdir(parents=True)
        for split, count in splits.items():
            ids = [f"{year}_{split}_{i:03d}" for i in range(count)]
            for image_id in ids:
                _write_voc_image(year_dir, image_id, rng)
            (year_dir / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def resnet18_backbone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """backbone.pth of a randomly initialised torchvision ResNet-18 without fc, and its state dict."""
    torch.manual_seed(0)
    state_dict = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    path = tmp_path_factory.mktemp("pretrain") / "backbone.pth"
    torch.save(state_dict, path)
    return path, state_dict


def _cfg(tmp_path: Path, voc_root: Path, **protocol: object):  # noqa: ANN202  (CfgNode)
    return train.build_cfg(
        {**PROTOCOL, **protocol},
        arch="resnet18",
        weights=None,
        data=datasets.register_voc(voc_root),
        seed=0,
        device="cpu",
        output_dir=tmp_path,
    )


def test_convert_loads_every_backbone_and_res5_tensor(tmp_path: Path, voc_root: Path, resnet18_backbone) -> None:
    path, state_dict = resnet18_backbone
    pkl = tmp_path / "backbone.pkl"
    assert convert.convert(path, pkl) == "resnet18"
    with pkl.open("rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "densebench" and data["matching_heuristics"] is True
    assert all(isinstance(value, np.ndarray) for value in data["model"].values())

    model = build_model(_cfg(tmp_path, voc_root))
    DetectionCheckpointer(model).load(str(pkl))
    loaded = model.state_dict()
    hand_checked = {
        "conv1.weight": "backbone.stem.conv1.weight",
        "bn1.running_var": "backbone.stem.conv1.norm.running_var",
        "layer1.0.bn1.weight": "backbone.res2.0.conv1.norm.weight",
        "layer3.1.conv2.weight": "backbone.res4.1.conv2.weight",
        "layer3.0.downsample.1.bias": "backbone.res4.0.shortcut.norm.bias",
        "layer4.0.downsample.0.weight": "roi_heads.res5.0.shortcut.weight",
        "layer4.1.bn2.running_mean": "roi_heads.res5.1.conv2.norm.running_mean",
    }
    for tv_key, d2_key in hand_checked.items():
        assert torch.equal(loaded[d2_key], state_dict[tv_key]), (tv_key, d2_key)
    for tv_key, tensor in state_dict.items():
        d2_name = convert.detectron2_name(tv_key)
        d2_key = f"roi_heads.{d2_name}" if d2_name.startswith("res5.") else f"backbone.{d2_name}"
        assert torch.equal(loaded[d2_key], tensor), tv_key


@pytest.mark.parametrize("foreign_key", ["module.encoder_q.conv1.weight", "fc.weight"])
def test_convert_rejects_foreign_keys(tmp_path: Path, resnet18_backbone, foreign_key: str) -> None:
    _, state_dict = resnet18_backbone
    path = tmp_path / "backbone.pth"
    torch.save({**state_dict, foreign_key: torch.zeros(1)}, path)
    with pytest.raises(UserError, match=foreign_key.replace(".", r"\.")) as err:
        convert.convert(path, tmp_path / "out.pkl")
    assert "python -m pretrain export" in str(err.value)
    assert not (tmp_path / "out.pkl").exists()


def test_convert_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        convert.convert(tmp_path / "nope.pth", tmp_path / "out.pkl")


def test_model_has_trainable_bn_and_extra_norm_after_res5(tmp_path: Path, voc_root: Path) -> None:
    model = build_model(_cfg(tmp_path, voc_root))
    res5 = model.roi_heads.res5
    assert list(dict(res5.named_children()))[-1] == "norm"
    assert isinstance(res5.norm, torch.nn.BatchNorm2d) and res5.norm.num_features == 512
    assert not any(isinstance(module, FrozenBatchNorm2d) for module in model.modules())
    assert all(parameter.requires_grad for parameter in model.backbone.parameters())  # FREEZE_AT 0


def test_protocol_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(UserError, match="unknown protocol keys.*threads.*--threads"):
        train.parse_protocol(json.dumps({**PROTOCOL, "threads": 1}))
    with pytest.raises(UserError, match="lacks.*base_lr"):
        train.parse_protocol(json.dumps({k: v for k, v in PROTOCOL.items() if k != "base_lr"}))


def _run(data_root: Path, out: Path, weights: Path | None = None, train_json: Path | None = None,
         keep_checkpoints: bool = False, **protocol: object) -> dict:
    return train.run(
        name="test_protocol",
        data_root=data_root,
        train_json=train_json,
        weights=weights,
        arch="resnet18",
        protocol={**PROTOCOL, **protocol},
        seed=0,
        threads=1,
        device="cpu",
        out=out,
        keep_checkpoints=keep_checkpoints,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, voc_root: Path, resnet18_backbone) -> tuple[Path, Path, dict]:
    """An uninterrupted run of PROTOCOL from the converted backbone, checkpoints kept: (weights, out, summary)."""
    folder = tmp_path_factory.mktemp("reference")
    weights = folder / "backbone.pkl"
    convert.convert(resnet18_backbone[0], weights)
    return weights, folder / "b", _run(voc_root, folder / "b", weights, keep_checkpoints=True)


def test_train_writes_finite_metrics_deterministically(tmp_path: Path, voc_root: Path, reference) -> None:
    weights, reference_out, second = reference
    first = _run(voc_root, tmp_path / "a", weights)
    written = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert written == first
    assert written["protocol"] == "test_protocol" and written["iterations"] == PROTOCOL["max_iter"]
    assert written["weights"] == str(weights) and written["provenance"]["seed"] == 0
    assert set(written["metrics"]) == {"AP", "AP50", "AP75"}
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in written["metrics"].values())
    assert second["metrics"] == first["metrics"]
    # AP of a 4-iteration model may be 0 either way: the training losses must match too.
    assert _logged_losses(tmp_path / "a") == _logged_losses(reference_out)
    # By default the work dir keeps the final weights only, as a tensors-only file equal to the full checkpoint's.
    assert sorted(p.name for p in (tmp_path / "a" / "work").glob("*.pth")) == ["model_final.pth"]
    assert not (tmp_path / "a" / "work" / "last_checkpoint").exists()
    pruned = torch.load(tmp_path / "a" / "work" / "model_final.pth", weights_only=True)
    full = torch.load(reference_out / "work" / "model_final.pth", map_location="cpu", weights_only=False)
    assert list(pruned) == ["model"] and set(full) > {"model", "iteration"}  # + optimizer and schedule
    assert pruned["model"].keys() == full["model"].keys()
    assert all(torch.equal(pruned["model"][key], full["model"][key]) for key in full["model"])


def _logged_losses(out: Path) -> list[dict[str, float]]:
    """Detectron2's metrics.json records without their timings."""
    lines = (out / "work" / "metrics.json").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "time" not in k and k != "eta_seconds"} for line in lines]


def test_killed_run_resumes_from_last_checkpoint(tmp_path: Path, voc_root: Path, reference) -> None:
    weights, reference_out, summary = reference
    out = tmp_path / "run"
    shutil.copytree(reference_out, out)
    work = out / "work"
    assert (work / "model_0000001.pth").is_file()  # checkpoint_period 2: after iterations 0-1
    # Simulate a kill after the first checkpoint: no metrics.json, last_checkpoint at iteration 2.
    (out / "metrics.json").unlink()
    (work / "last_checkpoint").write_text("model_0000001.pth")
    assert _run(voc_root, out, weights, keep_checkpoints=True)["metrics"] == summary["metrics"]
    assert "resuming from iteration 2" in (work / "log.txt").read_text()
    with pytest.raises(UserError, match="different run"):
        _run(voc_root, out, weights, base_lr=0.02)


def _argv(data_root: Path, weights: Path, out: Path, **protocol: object) -> list[str]:
    """`python -m finetune detection` arguments of `_run` (one CPU process: no --gpus, no --device)."""
    return ["detection", "--name", "test_protocol", "--data-root", str(data_root), "--weights", str(weights),
            "--arch", "resnet18", "--protocol-json", json.dumps({**PROTOCOL, **protocol}), "--seed", "0",
            "--threads", "1", "--out", str(out)]


def test_stop_signal_checkpoints_the_iteration_and_the_rerun_resumes(tmp_path: Path, voc_root: Path,
                                                                     reference) -> None:
    """SIGTERM during iteration 1 (0-based) of 4: model_0000001.pth equals the uninterrupted run's checkpoint of
    that iteration (weights, optimizer, schedule), exit 143; the rerun resumes at iteration 2 and ends with the
    uninterrupted run's weights and metrics (its training stream continues where it stopped: with Detectron2's
    own loader it restarted, and the final parameters differed by up to 2.5e-3, precise-BN statistics by 1.1).
    """
    weights, reference_out, _ = reference
    out = tmp_path / "run"
    protocol = {"checkpoint_period": 4}  # no periodic checkpoint after iteration 1: the preemption hook writes it
    code, output = run_stopped(_argv(voc_root, weights, out, **protocol), iteration=1)
    assert code == 128 + signal.SIGTERM, output
    work = out / "work"
    assert [path.name for path in work.glob("model_*.pth")] == ["model_0000001.pth"]
    assert (work / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (out / "metrics.json").exists()
    saved = torch.load(work / "model_0000001.pth", map_location="cpu", weights_only=False)
    expected = torch.load(reference_out / "work" / "model_0000001.pth", map_location="cpu", weights_only=False)
    assert "_trainer" in saved["trainer"]  # the optimizer state, which Detectron2 0.5 alone would not save
    torch.testing.assert_close(saved, expected, rtol=0, atol=0)

    summary = _run(voc_root, out, weights, **protocol)
    assert "resuming from iteration 2" in (work / "log.txt").read_text()
    assert summary["iterations"] == PROTOCOL["max_iter"]
    assert sorted(path.name for path in work.glob("*.pth")) == ["model_final.pth"]
    final = torch.load(work / "model_final.pth", weights_only=True)["model"]
    expected = torch.load(reference_out / "work" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert final.keys() == expected.keys() and all(torch.equal(final[key], expected[key]) for key in final)
    assert summary["metrics"] == json.loads((reference_out / "metrics.json").read_text())["metrics"]


def test_launcher_refuses_impossible_layouts_and_passes_stop_codes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = {"gpus": 0, "num_machines": 1, "machine_rank": 0, "dist_url": "auto", "device": None}
    visible = torch.cuda.device_count()
    for change, message in [
        ({"gpus": visible + 1}, f"--gpus {visible + 1} but {visible} GPUs are visible"),
        ({"gpus": 1, "device": "cpu"}, "drop --device cpu, or pass --gpus 0"),
        ({"num_machines": 2}, "--num-machines 2 needs GPUs"),
    ]:
        with pytest.raises(UserError, match=message):
            launcher.launch_detection(**{**layout, **change})

    def stopped(*args: object, **kwargs: object) -> None:  # as torch's spawn reports a training process's exit
        raise torch.multiprocessing.ProcessExitedException("stopped", 0, 1, 128 + signal.SIGUSR1, None)

    monkeypatch.setattr(launcher, "launch", stopped)
    with pytest.raises(SystemExit) as exit_info:
        launcher.launch_detection(**layout)
    assert exit_info.value.code == 128 + signal.SIGUSR1


def test_divergence_is_a_user_error(tmp_path: Path, voc_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def diverge(self: train.TransferTrainer) -> None:
        # As when Detectron2's NaN check fires in the precise-BN hook and a later hook then fails.
        try:
            raise FloatingPointError("Loss became infinite or NaN at iteration=3!")
        except FloatingPointError as err:
            raise AssertionError("Some BN layers are reused.") from err

    monkeypatch.setattr(train.TransferTrainer, "train", diverge)
    with pytest.raises(UserError, match=r"training diverged \(Loss became infinite.*lower base_lr"):
        _run(voc_root, tmp_path / "run", max_iter=1)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "yolo"}, "unknown detection model 'yolo'"),
        ({"model": "mask_rcnn_fpn"}, "mask_rcnn_fpn cannot train on dataset 'voc'"),
        ({"model": "keypoint_rcnn_fpn", "dataset": "coco"}, "takes \\['coco_keypoints'\\]"),
        ({"frozen_backbone": True}, "frozen_backbone needs an FPN model"),
        ({"model": "retinanet_fpn"}, "unknown protocol keys.*roi_batch_size_per_image"),
    ],
)
def test_protocol_rejects_impossible_combinations(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        train.parse_protocol(json.dumps({**PROTOCOL, **change}))


_COCO_THINGS = [c for c in COCO_CATEGORIES if c["isthing"]]
_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
]


def _coco_split(root: Path, split: str, count: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """`count` 128x96 JPEGs with 1-2 rectangles of person/car/dog: (instances json, person_keypoints json)."""
    (root / split).mkdir()
    images, instances, people = [], [], []
    for image_id in range(1, count + 1):
        image = Image.new("RGB", (128, 96), tuple(int(c) for c in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 3))):
            x0, y0 = (int(v) for v in rng.integers(1, 60, 2))
            w, h = int(rng.integers(20, 60)), int(rng.integers(20, 30))
            category = int(rng.choice([1, 3, 18]))  # person, car, dog
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill={1: (255, 0, 0), 3: (0, 255, 0), 18: (0, 0, 255)}[category])
            annotation = {
                "id": len(instances) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0,
                "bbox": [x0, y0, w, h], "area": w * h,
                "segmentation": [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]],
            }
            instances.append(annotation)
            if category == 1:  # 17 keypoints spread over the box, all visible
                points = [[x0 + w * (k % 4) / 3, y0 + h * (k // 4) / 4, 2] for k in range(17)]
                people.append({**annotation, "keypoints": [v for p in points for v in p], "num_keypoints": 17})
        file_name = f"{image_id:012d}.jpg"
        image.save(root / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": 128, "height": 96})
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in _COCO_THINGS]
    person = {"id": 1, "name": "person", "supercategory": "person", "keypoints": _KEYPOINT_NAMES, "skeleton": [[1, 2]]}
    return ({"images": images, "annotations": instances, "categories": categories},
            {"images": images, "annotations": people, "categories": [person]})


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO folder in the official layout: train2017 (6 images), val2017 (3), instances + person_keypoints."""
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    rng = np.random.default_rng(1)
    for split, count in (("train2017", 6), ("val2017", 3)):
        instances, keypoints = _coco_split(root, split, count, rng)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(keypoints))
    return root


_FPN = {"model": "mask_rcnn_fpn", "dataset": "coco", "max_iter": 1, "steps": [], "checkpoint_period": 1,
        "precise_bn_iters": 1}


@pytest.mark.parametrize(
    ("protocol", "metrics"),
    [
        ({}, {"AP", "AP50", "AP75", "APm", "APm50", "APm75"}),
        ({"model": "keypoint_rcnn_fpn", "dataset": "coco_keypoints", "detections_per_image": 5},
         {"AP", "AP50", "AP75", "APkp", "APkp50", "APkp75"}),
        ({"model": "retinanet_fpn", "rpn_pre_nms_topk_test": None, "rpn_post_nms_topk_test": None,
          "roi_batch_size_per_image": None}, {"AP", "AP50", "AP75"}),
    ],
    ids=["mask_rcnn_fpn", "keypoint_rcnn_fpn", "retinanet_fpn"],
)
def test_coco_models_write_their_tasks_metrics(tmp_path: Path, coco_root: Path, resnet18_backbone,
                                               protocol: dict, metrics: set[str]) -> None:
    weights = tmp_path / "backbone.pkl"
    convert.convert(resnet18_backbone[0], weights)
    merged = {k: v for k, v in {**PROTOCOL, **_FPN, **protocol}.items() if v is not None}
    summary = _run(coco_root, tmp_path / "run", weights, **merged)
    assert set(summary["metrics"]) == metrics
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in summary["metrics"].values())
    assert (summary["model"], summary["dataset"]) == (merged["model"], merged["dataset"])


def test_train_json_replaces_coco_train_set(tmp_path: Path, coco_root: Path) -> None:
    full = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    subset = {**full, "images": full["images"][:2],
              "annotations": [a for a in full["annotations"] if a["image_id"] <= 2]}
    subset_json = tmp_path / "instances_train2017_5pct.json"
    subset_json.write_text(json.dumps(subset))
    registered = datasets.register("coco", coco_root, subset_json)
    assert len(DatasetCatalog.get(registered.train[0])) == 2
    assert len(DatasetCatalog.get(registered.test)) == 3  # evaluated on the full val2017
    with pytest.raises(UserError, match="COCO datasets only"):
        datasets.register("voc", coco_root, subset_json)
    with pytest.raises(UserError, match="train2017 is missing; --data-root must be a COCO folder"):
        datasets.register("coco", tmp_path, subset_json)


def test_eval_images_scores_the_first_test_images_only(tmp_path: Path, voc_root: Path, coco_root: Path) -> None:
    voc = datasets.register("voc", voc_root, None, eval_images=2, work_dir=tmp_path)
    records = DatasetCatalog.get(voc.test)
    assert [Path(r["file_name"]).stem for r in records] == ["2007_test_000", "2007_test_001"]  # of 3
    evaluator = datasets.build_evaluator(voc.test, ("bbox",), str(tmp_path))
    # The VOC evaluator counts the positives of every image in its list: the subset's own list, not test.txt.
    assert Path(evaluator._image_set_path).read_text() == "2007_test_000\n2007_test_001\n"
    assert datasets.register("voc", voc_root, None).test != voc.test  # the full set keeps its own name
    coco = datasets.register("coco", coco_root, None, eval_images=2, work_dir=tmp_path)
    full = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    first = sorted(image["id"] for image in full["images"])[:2]
    assert [r["image_id"] for r in DatasetCatalog.get(coco.test)] == first
    subset = json.loads((tmp_path / "instances_val2017_first2.json").read_text())  # what COCOEvaluator reads
    assert [image["id"] for image in subset["images"]] == first
    assert subset["annotations"] == [a for a in full["annotations"] if a["image_id"] in first]
    with pytest.raises(UserError, match="eval_images must be null .the whole test set. or an integer >= 1, got 0"):
        train.parse_protocol(json.dumps({**PROTOCOL, "eval_images": 0}))


def test_backbone_is_converted_in_the_job_and_removed_after(tmp_path: Path, voc_root: Path, resnet18_backbone,
                                                            reference) -> None:
    """`--backbone backbone.pth` (the DAG's way) trains as `--weights` with convert-d2's pickle: same losses, AP."""
    from finetune.__main__ import main

    _, reference_out, expected = reference
    out = tmp_path / "run"
    argv = _argv(voc_root, tmp_path / "unused.pkl", out)
    argv[argv.index("--weights"):argv.index("--weights") + 2] = ["--backbone", str(resnet18_backbone[0])]
    main(argv)
    written = json.loads((out / "metrics.json").read_text())
    assert written["metrics"] == expected["metrics"]
    assert _logged_losses(out) == _logged_losses(reference_out)
    assert written["weights"] == str(out / "d2.pkl") and not (out / "d2.pkl").exists()


def test_frozen_backbone_stays_bit_identical(tmp_path: Path, voc_root: Path, resnet18_backbone) -> None:
    weights = tmp_path / "backbone.pkl"
    convert.convert(resnet18_backbone[0], weights)
    _run(voc_root, tmp_path / "run", weights, model="faster_rcnn_fpn", frozen_backbone=True, max_iter=4,
         checkpoint_period=2, keep_checkpoints=True)
    work = tmp_path / "run" / "work"
    # Our own training checkpoints (they hold the optimizer and scheduler states, not only tensors).
    after_2 = torch.load(work / "model_0000001.pth", map_location="cpu", weights_only=False)["model"]
    final = torch.load(work / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    with weights.open("rb") as f:
        pretrained = pickle.load(f)["model"]
    frozen = {name: value for name, value in pretrained.items() if not name.endswith("num_batches_tracked")}
    for name, value in frozen.items():  # weights and BN statistics, stem to res5 (FrozenBN keeps no step count)
        assert torch.equal(final[f"backbone.bottom_up.{name}"], torch.from_numpy(value)), name
    assert len(frozen) == len([k for k in final if k.startswith("backbone.bottom_up.")])
    trained = [k for k in final if not k.startswith("backbone.bottom_up.") and final[k].is_floating_point()]
    assert any(not torch.equal(after_2[k], final[k]) for k in trained if k.endswith("weight"))
