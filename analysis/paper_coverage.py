"""`python -m analysis paper-coverage`: which published values have a like-for-like cell in this pipeline.

Every value the papers print (reference/paper_values.csv) is checked against the plan of the configured
scale (plan/runs.py: nothing is run or dry-run). Its row of ours comes from reference/paper_rows.csv: per
paper row, our experiment (pretrain.experiments), table row (a method on pretrain.data, `random`, an
imported label), ablation variant (`<method>/<variant>`), sweep group (`<data>/<scheme>/<loss>`) or dataset
(`dataset:<name>`, table 2's statistics), with the paper's pretraining image set, epochs and architecture;
where none can exist, the reason. Its metric is the value's own `column`, else that of another value in the
same paper column, else reference/paper_columns.csv.

A value is like-for-like when its row is planned with the paper's image set, epochs (when the paper states
them) and architecture, and the protocol or probe of its metric scores that row. The transfer protocols
themselves follow the papers (paper.yaml cites each value). Prints one line per value; the last line is
exactly `like-for-like: N of M`.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.reference import DEFAULT_PATH, load_reference
from core.config import load_config
from core.errors import UserError
from plan.runs import Plan, build_plan

REFERENCE = DEFAULT_PATH.parent
ROWS_PATH = REFERENCE / "paper_rows.csv"
COLUMNS_PATH = REFERENCE / "paper_columns.csv"
_ROW = ("paper", "paper_table", "paper_row")
_COLUMN = ("paper", "paper_table", "paper_column")
UNSTATED = ("", "-")  # a pretraining field the paper does not state, or that has none (random init)


@dataclass(frozen=True)
class Verdict:
    like_for_like: bool
    planned: bool  # a cell exists at this scale, whatever its schedule
    detail: str  # the cell (metric of run), or why there is none
    source: str = ""  # the protocol or probe of a planned cell, and its metric
    metric: str = ""
    runs: tuple[str, ...] = ()  # the run it scores (a sweep group's: its members)
    table: int | None = None  # our table holding a statistic over runs or a dataset (3, 2); None: one run's cell


def _read(path: Path, key: tuple[str, ...], fields: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, str]]:
    if not path.is_file():
        raise UserError(f"missing {path}; restore it from git.")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != key + fields:
            raise UserError(f"{path}: header is {reader.fieldnames}, expected {','.join(key + fields)}.")
        out: dict[tuple[str, ...], dict[str, str]] = {}
        for record in reader:
            where = tuple(record[k] for k in key)
            if where in out:
                raise UserError(f"{path} line {reader.line_num}: {where} is listed twice; keep one line.")
            out[where] = record
    return out


def load_rows(path: Path | None = None) -> dict[tuple[str, ...], dict[str, str]]:
    """Our row per paper row: row, data, epochs, arch, reason (when there is no row, or to configure it)."""
    path = path or ROWS_PATH
    rows = _read(path, _ROW, ("row", "data", "epochs", "arch", "reason"))
    for where, record in rows.items():
        if not record["row"] and not record["reason"]:
            raise UserError(f"{path}: {where} has neither a row of ours nor the reason there is none.")
    return rows


def paper_metrics(values: pd.DataFrame, path: Path = COLUMNS_PATH) -> dict[tuple[str, ...], dict[str, str]]:
    """Our metric per paper column: from the values mapped to our tables, else from `path`."""
    derived: dict[tuple[str, ...], dict[str, str]] = {}
    for record in values[values["column"] != ""].to_dict("records"):
        # Table 3 names a column by the paper's evaluation, e.g. voc_detection/max (see Coverage).
        table3 = "yes" if record["table"] == 3 else ""
        derived.setdefault(tuple(record[k] for k in _COLUMN), {"column": record["column"], "reason": "",
                                                               "table3": table3})
    listed = _read(path, _COLUMN, ("column", "reason"))
    clash = sorted(set(listed) & set(derived))
    if clash:
        raise UserError(f"{path}: {clash[0]} is already mapped by reference/paper_values.csv; drop its line.")
    return {**derived, **listed}


def _pretraining(spec: Mapping[str, Any]) -> tuple[str, str, str]:
    return spec["data"], str(spec["cfg"]["epochs"]), spec["cfg"]["arch"]


class Coverage:
    """The verdicts of one config's plan."""

    def __init__(self, config: Mapping[str, Any], plan: Plan) -> None:
        self.config = config
        self.plan = plan
        # Table 3 names its columns by the paper's evaluation (analysis.table3.evaluations.<name>.paper); its
        # statistics (models, max, mean, top 10, tau) are over the sweep members the evaluation scores.
        evaluations = config["analysis"].get("table3", {}).get("evaluations", {})
        self.table3_sources = {spec["paper"]: name for name, spec in evaluations.items()}
        self._scored: dict[str, set[str]] = {}
        self._runs: dict[str, dict[str, tuple[str, str, str]] | str] = {}

    def scored(self, source: str) -> set[str]:
        if source not in self._scored:
            self._scored[source] = set(self.plan.scored_runs(source))
        return self._scored[source]

    def runs_of(self, row: str) -> dict[str, tuple[str, str, str]] | str:
        """{run: (data, epochs, arch)} of our row `row`, or why it is not planned."""
        plan, pretrain = self.plan, self.config["pretrain"]
        runs = plan.pretrain_runs
        if row == "random":
            return {plan.random_run: ("-", "-", pretrain["arch"])}
        if row in pretrain.get("experiments", {}):
            run = plan.experiment_run_of[row]
            return {run: _pretraining(runs[run])}
        if row in plan.ablation_rows:
            run = plan.ablation_rows[row][1]
            return {run: _pretraining(runs[run])}
        if row in plan.row_labels:
            run = plan.row_labels[row]
            if run in plan.imported_runs:  # the authors' own checkpoint: their pretraining by definition
                return {run: ("", "", plan.imported_runs[run]["arch"])}
            return {run: _pretraining(runs[run])}
        if row.count("/") == 2:  # a sweep group: <data>/<scheme>/<loss>, loss `total` = every member
            data, scheme, loss = row.split("/")
            members = {run: _pretraining(spec) for run, spec in plan.sweep_runs.items()
                       if spec["data"] == data and spec["member"]["scheme"] == scheme
                       and loss in ("total", spec["member"]["loss"])}
            return members or f"no sweep member of {row} (pretrain.sweeps.alignment_uniformity)"
        return f"row '{row}' is not planned at this scale"

    def verdict(self, value: Mapping[str, Any], row: Mapping[str, str], metric: Mapping[str, str] | None) -> Verdict:
        if not row["row"]:
            return Verdict(False, False, row["reason"])
        if metric is None or not metric["column"]:
            return Verdict(False, False, metric["reason"] if metric else f"no metric of ours for column "
                                                                         f"'{value['paper_column']}'")
        if row["row"].startswith("dataset:"):
            return self._dataset_verdict(row["row"].split(":", 1)[1], metric["column"])
        if row["row"] not in self._runs:
            self._runs[row["row"]] = self.runs_of(row["row"])
        runs = self._runs[row["row"]]
        if isinstance(runs, str):
            return Verdict(False, False, f"{runs}; {row['reason']}" if row["reason"] else runs)
        source = metric["column"].split("/")[0]
        if metric.get("table3"):
            source = self.table3_sources.get(source, f"analysis.table3.evaluations entry for {source}")
        if source not in self.plan.sources:
            return Verdict(False, False, f"{source} is not configured at this scale")
        unscored = [run for run in runs if run not in self.scored(source)]
        if unscored:
            return Verdict(False, False, f"{source} does not score {unscored[0]}")
        measured = metric["column"].split("/", 1)[1]
        cell = f"{source}/{measured} of {_named(runs)}"
        found = {"source": source, "metric": measured, "runs": tuple(runs),
                 "table": 3 if metric.get("table3") else None}
        paper = (row["data"], row["epochs"], row["arch"])
        for ours in runs.values():
            differs = [f"{name} {mine} (the paper's {theirs})" for name, mine, theirs in
                       zip(("image set", "epochs", "arch"), ours, paper, strict=True)
                       if theirs not in UNSTATED and mine not in UNSTATED and mine != theirs]
            if differs:
                return Verdict(False, True, f"{cell}, but pretrained with {', '.join(differs)}", **found)
        return Verdict(True, True, cell, **found)

    def _dataset_verdict(self, name: str, stat: str) -> Verdict:
        """Table 2's statistics: like-for-like when computed on the official dataset, not a smoke build."""
        root = "openimages" if name == "openimages_mini" else name
        if self.config["datasets"][root]["build"]:
            return Verdict(False, True, f"table 2 {stat} of {name}, but on the prepare stage's small build of {root}",
                           table=2)
        return Verdict(True, True, f"table 2 {stat} of {name}", table=2)


def _named(runs: Mapping[str, Any]) -> str:
    return next(iter(runs)) if len(runs) == 1 else f"{len(runs)} sweep members"


def coverage(config: Mapping[str, Any], plan: Plan | None = None, values: pd.DataFrame | None = None
             ) -> pd.DataFrame:
    """One line per published value: where it is from, its value, and the verdict for `config` (its plan)."""
    values = load_reference() if values is None else values
    rows, metrics = load_rows(), paper_metrics(values)
    judge = Coverage(config, build_plan(config) if plan is None else plan)
    out = []
    for record in values.to_dict("records"):
        key = tuple(record[k] for k in _ROW)
        if key not in rows:
            raise UserError(f"{ROWS_PATH.name}: no line for {key}; add our row of it (or the reason there is none).")
        verdict = judge.verdict(record, rows[key], metrics.get(tuple(record[k] for k in _COLUMN)))
        out.append({**{k: record[k] for k in (*_ROW, "paper_column", "value")}, **asdict(verdict)})
    return pd.DataFrame(out)


def report_lines(table: pd.DataFrame) -> Iterable[str]:
    for record in table.to_dict("records"):
        mark = "yes" if record["like_for_like"] else "no "
        yield (f"{mark} {record['paper']} {record['paper_table']} | {record['paper_row']} | {record['paper_column']} "
               f"= {record['value']:g}: {record['detail']}")
    yield f"planned at this scale (any schedule): {int(table['planned'].sum())} of {len(table)}"
    yield f"like-for-like: {int(table['like_for_like'].sum())} of {len(table)}"


def _run(args: argparse.Namespace) -> None:
    table = coverage(load_config(args.scale, args.configfile))
    for line in report_lines(table):
        print(line)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("paper-coverage", help="which published values have a like-for-like cell here",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="smoke", help="the scale config (workflow/config/<scale>.yaml)")
    p.add_argument("--configfile", action="append", default=[], help="a config merged over it, as Snakemake's")
    p.set_defaults(func=_run)
