"""Pretraining experiments: a method trained on an image set under a schedule, as a paper ran it.

`pretrain.experiments.<key>` names the method, the image set (`data`, a key of `pretrain.image_sets`),
`overrides` of the run config (shared protocol, the method's `method_overrides`, its sections) and the
protocols and probes that score it (`evaluate`). Its run id follows from what it trains,
`<name>-<data>-<arch>-<schedule>-s<seed>` (README "Architecture"), so experiments of two tables that
train the same thing share one run, and two that would train different things under one id are refused
before anything runs. Pure Python, no Snakemake: the workflow and `python -m analysis paper-coverage`
both plan with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import UserError
from pretrain.runs import run_config, unknown_keys

RunSpec = dict[str, Any]  # {"method", "data", "cfg"}: what one pretraining run trains


def run_id(name: str, data: str, cfg: Mapping[str, Any], seed: int) -> str:
    """<name>-<data>-<arch>-<schedule>-s<seed>; <name> is the method, or the method with a variant's name."""
    return f"{name}-{data}-{cfg['arch']}-{cfg['schedule']}-s{seed}"


def experiment_runs(pretrain: Mapping[str, Any], planned: Mapping[str, RunSpec]) -> tuple[dict[str, str],
                                                                                         dict[str, RunSpec]]:
    """Plan `pretrain.experiments` beside the runs already `planned` (table rows, ablations, sweeps).

    Returns ({experiment key: run id}, {run id: spec} of the runs no planned run already trains). An
    experiment whose run id and settings equal a planned run's (or another experiment's) reuses it."""
    keys: dict[str, str] = {}
    new: dict[str, RunSpec] = {}
    owner = {run: "a table row, ablation or sweep run" for run in planned}
    for key, spec in pretrain.get("experiments", {}).items():
        where = f"pretrain.experiments.{key}"
        if spec["data"] not in pretrain["image_sets"]:
            raise UserError(f"{where}.data: unknown image set '{spec['data']}'; define it under pretrain.image_sets "
                            f"(defined: {', '.join(pretrain['image_sets'])}).")
        method = spec["method"]
        overrides = spec.get("overrides", {})
        unknown = unknown_keys(overrides, run_config(pretrain, method))
        if unknown:
            raise UserError(f"{where}.overrides: unknown key(s) {', '.join(unknown)}; an experiment changes keys of "
                            f"{method}'s run config (pretrain, method_overrides.{method}, its sections).")
        cfg = run_config(pretrain, method, overrides)
        run = run_id(spec.get("name", method), spec["data"], cfg, pretrain["seed"])
        other = planned.get(run) or new.get(run)
        if other is not None and (other["method"], other["cfg"]) != (method, cfg):
            raise UserError(f"{where} and {owner[run]} are both run {run} but train different settings; give "
                            f"{where} its own `name` or a distinct overrides.schedule label.")
        if other is None:
            new[run] = {"method": method, "data": spec["data"], "cfg": cfg}
            owner[run] = where
        keys[key] = run
    return keys, new

