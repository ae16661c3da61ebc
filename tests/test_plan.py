"""Pretraining experiments planned without Snakemake (plan/experiments.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from core.errors import UserError
from plan.experiments import experiment_runs, run_id
from pretrain.runs import run_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "workflow" / "config" / "smoke.yaml").read_text())["pretrain"]


def pretrain_with(experiments: dict) -> dict:
    pretrain = copy.deepcopy(SMOKE)
    pretrain["experiments"] = experiments
    return pretrain


def table_run(pretrain: dict, method: str) -> dict:
    cfg = run_config(pretrain, method)
    return {run_id(method, pretrain["data"], cfg, pretrain["seed"]): {"method": method, "data": pretrain["data"],
                                                                      "cfg": cfg}}


def test_run_id_names_method_data_arch_schedule_and_seed() -> None:
    cfg = {"arch": "resnet50", "schedule": "200ep"}
    assert run_id("mocov2", "imagenet", cfg, 3) == "mocov2-imagenet-resnet50-200ep-s3"


def test_an_experiment_equal_to_a_table_run_shares_it() -> None:
    pretrain = pretrain_with({"houghcl_coco": {"method": "houghcl", "data": "coco", "evaluate": []}})
    planned = table_run(pretrain, "houghcl")
    keys, new = experiment_runs(pretrain, planned)
    assert keys == {"houghcl_coco": "houghcl-coco-resnet18-smoke-s0"} and new == {}


def test_experiments_on_other_data_or_settings_are_their_own_runs() -> None:
    pretrain = pretrain_with({
        "houghcl_tin": {"method": "houghcl", "data": "tinyimagenet", "overrides": {"base_lr": 0.5}, "evaluate": []},
        "houghcl_tin_again": {"method": "houghcl", "data": "tinyimagenet", "overrides": {"base_lr": 0.5},
                              "evaluate": ["voc_detection"]},
        "lcloss_160": {"method": "lcloss", "data": "imagenet", "name": "lcloss_160px",
                       "overrides": {"image_size": 160, "lcloss": {"alpha": 0.3}}, "evaluate": []},
    })
    keys, new = experiment_runs(pretrain, table_run(pretrain, "houghcl"))
    assert keys == {"houghcl_tin": "houghcl-tinyimagenet-resnet18-smoke-s0",
                    "houghcl_tin_again": "houghcl-tinyimagenet-resnet18-smoke-s0",
                    "lcloss_160": "lcloss_160px-imagenet-resnet18-smoke-s0"}
    assert list(new) == ["houghcl-tinyimagenet-resnet18-smoke-s0", "lcloss_160px-imagenet-resnet18-smoke-s0"]
    tin = new["houghcl-tinyimagenet-resnet18-smoke-s0"]
    assert (tin["method"], tin["data"], tin["cfg"]["base_lr"]) == ("houghcl", "tinyimagenet", 0.5)
    lc = new["lcloss_160px-imagenet-resnet18-smoke-s0"]["cfg"]
    # The method's own protocol (method_overrides.lcloss: LARS) stays under the experiment's overrides.
    assert (lc["image_size"], lc["lcloss"]["alpha"], lc["optimizer"]) == (160, 0.3, "lars")


def test_one_run_id_with_two_settings_is_refused_naming_both() -> None:
    pretrain = pretrain_with({"a": {"method": "mocov2", "data": "coco", "overrides": {"base_lr": 0.5},
                                    "evaluate": []}})
    with pytest.raises(UserError, match=r"pretrain.experiments.a and a table row, ablation or sweep run are both "
                                        r"run mocov2-coco-resnet18-smoke-s0 .* own `name` or a distinct overrides"):
        experiment_runs(pretrain, table_run(pretrain, "mocov2"))
    pretrain = pretrain_with({
        "a": {"method": "mocov2", "data": "imagenet", "overrides": {"base_lr": 0.5}, "evaluate": []},
        "b": {"method": "mocov2", "data": "imagenet", "overrides": {"base_lr": 0.03}, "evaluate": []},
    })
    with pytest.raises(UserError, match=r"pretrain.experiments.b and pretrain.experiments.a are both run"):
        experiment_runs(pretrain, {})


def test_unknown_image_sets_and_override_keys_are_refused() -> None:
    with pytest.raises(UserError, match=r"pretrain.experiments.x.data: unknown image set 'imagenet1k'; define it"):
        experiment_runs(pretrain_with({"x": {"method": "byol", "data": "imagenet1k", "evaluate": []}}), {})
    with pytest.raises(UserError, match=r"pretrain.experiments.x.overrides: unknown key\(s\) epoch, byol.alpha;"):
        experiment_runs(pretrain_with({"x": {"method": "byol", "data": "coco", "evaluate": [],
                                             "overrides": {"epoch": 3, "byol": {"alpha": 1}}}}), {})
