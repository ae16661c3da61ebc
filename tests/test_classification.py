"""Frozen-feature classification: dataset layouts, linear evaluation (training, resume, top-k) and few-shot
episodes (sampling, logistic regression, confidence interval), end to end through `python -m finetune`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from core.io import read_json
from finetune.__main__ import main as finetune_main
from finetune.classification import few_shot as few_shot_mod
from finetune.classification import linear as linear_mod
from finetune.classification.data import read_split, read_train_test
from finetune.classification.features import build_encoder, check_device, eval_view, train_view
from finetune.classification.few_shot import confidence_interval, episode_accuracy, sample_episodes
from finetune.classification.linear import (
    cached_batches,
    epoch_order,
    top_k_accuracy,
    train_classifier,
)
from finetune.classification.protocols import FewShotProtocol, LinearProtocol
from pretrain.data import sample_generator

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 210), (230, 220, 40), (240, 240, 240), (20, 20, 20)]
LINEAR = {"epochs": 10, "batch_size": 8, "lr": 0.01, "lr_decay_epochs": [8], "lr_decay_rate": 0.2, "augment": False,
          "resize": 16, "crop": 16, "max_per_class": None, "workers": 0}
FEW_SHOT = {"split": "val", "ways": 5, "shots": 2, "queries": 3, "episodes": 20, "resize": 16, "crop": 16,
            "l2_normalize": True, "batch_size": 16, "workers": 0}


def _save_image(path: Path, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(colour) + rng.integers(-10, 11, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def make_tinyimagenet(root: Path, classes: int = 5, train: int = 6, val: int = 5) -> Path:
    """Tiny-ImageNet layout: class c is coloured COLOURS[c]; `train` and `val` images per class."""
    rng = np.random.default_rng(0)
    wnids = [f"n{c:08d}" for c in range(classes)]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    rows = []
    for c, wnid in enumerate(wnids):
        for i in range(train):
            _save_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", COLOURS[c], rng)
        for i in range(val):
            name = f"val_{c * val + i}.JPEG"
            _save_image(root / "val" / "images" / name, COLOURS[c], rng)
            rows.append(f"{name}\t{wnid}\t0\t0\t15\t15\n")
    (root / "val" / "val_annotations.txt").write_text("".join(rows))
    return root


def make_imagefolder(root: Path, splits: dict[str, dict[str, int]]) -> Path:
    """<split>/<class>/<i>.png; class names are 'c<k>' coloured COLOURS[k]."""
    rng = np.random.default_rng(1)
    for split, counts in splits.items():
        for name, count in counts.items():
            for i in range(count):
                _save_image(root / split / name / f"{i}.png", COLOURS[int(name[1:])], rng)
    return root


# --- datasets -------------------------------------------------------------------------------------------


def test_tinyimagenet_layout_labels_every_image_by_its_class(tmp_path: Path) -> None:
    root = make_tinyimagenet(tmp_path / "tin", classes=3, train=4, val=2)
    train, val = read_train_test(root, "tinyimagenet")
    assert train.classes == ("n00000000", "n00000001", "n00000002")
    assert len(train.paths) == 12 and len(val.paths) == 6
    for path, label in zip(train.paths, train.labels, strict=True):
        assert path.name.startswith(train.classes[label])
    annotations = dict(line.split("\t")[:2] for line in (root / "val" / "val_annotations.txt").read_text().splitlines())
    for path, label in zip(val.paths, val.labels, strict=True):
        assert annotations[path.name] == val.classes[label]
    assert [len(g) for g in train.limit(3).by_class()] == [3, 3, 3]
    assert train.limit(3).paths[:3] == train.paths[:3]  # the first images of each class, in sorted order


def test_imagefolder_test_labels_index_the_train_classes(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "stl", {"train": {"c0": 2, "c1": 2, "c2": 2}, "test": {"c2": 1, "c0": 1}})
    train, test = read_train_test(root, "imagefolder")
    assert train.classes == ("c0", "c1", "c2")
    assert [train.classes[label] for label in test.labels] == [p.parent.name for p in test.paths] == ["c0", "c2"]
    whole = read_split(root / "train", "imagefolder", ".")  # a few-shot set whose root holds the class folders
    assert whole.classes == ("c0", "c1", "c2") and len(whole.paths) == 6


def test_bad_dataset_roots_raise_user_errors_naming_the_layout(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"wnids.txt, train/<wnid>/images"):
        read_train_test(tmp_path / "missing", "tinyimagenet")
    with pytest.raises(UserError, match="no wnids.txt"):
        read_train_test(tmp_path, "tinyimagenet")
    with pytest.raises(UserError, match="no folder 'test'"):
        read_train_test(make_imagefolder(tmp_path / "a", {"train": {"c0": 1}}), "imagefolder")
    with pytest.raises(UserError, match=r"classes \['c1'\] that train/ lacks"):
        read_train_test(make_imagefolder(tmp_path / "b", {"train": {"c0": 1}, "test": {"c1": 1}}), "imagefolder")
    with pytest.raises(UserError, match="splits train and val"):
        read_split(make_tinyimagenet(tmp_path / "tin", classes=1, train=1, val=1), "tinyimagenet", "test")
    with pytest.raises(UserError, match="unknown layout"):
        read_split(tmp_path, "coco", "train")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="pass --device cpu"):
            check_device("cuda")


# --- protocols and features -----------------------------------------------------------------------------


def test_protocols_reject_bad_values_and_keys() -> None:
    assert LinearProtocol.from_json(json.dumps(LINEAR)).resize == 16
    assert LinearProtocol.from_json(json.dumps({**LINEAR, "resize": [20, 30]})).resize == [20, 30]
    for bad in ({"epochs": 0}, {"lr": -1}, {"augment": "yes"}, {"resize": [1, 2, 3]}, {"lr_decay_epochs": 60},
                {"max_per_class": 0}):
        with pytest.raises(UserError, match=f"protocol {next(iter(bad))}"):
            LinearProtocol.from_json(json.dumps({**LINEAR, **bad}))
    with pytest.raises(UserError, match="unknown protocol keys"):
        FewShotProtocol.from_json(json.dumps({**FEW_SHOT, "n_way": 5}))
    with pytest.raises(UserError, match="protocol ways"):
        FewShotProtocol.from_json(json.dumps({**FEW_SHOT, "ways": 1}))


def test_eval_view_resizes_crops_and_normalises_with_imagenet_statistics() -> None:
    colour = (10, 128, 250)
    view = eval_view(Image.new("RGB", (40, 20), colour), None, resize=10, crop=8)  # shorter side 20 -> 10
    assert view.shape == (3, 8, 8)
    expected = [(v / 255 - m) / s for v, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(view.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)
    assert eval_view(Image.new("RGB", (40, 20)), None, resize=[12, 9], crop=9).shape == (3, 9, 9)


def test_train_view_depends_only_on_its_generator() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    first = train_view(image, sample_generator(3, 1, 7), crop=12)
    assert first.shape == (3, 12, 12)
    assert torch.equal(first, train_view(image, sample_generator(3, 1, 7), crop=12))
    assert not torch.equal(first, train_view(image, sample_generator(3, 2, 7), crop=12))


def test_backbone_of_another_arch_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    torch.save(state, path)
    encoder = build_encoder("resnet18", path, seed=0)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(UserError, match="holds a resnet18 backbone but --arch is resnet50"):
        build_encoder("resnet50", path, seed=0)
    # a random init is a function of the seed and leaves the global generator alone
    state = torch.random.get_rng_state()
    a, b = build_encoder("resnet18", None, seed=4), build_encoder("resnet18", None, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, build_encoder("resnet18", None, seed=5).conv1.weight)


# --- linear evaluation ----------------------------------------------------------------------------------


def _class_features(per_class: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features that encode the class: a per-class mean (fixed by seed 0) plus small noise."""
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed)) * 0.3
    return means[labels] + noise, labels


def _protocol(**changes: object) -> LinearProtocol:
    return LinearProtocol(**{**LINEAR, **changes})


def test_linear_classifier_separates_features_that_encode_the_class(tmp_path: Path) -> None:
    train, train_labels = _class_features(20, 6, 16, seed=1)
    test, test_labels = _class_features(10, 6, 16, seed=2)
    protocol = _protocol(epochs=20, lr=0.01, lr_decay_epochs=[15])
    classifier = train_classifier(cached_batches(train, train_labels, 16), len(train), 16, 6, protocol, 0,
                                  tmp_path / "linear.pt")
    with torch.no_grad():
        metrics = top_k_accuracy(classifier(test), test_labels)
    assert metrics == {"top1": 100.0, "top5": 100.0}
    assert torch.load(tmp_path / "linear.pt", weights_only=True)["epoch"] == 20


def test_resumed_training_equals_uninterrupted_training(tmp_path: Path) -> None:
    features, labels = _class_features(10, 4, 8, seed=1)
    protocol = _protocol(epochs=4, lr_decay_epochs=[1, 3])
    batches = cached_batches(features, labels, 8)
    whole = train_classifier(batches, len(features), 8, 4, protocol, 7, tmp_path / "whole.pt")

    def killed_in_epoch_2(epoch: int, order: torch.Tensor):
        if epoch == 2:
            raise KeyboardInterrupt  # the job is killed during epoch 3
        return batches(epoch, order)

    with pytest.raises(KeyboardInterrupt):
        train_classifier(killed_in_epoch_2, len(features), 8, 4, protocol, 7, tmp_path / "resumed.pt")
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["epoch"] == 2
    resumed = train_classifier(batches, len(features), 8, 4, protocol, 7, tmp_path / "resumed.pt")
    assert torch.equal(whole.weight, resumed.weight) and torch.equal(whole.bias, resumed.bias)
    a, b = (torch.load(tmp_path / name, weights_only=True) for name in ("whole.pt", "resumed.pt"))
    assert a["scheduler"]["_last_lr"] == b["scheduler"]["_last_lr"] == [0.01 * 0.2 * 0.2]
    assert all(torch.equal(a["optimizer"]["state"][k]["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
               for k in a["optimizer"]["state"])
    assert not torch.equal(epoch_order(40, 7, 0), epoch_order(40, 7, 1))


def test_top_k_accuracy_by_hand() -> None:
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4],  # label 0: top-1 hit
                           [9.0, 8, 7, 6, 5, 4],  # label 4: 5th, top-5 hit only
                           [9.0, 8, 7, 6, 5, 4]])  # label 5: 6th, no hit
    assert top_k_accuracy(logits, torch.tensor([0, 4, 5])) == pytest.approx({"top1": 100 / 3, "top5": 200 / 3})
    assert top_k_accuracy(logits[:, :4], torch.tensor([0, 1, 3])) == pytest.approx({"top1": 100 / 3})


# --- few-shot -------------------------------------------------------------------------------------------


def _groups(classes: int, per_class: int) -> list[list[int]]:
    return [list(range(c * per_class, (c + 1) * per_class)) for c in range(classes)]


def test_episodes_are_reproducible_from_the_seed_and_well_formed() -> None:
    groups = _groups(8, 25)
    episodes = sample_episodes(groups, 5, 5, 15, 30, seed=3)
    assert episodes == sample_episodes(groups, 5, 5, 15, 30, seed=3)
    assert episodes != sample_episodes(groups, 5, 5, 15, 30, seed=4)
    assert sample_episodes(groups, 5, 5, 15, 10, seed=3) == episodes[:10]  # episode e does not depend on the count
    for episode in episodes:
        assert len(set(episode.classes)) == 5 and len(episode.support) == 25 and len(episode.query) == 75
        assert not set(episode.support) & set(episode.query) and len(set(episode.query)) == 75
        for k, label in enumerate(episode.classes):
            assert set(episode.support[5 * k:5 * k + 5]) | set(episode.query[15 * k:15 * k + 15]) <= set(groups[label])
    assert {c for e in episodes for c in e.classes} == set(range(8))


def test_too_few_classes_or_images_for_an_episode_are_user_errors() -> None:
    with pytest.raises(UserError, match="fewer than ways = 5"):
        sample_episodes(_groups(4, 30) + [[]], 5, 5, 15, 1, seed=0)  # an empty class does not count
    groups = _groups(6, 20)
    groups[2] = groups[2][:19]
    with pytest.raises(UserError, match=r"classes cat \(19 images\) have fewer images than shots \+ queries = 20"):
        sample_episodes(groups, 5, 5, 15, 1, seed=0, names=["a", "b", "cat", "d", "e", "f"])


def test_logistic_regression_is_exact_on_separable_features_and_chance_on_random_ones() -> None:
    groups = _groups(10, 25)
    episodes = sample_episodes(groups, 5, 5, 15, 200, seed=0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 25)
    separable = np.eye(10)[labels] * 5 + rng.normal(0, 0.3, (250, 10))
    random = rng.normal(0, 1, (250, 32))
    for episode in episodes[:20]:
        assert episode_accuracy(separable[list(episode.support)], separable[list(episode.query)], 5, True) == 100.0
    accuracies = [episode_accuracy(random[list(e.support)], random[list(e.query)], 5, True) for e in episodes]
    # Features independent of the labels: each query is right with probability 1/5. An episode's correct
    # count has at most the variance of Binomial(75, 0.2) (sum over classes of Binomial(15, p_c), sum p_c = 1).
    sigma = 100 * math.sqrt(0.2 * 0.8 / (200 * 75))
    assert abs(np.mean(accuracies) - 20.0) < 4 * sigma


def test_confidence_interval_by_hand() -> None:
    mean, ci95 = confidence_interval([60.0, 80.0, 100.0])
    # population std sqrt((20^2 + 0 + 20^2) / 3) = 16.3299; 1.96 * 16.3299 / sqrt(3) = 18.4791
    assert mean == 80.0 and ci95 == pytest.approx(18.4791, abs=1e-4)


# --- end to end -----------------------------------------------------------------------------------------


def _cli(command: str, root: Path, layout: str, protocol: dict, out: Path, backbone: str = "none") -> dict:
    finetune_main([command, "--data-root", str(root), "--layout", layout, "--backbone", backbone, "--arch", "resnet18",
                   "--protocol-json", json.dumps(protocol), "--seed", "0", "--out", str(out)])
    return read_json(out / "metrics.json")


def test_linear_eval_command_writes_metrics_and_resumes_from_its_work_dir(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tinyimagenet(tmp_path / "tin", classes=5, train=4, val=2)
    summary = _cli("linear-eval", root, "tinyimagenet", LINEAR, tmp_path / "out")
    assert summary["protocol"] == "linear_eval" and summary["weights"] is None
    # One colour per class: even a random-init ResNet's pooled features separate them.
    assert summary["metrics"] == {"top1": 100.0, "top5": 100.0}
    assert (summary["classes"], summary["train_images"], summary["test_images"]) == (5, 20, 10)
    assert summary["provenance"]["seed"] == 0
    # Finished run: a rerun neither extracts features nor trains again, and reports the same numbers.
    monkeypatch.setattr(linear_mod, "extract", lambda *a, **k: pytest.fail("features were recomputed"))
    assert _cli("linear-eval", root, "tinyimagenet", LINEAR, tmp_path / "out")["metrics"] == summary["metrics"]
    with pytest.raises(UserError, match="different run"):
        _cli("linear-eval", root, "tinyimagenet", {**LINEAR, "lr": 0.02}, tmp_path / "out")


def test_linear_eval_with_augmentation_runs_on_an_imagefolder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "stl", {"train": {f"c{k}": 3 for k in range(3)},
                                               "test": {f"c{k}": 2 for k in range(3)}})
    summary = _cli("linear-eval", root, "imagefolder", {**LINEAR, "augment": True, "epochs": 1, "crop": 12},
                   tmp_path / "out")
    assert set(summary["metrics"]) == {"top1"}  # top-5 only from 5 classes on
    correct = summary["metrics"]["top1"] * 6 / 100  # of 6 test images
    assert correct == pytest.approx(round(correct), abs=1e-4)


def test_few_shot_command_writes_metrics_and_reuses_its_features(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tinyimagenet(tmp_path / "tin", classes=6, train=1, val=5)
    summary = _cli("few-shot", root, "tinyimagenet", FEW_SHOT, tmp_path / "out")
    assert summary["protocol"] == "few_shot" and summary["episodes"] == 20 and summary["classes"] == 6
    assert summary["metrics"] == {"top1": 100.0, "ci95": 0.0}  # one colour per class
    monkeypatch.setattr(few_shot_mod, "extract", lambda *a, **k: pytest.fail("features were recomputed"))
    assert _cli("few-shot", root, "tinyimagenet", FEW_SHOT, tmp_path / "out")["metrics"] == summary["metrics"]
    with pytest.raises(UserError, match="fewer images than shots"):
        _cli("few-shot", root, "tinyimagenet", {**FEW_SHOT, "queries": 4}, tmp_path / "out2")
