"""Pretraining: views with geometry, shared pieces against hand-computed values, train/resume/export."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

import pretrain.train as train_mod
from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from pretrain.checkpoints import PREVIOUS_STATE_FILE, STATE_FILE, ResumeState
from pretrain.data import view_pair_images
from pretrain.export import load_training_state
from pretrain.losses import info_nce
from pretrain.matching import argmax_match
from pretrain.methods import METHODS, PretrainMethod, build_method
from pretrain.momentum import ema_update
from pretrain.optim import build_optimizer, lr_at
from pretrain.queue import FeatureQueue
from pretrain.runs import METHOD_EMBEDDING, METHOD_PREPARED, METHOD_SECTIONS, run_config
from pretrain.views import ViewConfig, make_view, sample_crop, view_grid_coords

# Geometry only: no photometric change, so pixel values can be read back.
PLAIN = ViewConfig(size=64, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def coordinate_image(width: int = 200, height: int = 150) -> Image.Image:
    """Red encodes x and green encodes y (both in [0, 1]) of every pixel centre."""
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    rgb = np.zeros((height, width, 3), np.float32)
    rgb[..., 0] = xs[None, :]
    rgb[..., 1] = ys[:, None]
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


@pytest.mark.parametrize("seed", range(6))
def test_view_geometry_gives_source_coordinates_of_cells(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    view, geometry = make_view(coordinate_image(), ViewConfig(**{**PLAIN.__dict__, "flip_prob": 0.5}), gen)
    pixels = view * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    grid = 4
    cells = torch.nn.functional.adaptive_avg_pool2d(pixels[:2], grid).flatten(1).t()  # [16, (x, y)]
    expected = view_grid_coords(geometry[None], grid)[0]
    # Bilinear resampling and 8-bit quantisation: within 1.5 source pixels.
    assert torch.allclose(cells, expected, atol=1.5 / 150)


def test_flip_mirrors_cell_coordinates() -> None:
    geometry = torch.tensor([[0.2, 0.1, 0.6, 0.5, 1.0]])
    coords = view_grid_coords(geometry, 2)[0]
    # Cell (row 0, col 0) of a flipped view shows the crop's top-right quarter centre.
    assert coords[0].tolist() == pytest.approx([0.2 + 0.75 * 0.4, 0.1 + 0.25 * 0.4])
    assert coords[3].tolist() == pytest.approx([0.2 + 0.25 * 0.4, 0.1 + 0.75 * 0.4])


def test_crop_respects_scale_and_ratio() -> None:
    cfg = ViewConfig()
    for seed in range(200):
        top, left, h, w = sample_crop(300, 200, cfg, torch.Generator().manual_seed(seed))
        assert top >= 0 and top + h <= 200 and left >= 0 and left + w <= 300
        area = h * w / (300 * 200)
        assert cfg.scale[0] - 0.02 <= area <= cfg.scale[1] + 0.02
        assert cfg.ratio[0] - 0.05 <= w / h <= cfg.ratio[1] + 0.05


def test_info_nce_matches_hand_computation() -> None:
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # -log(e^(1/t) / (e^(1/t) + e^0 + e^(-1/t))) with t = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert info_nce(q, pos, neg, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_argmax_match_recovers_a_permutation() -> None:
    torch.manual_seed(0)
    query = torch.randn(2, 8, 3, 3)
    perm = torch.randperm(9)
    key = query.flatten(2)[:, :, perm].reshape(2, 8, 3, 3)
    # query cell i is key cell j where perm[j] = i
    assert torch.equal(argmax_match(query, key, 3), torch.argsort(perm).expand(2, -1))


def test_queue_wraps_around() -> None:
    queue = FeatureQueue(size=4, dim=2)
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    second = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    queue.push(first)
    queue.push(second)
    assert queue.ptr.item() == 2
    assert torch.equal(queue.keys, torch.stack([second[1], second[2], first[2], second[0]]))


def test_ema_update() -> None:
    target, online = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(target.weight)
    torch.nn.init.ones_(online.weight)
    ema_update(target, online, 0.9)
    assert target.weight.item() == pytest.approx(0.1)


def test_densecl_lambda_is_zero_during_warmup() -> None:
    cfg = {"moco": {"dim": 16, "queue_size": 32, "momentum": 0.99, "temperature": 0.2},
           "densecl": {"loss_lambda": 0.5, "warmup_iters": 5}}
    torch.manual_seed(0)
    model = build_method("densecl", "resnet18", cfg)
    views = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    early = model(*views, None, None, iteration=4, total=10)
    assert early["loss"].item() == pytest.approx(early["loss_global"].item())
    late = model(*views, None, None, iteration=5, total=10)
    assert late["loss"].item() == pytest.approx(0.5 * late["loss_global"].item() + 0.5 * late["loss_dense"].item())


def test_unknown_method_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="unknown pretraining method .simclr.; registered: byol, d3ssl, densecl, "
                                         "hiergroup, houghcl, index_contrast, lcloss, mocov2, pixpro, soco"):
        build_method("simclr", "resnet18", {})


# --- training loop ------------------------------------------------------------------------

def _config(**overrides: object) -> dict:
    cfg = {"arch": "resnet18", "epochs": 2, "batch_size": 2, "image_size": 32, "optimizer": "sgd", "base_lr": 0.03,
           "lr_scaling": "none", "lr_schedule": "cosine", "warmup_epochs": 0, "momentum": 0.9,
           "weight_decay": 1e-4, "amp": False,
           "workers": 0, "checkpoint_every": 1,
           "moco": {"dim": 16, "queue_size": 16, "momentum": 0.99, "temperature": 0.2},
           "densecl": {"loss_lambda": 0.5, "warmup_iters": 1}}
    return {**cfg, **overrides}




def test_views_depend_only_on_seed_epoch_index(image_list: str) -> None:
    a, b = view_pair_images(image_list, (PLAIN, PLAIN), seed=3), view_pair_images(image_list, (PLAIN, PLAIN), seed=3)
    assert all(torch.equal(a[1][key], b[1][key]) for key in ("view1", "view2", "geom1", "geom2"))
    b.set_epoch(1)
    assert not torch.equal(a[1]["view1"], b[1]["view1"])


SMOKE_PRETRAIN = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "config" / "smoke.yaml")
                                .read_text())["pretrain"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_exports_and_resumes_exactly(method: str, image_list: str, prepared_stores: dict[str, str],
                                                         tmp_path, monkeypatch, caplog) -> None:
    """Each registered method, with its smoke config (method overrides included), at toy size: 4 iterations;
    a rerun from the state saved at iteration 3 (mid-epoch), all that a run killed right after that checkpoint
    leaves, gives the uninterrupted run's backbone bit for bit. (Real kills: test_pretrain_preemption.py.)"""
    cfg = run_config(SMOKE_PRETRAIN, method, {"epochs": 2, "batch_size": 2, "image_size": 64, "checkpoint_every": 3,
                                              "warmup_epochs": 1, "moco": {"queue_size": 16}})
    prepared = prepared_stores.get(METHOD_PREPARED.get(method, ""))
    saved = ResumeState.save
    (tmp_path / "killed").mkdir()

    def save_and_keep_a_copy(self: ResumeState, *args: object) -> None:
        saved(self, *args)
        if args[-1] == 3:
            for name in (STATE_FILE, "train_log.csv"):
                shutil.copy(tmp_path / "full" / name, tmp_path / "killed" / name)

    monkeypatch.setattr(ResumeState, "save", save_and_keep_a_copy)
    train_mod.train(method, image_list, cfg, seed=0, out_dir=tmp_path / "full", data_name="test", prepared=prepared)
    assert not (tmp_path / "full" / STATE_FILE).exists()  # the resume state is deleted once exported
    monkeypatch.setattr(ResumeState, "save", saved)
    with caplog.at_level(logging.INFO, logger="pretrain"):
        train_mod.train(method, image_list, cfg, seed=0, out_dir=tmp_path / "killed", data_name="test",
                        prepared=prepared)
    assert "resuming from iteration 3 of 4" in caplog.text

    full = torch.load(tmp_path / "full" / "backbone.pth", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "backbone.pth", weights_only=True)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    initial = build_method(method, "resnet18", cfg).backbone.state_dict()  # same seed: the weights training moved
    assert not torch.equal(initial["layer4.1.conv2.weight"], full["layer4.1.conv2.weight"])
    missing, unexpected = torchvision.models.resnet18().load_state_dict(full, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    # The dense embedding head (hierarchical grouping's hypercolumn) beside it; empty for the other methods.
    embeddings = [torch.load(tmp_path / run / "embedding.pth", weights_only=True) for run in ("full", "killed")]
    head = METHOD_EMBEDDING.get(method)
    expected = getattr(build_method(method, "resnet18", cfg), head).state_dict() if head else {}
    assert embeddings[0].keys() == embeddings[1].keys() == expected.keys()
    assert all(torch.equal(embeddings[0][k], embeddings[1][k]) for k in expected)
    assert json.loads((tmp_path / "full" / "meta.json").read_text())["embedding"] == head
    header, *rows = (tmp_path / "killed" / "train_log.csv").read_text().splitlines()
    assert header.startswith("iteration,lr,loss") and [row.split(",")[0] for row in rows] == ["1", "2", "3", "4"]


def test_export_is_a_torchvision_resnet(image_list: str, tmp_path) -> None:
    train_mod.train("mocov2", image_list, _config(epochs=1), seed=0, out_dir=tmp_path, data_name="test")
    state = torch.load(tmp_path / "backbone.pth", weights_only=True)
    reference = torchvision.models.resnet18().state_dict()
    assert set(state) == set(reference) - {"fc.weight", "fc.bias"}
    missing, unexpected = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    meta = (tmp_path / "meta.json").read_text()
    assert '"iterations": 2' in meta and '"method": "mocov2"' in meta and '"name": "test"' in meta


def test_nan_loss_stops_with_a_clear_error(image_list: str, tmp_path, monkeypatch, caplog) -> None:
    class Diverged(PretrainMethod):
        def __init__(self, arch: str, cfg: dict) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, view1: torch.Tensor, view2: torch.Tensor, geom1: torch.Tensor, geom2: torch.Tensor,
                    iteration: int, total: int) -> dict[str, torch.Tensor]:
            return {"loss": self.w * (float("inf") if iteration >= self.fail_at else 1.0)}

    monkeypatch.setitem(METHODS, "diverged", Diverged)
    Diverged.fail_at = 0
    with pytest.raises(UserError, match=r"diverged: loss is inf at iteration 0; last good checkpoint: none \(a rerun "
                                        r"starts from iteration 0\)"):
        train_mod.train("diverged", image_list, _config(), seed=0, out_dir=tmp_path / "a", data_name="test")
    # The state of iteration 3 (checkpoint_every 1) gives the inf itself: deleted; iteration 2's is kept.
    Diverged.fail_at = 3
    with pytest.raises(UserError, match=r"diverged: loss is inf at iteration 3; last good checkpoint: .*state.pth "
                                        r"\(iteration 2\)\. Lower pretrain.base_lr"):
        train_mod.train("diverged", image_list, _config(), seed=0, out_dir=tmp_path / "b", data_name="test")
    assert load_training_state(tmp_path / "b" / STATE_FILE)["iteration"] == 2
    assert not (tmp_path / "b" / PREVIOUS_STATE_FILE).exists()
    with caplog.at_level(logging.INFO, logger="pretrain"), pytest.raises(UserError, match=r"\(iteration 2\)"):
        train_mod.train("diverged", image_list, _config(), seed=0, out_dir=tmp_path / "b", data_name="test")
    assert "resuming from iteration 2 of 4" in caplog.text  # a rerun resumes from the state that passed


def test_a_state_of_another_config_is_not_resumed(image_list: str, tmp_path, monkeypatch, caplog) -> None:
    """A run killed under lr 1e8 and rerun under lr 0.03 starts over: it equals an uninterrupted lr 0.03 run."""
    train_mod.train("mocov2", image_list, _config(), seed=0, out_dir=tmp_path / "full", data_name="test")
    saved = ResumeState.save

    def save_then_die(self: ResumeState, *args: object) -> None:
        saved(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResumeState, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train("mocov2", image_list, _config(base_lr=1e8), seed=0, out_dir=tmp_path / "b", data_name="test")
    monkeypatch.setattr(ResumeState, "save", saved)
    with caplog.at_level(logging.INFO, logger="pretrain"):
        train_mod.train("mocov2", image_list, _config(), seed=0, out_dir=tmp_path / "b", data_name="test")
    assert "was written under another config, seed or image list" in caplog.text
    assert "starting over from iteration 0" in caplog.text and "resuming" not in caplog.text
    full = torch.load(tmp_path / "full" / "backbone.pth", weights_only=True)
    rerun = torch.load(tmp_path / "b" / "backbone.pth", weights_only=True)
    assert all(torch.equal(full[k], rerun[k]) for k in full)
    assert (tmp_path / "full" / "train_log.csv").read_text() == (tmp_path / "b" / "train_log.csv").read_text()


def test_too_few_images_for_a_batch(image_list: str, tmp_path) -> None:
    with pytest.raises(UserError, match="fewer than one batch of 8; lower pretrain.batch_size"):
        train_mod.train("mocov2", image_list, _config(batch_size=8), seed=0, out_dir=tmp_path, data_name="test")


def test_a_run_config_holds_only_its_methods_sections_and_overrides() -> None:
    assert set(METHOD_SECTIONS) == set(METHODS)  # every registered method declares what it reads
    byol = run_config(SMOKE_PRETRAIN, "byol")
    assert "byol" in byol and "pixpro" not in byol and "moco" not in byol and "image_sets" not in byol
    assert byol["optimizer"] == "lars" and run_config(SMOKE_PRETRAIN, "mocov2")["optimizer"] == "sgd"
    edited = run_config({**SMOKE_PRETRAIN, "pixpro": {**SMOKE_PRETRAIN["pixpro"], "power": 3}}, "byol")
    assert edited == byol  # editing another method's section leaves this run (and its hash) unchanged
    member = run_config(SMOKE_PRETRAIN, "index_contrast", {"epochs": 1, "index_contrast": {"scheme": "instance"}})
    assert member["epochs"] == 1 and member["index_contrast"]["scheme"] == "instance"
    assert member["index_contrast"]["dim"] == SMOKE_PRETRAIN["index_contrast"]["dim"]


def test_step_schedule_and_warmup_follow_hand_computation() -> None:
    """Hierarchical grouping's schedule: x0.1 at epochs 25, 45 and 60 of 80 (10 iterations per epoch here)."""
    cfg = _config(epochs=80, base_lr=0.01, lr_schedule="step", lr_step_epochs=[25, 45, 60])
    assert [lr_at(cfg, it, 800, 0) for it in (0, 249, 250, 449, 450, 600, 799)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 1e-4, 1e-5, 1e-5])
    assert lr_at(cfg, 4, 800, 10) == pytest.approx(0.005)  # linear warm-up: (4 + 1) / 10 of the peak
    model = torch.nn.Linear(2, 2)
    assert isinstance(build_optimizer(model, _config(optimizer="adam")), torch.optim.Adam)
