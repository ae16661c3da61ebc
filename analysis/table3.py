"""Tables 1-3 of Moon et al. (BMVC 2022): per image set, pretraining scheme and loss, each evaluation's
number of models (exp), max, avg, top10 and Kendall's tau with alignment-uniformity; and its Figs. 2-3.

Each evaluation is paired with the level of L_a, L_u it is correlated with (the spec's `level`): the
paper uses instance-level (global-average-pooled) features for linear evaluation and dense features for
detection, "depending on the evaluation aspect (instance vs dense) regardless of the pre-training
scheme" (Fig. 2 caption; Sec. 4.2-4.3). A model's performance is the mean over its fine-tuning seeds.
Rows per scheme: "L_a & L_u", "InfoNCE" and "total" (both losses), as in the paper's tables.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend needed
from matplotlib.lines import Line2D

from analysis.kendall import alignment_uniformity_tau
from analysis.reference import PAPERS, reference_for
from analysis.sweep_table import sweep_frame
from analysis.tables import write_table
from core.errors import UserError
from core.io import atomic_path, read_json, write_text

LEVELS = ("instance", "dense")
LOSS_LABELS = {"align_uniform": "L_a & L_u", "infonce": "InfoNCE"}  # the paper's row order
TOP_K = 10  # the paper's "top10"
STATS = ("exp", "max", "avg", "top10", "tau")
# The L_u each level's tau uses: instance, Wang & Isola's metric (which the paper adopts); dense, the definition
# the paper prints (t = 1, pairs at the same index; analysis/alignment_uniformity.py). The dense tau under Wang &
# Isola's L_u (t = 2, all pairs of cells) is shown beside it, so a reader sees whether the sign depends on it.
UNIFORMITY = {"instance": "instance L_u", "dense": "dense L_u same-index"}
OTHER_TAU = "tau (W&I L_u)"


def _check_spec(spec: Any) -> None:
    """UserError unless `spec` is {members: [...], evaluations: {name: {metric, level}}, [random_init]}."""
    if not isinstance(spec, dict) or not {"members", "evaluations"} <= spec.keys():
        raise UserError("--spec-json must be an object with `members` and `evaluations` (see analysis/table3.py).")
    allowed = {"members", "evaluations", "random_init", "paper_image_sets", "scale"}
    if unknown := sorted(spec.keys() - allowed):
        raise UserError(f"unknown --spec-json keys {unknown}; allowed: {', '.join(sorted(allowed))}.")
    evaluations = spec["evaluations"]
    if not isinstance(evaluations, dict) or not evaluations:
        raise UserError("--spec-json evaluations must name at least one evaluation: {name: {metric, level}}.")
    for name, evaluation in evaluations.items():
        if not isinstance(evaluation, dict) or not {"metric", "level"} <= set(evaluation) <= {"metric", "level",
                                                                                               "paper"}:
            raise UserError(f"evaluation {name!r} must be {{metric, level[, paper]}}, got {evaluation!r}.")
        if evaluation["level"] not in LEVELS:
            raise UserError(f"evaluation {name!r}: level must be one of {list(LEVELS)}, got {evaluation['level']!r}.")
    random_init = spec.get("random_init")
    if random_init is not None and (not isinstance(random_init, dict)
                                    or [name for name in evaluations if not random_init.get(name)]):
        raise UserError(f"--spec-json random_init must list metrics files for every evaluation {list(evaluations)}.")
    if not isinstance(spec["members"], list) or not spec["members"]:
        raise UserError("--spec-json members is empty: configure pretrain.sweeps.alignment_uniformity.")
    for member in spec["members"]:
        missing = {"run", "data", "member", "alignment_uniformity", "metrics"} - member.keys()
        if missing:
            raise UserError(f"sweep member {member.get('run', member)!r} lacks {sorted(missing)}.")
        if member["member"].get("loss") not in LOSS_LABELS:
            raise UserError(f"sweep member {member['run']}: loss must be one of {list(LOSS_LABELS)}, "
                            f"got {member['member'].get('loss')!r}.")
        if lacking := [name for name in evaluations if not member["metrics"].get(name)]:
            raise UserError(f"sweep member {member['run']} has no metrics files for {lacking}; "
                            "list one metrics.json per fine-tuning seed.")


def _performance(paths: list[str], metric: str) -> float:
    """Mean of `metric` over the seeds' metrics.json files of one model.

    The files' "protocol" is not checked against the evaluation's name: `python -m finetune linear-eval`
    records "linear_eval" whatever config section (e.g. au_linear_eval) ran it; the path names the section.
    """
    values = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"missing result {path}: run `snakemake {path}` first.")
        metrics = read_json(path).get("metrics", {})
        if not isinstance(metrics.get(metric), (int, float)):
            raise UserError(f"{path} has no number metrics.{metric} (has {sorted(metrics)}); fix the evaluation's "
                            f"metric in the spec or rerun `snakemake {path}`.")
        values.append(float(metrics[metric]))
    return float(np.mean(values))


def model_frame(spec: dict[str, Any]) -> pd.DataFrame:
    """Long format: one line per sweep model, its L_a / L_u at both levels and each evaluation's performance."""
    _check_spec(spec)
    members = spec["members"]
    frame = sweep_frame([{**m, "metrics": m["alignment_uniformity"]} for m in members])
    frame.insert(2, "loss label", frame["loss"].map(LOSS_LABELS))
    for name, evaluation in spec["evaluations"].items():
        frame[name] = [_performance(m["metrics"][name], evaluation["metric"]) for m in members]
        frame[f"{name} seeds"] = [len(m["metrics"][name]) for m in members]
    return frame


def group_stats(models: pd.DataFrame, evaluation: str, level: str) -> dict[str, Any]:
    """exp, max, avg, top10 (mean of the min(10, exp) best) and the paper's tau of one group of models."""
    performance = models[evaluation].to_numpy(dtype=float)
    tau = alignment_uniformity_tau(models[f"{level} L_a"], models[UNIFORMITY[level]], performance)
    stats = {"exp": len(performance), "max": performance.max(), "avg": performance.mean(),
             "top10": np.sort(performance)[::-1][:TOP_K].mean(), "tau": tau.tau, "tau reason": tau.reason}
    if level == "dense":
        other = alignment_uniformity_tau(models["dense L_a"], models["dense L_u"], performance)
        stats |= {OTHER_TAU: other.tau, f"{OTHER_TAU} reason": other.reason}
    return stats


def _groups(models: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(scheme, loss label, models) of one image set's models in the paper's row order; schemes in spec order."""
    groups = []
    for scheme in dict.fromkeys(models["scheme"]):
        block = models[models["scheme"] == scheme]
        groups += [(scheme, label, block[block["loss"] == loss]) for loss, label in LOSS_LABELS.items()
                   if (block["loss"] == loss).any()]
        groups.append((scheme, "total", block))
    return groups


def _image_sets(models: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(image set, its models), in spec order."""
    return [(data, models[models["image set"] == data]) for data in dict.fromkeys(models["image set"])]


def _cell(stat: str, value: Any, reason: str | None) -> str:
    if stat == "exp":
        return str(value)
    if stat == "tau" and math.isnan(value):
        return f"n/a ({reason})"
    return f"{value:.2f}"


LOSS_KEYS = {label: key for key, label in LOSS_LABELS.items()} | {"total": "total"}


def _paper_cells(reference: pd.DataFrame, paper_set: str | None, scheme: str, label: str,
                 evaluation: str | None, stats: dict[str, Any]) -> dict[str, str]:
    """The paper's exp / max / avg / top10 / tau of the same group, and our max and tau minus the paper's."""
    if paper_set is None or evaluation is None:
        return {}
    cells = reference[reference["row"] == f"{paper_set}/{scheme}/{LOSS_KEYS[label]}"].set_index("column")["value"]
    paper = {s: cells.get(f"{evaluation}/{s}") for s in STATS}
    if all(v is None for v in paper.values()):
        return {}
    shown = " / ".join("-" if v is None else f"{v:g}" for v in paper.values())
    delta = {s: ("" if paper[s] is None or math.isnan(stats[s]) else f"{stats[s] - paper[s]:+.2f}")
             for s in ("max", "tau")}
    return {"paper (exp/max/avg/top10/tau)": shown, "Δ max": delta["max"], "Δ tau": delta["tau"]}


def table3_frame(models: pd.DataFrame, evaluations: dict[str, dict[str, str]],
                 random_init: dict[str, float] | None = None, reference: pd.DataFrame | None = None,
                 paper_sets: dict[str, str] | None = None) -> pd.DataFrame:
    """The paper's layout, cells as printed (2 decimals; tau 'n/a (<reason>)' when undefined), with the
    paper's values of the same group (`paper_sets`: our image set -> the paper's, e.g. tinyimagenet ->
    stl10; each evaluation's `paper` key names the paper's evaluation) from `reference` (table 3 cells)."""
    rows = []
    for data, subset in _image_sets(models):
        for scheme, label, group in _groups(subset):
            row = {"image set": data, "pretraining": scheme, "loss": label}
            for name, evaluation in evaluations.items():
                stats = group_stats(group, name, evaluation["level"])
                row.update({f"{name} {s}": _cell(s, stats[s], stats["tau reason"]) for s in STATS})
                if OTHER_TAU in stats:
                    row[f"{name} {OTHER_TAU}"] = _cell("tau", stats[OTHER_TAU], stats[f"{OTHER_TAU} reason"])
                if reference is not None:
                    paper = _paper_cells(reference, (paper_sets or {}).get(data), scheme, label,
                                         evaluation.get("paper"), stats)
                    row.update({f"{name} {k}": v for k, v in paper.items()})
            rows.append(row)
        if random_init is not None:  # the paper's last row; the same network for every image set
            rows.append({"image set": data, "pretraining": "random init", "loss": "",
                         **{f"{name} {s}": {"exp": "1", "max": f"{random_init[name]:.2f}"}.get(s, "-")
                            for name in evaluations for s in STATS}})
    return pd.DataFrame(rows)


def plot_alignment_uniformity(models: pd.DataFrame, evaluations: dict[str, dict[str, str]],
                              out_png: str | Path) -> None:
    """Figs. 2-3: per (image set, evaluation) panel, every model at (L_u, L_a) of the evaluation's level,
    coloured by its performance; marker shape = loss (paper: triangle InfoNCE, circle L_a & L_u),
    marker edge = pretraining scheme."""
    markers = {"infonce": "^", "align_uniform": "o"}
    edges = {"instance": "black", "dense": "tab:red"}
    image_sets = _image_sets(models)
    fig = Figure(figsize=(4.6 * len(evaluations), 3.8 * len(image_sets)))
    axes = fig.subplots(len(image_sets), len(evaluations), squeeze=False)
    for row, (data, subset) in enumerate(image_sets):
        for col, (name, evaluation) in enumerate(evaluations.items()):
            ax, level = axes[row][col], evaluation["level"]
            norm = (subset[name].min(), subset[name].max())
            for (loss, scheme), group in subset.groupby(["loss", "scheme"], sort=False):
                points = ax.scatter(group[UNIFORMITY[level]], group[f"{level} L_a"], c=group[name], cmap="viridis",
                                    vmin=norm[0], vmax=norm[1], marker=markers[loss], s=60,
                                    edgecolors=edges.get(scheme, "grey"), linewidths=1.2)
            fig.colorbar(points, ax=ax, label=f"{name} {evaluation['metric']}")
            ax.set(title=f"{data}: {name}", xlabel=f"{UNIFORMITY[level]} (uniformity)",
                   ylabel=f"{level} L_a (alignment)")
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker=markers[loss], markerfacecolor="lightgrey", markersize=8,
                      markeredgecolor=edges[scheme], label=f"{scheme} {LOSS_LABELS[loss]}")
               for scheme in edges for loss in markers]
    axes[0][0].legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def write_table3(spec: dict[str, Any], out_csv: str | Path, out_md: str | Path, figure: str | Path | None = None,
                 out_models_csv: str | Path | None = None) -> pd.DataFrame:
    """Write the tables (CSV + Markdown), and optionally the scatter figure and the per-model CSV."""
    models = model_frame(spec)
    evaluations = spec["evaluations"]
    random_init = None
    if spec.get("random_init") is not None:
        random_init = {name: _performance(spec["random_init"][name], e["metric"])
                       for name, e in evaluations.items()}
    frame = table3_frame(models, evaluations, random_init, reference_for(3), spec.get("paper_image_sets"))
    sizes = [len(group) for _, subset in _image_sets(models) for *_, group in _groups(subset)]
    notes = [f"{name}: metrics.{e['metric']} (mean over fine-tuning seeds), correlated with {e['level']}-level "
             "L_a, L_u of the held-out split." for name, e in evaluations.items()]
    notes += ["exp: number of models; top10: mean of the 10 best models"
              + (f" (groups with fewer than 10 models, here {sum(s < TOP_K for s in sizes)} of {len(sizes)}, "
                 "average all of theirs)" if min(sizes) < TOP_K else "") + ".",
              "tau: Kendall's tau-b between r(L_a) + r(L_u) and r(performance), r = min-max normalisation over "
              "the group's models (dense_alignment_uniformity.md Sec. 4.1); negative: better alignment-uniformity "
              "goes with better performance. n/a: undefined (fewer than 2 models, or all values tied).",
              "L_u of tau: instance level, Wang & Isola's (t = 2, all pairs), which the paper adopts; dense level, the "
              f"paper's printed definition (t = 1, pairs of images at the same index). '{OTHER_TAU}': the dense tau "
              "under Wang & Isola's L_u (all pairs of cells), beside it."]
    if random_init is not None:
        notes.append("random init: the same randomly initialised backbone, repeated under each image set (paper).")
    notes.append(f"paper: {PAPERS['dense_alignment_uniformity']}, Tables 1-2 (group of image set "
                 f"{spec.get('paper_image_sets')}); Δ = ours - paper.")
    results = [read_json(path) for member in spec["members"] for paths in member["metrics"].values() for path in paths]
    notes.append(f"provenance: {len(spec['members'])} models (per-model values in sweeps/models.csv), scale "
                 f"{spec.get('scale', '?')}, fine-tuning seeds {sorted({r['provenance']['seed'] for r in results})}, "
                 f"config hashes {sorted({r['provenance']['config_hash'] for r in results})}, commits "
                 f"{sorted({r['provenance']['commit'] for r in results})}.")
    write_table(frame, out_csv, out_md, "Alignment-uniformity vs transfer performance (Moon et al., Tables 1-3)",
                notes)
    if out_models_csv is not None:
        write_text(out_models_csv, models.to_csv(index=False, float_format="%.6g"))
    if figure is not None:
        plot_alignment_uniformity(models, evaluations, figure)
    return frame


def _spec(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"--spec-json is not valid JSON ({err}).") from err


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("table3", help="alignment-uniformity sweep vs transfer: exp/max/avg/top10/tau (BMVC'22)",
                            description=__doc__)
    p.add_argument("--spec-json", required=True,
                   help="{members: [{run, data, member, alignment_uniformity, metrics: {evaluation: [files]}}], "
                        "evaluations: {name: {metric, level}}, random_init (optional): {evaluation: [files]}}")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--figure", help="also draw the alignment-uniformity scatter (PNG)")
    p.add_argument("--out-models-csv", help="also write the per-model values (full precision)")
    p.set_defaults(func=lambda a: write_table3(_spec(a.spec_json), a.out_csv, a.out_md, a.figure, a.out_models_csv))
